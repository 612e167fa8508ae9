"""Randomization lists: the unblinded statistician's pages, and the blinded stratum overview."""

from __future__ import annotations

import base64
from collections.abc import Callable

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import lookups
from allocator.services.errors import DomainError
from allocator.services.lists import approval, extension, generation, integrity, storage
from allocator.services.lists import export as lists_export
from allocator.services.lists import overview as lists_overview
from allocator.services.lists import quality as lists_quality
from allocator.web import forms, hygiene
from allocator.web.i18n import plain_number, tr
from allocator.web.security import actor, ctx, current_trial, current_user

bp = Blueprint("lists", __name__)


_signature = forms.signature


def _labels() -> dict[str, str]:
    """The list forms' fields as their labels name them."""
    return {
        "additional": _("Slots to add per stratum (whole blocks)"),
        "stratum": _("Strata"),
        "reason": _("Reason"),
        "passphrase": _("Passphrase (at least 16 characters)"),
        "proposal": _("Extension"),
        "mode": _("List"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


def _flash_error(exc: DomainError) -> None:
    forms.flash_error(exc, _labels())


def _done(trial: str, message: str, action: object) -> WerkzeugResponse:
    try:
        if callable(action):
            action()
    except DomainError as exc:
        _flash_error(exc)
    else:
        flash(message, "ok")
    return redirect(url_for("lists.manage", trial=trial), code=303)


def _stratum_label(trial: str) -> Callable[[str], str]:
    """A stratum's key (`site=P1;admission_cause=septic`) in words: `Site: P1 · Cause: Septic`."""
    definition = lookups.trial_definition(ctx(), trial)
    factors = {f.code: f for f in definition.stratification}

    def label(key: str) -> str:
        parts = []
        for pair in key.split(";"):
            code, _sep, level = pair.partition("=")
            factor = factors.get(code)
            if factor is None:
                parts.append(pair)
                continue
            levels = {lv.code: tr(lv.label) for lv in factor.levels}
            parts.append(f"{tr(factor.label)}{_(': ')}{levels.get(level, level)}")
        return " · ".join(parts)

    return label


@bp.route("/trials/<trial>/strata")
@requires(Permission.LIST_VIEW)
def strata(trial: str) -> str:
    """Every role: subjects randomized per stratum and whether capacity runs low — nothing else."""
    definition = lookups.trial_definition(ctx(), trial)
    return render_template(
        "lists/strata.html",
        trial=trial,
        strata=lists_overview.stratum_overview(ctx(), trial),
        factor_labels={f.code: tr(f.label) for f in definition.stratification},
        level_labels={f.code: {lv.code: tr(lv.label) for lv in f.levels} for f in definition.stratification},
    )


@bp.route("/trials/<trial>/lists")
@requires(Permission.LIST_MANAGE)
def manage(trial: str) -> Response:
    html = render_template(
        "lists/manage.html",
        trial=trial,
        lists=lists_overview.lists(ctx(), trial),
        instance_mode=lookups.instance_mode(ctx().settings.env).value,
        me=current_user().user_id,
        stratum_label=_stratum_label(trial),
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/lists", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def generate(trial: str) -> WerkzeugResponse:
    mode = request.form.get("mode", "")
    return _done(
        trial,
        _("List generated (DRAFT): review it, then approve it."),
        lambda: generation.generate_lists(ctx(), actor(Permission.LIST_MANAGE), trial, mode),
    )


@bp.route("/trials/<trial>/lists/<int:list_id>/review")
@requires(Permission.LIST_MANAGE)
def review(trial: str, list_id: int) -> Response:
    """Slots per stratum and arm (an audited read of the list, BLD-08)."""
    counts = lists_overview.review_counts(ctx(), actor(Permission.LIST_MANAGE), trial, list_id)
    overview = next((o for o in lists_overview.lists(ctx(), trial) if o.id == list_id), None)
    html = render_template(
        "lists/review.html",
        trial=trial,
        counts=counts,
        overview=overview,
        stratum_label=_stratum_label(trial),
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/lists/<int:list_id>/<any(approve, activate):step>", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def sign_step(trial: str, list_id: int, step: str) -> WerkzeugResponse:
    who = actor(Permission.LIST_MANAGE)
    if step == "approve":
        return _done(
            trial,
            _("List approved (signed)."),
            lambda: approval.approve_list(ctx(), who, trial, list_id, _signature()),
        )
    return _done(
        trial,
        _("List activated (signed): randomization can start at active sites."),
        lambda: approval.activate_list(ctx(), who, trial, list_id, _signature()),
    )


@bp.route("/trials/<trial>/lists/check", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def check(trial: str) -> WerkzeugResponse:
    def run() -> None:
        results = integrity.check_integrity(ctx(), actor(Permission.LIST_MANAGE), current_trial().code)
        failed = [r for r in results if not r.ok]
        if failed:
            raise storage.ListIntegrityFailure("; ".join(p for r in failed for p in r.problems))

    return _done(trial, _("Integrity check passed."), run)


@bp.route("/trials/<trial>/lists/verify", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def verify(trial: str) -> WerkzeugResponse:
    def run() -> None:
        results = integrity.verify_lists(ctx(), actor(Permission.LIST_MANAGE), trial)
        failed = [r for r in results if not r.ok]
        if failed:
            raise storage.ListIntegrityFailure("; ".join(p for r in failed for p in r.problems[:5]))

    return _done(trial, _("Every list is identical to its regeneration from the seed."), run)


@bp.route("/trials/<trial>/lists/<int:list_id>/extend", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def extend(trial: str, list_id: int) -> WerkzeugResponse:
    """The first signature of an extension (RND-10): a proposal, applied once another person approves."""
    raw = plain_number(request.form.get("additional") or "")  # "1 200" as French users type it
    chosen = request.form.getlist("stratum") or None

    def run() -> None:
        additional = hygiene.whole_number(raw, "additional", "invalid size", "must be a whole number")
        extension.propose_extension(
            ctx(),
            actor(Permission.LIST_MANAGE),
            trial,
            list_id,
            additional=additional,
            strata=chosen,
            reason=request.form.get("reason", ""),
            request=_signature(),
        )

    return _done(
        trial, _("Extension proposed (signed): another unblinded statistician must approve it."), run
    )


def _proposal() -> int:
    raw = (request.form.get("proposal") or "").strip()
    return hygiene.whole_number(raw, "proposal", "invalid proposal", "must be a whole number")


@bp.route("/trials/<trial>/lists/<int:list_id>/extension/approve", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def approve_extension(trial: str, list_id: int) -> WerkzeugResponse:
    """The second signature: the proposed blocks are appended as a new version."""

    def run() -> None:
        extension.approve_extension(
            ctx(), actor(Permission.LIST_MANAGE), trial, list_id, _proposal(), _signature()
        )

    return _done(trial, _("Extension approved (signed): a new version was appended."), run)


@bp.route("/trials/<trial>/lists/<int:list_id>/extension/decline", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def decline_extension(trial: str, list_id: int) -> WerkzeugResponse:
    """Decline the pending proposal, or withdraw it (its author): reasoned and audited."""

    def run() -> None:
        extension.decline_extension(
            ctx(),
            actor(Permission.LIST_MANAGE),
            trial,
            list_id,
            _proposal(),
            reason=request.form.get("reason", ""),
        )

    return _done(trial, _("Extension proposal declined: the list is unchanged."), run)


@bp.route("/trials/<trial>/lists/<int:list_id>/export", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def export(trial: str, list_id: int) -> WerkzeugResponse:
    """The list and its seed, encrypted with the statistician's passphrase (signed, audited)."""
    try:
        name, body = lists_export.export_list(
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
    document = lists_quality.quality_document(ctx(), trial)

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
        lists_quality.quality_pdf(ctx(), trial),
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="quality-{trial}.pdf"'},
    )
