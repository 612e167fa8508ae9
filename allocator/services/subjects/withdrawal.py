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
WITHDRAWAL_AGREEMENT_MAX = 200  # the column's length


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
    agreement_ref: str | None,
    is_investigator: bool,
) -> None:
    """Record a subject's withdrawal (REP-04): signed and reasoned, at most once per subject.
    Recorded by anyone but the site's investigator (`is_investigator`), it needs the reference of
    the investigator's agreement (DIB-03, as a stratum correction does). The reason is read by
    blinded staff: a reason that names a treatment is refused (BLD-01).

    `kind` is treatment_discontinued, consent_withdrawn or lost_to_follow_up; `effective_date` is the
    site's calendar date (a date or YYYY-MM-DD), neither before the randomization date nor in the
    future. The subject, its slot and kits stay; it stays in every report (intention to treat), and
    any further dispensing or administration is refused (SubjectWithdrawn).

    Raises ValidationFailed naming the field (nothing written: a missing agreement, a treatment
    named), NotFound (subject out of reach),
    Conflict (already withdrawn), trial_state errors (database locked), SignatureRefused (audited)."""
    kind, when, reason = _withdrawal_input(kind, effective_date, reason)
    agreement = (agreement_ref or "").strip() or None
    if not is_investigator and agreement is None:
        raise ValidationFailed(
            "the investigator's agreement is required",
            errors=[FieldProblem("investigator_agreement_ref", "is required (DIB-03)")],
        )
    if agreement is not None and len(agreement) > WITHDRAWAL_AGREEMENT_MAX:
        raise ValidationFailed(
            "the withdrawal is invalid",
            errors=[
                FieldProblem(
                    "investigator_agreement_ref", f"is longer than {WITHDRAWAL_AGREEMENT_MAX} characters"
                )
            ],
        )
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
        lookups.require_open(trial, session)  # no new data once the database is locked
        leaking = [
            FieldProblem(name, "do not write the treatment here: it is read by blinded staff")
            for name, text in (("reason", reason), ("investigator_agreement_ref", agreement or ""))
            if lookups.names_a_treatment(definition, text)
        ]
        if leaking:  # BLD-01: the reason is shown to blinded roles on the subject's page
            raise ValidationFailed("the withdrawal names a treatment", errors=leaking)
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
        if agreement is not None:  # signed with the rest (withdrawals without one keep their content)
            content["investigator_agreement_ref"] = agreement
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
                investigator_agreement_ref=agreement,
            )
        )
        site = session.get(Site, subject.site_id)
        told = (
            f"Subject {number} was withdrawn ({WITHDRAWAL_KINDS[kind]}) on {when.isoformat()}, recorded by "
            f"{actor.name}."
        )
        # The site's pharmacy must stop dispensing, and the unblinded pharmacist who prepares the
        # doses must stop preparing them; the same words whatever the arm (BLD-01).
        for audience, instruction in (
            ("pharmacist", f"Dispense no further kit; the kits allocated to {number} stay assigned to it."),
            ("unblinded_pharmacist", f"Prepare no further dose for {number}."),
        ):
            notify_unblinded_roles(
                session,
                trial,
                subject.site_id,
                audience,
                "subject_withdrawn",
                number,
                f"Withdrawal of {number}",
                f"{told} {instruction}",
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
            new={
                "kind": kind,
                "effective_date": when.isoformat(),
                "signature": signed.id,
                **({"agreement": agreement} if agreement is not None else {}),
            },
            reason=reason,
            at=now,
        )
