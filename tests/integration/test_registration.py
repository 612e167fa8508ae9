"""Registration instead of randomization in the observational cohort IMMUNOSEPSIS-4 (issue 20): the
same screening rules and screening log; an eligible patient is registered with a subject number and
its D3 sample planned on a lab working day, in one transaction with its audit entry."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from allocator.models import LabClosure, PlannedSample, Registration, ScreeningEntry, Subject
from allocator.services import lab_calendar
from allocator.services.context import ServiceContext
from allocator.services.errors import ObservationalStudy, ValidationFailed
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.subjects import register, views
from tests.support import ALL_SITES, CLI_ACTOR, COHORT, COHORT_ELIGIBLE, events, load_ifn, ready_cohort


def _request(screening: str = "L1-0001", **changes: object) -> register.RegistrationRequest:
    return register.RegistrationRequest(
        site="L1", screening_number=screening, eligibility={**COHORT_ELIGIBLE, **changes}
    )


def _count(ctx: ServiceContext, model: type) -> int:
    with ctx.db.reading() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.mark.req("RND-05", "RND-06")
def test_an_eligible_patient_is_registered_with_the_d3_sample_planned(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    result = register.register(ctx, investigator, COHORT, _request(), ALL_SITES)
    assert result.subject_number == "L1-001" and result.registered_at == ctx.now()
    [d3] = result.samples
    assert (d3.label, d3.due, d3.window_end, d3.planned) == (
        "D3",
        date(2026, 3, 4),
        date(2026, 3, 5),
        date(2026, 3, 4),
    )
    answer = result.as_json()
    assert set(answer) == {"subject_number", "registered_at", "samples"}  # no randomization field
    assert answer["samples"] == [
        {
            "label": "D3",
            "kit_type": "BIOMARKER",
            "due_date": "2026-03-04",
            "window_end": "2026-03-05",
            "planned_date": "2026-03-04",
            "kit_number": d3.kit_number,  # the tube set assigned at registration
            "status": "assigned",
            "collected_at": None,
        }
    ]
    second = register.register(ctx, investigator, COHORT, _request("L1-0002"), ALL_SITES)
    assert second.subject_number == "L1-002"
    [entry] = [e for e in events(ctx, "subject.registered") if e.object_id == "L1-001"]
    assert entry.site_code == "L1" and '"D3":"2026-03-04"' in (entry.new_values or "")
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(Subject)).scalar_one() == 0  # not randomized
        assert s.execute(select(func.count()).select_from(PlannedSample)).scalar_one() == 2
    view = register.registration(ctx, COHORT, "L1-001", ALL_SITES)
    assert view.anchor_date == date(2026, 3, 1) and view.samples == result.samples
    # The screening log shows the registered subject number.
    log = views.screening_log(ctx, COHORT, ALL_SITES)
    assert {(e.screening_number, e.eligible, e.subject_number) for e in log} == {
        ("L1-0001", True, "L1-001"),
        ("L1-0002", True, "L1-002"),
    }


@pytest.mark.req("RND-06")
def test_an_ineligible_patient_goes_to_the_screening_log_with_every_reason(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    with pytest.raises(subjects_randomize.Ineligible) as refused:
        register.register(
            ctx, investigator, COHORT, _request(age=17, lactate="1.5", language_barrier="yes"), ALL_SITES
        )
    assert {e.field for e in refused.value.errors} == {
        "eligibility.age",
        "eligibility.lactate",
        "eligibility.language_barrier",
    }
    assert _count(ctx, Registration) == 0
    [entry] = views.screening_log(ctx, COHORT, ALL_SITES)
    assert not entry.eligible and entry.subject_number is None and len(entry.failures) == 3
    assert [e.object_id for e in events(ctx, "screening.ineligible")] == ["L1-0001"]


def test_no_lab_working_day_in_the_window_makes_the_patient_ineligible(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    # Onset Wednesday 25 February: D3 is Saturday 28 February, D4 Sunday 1 March.
    with pytest.raises(subjects_randomize.Ineligible) as refused:
        register.register(
            ctx,
            investigator,
            COHORT,
            _request(icu_admission_date="2026-02-24", septic_shock_onset_date="2026-02-25"),
            ALL_SITES,
        )
    [error] = refused.value.errors
    assert error.field == "eligibility.sampling.D3"
    assert error.message == "no central-lab working day for the D3 sample between 2026-02-28 and 2026-03-01"
    assert _count(ctx, Registration) == 0


def test_invalid_input_and_a_second_registration_change_nothing(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    with pytest.raises(ValidationFailed) as invalid:
        register.register(ctx, investigator, COHORT, _request("Jean Dupont", lactate="high"), ALL_SITES)
    assert {e.field for e in invalid.value.errors} >= {"screening_number"}
    with pytest.raises(ValidationFailed) as invalid:
        register.register(ctx, investigator, COHORT, _request(lactate="high"), ALL_SITES)
    assert [e.field for e in invalid.value.errors] == ["eligibility.lactate"]
    assert _count(ctx, ScreeningEntry) == 0
    register.register(ctx, investigator, COHORT, _request(), ALL_SITES)
    with pytest.raises(register.AlreadyRegistered):
        register.register(ctx, investigator, COHORT, _request(), ALL_SITES)
    assert _count(ctx, Registration) == 1 and _count(ctx, ScreeningEntry) == 1


def test_each_kind_of_study_refuses_the_other_enrolment(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    load_ifn(ctx)
    with pytest.raises(ObservationalStudy):
        subjects_randomize.randomize(
            ctx,
            investigator,
            COHORT,
            subjects_randomize.RandomizationRequest("L1", "L1-0001", COHORT_ELIGIBLE, {}),
            ALL_SITES,
        )
    with pytest.raises(register.NotObservational):
        register.register(ctx, investigator, "IFNG-PAIS", _request(), ALL_SITES)
    assert register.is_observational(ctx, COHORT) and not register.is_observational(ctx, "IFNG-PAIS")
    assert _count(ctx, ScreeningEntry) == 0


def test_a_lab_closure_is_audited_and_moves_the_next_registrations(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    with pytest.raises(ValidationFailed) as invalid:
        lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-01", "reason": ""})
    assert {(e.field, e.message) for e in invalid.value.errors} == {
        ("day", "is in the past"),
        ("reason", "is required"),
    }
    with pytest.raises(ValidationFailed) as invalid:
        lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "4 March", "reason": "x"})
    assert [e.field for e in invalid.value.errors] == ["day"]
    assert _count(ctx, LabClosure) == 0
    closed = lab_calendar.add_closure(
        ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "flow cytometer maintenance"}
    )
    assert closed.day == date(2026, 3, 4)
    [entry] = events(ctx, "lab.closure_added")
    assert entry.object_id == "2026-03-04" and "flow cytometer maintenance" in (entry.new_values or "")
    with pytest.raises(lab_calendar.AlreadyClosed):
        lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "again"})
    # The D3 of an onset on Sunday 1 March is Wednesday 4 March, closed: it moves to Thursday 5 (D4).
    [d3] = register.register(ctx, investigator, COHORT, _request(), ALL_SITES).samples
    assert (d3.due, d3.planned) == (date(2026, 3, 4), date(2026, 3, 5))
    shown = lab_calendar.calendar(ctx, COHORT, language="fr")
    assert shown.working_weekdays == (1, 2, 3, 4, 5) and shown.holidays_country == "FR"
    assert [(c.day, c.reason) for c in shown.closures] == [(date(2026, 3, 4), "flow cytometer maintenance")]
    off = {d.day: (d.holiday, d.closure) for d in shown.days_off}
    assert off[date(2026, 3, 4)] == (None, "flow cytometer maintenance")
    assert off[date(2026, 4, 6)] == ("Lundi de Pâques", None)  # Easter Monday, named in French
    # A randomized trial has no lab calendar.
    load_ifn(ctx)
    with pytest.raises(lab_calendar.NoLabCalendar):
        lab_calendar.add_closure(ctx, CLI_ACTOR, "IFNG-PAIS", {"day": "2026-03-10", "reason": "x"})


@pytest.mark.req("DIB-03", "AUD-02")
def test_a_closure_entered_by_mistake_is_withdrawn_kept_and_the_day_can_be_closed_again(
    ctx: ServiceContext,
) -> None:
    """A closure was final: one entered on the wrong day kept moving that day's samples for good."""
    investigator = ready_cohort(ctx)
    lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "wrong day"})
    with pytest.raises(ValidationFailed) as invalid:
        lab_calendar.withdraw_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": " "})
    assert [e.field for e in invalid.value.errors] == ["reason"]
    with pytest.raises(lab_calendar.NoClosure) as none:
        lab_calendar.withdraw_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-05", "reason": "x"})
    assert [e.field for e in none.value.errors] == ["day"]
    withdrawn = lab_calendar.withdraw_closure(
        ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "the maintenance is on the 11th"}
    )
    assert withdrawn.withdrawn is not None and withdrawn.withdrawn.reason == "the maintenance is on the 11th"
    [entry] = events(ctx, "lab.closure_withdrawn")
    assert entry.object_id == "2026-03-04" and entry.reason == "the maintenance is on the 11th"
    assert "wrong day" in (entry.old_values or "")
    # Withdrawn, the day is a working day again for the registrations that follow: D3 stays on it.
    [d3] = register.register(ctx, investigator, COHORT, _request(), ALL_SITES).samples
    assert (d3.due, d3.planned) == (date(2026, 3, 4), date(2026, 3, 4))
    with pytest.raises(lab_calendar.NoClosure):  # withdrawn once: nothing left to withdraw
        lab_calendar.withdraw_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "again"})
    # The day may be closed again; both closures stay in the calendar, the first marked withdrawn.
    lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "power cut planned"})
    with pytest.raises(lab_calendar.AlreadyClosed):
        lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "twice"})
    shown = lab_calendar.calendar(ctx, COHORT)
    assert [(c.reason, c.withdrawn is not None) for c in shown.closures] == [
        ("power cut planned", False),
        ("wrong day", True),
    ]
    assert {d.day: d.closure for d in shown.days_off}.get(date(2026, 3, 4)) in (None, "power cut planned")
    assert _count(ctx, LabClosure) == 2
