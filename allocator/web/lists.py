"""Randomization lists: the unblinded statistician's pages, and the blinded stratum overview."""

from __future__ import annotations

import base64

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import lists
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.web import forms
from allocator.web.i18n import plain_number
from allocator.web.security import actor, ctx, current_trial

bp = Blueprint("lists", __name__)


_signature = forms.signature
_flash_error = forms.flash_error


def _done(trial: str, message: str, action: object) -> WerkzeugResponse:
    try:
        if callable(action):
            action()
    except DomainError as exc:
        _flash_error(exc)
    else:
        flash(message, "ok")
    return redirect(url_for("lists.manage", trial=trial), code=303)


@bp.route("/trials/<trial>/strata")
@requires(Permission.LIST_VIEW)
def strata(trial: str) -> str:
    """Every role: subjects randomized per stratum and whether capacity runs low — nothing else."""
    return render_template("lists/strata.html", trial=trial, strata=lists.stratum_overview(ctx(), trial))


@bp.route("/trials/<trial>/lists")
@requires(Permission.LIST_MANAGE)
def manage(trial: str) -> Response:
    html = render_template(
        "lists/manage.html",
        trial=trial,
        lists=lists.lists(ctx(), trial),
        instance_mode=lists.instance_mode(ctx().settings.env).value,
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/lists", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def generate(trial: str) -> WerkzeugResponse:
    mode = request.form.get("mode", "")
    return _done(
        trial,
        "List generated (DRAFT): review it, then approve it.",
        lambda: lists.generate_lists(ctx(), actor(Permission.LIST_MANAGE), trial, mode),
    )


@bp.route("/trials/<trial>/lists/<int:list_id>/review")
@requires(Permission.LIST_MANAGE)
def review(trial: str, list_id: int) -> Response:
    """Slots per stratum and arm (an audited read of the list, BLD-08)."""
    counts = lists.review_counts(ctx(), actor(Permission.LIST_MANAGE), trial, list_id)
    overview = next((o for o in lists.lists(ctx(), trial) if o.id == list_id), None)
    html = render_template("lists/review.html", trial=trial, counts=counts, overview=overview)
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/lists/<int:list_id>/<any(approve, activate):step>", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def sign_step(trial: str, list_id: int, step: str) -> WerkzeugResponse:
    who = actor(Permission.LIST_MANAGE)
    if step == "approve":
        return _done(
            trial,
            "List approved (signed).",
            lambda: lists.approve_list(ctx(), who, trial, list_id, _signature()),
        )
    return _done(
        trial,
        "List activated (signed): randomization can start at active sites.",
        lambda: lists.activate_list(ctx(), who, trial, list_id, _signature()),
    )


@bp.route("/trials/<trial>/lists/check", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def check(trial: str) -> WerkzeugResponse:
    def run() -> None:
        results = lists.check_integrity(ctx(), actor(Permission.LIST_MANAGE), current_trial().code)
        failed = [r for r in results if not r.ok]
        if failed:
            raise lists.ListIntegrityFailure("; ".join(p for r in failed for p in r.problems))

    return _done(trial, "Integrity check passed.", run)


@bp.route("/trials/<trial>/lists/verify", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def verify(trial: str) -> WerkzeugResponse:
    def run() -> None:
        results = lists.verify_lists(ctx(), actor(Permission.LIST_MANAGE), trial)
        failed = [r for r in results if not r.ok]
        if failed:
            raise lists.ListIntegrityFailure("; ".join(p for r in failed for p in r.problems[:5]))

    return _done(trial, "Every list is identical to its regeneration from the seed.", run)


@bp.route("/trials/<trial>/lists/<int:list_id>/extend", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def extend(trial: str, list_id: int) -> WerkzeugResponse:
    raw = plain_number(request.form.get("additional") or "")  # "1 200" as French users type it
    chosen = request.form.getlist("stratum") or None

    def run() -> None:
        if not raw.isdigit():
            raise ValidationFailed(
                "invalid size", errors=[FieldProblem("additional", "must be a whole number")]
            )
        lists.extend_list(
            ctx(),
            actor(Permission.LIST_MANAGE),
            trial,
            list_id,
            additional=int(raw),
            strata=chosen,
            reason=request.form.get("reason", ""),
            request=_signature(),
        )

    return _done(trial, "List extended (signed): a new version was appended.", run)


@bp.route("/trials/<trial>/lists/<int:list_id>/export", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def export(trial: str, list_id: int) -> WerkzeugResponse:
    """The list and its seed, encrypted with the statistician's passphrase (signed, audited)."""
    try:
        name, body = lists.export_list(
            ctx(),
            actor(Permission.LIST_MANAGE),
            trial,
            list_id,
            passphrase=request.form.get("passphrase", ""),
            reason=request.form.get("reason", ""),
            request=_signature(),
        )
    except DomainError as exc:
        _flash_error(exc)
        return redirect(url_for("lists.manage", trial=trial), code=303)
    return Response(
        body,
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.route("/trials/<trial>/quality")
@requires(Permission.QUALITY_VIEW)
def quality(trial: str) -> str:
    document = lists.quality_document(ctx(), trial)

    def image(svg: str) -> str:
        return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")

    return render_template(
        "lists/quality.html",
        trial=trial,
        text=document.text,
        balance=image(document.balance_svg),
        distribution=image(document.distribution_svg),
    )


@bp.route("/trials/<trial>/quality.pdf")
@requires(Permission.QUALITY_VIEW)
def quality_pdf(trial: str) -> Response:
    return Response(
        lists.quality_pdf(ctx(), trial),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="quality-{trial}.pdf"'},
    )
