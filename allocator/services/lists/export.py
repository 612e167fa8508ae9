"""Export a list, encrypted with a passphrase and signed, for the statistician."""

from __future__ import annotations

import json

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.lists.overview import lists
from allocator.services.lists.storage import (
    ListIntegrityFailure,
    list_by_id,
    list_signing,
    locked_list,
    signed_content,
)

EXPORT_MEANING = "randomization list export"


# --- export for independent verification (RND-03; the seed leaves only sealed) ----------------

MIN_PASSPHRASE = 16


def export_list(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    list_id: int,
    *,
    passphrase: str,
    reason: str,
    request: signatures.SignatureRequest,
) -> tuple[str, bytes]:
    """The list, its parameters and its seed, as JSON encrypted with the statistician's passphrase
    (`crypto.encrypt_for_download`: opens with plain `openssl enc -d`). Signed and audited.
    Returns (file name, bytes)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise ValidationFailed(
            "passphrase too short",
            errors=[FieldProblem("passphrase", f"at least {MIN_PASSPHRASE} characters")],
        )
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    row = list_by_id(ctx, trial_code, list_id)
    overview = next(o for o in lists(ctx, trial_code) if o.id == list_id)

    def work() -> None:
        with ctx.db.unit_of_work() as session:
            trial, locked, version = locked_list(session, trial_code, list_id)
            signature = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=request,
                meaning=EXPORT_MEANING,
                object_type="randomization_list",
                object_id=locked.label,
                content=signed_content(locked, version),
                now=ctx.now(),
            )
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.LIST_EXPORTED,
                object_type="randomization_list",
                object_id=locked.label,
                new={"signature": signature.id, "version": version.version},
                reason=reason.strip(),
                at=ctx.now(),
            )

    list_signing(ctx, actor, trial_code, EXPORT_MEANING, str(list_id), work)
    seed = arm_access.open_list_seed(
        ctx, actor, trial_code, row.label, row.seed_sealed, "export for verification"
    )
    opened = arm_access.open_list_slots(ctx, actor, trial_code, row.id, row.label, "export for verification")
    if opened.unreadable:
        raise ListIntegrityFailure(
            f"{len(opened.unreadable)} slot(s) do not open (altered?): nothing exported"
        )
    slots = opened.slots
    document = {
        "format": "allocator-list-export/1",
        "trial": trial_code,
        "label": row.label,
        "mode": row.mode,
        "algorithm": row.algorithm,
        "algorithm_version": row.algorithm_version,
        "specification": "docs/randomization.md",
        "seed_hex": seed.hex(),
        "seed_id": row.seed_id,
        "parameters": overview.parameters,
        "versions": [
            {
                "version": v.version,
                "content_sha256": v.content_sha256,
                "slots": v.slot_count,
                "reason": v.reason,
            }
            for v in overview.versions
        ],
        "strata": [{"key": s.key, "requested": s.requested, "capacity": s.capacity} for s in overview.strata],
        "slots": [
            {
                "stratum": s.stratum,
                "position": s.position,
                "block": s.block,
                "block_size": s.block_size,
                "arm": s.arm,
                "randomization_number": s.randomization_number,
                "version": s.list_version,
            }
            for s in slots
        ],
        "exported_at": ctx.now().isoformat(),
        "exported_by": actor.name,
    }
    raw = json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8")
    name = row.label.replace("/", "-") + ".json.enc"
    return name, crypto.encrypt_for_download(raw, passphrase)
