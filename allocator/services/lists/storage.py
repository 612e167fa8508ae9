"""How a list is stored and signed, shared by every list use case: strata, slot and seed
bindings, slot records and storage digests, the signed content of a version, the list row lock,
the integrity checks a signed step requires, and the errors they raise."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator
from itertools import islice, pairwise

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Actor
from allocator.models import (
    ListExtensionProposal,
    ListVersion,
    RandomizationList,
    Signature,
    Slot,
    Stratum,
    Trial,
)
from allocator.randomization import BlockDesign, iter_slots
from allocator.randomization.blocks import ListRow, canonical_line
from allocator.randomization.blocks import Slot as ListSlot
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound
from allocator.services.lookups import get_trial
from allocator.trialdef import BlockRandomization, TrialDefinition, stratum_key

ProgressCallback = Callable[[int, int], None]


class ListEnvironmentMismatch(Conflict):
    slug = "list-environment-mismatch"
    title = "TEST and PRODUCTION lists never mix"


class ListIntegrityFailure(Conflict):
    slug = "list-integrity-failure"
    title = "The randomization list failed its integrity check"


# --- strata, bindings and slot records -----------------------------------------------------------


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


def list_strata(definition: TrialDefinition) -> list[tuple[str, dict[str, str]]]:
    return [(stratum_key(combo), dict(combo)) for combo in definition.strata()]


def slot_binding(trial: str, label: str, stratum: str, position: int) -> crypto.Binding:
    return crypto.Binding(trial=trial, table="slot", row=f"{label}|{stratum}|{position}", column="sealed")


def seed_binding(trial: str, label: str) -> crypto.Binding:
    return crypto.Binding(trial=trial, table="randomization_list", row=label, column="seed")


def seed_id(seed: bytes) -> str:
    """Names a seed without revealing it (a 256-bit seed cannot be recovered from its digest)."""
    return hashlib.sha256(b"allocator/seed-id/v1|" + seed).hexdigest()[:32]


def storage_line(position: int, number: str, sealed: bytes) -> bytes:
    return f"{position}\t{number}\t{hashlib.sha256(sealed).hexdigest()}\n".encode("ascii")


def list_storage_digest(stratum_digests: Iterable[tuple[str, str]]) -> str:
    hasher = hashlib.sha256()
    for key, digest in sorted(stratum_digests):
        hasher.update(f"{key}\t{digest}\n".encode())
    return hasher.hexdigest()


def slot_record(arm: str, block: int, block_size: int) -> str:
    """The sealed JSON of a slot, exactly as json.dumps(sort_keys=True, separators=(",", ":")) would
    write it (arm codes are plain upper-case identifiers), without its cost per slot."""
    return f'{{"arm":"{arm}","block":{block},"block_size":{block_size}}}'


_SLOT_COLUMNS = "list_id, stratum_id, position, list_version, randomization_number, sealed, mac"
SlotValues = tuple[int, int, int, int, str, bytes, bytes]


def insert_slots(session: Session, rows: list[SlotValues]) -> None:
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
            cursor.executemany(f"INSERT INTO slot ({_SLOT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608 - constant column list
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


def list_by_id(ctx: ServiceContext, trial_code: str, list_id: int) -> RandomizationList:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        row = session.get(RandomizationList, list_id)
        if row is None or row.trial_id != trial.id:
            raise NotFound(f"no list {list_id} in {trial_code}")
        return row


def signed_content(row: RandomizationList, version: ListVersion) -> dict[str, object]:
    return {
        "label": row.label,
        "version": version.version,
        "content_sha256": version.content_sha256,
        "storage_sha256": version.storage_sha256,
        "seed_id": row.seed_id,
        "algorithm": f"{row.algorithm}/{row.algorithm_version}",
    }


def locked_list(
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


def list_signing(
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


# --- storage digests and the integrity a signed step requires (RND-10, ACC-15) ------------------


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
        hasher.update(storage_line(position, number, bytes(sealed)))
    return hasher.hexdigest()


def storage_problems(session: Session, row: RandomizationList, version: ListVersion) -> list[str]:
    problems = []
    digests = []
    for stratum in session.execute(select(Stratum).where(Stratum.list_id == row.id)).scalars():
        actual = stratum_storage_digest(session, stratum.id)
        digests.append((stratum.key, actual))
        if actual != stratum.storage_sha256:
            problems.append(f"stratum {stratum.key}: stored slots differ from the recorded digest")
    if list_storage_digest(digests) != version.storage_sha256:
        problems.append(f"{row.label} v{version.version}: the strata differ from the recorded list digest")
    count = session.execute(select(func.count()).select_from(Slot).where(Slot.list_id == row.id)).scalar_one()
    if count != version.slot_count:
        problems.append(f"{row.label}: {count} slots stored, {version.slot_count} recorded")
    return problems + signature_problems(session, row)


def signature_problems(session: Session, row: RandomizationList) -> list[str]:
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
            and not signatures.verify(signature, signed_content(row, first))
        ):
            problems.append(f"{row.label}: the {what} signature no longer matches version 1")
    proposals = {
        p.applied_version: p
        for p in session.execute(
            select(ListExtensionProposal).where(
                ListExtensionProposal.list_id == row.id, ListExtensionProposal.status == "applied"
            )
        ).scalars()
    }
    for previous, version in pairwise(versions):
        signature = session.get(Signature, version.signature_id) if version.signature_id else None
        content: dict[str, object] = {
            **signed_content(row, version),
            "added": version.slot_count - previous.slot_count,
        }
        proposal = proposals.get(version.version)
        if proposal is not None:  # RND-10: the approval names the proposal and its signature's hash
            first_signature = session.get(Signature, proposal.proposal_signature_id)
            proposed = {
                "label": row.label,
                "from_version": proposal.from_version,
                "additional": proposal.additional,
                "strata": proposal.strata if proposal.strata else "all",
                "reason": proposal.reason,
            }
            if first_signature is None or not signatures.verify(first_signature, proposed):
                problems.append(
                    f"{row.label}: the proposal signature of version {version.version} no longer matches"
                )
            content["proposal"] = proposal.id
            content["proposal_signature_sha256"] = first_signature.content_sha256 if first_signature else ""
        if signature is not None and not signatures.verify(signature, content):
            problems.append(
                f"{row.label}: the extension signature of version {version.version} no longer matches"
            )
    return problems


def require_intact(
    ctx: ServiceContext, session: Session, row: RandomizationList, version: ListVersion
) -> None:
    problems = storage_problems(session, row, version)
    if problems:
        raise ListIntegrityFailure("; ".join(problems))


def iter_slots_for(
    seed: bytes, design: BlockDesign, trial_code: str, label: str, key: str
) -> Iterator[ListSlot]:
    return iter_slots(seed, design, trial_code=trial_code, list_label=label, stratum=key)


def content_digest(
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
