"""Corrections without deletion: randomized in error and
stratum corrections (RND-07, RND-09, DIB-03)."""

from __future__ import annotations

from sqlalchemy import select

from allocator.audit import Action, Actor
from allocator.models import Site, SubjectCorrection
from allocator.permissions import Scope
from allocator.services import lookups, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, subject_in_reach
from allocator.services.subjects.views import current_strata

# --- corrections without deletion (RND-07, RND-09, DIB-03) ------------------------------------

IN_ERROR_MEANING = "randomized in error"


def mark_in_error(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    reason: str,
    scope: Scope,
    signature: signatures.SignatureRequest,
) -> None:
    """Flag a subject as randomized in error: signed and reasoned. The subject, the slot and the
    kits stay as they are and the subject stays in every report (intention to treat)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=IN_ERROR_MEANING,
            object_type="subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        lookups.require_open(trial, session)  # no new data once the database is locked
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        if session.execute(
            select(SubjectCorrection.id).where(
                SubjectCorrection.subject_id == subject.id,
                SubjectCorrection.kind == "randomized_in_error",
            )
        ).first():
            raise Conflict(f"{number} is already flagged as randomized in error")
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=IN_ERROR_MEANING,
            object_type="subject",
            object_id=number,
            content={"subject": number, "reason": reason.strip()},
            now=now,
        )
        session.add(
            SubjectCorrection(
                subject_id=subject.id,
                kind="randomized_in_error",
                field=None,
                old_value=None,
                new_value=True,
                reason=reason.strip(),
                investigator_agreement_ref=None,
                at=now,
                by_id=actor.user_id,
                by_name=actor.name,
                signature_id=signed.id,
            )
        )
        site = session.get(Site, subject.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_FLAGGED_IN_ERROR,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            new={"randomized_in_error": True, "signature": signed.id},
            reason=reason.strip(),
            at=now,
        )


def correct_stratum(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    factor: str,
    level: str,
    reason: str,
    scope: Scope,
    agreement_ref: str | None,
    is_investigator: bool,
) -> None:
    """Record the correct value of a stratification factor beside the one used at randomization
    (RND-09; Yelland et al., Stat Med 2023): no re-randomization, no kit swap. A correction made by
    anyone but the site's investigator needs a reference to the investigator's agreement (DIB-03)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if not is_investigator and not (agreement_ref or "").strip():
        raise ValidationFailed(
            "the investigator's agreement is required",
            errors=[FieldProblem("investigator_agreement_ref", "is required (DIB-03)")],
        )
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        lookups.require_open(trial, session)  # no new data once the database is locked
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        entered = {f.code: f for f in definition.stratification if f.source == "entered"}
        if factor not in entered:
            raise ValidationFailed(
                "unknown factor", errors=[FieldProblem("factor", f"{factor!r} is not an entered factor")]
            )
        codes = [lv.code for lv in entered[factor].levels]
        if level not in codes:
            raise ValidationFailed(
                "unknown level", errors=[FieldProblem("level", f"one of {', '.join(codes)}")]
            )
        current = current_strata(session, subject)
        if current.get(factor) == level:
            raise Conflict(f"{factor} is already {level} for {number}")
        session.add(
            SubjectCorrection(
                subject_id=subject.id,
                kind="stratum",
                field=factor,
                old_value=current.get(factor),
                new_value=level,
                reason=reason.strip(),
                investigator_agreement_ref=(agreement_ref or "").strip() or None,
                at=now,
                by_id=actor.user_id,
                by_name=actor.name,
                signature_id=None,
            )
        )
        site = session.get(Site, subject.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_STRATUM_CORRECTED,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            old={factor: current.get(factor)},
            new={factor: level, "agreement": (agreement_ref or "").strip() or None},
            reason=reason.strip(),
            at=now,
        )
