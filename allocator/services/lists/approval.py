"""The signed approval (statistician's QC) and activation of a list (RND-02, ACC-12)."""

from __future__ import annotations

from allocator.audit import Action, Actor
from allocator.models import ListStatus
from allocator.services import signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict
from allocator.services.lists.storage import (
    ListEnvironmentMismatch,
    list_signing,
    locked_list,
    require_intact,
    signed_content,
)
from allocator.services.lookups import instance_mode

# --- approval and activation (RND-02, ACC-12) -------------------------------------------------

APPROVAL_MEANING = "randomization list approval"
ACTIVATION_MEANING = "randomization list activation"


def approve_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, list_id: int, request: signatures.SignatureRequest
) -> None:
    """The statistician's signed QC approval of a DRAFT list (RND-02). Required before activation."""

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = locked_list(session, trial_code, list_id)
            if row.status != ListStatus.DRAFT.value or row.approved_signature_id is not None:
                raise Conflict(
                    f"{row.label} is {row.status}{' and already approved' if row.approved_signature_id else ''}"
                )
            require_intact(ctx, session, row, version)
            signature = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=request,
                meaning=APPROVAL_MEANING,
                object_type="randomization_list",
                object_id=row.label,
                content=signed_content(row, version),
                now=now,
            )
            row.approved_signature_id = signature.id
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.LIST_APPROVED,
                object_type="randomization_list",
                object_id=row.label,
                new={"signature": signature.id, "storage_sha256": version.storage_sha256},
                at=now,
            )

    list_signing(ctx, actor, trial_code, APPROVAL_MEANING, str(list_id), work)


def activate_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, list_id: int, request: signatures.SignatureRequest
) -> None:
    """Put an approved list into use (signed). The trial becomes ACTIVE. A TEST list can never be
    activated on a production instance, nor the reverse (RND-13)."""

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = locked_list(session, trial_code, list_id)
            if row.mode != instance_mode(ctx.settings.env).value:
                raise ListEnvironmentMismatch(
                    f"a {row.mode.upper()} list cannot be activated on a {ctx.settings.env.value} instance"
                )
            if row.status != ListStatus.DRAFT.value:
                raise Conflict(f"{row.label} is {row.status}, not draft")
            if row.approved_signature_id is None:
                raise Conflict(f"{row.label} has no signed QC approval yet (RND-02)")
            require_intact(ctx, session, row, version)
            signature = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=request,
                meaning=ACTIVATION_MEANING,
                object_type="randomization_list",
                object_id=row.label,
                content=signed_content(row, version),
                now=now,
            )
            row.status = ListStatus.ACTIVE.value
            row.activated_at = now
            row.activated_signature_id = signature.id
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.LIST_ACTIVATED,
                object_type="randomization_list",
                object_id=row.label,
                old={"status": "draft"},
                new={"status": "active", "signature": signature.id},
                at=now,
            )
            state.open_trial(ctx, session, actor, trial, "randomization list activated", now)

    list_signing(ctx, actor, trial_code, ACTIVATION_MEANING, str(list_id), work)
