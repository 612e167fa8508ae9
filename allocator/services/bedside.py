"""The bedside scan (nurse, investigator or pharmacist of the site): right trial, right subject,
right day, dispensed, not expired, not given twice, previous day given — then the administration
is recorded with its time (LBL-06, LBL-09, DIB-01, DIB-09). Every refused scan is audited, for the
protocol-deviation listings (REP-07)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import Administration, Dispensation, Kit, KitStatus, Site, Subject
from allocator.permissions import Scope
from allocator.services import lookups
from allocator.services.context import ServiceContext
from allocator.services.dispensing import planned_date
from allocator.services.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, current_dispensations, get_trial
from allocator.services.subjects.withdrawal import withdrawn_refusal
from allocator.services.supply import kit_rules

LATE_AFTER = timedelta(hours=1)  # an administration recorded later than this needs a reason (DIB-09)
CLOCK_SKEW = timedelta(minutes=5)


class ScanRefused(Conflict):
    slug = "scan-refused"
    title = "The scanned label does not match"


class WrongPatient(ScanRefused):
    slug = "wrong-patient"
    title = "This label belongs to another patient"


class WrongDay(ScanRefused):
    slug = "wrong-day"
    title = "This label is for another day"


class AlreadyAdministered(ScanRefused):
    slug = "already-administered"
    title = "This dose was already given"


class ConfirmationNeeded(Conflict):
    """Check, then record (issue 13): a dose outside its planned day, or given before an earlier
    dose, is a stop. Nothing is recorded until the person confirms it with a reason."""

    slug = "confirmation-needed"
    title = "Check before giving this dose"

    def __init__(self, warnings: tuple[str, ...]) -> None:
        super().__init__(
            "; ".join(warnings),
            errors=[FieldProblem("confirmation", "confirm with a reason, or do not give this dose")],
        )
        self.warnings = warnings


@dataclass(frozen=True, slots=True)
class ScanResult:
    subject_number: str
    day: str
    kit_number: str
    administered_at: datetime
    warnings: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "subject_number": self.subject_number,
            "day": self.day,
            "kit_number": self.kit_number,
            "administered_at": self.administered_at.isoformat().replace("+00:00", "Z"),
            "warnings": list(self.warnings),
        }


def record_scan(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    payload: str,
    subject_number: str,
    day: str,
    scope: Scope,
    administered_at: datetime | None = None,
    late_reason: str = "",
    confirmation: str = "",
) -> ScanResult:
    """Verify a scanned syringe (or kit) label for a subject and day, and record the administration.

    Check, then record (issue 13): when the dose is outside its planned day or an earlier dose was
    not given, nothing is recorded and ConfirmationNeeded is raised, unless `confirmation` gives the
    reason for giving it all the same; the warnings and that reason are then in the audit entry. A
    right kit for the right patient and day is recorded at once (web page and API alike).

    Raises ValidationFailed (unreadable or forged label, bad time), NotFound (subject out of reach),
    WrongPatient, WrongDay, AlreadyAdministered or ScanRefused (not dispensed, expired, previous day
    not given when the trial refuses that) — refusals are audited."""
    return _scan(
        ctx,
        actor,
        trial_code,
        payload=payload,
        subject_number=subject_number,
        day=day,
        scope=scope,
        administered_at=administered_at,
        late_reason=late_reason,
        confirmation=confirmation,
        record=True,
    )


def check_scan(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    payload: str,
    subject_number: str,
    day: str,
    scope: Scope,
) -> ScanResult:
    """The bedside checks of `record_scan` as soon as the label is scanned, recording nothing but a
    refusal (audited as when recording): the answer is the result that recording would have, its
    warnings included (each one a stop at recording). The time is now."""
    return _scan(
        ctx,
        actor,
        trial_code,
        payload=payload,
        subject_number=subject_number,
        day=day,
        scope=scope,
        administered_at=None,
        late_reason="",
        confirmation=None,
        record=False,
    )


def _scan(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    payload: str,
    subject_number: str,
    day: str,
    scope: Scope,
    administered_at: datetime | None,
    late_reason: str,
    confirmation: str | None,
    record: bool,
) -> ScanResult:
    now = ctx.now()
    when = administered_at or now
    if when.tzinfo is None:
        raise ValidationFailed(
            "the time needs a time zone", errors=[FieldProblem("administered_at", "no time zone")]
        )
    problems = []
    if when > now + CLOCK_SKEW:
        problems.append(FieldProblem("administered_at", "is in the future"))
    if now - when > LATE_AFTER and not late_reason.strip():
        problems.append(FieldProblem("late_reason", "a late entry needs a reason (DIB-09)"))
    if problems:
        raise ValidationFailed("invalid administration time", errors=problems)
    try:
        scanned = kitlib.verify_payload(payload, trial_code, kit_rules.mac(ctx))
    except kitlib.PayloadError as exc:
        _refusal(ctx, actor, trial_code, subject_number, day, "unreadable-label", str(exc), None)
        raise ValidationFailed(
            "the label cannot be verified", errors=[FieldProblem("payload", kit_rules.unreadable(exc))]
        ) from None
    with ctx.db.unit_of_work() as session:
        outcome = _record_in(
            ctx,
            session,
            actor,
            trial_code,
            scanned,
            subject_number,
            day,
            scope,
            when,
            now,
            late_reason,
            confirmation,
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
    day: str,
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
            action=Action.SCAN_REFUSED,
            object_type="subject",
            object_id=subject_number[:64],
            site_code=site_code,
            new={"day": day[:8], "cause": cause, "detail": detail[:200]},
            at=ctx.now(),
        )

    if session is not None:
        write(session)
    else:
        with ctx.db.unit_of_work() as own:
            write(own)


def _record_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial_code: str,
    scanned: kitlib.KitPayload,
    subject_number: str,
    day: str,
    scope: Scope,
    when: datetime,
    now: datetime,
    late_reason: str,
    confirmation: str | None,
    record: bool,
) -> ScanResult | DomainError:
    trial = get_trial(session, trial_code)
    lookups.require_open(trial, session)  # no new data once the database is locked
    definition = current_definition(session, trial)
    # The subject's row lock, which a withdrawal also takes: no withdrawal commits between the
    # check below and the administration (REP-04; PostgreSQL; SQLite's write transaction already
    # excludes other writers).
    subject = session.execute(
        select(Subject)
        .where(Subject.trial_id == trial.id, Subject.subject_number == subject_number.strip().upper())
        .with_for_update()
    ).scalar_one_or_none()
    if subject is None or not scope.allows_site(subject.site_id):
        raise NotFound(
            f"no subject {subject_number} within your reach",
            errors=[FieldProblem("subject_number", "unknown")],
        )
    site = session.get(Site, subject.site_id)
    site_code = site.code if site else None
    days = {d.label: d.day for d in definition.dispensing.schedule}
    if day not in days:
        raise ValidationFailed("unknown day", errors=[FieldProblem("day", f"one of {', '.join(days)}")])

    def refuse(error: DomainError, cause: str) -> DomainError:
        _refusal(ctx, actor, trial.code, subject.subject_number, day, cause, error.detail, site_code, session)
        return error

    withdrawn = withdrawn_refusal(session, subject, "subject_number")
    if withdrawn is not None:  # REP-04: no further dose once withdrawn
        return refuse(withdrawn, withdrawn.slug)
    live = current_dispensations(session, subject.id)
    row = live[days[day]]
    kit = session.execute(select(Kit).where(Kit.id == row.kit_id).with_for_update()).scalar_one()
    # Issue 14, D1: `row` was read before the kit lock was granted. A scan that waited here for
    # another scan of the same kit must see what that one committed, so re-read the status now,
    # under the lock (PostgreSQL, READ COMMITTED: a new statement sees the committed row).
    session.refresh(row, with_for_update=True)
    if scanned.kit_number != kit.kit_number:
        other = session.execute(
            select(Dispensation, Subject.subject_number)
            .join(Subject, Subject.id == Dispensation.subject_id)
            .join(Kit, Kit.id == Dispensation.kit_id)
            .where(Kit.trial_id == trial.id, Kit.kit_number == scanned.kit_number)
        ).first()
        if other is not None and other[1] == subject.subject_number:
            label = next((d.label for d in definition.dispensing.schedule if d.day == other[0].day), "?")
            return refuse(
                WrongDay(
                    f"this label is {subject.subject_number}'s {label} dose, not {day}",
                    errors=[FieldProblem("day", f"the label is for {label}")],
                ),
                "wrong-day",
            )
        return refuse(
            WrongPatient(
                f"STOP: this label does not belong to {subject.subject_number}",
                errors=[FieldProblem("payload", "another patient's or an unallocated kit")],
            ),
            "wrong-patient",
        )
    if scanned.unit not in (day, kit_rules.KIT_UNIT):
        return refuse(
            WrongDay(
                f"this label is printed for {scanned.unit}, not {day}",
                errors=[FieldProblem("day", f"the label is for {scanned.unit}")],
            ),
            "wrong-day",
        )
    if row.status == "administered":
        return refuse(
            AlreadyAdministered(
                f"the {day} dose of {subject.subject_number} was already given",
                errors=[FieldProblem("day", "already given")],
            ),
            "already-administered",
        )
    if row.status != "dispensed":
        return refuse(
            ScanRefused(
                f"the {day} kit of {subject.subject_number} was not dispensed by the pharmacy",
                errors=[FieldProblem("payload", "not dispensed")],
            ),
            "not-dispensed",
        )
    if kit.expiry_date is None or kit.expiry_date < definition.local_date(when):
        return refuse(
            ScanRefused(
                f"the {day} kit of {subject.subject_number} is expired: do not give it",
                errors=[FieldProblem("payload", "expired")],
            ),
            "expired",
        )
    if when < subject.randomized_at:
        raise ValidationFailed(
            "before randomization", errors=[FieldProblem("administered_at", "is before randomization")]
        )
    warnings = []
    missing = [
        d.label
        for d in definition.dispensing.schedule
        if d.day < days[day] and live[d.day].status != "administered"
    ]
    if missing:
        message = f"{', '.join(missing)} not recorded as given before {day}"
        if definition.dispensing.out_of_order == "refuse":
            return refuse(ScanRefused(message, errors=[FieldProblem("day", message)]), "out-of-order")
        warnings.append(message)
    planned = planned_date(definition, subject.randomized_at, days[day])
    if definition.local_date(when) != planned:
        warnings.append(f"{day} was planned for {planned.isoformat()}")
    if not record:
        return ScanResult(subject.subject_number, day, kit.kit_number, when, tuple(warnings))
    if warnings and confirmation is not None and not confirmation.strip():
        return ConfirmationNeeded(tuple(warnings))  # a stop: nothing recorded (issue 13)
    confirmed = (confirmation or "").strip() if warnings else ""
    administration = Administration(
        dispensation_id=row.id,
        subject_id=subject.id,
        day=days[day],
        administered_at=when,
        recorded_at=now,
        recorded_by_id=actor.user_id,
        recorded_by_name=actor.name,
        late_entry_reason=late_reason.strip() or None,
    )
    session.add(administration)
    row.status = "administered"
    kit_rules.move_kit(
        session, kit, KitStatus.ADMINISTERED, actor, f"administered to {subject.subject_number} ({day})", now
    )
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.ADMINISTRATION_RECORDED,
        object_type="subject",
        object_id=subject.subject_number,
        site_code=site_code,
        new={
            "day": day,
            "kit": kit.kit_number,
            "administered_at": when.isoformat(),
            "warnings": warnings,
            **({"confirmed_despite_warnings": confirmed[:500]} if confirmed else {}),
        },
        reason=late_reason.strip() or None,
        at=now,
    )
    return ScanResult(subject.subject_number, day, kit.kit_number, when, tuple(warnings))
