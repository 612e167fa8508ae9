"""Withdrawal of a subject from treatment or from the trial,
and the refusal it implies for later dispensing and administration."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import Site, Subject, SubjectWithdrawal
from allocator.permissions import Scope
from allocator.services import lookups, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lookups import subject_in_reach, trial_and_definition
from allocator.services.subjects.randomize import notify_unblinded_roles
from allocator.services.subjects.views import withdrawal_of

# --- withdrawals (REP-04) ---------------------------------------------------------------------

WITHDRAWAL_MEANING = "subject withdrawal"
WITHDRAWAL_KINDS = {  # code -> label
    "treatment_discontinued": "treatment discontinued",
    "consent_withdrawn": "consent withdrawn",
    "lost_to_follow_up": "lost to follow-up",
}
WITHDRAWAL_REASON_MAX = 1000


class SubjectWithdrawn(Conflict):
    slug = "subject-withdrawn"
    title = "The subject was withdrawn: no further dose"


def withdrawn_refusal(session: Session, subject: Subject, field: str) -> SubjectWithdrawn | None:
    """The refusal of any further dose to a withdrawn subject (REP-04), or None. The same words for
    every subject: nothing in it depends on the arm (BLD-01)."""
    withdrawal = withdrawal_of(session, subject.id)
    if withdrawal is None:
        return None
    when = withdrawal.effective_date.isoformat()
    return SubjectWithdrawn(
        f"{subject.subject_number} was withdrawn on {when}: no further dose",
        errors=[FieldProblem(field, f"the subject was withdrawn on {when}")],
    )


def _withdrawal_input(kind: str, effective_date: date | str, reason: str) -> tuple[str, date, str]:
    """Check what can be checked without the database; every problem is named at once."""
    problems: list[FieldProblem] = []
    kind = kind.strip()
    if kind not in WITHDRAWAL_KINDS:
        problems.append(FieldProblem("kind", f"one of {', '.join(WITHDRAWAL_KINDS)}"))
    when: date | None = None
    if isinstance(effective_date, date):
        when = effective_date
    elif not effective_date.strip():
        problems.append(FieldProblem("effective_date", "is required (YYYY-MM-DD)"))
    else:
        try:
            when = date.fromisoformat(effective_date.strip())
        except ValueError:
            problems.append(FieldProblem("effective_date", "is not a date (YYYY-MM-DD)"))
    reason = reason.strip()
    if not reason:
        problems.append(FieldProblem("reason", "is required"))
    elif len(reason) > WITHDRAWAL_REASON_MAX:
        problems.append(FieldProblem("reason", f"is longer than {WITHDRAWAL_REASON_MAX} characters"))
    if problems or when is None:
        raise ValidationFailed("the withdrawal is invalid", errors=problems)
    return kind, when, reason


def withdraw(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    kind: str,
    effective_date: date | str,
    reason: str,
    scope: Scope,
    signature: signatures.SignatureRequest,
) -> None:
    """Record a subject's withdrawal (REP-04): signed and reasoned, at most once per subject.

    `kind` is treatment_discontinued, consent_withdrawn or lost_to_follow_up; `effective_date` is the
    site's calendar date (a date or YYYY-MM-DD), neither before the randomization date nor in the
    future. The subject, its slot and kits stay; it stays in every report (intention to treat), and
    any further dispensing or administration is refused (SubjectWithdrawn).

    Raises ValidationFailed naming the field (nothing written), NotFound (subject out of reach),
    Conflict (already withdrawn), trial_state errors (database locked), SignatureRefused (audited)."""
    kind, when, reason = _withdrawal_input(kind, effective_date, reason)
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=WITHDRAWAL_MEANING,
            object_type="subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial, definition = trial_and_definition(session, trial_code)
        lookups.require_open(trial)  # no new data once the database is locked
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        existing = withdrawal_of(session, subject.id)
        if existing is not None:
            raise Conflict(f"{number} was already withdrawn on {existing.effective_date.isoformat()}")
        randomized_on = definition.local_date(subject.randomized_at)
        if when < randomized_on:
            raise ValidationFailed(
                "the withdrawal date is invalid",
                errors=[
                    FieldProblem(
                        "effective_date", f"is before the randomization ({randomized_on.isoformat()})"
                    )
                ],
            )
        if when > definition.local_date(now):
            raise ValidationFailed(
                "the withdrawal date is invalid",
                errors=[FieldProblem("effective_date", "is in the future")],
            )
        content = {"subject": number, "kind": kind, "effective_date": when.isoformat(), "reason": reason}
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=WITHDRAWAL_MEANING,
            object_type="subject",
            object_id=number,
            content=content,
            now=now,
        )
        session.add(
            SubjectWithdrawal(
                subject_id=subject.id,
                kind=kind,
                effective_date=when,
                reason=reason,
                recorded_at=now,
                recorded_by_id=actor.user_id,
                recorded_by_name=actor.name,
                signature_id=signed.id,
            )
        )
        site = session.get(Site, subject.site_id)
        notify_unblinded_roles(  # the pharmacy must stop preparing this subject's doses (no arm in it)
            session,
            trial,
            subject.site_id,
            "pharmacist",
            "subject_withdrawn",
            number,
            f"Withdrawal of {number}",
            f"Subject {number} was withdrawn ({WITHDRAWAL_KINDS[kind]}) on {when.isoformat()}, recorded by "
            f"{actor.name}. Dispense no further kit; the kits allocated to {number} stay assigned to it.",
            now,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_WITHDRAWN,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            new={"kind": kind, "effective_date": when.isoformat(), "signature": signed.id},
            reason=reason,
            at=now,
        )
