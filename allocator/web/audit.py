"""The audit trail pages: filters, paging, chain verification, CSV export (monitor, auditor)."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, stream_with_context, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.audit import SYSTEM_CHAIN, Action
from allocator.permissions import Permission, requires
from allocator.services import audit_trail, signatures
from allocator.services.errors import DomainError
from allocator.web import forms, hygiene
from allocator.web.security import actor, ctx, current_trial, scope

bp = Blueprint("audit", __name__)
PAGE = 100


def _after() -> int | None:
    raw = (hygiene.query_text("after", max_length=32) or "").strip()
    if not raw:
        return None
    return hygiene.whole_number(raw, "after", "invalid cursor", "must be a sequence number")


def _render(chain: str, *, unblinded: bool, permission: Permission, trial: str | None) -> str:
    flt = audit_trail.AuditFilter.parse(hygiene.single_args())
    visible = scope(permission) if trial is not None else None
    page = audit_trail.page(
        ctx(),
        chain,
        flt,
        after=_after(),
        limit=PAGE,
        scope=visible,
        unblinded_reader=actor(permission) if unblinded else None,
        newest_first=True,  # issue 13 point 9: what happened last is what the reader looks for
    )
    checked = audit_trail.verify_since(ctx(), chain)
    verification = checked.result
    return render_template(
        "audit/trail.html",
        chain=chain,
        trial=trial,
        page=page,
        filter=flt,
        actions=[a.value for a in Action],
        verification=verification,
        verified_earlier=checked.earlier,
        unblinded=unblinded,
        reviews=audit_trail.reviews(ctx(), chain),
        head_seq=verification.entries,
    )


@bp.route("/trials/<trial>/audit")
@requires(Permission.AUDIT_VIEW)
def trail(trial: str) -> str:
    return _render(current_trial().code, unblinded=False, permission=Permission.AUDIT_VIEW, trial=trial)


@bp.route("/trials/<trial>/audit/unblinded")
@requires(Permission.AUDIT_VIEW_UNBLINDED)
def trail_unblinded(trial: str) -> Response:
    """Restricted view: sealed values opened for unblinded roles, every opening audited (AUD-05)."""
    html = _render(
        current_trial().code, unblinded=True, permission=Permission.AUDIT_VIEW_UNBLINDED, trial=trial
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/audit.csv")
@requires(Permission.AUDIT_VIEW)
def trail_csv(trial: str) -> Response:
    flt = audit_trail.AuditFilter.parse(hygiene.single_args())
    exported = audit_trail.export_csv(
        ctx(), actor(Permission.AUDIT_VIEW), current_trial().code, flt, scope(Permission.AUDIT_VIEW)
    )
    response = Response(
        stream_with_context(exported.chunks()),  # sent from its spooled file, in pieces (issue 21)
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="audit-{trial}.csv"'},
    )
    response.call_on_close(exported.close)
    return response


@bp.route("/trials/<trial>/audit/review", methods=["POST"])
@requires(Permission.AUDIT_VIEW)
def review(trial: str) -> WerkzeugResponse:
    """Sign off the review of the trail up to an entry (AUD-09) with an electronic signature."""
    raw = (request.form.get("up_to_seq") or "").strip()
    try:
        up_to_seq = hygiene.whole_number(raw, "up_to_seq", "invalid entry", "must be an entry number")
        audit_trail.sign_review(
            ctx(),
            actor(Permission.AUDIT_VIEW),
            current_trial().code,
            up_to_seq=up_to_seq,
            comment=request.form.get("comment", ""),
            trial_id=current_trial().id,
            request=signatures.SignatureRequest(
                password=request.form.get("password", ""), totp=request.form.get("otp") or None
            ),
        )
    except DomainError as exc:
        forms.flash_error(exc, _review_labels())
    else:
        flash(_("Review signed up to entry %(entry)s.", entry=raw), "ok")
    return redirect(url_for("audit.trail", trial=trial), code=303)


def _review_labels() -> dict[str, str]:
    return {
        "up_to_seq": _("Reviewed up to entry"),
        "comment": _("Findings (optional)"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


@bp.route("/admin/audit")
@requires(Permission.USER_MANAGE)
def system_trail() -> str:
    """The instance chain: accounts, sign-ins, sessions, tokens (administrators)."""
    return _render(SYSTEM_CHAIN, unblinded=False, permission=Permission.USER_MANAGE, trial=None)
