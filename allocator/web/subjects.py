"""Investigator pages: randomize (with a confirmation step), subjects, corrections, screening log;
the pharmacy queue, dispensing and the sheet; the bedside scan. All blinded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, Role, requires
from allocator.services import bedside as services_bedside
from allocator.services import dispensing, signatures
from allocator.services import sites as services_sites
from allocator.services.closeout import state
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.services.subjects import confirmation as subjects_confirmation
from allocator.services.subjects import corrections, views
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.subjects import withdrawal as subjects_withdrawal
from allocator.trialdef import BooleanCriterion, NumberCriterion
from allocator.web.security import actor, ctx, current_trial, current_user, scope

bp = Blueprint("subjects", __name__)


def _form(name: str) -> str:
    return (request.form.get(name) or "").strip()


def _signature() -> signatures.SignatureRequest:
    return signatures.SignatureRequest(
        password=request.form.get("password") or "", totp=request.form.get("otp") or None
    )


def _flash_error(exc: DomainError) -> None:
    flash(exc.detail + "".join(f" ({e.field}: {e.message})" for e in exc.errors[:10]), "error")


def _perform(action: Callable[[], object], success: str, target: str) -> WerkzeugResponse:
    try:
        action()
    except DomainError as exc:
        _flash_error(exc)
    else:
        flash(success, "ok")
    return redirect(target, code=303)


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
            answers[criterion.id] = value
    strata = {
        f.code: request.form.get(f"strata.{f.code}", "")
        for f in definition.stratification
        if f.source == "entered"
    }
    return subjects_randomize.RandomizationRequest(
        site=_form("site"), screening_number=_form("screening_number"), eligibility=answers, strata=strata
    )


def _randomize_page(errors: list[FieldProblem] | None = None, status: int = 200) -> Response:
    definition = trial_definition(ctx(), current_trial().code)
    visible = scope(Permission.SUBJECT_RANDOMIZE)
    sites = [s for s in services_sites.sites(ctx(), current_trial().code) if visible.allows_site(s.id)]
    html = render_template(
        "subjects/randomize.html",
        trial=current_trial().code,
        definition=definition,
        sites=sites,
        values=request.form,
        errors=errors or [],
        error_fields={e.field for e in errors or []},
        BooleanCriterion=BooleanCriterion,
        NumberCriterion=NumberCriterion,
    )
    return Response(html, status=status, mimetype="text/html")


@bp.route("/trials/<trial>/randomize")
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize_form(trial: str) -> Response:
    return _randomize_page()


@bp.route("/trials/<trial>/randomize", methods=["POST"])
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize(trial: str) -> Response:
    """Two steps: `preview` shows the strata back (the commonest field error is a wrong stratum);
    `confirm` allocates. Ineligible patients are recorded in the screening log at `confirm`."""
    req = _request_from_form()
    if _form("step") == "edit":  # back from the confirmation step, every answer kept
        return _randomize_page()
    try:
        if _form("step") != "confirm":
            preview = subjects_randomize.preview(ctx(), trial, req, scope(Permission.SUBJECT_RANDOMIZE))
            definition = trial_definition(ctx(), trial)
            site_factor = next(f.label.en for f in definition.stratification if f.source == "site")
            return Response(
                render_template(
                    "subjects/confirm.html",
                    trial=trial,
                    preview=preview,
                    values=request.form,
                    site_factor=site_factor,
                ),
                mimetype="text/html",
            )
        result = subjects_randomize.randomize(
            ctx(), actor(Permission.SUBJECT_RANDOMIZE), trial, req, scope(Permission.SUBJECT_RANDOMIZE)
        )
    except subjects_randomize.Ineligible as exc:
        html = render_template(
            "subjects/ineligible.html", trial=trial, error=exc, screening_number=req.screening_number
        )
        return Response(html, status=422, mimetype="text/html")
    except ValidationFailed as exc:
        return _randomize_page(list(exc.errors), 422)
    return Response(
        render_template("subjects/randomized.html", trial=trial, result=result),
        status=201,
        mimetype="text/html",
    )


# --- subjects ----------------------------------------------------------------------------------


@bp.route("/trials/<trial>/subjects")
@requires(Permission.SUBJECT_VIEW)
def subject_list(trial: str) -> str:
    return render_template(
        "subjects/list.html",
        trial=trial,
        subjects=views.subjects(ctx(), trial, scope(Permission.SUBJECT_VIEW)),
    )


@bp.route("/trials/<trial>/subjects/<subject>")
@requires(Permission.SUBJECT_VIEW)
def subject_page(trial: str, subject: str) -> str:
    view = views.subject(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW))
    definition = trial_definition(ctx(), trial)
    access = current_user().access
    trial_id = current_trial().id
    level_labels = {f.code: {lv.code: lv.label.en for lv in f.levels} for f in definition.stratification}
    return render_template(
        "subjects/detail.html",
        trial=trial,
        subject=view,
        definition=definition,
        factor_labels={f.code: f.label.en for f in definition.stratification},
        level_labels=level_labels,
        can_correct=access.has(Permission.SUBJECT_CORRECT, trial_id),
        can_dispense=access.has(Permission.DISPENSATION_DISPENSE, trial_id),
        can_prepare=access.has(Permission.DISPENSATION_PREPARE, trial_id),
        trial_unblinded=state.status(ctx(), trial) == "unblinded",
        withdrawal_kinds=subjects_withdrawal.WITHDRAWAL_KINDS,
        today=definition.local_date(ctx().now()).isoformat(),
    )


@bp.route("/trials/<trial>/subjects/<subject>/confirmation.pdf")
@requires(Permission.SUBJECT_VIEW)
def confirmation(trial: str, subject: str) -> Response:
    return _pdf(
        *subjects_confirmation.confirmation_pdf(
            ctx(), actor(Permission.SUBJECT_VIEW), trial, subject, scope(Permission.SUBJECT_VIEW)
        )
    )


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
        f"{subject} is flagged as randomized in error (signed). It stays in every report.",
        url_for("subjects.subject_page", trial=trial, subject=subject),
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
        f"The withdrawal of {subject} is recorded (signed). No further dose will be dispensed or given; "
        "the subject stays in every report.",
        url_for("subjects.subject_page", trial=trial, subject=subject),
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
        "The corrected value is recorded beside the one used at randomization (no re-randomization).",
        url_for("subjects.subject_page", trial=trial, subject=subject),
    )


@bp.route("/trials/<trial>/screening")
@requires(Permission.SCREENING_VIEW)
def screening(trial: str) -> str:
    return render_template(
        "subjects/screening.html",
        trial=trial,
        entries=views.screening_log(ctx(), trial, scope(Permission.SCREENING_VIEW)),
    )


# --- pharmacy ---------------------------------------------------------------------------------


@bp.route("/trials/<trial>/pharmacy")
@requires(Permission.DISPENSATION_VIEW)
def pharmacy(trial: str) -> str:
    visible = scope(Permission.DISPENSATION_VIEW)
    return render_template(
        "subjects/pharmacy.html",
        trial=trial,
        queue=dispensing.queue(ctx(), trial, visible),
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
        "Dispensed (signed). Print the dispensation sheet.",
        url_for("subjects.subject_page", trial=trial, subject=subject),
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
        _flash_error(exc)
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
        "A replacement kit was allocated.",
        url_for("subjects.subject_page", trial=trial, subject=subject),
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


@bp.route("/trials/<trial>/bedside", methods=["GET", "POST"])
@requires(Permission.ADMINISTRATION_RECORD)
def bedside(trial: str) -> Response:
    """The nurse's phone page: scan the syringe label, check, record."""
    definition = trial_definition(ctx(), trial)
    result = None
    error: DomainError | None = None
    status = 200
    if request.method == "POST":
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
            )
        except DomainError as exc:
            error, status = exc, exc.status
    days = [d.label for d in definition.dispensing.schedule]
    values: Mapping[str, str] = request.form if error else {}
    if result is not None and result.day in days[:-1]:
        # Ready for the same patient's next dose; the label field stays empty for the next scan.
        values = {"subject_number": result.subject_number, "day": days[days.index(result.day) + 1]}
    html = render_template(
        "subjects/bedside.html", trial=trial, days=days, result=result, error=error, values=values
    )
    return Response(html, status=status, mimetype="text/html")


def _administered_at(zone: str) -> datetime | None:
    raw = _form("administered_at")
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            "invalid time", errors=[FieldProblem("administered_at", "date and time")]
        ) from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(zone))  # the form's time is the ward's local time
    return local.astimezone(UTC)
