"""JSON API under /api/v1 (bearer tokens; errors as application/problem+json)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from werkzeug.wrappers import Response

from allocator.permissions import Permission, requires
from allocator.services import trials
from allocator.web.openapi import document
from allocator.web.security import ctx, scope

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.route("/openapi.json")
@requires(Permission.API_DOCS)
def openapi() -> Response:
    return jsonify(document())


@bp.route("/trials/<trial>")
@requires(Permission.TRIAL_VIEW)
def trial(trial: str) -> Response:
    visible = scope(Permission.TRIAL_VIEW)
    summary = trials.trial_summary(ctx(), trial, None if visible.all_sites else visible.site_ids)
    return jsonify(summary.as_json())
