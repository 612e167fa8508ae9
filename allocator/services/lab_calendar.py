"""The central lab's calendar of an observational study (issue 20): its working weekdays and public
holidays come from the definition's `[sampling]`; the days the lab is otherwise closed are entered
here by those who manage the study's sites, audited, never deleted: one entered by mistake is
withdrawn, with a reason, and the day may be closed again. A closure (or its withdrawal) is taken
into account by the registrations that follow it (allocator.sampling); nothing already planned moves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from allocator import sampling
from allocator.audit import Action, Actor
from allocator.models import LabClosure, LabClosureWithdrawal, Trial
from allocator.services import lookups
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.periods import period_date
from allocator.trialdef import Sampling, TrialDefinition

REASON_MAX = 500


class NoLabCalendar(Conflict):
    slug = "no-lab-calendar"
    title = "This trial randomizes its patients: it has no central-lab calendar"


class AlreadyClosed(Conflict):
    slug = "already-closed"
    title = "The lab is already closed that day"


class NoClosure(Conflict):
    slug = "no-closure"
    title = "The lab has no closure that day to withdraw"


@dataclass(frozen=True, slots=True)
class Withdrawal:
    reason: str
    withdrawn_at: datetime
    withdrawn_by: str


@dataclass(frozen=True, slots=True)
class Closure:
    day: date
    reason: str
    entered_at: datetime
    entered_by: str
    withdrawn: Withdrawal | None = None  # a closure withdrawn no longer counts


@dataclass(frozen=True, slots=True)
class DayOff:
    """A weekday the lab does not work: a public holiday (`holiday` names it) or a closure."""

    day: date
    holiday: str | None
    closure: str | None


@dataclass(frozen=True, slots=True)
class Calendar:
    working_weekdays: tuple[int, ...]
    holidays_country: str
    closures: tuple[Closure, ...]  # every closure entered, newest day first
    days_off: tuple[DayOff, ...]  # the coming weekdays off, in date order


def _sampling_of(definition: TrialDefinition) -> Sampling:
    if definition.sampling is None:
        raise NoLabCalendar(f"{definition.code} randomizes its patients: it has no central-lab calendar")
    return definition.sampling


def _in_force(trial_id: int) -> Select[LabClosure]:
    withdrawn = select(LabClosureWithdrawal.id).where(LabClosureWithdrawal.closure_id == LabClosure.id)
    return select(LabClosure).where(LabClosure.trial_id == trial_id, ~withdrawn.exists())


def closure_days(session: Session, trial_id: int) -> frozenset[date]:
    """The days the lab is closed: every closure entered and not withdrawn."""
    return frozenset(session.execute(_in_force(trial_id).with_only_columns(LabClosure.day)).scalars())


def calendar(ctx: ServiceContext, trial_code: str, *, ahead_days: int = 90, language: str = "en") -> Calendar:
    """The lab's working weekdays, every closure entered, and the weekdays off of the coming
    `ahead_days` (public holidays, named in `language`, and closures)."""
    with ctx.db.reading() as session:
        trial, definition = lookups.trial_and_definition(session, trial_code)
        plan = _sampling_of(definition)
        rows = session.execute(
            select(LabClosure, LabClosureWithdrawal)
            .outerjoin(LabClosureWithdrawal, LabClosureWithdrawal.closure_id == LabClosure.id)
            .where(LabClosure.trial_id == trial.id)
            .order_by(LabClosure.day.desc(), LabClosure.id.desc())
        ).all()
        closures = tuple(
            Closure(
                r.day,
                r.reason,
                r.entered_at,
                r.entered_by_name,
                Withdrawal(w.reason, w.withdrawn_at, w.withdrawn_by_name) if w is not None else None,
            )
            for r, w in rows
        )
    by_day = {c.day: c.reason for c in closures if c.withdrawn is None}
    today = definition.local_date(ctx.now())
    days_off = []
    for offset in range(ahead_days + 1):
        day = today + timedelta(days=offset)
        if day.isoweekday() not in plan.working_weekdays:
            continue
        holiday = sampling.public_holiday_name(plan.holidays_country, day, language)
        if holiday is not None or day in by_day:
            days_off.append(DayOff(day, holiday, by_day.get(day)))
    return Calendar(plan.working_weekdays, plan.holidays_country, closures, tuple(days_off))


def add_closure(ctx: ServiceContext, actor: Actor, trial_code: str, form: Mapping[str, str]) -> Closure:
    """Record that the central lab is closed on `form["day"]` for `form["reason"]` (audited).

    Raises NoLabCalendar (a randomized trial), ValidationFailed (a missing, malformed or past day, no
    reason; nothing recorded), AlreadyClosed."""
    day, reason, problems = _day_and_reason(form)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial, definition = lookups.trial_and_definition(session, trial_code)
        _sampling_of(definition)
        lookups.require_open(trial, session)  # a locked study takes no new record
        if day is not None and day < definition.local_date(now):
            problems.append(FieldProblem("day", "is in the past"))
        if problems or day is None:
            raise ValidationFailed("the closure cannot be recorded", errors=problems)
        _lock(session, trial)  # one closure in force per day, whoever enters it at the same time
        if day in closure_days(session, trial.id):
            raise AlreadyClosed(
                f"the lab is already closed on {day.isoformat()}",
                errors=[FieldProblem("day", "is already a closure")],
            )
        session.add(
            LabClosure(
                trial_id=trial.id,
                day=day,
                reason=reason,
                entered_at=now,
                entered_by_id=actor.user_id,
                entered_by_name=actor.name,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LAB_CLOSURE_ADDED,
            object_type="lab_closure",
            object_id=day.isoformat(),
            new={"day": day.isoformat(), "reason": reason},
            at=now,
        )
    return Closure(day, reason, now, actor.name)


def _day_and_reason(form: Mapping[str, str]) -> tuple[date | None, str, list[FieldProblem]]:
    """The form's day and reason, and what is wrong with them (each named by its field)."""
    problems: list[FieldProblem] = []
    day = period_date(form, "day", problems)
    if day is None and not problems:
        problems.append(FieldProblem("day", "is required"))
    reason = (form.get("reason") or "").strip()
    if not reason:
        problems.append(FieldProblem("reason", "is required"))
    elif len(reason) > REASON_MAX:
        problems.append(FieldProblem("reason", "at most 500 characters"))
    return day, reason, problems


def _lock(session: Session, trial: Trial) -> None:
    """The trial row, held until the caller's transaction ends (FOR NO KEY UPDATE: rows that refer
    to the trial are still written meanwhile)."""
    session.execute(select(Trial.id).where(Trial.id == trial.id).with_for_update(key_share=True)).one()


def withdraw_closure(ctx: ServiceContext, actor: Actor, trial_code: str, form: Mapping[str, str]) -> Closure:
    """Withdraw the closure of `form["day"]`, entered by mistake, for `form["reason"]` (audited).
    The closure stays in the calendar's history, marked withdrawn; the day counts as a working day
    for the samples planned from now on (nothing already planned moves), and may be closed again.

    Raises NoLabCalendar (a randomized trial), ValidationFailed (a missing or malformed day, no
    reason; nothing recorded), NoClosure (the day has no closure in force)."""
    day, reason, problems = _day_and_reason(form)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial, definition = lookups.trial_and_definition(session, trial_code)
        _sampling_of(definition)
        lookups.require_open(trial, session)  # a locked study takes no new record
        if problems or day is None:
            raise ValidationFailed("the closure cannot be withdrawn", errors=problems)
        _lock(session, trial)
        closure = session.execute(_in_force(trial.id).where(LabClosure.day == day)).scalar_one_or_none()
        if closure is None:
            raise NoClosure(
                f"the lab has no closure on {day.isoformat()} to withdraw",
                errors=[FieldProblem("day", "has no closure")],
            )
        session.add(
            LabClosureWithdrawal(
                closure_id=closure.id,
                reason=reason,
                withdrawn_at=now,
                withdrawn_by_id=actor.user_id,
                withdrawn_by_name=actor.name,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LAB_CLOSURE_WITHDRAWN,
            object_type="lab_closure",
            object_id=day.isoformat(),
            old={
                "closure": closure.id,
                "day": day.isoformat(),
                "reason": closure.reason,
                "entered_at": closure.entered_at.isoformat(),
            },
            reason=reason,
            at=now,
        )
        return Closure(
            closure.day,
            closure.reason,
            closure.entered_at,
            closure.entered_by_name,
            Withdrawal(reason, now, actor.name),
        )
