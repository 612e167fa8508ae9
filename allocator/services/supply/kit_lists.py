"""Generate or import a kit list (batches, lots, sealed arms)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import Batch, Kit, KitEvent, KitList, Trial
from allocator.models.kit import status_bit
from allocator.randomization import BlockDesign, kit_arm_sequence, new_seed
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ObservationalStudy, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, instance_mode
from allocator.services.supply.kit_rules import S, expiry_problem, kit_binding

LOT_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,31}$")


# --- kit lists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KitListSummary:
    label: str
    count: int
    batches: tuple[str, ...]
    content_sha256: str


def _batch(session: Session, trial: Trial, lot_code: str, expiry: date, now: datetime) -> Batch:
    batch = session.execute(
        select(Batch).where(Batch.trial_id == trial.id, Batch.lot_code == lot_code)
    ).scalar_one_or_none()
    if batch is None:
        batch = Batch(trial_id=trial.id, lot_code=lot_code, expiry_date=expiry, created_at=now)
        session.add(batch)
        session.flush()
    elif batch.expiry_date != expiry:
        raise ValidationFailed(
            f"batch {lot_code} exists with expiry {batch.expiry_date.isoformat()}",
            errors=[FieldProblem("expiry", f"batch {lot_code} expires on {batch.expiry_date.isoformat()}")],
        )
    return batch


def _validate_lot(lot_code: str, expiry: date, today: date) -> None:
    problems = []
    if not LOT_CODE.match(lot_code):
        problems.append(FieldProblem("lot_code", "2-32 characters A-Z, 0-9 and '-'"))
    if expiry <= today:
        problems.append(FieldProblem("expiry", "is not in the future"))
    elif (unprintable := expiry_problem(expiry)) is not None:
        problems.append(unprintable)
    if problems:
        raise ValidationFailed("invalid batch", errors=problems)


def _kit_list_label(session: Session, trial: Trial, mode: str) -> str:
    existing = session.execute(
        select(func.count()).select_from(KitList).where(KitList.trial_id == trial.id, KitList.mode == mode)
    ).scalar_one()
    return f"{trial.code}/{mode.upper()}/KITS/{existing + 1}"


def _content_digest(entries: Iterable[tuple[str, str, str]]) -> str:
    """SHA-256 over `kit_number TAB arm TAB lot LF` lines sorted by kit number (sealed in the audit)."""
    hasher = hashlib.sha256()
    for number, arm, lot in sorted(entries):
        hasher.update(f"{number}\t{arm}\t{lot}\n".encode())
    return hasher.hexdigest()


def generate_kit_list(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    count: int,
    lot_code: str,
    expiry: date,
    kit_type: str | None = None,
) -> KitListSummary:
    """Create `count` kits at the depot: random kit numbers, arms in balanced blocks (two ratio
    totals per block), sealed one by one (BLD-03..05). `count` must be a multiple of the block."""
    now = ctx.now()
    _validate_lot(lot_code, expiry, now.date())
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        if definition.observational:  # no arm to balance the blocks by (a division by zero)
            raise ObservationalStudy(
                f"{trial.code} is an observational study: it has no arms, lists or drug kits"
            )
        block = 2 * definition.ratio_total
        if not 1 <= count <= 100_000 or count % block:
            raise ValidationFailed(
                "invalid count",
                errors=[
                    FieldProblem("count", f"a multiple of {block} (whole balanced blocks), at most 100000")
                ],
            )
        kit_types = [k.code for k in definition.kit_types]
        kit_type = kit_type or kit_types[0]
        if kit_type not in kit_types:
            raise ValidationFailed(
                "unknown kit type", errors=[FieldProblem("kit_type", f"one of {', '.join(kit_types)}")]
            )
        mode = instance_mode(ctx.settings.env).value
        label = _kit_list_label(session, trial, mode)
        design = BlockDesign(
            arms=definition.arm_codes, ratio=tuple(w for _, w in definition.ratio), block_sizes=(block,)
        )
        arms = [
            slot.arm
            for slot in kit_arm_sequence(
                new_seed(), design, trial_code=trial.code, kit_list_label=label, count=count
            )
        ]
        in_use = session.execute(select(Kit.kit_number).where(Kit.trial_id == trial.id)).scalars().all()
        numbers = kitlib.generate_kit_numbers(count, in_use)
        batch = _batch(session, trial, lot_code, expiry, now)
        return _store_kits(
            ctx,
            session,
            actor,
            trial,
            label,
            mode,
            "generated",
            None,
            list(zip(numbers, arms, [batch] * count, strict=True)),
            kit_type,
            now,
        )


def _store_kits(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    label: str,
    mode: str,
    source: str,
    source_name: str | None,
    entries: list[tuple[str, str, Batch]],
    kit_type: str,
    now: datetime,
) -> KitListSummary:
    digest = _content_digest((n, a, b.lot_code) for n, a, b in entries)
    kit_list = KitList(
        trial_id=trial.id,
        label=label,
        mode=mode,
        source=source,
        source_name=source_name,
        kit_count=len(entries),
        content_sha256=digest,
        created_at=now,
        created_by_id=actor.user_id,
        created_by_name=actor.name,
    )
    session.add(kit_list)
    session.flush()
    # Rows (and their ids) in kit-number order: kit numbers are drawn at random, so the order of
    # the rows says nothing about the arms, whereas the order of the kit list follows its blocks and
    # a later sort by id or creation time would have shown them (issue 15, BLD-04).
    for number, arm, batch in sorted(entries, key=lambda entry: entry[0]):
        kit = Kit(
            trial_id=trial.id,
            kit_list_id=kit_list.id,
            kit_number=number,
            kit_type=kit_type,
            batch_id=batch.id,
            expiry_date=batch.expiry_date,
            sealed_arm=crypto.seal_arm(ctx.ring, arm, kit_binding(trial.code, number)),
            status=S.AT_DEPOT.value,
            ever_statuses=status_bit(S.AT_DEPOT.value),
            created_at=now,
        )
        session.add(kit)
        session.flush()
        session.add(
            KitEvent(
                kit_id=kit.id,
                at=now,
                from_status=None,
                to_status=S.AT_DEPOT.value,
                site_id=None,
                actor_id=actor.user_id,
                actor_name=actor.name,
                reason=f"{source} in {label}",
            )
        )
    lots = tuple(sorted({b.lot_code for _, _, b in entries}))
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.KIT_LIST_CREATED,
        object_type="kit_list",
        object_id=label,
        new={"count": len(entries), "source": source, "batches": list(lots), "file": source_name},
        sealed={"content_sha256": digest, "per_arm": dict(Counter(a for _, a, _ in entries))},
        at=now,
    )
    return KitListSummary(label, len(entries), lots, digest)


def import_kit_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, text: str, source_name: str
) -> KitListSummary:
    """Import the kit list of the sponsor's pharmaceutical establishment (DIB-07): CSV with the
    header `kit_number,arm,lot_code,expiry[,kit_type]` (expiry YYYY-MM-DD). Every row is checked —
    check digit, unknown arm, duplicate or existing kit number, batch expiry — and the whole file is
    refused, naming each bad line, or imported at once."""
    try:
        return _import_kit_list(ctx, actor, trial_code, text, source_name)
    except csv.Error:  # a field past the csv module's limit (131,072 characters), a stray NUL
        raise ValidationFailed(
            "unreadable file", errors=[FieldProblem("file", "not a CSV file this service can read")]
        ) from None


def _import_kit_list(
    ctx: ServiceContext, actor: Actor, trial_code: str, text: str, source_name: str
) -> KitListSummary:
    now = ctx.now()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    required = {"kit_number", "arm", "lot_code", "expiry"}
    if reader.fieldnames is None or not required <= set(reader.fieldnames):
        raise ValidationFailed(
            "bad header",
            errors=[FieldProblem("file", f"the header must contain {', '.join(sorted(required))}")],
        )
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        kit_types = [k.code for k in definition.kit_types]
        problems: list[FieldProblem] = []
        rows: list[tuple[str, str, str, date, str]] = []
        seen: set[str] = set()
        existing = set(session.execute(select(Kit.kit_number).where(Kit.trial_id == trial.id)).scalars())
        first_expiry: dict[str, tuple[date, int]] = {}
        for raw in reader:
            line = reader.line_num  # the physical line, so blank lines do not shift the numbers
            where = f"line {line}"
            try:
                number = kitlib.normalize_kit_number(raw.get("kit_number") or "")
            except kitlib.KitNumberError as exc:
                problems.append(FieldProblem(where, f"kit_number: {exc}"))
                continue
            arm = (raw.get("arm") or "").strip()
            lot = (raw.get("lot_code") or "").strip()
            kit_type = (raw.get("kit_type") or kit_types[0]).strip()
            try:
                expiry = date.fromisoformat((raw.get("expiry") or "").strip())
            except ValueError:
                problems.append(FieldProblem(where, "expiry: must be YYYY-MM-DD"))
                continue
            if arm not in definition.arm_codes:
                problems.append(FieldProblem(where, f"arm: {arm!r} is not an arm of {trial.code}"))
            elif number in seen or number in existing:
                problems.append(FieldProblem(where, f"kit_number: {number} appears twice or already exists"))
            elif kit_type not in kit_types:
                problems.append(FieldProblem(where, f"kit_type: {kit_type!r} is unknown"))
            else:
                try:
                    _validate_lot(lot, expiry, now.date())
                except ValidationFailed as exc:
                    problems.extend(FieldProblem(where, f"{e.field}: {e.message}") for e in exc.errors)
                    continue
                known = first_expiry.setdefault(lot, (expiry, line))
                if known[0] != expiry:
                    problems.append(
                        FieldProblem(
                            where,
                            f"expiry: batch {lot} was given expiry {known[0].isoformat()} on line {known[1]}",
                        )
                    )
                    continue
                seen.add(number)
                rows.append((number, arm, lot, expiry, kit_type))
        if not rows and not problems:
            problems.append(FieldProblem("file", "no kit in the file"))
        per_lot: dict[str, set[date]] = {}
        for _, _, lot, expiry, _ in rows:
            per_lot.setdefault(lot, set()).add(expiry)
        if problems:
            raise ValidationFailed(
                f"{source_name}: the kit list is refused; nothing was imported", errors=problems[:200]
            )
        batches = {lot: _batch(session, trial, lot, next(iter(dates)), now) for lot, dates in per_lot.items()}
        mode = instance_mode(ctx.settings.env).value
        label = _kit_list_label(session, trial, mode)
        types = {t for *_, t in rows}
        if len(types) != 1:
            raise ValidationFailed(
                "one kit type per file", errors=[FieldProblem("file", "several kit types")]
            )
        entries = [(number, arm, batches[lot]) for number, arm, lot, _, _ in rows]
        return _store_kits(
            ctx, session, actor, trial, label, mode, "imported", source_name, entries, types.pop(), now
        )
