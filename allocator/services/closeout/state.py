"""The trial's state changes at close-out: lock the database
and unblind the trial, each a signed step with its audit entry, and their history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import Signature, Site, SiteStatus, Trial, TrialStateChange, TrialStatus
from allocator.services import signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lookups import get_trial, trial_definition
from allocator.trialdef import NotRandomized

LOCK_MEANING = "database lock"
UNBLIND_MEANING = "final unblinding"


@dataclass(frozen=True, slots=True)
class StateStep:
    from_status: str
    to_status: str
    reason: str
    changed_at: datetime
    changed_by: str
    signature: signatures.Manifestation


def _change(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    expected: TrialStatus,
    target: TrialStatus,
    meaning: str,
    reason: str,
    signature: signatures.SignatureRequest,
) -> StateStep:
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="trial", object_id=trial_code
        ),
        ctx.db.unit_of_work() as session,
    ):
        # The trial's row, FOR UPDATE: a randomization holds a key-share lock on it from its second
        # statement (`subjects.randomize`, under its site's lock) to its commit, so the change waits
        # for the randomizations past that point, and one that reaches it meanwhile waits for the
        # change and reads the new status. (SQLite: one writer at a time.)
        trial = session.execute(
            select(Trial).where(Trial.code == trial_code).with_for_update()
        ).scalar_one_or_none()
        if trial is None:
            get_trial(session, trial_code)  # raises NotFound
            raise AssertionError  # pragma: no cover
        if trial.status != expected.value:
            raise Conflict(
                f"{trial.code} is {trial.status}: it must be {expected.value} to become {target.value}"
            )
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=meaning,
            object_type="trial",
            object_id=trial.code,
            content={
                "trial": trial.code,
                "from": expected.value,
                "to": target.value,
                "reason": reason.strip(),
            },
            now=now,
        )
        trial.status = target.value
        session.add(
            TrialStateChange(
                trial_id=trial.id,
                from_status=expected.value,
                to_status=target.value,
                reason=reason.strip(),
                changed_at=now,
                changed_by_id=actor.user_id,
                changed_by_name=actor.name,
                signature_id=signed.id,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.TRIAL_STATUS_CHANGED,
            object_type="trial",
            object_id=trial.code,
            old={"status": expected.value},
            new={"status": target.value, "signature": signed.id},
            reason=reason.strip(),
            at=now,
        )
        return StateStep(
            expected.value,
            target.value,
            reason.strip(),
            now,
            actor.name,
            signatures.manifestation(signed),
        )


def open_trial(
    ctx: ServiceContext, session: Session, actor: Actor, trial: Trial, reason: str, now: datetime
) -> bool:
    """SETUP -> ACTIVE, in the caller's transaction, unsigned: a randomized trial opens with its
    randomization list's (signed) activation, an observational study with its first active site.
    One conditional update, so that two callers at once open it once; audited when it opened.
    Returns whether it did."""
    opened = (
        session.connection()
        .execute(
            update(Trial)
            .where(Trial.id == trial.id, Trial.status == TrialStatus.SETUP.value)
            .values(status=TrialStatus.ACTIVE.value)
        )
        .rowcount
    )
    if not opened:
        return False
    session.expire(trial, ["status"])
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.TRIAL_STATUS_CHANGED,
        object_type="trial",
        object_id=trial.code,
        old={"status": TrialStatus.SETUP.value},
        new={"status": TrialStatus.ACTIVE.value},
        reason=reason,
        at=now,
    )
    return True


def lock(
    ctx: ServiceContext, actor: Actor, trial_code: str, *, reason: str, signature: signatures.SignatureRequest
) -> StateStep:
    """ACTIVE -> LOCKED, signed "database lock" (trial manager). An observational study still in
    set-up with an active site (one whose sites were activated before studies opened with their
    first site) is opened first, audited, so that its lock can be signed."""
    if trial_definition(ctx, trial_code).observational:
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            active = session.execute(
                select(Site.id)
                .where(Site.trial_id == trial.id, Site.status == SiteStatus.ACTIVE.value)
                .limit(1)
            ).first()
            if trial.status == TrialStatus.SETUP.value and active is not None:
                open_trial(
                    ctx, session, actor, trial, "recruitment open: a site was active already", ctx.now()
                )
    return _change(
        ctx,
        actor,
        trial_code,
        expected=TrialStatus.ACTIVE,
        target=TrialStatus.LOCKED,
        meaning=LOCK_MEANING,
        reason=reason,
        signature=signature,
    )


def unblind_trial(
    ctx: ServiceContext, actor: Actor, trial_code: str, *, reason: str, signature: signatures.SignatureRequest
) -> StateStep:
    """LOCKED -> UNBLINDED, signed "final unblinding" (unblinded statistician). An observational
    study has nothing to unblind: NotRandomized (a 409 on the pages), nothing signed."""
    if trial_definition(ctx, trial_code).observational:
        raise NotRandomized(trial_code, "arms to unblind")
    return _change(
        ctx,
        actor,
        trial_code,
        expected=TrialStatus.LOCKED,
        target=TrialStatus.UNBLINDED,
        meaning=UNBLIND_MEANING,
        reason=reason,
        signature=signature,
    )


def status(ctx: ServiceContext, trial_code: str) -> str:
    with ctx.db.reading() as session:
        return get_trial(session, trial_code).status


def history(ctx: ServiceContext, trial_code: str) -> tuple[str, list[StateStep]]:
    """The trial's status and its signed steps, oldest first."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(TrialStateChange, Signature)
            .join(Signature, Signature.id == TrialStateChange.signature_id)
            .where(TrialStateChange.trial_id == trial.id)
            .order_by(TrialStateChange.id)
        ).all()
        return trial.status, [
            StateStep(
                c.from_status,
                c.to_status,
                c.reason,
                c.changed_at,
                c.changed_by_name,
                signatures.manifestation(s),
            )
            for c, s in rows
        ]
