"""Investigator pages: randomize (with a confirmation step), subjects, corrections, screening log;
the pharmacy queue, dispensing and the sheet; the bedside scan. All blinded."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime

from babel.dates import get_day_names
from flask import Blueprint, Response, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, Role, requires
from allocator.services import bedside as services_bedside
from allocator.services import dispensing
from allocator.services import lab_calendar as lab_calendar_service
from allocator.services import sites as services_sites
from allocator.services.closeout import state
from allocator.services.errors import DomainError, ObservationalStudy, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.services.subjects import confirmation as subjects_confirmation
from allocator.services.subjects import corrections, views
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.subjects import register as subjects_register
from allocator.services.subjects import withdrawal as subjects_withdrawal
from allocator.trialdef import BooleanCriterion, NumberCriterion, TrialDefinition
from allocator.web import forms, hygiene, messages
from allocator.web.i18n import day as shown_day
from allocator.web.i18n import plain_number, tr
from allocator.web.security import actor, ctx, current_trial, current_user, scope

bp = Blueprint("subjects", __name__)


_form = forms.text
_signature = forms.signature
SUBJECT_FORMS = ("dispense", "replace", "stratum", "in-error", "withdrawal")


_perform = forms.perform


def _signature_labels() -> dict[str, str]:
    return {"password": _("Your password (electronic signature)"), "otp": _("Authenticator code")}


def _pdf(document_id: str, pdf: bytes) -> Response:
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{document_id}.pdf"'},
    )


# --- randomization ---------------------------------------------------------------------------


def _request_from_form() -> subjects_randomize.RandomizationRequest:
    definition = trial_definition(ctx(), current_trial().code)
    answers: dict[str, object] = {}
    for criterion in definition.eligibility:
        value = request.form.get(f"eligibility.{criterion.id}")
        if value is not None and value != "":
            # "4 200" and "2,5" as French users type them (the form keeps what was typed).
            answers[criterion.id] = plain_number(value) if isinstance(criterion, NumberCriterion) else value
    strata = {
        f.code: request.form.get(f"strata.{f.code}", "")
        for f in definition.stratification
        if f.source == "entered"
    }
    return subjects_randomize.RandomizationRequest(
        site=_form("site"), screening_number=_form("screening_number"), eligibility=answers, strata=strata
    )


def _randomize_labels(definition: TrialDefinition) -> tuple[dict[str, str], dict[str, str]]:
    """The form's labels by field name, and each English criterion, factor and level label in the
    page's language (the services' messages name them in English)."""
    labels = {"site": _("Site"), "screening_number": _("Screening number")}
    names: dict[str, str] = {}
    for criterion in definition.eligibility:
        labels[f"eligibility.{criterion.id}"] = tr(criterion.label)
        names[criterion.label.en] = tr(criterion.label)
        names[criterion.id] = tr(criterion.label)  # a date window names its reference by id
    for factor in definition.stratification:
        labels[f"strata.{factor.code}"] = tr(factor.label)
        names[factor.label.en] = tr(factor.label)
        names.update({level.label.en: tr(level.label) for level in factor.levels})
    return labels, names


def _randomize_page(form: forms.FormState | None = None, status: int = 200) -> Response:
    """The screening form: randomization, or registration in an observational study (issue 20)."""
    definition = trial_definition(ctx(), current_trial().code)
    visible = scope(Permission.SUBJECT_RANDOMIZE)
    sites = [s for s in services_sites.sites(ctx(), current_trial().code) if visible.allows_site(s.id)]
    html = render_template(
        "subjects/randomize.html",
        trial=current_trial().code,
        definition=definition,
        sites=sites,
        values=request.form,
        form=form or forms.FormState(),
        criteria={c.id: c for c in definition.eligibility},
        BooleanCriterion=BooleanCriterion,
        NumberCriterion=NumberCriterion,
        cohort=definition.observational,
    )
    return Response(html, status=status, mimetype="text/html")


@bp.route("/trials/<trial>/randomize")
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize_form(trial: str) -> Response:
    # Issue 20: in an observational study the same form registers (it posts to `register`).
    return _randomize_page()


# --- registration in an observational study (issue 20) ------------------------------------------


def _observational_only(trial: str) -> TrialDefinition:
    definition = trial_definition(ctx(), trial)
    if not definition.observational:
        raise subjects_register.NotObservational(f"{trial} randomizes its patients: use the randomization")
    return definition


@bp.route("/trials/<trial>/register")
@requires(Permission.SUBJECT_RANDOMIZE)
def register_form(trial: str) -> Response:
    _observational_only(trial)
    return _randomize_page()


@bp.route("/trials/<trial>/register", methods=["POST"])
@requires(Permission.SUBJECT_RANDOMIZE)
def register(trial: str) -> Response | WerkzeugResponse:
    """One step (no stratum to check back): an eligible patient is registered and the browser is
    sent to the subject's page with its sample schedule; an ineligible one is recorded in the
    screening log with its reasons."""
    definition = _observational_only(trial)
    req = _request_from_form()
    labels, names = _randomize_labels(definition)
    names.update(
        {f"sampling.{tp.label}": tp.label for tp in definition.sampling.timepoints}
        if definition.sampling
        else {}
    )
    try:
        result = subjects_register.register(
            ctx(),
            actor(Permission.SUBJECT_RANDOMIZE),
            trial,
            subjects_register.RegistrationRequest(req.site, req.screening_number, req.eligibility),
            scope(Permission.SUBJECT_RANDOMIZE),
        )
    except subjects_randomize.Ineligible as exc:
        html = render_template(
            "subjects/ineligible.html",
            trial=trial,
            form=forms.shown(exc, labels, names),
            screening_number=req.screening_number,
            cohort=True,
        )
        return Response(html, status=422, mimetype="text/html")
    except ValidationFailed as exc:
        return _randomize_page(forms.shown(exc, labels, names), 422)
    session["just_registered"] = result.subject_number
    return redirect(url_for("subjects.subject_page", trial=trial, subject=result.subject_number), code=303)


@bp.route("/trials/<trial>/randomize", methods=["POST"])
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize(trial: str) -> Response | WerkzeugResponse:
    """Two steps: `preview` shows the strata back (the commonest field error is a wrong stratum);
    `confirm` allocates. An ineligible check is recorded in the screening log at `preview` already,
    so that it is counted even if the investigator walks away (issue 13)."""
    req = _request_from_form()
    if _form("step") == "edit":  # back from the confirmation step, every answer kept
        return _randomize_page()
    definition = trial_definition(ctx(), trial)
    if definition.observational:
        raise ObservationalStudy(f"{trial} is an observational study: register the patient instead")
    labels, names = _randomize_labels(definition)
    try:
        if _form("step") != "confirm":
            # An ineligible check is recorded in the screening log here, at once (issue 13).
            preview = subjects_randomize.check(
                ctx(), actor(Permission.SUBJECT_RANDOMIZE), trial, req, scope(Permission.SUBJECT_RANDOMIZE)
            )
            definition = trial_definition(ctx(), trial)
            site_factor = next(f.label.en for f in definition.stratification if f.source == "site")
            return Response(
                render_template(
                    "subjects/confirm.html",
                    trial=trial,
                    preview=preview,
                    failures=[forms.plain(message, names) for _criterion, message in preview.failures],
                    strata=[
                        (names.get(factor, factor), names.get(level, level))
                        for factor, level in preview.strata_labels.items()
                        if factor != site_factor
                    ],
                    site_level=names.get(preview.strata_labels.get(site_factor, ""), ""),
                    values=request.form,
                    site_label=names.get(site_factor, site_factor),
                ),
                mimetype="text/html",
            )
        result = subjects_randomize.randomize(
            ctx(), actor(Permission.SUBJECT_RANDOMIZE), trial, req, scope(Permission.SUBJECT_RANDOMIZE)
        )
    except subjects_randomize.Ineligible as exc:
        html = render_template(
            "subjects/ineligible.html",
            trial=trial,
            form=forms.shown(exc, labels, names),
            screening_number=req.screening_number,
        )
        return Response(html, status=422, mimetype="text/html")
    except ValidationFailed as exc:
        return _randomize_page(forms.shown(exc, labels, names), 422)
    # Post/Redirect/Get (issue 13): a reload of the result is a GET that shows it again.
    return redirect(url_for("subjects.randomized", trial=trial, subject=result.subject_number), code=303)


@bp.route("/trials/<trial>/subjects/<subject>/randomized")
@requires(Permission.SUBJECT_RANDOMIZE)
def randomized(trial: str, subject: str) -> str:
    """The randomization result (subject number, kits), read-only: what the POST redirects to, and
    what a reload or the back button shows again without randomizing anything."""
    view = views.subject(ctx(), trial, subject, scope(Permission.SUBJECT_RANDOMIZE))
    result = subjects_randomize.RandomizationResult(
        subject_number=view.subject_number,
        randomization_number=view.randomization_number,
        kits=tuple(subjects_randomize.AllocatedKit(d.kit_number, d.label) for d in view.days),
        randomized_at=view.randomized_at,
        site=view.site,
    )
    return render_template("subjects/randomized.html", trial=trial, result=result)


# --- the central lab's calendar of an observational study (issue 20) ------------------------------


@bp.route("/trials/<trial>/lab-calendar")
@requires(Permission.TRIAL_VIEW)
def lab_calendar(trial: str) -> str:
    """The lab's working days, the coming weekdays off (public holidays, closures) and, for those who
    manage the sites, the forms that enter a closure and withdraw one entered by mistake."""
    language = str(get_locale() or "en")
    shown = lab_calendar_service.calendar(ctx(), trial, language=language)
    names = get_day_names("wide", locale=get_locale())
    return render_template(
        "subjects/lab_calendar.html",
        trial=trial,
        calendar=shown,
        weekdays=[names[d - 1] for d in shown.working_weekdays],
        can_close=current_user().access.has(Permission.SITE_MANAGE, current_trial().id),
        form=forms.recall(f"{request.path}#closure"),
        withdraw_form=forms.recall(f"{request.path}#withdraw"),
    )


@bp.route("/trials/<trial>/lab-calendar/closures", methods=["POST"])
@requires(Permission.SITE_MANAGE)
def add_lab_closure(trial: str) -> WerkzeugResponse:
    return _perform(
        lambda: lab_calendar_service.add_closure(
            ctx(), actor(Permission.SITE_MANAGE), trial, {"day": _form("day"), "reason": _form("reason")}
        ),
        _("The closure is recorded: samples planned from now on avoid that day."),
        url_for("subjects.lab_calendar", trial=trial) + "#closure",
        "closure",
        {"day": _("Day"), "reason": _("Reason")},
    )


@bp.route("/trials/<trial>/lab-calendar/withdrawals", methods=["POST"])
@requires(Permission.SITE_MANAGE)
def withdraw_lab_closure(trial: str) -> WerkzeugResponse:
    """A closure entered by mistake, withdrawn with a reason (it stays in the list, marked)."""
    return _perform(
        lambda: lab_calendar_service.withdraw_closure(
            ctx(), actor(Permission.SITE_MANAGE), trial, {"day": _form("day"), "reason": _form("reason")}
        ),
        _("The closure is withdrawn: samples planned from now on may fall on that day."),
        url_for("subjects.lab_calendar", trial=trial) + "#withdraw",
        "withdraw",
        {"day": _("Closure to withdraw"), "reason": _("Why it is withdrawn")},
    )


# --- subjects ----------------------------------------------------------------------------------


SUBJECT_PAGE = 100  # subjects per page of the list (issue 21: the list is paged, not the whole trial)
SITE_FILTER_LENGTH = 10  # a site code
SUBJECT_NUMBER_LENGTH = 64  # a subject number (a cursor)


@bp.route("/trials/<trial>/subjects")
@requires(Permission.SUBJECT_VIEW)
def subject_list(trial: str) -> str:
    """A page of SUBJECT_PAGE subjects in randomization order, optionally of one site (issue 21)."""
    site = hygiene.query_text("site", max_length=SITE_FILTER_LENGTH)
    if trial_definition(ctx(), trial).observational:
        cohort = subjects_register.registrations_page(
            ctx(),
            trial,
            scope(Permission.SUBJECT_VIEW),
            after=hygiene.query_text("after", max_length=SUBJECT_NUMBER_LENGTH),
            limit=SUBJECT_PAGE,
            site=site,
        )
        return render_template(
            "subjects/registrations.html",
            trial=trial,
            registrations=cohort.registrations,
            next_after=cohort.next_after,
            site=site,
            site_choices=views.site_choices(ctx(), trial, scope(Permission.SUBJECT_VIEW)),
        )
    page = views.subjects_page(
        ctx(),
        trial,
        scope(Permission.SUBJECT_VIEW),
        after=hygiene.query_text("after", max_length=SUBJECT_NUMBER_LENGTH),
        limit=SUBJECT_PAGE,
        site=site,
    )
    return render_template(
        "subjects/list.html",
        trial=trial,
        subjects=page.subjects,
        next_after=page.next_after,
        site=site,
        site_choices=views.site_choices(ctx(), trial, scope(Permission.SUBJECT_VIEW)),
    )


@bp.route("/trials/<trial>/subjects/<subject>")
@requires(Permission.SUBJECT_VIEW)
def subject_page(trial: str, subject: str) -> str:
    definition = trial_definition(ctx(), trial)
    if definition.sampling is not None:  # an observational study's participant (issue 20)
        anchor = definition.criterion(definition.sampling.anchor)
        return render_template(
            "subjects/registration.html",
            trial=trial,
            subject=subjects_register.registration(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW)),
            anchor_label=tr(anchor.label),
            just_registered=session.pop("just_registered", None) == subject,
            # issue 20: a sample not taken in its window is recorded missed, with a reason
            can_miss=current_user().access.has(Permission.SAMPLE_MISS, current_trial().id),
            missed_forms={
                tp.label: forms.recall(f"{request.path}#missed-{tp.label}")
                for tp in definition.sampling.timepoints
            },
            withdraw_forms={
                tp.label: forms.recall(f"{request.path}#unmissed-{tp.label}")
                for tp in definition.sampling.timepoints
            },
        )
    view = views.subject(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW))
    access = current_user().access
    trial_id = current_trial().id
    level_labels = {f.code: {lv.code: tr(lv.label) for lv in f.levels} for f in definition.stratification}
    return render_template(
        "subjects/detail.html",
        trial=trial,
        subject=view,
        definition=definition,
        form_states={form_id: forms.recall(f"{request.path}#{form_id}") for form_id in SUBJECT_FORMS},
        factor_labels={f.code: tr(f.label) for f in definition.stratification},
        level_labels=level_labels,
        can_correct=access.has(Permission.SUBJECT_CORRECT, trial_id),
        can_dispense=access.has(Permission.DISPENSATION_DISPENSE, trial_id),
        can_prepare=access.has(Permission.DISPENSATION_PREPARE, trial_id),
        trial_unblinded=state.status(ctx(), trial) == "unblinded",
        withdrawal_kinds=subjects_withdrawal.WITHDRAWAL_KINDS,
        today=definition.local_date(ctx().now()).isoformat(),
    )


@bp.route("/trials/<trial>/subjects/<subject>/confirmations", methods=["POST"])
@requires(Permission.SUBJECT_VIEW)
def print_confirmation(trial: str, subject: str) -> WerkzeugResponse:
    """Print the randomization confirmation (an action: a printed document and an audit entry),
    then redirect to the printed document (POST-redirect-GET: reloading it prints nothing)."""
    try:
        document_id, _ = subjects_confirmation.print_confirmation(
            ctx(), actor(Permission.SUBJECT_VIEW), trial, subject, scope(Permission.SUBJECT_VIEW)
        )
    except DomainError as exc:
        forms.flash_error(exc)
        return redirect(url_for("subjects.subject_page", trial=trial, subject=subject), code=303)
    return redirect(
        url_for("subjects.confirmation", trial=trial, subject=subject, document=document_id), code=303
    )


@bp.route("/trials/<trial>/subjects/<subject>/confirmations/<document>.pdf")
@requires(Permission.SUBJECT_VIEW)
def confirmation(trial: str, subject: str, document: str) -> Response:
    """A printed randomization confirmation, exactly as printed; viewing it creates nothing."""
    pdf = subjects_confirmation.printed_confirmation(
        ctx(), trial, subject, document, scope(Permission.SUBJECT_VIEW)
    )
    return _pdf(document, pdf)


@bp.route("/trials/<trial>/subjects/<subject>/in-error", methods=["POST"])
@requires(Permission.SUBJECT_CORRECT)
def in_error(trial: str, subject: str) -> WerkzeugResponse:
    return _perform(
        lambda: corrections.mark_in_error(
            ctx(),
            actor(Permission.SUBJECT_CORRECT),
            trial,
            subject,
            reason=_form("reason"),
            scope=scope(Permission.SUBJECT_CORRECT),
            signature=_signature(),
        ),
        _(
            "%(subject)s is flagged as randomized in error (signed). It stays in every report.",
            subject=subject,
        ),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        "in-error",
        {"reason": _("Reason"), **_signature_labels()},
    )


@bp.route("/trials/<trial>/subjects/<subject>/withdrawal", methods=["POST"])
@requires(Permission.SUBJECT_CORRECT)
def withdrawal(trial: str, subject: str) -> WerkzeugResponse:
    is_investigator = Role.INVESTIGATOR in current_user().access.roles(current_trial().id)
    return _perform(
        lambda: subjects_withdrawal.withdraw(
            ctx(),
            actor(Permission.SUBJECT_CORRECT),
            trial,
            subject,
            kind=_form("kind"),
            effective_date=_form("effective_date"),
            reason=_form("reason"),
            scope=scope(Permission.SUBJECT_CORRECT),
            signature=_signature(),
            agreement_ref=_form("investigator_agreement_ref") or None,
            is_investigator=is_investigator,
        ),
        _(
            "The withdrawal of %(subject)s is recorded (signed). No further dose will be dispensed or given; "
            "the subject stays in every report.",
            subject=subject,
        ),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        "withdrawal",
        {
            "kind": _("Kind"),
            "effective_date": _("Effective date (site's calendar date)"),
            "reason": _("Reason"),
            "investigator_agreement_ref": _(
                "Reference of the investigator's agreement (if you are not the investigator)"
            ),
            **_signature_labels(),
        },
    )


@bp.route("/trials/<trial>/subjects/<subject>/stratum", methods=["POST"])
@requires(Permission.SUBJECT_CORRECT)
def stratum(trial: str, subject: str) -> WerkzeugResponse:
    is_investigator = Role.INVESTIGATOR in current_user().access.roles(current_trial().id)
    return _perform(
        lambda: corrections.correct_stratum(
            ctx(),
            actor(Permission.SUBJECT_CORRECT),
            trial,
            subject,
            factor=_form("factor"),
            level=_form("level"),
            reason=_form("reason"),
            scope=scope(Permission.SUBJECT_CORRECT),
            agreement_ref=_form("investigator_agreement_ref") or None,
            is_investigator=is_investigator,
        ),
        _("The corrected value is recorded beside the one used at randomization (no re-randomization)."),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        "stratum",
        {
            "factor": _("Factor"),
            "level": _("Correct level"),
            "reason": _("Reason"),
            "investigator_agreement_ref": _(
                "Reference of the investigator's agreement (if you are not the investigator)"
            ),
        },
    )


@bp.route("/trials/<trial>/screening")
@requires(Permission.SCREENING_VIEW)
def screening(trial: str) -> str:
    """A page of SUBJECT_PAGE screenings, newest first (issue 21)."""
    page = views.screening_page(
        ctx(),
        trial,
        scope(Permission.SCREENING_VIEW),
        before=hygiene.query_int("before", 0, minimum=0, maximum=hygiene.MAX_ROW_ID) or None,
        limit=SUBJECT_PAGE,
    )
    definition = trial_definition(ctx(), trial)
    return render_template(
        "subjects/screening.html",
        trial=trial,
        entries=page.entries,
        next_before=page.next_before,
        names=_randomize_labels(definition)[1],
        cohort=definition.observational,
    )


# --- pharmacy ---------------------------------------------------------------------------------


@bp.route("/trials/<trial>/pharmacy")
@requires(Permission.DISPENSATION_VIEW)
def pharmacy(trial: str) -> str:
    """The dispensation queue: a page of subjects with kits still to dispense, newest randomization
    first, optionally of one site (issue 21), and the pharmacists' notifications."""
    visible = scope(Permission.DISPENSATION_VIEW)
    site = hygiene.query_text("site", max_length=SITE_FILTER_LENGTH)
    before = hygiene.query_text("before", max_length=SUBJECT_NUMBER_LENGTH)
    page = dispensing.queue(ctx(), trial, visible, before=before, limit=dispensing.QUEUE_PAGE, site=site)
    return render_template(
        "subjects/pharmacy.html",
        trial=trial,
        queue=page.items,
        **forms.page_links(
            "subjects.pharmacy",
            trial,
            next_before=page.next_before,
            before=before,
            kept={"site": site},
            anchor="queue",
        ),
        site=site,
        site_choices=views.site_choices(ctx(), trial, visible),
        notes=views.notifications(
            ctx(), trial, {r.value for r in current_user().access.roles(current_trial().id)}, visible
        ),
    )


@bp.route("/trials/<trial>/subjects/<subject>/dispense", methods=["POST"])
@requires(Permission.DISPENSATION_DISPENSE)
def dispense(trial: str, subject: str) -> WerkzeugResponse:
    definition = trial_definition(ctx(), trial)
    scans = {d.label: request.form.get(f"scan.{d.label}", "") for d in definition.dispensing.schedule}
    return _perform(
        lambda: dispensing.dispense(
            ctx(),
            actor(Permission.DISPENSATION_DISPENSE),
            trial,
            subject,
            scans,
            scope=scope(Permission.DISPENSATION_DISPENSE),
            signature=_signature(),
        ),
        _("Dispensed (signed). Print the dispensation sheet."),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        "dispense",
        {
            **{f"scans.{d.label}": _("%(day)s kit", day=d.label) for d in definition.dispensing.schedule},
            **_signature_labels(),
        },
    )


@bp.route("/trials/<trial>/subjects/<subject>/dispense/check", methods=["POST"])
@requires(Permission.DISPENSATION_DISPENSE)
def dispense_check(trial: str, subject: str) -> Response:
    """One scan of the dispensing form, checked as it arrives (issue 13; JSON for static/scan.js):
    right, or what is wrong with it. A wrong kit is audited as when dispensing."""
    day = forms.scanned("field").removeprefix("scan.")
    return forms.scan_verdict(
        f"scans.{day}",
        lambda: dispensing.check_scan(
            ctx(),
            actor(Permission.DISPENSATION_DISPENSE),
            trial,
            subject,
            day,
            forms.scanned("scan"),
            scope=scope(Permission.DISPENSATION_DISPENSE),
        ),
        ok_message=_("right kit"),
    )


@bp.route("/trials/<trial>/subjects/<subject>/dispensation-sheets", methods=["POST"])
@requires(Permission.DISPENSATION_DISPENSE)
def print_sheet(trial: str, subject: str) -> WerkzeugResponse:
    """Print the dispensation sheet (an action: a printed document and an audit entry), then
    redirect to the printed document (POST-redirect-GET: reloading the page prints nothing)."""
    try:
        document_id, _ = dispensing.dispensation_sheet(
            ctx(),
            actor(Permission.DISPENSATION_DISPENSE),
            trial,
            subject,
            scope(Permission.DISPENSATION_DISPENSE),
        )
    except DomainError as exc:
        forms.flash_error(exc)
        return redirect(url_for("subjects.subject_page", trial=trial, subject=subject), code=303)
    return redirect(url_for("subjects.sheet", trial=trial, subject=subject, document=document_id), code=303)


@bp.route("/trials/<trial>/subjects/<subject>/dispensation-sheets/<document>.pdf")
@requires(Permission.DISPENSATION_DISPENSE)
def sheet(trial: str, subject: str, document: str) -> Response:
    """A printed dispensation sheet, exactly as printed; viewing it creates nothing."""
    pdf = dispensing.printed_dispensation_sheet(
        ctx(), trial, subject, document, scope(Permission.DISPENSATION_DISPENSE)
    )
    return _pdf(document, pdf)


@bp.route("/trials/<trial>/subjects/<subject>/replace", methods=["POST"])
@requires(Permission.DISPENSATION_DISPENSE)
def replace(trial: str, subject: str) -> WerkzeugResponse:
    return _perform(
        lambda: dispensing.replace_kit(
            ctx(),
            actor(Permission.DISPENSATION_DISPENSE),
            trial,
            subject,
            _form("day"),
            cause=_form("cause"),
            reason=_form("reason"),
            scope=scope(Permission.DISPENSATION_DISPENSE),
        ),
        _("A replacement kit was allocated."),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        "replace",
        {"day": _("Day"), "cause": _("What happened"), "reason": _("Reason")},
    )


@bp.route("/trials/<trial>/subjects/<subject>/preparation/<day>")
@requires(Permission.DISPENSATION_PREPARE)
def preparation(trial: str, subject: str, day: str) -> Response:
    """Unblinded pharmacist only: what to prepare (an audited read of the arm)."""
    arm, product = dispensing.preparation(
        ctx(),
        actor(Permission.DISPENSATION_PREPARE),
        trial,
        subject,
        day,
        scope(Permission.DISPENSATION_PREPARE),
    )
    html = render_template(
        "subjects/preparation.html", trial=trial, subject=subject, day=day, arm=arm, product=product
    )
    return Response(html, mimetype="text/html")


# --- bedside ----------------------------------------------------------------------------------


_BEDSIDE = "bedside"  # the session key of what the bedside POST hands to the next GET (PRG)


@bp.route("/trials/<trial>/bedside")
@requires(Permission.ADMINISTRATION_RECORD)
def bedside(trial: str) -> Response:
    """The nurse's phone page: scan the syringe label, check, record. What the last POST did (a
    dose recorded, a refusal, or a stop to confirm) is shown once, by this GET (Post/Redirect/Get:
    a reload records nothing)."""
    definition = trial_definition(ctx(), trial)
    outcome = session.pop(_BEDSIDE, None) or {}
    form = forms.recall(f"{request.path}#scan")
    result = outcome.get("result")
    if result:
        result = {**result, "at": datetime.fromisoformat(result["at"])}
    days = [d.label for d in definition.dispensing.schedule]
    values: Mapping[str, str] = form.values
    if result and result["day"] in days[:-1]:
        # Ready for the same patient's next dose; the label field stays empty for the next scan.
        values = {"subject_number": result["subject_number"], "day": days[days.index(result["day"]) + 1]}
    stop = outcome.get("stop")
    html = render_template(
        "subjects/bedside.html",
        trial=trial,
        days=days,
        result=result,
        stop=stop,
        form=form,
        error_title=outcome.get("title", ""),
        values=stop["values"] if stop else values,
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/bedside", methods=["POST"])
@requires(Permission.ADMINISTRATION_RECORD)
def bedside_record(trial: str) -> WerkzeugResponse:
    """Check, then record (issue 13): a right kit for the right patient and day is recorded at
    once; a dose outside its planned day (or any other warning) is a stop, recorded only when the
    next POST confirms it with a reason. Every outcome goes back to the GET page."""
    definition = trial_definition(ctx(), trial)
    target = url_for("subjects.bedside", trial=trial)
    try:
        given = _administered_at(definition.timezone)
        result = services_bedside.record_scan(
            ctx(),
            actor(Permission.ADMINISTRATION_RECORD),
            trial,
            payload=_form("payload"),
            subject_number=_form("subject_number"),
            day=_form("day"),
            scope=scope(Permission.ADMINISTRATION_RECORD),
            administered_at=given,
            late_reason=_form("late_reason"),
            confirmation=_form("confirmation"),
        )
    except services_bedside.ConfirmationNeeded as exc:
        session[_BEDSIDE] = {
            "stop": {
                "warnings": _warnings_shown(exc.warnings),
                "values": forms.typed_values(),
                "refused": _form("step") == "confirm",  # confirmed without a reason
            }
        }
    except DomainError as exc:
        forms.remember(f"{target}#scan", forms.shown(exc, _bedside_labels()))
        session[_BEDSIDE] = {"title": messages.title(exc.title) or _("The scan is refused")}
    else:
        session[_BEDSIDE] = {
            "result": {
                "subject_number": result.subject_number,
                "day": result.day,
                "kit": result.kit_number,
                "at": result.administered_at.isoformat(),
                "warnings": _warnings_shown(result.warnings),
            }
        }
    return redirect(target, code=303)


@bp.route("/trials/<trial>/bedside/check", methods=["POST"])
@requires(Permission.ADMINISTRATION_RECORD)
def bedside_check(trial: str) -> Response:
    """The syringe label checked as soon as it is scanned (issue 13; JSON for static/scan.js),
    before anything is recorded: right, right but outside its planned day (a stop at recording),
    or what is wrong with it. Refusals are audited as when recording."""
    return forms.scan_verdict(
        "payload",
        lambda: services_bedside.check_scan(
            ctx(),
            actor(Permission.ADMINISTRATION_RECORD),
            trial,
            payload=forms.scanned("scan"),
            subject_number=forms.scanned("subject_number"),
            day=forms.scanned("day"),
            scope=scope(Permission.ADMINISTRATION_RECORD),
        ),
        _bedside_labels(),
        ok_message=_("right patient, right dose"),
        notes=lambda r: _warnings_shown(getattr(r, "warnings", ())),
    )


_ISO_DATE = re.compile(r"\b\d{4}-\d\d-\d\d\b")


def _warnings_shown(warnings: Iterable[str]) -> list[str]:
    """The bedside warnings in the reader's words, the planned date as the reader writes dates."""
    shown = []
    for warning in warnings:
        names = {iso: shown_day(date.fromisoformat(iso)) for iso in _ISO_DATE.findall(warning)}
        shown.append(forms.plain(warning, names))
    return shown


def _bedside_labels() -> dict[str, str]:
    return {
        "subject_number": _("Patient's subject number"),
        "day": _("Dose"),
        "payload": _("Syringe label"),
        "administered_at": _("Time given (local time)"),
        "late_reason": _("Why recorded late"),
        "confirmation": _("Why give it now"),
    }


def _administered_at(zone: str) -> datetime | None:
    return forms.local_moment("administered_at", zone)
