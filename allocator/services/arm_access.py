"""The single path to an arm (BLD-08): every function that opens an arm, a kit -> arm entry or a
sealed audit value lives here, and each writes an `arm.read` audit entry — who, when, what, why —
in the same unit of work *before* returning anything. A static test fails if any other module
calls `crypto.open_arm` or opens LISTS-sealed JSON.

Blinded roles never reach these functions: callers hold an unblinded permission, checked by the
route guard, and pass the reader as the audit actor.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import AuditEvent, Kit, Slot, Stratum
from allocator.services.context import ServiceContext


def open_audit_values(
    ctx: ServiceContext, reader: Actor, chain: str, events: Sequence[AuditEvent]
) -> dict[int, dict[str, Any]]:
    """Open the sealed values of audit entries for an unblinded viewer (AUD-05). One `arm.read`
    entry records which entries were opened."""
    opened: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.sealed_values is None:
            continue
        binding = crypto.Binding(
            trial=chain, table="audit_event", row=f"{chain}:{event.seq}", column="sealed_values"
        )
        value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, event.sealed_values, binding)
        opened[event.seq] = value if isinstance(value, dict) else {"value": value}
    if opened:
        with ctx.db.unit_of_work() as session:
            ctx.audit.record(
                session,
                actor=reader,
                chain=chain,
                action=Action.ARM_READ,
                object_type="audit_event",
                object_id=",".join(str(seq) for seq in sorted(opened))[:64],
                new={"entries": sorted(opened), "purpose": "unblinded audit-trail view"},
                at=ctx.now(),
            )
    return opened


@dataclass(frozen=True, slots=True)
class OpenedSlot:
    stratum: str
    position: int
    randomization_number: str
    arm: str
    block: int
    block_size: int
    list_version: int


def _read(
    ctx: ServiceContext,
    reader: Actor,
    chain: str,
    object_type: str,
    object_id: str,
    purpose: str,
    detail: dict[str, Any],
) -> None:
    """Record the read before anything is opened: if the audit entry cannot be written, nothing is
    revealed (AUD-04, ACC-15)."""
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=reader,
            chain=chain,
            action=Action.ARM_READ,
            object_type=object_type,
            object_id=object_id,
            new={"purpose": purpose, **detail},
            at=ctx.now(),
        )


@dataclass(frozen=True, slots=True)
class OpenedList:
    slots: list[OpenedSlot]
    unreadable: list[str]  # "stratum/position" of every slot whose ciphertext does not open


def open_list_slots(
    ctx: ServiceContext, reader: Actor, trial_code: str, list_id: int, label: str, purpose: str
) -> OpenedList:
    """Every slot of a list, opened (statistician review, verification, export). One audit entry.
    A slot that does not open (altered, moved) is reported, not raised, so that verification can
    name it."""
    _read(ctx, reader, trial_code, "randomization_list", label, purpose, {"scope": "every slot"})
    with ctx.db.reading() as session:
        rows = session.execute(
            select(Stratum.key, Slot.position, Slot.randomization_number, Slot.sealed, Slot.list_version)
            .join(Stratum, Stratum.id == Slot.stratum_id)
            .where(Slot.list_id == list_id)
            .order_by(Stratum.key, Slot.position)
        ).all()
    opened = []
    unreadable = []
    for key, position, number, sealed, version in rows:
        binding = crypto.Binding(
            trial=trial_code, table="slot", row=f"{label}|{key}|{position}", column="sealed"
        )
        try:
            value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, sealed, binding)
        except crypto.SealError:
            unreadable.append(f"{key}/{position}")
            continue
        if not isinstance(value, dict):
            unreadable.append(f"{key}/{position}")
            continue
        opened.append(
            OpenedSlot(
                key,
                position,
                number,
                str(value["arm"]),
                int(value["block"]),
                int(value["block_size"]),
                version,
            )
        )
    return OpenedList(opened, unreadable)


def open_list_seed(
    ctx: ServiceContext, reader: Actor, trial_code: str, label: str, sealed_seed: bytes, purpose: str
) -> bytes:
    """The secret seed of a list (regeneration, independent verification). Audited like an arm."""
    _read(ctx, reader, trial_code, "randomization_list", label, purpose, {"scope": "seed"})
    binding = crypto.Binding(trial=trial_code, table="randomization_list", row=label, column="seed")
    return crypto.open_sealed(ctx.ring, crypto.Purpose.LISTS, sealed_seed, binding)


def kit_arms_in(
    session: Session, ctx: ServiceContext, reader: Actor, trial_code: str, kits: Sequence[Kit], purpose: str
) -> dict[int, str]:
    """Open the arms of `kits` inside the caller's transaction; one `arm.read` entry is written
    there first, naming `purpose`. For machine decisions (balancing a shipment), whose arms are
    shown to nobody, and for printing the sealed code-break sheets, which only the unblinded
    statistician or pharmacist receives."""
    if not kits:
        return {}
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="kit",
        object_id=f"{len(kits)} kits",
        new={"purpose": purpose, "kits": len(kits)},
        at=ctx.now(),
    )
    return {
        kit.id: crypto.open_arm(
            ctx.ring,
            kit.sealed_arm,
            crypto.Binding(trial=trial_code, table="kit", row=kit.kit_number, column="sealed_arm"),
        )
        for kit in kits
    }


@dataclass(frozen=True, slots=True)
class SealedKit:
    """A kit as an allocation needs it: its id, its number and its sealed arm."""

    id: int
    kit_number: str
    sealed_arm: bytes


def kits_by_arm_until(
    session: Session,
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    batches: Iterable[Sequence[SealedKit]],
    arms: Sequence[str],
    per_arm: int,
    purpose: str,
) -> dict[str, list[SealedKit]]:
    """Open the arms of kits one by one, batch after batch, in the order given, until every arm of
    `arms` has `per_arm` kits (the kits after that one, locked with their batch, stay unopened) or
    the batches run out; return at most `per_arm` kits per arm, the first
    ones met. Fed with kits in a uniformly random order, each arm's kits are a uniform random
    choice among that arm's kits, while only a handful are opened (BLD-04). Inside the caller's
    transaction; one `arm.read` entry records the purpose and the share asked (`per_arm`, as "share": a key
    naming an arm would trip the leak checks), never how many kits were
    opened: that count depends on the arms of the stock (a site short of one arm opens them all),
    so it would tell a reader of the audit trail something about the stock's composition (BLD-04).
    The arms are never shown to anyone."""
    grouped: dict[str, list[SealedKit]] = {arm: [] for arm in arms}
    opened = 0
    short = len(arms) * per_arm  # kits still wanted: opening stops as soon as none is (issue 16)
    for batch in batches:
        for kit in batch:
            opened += 1
            arm = crypto.open_arm(
                ctx.ring,
                kit.sealed_arm,
                crypto.Binding(trial=trial_code, table="kit", row=kit.kit_number, column="sealed_arm"),
            )
            group = grouped.setdefault(arm, [])
            if len(group) < per_arm:
                group.append(kit)
                short -= arm in arms
                if short <= 0:
                    break
        if short <= 0:
            break
    if opened:
        ctx.audit.record(
            session,
            actor=reader,
            chain=trial_code,
            action=Action.ARM_READ,
            object_type="kit",
            object_id="kit draw",
            new={"purpose": purpose, "share": per_arm},  # the share asked of each group of kits
            at=ctx.now(),
        )
    return grouped


@dataclass(frozen=True, slots=True)
class SlotRecord:
    arm: str
    block: int
    block_size: int


def slot_record_in(
    session: Session,
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    label: str,
    stratum: str,
    *,
    position: int,
    randomization_number: str,
    sealed: bytes,
) -> SlotRecord:
    """Open the slot being allocated (in the allocation's transaction). The allocation's own audit
    entry carries the arm sealed; this `arm.read` entry records that the machine read it."""
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="slot",
        object_id=randomization_number,
        new={"purpose": "allocation"},
        at=ctx.now(),
    )
    binding = crypto.Binding(
        trial=trial_code, table="slot", row=f"{label}|{stratum}|{position}", column="sealed"
    )
    value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, sealed, binding)
    if not isinstance(value, dict):
        raise crypto.SealError(f"slot {stratum}/{position} of {label} does not hold a slot record")
    return SlotRecord(str(value["arm"]), int(value["block"]), int(value["block_size"]))


def decision_binding(trial_code: str, label: str, arrival: int) -> crypto.Binding:
    return crypto.Binding(
        trial=trial_code, table="minimization_decision", row=f"{label}|{arrival}", column="sealed"
    )


def minimization_history_in(
    session: Session, ctx: ServiceContext, reader: Actor, trial_code: str, minimization_list: Any
) -> list[tuple[dict[str, str], str]]:
    """The (levels, arm) of every earlier minimization arrival, in order: the state the next
    decision depends on. A machine read, audited once per allocation."""
    from allocator.models import MinimizationDecision  # noqa: PLC0415 - avoids widening the module's imports

    rows = list(
        session.execute(
            select(MinimizationDecision)
            .where(MinimizationDecision.list_id == minimization_list.id)
            .order_by(MinimizationDecision.arrival)
        ).scalars()
    )
    if not rows:
        return []
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="randomization_list",
        object_id=minimization_list.label,
        new={"purpose": "minimization state", "arrivals": len(rows)},
        at=ctx.now(),
    )
    history = []
    for row in rows:
        value = crypto.open_json(
            ctx.ring,
            crypto.Purpose.LISTS,
            row.sealed,
            decision_binding(trial_code, minimization_list.label, row.arrival),
        )
        if not isinstance(value, dict):
            raise crypto.SealError(f"minimization decision {row.arrival} is not readable")
        history.append((dict(value["levels"]), str(value["decision"]["arm"])))
    return history


def list_seed_in(
    session: Session,
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    randomization_list: Any,
    purpose: str,
) -> bytes:
    """The list's seed inside the caller's transaction (minimization draws)."""
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="randomization_list",
        object_id=randomization_list.label,
        new={"purpose": purpose, "scope": "seed"},
        at=ctx.now(),
    )
    binding = crypto.Binding(
        trial=trial_code, table="randomization_list", row=randomization_list.label, column="seed"
    )
    return crypto.open_sealed(ctx.ring, crypto.Purpose.LISTS, randomization_list.seed_sealed, binding)


def subject_arm_in(
    session: Session, ctx: ServiceContext, reader: Actor, trial_code: str, subject: Any, purpose: str
) -> str:
    """The arm allocated to a subject (kit replacement, unblinding), read from its slot or its
    minimization decision. Audited in the caller's transaction."""
    from allocator.models import MinimizationDecision, RandomizationList  # noqa: PLC0415

    randomization_list = session.get(RandomizationList, subject.list_id)
    if randomization_list is None:  # pragma: no cover - a foreign key guarantees it
        raise LookupError("the subject's list is missing")
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="subject",
        object_id=subject.subject_number,
        new={"purpose": purpose},
        at=ctx.now(),
    )
    if subject.slot_id is not None:
        slot = session.get(Slot, subject.slot_id)
        stratum = session.get(Stratum, slot.stratum_id) if slot else None
        if slot is None or stratum is None:  # pragma: no cover - foreign keys guarantee them
            raise LookupError("the subject's slot is missing")
        binding = crypto.Binding(
            trial=trial_code,
            table="slot",
            row=f"{randomization_list.label}|{stratum.key}|{slot.position}",
            column="sealed",
        )
        value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, slot.sealed, binding)
        if not isinstance(value, dict):
            raise crypto.SealError("the subject's slot is not readable")
        return str(value["arm"])
    decision = session.get(MinimizationDecision, subject.minimization_decision_id)
    if decision is None:  # pragma: no cover
        raise LookupError("the subject's minimization decision is missing")
    value = crypto.open_json(
        ctx.ring,
        crypto.Purpose.LISTS,
        decision.sealed,
        decision_binding(trial_code, randomization_list.label, decision.arrival),
    )
    if not isinstance(value, dict):
        raise crypto.SealError("the subject's minimization decision is not readable")
    return str(value["decision"]["arm"])


def id_ranges(ids: Sequence[int]) -> str:
    """Sorted ids as ranges: [1, 2, 3, 5, 7, 8] -> "1-3,5,7-8"."""
    parts: list[str] = []
    start = previous = None
    for current in ids:
        if previous is not None and current == previous + 1:
            previous = current
            continue
        if start is not None:
            parts.append(f"{start}-{previous}" if previous != start else f"{start}")
        start = previous = current
    if start is not None:
        parts.append(f"{start}-{previous}" if previous != start else f"{start}")
    return ",".join(parts)


def subject_arms_in(
    session: Session,
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    trial_id: int,
    purpose: str,
    *,
    subject_ids: Collection[int],
    selection: str,
) -> dict[int, str]:
    """The arms allocated to the trial's subjects of `subject_ids`, by subject id, for a listing, an
    export or a report: read from their slots and minimization decisions in two statements, whatever
    the number of subjects. One `arm.read` entry, written in the caller's transaction before any
    arm is opened, records the purpose, how the caller chose the subjects (`selection`: the whole
    trial, or a report's filter), how many were read, the first and last of them in subject order
    and the ids read as ranges ("1-4999,5001-5002"): the exact set, also when a subject randomized
    meanwhile (an interim package, on an active trial) is not among them (issue 21: `subject_arm_in`
    for each of 5,000 subjects cost three statements and an audit entry each; naming every subject
    made an entry of 60 KB that every audit-trail page showed)."""
    from allocator.models import MinimizationDecision, RandomizationList, Subject  # noqa: PLC0415

    wanted = set(subject_ids)
    by_slot = session.execute(
        select(
            Subject.id,
            Subject.subject_number,
            RandomizationList.label,
            Stratum.key,
            Slot.position,
            Slot.sealed,
        )
        .join(Slot, Slot.id == Subject.slot_id)
        .join(Stratum, Stratum.id == Slot.stratum_id)
        .join(RandomizationList, RandomizationList.id == Subject.list_id)
        .where(Subject.trial_id == trial_id)
    ).all()
    by_decision = session.execute(
        select(
            Subject.id,
            Subject.subject_number,
            RandomizationList.label,
            MinimizationDecision.arrival,
            MinimizationDecision.sealed,
        )
        .join(MinimizationDecision, MinimizationDecision.id == Subject.minimization_decision_id)
        .join(RandomizationList, RandomizationList.id == Subject.list_id)
        .where(Subject.trial_id == trial_id, Subject.slot_id.is_(None))  # a slot's arm comes first
    ).all()
    slots = [row for row in by_slot if row.id in wanted]
    decisions = [row for row in by_decision if row.id in wanted]
    numbers = sorted((row.id, row.subject_number) for row in (*slots, *decisions))
    if not numbers:
        return {}
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="subject",
        object_id=f"{len(numbers)} subjects",
        new={
            "purpose": purpose,
            "selection": selection,
            "subjects": len(numbers),
            "first": numbers[0][1],
            "last": numbers[-1][1],
            "ids": id_ranges([subject_id for subject_id, _ in numbers]),
        },
        at=ctx.now(),
    )
    arms: dict[int, str] = {}
    for row in slots:
        binding = crypto.Binding(
            trial=trial_code, table="slot", row=f"{row.label}|{row.key}|{row.position}", column="sealed"
        )
        value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, row.sealed, binding)
        if not isinstance(value, dict):
            raise crypto.SealError(f"the slot of subject {row.subject_number} is not readable")
        arms[row.id] = str(value["arm"])
    for decided in decisions:
        value = crypto.open_json(
            ctx.ring,
            crypto.Purpose.LISTS,
            decided.sealed,
            decision_binding(trial_code, decided.label, decided.arrival),
        )
        if not isinstance(value, dict):
            raise crypto.SealError(
                f"the minimization decision of subject {decided.subject_number} is not readable"
            )
        arms[decided.id] = str(value["decision"]["arm"])
    return arms


# --- stored answers of emergency unblindings (issue 14, Idempotency-Key) ----------------------------


def _stored_answer_binding(trial_code: str, user_id: int, key: str) -> crypto.Binding:
    return crypto.Binding(trial=trial_code, table="idempotent_request", row=f"{user_id}:{key}", column="body")


def seal_stored_answer(ctx: ServiceContext, trial_code: str, user_id: int, key: str, answer: object) -> str:
    """Seal an answer that reveals an arm, for `idempotent_request.body` (base64 text): the arm is
    never in clear in the database (BLD-05)."""
    sealed = crypto.seal_json(
        ctx.ring, crypto.Purpose.LISTS, answer, _stored_answer_binding(trial_code, user_id, key)
    )
    return base64.b64encode(sealed).decode("ascii")


def open_stored_answer(
    ctx: ServiceContext, reader: Actor, trial_code: str, key: str, subject_number: str, stored: str
) -> object:
    """The sealed answer of an emergency unblinding, for its replay to the same user: an `arm.read`
    entry records the reading, in the same unit of work, before the answer is opened."""
    if reader.user_id is None:  # pragma: no cover - an API caller is always a user
        raise crypto.SealError("only a signed-in user's own answer can be replayed")
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=reader,
            chain=trial_code,
            action=Action.ARM_READ,
            object_type="subject",
            object_id=subject_number,
            new={"purpose": "replay of an emergency unblinding (Idempotency-Key)"},
            at=ctx.now(),
        )
        binding = _stored_answer_binding(trial_code, reader.user_id, key)
        return crypto.open_json(ctx.ring, crypto.Purpose.LISTS, base64.b64decode(stored), binding)


# --- drill subjects (UNB-11) ------------------------------------------------------------------------


def drill_binding(trial_code: str, drill_number: str) -> crypto.Binding:
    return crypto.Binding(trial=trial_code, table="drill_subject", row=drill_number, column="sealed_arm")


def drill_arm_in(
    session: Session,
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    drill_number: str,
    sealed: bytes,
    purpose: str,
) -> str:
    """The value sealed for a drill subject (a trial arm drawn at random, nobody's treatment), read
    for an unblinding drill or its drill code-break sheet: audited like any arm read, so that a
    drill exercises the same path and proves the list key opens."""
    ctx.audit.record(
        session,
        actor=reader,
        chain=trial_code,
        action=Action.ARM_READ,
        object_type="drill_subject",
        object_id=drill_number,
        new={"purpose": purpose},
        at=ctx.now(),
    )
    return crypto.open_arm(ctx.ring, sealed, drill_binding(trial_code, drill_number))
