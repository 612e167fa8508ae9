"""JSON API under /api/v1 (bearer tokens; errors as application/problem+json)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from werkzeug.wrappers import Response

from allocator.permissions import Permission, requires
from allocator.services import audit_trail, trials
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.web.openapi import document
from allocator.web.security import ctx, current_trial, scope

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


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, "must be a whole number")])
    return int(raw)


@bp.route("/trials/<trial>/audit")
@requires(Permission.AUDIT_VIEW)
def audit(trial: str) -> Response:
    """Blinded audit entries in sequence order; follow `next_after` to page."""
    flt = audit_trail.AuditFilter.parse(request.args.to_dict())
    page = audit_trail.page(
        ctx(),
        current_trial().code,
        flt,
        after=_int_arg("after", None),
        limit=_int_arg("limit", 100) or 100,
        scope=scope(Permission.AUDIT_VIEW),
    )
    return jsonify({"entries": [e.as_json() for e in page.entries], "next_after": page.next_after})


@bp.route("/trials/<trial>/audit/verify")
@requires(Permission.AUDIT_VIEW)
def audit_verify(trial: str) -> Response:
    result = audit_trail.verify(ctx(), current_trial().code)
    return jsonify(
        {
            "ok": result.ok,
            "entries": result.entries,
            "first_bad": result.first_bad,
            "problems": [{"seq": p.seq, "message": p.message} for p in result.problems],
            "checkpoints": result.checkpoints,
            "unsigned_tail": result.unsigned_tail,
        }
    )
