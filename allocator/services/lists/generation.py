"""Generate the randomization lists of a trial: blocks per stratum, or minimization strata."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import (
    ListMode,
    ListStatus,
    ListVersion,
    RandomizationList,
    Stratum,
    Trial,
    TrialDefinitionVersion,
)
from allocator.randomization import ALGORITHM, ALGORITHM_VERSION, generate_stratum, new_seed
from allocator.randomization import minimization as minimization_core
from allocator.randomization.blocks import ListRow, canonical_line
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lists.storage import (
    ListEnvironmentMismatch,
    ProgressCallback,
    RandomizationNumbers,
    SlotValues,
    design_of,
    insert_slots,
    list_storage_digest,
    list_strata,
    seed_binding,
    seed_id,
    slot_binding,
    slot_record,
    storage_line,
)
from allocator.services.lookups import current_definition, instance_mode
from allocator.trialdef import BlockRandomization, MinimizationRandomization, TrialDefinition

_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class Generated:
    list_id: int
    label: str
    mode: str
    method: str
    strata: int
    slots: int
    content_sha256: str
    storage_sha256: str


def generate_lists(
    ctx: ServiceContext, actor: Actor, trial_code: str, mode: str, progress: ProgressCallback | None = None
) -> Generated:
    """Generate the randomization list of a trial from a fresh 256-bit seed (RND-01..04).

    Preconditions: `mode` is the instance's mode (RND-13); no DRAFT or ACTIVE list of that mode
    exists; a PRODUCTION list needs a definition with nothing left to confirm. Effects: the list,
    its strata and sealed slots, version 1 with both digests, and an audit entry whose parameters
    (block sizes included, RND-12) are sealed. Raises ListEnvironmentMismatch, Conflict,
    ValidationFailed."""
    expected = instance_mode(ctx.settings.env)
    if mode not in (ListMode.TEST.value, ListMode.PRODUCTION.value):
        raise ValidationFailed("unknown mode", errors=[FieldProblem("mode", "must be test or production")])
    if mode != expected.value:
        raise ListEnvironmentMismatch(
            f"this is a {ctx.settings.env.value} instance: it holds {expected.value.upper()} lists only, "
            f"not {mode.upper()} (RND-13)"
        )
    now = ctx.now()
    seed = new_seed()
    with ctx.db.unit_of_work() as session:
        # One generation at a time (FOR NO KEY UPDATE: the units of work that record trial data hold
        # the row key-share, `lookups.require_open`, and need not wait for a generation).
        trial = session.execute(
            select(Trial).where(Trial.code == trial_code).with_for_update(key_share=True)
        ).scalar_one_or_none()
        if trial is None:
            raise NotFound(f"no trial {trial_code!r}")
        definition = current_definition(session, trial)
        if mode == ListMode.PRODUCTION.value and definition.unconfirmed:
            raise Conflict(
                "a PRODUCTION list needs a confirmed definition; still to confirm: "
                + ", ".join(u.field for u in definition.unconfirmed)
            )
        existing = session.execute(
            select(RandomizationList.label, RandomizationList.status).where(
                RandomizationList.trial_id == trial.id, RandomizationList.mode == mode
            )
        ).all()
        if any(row.status != ListStatus.RETIRED.value for row in existing):
            raise Conflict(f"{trial.code} already has a {mode.upper()} list: extend it or retire it first")
        label = f"{trial.code}/{mode.upper()}/{len(existing) + 1}"
        definition_row = session.execute(
            select(TrialDefinitionVersion).where(
                TrialDefinitionVersion.trial_id == trial.id,
                TrialDefinitionVersion.version == trial.definition_version,
            )
        ).scalar_one()
        randomization = definition.randomization
        method = randomization.method
        parameters = {
            "arms": list(definition.arm_codes),
            "ratio": [weight for _, weight in definition.ratio],
            "randomization": json.loads(json.dumps(asdict(randomization), default=str)),
            "strata": [key for key, _ in list_strata(definition)],
            "definition_version": trial.definition_version,
        }
        row = RandomizationList(
            trial_id=trial.id,
            definition_id=definition_row.id,
            mode=mode,
            label=label,
            status=ListStatus.DRAFT.value,
            method=method,
            algorithm=ALGORITHM if method == "permuted_blocks" else minimization_core.MINIMIZATION_ALGORITHM,
            algorithm_version=ALGORITHM_VERSION
            if method == "permuted_blocks"
            else minimization_core.MINIMIZATION_VERSION,
            parameters_json=json.dumps(parameters, sort_keys=True),
            seed_sealed=crypto.seal(ctx.ring, crypto.Purpose.LISTS, seed, seed_binding(trial.code, label)),
            seed_id=seed_id(seed),
            current_version=1,
            generated_at=now,
            generated_by_id=actor.user_id,
            generated_by_name=actor.name,
        )
        session.add(row)
        session.flush()
        if isinstance(randomization, BlockRandomization):
            content, storage, slots = _write_blocks(
                ctx, session, trial.code, row, definition, seed, randomization, progress
            )
        else:
            content, storage, slots = _write_minimization_strata(session, row, definition, randomization)
        session.add(
            ListVersion(
                list_id=row.id,
                version=1,
                content_sha256=content,
                storage_sha256=storage,
                slot_count=slots,
                reason="generated",
                created_at=now,
                created_by_id=actor.user_id,
                created_by_name=actor.name,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LIST_GENERATED,
            object_type="randomization_list",
            object_id=label,
            new={
                "mode": mode,
                "method": method,
                "strata": len(parameters["strata"]),
                "seed_id": row.seed_id,
                "storage_sha256": storage,
            },
            # RND-12: block sizes, list length and the content digest reveal the design: sealed.
            sealed={"parameters": parameters, "slots": slots, "content_sha256": content},
            at=now,
        )
        return Generated(row.id, label, mode, method, len(parameters["strata"]), slots, content, storage)


def _write_blocks(
    ctx: ServiceContext,
    session: Session,
    trial_code: str,
    row: RandomizationList,
    definition: TrialDefinition,
    seed: bytes,
    randomization: BlockRandomization,
    progress: ProgressCallback | None,
) -> tuple[str, str, int]:
    """Generate, seal and store every stratum (in key order, so the content digest can be computed
    on the way, without holding the list in memory)."""
    design = design_of(definition)
    sealer = crypto.BulkSealer(ctx.ring, crypto.Purpose.LISTS)
    macer = crypto.SlotMacer(ctx.ring)
    numbers = RandomizationNumbers()
    content = hashlib.sha256()
    stratum_digests: list[tuple[str, str]] = []
    strata = list_strata(definition)
    ordinals = {key: index for index, (key, _) in enumerate(strata)}
    total = 0
    for done, (key, _levels) in enumerate(sorted(strata), start=1):
        sequence = list(
            generate_stratum(
                seed,
                design,
                trial_code=trial_code,
                list_label=row.label,
                stratum=key,
                min_slots=randomization.slots_per_stratum,
            ).slots()
        )
        stratum = Stratum(
            list_id=row.id,
            key=key,
            ordinal=ordinals[key],
            requested=randomization.slots_per_stratum,
            capacity=len(sequence),
            used=0,
            alert_remaining=randomization.alert_remaining,
            storage_sha256="",
        )
        session.add(stratum)
        session.flush()
        storage = hashlib.sha256()
        batch: list[SlotValues] = []
        for slot in sequence:
            content.update(
                canonical_line(ListRow(key, slot.position, slot.block, slot.block_size, slot.arm)).encode()
            )
            sealed = sealer.seal_text(
                slot_record(slot.arm, slot.block, slot.block_size),
                slot_binding(trial_code, row.label, key, slot.position),
            )
            number = numbers.next()
            storage.update(storage_line(slot.position, number, sealed))
            mac = macer.mac(trial_code, row.label, key, slot.position, number, sealed)
            batch.append((row.id, stratum.id, slot.position, 1, number, sealed, mac))
            if len(batch) >= _BATCH:
                insert_slots(session, batch)
                batch = []
        if batch:
            insert_slots(session, batch)
        stratum.storage_sha256 = storage.hexdigest()
        stratum_digests.append((key, stratum.storage_sha256))
        total += len(sequence)
        if progress is not None:
            progress(done, len(strata))
    return content.hexdigest(), list_storage_digest(stratum_digests), total


def _write_minimization_strata(
    session: Session,
    row: RandomizationList,
    definition: TrialDefinition,
    randomization: MinimizationRandomization,
) -> tuple[str, str, int]:
    """Minimization has no pre-generated slots: strata are kept for counts and capacity alerts."""
    digests = []
    for index, (key, _) in enumerate(list_strata(definition)):
        empty = hashlib.sha256(b"").hexdigest()
        session.add(
            Stratum(
                list_id=row.id,
                key=key,
                ordinal=index,
                requested=randomization.max_subjects,
                capacity=randomization.max_subjects,
                used=0,
                alert_remaining=randomization.alert_remaining,
                storage_sha256=empty,
            )
        )
        digests.append((key, empty))
    return hashlib.sha256(b"").hexdigest(), list_storage_digest(digests), 0
