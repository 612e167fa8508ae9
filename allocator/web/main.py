"""Home page and the blinded trial page."""

from __future__ import annotations

from flask import Blueprint, render_template

from allocator.permissions import Permission, public, requires
from allocator.services import trials
from allocator.web.security import ctx, current_user, holds_any, scope

bp = Blueprint("main", __name__)


@bp.route("/")
@requires(Permission.ACCOUNT_SELF)
def home() -> str:
    user = current_user()
    return render_template("main/home.html", trials=trials.my_trials(ctx(), user.access))


@bp.route("/trials/<trial>")
@requires(Permission.TRIAL_VIEW)
def trial(trial: str) -> str:
    visible = scope(Permission.TRIAL_VIEW)
    summary = trials.trial_summary(ctx(), trial, None if visible.all_sites else visible.site_ids)
    return render_template(
        "main/trial.html", trial=summary, setup_notes=holds_any(*trials.SETUP_NOTE_READERS)
    )


@bp.route("/healthz")
@public
def health() -> tuple[dict[str, str], int]:
    """Liveness for a load balancer: says nothing about the trial or the software version."""
    return {"status": "ok"}, 200
