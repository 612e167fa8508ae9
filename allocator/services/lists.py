"""Randomization lists as data: generate, review, approve, activate, check, verify, extend, export.

Who: the unblinded statistician (LIST_MANAGE); the command line for generation and verification.
Blinded roles only ever get `stratum_overview` (used slots per stratum and a capacity state).

Storage. Every slot holds its arm, block number and block size sealed with AES-256-GCM, bound to
(trial, list label, stratum, position), next to an opaque random randomization number. Two digests
are recorded with every version of a list (RND-02, RND-10):

* the *content* digest of docs/randomization.md §7, over the plaintext list, which `verify_lists`
  recomputes by regenerating the list from the seed and by opening every slot (both audited);
* the *storage* digest, over the stored rows (stratum, position, randomization number, SHA-256 of
  the ciphertext), which `check_integrity` recomputes without any key, and which every allocation
  re-checks for its stratum (`stratum_storage_digest`), so that a changed, added or removed slot
  blocks randomization (ACC-15).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import islice, pairwise
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import (
    IntegrityCheck,
    ListMode,
    ListStatus,
    ListVersion,
    RandomizationList,
    Signature,
    Slot,
    Stratum,
    Trial,
    TrialDefinitionVersion,
    TrialStatus,
)
from allocator.randomization import (
    ALGORITHM,
    ALGORITHM_VERSION,
    BlockDesign,
    generate_stratum,
    iter_slots,
    new_seed,
)
from allocator.randomization import minimization as minimization_core
from allocator.randomization.blocks import ListRow, canonical_line
from allocator.randomization.blocks import Slot as ListSlot
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.trialdef import BlockRandomization, MinimizationRandomization, TrialDefinition, stratum_key

if TYPE_CHECKING:
    from allocator.randomization.quality import QualityReport
from allocator.services.lookups import instance_mode

ProgressCallback = Callable[[int, int], None]
_BATCH = 5_000


class ListEnvironmentMismatch(Conflict):
    slug = "list-environment-mismatch"
    title = "TEST and PRODUCTION lists never mix"


class ListIntegrityFailure(Conflict):
    slug = "list-integrity-failure"
    title = "The randomization list failed its integrity check"


def foreign_lists(ctx: ServiceContext) -> list[str]:
    """Labels of non-retired lists whose mode is not this instance's (start-up refuses them)."""
    expected = instance_mode(ctx.settings.env).value
    with ctx.db.reading() as session:
        return list(
            session.execute(
                select(RandomizationList.label).where(
                    RandomizationList.mode != expected, RandomizationList.status != ListStatus.RETIRED.value
                )
            ).scalars()
        )


# --- generation -------------------------------------------------------------------------------


def design_of(definition: TrialDefinition) -> BlockDesign:
    randomization = definition.randomization
    sizes = (
        randomization.block_sizes
        if isinstance(randomization, BlockRandomization)
        else (definition.ratio_total,)
    )
    return BlockDesign(
        arms=definition.arm_codes, ratio=tuple(weight for _, weight in definition.ratio), block_sizes=sizes
    )


def _strata(definition: TrialDefinition) -> list[tuple[str, dict[str, str]]]:
    return [(stratum_key(combo), dict(combo)) for combo in definition.strata()]


def _slot_binding(trial: str, label: str, stratum: str, position: int) -> crypto.Binding:
    return crypto.Binding(trial=trial, table="slot", row=f"{label}|{stratum}|{position}", column="sealed")


def _seed_binding(trial: str, label: str) -> crypto.Binding:
    return crypto.Binding(trial=trial, table="randomization_list", row=label, column="seed")


def seed_id(seed: bytes) -> str:
    """Names a seed without revealing it (a 256-bit seed cannot be recovered from its digest)."""
    return hashlib.sha256(b"allocator/seed-id/v1|" + seed).hexdigest()[:32]


def _storage_line(position: int, number: str, sealed: bytes) -> bytes:
    return f"{position}\t{number}\t{hashlib.sha256(sealed).hexdigest()}\n".encode("ascii")


def _list_storage_digest(stratum_digests: Iterable[tuple[str, str]]) -> str:
    hasher = hashlib.sha256()
    for key, digest in sorted(stratum_digests):
        hasher.update(f"{key}\t{digest}\n".encode())
    return hasher.hexdigest()


def _slot_record(arm: str, block: int, block_size: int) -> str:
    """The sealed JSON of a slot, exactly as json.dumps(sort_keys=True, separators=(",", ":")) would
    write it (arm codes are plain upper-case identifiers), without its cost per slot."""
    return f'{{"arm":"{arm}","block":{block},"block_size":{block_size}}}'


_SLOT_COLUMNS = "list_id, stratum_id, position, list_version, randomization_number, sealed"


def _insert_slots(session: Session, rows: list[tuple[int, int, int, int, str, bytes]]) -> None:
    """Bulk insert straight through the driver in the session's transaction: COPY on PostgreSQL,
    executemany on SQLite (the ORM's per-row work would dominate a million-slot list)."""
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    if raw is None:  # pragma: no cover - a live Connection always has one
        raise RuntimeError("no database connection")
    cursor = raw.cursor()
    try:
        if connection.dialect.name == "postgresql":
            with cursor.copy(f"COPY slot ({_SLOT_COLUMNS}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            cursor.executemany(f"INSERT INTO slot ({_SLOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)  # noqa: S608 - constant column list
    finally:
        cursor.close()


class RandomizationNumbers:
    """Opaque randomization numbers, unique within a list (RND-12: nothing in them reveals the
    stratum, the position or the block)."""

    def __init__(self, used: Iterable[str] = ()) -> None:
        self.used = set(used)

    def next(self) -> str:
        used, draw = self.used, secrets.randbelow
        while True:
            number = f"R-{draw(100_000_000):08d}"
            if number not in used:
                used.add(number)
                return number


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
        trial = session.execute(
            select(Trial).where(Trial.code == trial_code).with_for_update()
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
            "strata": [key for key, _ in _strata(definition)],
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
            seed_sealed=crypto.seal(ctx.ring, crypto.Purpose.LISTS, seed, _seed_binding(trial.code, label)),
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
    numbers = RandomizationNumbers()
    content = hashlib.sha256()
    stratum_digests: list[tuple[str, str]] = []
    strata = _strata(definition)
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
        batch: list[tuple[int, int, int, int, str, bytes]] = []
        for slot in sequence:
            content.update(
                canonical_line(ListRow(key, slot.position, slot.block, slot.block_size, slot.arm)).encode()
            )
            sealed = sealer.seal_text(
                _slot_record(slot.arm, slot.block, slot.block_size),
                _slot_binding(trial_code, row.label, key, slot.position),
            )
            number = numbers.next()
            storage.update(_storage_line(slot.position, number, sealed))
            batch.append((row.id, stratum.id, slot.position, 1, number, sealed))
            if len(batch) >= _BATCH:
                _insert_slots(session, batch)
                batch = []
        if batch:
            _insert_slots(session, batch)
        stratum.storage_sha256 = storage.hexdigest()
        stratum_digests.append((key, stratum.storage_sha256))
        total += len(sequence)
        if progress is not None:
            progress(done, len(strata))
    return content.hexdigest(), _list_storage_digest(stratum_digests), total


def _write_minimization_strata(
    session: Session,
    row: RandomizationList,
    definition: TrialDefinition,
    randomization: MinimizationRandomization,
) -> tuple[str, str, int]:
    """Minimization has no pre-generated slots: strata are kept for counts and capacity alerts."""
    digests = []
    for index, (key, _) in enumerate(_strata(definition)):
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
    return hashlib.sha256(b"").hexdigest(), _list_storage_digest(digests), 0


# --- overviews --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StratumState:
    key: str
    used: int
    requested: int
    capacity: int
    alert_remaining: int

    @property
    def remaining(self) -> int:
        return self.capacity - self.used

    @property
    def state(self) -> str:
        """ok / low / exhausted — the only capacity information blinded roles get (RND-11, RND-12)."""
        if self.remaining <= 0:
            return "exhausted"
        return "low" if self.remaining <= self.alert_remaining else "ok"


@dataclass(frozen=True, slots=True)
class ListOverview:
    id: int
    label: str
    mode: str
    status: str
    method: str
    algorithm: str
    algorithm_version: str
    seed_id: str
    version: int
    slot_count: int
    content_sha256: str
    storage_sha256: str
    generated_at: datetime
    generated_by: str
    approved: signatures.Manifestation | None
    activated: signatures.Manifestation | None
    last_check: IntegrityCheck | None
    strata: tuple[StratumState, ...]
    versions: tuple[ListVersion, ...]
    parameters: dict[str, object]

    @property
    def blocked(self) -> bool:
        return self.last_check is not None and not self.last_check.ok


def _states(session: Session, list_id: int) -> tuple[StratumState, ...]:
    rows = session.execute(
        select(Stratum).where(Stratum.list_id == list_id).order_by(Stratum.ordinal)
    ).scalars()
    return tuple(StratumState(s.key, s.used, s.requested, s.capacity, s.alert_remaining) for s in rows)


def _manifestation(session: Session, signature_id: int | None) -> signatures.Manifestation | None:
    if signature_id is None:
        return None
    signature = session.get(Signature, signature_id)
    return signatures.manifestation(signature) if signature else None


def lists(ctx: ServiceContext, trial_code: str) -> list[ListOverview]:
    """Every list of the trial, newest first, for the unblinded statistician (no arm here)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        out = []
        for row in session.execute(
            select(RandomizationList)
            .where(RandomizationList.trial_id == trial.id)
            .order_by(RandomizationList.id.desc())
        ).scalars():
            versions = tuple(
                session.execute(
                    select(ListVersion).where(ListVersion.list_id == row.id).order_by(ListVersion.version)
                ).scalars()
            )
            last = session.execute(
                select(IntegrityCheck)
                .where(IntegrityCheck.list_id == row.id)
                .order_by(IntegrityCheck.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            out.append(
                ListOverview(
                    id=row.id,
                    label=row.label,
                    mode=row.mode,
                    status=row.status,
                    method=row.method,
                    algorithm=row.algorithm,
                    algorithm_version=row.algorithm_version,
                    seed_id=row.seed_id,
                    version=row.current_version,
                    slot_count=versions[-1].slot_count,
                    content_sha256=versions[-1].content_sha256,
                    storage_sha256=versions[-1].storage_sha256,
                    generated_at=row.generated_at,
                    generated_by=row.generated_by_name,
                    approved=_manifestation(session, row.approved_signature_id),
                    activated=_manifestation(session, row.activated_signature_id),
                    last_check=last,
                    strata=_states(session, row.id),
                    versions=versions,
                    parameters=json.loads(row.parameters_json),
                )
            )
        return out


def active_list(session: Session, trial_id: int, mode: ListMode) -> RandomizationList | None:
    return session.execute(
        select(RandomizationList).where(
            RandomizationList.trial_id == trial_id,
            RandomizationList.mode == mode.value,
            RandomizationList.status == ListStatus.ACTIVE.value,
        )
    ).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class BlindedStratum:
    """What every role of the trial may see of the list: no capacity figure, no position, no arm,
    no block (RND-12)."""

    key: str
    levels: dict[str, str]
    randomized: int
    state: str


def stratum_overview(ctx: ServiceContext, trial_code: str) -> list[BlindedStratum]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        row = active_list(session, trial.id, instance_mode(ctx.settings.env))
        if row is None:
            return []
        return [
            BlindedStratum(s.key, dict(part.split("=", 1) for part in s.key.split(";")), s.used, s.state)
            for s in _states(session, row.id)
        ]


def review_counts(
    ctx: ServiceContext, reader: Actor, trial_code: str, list_id: int
) -> dict[str, dict[str, int]]:
    """Slots per stratum and arm, for the statistician's QC review before approval (RND-02).
    Opening the list is an audited read of every arm (BLD-08)."""
    row = _list(ctx, trial_code, list_id)
    counts: dict[str, dict[str, int]] = {}
    opened = arm_access.open_list_slots(ctx, reader, trial_code, row.id, row.label, "QC review of the list")
    if opened.unreadable:
        raise ListIntegrityFailure(
            f"{len(opened.unreadable)} slot(s) do not open (altered?): run the integrity check"
        )
    for slot in opened.slots:
        counts.setdefault(slot.stratum, {}).setdefault(slot.arm, 0)
        counts[slot.stratum][slot.arm] += 1
    return counts


def _list(ctx: ServiceContext, trial_code: str, list_id: int) -> RandomizationList:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        row = session.get(RandomizationList, list_id)
        if row is None or row.trial_id != trial.id:
            raise NotFound(f"no list {list_id} in {trial_code}")
        return row


# --- approval and activation (RND-02, ACC-12) -------------------------------------------------

APPROVAL_MEANING = "randomization list approval"
ACTIVATION_MEANING = "randomization list activation"
EXTENSION_MEANING = "randomization list extension"
EXPORT_MEANING = "randomization list export"


def _signed_content(row: RandomizationList, version: ListVersion) -> dict[str, object]:
    return {
        "label": row.label,
        "version": version.version,
        "content_sha256": version.content_sha256,
        "storage_sha256": version.storage_sha256,
        "seed_id": row.seed_id,
        "algorithm": f"{row.algorithm}/{row.algorithm_version}",
    }


def _locked_list(
    session: Session, trial_code: str, list_id: int
) -> tuple[Trial, RandomizationList, ListVersion]:
    trial = get_trial(session, trial_code)
    row = session.execute(
        select(RandomizationList).where(RandomizationList.id == list_id).with_for_update()
    ).scalar_one_or_none()
    if row is None or row.trial_id != trial.id:
        raise NotFound(f"no list {list_id} in {trial_code}")
    version = session.execute(
        select(ListVersion).where(ListVersion.list_id == row.id, ListVersion.version == row.current_version)
    ).scalar_one()
    return trial, row, version


def _signing(
    ctx: ServiceContext, actor: Actor, trial_code: str, meaning: str, object_id: str, work: Callable[[], None]
) -> None:
    with signatures.failures_recorded(
        ctx,
        actor=actor,
        chain=trial_code,
        meaning=meaning,
        object_type="randomization_list",
        object_id=object_id,
    ):
        work()


def approve_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, list_id: int, request: signatures.SignatureRequest
) -> None:
    """The statistician's signed QC approval of a DRAFT list (RND-02). Required before activation."""

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = _locked_list(session, trial_code, list_id)
            if row.status != ListStatus.DRAFT.value or row.approved_signature_id is not None:
                raise Conflict(
                    f"{row.label} is {row.status}{' and already approved' if row.approved_signature_id else ''}"
                )
            _require_intact(ctx, session, row, version)
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
                content=_signed_content(row, version),
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

    _signing(ctx, actor, trial_code, APPROVAL_MEANING, str(list_id), work)


def activate_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, list_id: int, request: signatures.SignatureRequest
) -> None:
    """Put an approved list into use (signed). The trial becomes ACTIVE. A TEST list can never be
    activated on a production instance, nor the reverse (RND-13)."""

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = _locked_list(session, trial_code, list_id)
            if row.mode != instance_mode(ctx.settings.env).value:
                raise ListEnvironmentMismatch(
                    f"a {row.mode.upper()} list cannot be activated on a {ctx.settings.env.value} instance"
                )
            if row.status != ListStatus.DRAFT.value:
                raise Conflict(f"{row.label} is {row.status}, not draft")
            if row.approved_signature_id is None:
                raise Conflict(f"{row.label} has no signed QC approval yet (RND-02)")
            _require_intact(ctx, session, row, version)
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
                content=_signed_content(row, version),
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
            if trial.status == TrialStatus.SETUP.value:
                trial.status = TrialStatus.ACTIVE.value
                ctx.audit.record(
                    session,
                    actor=actor,
                    chain=trial.code,
                    action=Action.TRIAL_STATUS_CHANGED,
                    object_type="trial",
                    object_id=trial.code,
                    old={"status": "setup"},
                    new={"status": "active"},
                    reason="randomization list activated",
                    at=now,
                )

    _signing(ctx, actor, trial_code, ACTIVATION_MEANING, str(list_id), work)


# --- integrity (RND-10, ACC-15) ---------------------------------------------------------------


def stratum_storage_digest(session: Session, stratum_id: int) -> str:
    return storage_digest(
        session.execute(
            select(Slot.position, Slot.randomization_number, Slot.sealed)
            .where(Slot.stratum_id == stratum_id)
            .order_by(Slot.position)
        )
    )


def storage_digest(slots: Iterable[tuple[int, str, bytes]]) -> str:
    """The storage digest of one stratum from its (position, randomization number, sealed) rows,
    in position order: what `Stratum.storage_sha256` records."""
    hasher = hashlib.sha256()
    for position, number, sealed in slots:
        hasher.update(_storage_line(position, number, bytes(sealed)))
    return hasher.hexdigest()


def _storage_problems(session: Session, row: RandomizationList, version: ListVersion) -> list[str]:
    problems = []
    digests = []
    for stratum in session.execute(select(Stratum).where(Stratum.list_id == row.id)).scalars():
        actual = stratum_storage_digest(session, stratum.id)
        digests.append((stratum.key, actual))
        if actual != stratum.storage_sha256:
            problems.append(f"stratum {stratum.key}: stored slots differ from the recorded digest")
    if _list_storage_digest(digests) != version.storage_sha256:
        problems.append(f"{row.label} v{version.version}: the strata differ from the recorded list digest")
    count = session.execute(select(func.count()).select_from(Slot).where(Slot.list_id == row.id)).scalar_one()
    if count != version.slot_count:
        problems.append(f"{row.label}: {count} slots stored, {version.slot_count} recorded")
    return problems + _signature_problems(session, row)


def _signature_problems(session: Session, row: RandomizationList) -> list[str]:
    """The approval, activation and extension signatures still match the versions they signed, so
    that rewriting the slots AND every recorded digest is caught as well (21 CFR 11.70)."""
    versions = list(
        session.execute(
            select(ListVersion).where(ListVersion.list_id == row.id).order_by(ListVersion.version)
        ).scalars()
    )
    problems = []
    first = versions[0] if versions else None
    for signature_id, what in (
        (row.approved_signature_id, "approval"),
        (row.activated_signature_id, "activation"),
    ):
        signature = session.get(Signature, signature_id) if signature_id else None
        if (
            signature is not None
            and first is not None
            and not signatures.verify(signature, _signed_content(row, first))
        ):
            problems.append(f"{row.label}: the {what} signature no longer matches version 1")
    for previous, version in pairwise(versions):
        signature = session.get(Signature, version.signature_id) if version.signature_id else None
        content = {**_signed_content(row, version), "added": version.slot_count - previous.slot_count}
        if signature is not None and not signatures.verify(signature, content):
            problems.append(
                f"{row.label}: the extension signature of version {version.version} no longer matches"
            )
    return problems


def _require_intact(
    ctx: ServiceContext, session: Session, row: RandomizationList, version: ListVersion
) -> None:
    problems = _storage_problems(session, row, version)
    if problems:
        raise ListIntegrityFailure("; ".join(problems))


@dataclass(frozen=True, slots=True)
class IntegrityResult:
    label: str
    ok: bool
    problems: tuple[str, ...]


def check_integrity(
    ctx: ServiceContext, checked_by: Actor, trial_code: str | None = None
) -> list[IntegrityResult]:
    """Recompute the storage digests of every non-retired list (at start-up, daily from cron, on
    demand). Each result is recorded; a failure is audited and blocks randomization from the list
    until a later check passes (RND-10, ACC-15). Needs no key and opens no arm."""
    now = ctx.now()
    results = []
    with ctx.db.unit_of_work() as session:
        query = (
            select(RandomizationList, Trial.code)
            .join(Trial, Trial.id == RandomizationList.trial_id)
            .where(RandomizationList.status != ListStatus.RETIRED.value)
        )
        if trial_code is not None:
            query = query.where(Trial.code == trial_code)
        for row, code in session.execute(query).all():
            version = session.execute(
                select(ListVersion).where(
                    ListVersion.list_id == row.id, ListVersion.version == row.current_version
                )
            ).scalar_one()
            problems = _storage_problems(session, row, version)
            session.add(
                IntegrityCheck(
                    list_id=row.id,
                    at=now,
                    ok=not problems,
                    detail="; ".join(problems) or "intact",
                    checked_by=checked_by.name,
                )
            )
            if problems:
                ctx.audit.record(
                    session,
                    actor=checked_by,
                    chain=code,
                    action=Action.LIST_INTEGRITY_FAILED,
                    object_type="randomization_list",
                    object_id=row.label,
                    # Counts of slots are design information (RND-12): the details are sealed.
                    new={"problem_count": len(problems)},
                    sealed={"problems": problems[:20]},
                    at=now,
                )
            results.append(IntegrityResult(row.label, not problems, tuple(problems)))
    return results


def list_blocked(session: Session, list_id: int) -> bool:
    last = session.execute(
        select(IntegrityCheck.ok)
        .where(IntegrityCheck.list_id == list_id)
        .order_by(IntegrityCheck.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return last is False


# --- verification by regeneration (RND-03) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    label: str
    ok: bool
    slots: int
    problems: tuple[str, ...]


def verify_lists(ctx: ServiceContext, reader: Actor, trial_code: str) -> list[VerifyResult]:
    """Regenerate every list of the trial from its seed and parameters and compare it, slot by slot,
    with what is stored, and with the content digest of every version. Opening the seed and the
    slots is an audited read. Minimization lists have no slots; their decisions are replayed when
    subjects exist."""
    results = []
    for overview in lists(ctx, trial_code):
        row = _list(ctx, trial_code, overview.id)
        if row.method != "permuted_blocks":
            results.append(VerifyResult(row.label, True, 0, ()))
            continue
        seed = arm_access.open_list_seed(ctx, reader, trial_code, row.label, row.seed_sealed, "verify-list")
        opened = arm_access.open_list_slots(ctx, reader, trial_code, row.id, row.label, "verify-list")
        stored = opened.slots
        design = BlockDesign(
            arms=tuple(overview.parameters["arms"]),  # type: ignore[arg-type]
            ratio=tuple(overview.parameters["ratio"]),  # type: ignore[arg-type]
            block_sizes=tuple(overview.parameters["randomization"]["block_sizes"]),  # type: ignore[index]
        )
        problems: list[str] = [
            f"slot {where}: does not open (altered or moved)" for where in opened.unreadable
        ]
        by_stratum: dict[str, list[arm_access.OpenedSlot]] = {}
        for slot in stored:
            by_stratum.setdefault(slot.stratum, []).append(slot)
        for state in overview.strata:
            expected = list(
                islice(iter_slots_for(seed, design, trial_code, row.label, state.key), state.capacity)
            )
            actual = by_stratum.get(state.key, [])
            for want, have in zip(expected, actual, strict=False):
                if (want.position, want.arm, want.block, want.block_size) != (
                    have.position,
                    have.arm,
                    have.block,
                    have.block_size,
                ):
                    problems.append(
                        f"stratum {state.key}, position {have.position}: stored slot differs from the "
                        "regenerated list"
                    )
                    break
            if len(actual) != len(expected):
                problems.append(
                    f"stratum {state.key}: {len(actual)} slots stored, {len(expected)} regenerated"
                )
        for version in overview.versions:
            content = _content_digest(seed, design, trial_code, row.label, stored, version.version)
            if content != version.content_sha256:
                problems.append(f"version {version.version}: content digest differs from the recorded one")
        with ctx.db.unit_of_work() as session:
            ctx.audit.record(
                session,
                actor=reader,
                chain=trial_code,
                action=Action.LIST_VERIFIED,
                object_type="randomization_list",
                object_id=row.label,
                # RND-12: list lengths and positions are design information: sealed.
                new={"ok": not problems, "problem_count": len(problems)},
                sealed={"slots": len(stored), "problems": problems[:20]},
                at=ctx.now(),
            )
        results.append(VerifyResult(row.label, not problems, len(stored), tuple(problems)))
    return results


def iter_slots_for(
    seed: bytes, design: BlockDesign, trial_code: str, label: str, key: str
) -> Iterator[ListSlot]:
    return iter_slots(seed, design, trial_code=trial_code, list_label=label, stratum=key)


def _content_digest(
    seed: bytes,
    design: BlockDesign,
    trial_code: str,
    label: str,
    stored: list[arm_access.OpenedSlot],
    version: int,
) -> str:
    """The content digest of `version` recomputed from the regenerated list (slots up to that version)."""
    counts: dict[str, int] = {}
    for slot in stored:
        if slot.list_version <= version:
            counts[slot.stratum] = counts.get(slot.stratum, 0) + 1
    hasher = hashlib.sha256()
    for key in sorted(counts):
        for regenerated in islice(iter_slots_for(seed, design, trial_code, label, key), counts[key]):
            line = ListRow(
                key, regenerated.position, regenerated.block, regenerated.block_size, regenerated.arm
            )
            hasher.update(canonical_line(line).encode())
    return hasher.hexdigest()


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
            trial, row, version = _locked_list(session, trial_code, list_id)
            if row.status != ListStatus.ACTIVE.value or row.method != "permuted_blocks":
                raise Conflict(
                    f"only an active permuted-block list can be extended ({row.label} is {row.status})"
                )
            _require_intact(ctx, session, row, version)
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
                        _slot_record(slot.arm, slot.block, slot.block_size),
                        _slot_binding(trial.code, row.label, stratum.key, slot.position),
                    )
                    rows.append((row.id, stratum.id, slot.position, new_version, numbers.next(), sealed))
                if rows:
                    _insert_slots(session, rows)
                    stratum.capacity = len(sequence)
                    stratum.storage_sha256 = stratum_storage_digest(session, stratum.id)
                added_total += len(fresh)
            storage = _list_storage_digest((s.key, s.storage_sha256) for s in all_strata)
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
                content={**_signed_content(row, new), "added": added_total},
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

    _signing(ctx, actor, trial_code, EXTENSION_MEANING, str(list_id), work)
    return result[0]


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
    row = _list(ctx, trial_code, list_id)
    overview = next(o for o in lists(ctx, trial_code) if o.id == list_id)

    def work() -> None:
        with ctx.db.unit_of_work() as session:
            trial, locked, version = _locked_list(session, trial_code, list_id)
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
                content=_signed_content(locked, version),
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

    _signing(ctx, actor, trial_code, EXPORT_MEANING, str(list_id), work)
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


# --- quality report (RND-01, REP-01) ----------------------------------------------------------


def quality_report(ctx: ServiceContext, trial_code: str) -> tuple[TrialDefinition, QualityReport]:
    """The design quality report for the trial's configured design and sample size, beside the
    usual alternatives (statistician only: it shows the block sizes)."""
    from allocator.randomization import quality  # noqa: PLC0415 - numpy is imported only when a report is asked for

    with ctx.db.reading() as session:
        definition = current_definition(session, get_trial(session, trial_code))
    if len(definition.arms) != 2 or definition.ratio_total != 2:
        raise Conflict("the quality report covers two-arm 1:1 designs only")
    randomization = definition.randomization
    if isinstance(randomization, BlockRandomization):
        design: object = quality.PermutedBlocks(tuple(randomization.block_sizes))
    else:
        raise Conflict(
            "the quality report covers permuted-block designs only (minimization is simulated elsewhere)"
        )
    report = quality.quality_report(
        design,  # type: ignore[arg-type]
        definition.target_sample_size,
        quality.standard_alternatives(design),  # type: ignore[arg-type]
        simulation_seed=20260302,
        simulations=20_000,
        stratum_sizes=quality.stratum_sizes_for(definition.target_sample_size, len(definition.strata())),
    )
    return definition, report


@dataclass(frozen=True, slots=True)
class QualityDocument:
    code: str
    text: str
    balance_svg: str
    distribution_svg: str


def quality_document(ctx: ServiceContext, trial_code: str) -> QualityDocument:
    from allocator.printing import quality_report as printing_quality_report  # noqa: PLC0415 - numpy only when asked for

    definition, report = quality_report(ctx, trial_code)
    return QualityDocument(
        code=definition.code,
        text=printing_quality_report.render_text(report),
        balance_svg=printing_quality_report.render_svg_balance(report),
        distribution_svg=printing_quality_report.render_svg_imbalance_distribution(report),
    )


def quality_pdf(ctx: ServiceContext, trial_code: str) -> bytes:
    from allocator.printing import quality_report as printing_quality_report  # noqa: PLC0415 - numpy only when asked for
    from allocator.version import __version__  # noqa: PLC0415

    definition, report = quality_report(ctx, trial_code)
    return printing_quality_report.render_pdf(
        report,
        title=f"Randomization design quality - {definition.code}",
        generated_at=ctx.now().strftime("%Y-%m-%d %H:%M UTC"),
        software_version=__version__,
        test_mode=not ctx.settings.is_production,
    )
