"""Unblinding pages: emergency (investigator, three screens from the home page: home, form,
result), pharmacovigilance, registration of an offline code-break sheet, accidental-unblinding
reports, and the planned end-of-trial unblinding with its unblinded listing and the DSMB's interim
packages. The arm appears only on the result of an unblinding, once, with Cache-Control: no-store
(as every dynamic page here)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import codebreak, unblinding, unblinding_drills
from allocator.services.closeout import releases, state
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.services.subjects import views
from allocator.trialdef import NotRandomized
from allocator.web import errors, forms, messages
from allocator.web.i18n import signed
from allocator.web.security import actor, ctx, scope

bp = Blueprint("unblinding", __name__)


_form = forms.text
_signature = forms.signature


def _local_time(name: str, trial: str) -> datetime:
    """A date-time typed in the site's local time (the trial's time zone), as UTC: a moment of this
    era (`forms.local_moment`; a year 0001 overflowed the conversion here, a server error)."""
    moment = forms.local_moment(name, trial_definition(ctx(), trial).timezone)
    if moment is None:
        raise ValidationFailed("invalid time", errors=[FieldProblem(name, "give a date and time")])
    return moment


def _page(template: str, http_status: int = 200, **values: object) -> Response:
    trial = str(values.get("trial", ""))
    phone = trial_definition(ctx(), trial).sponsor.emergency_phone if trial else ""
    html = render_template(template, emergency_phone=phone, **values)
    return Response(html, status=http_status, mimetype="text/html")


def _offline_labels() -> dict[str, str]:
    return {
        "sheet_number": _("Sheet number (scan or type)"),
        "opened_at": _("Opened at (site time)"),
        "opened_by": _("Opened by (name)"),
        "opened_by_role": _("Their role"),
        "reason_category": _("Reason"),
        "reason": _("Details"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


def _accidental_labels() -> dict[str, str]:
    return {
        "subject": _("Subject number (if one subject's treatment was exposed)"),
        "site": _("Or the site concerned"),
        "occurred_at": _("When it happened (site time)"),
        "persons_unblinded": _("Who was unblinded (names and roles)"),
        "how": _("How"),
        "impact": _("Impact on the trial"),
        "actions": _("Actions taken"),
    }


# --- emergency unblinding -------------------------------------------------------------------


def _unblinding_labels() -> dict[str, str]:
    return {
        "subject": _("Subject number"),
        "reason_category": _("Reason"),
        "reason": _("Details"),
        "confirm": _("Confirmation"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


def _form_page(
    trial: str,
    kind: str,
    permission: Permission,
    values: Mapping[str, str],
    form: forms.FormState,
    http_status: int = 200,
) -> Response:
    """The unblinding form: the subject is chosen in a list of the subjects within reach (subject
    number, randomization date), never typed (issue 13), and shown back large by the confirmation."""
    subjects = views.subject_choices(ctx(), trial, scope(permission))  # by site and number
    # UNB-11: the drill subjects of the investigator's sites, offered apart and marked DRILL.
    drills = unblinding_drills.drill_subjects(ctx(), trial, scope(permission)) if kind == "emergency" else []
    numbers = {s.subject_number for s in subjects} | {d.drill_number for d in drills}
    wanted = values.get("subject", "")
    return _page(
        "unblinding/emergency.html",
        http_status,
        trial=trial,
        reasons=unblinding.EMERGENCY_REASONS if kind == "emergency" else unblinding.PV_REASONS,
        values=values,
        form=form,
        kind=kind,
        subjects=subjects,
        drills=drills,
        subjects_sites={s.site for s in subjects},
        chosen=wanted if wanted in numbers else "",
    )


@bp.route("/trials/<trial>/unblind", methods=["GET", "POST"])
@requires(Permission.SUBJECT_UNBLIND)
def emergency(trial: str) -> Response | WerkzeugResponse:
    """Screen 2 (the form) and screen 3 (the arm, once)."""
    if request.method == "GET":
        return _form_page(
            trial,
            "emergency",
            Permission.SUBJECT_UNBLIND,
            {"subject": request.args.get("subject", "")},
            forms.FormState(),
        )
    # A drill subject runs the drill (UNB-11); any other number the emergency unblinding.
    unblind = (
        unblinding_drills.drill_unblind
        if unblinding_drills.is_drill_number(_form("subject"))
        else unblinding.emergency_unblind
    )
    try:
        revealed = unblind(
            ctx(),
            actor(Permission.SUBJECT_UNBLIND),
            trial,
            _form("subject"),
            reason_category=_form("reason_category"),
            reason=_form("reason"),
            confirmed=_form("confirm") == "yes",
            signature=_signature(),
            scope=scope(Permission.SUBJECT_UNBLIND),
        )
    except DomainError as exc:
        return _form_page(
            trial,
            "emergency",
            Permission.SUBJECT_UNBLIND,
            request.form,
            forms.shown(exc, _unblinding_labels()),
            exc.status,
        )
    return _result_redirect(trial, revealed, "unblinding.emergency_result")


@bp.route("/trials/<trial>/pv-unblind", methods=["GET", "POST"])
@requires(Permission.UNBLINDING_PV)
def pharmacovigilance(trial: str) -> Response | WerkzeugResponse:
    if request.method == "GET":
        return _form_page(
            trial,
            "pharmacovigilance",
            Permission.UNBLINDING_PV,
            {"subject": request.args.get("subject", "")},
            forms.FormState(),
        )
    try:
        revealed = unblinding.pharmacovigilance_unblind(
            ctx(),
            actor(Permission.UNBLINDING_PV),
            trial,
            _form("subject"),
            reason_category=_form("reason_category"),
            reason=_form("reason"),
            confirmed=_form("confirm") == "yes",
            signature=_signature(),
            scope=scope(Permission.UNBLINDING_PV),
        )
    except DomainError as exc:
        return _form_page(
            trial,
            "pharmacovigilance",
            Permission.UNBLINDING_PV,
            request.form,
            forms.shown(exc, _unblinding_labels()),
            exc.status,
        )
    return _result_redirect(trial, revealed, "unblinding.pharmacovigilance_result")


def _result_redirect(trial: str, revealed: unblinding.RevealedArm, endpoint: str) -> WerkzeugResponse:
    """Post/Redirect/Get (issue 13): the POST records the unblinding; the arm is shown by the GET it
    redirects to, once, so a reload or the back button never unblinds a second time."""
    if revealed.alert_raised:
        flash(
            _("Several unblindings within an hour: the trial manager and the monitors have been alerted."),
            "info",
        )
    if revealed.drill:
        return redirect(
            url_for("unblinding.drill_result", trial=trial, drill_id=revealed.unblinding_id), code=303
        )
    return redirect(url_for(endpoint, trial=trial, unblinding_id=revealed.unblinding_id), code=303)


def _result(trial: str, unblinding_id: int, permission: Permission) -> Response:
    result = unblinding.show_result(ctx(), actor(permission), trial, unblinding_id)
    if isinstance(result, unblinding.ShownBefore):
        return _page("unblinding/shown.html", trial=trial, shown=result)
    return _page("unblinding/revealed.html", trial=trial, revealed=result, kind=result_kind(permission))


def result_kind(permission: Permission) -> str:
    return "emergency" if permission is Permission.SUBJECT_UNBLIND else "pharmacovigilance"


@bp.route("/trials/<trial>/unblind/<int:unblinding_id>")
@requires(Permission.SUBJECT_UNBLIND)
def emergency_result(trial: str, unblinding_id: int) -> Response:
    """Screen 3: the arm, once, to the person who unblinded; afterwards when and to whom it was shown."""
    return _result(trial, unblinding_id, Permission.SUBJECT_UNBLIND)


@bp.route("/trials/<trial>/unblind/drill/<int:drill_id>")
@requires(Permission.SUBJECT_UNBLIND)
def drill_result(trial: str, drill_id: int) -> Response:
    """Screen 3 of an unblinding drill (UNB-11): the drill value, marked DRILL, once."""
    result = unblinding_drills.show_drill_result(ctx(), actor(Permission.SUBJECT_UNBLIND), trial, drill_id)
    if isinstance(result, unblinding.ShownBefore):
        return _page("unblinding/shown.html", trial=trial, shown=result)
    return _page("unblinding/revealed.html", trial=trial, revealed=result, kind="emergency")


@bp.route("/trials/<trial>/pv-unblind/<int:unblinding_id>")
@requires(Permission.UNBLINDING_PV)
def pharmacovigilance_result(trial: str, unblinding_id: int) -> Response:
    return _result(trial, unblinding_id, Permission.UNBLINDING_PV)


def _check_sheet(trial: str, scanned: str) -> str:
    """A real sheet, or a drill subject's drill sheet (UNB-11)."""
    check = (
        unblinding_drills.check_drill_sheet
        if unblinding_drills.is_drill_number(scanned)
        else codebreak.check_sheet
    )
    return check(ctx(), trial, scanned, scope(Permission.SUBJECT_UNBLIND))


@bp.route("/trials/<trial>/unblind/offline/check", methods=["POST"])
@requires(Permission.SUBJECT_UNBLIND)
def offline_check(trial: str) -> Response:
    """The sheet number scanned on the registration form, checked as it arrives (issue 13; JSON
    for static/scan.js): a sheet of this trial within reach. Reads no arm, records nothing."""
    return forms.scan_verdict(
        "sheet_number",
        lambda: _check_sheet(trial, forms.scanned("scan")),
        ok_message=_("sheet found"),
    )


@bp.route("/trials/<trial>/unblind/offline", methods=["GET", "POST"])
@requires(Permission.SUBJECT_UNBLIND)
def offline(trial: str) -> Response | WerkzeugResponse:
    """Register the opening of a sealed code-break sheet once the service is back (UNB-06)."""
    reasons = unblinding.EMERGENCY_REASONS
    if request.method == "GET":
        return _page(
            "unblinding/offline.html", trial=trial, reasons=reasons, values={}, form=forms.FormState()
        )
    # A drill sheet registers an offline drill (UNB-11); any other sheet an offline unblinding.
    register = (
        unblinding_drills.register_offline_drill
        if unblinding_drills.is_drill_number(_form("sheet_number"))
        else unblinding.register_offline
    )
    try:
        recorded = register(
            ctx(),
            actor(Permission.SUBJECT_UNBLIND),
            trial,
            _form("sheet_number"),
            opened_at=_local_time("opened_at", trial),
            opened_by=_form("opened_by"),
            opened_by_role=_form("opened_by_role"),
            reason_category=_form("reason_category"),
            reason=_form("reason"),
            signature=_signature(),
            scope=scope(Permission.SUBJECT_UNBLIND),
        )
    except DomainError as exc:
        return _page(
            "unblinding/offline.html",
            exc.status,
            trial=trial,
            reasons=reasons,
            values=request.form,
            form=forms.shown(exc, _offline_labels()),
        )
    if isinstance(recorded, unblinding_drills.DrillEvent):
        flash(
            _(
                "DRILL: the opening of drill sheet %(sheet)s is registered in the drill log. No patient's "
                "blind is broken; the people notified are told it was a drill.",
                sheet=recorded.sheet_number,
            ),
            "ok",
        )
        return redirect(url_for("main.trial", trial=trial), code=303)
    flash(
        _(
            "The opening of sheet %(sheet)s is registered: %(subject)s is marked blind broken and the "
            "sponsor and monitors are notified.",
            sheet=recorded.sheet_number,
            subject=recorded.subject_number,
        ),
        "ok",
    )
    return redirect(url_for("subjects.subject_page", trial=trial, subject=recorded.subject_number), code=303)


@bp.route("/trials/<trial>/unblinding/accidental", methods=["GET", "POST"])
@requires(Permission.UNBLINDING_REPORT)
def accidental(trial: str) -> Response | WerkzeugResponse:
    """Report an accidental or unplanned unblinding (UNB-09)."""
    if request.method == "GET":
        return _page("unblinding/accidental.html", trial=trial, values={}, form=forms.FormState())
    try:
        unblinding.report_accidental(
            ctx(),
            actor(Permission.UNBLINDING_REPORT),
            trial,
            unblinding.AccidentalReport(
                subject_number=_form("subject") or None,
                site=_form("site") or None,
                occurred_at=_local_time("occurred_at", trial),
                persons_unblinded=_form("persons_unblinded"),
                how=_form("how"),
                impact=_form("impact"),
                actions=_form("actions"),
            ),
            scope=scope(Permission.UNBLINDING_REPORT),
        )
    except DomainError as exc:
        return _page(
            "unblinding/accidental.html",
            exc.status,
            trial=trial,
            values=request.form,
            form=forms.shown(exc, _accidental_labels()),
        )
    flash(_("The accidental unblinding is recorded; the trial manager and the monitors are notified."), "ok")
    return redirect(url_for("main.trial", trial=trial), code=303)


# --- planned unblinding (UNB-10) --------------------------------------------------------------


@bp.route("/trials/<trial>/closeout")
@requires(Permission.TRIAL_VIEW)
def closeout(trial: str) -> Response:
    status, steps = state.history(ctx(), trial)
    cohort = trial_definition(ctx(), trial).observational  # issue 20: a lock, no unblinding
    return _page("unblinding/closeout.html", trial=trial, status=status, steps=steps, cohort=cohort)


def _step(trial: str, change: str) -> WerkzeugResponse:
    permission = Permission.TRIAL_LOCK if change == "lock" else Permission.TRIAL_UNBLIND
    action = state.lock if change == "lock" else state.unblind_trial
    try:
        step = action(ctx(), actor(permission), trial, reason=_form("reason"), signature=_signature())
    except DomainError as exc:
        forms.flash_error(exc, _release_labels())
    except NotRandomized as exc:  # an observational study has no final unblinding (issue 20): PRG
        forms.flash_error(errors.observational(exc), _release_labels())
    else:
        flash(
            _(
                "%(trial)s is now %(status)s (%(signature)s).",
                trial=trial,
                status=messages.word(step.to_status),
                signature=signed(step.signature),
            ),
            "ok",
        )
    return redirect(url_for("unblinding.closeout", trial=trial), code=303)


@bp.route("/trials/<trial>/lock", methods=["POST"])
@requires(Permission.TRIAL_LOCK)
def lock(trial: str) -> WerkzeugResponse:
    return _step(trial, "lock")


@bp.route("/trials/<trial>/final-unblinding", methods=["POST"])
@requires(Permission.TRIAL_UNBLIND)
def final_unblinding(trial: str) -> WerkzeugResponse:
    return _step(trial, "unblind")


def _release_labels() -> dict[str, str]:
    return {
        "reason": _("Reason"),
        "purpose": _("Purpose (e.g. DSMB look 1 after 60 patients)"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


def _csv(release: releases.Release, name: str) -> Response:
    return Response(
        release.csv,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.route("/trials/<trial>/unblinded-listing", methods=["GET", "POST"])
@requires(Permission.REPORT_VIEW_UNBLINDED)
def listing(trial: str) -> Response:
    """REP-06: 409 until the trial is UNBLINDED; then each release is signed."""
    status, _steps = state.history(ctx(), trial)
    if status != "unblinded":
        return _page("unblinding/not_yet.html", 409, trial=trial, status=status)
    if request.method == "GET":
        return _page("unblinding/release.html", trial=trial, form=forms.FormState(), what="listing")
    try:
        release = releases.unblinded_listing(
            ctx(), actor(Permission.REPORT_VIEW_UNBLINDED), trial, signature=_signature()
        )
    except DomainError as exc:
        return _page(
            "unblinding/release.html",
            exc.status,
            trial=trial,
            form=forms.shown(exc, _release_labels()),
            what="listing",
        )
    return _csv(release, f"{trial}-unblinded-listing-{release.released_at:%Y%m%dT%H%M%SZ}.csv")


@bp.route("/trials/<trial>/interim-packages", methods=["GET", "POST"])
@requires(Permission.REPORT_VIEW_UNBLINDED)
def interim(trial: str) -> Response:
    """REP-08: a signed, audited unblinded package for a DSMB look."""
    if request.method == "GET":
        return _page("unblinding/release.html", trial=trial, form=forms.FormState(), what="interim")
    try:
        release = releases.interim_package(
            ctx(),
            actor(Permission.REPORT_VIEW_UNBLINDED),
            trial,
            purpose=_form("purpose"),
            signature=_signature(),
        )
    except DomainError as exc:
        return _page(
            "unblinding/release.html",
            exc.status,
            trial=trial,
            form=forms.shown(exc, _release_labels()),
            what="interim",
        )
    return _csv(release, f"{trial}-interim-package-{release.released_at:%Y%m%dT%H%M%SZ}.csv")


@bp.route("/trials/<trial>/subjects/<subject>/treatment", methods=["POST"])
@requires(Permission.SUBJECT_UNBLIND)
def treatment(trial: str, subject: str) -> Response:
    """After the final unblinding, an investigator may see the treatment of their own subjects."""
    try:
        arm, label = releases.own_subject_arm(
            ctx(), actor(Permission.SUBJECT_UNBLIND), trial, subject, scope(Permission.SUBJECT_UNBLIND)
        )
    except DomainError as exc:
        return _page("unblinding/not_yet.html", exc.status, trial=trial, status=exc.detail)
    return _page("unblinding/treatment.html", trial=trial, subject=subject, arm=arm, label=label)
