"""Extend an active list with more blocks, signed (RND-10, RND-11)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from sqlalchemy import select

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import ListStatus, ListVersion, Slot, Stratum
from allocator.randomization import BlockDesign, generate_stratum
from allocator.randomization.blocks import ListRow, canonical_line
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lists.storage import (
    RandomizationNumbers,
    insert_slots,
    list_signing,
    list_storage_digest,
    locked_list,
    require_intact,
    signed_content,
    slot_binding,
    slot_record,
    stratum_storage_digest,
)

EXTENSION_MEANING = "randomization list extension"


# --- extension under change control (RND-10, RND-11) ------------------------------------------


def extend_list(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    list_id: int,
    *,
    additional: int,
    strata: Iterable[str] | None,
    reason: str,
    request: signatures.SignatureRequest,
) -> int:
    """Append at least `additional` slots (whole blocks) to the given strata (all when None) of an
    ACTIVE list, as a new version: used slots are never touched (the generator is prefix-stable).
    Signed, reasoned and audited. Returns the new version number."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if not 1 <= additional <= 100_000:
        raise ValidationFailed("invalid size", errors=[FieldProblem("additional", "must be 1 to 100000")])
    wanted = set(strata) if strata is not None else None
    result: list[int] = []

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = locked_list(session, trial_code, list_id)
            if row.status != ListStatus.ACTIVE.value or row.method != "permuted_blocks":
                raise Conflict(
                    f"only an active permuted-block list can be extended ({row.label} is {row.status})"
                )
            require_intact(ctx, session, row, version)
            parameters = json.loads(row.parameters_json)
            design = BlockDesign(
                arms=tuple(parameters["arms"]),
                ratio=tuple(parameters["ratio"]),
                block_sizes=tuple(parameters["randomization"]["block_sizes"]),
            )
            # Code-point order (docs/randomization.md §7), never the database's collation.
            all_strata = sorted(
                session.execute(select(Stratum).where(Stratum.list_id == row.id).with_for_update()).scalars(),
                key=lambda stratum: stratum.key,
            )
            unknown = (wanted or set()) - {s.key for s in all_strata}
            if unknown:
                raise ValidationFailed(
                    "unknown stratum",
                    errors=[FieldProblem("strata", f"no stratum {k}") for k in sorted(unknown)],
                )
            # In this transaction: a second write transaction would wait for this one on SQLite.
            seed = arm_access.list_seed_in(session, ctx, actor, trial.code, row, "list extension")
            sealer = crypto.BulkSealer(ctx.ring, crypto.Purpose.LISTS)
            numbers = RandomizationNumbers(
                session.execute(select(Slot.randomization_number).where(Slot.list_id == row.id)).scalars()
            )
            new_version = row.current_version + 1
            content = hashlib.sha256()
            added_total = 0
            for stratum in all_strata:
                target = (
                    stratum.capacity + additional
                    if wanted is None or stratum.key in wanted
                    else stratum.capacity
                )
                sequence = list(
                    generate_stratum(
                        seed,
                        design,
                        trial_code=trial.code,
                        list_label=row.label,
                        stratum=stratum.key,
                        min_slots=target,
                    ).slots()
                )
                for slot in sequence:
                    content.update(
                        canonical_line(
                            ListRow(stratum.key, slot.position, slot.block, slot.block_size, slot.arm)
                        ).encode()
                    )
                fresh = [slot for slot in sequence if slot.position > stratum.capacity]
                rows = []
                for slot in fresh:
                    sealed = sealer.seal_text(
                        slot_record(slot.arm, slot.block, slot.block_size),
                        slot_binding(trial.code, row.label, stratum.key, slot.position),
                    )
                    rows.append((row.id, stratum.id, slot.position, new_version, numbers.next(), sealed))
                if rows:
                    insert_slots(session, rows)
                    stratum.capacity = len(sequence)
                    stratum.storage_sha256 = stratum_storage_digest(session, stratum.id)
                added_total += len(fresh)
            storage = list_storage_digest((s.key, s.storage_sha256) for s in all_strata)
            slot_count = version.slot_count + added_total
            new = ListVersion(
                list_id=row.id,
                version=new_version,
                content_sha256=content.hexdigest(),
                storage_sha256=storage,
                slot_count=slot_count,
                reason=reason.strip(),
                created_at=now,
                created_by_id=actor.user_id,
                created_by_name=actor.name,
            )
            signature = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=request,
                meaning=EXTENSION_MEANING,
                object_type="randomization_list",
                object_id=row.label,
                content={**signed_content(row, new), "added": added_total},
                now=now,
            )
            new.signature_id = signature.id
            session.add(new)
            row.current_version = new_version
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.LIST_EXTENDED,
                object_type="randomization_list",
                object_id=row.label,
                old={"version": version.version},
                new={"version": new_version, "signature": signature.id, "storage_sha256": storage},
                sealed={"added_slots": added_total, "strata": sorted(wanted) if wanted else "all"},
                reason=reason.strip(),
                at=now,
            )
            result.append(new_version)

    list_signing(ctx, actor, trial_code, EXTENSION_MEANING, str(list_id), work)
    return result[0]
