"""Worlds for the cohort's reports and API lists (issue 20): IMMUNOSEPSIS-4 at two sites, with
participants registered through the registration service and their D3 samples in every state.

`record_sample` is the ONE place that puts a planned sample's tube set in a state: the registration
service assigns the tube set, then `record_sample` moves it on with its `sample_kit_event` rows
directly through the ORM, so that a test chooses the collection and receipt times the reports count
(the bedside scan would tie the collection to the planned day, the lab's receipt to now)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import PlannedSample, Registration, SampleKit, SampleKitEvent, SampleKitStatus, Trial
from allocator.services import sites, trials
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize, register
from tests.support import ALL_SITES, CLI_ACTOR, COHORT, COHORT_ELIGIBLE, COHORT_TRIAL, Clock, stock_tube_sets

# The flow of a tube set's statuses up to each state (SampleKitStatus), for its history rows.
_PATH = {
    "assigned": ("assigned",),
    "collected": ("assigned", "collected"),
    "shipped": ("assigned", "collected", "shipped"),
    "received": ("assigned", "collected", "shipped", "received"),
    "missed": ("assigned", "missed"),
}


def record_sample(
    ctx: ServiceContext,
    subject_number: str,
    status: str,
    *,
    label: str = "D3",
    collected_at: datetime | None = None,
    received_at: datetime | None = None,
    reason: str | None = None,
) -> str:
    """Put the tube set of the participant's planned sample `label` (assigned at registration) in
    `status` (assigned, collected, shipped, received, missed or unusable), collected and received at
    the times given, with its reason; its history rows (sample_kit_event) on the way. Returns the
    tube set's number."""
    status = SampleKitStatus(status).value
    at = ctx.now()
    with ctx.db.unit_of_work() as session:
        planned = session.execute(
            select(PlannedSample)
            .join(Registration, Registration.id == PlannedSample.registration_id)
            .join(Trial, Trial.id == Registration.trial_id)
            .where(
                Trial.code == COHORT,
                Registration.subject_number == subject_number,
                PlannedSample.label == label,
            )
        ).scalar_one()
        # The tube set the registration assigned to this sample, moved on from "assigned".
        kit = session.execute(select(SampleKit).where(SampleKit.planned_sample_id == planned.id)).scalar_one()
        number = kit.kit_number
        kit.status = status
        kit.collected_at = collected_at
        kit.collected_by_name = "Nurse Test" if collected_at else None
        kit.collection_recorded_at = collected_at
        kit.received_at = received_at
        kit.received_by_name = "Lab Test" if received_at else None
        kit.reason = reason
        if status == "unusable":
            steps = (
                *_PATH["received" if received_at else "collected" if collected_at else "assigned"],
                "unusable",
            )
        else:
            steps = _PATH[status]
        previous: str | None = "assigned"
        for step in steps[1:]:  # the registration wrote "assigned"
            session.add(
                SampleKitEvent(
                    sample_kit_id=kit.id,
                    at=at,
                    from_status=previous,
                    to_status=step,
                    actor_name="test",
                    reason=reason if step in ("missed", "unusable") else None,
                )
            )
            previous = step
    return number


# --- the world ---------------------------------------------------------------------------------

SECOND_SITE = """
[[sites]]
code = "L2"
name = "Lyon site 2"
city = "Lyon"
principal_investigator = "To be confirmed"
"""


def answers(today: date, **changes: object) -> dict[str, object]:
    """Answers of a patient eligible on `today`: ICU admission the day before yesterday, septic-shock
    onset (the schedule's day 0) yesterday, unless `changes` say otherwise."""
    return {
        **COHORT_ELIGIBLE,
        "icu_admission_date": (today - timedelta(days=2)).isoformat(),
        "septic_shock_onset_date": (today - timedelta(days=1)).isoformat(),
        **changes,
    }


def two_site_cohort(ctx: ServiceContext, tube_sets: int = 110) -> None:
    """IMMUNOSEPSIS-4 with a second site L2, both active, each stocked with `tube_sets` BIOMARKER
    tube sets (a registration takes one per planned sample)."""
    text = COHORT_TRIAL.read_text(encoding="utf-8").replace(
        "# --- What the public record", SECOND_SITE + "\n# --- What"
    )
    trials.load_trial(ctx, CLI_ACTOR, text, source_name="trials/immunosepsis-4.toml")
    for code in ("L1", "L2"):
        sites.activate_site(
            ctx,
            CLI_ACTOR,
            COHORT,
            code,
            approval_date=date(2026, 1, 5),
            delegation_log_date=date(2026, 2, 1),
            code_break_evidence="",
            scope=ALL_SITES,
            reason="approved",
        )
        stock_tube_sets(ctx, tube_sets, site=code)


def screen(
    ctx: ServiceContext, site: str, screening: str, eligibility: dict[str, object], actor: Actor = CLI_ACTOR
) -> str | None:
    """Screen a patient: its subject number when registered, None when not eligible."""
    try:
        return register.register(
            ctx, actor, COHORT, register.RegistrationRequest(site, screening, eligibility), ALL_SITES
        ).subject_number
    except randomize.Ineligible:
        return None


@dataclass
class CohortWorld:
    """What `cohort_world` built: subject numbers by role in the story."""

    subjects: dict[str, str] = field(default_factory=dict)
    kits: dict[str, str] = field(default_factory=dict)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """A moment in UTC given in Paris winter time (UTC+1) on `day`."""
    return datetime(day.year, day.month, day.day, hour - 1, minute, tzinfo=UTC)


def cohort_world(ctx: ServiceContext, clock: Clock) -> CohortWorld:
    """Every case the reports count, at two sites (the clock starts on Monday 2 March 2026):

    March (registered on Monday 2 March, onset Sunday 1 March: D3 due and planned on Wednesday 4
    March, window to Thursday 5 March):
      L1-001 collected on the planned date, received 26 h 30 min later: analysable
      L1-002 collected on Thursday 5 (in the window, another day), received, unusable at the lab
      L1-003 missed ("patient transferred")
      L2-001 collected on Friday 6 (outside the window), shipped, not yet received
      L2-002 tube set assigned, not collected (pending)
      L2-003 collected on Thursday 5, unusable at the site before shipping ("tube broken at the site")
      L2-004 its tube set unusable before collection ("tube set expired")
    Screening: L1-0901 not eligible (age); L2-0901 not eligible (age, pregnancy); L1-0902 not
    eligible (no lab working day in its D3/D4 window: onset Wednesday 25 February, D3 Saturday);
    L1-0005 first not eligible (age), corrected and registered as L1-004 (counted once).
    April (registered on Thursday 2 April, onset Tuesday 31 March: D3 on Friday 3 April): L1-005,
    no tube set yet (pending); L2-005 collected on its planned date and received 3 h later:
    analysable."""
    world = CohortWorld()
    two_site_cohort(ctx)
    today = clock().date()  # Monday 2 March 2026

    def screened(site: str, screening: str, eligibility: dict[str, object]) -> str | None:
        clock.advance(minutes=1)
        return screen(ctx, site, screening, eligibility)

    s = world.subjects
    s["A"] = screened("L1", "L1-0001", answers(today)) or ""
    s["B"] = screened("L1", "L1-0002", answers(today)) or ""
    s["C"] = screened("L1", "L1-0003", answers(today)) or ""
    s["D"] = screened("L2", "L2-0001", answers(today)) or ""
    s["E"] = screened("L2", "L2-0002", answers(today)) or ""
    s["I"] = screened("L2", "L2-0003", answers(today)) or ""
    s["J"] = screened("L2", "L2-0004", answers(today)) or ""
    assert screened("L1", "L1-0901", answers(today, age=17)) is None
    assert screened("L2", "L2-0901", answers(today, age=16, pregnancy_breastfeeding="yes")) is None
    no_lab_day = answers(today, icu_admission_date="2026-02-24", septic_shock_onset_date="2026-02-25")
    assert screened("L1", "L1-0902", no_lab_day) is None
    assert screened("L1", "L1-0005", answers(today, age=17)) is None
    s["F"] = screened("L1", "L1-0005", answers(today)) or ""
    wednesday, thursday, friday = date(2026, 3, 4), date(2026, 3, 5), date(2026, 3, 6)
    k = world.kits
    k["A"] = record_sample(
        ctx, s["A"], "received", collected_at=at(wednesday, 8), received_at=at(thursday, 10, 30)
    )
    k["B"] = record_sample(
        ctx,
        s["B"],
        "unusable",
        collected_at=at(thursday, 9),
        received_at=at(thursday, 15),
        reason="haemolysed",
    )
    k["C"] = record_sample(ctx, s["C"], "missed", reason="patient transferred")
    k["D"] = record_sample(ctx, s["D"], "shipped", collected_at=at(friday, 11))
    k["E"] = record_sample(ctx, s["E"], "assigned")
    k["I"] = record_sample(
        ctx, s["I"], "unusable", collected_at=at(thursday, 10), reason="tube broken at the site"
    )
    k["J"] = record_sample(ctx, s["J"], "unusable", reason="tube set expired")
    clock.current = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)  # Thursday 2 April (Paris: UTC+2)
    april = answers(clock().date(), icu_admission_date="2026-03-31", septic_shock_onset_date="2026-03-31")
    s["G"] = screened("L1", "L1-0006", april) or ""  # D3 on Friday 3 April
    s["H"] = screened("L2", "L2-0005", april) or ""
    k["H"] = record_sample(
        ctx,
        s["H"],
        "received",
        collected_at=datetime(2026, 4, 3, 7, 0, tzinfo=UTC),
        received_at=datetime(2026, 4, 3, 10, 0, tzinfo=UTC),
    )
    assert all(s.values()), s
    return world


def grow_cohort(ctx: ServiceContext, clock: Clock, *, to: int, start: int = 0) -> None:
    """Register participants `start` to `to` - 1 over L1 and L2 on today's answers (in a cohort
    loaded by `two_site_cohort`), with a screening failure every fifth patient and their D3
    samples in every state in turn: received, missed, collected, unusable, none yet."""
    today = clock().date()
    for i in range(start, to):
        site = "L1" if i % 2 == 0 else "L2"
        clock.advance(seconds=30)
        if i % 5 == 4:
            assert screen(ctx, site, f"{site}-9{i:03d}", answers(today, age=17)) is None
        number = screen(ctx, site, f"{site}-{i:04d}", answers(today))
        assert number is not None
        collected = clock() + timedelta(days=2)
        state = i % 5
        if state == 0:
            record_sample(
                ctx, number, "received", collected_at=collected, received_at=collected + timedelta(hours=4)
            )
        elif state == 1:
            record_sample(ctx, number, "missed", reason="patient discharged")
        elif state == 2:
            record_sample(ctx, number, "collected", collected_at=collected)
        elif state == 3:
            record_sample(
                ctx, number, "unusable", collected_at=collected, received_at=collected, reason="leaked"
            )
