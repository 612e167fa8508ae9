"""The cohort's tube sets (issue 20): the trial manager's stock page (generate, print the label
sheet, mark a set damaged), the bedside collection scan on a phone, a sample recorded as missed.
An observational study has no arm: nothing here is blinded beyond the usual site scoping."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import sites
from allocator.services.errors import DomainError
from allocator.services.samples import collection
from allocator.services.samples import kits as sample_kits
from allocator.services.subjects import register as subjects_register
from allocator.trialdef import TrialDefinition
from allocator.web import forms, messages
from allocator.web.security import actor, ctx, definition_of, holds_any, scope

bp = Blueprint("samples", __name__)

_form = forms.text
_GENERATED = "tube_sets_generated"  # the numbers the last generation drew, shown once (PRG)
_COLLECT = "sample_collection"  # what the collection POST hands to the next GET (PRG)


def _observational(trial: str) -> TrialDefinition:
    """The study's definition; refused for a randomized trial, before anything is read, recorded
    or audited there (the review: an IFNG-PAIS nurse's scan check was audited in IFNG-PAIS)."""
    definition = definition_of(trial)
    if definition.sampling is None:
        raise subjects_register.NotObservational(f"{trial} randomizes its patients: use the randomization")
    return definition


def _stock_labels() -> dict[str, str]:
    return {
        "site": _("Site"),
        "kit_type": _("Tube set type"),
        "count": _("Number of tube sets"),
        "kits": _("Tube set numbers"),
        "kit_number": _("Tube set number"),
        "reason": _("Reason"),
    }


@bp.route("/trials/<trial>/tube-sets")
@requires(Permission.SAMPLE_VIEW)
def tube_sets(trial: str) -> str:
    """Tube sets per site and type, counted by status; for the trial manager, the forms to generate
    tube sets, print their labels and mark one damaged."""
    definition = _observational(trial)
    can_manage = holds_any(Permission.SAMPLE_MANAGE)
    visible = scope(Permission.SAMPLE_VIEW)
    return render_template(
        "samples/tube_sets.html",
        trial=trial,
        lines=sample_kits.stock(ctx(), trial, visible),
        statuses=sample_kits.STATUSES,
        can_manage=can_manage,
        unprinted=sample_kits.unprinted(ctx(), trial, scope(Permission.SAMPLE_MANAGE)) if can_manage else [],
        generated=session.pop(_GENERATED, None) or [],
        kit_types=[k for k in definition.kit_types if k.tubes],
        sites=[s for s in sites.sites(ctx(), trial) if scope(Permission.SAMPLE_MANAGE).allows_site(s.id)]
        if can_manage
        else [],
        forms_state={f: forms.recall(f"{request.path}#{f}") for f in ("generate", "damaged")},
    )


@bp.route("/trials/<trial>/tube-sets", methods=["POST"])
@requires(Permission.SAMPLE_MANAGE)
def generate(trial: str) -> WerkzeugResponse:
    _observational(trial)

    def run() -> None:
        numbers = sample_kits.generate(
            ctx(),
            actor(Permission.SAMPLE_MANAGE),
            trial,
            site=_form("site"),
            kit_type=_form("kit_type"),
            count=_form("count"),
            scope=scope(Permission.SAMPLE_MANAGE),
        )
        session[_GENERATED] = numbers

    return forms.perform(
        run,
        _("Tube sets generated: print their labels below."),
        url_for("samples.tube_sets", trial=trial),
        "generate",
        _stock_labels(),
    )


@bp.route("/trials/<trial>/tube-sets/labels", methods=["POST"])
@requires(Permission.SAMPLE_MANAGE)
def labels(trial: str) -> Response | WerkzeugResponse:
    """The label sheet of the tube sets listed (typed or scanned, one per line), as a PDF; a set
    printed before comes out as a DUPLICATA reprint."""
    _observational(trial)
    numbers = [line.strip() for line in (request.form.get("kits") or "").splitlines() if line.strip()]
    numbers += [n for n in request.form.getlist("kit") if n.strip()]
    try:
        document_id, pdf = sample_kits.print_labels(
            ctx(), actor(Permission.SAMPLE_MANAGE), trial, numbers, scope=scope(Permission.SAMPLE_MANAGE)
        )
    except DomainError as exc:
        forms.flash_error(exc, _stock_labels())
        return redirect(url_for("samples.tube_sets", trial=trial), code=303)
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )


@bp.route("/trials/<trial>/tube-sets/damaged", methods=["POST"])
@requires(Permission.SAMPLE_MANAGE)
def damaged(trial: str) -> WerkzeugResponse:
    _observational(trial)
    return forms.perform(
        lambda: sample_kits.mark_damaged(
            ctx(),
            actor(Permission.SAMPLE_MANAGE),
            trial,
            _form("kit_number"),
            reason=_form("reason"),
            scope=scope(Permission.SAMPLE_MANAGE),
        ),
        _("Tube set recorded as damaged: it will not be assigned."),
        url_for("samples.tube_sets", trial=trial),
        "damaged",
        _stock_labels(),
    )


# --- the bedside collection scan ------------------------------------------------------------------


def _collect_labels() -> dict[str, str]:
    return {
        "subject_number": _("Participant's subject number"),
        "label": _("Sample"),
        "payload": _("Tube set label"),
        "collected_at": _("Time drawn (local time)"),
        "late_reason": _("Why recorded late"),
    }


@bp.route("/trials/<trial>/samples/collect")
@requires(Permission.SAMPLE_COLLECT)
def collect(trial: str) -> Response:
    """The phone page at the bedside: the participant, the sample, the tube set scanned (its own
    label or any tube's), checked as it is scanned, then recorded. What the last POST did is shown
    once, by this GET (Post/Redirect/Get: a reload records nothing)."""
    definition = _observational(trial)
    outcome = session.pop(_COLLECT, None) or {}
    form = forms.recall(f"{request.path}#scan")
    result = outcome.get("result")
    if result:
        result = {**result, "at": datetime.fromisoformat(result["at"])}
    assert definition.sampling is not None  # noqa: S101 - _observational checked it
    html = render_template(
        "samples/collect.html",
        trial=trial,
        labels=[tp.label for tp in definition.sampling.timepoints],
        result=result,
        form=form,
        error_title=outcome.get("title", ""),
        values=form.values,
    )
    return Response(html, mimetype="text/html")


@bp.route("/trials/<trial>/samples/collect", methods=["POST"])
@requires(Permission.SAMPLE_COLLECT)
def collect_record(trial: str) -> WerkzeugResponse:
    definition = _observational(trial)
    target = url_for("samples.collect", trial=trial)
    try:
        result = collection.record_collection(
            ctx(),
            actor(Permission.SAMPLE_COLLECT),
            trial,
            payload=_form("payload"),
            subject_number=_form("subject_number"),
            label=_form("label"),
            scope=scope(Permission.SAMPLE_COLLECT),
            collected_at=_collected_at(definition.timezone),
            late_reason=_form("late_reason"),
        )
    except DomainError as exc:
        forms.remember(f"{target}#scan", forms.shown(exc, _collect_labels()))
        session[_COLLECT] = {"title": messages.title(exc.title) or _("The scan is refused")}
    else:
        session[_COLLECT] = {
            "result": {
                "subject_number": result.subject_number,
                "label": result.label,
                "kit": result.kit_number,
                "at": result.collected_at.isoformat(),
            }
        }
    return redirect(target, code=303)


@bp.route("/trials/<trial>/samples/collect/check", methods=["POST"])
@requires(Permission.SAMPLE_COLLECT)
def collect_check(trial: str) -> Response:
    """The tube set checked as soon as it is scanned (JSON for static/scan.js), before anything is
    recorded. Refusals are audited as when recording."""
    _observational(trial)
    return forms.scan_verdict(
        "payload",
        lambda: collection.check_collection(
            ctx(),
            actor(Permission.SAMPLE_COLLECT),
            trial,
            payload=forms.scanned("scan"),
            subject_number=forms.scanned("subject_number"),
            label=forms.scanned("label"),
            scope=scope(Permission.SAMPLE_COLLECT),
        ),
        _collect_labels(),
        ok_message=_("right participant, right sample"),
    )


def _collected_at(zone: str) -> datetime | None:
    return forms.local_moment("collected_at", zone)


@bp.route("/trials/<trial>/subjects/<subject>/samples/<label>/missed", methods=["POST"])
@requires(Permission.SAMPLE_MISS)
def missed(trial: str, subject: str, label: str) -> WerkzeugResponse:
    """A planned sample not collected in its window, with the reason (investigator or manager)."""
    _observational(trial)
    return forms.perform(
        lambda: collection.record_missed(
            ctx(),
            actor(Permission.SAMPLE_MISS),
            trial,
            subject_number=subject,
            label=label,
            reason=_form("reason"),
            scope=scope(Permission.SAMPLE_MISS),
        ),
        _("Sample recorded as missed."),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        f"missed-{label}",
        {"reason": _("Why the sample was not taken"), "label": _("Sample")},
    )


@bp.route("/trials/<trial>/subjects/<subject>/samples/<label>/missed/withdraw", methods=["POST"])
@requires(Permission.SAMPLE_MISS)
def withdraw_missed(trial: str, subject: str, label: str) -> WerkzeugResponse:
    """A sample recorded missed by mistake: the record withdrawn, with the reason; the tube set is
    to be collected again (investigator or manager)."""
    _observational(trial)
    return forms.perform(
        lambda: collection.withdraw_missed(
            ctx(),
            actor(Permission.SAMPLE_MISS),
            trial,
            subject_number=subject,
            label=label,
            reason=_form("reason"),
            scope=scope(Permission.SAMPLE_MISS),
        ),
        _("The missed record is withdrawn: the sample is to be collected."),
        url_for("subjects.subject_page", trial=trial, subject=subject),
        f"unmissed-{label}",
        {"reason": _("Why the missed record is withdrawn"), "label": _("Sample")},
    )
