"""Register a patient in an observational study (issue 20): registration instead of randomization.

The same screening form and screening log as a randomized trial (`randomize`): the same screening
number rule, the same typed eligibility, an ineligible patient recorded in the screening log with
every failed criterion. An eligible patient is registered with a subject number and the samples of
the definition's `[sampling]` planned on the central lab's working days — the screening entry, the
registration, its planned samples and the audit entry in one transaction. A sample whose window
holds no lab working day cannot be taken, so the patient is not eligible (recorded as such).
Each planned sample gets one available tube set of its kit type at the participant's site, in the
same transaction (services/samples/kits.assign); a site without one refuses the registration, naming
the missing type, and nothing is written. No list, slot, stratum, arm or drug kit is involved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from allocator import sampling
from allocator.audit import Action, Actor
from allocator.eligibility import EligibilityResult, Failure
from allocator.models import PlannedSample, Registration, SampleKit, ScreeningEntry, Site, SiteStatus
from allocator.permissions import Scope
from allocator.services import lab_calendar, lookups
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import TrialRef, trial_row_and_definition
from allocator.services.samples import kits as sample_kits
from allocator.services.subjects import participants
from allocator.services.subjects.randomize import (
    Ineligible,
    SiteNotActive,
    checked_eligibility,
    normalized_screening_number,
    record_ineligible,
)
from allocator.trialdef import Sampling, TrialDefinition


class AlreadyRegistered(Conflict):
    slug = "already-registered"
    title = "This screening number is already registered"


class NotObservational(Conflict):
    slug = "not-observational"
    title = "This trial randomizes its patients: it does not register them"


@dataclass(frozen=True, slots=True)
class RegistrationRequest:
    """What the investigator enters: no stratum, arm or kit (an observational study has none)."""

    site: str
    screening_number: str
    eligibility: Mapping[str, object]
    json_numbers: bool = False


@dataclass(frozen=True, slots=True)
class ScheduledSample:
    label: str
    kit_type: str
    due: date
    window_end: date
    planned: date
    kit_number: str | None = None  # the tube set assigned at registration
    status: str | None = None  # the tube set's: assigned, collected, missed, shipped ...
    collected_at: datetime | None = None
    collected_by: str | None = None
    reason: str | None = None  # why missed (or unusable)

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "kit_type": self.kit_type,
            "due_date": self.due.isoformat(),
            "window_end": self.window_end.isoformat(),
            "planned_date": self.planned.isoformat(),
            "kit_number": self.kit_number,
            "status": self.status,
            "collected_at": self.collected_at.isoformat().replace("+00:00", "Z")
            if self.collected_at
            else None,
        }


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """What the investigator gets back: the subject number and the sample schedule."""

    subject_number: str
    registered_at: datetime
    site: str
    samples: tuple[ScheduledSample, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "registered_at": self.registered_at.isoformat().replace("+00:00", "Z"),
            "samples": [s.as_json() for s in self.samples],
        }


def is_observational(ctx: ServiceContext, trial_code: str) -> bool:
    """Whether `trial_code` registers (observational) rather than randomizes. Raises NotFound."""
    with ctx.db.reading() as session:
        return trial_row_and_definition(session, trial_code)[1].observational


def _sampling_of(definition: TrialDefinition) -> Sampling:
    if definition.sampling is None:
        raise NotObservational(f"{definition.code} randomizes its patients: use the randomization")
    return definition.sampling


def _schedule(
    plan: Sampling, eligibility: EligibilityResult, closed: frozenset[date]
) -> tuple[date, tuple[sampling.PlannedDate, ...], EligibilityResult]:
    """The planned samples; a timepoint without a lab working day in its window makes the patient
    ineligible (one more failure, in the screening log like the others)."""
    anchor = eligibility.answers.get(plan.anchor)
    if not isinstance(anchor, date):  # pragma: no cover - the anchor is a date criterion (trialdef)
        raise ValidationFailed(
            "no anchor date", errors=[FieldProblem(f"eligibility.{plan.anchor}", "is required")]
        )
    planned = sampling.plan(plan, anchor, closed)
    failures = [
        Failure(
            criterion=f"sampling.{p.label}",
            message=(
                f"no central-lab working day for the {p.label} sample between "
                f"{p.due.isoformat()} and {p.window_end.isoformat()}"
            ),
        )
        for p in planned
        if p.planned is None
    ]
    if not failures:
        return anchor, planned, eligibility
    return (
        anchor,
        planned,
        EligibilityResult(
            eligible=False, failures=(*eligibility.failures, *failures), answers=eligibility.answers
        ),
    )


def register(
    ctx: ServiceContext, actor: Actor, trial_code: str, request: RegistrationRequest, scope: Scope
) -> RegistrationResult:
    """Screen and, if eligible, register a patient of an observational study.

    Raises NotObservational (a randomized trial), ValidationFailed (invalid input; nothing
    recorded), Ineligible (recorded in the screening log), SiteNotActive, AlreadyRegistered,
    NoTubeSet (no tube set of a planned sample's type at the site; nothing recorded)."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial, definition = trial_row_and_definition(session, trial_code)
        plan = _sampling_of(definition)
        lookups.require_open(trial, session)
        screening = normalized_screening_number(definition, request.screening_number)
        eligibility = checked_eligibility(
            definition, request.eligibility, now, json_numbers=request.json_numbers
        )
        closed = lab_calendar.closure_days(session, trial.id)
        anchor, planned, eligibility = _schedule(plan, eligibility, closed)
        outcome = _register_in(
            ctx,
            session,
            actor,
            trial,
            request.site.strip(),
            screening,
            eligibility,
            anchor,
            planned,
            scope,
            now,
        )
    if isinstance(outcome, Ineligible):
        raise outcome
    return outcome


def _register_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    site_code: str,
    screening: str,
    eligibility: EligibilityResult,
    anchor: date,
    planned: tuple[sampling.PlannedDate, ...],
    scope: Scope,
    now: datetime,
) -> RegistrationResult | Ineligible:
    site = session.execute(
        select(Site).where(Site.trial_id == trial.id, Site.code == site_code).with_for_update()
    ).scalar_one_or_none()
    if site is None or not scope.allows_site(site.id):
        raise NotFound(
            f"no site {site_code!r} within your reach", errors=[FieldProblem("site", "unknown site")]
        )
    if site.status != SiteStatus.ACTIVE.value:
        raise SiteNotActive(f"site {site.code} is {site.status}: it cannot register patients")
    taken = session.execute(
        select(Registration.id).where(
            Registration.trial_id == trial.id, Registration.screening_number == screening
        )
    ).first()
    if taken is not None:
        raise AlreadyRegistered(
            f"screening number {screening} is already registered",
            errors=[FieldProblem("screening_number", "is already registered")],
        )
    if not eligibility.eligible:
        # The screening log's rule of the randomized trial: the same answers are recorded once.
        record_ineligible(ctx, session, actor, trial, site.id, site.code, screening, eligibility, now)
        return Ineligible(
            f"{screening} is not eligible: recorded in the screening log, not registered",
            errors=[FieldProblem(f"eligibility.{f.criterion}", f.message) for f in eligibility.failures],
        )
    entry_id = session.execute(
        insert(ScreeningEntry).returning(ScreeningEntry.id),
        {
            "trial_id": trial.id,
            "site_id": site.id,
            "screening_number": screening,
            "screened_at": now,
            "screened_by_id": actor.user_id,
            "screened_by_name": actor.name,
            "eligible": True,
            "answers": eligibility.answers_json(),
            "failures": [],
        },
    ).scalar_one()
    # Per-site sequence under the site's lock, as for randomized subjects: L1-001, L1-002 ...
    count = session.execute(
        select(func.count()).select_from(Registration).where(Registration.site_id == site.id)
    ).scalar_one()
    number = f"{site.code}-{count + 1:03d}"
    samples = tuple(
        ScheduledSample(p.label, p.kit_type, p.due, p.window_end, p.planned) for p in planned if p.planned
    )
    registration = Registration(
        trial_id=trial.id,
        site_id=site.id,
        screening_entry_id=entry_id,
        screening_number=screening,
        subject_number=number,
        anchor_date=anchor,
        registered_at=now,
        registered_by_id=actor.user_id,
        registered_by_name=actor.name,
    )
    session.add(registration)
    session.flush()
    rows = [
        PlannedSample(
            registration_id=registration.id,
            label=s.label,
            kit_type=s.kit_type,
            due_date=s.due,
            window_end=s.window_end,
            planned_date=s.planned,
        )
        for s in samples
    ]
    session.add_all(rows)
    session.flush()
    # Under the site's row lock taken above; none in stock raises NoTubeSet and rolls it all back.
    kit_numbers = sample_kits.assign(
        session, actor, trial_id=trial.id, site_id=site.id, site_code=site.code, samples=rows, now=now
    )
    samples = tuple(
        ScheduledSample(s.label, s.kit_type, s.due, s.window_end, s.planned, kit_numbers[s.label], "assigned")
        for s in samples
    )
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.SUBJECT_REGISTERED,
        object_type="registration",
        object_id=number,
        site_code=site.code,
        new={
            "subject": number,
            "screening_number": screening,
            "anchor_date": anchor.isoformat(),
            "samples": {s.label: s.planned.isoformat() for s in samples},
            "tube_sets": {s.label: s.kit_number for s in samples},
        },
        at=now,
    )
    return RegistrationResult(number, now, site.code, samples)


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrationView:
    """A registered participant as its site and the monitors see it: no arm exists to hide."""

    subject_number: str
    screening_number: str
    site: str
    registered_at: datetime
    registered_by: str
    anchor_date: date
    samples: tuple[ScheduledSample, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "screening_number": self.screening_number,
            "site": self.site,
            "registered_at": self.registered_at.isoformat().replace("+00:00", "Z"),
            "anchor_date": self.anchor_date.isoformat(),
            "samples": [s.as_json() for s in self.samples],
        }


@dataclass(frozen=True, slots=True)
class RegistrationPage:
    registrations: list[RegistrationView]
    next_after: str | None  # the participant number to pass as `after` for the next page; None: the last


def registrations_page(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    after: str | None = None,
    limit: int = 100,
    site: str | None = None,
) -> RegistrationPage:
    """One page of the participants within `scope` (and at `site`), in registration order, after
    the participant numbered `after`, with their planned samples: a few queries and `limit` views
    whatever the size of the study (issue 21), as the API's list (`participants.page_rows`).
    Raises ValidationFailed naming `after`, `site` or `limit`."""
    with ctx.db.reading() as session:
        rows, codes, next_after = participants.page_rows(
            session, trial_code, scope, after=after, limit=limit, site=site
        )
        return RegistrationPage(_views(session, [(r, codes[r.site_id]) for r in rows]), next_after)


def registration(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> RegistrationView:
    """One participant within `scope`. Raises NotFound (also for a participant of another site)."""
    found = _read(ctx, trial_code, scope, number)
    if not found:
        raise NotFound(f"no subject {number!r} within your reach")
    return found[0]


def _read(ctx: ServiceContext, trial_code: str, scope: Scope, number: str) -> list[RegistrationView]:
    with ctx.db.reading() as session:
        trial = lookups.get_trial(session, trial_code)
        query = (
            select(Registration, Site.code)
            .join(Site, Site.id == Registration.site_id)
            .where(Registration.trial_id == trial.id)
            .order_by(Registration.id)
        )
        query = query.where(Registration.subject_number == number.strip().upper())
        if not scope.all_sites:
            query = query.where(Registration.site_id.in_(sorted(scope.site_ids)))
        return _views(session, [(r, code) for r, code in session.execute(query).all()])


def _views(session: Session, rows: list[tuple[Registration, str]]) -> list[RegistrationView]:
    """The views of `rows` (a registration and its site's code each), their planned samples read in
    one statement."""
    ids = [r.id for r, _ in rows]
    samples: dict[int, list[ScheduledSample]] = {}
    if ids:
        for p, kit in session.execute(
            select(PlannedSample, SampleKit)
            .outerjoin(SampleKit, SampleKit.planned_sample_id == PlannedSample.id)
            .where(PlannedSample.registration_id.in_(ids))
            .order_by(PlannedSample.id)
        ):
            samples.setdefault(p.registration_id, []).append(
                ScheduledSample(
                    p.label,
                    p.kit_type,
                    p.due_date,
                    p.window_end,
                    p.planned_date,
                    kit.kit_number if kit else None,
                    kit.status if kit else None,
                    kit.collected_at if kit else None,
                    kit.collected_by_name if kit else None,
                    kit.reason if kit else None,
                )
            )
    return [
        RegistrationView(
            r.subject_number,
            r.screening_number,
            code,
            r.registered_at,
            r.registered_by_name,
            r.anchor_date,
            tuple(samples.get(r.id, ())),
        )
        for r, code in rows
    ]
