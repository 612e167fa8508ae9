"""The bedside collection scan of an observational study (issue 20): the nurse or investigator
scans the participant's tube set (its own S-00 label or any of its tubes) for a planned sample;
right participant, right sample, assigned, not yet collected, within its window (the collection's
local date in the study's timezone) — then the collection is recorded with its time and collector.
Every refused scan is audited (as the drug bedside scan's) and records nothing else. A sample not
taken in its window is recorded missed, with a reason, by the investigator or the trial manager."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import PlannedSample, Registration, SampleKit, SampleKitStatus, Site
from allocator.permissions import Scope
from allocator.services import lookups
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    Conflict,
    DomainError,
    FieldProblem,
    NotFound,
    ValidationFailed,
    check_lengths,
)
from allocator.services.lookups import current_definition, get_trial
from allocator.services.samples.rules import S, move_sample_kit, unreadable
from allocator.services.supply.kit_rules import mac
from allocator.trialdef import TrialDefinition

LATE_AFTER = timedelta(hours=1)  # a collection recorded later than this needs a reason (DIB-09)
CLOCK_SKEW = timedelta(minutes=5)
REASON_MAX = 500


class CollectionRefused(Conflict):
    slug = "collection-refused"
    title = "The scanned tube set does not match"


class WrongParticipant(CollectionRefused):
    slug = "wrong-participant"
    title = "This tube set belongs to another participant"


class AlreadyCollected(CollectionRefused):
    slug = "already-collected"
    title = "This sample was already collected"


class OutsideWindow(CollectionRefused):
    slug = "outside-window"
    title = "Outside the sample's window"


@dataclass(frozen=True, slots=True)
class CollectionResult:
    subject_number: str
    label: str
    kit_number: str
    collected_at: datetime
    planned_date: date

    def as_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "subject_number": self.subject_number,
            "label": self.label,
            "kit_number": self.kit_number,
            "collected_at": self.collected_at.isoformat().replace("+00:00", "Z"),
            "planned_date": self.planned_date.isoformat(),
        }


def record_collection(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    payload: str,
    subject_number: str,
    label: str,
    scope: Scope,
    collected_at: datetime | None = None,
    late_reason: str = "",
) -> CollectionResult:
    """Verify a scanned tube-set label for a participant's planned sample and record its collection
    (collected_at, the collector, collection_recorded_at; the set becomes collected).

    Raises ValidationFailed (unreadable, forged or drug-kit label; bad time; unknown sample),
    NotFound (participant out of reach), WrongParticipant (another participant's or an unassigned
    set), AlreadyCollected, OutsideWindow, CollectionRefused (missed, or no longer assigned) —
    refusals are audited and nothing else is recorded."""
    return _scan(
        ctx, actor, trial_code, payload, subject_number, label, scope, collected_at, late_reason, True
    )


def check_collection(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    payload: str,
    subject_number: str,
    label: str,
    scope: Scope,
) -> CollectionResult:
    """The checks of `record_collection` as soon as the label is scanned (the time is now),
    recording nothing but a refusal (audited as when recording)."""
    return _scan(ctx, actor, trial_code, payload, subject_number, label, scope, None, "", False)


def _scan(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    payload: str,
    subject_number: str,
    label: str,
    scope: Scope,
    collected_at: datetime | None,
    late_reason: str,
    record: bool,
) -> CollectionResult:
    now = ctx.now()
    when = collected_at or now
    if when.tzinfo is None:
        raise ValidationFailed(
            "the time needs a time zone", errors=[FieldProblem("collected_at", "no time zone")]
        )
    problems = []
    if when > now + CLOCK_SKEW:
        problems.append(FieldProblem("collected_at", "is in the future"))
    if now - when > LATE_AFTER and not late_reason.strip():
        problems.append(FieldProblem("late_reason", "a late entry needs a reason (DIB-09)"))
    if problems:
        raise ValidationFailed("invalid collection time", errors=problems)
    check_lengths(late_reason=(late_reason, REASON_MAX))
    subject = subject_number.strip().upper()
    sample_label = label.strip().upper()
    try:
        scanned = kitlib.verify_payload(payload, trial_code, mac(ctx), kind=kitlib.KitKind.SAMPLE)
    except kitlib.PayloadError as exc:
        # A drug kit's label (WrongKitKindError), another trial's, a forged or unreadable one.
        cause = "drug-kit-label" if isinstance(exc, kitlib.WrongKitKindError) else "unreadable-label"
        _refusal(ctx, actor, trial_code, subject, sample_label, cause, str(exc), None)
        raise ValidationFailed(
            "the label cannot be verified", errors=[FieldProblem("payload", unreadable(exc))]
        ) from None
    with ctx.db.unit_of_work() as session:
        outcome = _record_in(
            ctx,
            session,
            actor,
            trial_code,
            scanned,
            subject,
            sample_label,
            scope,
            when,
            now,
            late_reason,
            record,
        )
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _refusal(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: str,
    label: str,
    cause: str,
    detail: str,
    site_code: str | None,
    session: Session | None = None,
) -> None:
    def write(s: Session) -> None:
        ctx.audit.record(
            s,
            actor=actor,
            chain=trial_code,
            action=Action.SAMPLE_SCAN_REFUSED,
            object_type="registration",
            object_id=subject_number[:64] or "-",
            site_code=site_code,
            new={"sample": label[:8], "cause": cause, "detail": detail[:200]},
            at=ctx.now(),
        )

    if session is not None:
        write(session)
    else:
        with ctx.db.unit_of_work() as own:
            write(own)


def _participant_sample(
    session: Session,
    trial_id: int,
    subject_number: str,
    label: str,
    scope: Scope,
    definition: TrialDefinition,
) -> tuple[Registration, PlannedSample, Site]:
    registration = session.execute(
        select(Registration).where(
            Registration.trial_id == trial_id, Registration.subject_number == subject_number
        )
    ).scalar_one_or_none()
    if registration is None or not scope.allows_site(registration.site_id):
        raise NotFound(
            f"no subject {subject_number} within your reach",
            errors=[FieldProblem("subject_number", "unknown")],
        )
    sample = session.execute(
        select(PlannedSample).where(
            PlannedSample.registration_id == registration.id, PlannedSample.label == label
        )
    ).scalar_one_or_none()
    if sample is None:
        labels = [tp.label for tp in definition.sampling.timepoints] if definition.sampling else []
        raise ValidationFailed(
            "unknown sample", errors=[FieldProblem("label", f"one of {', '.join(labels)}")]
        )
    site = session.get(Site, registration.site_id)
    assert site is not None  # noqa: S101 - a registration's site exists (foreign key)
    return registration, sample, site


def _record_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial_code: str,
    scanned: kitlib.KitPayload,
    subject_number: str,
    label: str,
    scope: Scope,
    when: datetime,
    now: datetime,
    late_reason: str,
    record: bool,
) -> CollectionResult | DomainError:
    trial = get_trial(session, trial_code)
    lookups.require_open(trial, session)
    definition = current_definition(session, trial)
    registration, sample, site = _participant_sample(
        session, trial.id, subject_number, label, scope, definition
    )

    def refuse(error: DomainError, cause: str) -> DomainError:
        _refusal(ctx, actor, trial.code, subject_number, label, cause, error.detail, site.code, session)
        return error

    # The scanned set's row lock: two scans of the same set at once record one collection.
    kit = session.execute(
        select(SampleKit)
        .where(SampleKit.trial_id == trial.id, SampleKit.kit_number == scanned.kit_number)
        .with_for_update()
    ).scalar_one_or_none()
    shown = kitlib.format_kit_number(scanned.kit_number)
    if kit is None or kit.planned_sample_id != sample.id:
        if kit is not None and kit.planned_sample_id is None:
            return refuse(
                WrongParticipant(
                    f"STOP: tube set {shown} is not assigned to any participant",
                    errors=[FieldProblem("payload", "a tube set not assigned to anyone")],
                ),
                "not-assigned",
            )
        return refuse(
            WrongParticipant(
                f"STOP: tube set {shown} is not {subject_number}'s {label} tube set",
                errors=[FieldProblem("payload", "another participant's or another sample's tube set")],
            ),
            "wrong-participant",
        )
    if kit.status != S.ASSIGNED.value:
        if kit.collected_at is not None:
            return refuse(
                AlreadyCollected(
                    f"the {label} sample of {subject_number} was already collected",
                    errors=[FieldProblem("payload", "already collected")],
                ),
                "already-collected",
            )
        return refuse(
            CollectionRefused(
                f"the {label} tube set of {subject_number} is {kit.status}: it cannot be collected",
                errors=[FieldProblem("payload", f"is {kit.status}")],
            ),
            "not-assigned",
        )
    if when < registration.registered_at:
        raise ValidationFailed(
            "before registration", errors=[FieldProblem("collected_at", "is before the registration")]
        )
    local_day = definition.local_date(when)
    if not sample.due_date <= local_day <= sample.window_end:
        return refuse(
            OutsideWindow(
                f"the {label} sample is due from {sample.due_date.isoformat()} to "
                f"{sample.window_end.isoformat()}, planned {sample.planned_date.isoformat()}",
                errors=[FieldProblem("collected_at", f"planned {sample.planned_date.isoformat()}")],
            ),
            "outside-window",
        )
    result = CollectionResult(subject_number, label, kit.kit_number, when, sample.planned_date)
    if not record:
        return result
    move_sample_kit(session, kit, S.COLLECTED, actor, f"{label} sample of {subject_number} collected", now)
    kit.collected_at = when
    kit.collected_by_id = actor.user_id
    kit.collected_by_name = actor.name
    kit.collection_recorded_at = now
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.SAMPLE_COLLECTED,
        object_type="registration",
        object_id=subject_number,
        site_code=site.code,
        new={"sample": label, "tube_set": kit.kit_number, "collected_at": when.isoformat()},
        reason=late_reason.strip() or None,
        at=now,
    )
    return result


def record_missed(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    subject_number: str,
    label: str,
    reason: str,
    scope: Scope,
) -> str:
    """Record that a participant's planned sample was not collected, with a reason: its tube set
    becomes missed (collected afterwards only once the record is withdrawn, `withdraw_missed`).
    Audited. Returns the tube set's number. Raises ValidationFailed (no reason, unknown sample),
    NotFound, Conflict (already collected or missed), TrialLocked."""
    with _missed_change(ctx, actor, trial_code, subject_number, label, reason, scope, S.MISSED) as change:
        kit, sample = change.kit, change.sample
        if kit is None or kit.status != S.ASSIGNED.value:
            status = kit.status if kit else "without a tube set"
            raise Conflict(
                f"the {change.label} sample of {change.subject} is {status}: it cannot be recorded as missed",
                errors=[FieldProblem("label", f"is {status}")],
            )
        if change.definition.local_date(change.now) < sample.due_date:
            # Missed is final until withdrawn: recorded before the window opens, one mistaken click
            # lost a sample that could still be taken (the review of the merged cohort).
            raise Conflict(
                f"the {change.label} sample of {change.subject} cannot be recorded as missed before its "
                f"window opens on {sample.due_date.isoformat()}",
                errors=[FieldProblem("label", f"its window opens on {sample.due_date.isoformat()}")],
            )
        kit.reason = change.reason
        return kit.kit_number


def withdraw_missed(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    subject_number: str,
    label: str,
    reason: str,
    scope: Scope,
) -> str:
    """Withdraw a missed record made by mistake (the sample was taken, or can still be): the tube
    set is assigned again and can be scanned at collection, a late entry with its reason. Nothing is
    deleted: the missed record stays in the tube set's history and the audit trail, and the
    withdrawal is a new, reasoned and attributed record. Returns the tube set's number. Raises
    ValidationFailed (no reason, unknown sample), NotFound, Conflict (the sample is not missed),
    TrialLocked."""
    with _missed_change(ctx, actor, trial_code, subject_number, label, reason, scope, S.ASSIGNED) as change:
        kit = change.kit
        if kit is None or kit.status != S.MISSED.value:
            status = kit.status if kit else "without a tube set"
            raise Conflict(
                f"the {change.label} sample of {change.subject} is {status}, not missed: there is nothing "
                "to withdraw",
                errors=[],
            )
        change.old["reason"] = kit.reason
        kit.reason = None
        return kit.kit_number


@dataclass
class _MissedChange:
    """What `_missed_change` found, for its caller to check before the change is made."""

    subject: str
    label: str
    reason: str
    now: datetime
    definition: TrialDefinition
    sample: PlannedSample
    kit: SampleKit | None
    old: dict[str, object]


@contextmanager
def _missed_change(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: str,
    label: str,
    reason: str,
    scope: Scope,
    to_status: SampleKitStatus,
) -> Iterator[_MissedChange]:
    """One change of a sample between assigned and missed, for `record_missed` and
    `withdraw_missed`: the reason checked, the participant's sample found within `scope` and its tube
    set locked; the block checks the tube set (raising leaves nothing written); then the tube set
    moves to `to_status` with its history row and the change is audited, in the same transaction."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    check_lengths(reason=(reason, REASON_MAX))
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        lookups.require_open(trial, session)
        definition = current_definition(session, trial)
        subject, sample_label = subject_number.strip().upper(), label.strip().upper()
        _registration, sample, site = _participant_sample(
            session, trial.id, subject, sample_label, scope, definition
        )
        kit = session.execute(
            select(SampleKit).where(SampleKit.planned_sample_id == sample.id).with_for_update()
        ).scalar_one_or_none()
        change = _MissedChange(
            subject,
            sample_label,
            reason.strip(),
            ctx.now(),
            definition,
            sample,
            kit,
            {"status": kit and kit.status},
        )
        yield change
        if kit is None:  # pragma: no cover - both callers refuse a sample without a tube set
            raise Conflict(f"the {sample_label} sample of {subject} has no tube set")
        move_sample_kit(session, kit, to_status, actor, change.reason, change.now)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SAMPLE_KIT_STATUS_CHANGED,
            object_type="registration",
            object_id=subject,
            site_code=site.code,
            old=change.old,
            new={"sample": sample_label, "tube_set": kit.kit_number, "status": to_status.value},
            reason=change.reason,
            at=change.now,
        )
