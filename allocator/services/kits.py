"""Kit lists, site stock, shipments, receipt, status changes, labels and reconciliation.

Blinding (BLD-03, BLD-04, BLD-05, BLD-12):
* kit numbers are random (kits.numbers); the kit -> arm map exists only sealed, one ciphertext per
  kit bound to its trial and number;
* kit lists are built in balanced blocks across arms, and shipments take the same number of kits
  of each arm (weighted by the ratio), chosen at random within each arm: a site's stock never
  drifts towards one arm, and nothing about a shipment depends on the last subject randomized;
* blinded roles see counts and statuses only, never split by arm. The system reads arms (to
  balance a shipment, to allocate) through `arm_access`, which audits every read.

Every status change is a KitEvent (who, when, why) plus an audit entry, in the same transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice
from typing import TypeVar

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import (
    Batch,
    CodeBreakSheet,
    Kit,
    KitEvent,
    KitList,
    KitStatus,
    PrintedDocument,
    Shipment,
    Site,
    Trial,
)
from allocator.permissions import Scope
from allocator.randomization import BlockDesign, kit_arm_sequence, new_seed
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, instance_mode
from allocator.settings import Environment
from allocator.trialdef import TrialDefinition
from allocator.version import __version__

STATUSES = tuple(status.value for status in KitStatus)
KIT_UNIT = "K"  # the unit in the QR code of a kit's own label (printed before any day is known)
LOT_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,31}$")

S = KitStatus
K = TypeVar("K")
# Manual changes a pharmacist or a supply manager may record; allocation, dispensing and
# administration move kits through their own workflows.
MANUAL_TRANSITIONS: dict[KitStatus, frozenset[KitStatus]] = {
    S.AT_DEPOT: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST, S.EXPIRED, S.DESTROYED}),
    S.IN_TRANSIT: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST}),
    S.AVAILABLE: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST, S.EXPIRED, S.RETURNED, S.DESTROYED}),
    S.QUARANTINED: frozenset({S.AVAILABLE, S.DAMAGED, S.DESTROYED}),
    S.DISPENSED: frozenset({S.RETURNED, S.DAMAGED, S.LOST}),
    S.ADMINISTERED: frozenset({S.RETURNED, S.DESTROYED}),
    S.RETURNED: frozenset({S.DESTROYED}),
    S.DAMAGED: frozenset({S.DESTROYED}),
    S.EXPIRED: frozenset({S.DESTROYED}),
    S.ALLOCATED: frozenset(),  # lost or damaged allocated kits are replaced through the subject
    S.LOST: frozenset(),
    S.DESTROYED: frozenset(),
}
# ACC-12: putting a kit into or out of quarantine is a critical act, signed.
SIGNED_TARGETS = frozenset({S.QUARANTINED})
SIGNED_SOURCES = frozenset({S.QUARANTINED})


def _kit_binding(trial_code: str, kit_number: str) -> crypto.Binding:
    return crypto.Binding(trial=trial_code, table="kit", row=kit_number, column="sealed_arm")


def mac(ctx: ServiceContext) -> Callable[[bytes], bytes]:
    """The MAC of QR payloads (LBL-08), keyed by the instance's labels key."""
    return lambda message: crypto.label_mac(ctx.ring, message)


def label_info(definition: TrialDefinition, environment: Environment) -> kitlib.TrialLabelInfo:
    """The trial-level particulars of every label and sheet (EU CTR Annex VI; LBL-01, LBL-07)."""
    fr, en = definition.labels.fr, definition.labels.en
    return kitlib.TrialLabelInfo(
        trial_code=definition.code,
        sponsor_name=definition.sponsor.name,
        sponsor_address=definition.sponsor.address,
        main_contact_name=definition.sponsor.main_contact.name,
        main_contact_phone=definition.sponsor.main_contact.phone,
        emergency_phone=definition.sponsor.emergency_phone,
        eu_ct_number=definition.eu_ct_number,
        protocol_code=definition.sponsor_protocol_code,
        nct_number=definition.nct_number,
        short_title=definition.short_title,
        product_name=kitlib.Bilingual(fr=fr.product_name, en=en.product_name),
        pharmaceutical_form=kitlib.Bilingual(fr=fr.pharmaceutical_form, en=en.pharmaceutical_form),
        route=kitlib.Bilingual(fr=fr.route, en=en.route),
        quantity=kitlib.Bilingual(fr=fr.quantity, en=en.quantity),
        storage=kitlib.Bilingual(fr=fr.storage, en=en.storage),
        directions=kitlib.Bilingual(fr=fr.directions, en=en.directions),
        clinical_trial_use=kitlib.Bilingual(fr=fr.clinical_trial_use_only, en=en.clinical_trial_use_only),
        print_keep_out_of_reach=definition.labels.print_keep_out_of_reach,
        test_mode=environment is not Environment.PRODUCTION,
        software_version=__version__,
        immediate_omits_expiry=definition.labels.omit_expiry_immediate,
        outer_pack_carries_expiry=True,
    )


# --- kit lists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KitListSummary:
    label: str
    count: int
    batches: tuple[str, ...]
    content_sha256: str


def _event(
    session: Session,
    kit: Kit,
    to_status: KitStatus,
    actor: Actor,
    reason: str,
    now: datetime,
    *,
    from_status: str | None,
) -> None:
    session.add(
        KitEvent(
            kit_id=kit.id,
            at=now,
            from_status=from_status,
            to_status=to_status.value,
            site_id=kit.site_id,
            actor_id=actor.user_id,
            actor_name=actor.name,
            reason=reason,
        )
    )
    kit.status = to_status.value


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
    for number, arm, batch in entries:
        kit = Kit(
            trial_id=trial.id,
            kit_list_id=kit_list.id,
            kit_number=number,
            kit_type=kit_type,
            batch_id=batch.id,
            expiry_date=batch.expiry_date,
            sealed_arm=crypto.seal_arm(ctx.ring, arm, _kit_binding(trial.code, number)),
            status=S.AT_DEPOT.value,
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


# --- stock (blinded) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockRow:
    """Kits of one place (a site, or the depot) by status. Never split by arm (BLD-12)."""

    site: str  # site code, or "depot"
    by_status: dict[str, int]
    usable: int  # available (at the depot: in stock) and not expiring before a full treatment (LBL-05)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def _needed_until(definition: TrialDefinition, today: date) -> date:
    """A kit allocated today (the site's calendar date) must not expire before the calendar day of
    the last dose plus the margin (LBL-05). A dose `offset_hours` after an allocation made late in
    the evening falls up to ceil(offset_hours / 24) calendar days later."""
    last_offset = max(day.offset_hours for day in definition.dispensing.schedule)
    return today + timedelta(days=-(-last_offset // 24) + definition.dispensing.expiry_margin_days)


def stock(ctx: ServiceContext, trial_code: str, scope: Scope, *, include_depot: bool) -> list[StockRow]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        needed = _needed_until(definition, definition.local_date(ctx.now()))
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        rows = session.execute(
            select(Kit.site_id, Kit.status, Kit.expiry_date, Kit.shipment_id).where(Kit.trial_id == trial.id)
        ).all()
        places: dict[int | None, Counter[str]] = {}
        usable: Counter[int | None] = Counter()
        for site_id, status, expiry, shipment_id in rows:
            if site_id is None and not include_depot:
                continue
            if site_id is not None and not scope.allows_site(site_id):
                continue
            places.setdefault(site_id, Counter())[status] += 1
            free = status == S.AVAILABLE.value or (status == S.AT_DEPOT.value and shipment_id is None)
            if free and (expiry is None or expiry >= needed):  # a prepared shipment's kits are spoken for
                usable[site_id] += 1
        out = [
            StockRow(site=sites[i] if i is not None else "depot", by_status=dict(c), usable=usable[i])
            for i, c in places.items()
        ]
        return sorted(out, key=lambda r: (r.site == "depot", r.site))


# --- shipments (BLD-04) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipmentView:
    number: str
    site: str
    status: str
    kit_count: int
    created_at: datetime
    created_by: str
    shipped_at: datetime | None
    received_at: datetime | None
    received_by: str | None
    kits: tuple[str, ...] = field(default=())


def create_shipment(
    ctx: ServiceContext, actor: Actor, trial_code: str, site_code: str, count: int
) -> ShipmentView:
    """Prepare a shipment of `count` kits from the depot to an active or pending site: the same
    number of kits of each arm (by ratio), chosen at random among the depot's usable kits of that
    arm (an audited machine read of the depot's arms; nobody sees them). Only kits that have their
    sealed code-break sheet are eligible (UNB-07)."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        site = _site(session, trial, site_code)
        total = definition.ratio_total
        if not 1 <= count <= 10_000 or count % total:
            raise ValidationFailed(
                "invalid count", errors=[FieldProblem("count", f"a multiple of {total}, at most 10000")]
            )
        needed = _needed_until(definition, definition.local_date(now))
        depot = list(
            session.execute(
                select(Kit)
                .where(
                    Kit.trial_id == trial.id,
                    Kit.status == S.AT_DEPOT.value,
                    Kit.site_id.is_(None),
                    Kit.shipment_id.is_(None),  # not already in a prepared shipment
                    # UNB-07: a kit leaves the depot only once its sealed code-break sheet exists.
                    Kit.id.in_(select(CodeBreakSheet.kit_id).where(CodeBreakSheet.trial_id == trial.id)),
                )
                .with_for_update()
            ).scalars()
        )
        depot = [k for k in depot if k.expiry_date is None or k.expiry_date >= needed]
        arms = arm_access.kit_arms_in(session, ctx, actor, trial.code, depot, "balancing a shipment")
        by_arm: dict[str, list[Kit]] = {}
        for kit in depot:
            by_arm.setdefault(arms[kit.id], []).append(kit)
        chosen: list[Kit] = []
        rng = secrets.SystemRandom()
        for arm, weight in definition.ratio:
            wanted = count // total * weight
            pool = by_arm.get(arm, [])
            if len(pool) < wanted:
                # The message says only that the depot lacks balanced stock, never which arm (BLD-12).
                raise Conflict(
                    "the depot does not hold enough usable kits for a balanced shipment of that size "
                    "(a kit is shipped only once its code-break sheet exists)"
                )
            chosen.extend(rng.sample(pool, wanted))
        rng.shuffle(chosen)
        shipped_before = session.execute(
            select(func.count()).select_from(Shipment).where(Shipment.trial_id == trial.id)
        ).scalar_one()
        number = f"SH-{shipped_before + 1:04d}"
        shipment = Shipment(
            trial_id=trial.id,
            site_id=site.id,
            number=number,
            status="prepared",
            kit_count=count,
            created_at=now,
            created_by_name=actor.name,
        )
        session.add(shipment)
        session.flush()
        for kit in chosen:
            kit.shipment_id = shipment.id
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SHIPMENT_PREPARED,
            object_type="shipment",
            object_id=number,
            site_code=site.code,
            new={"site": site.code, "kits": count},
            at=now,
        )
        return _shipment_view(session, shipment, site.code)


def ship(ctx: ServiceContext, actor: Actor, trial_code: str, number: str) -> tuple[str, ...]:
    """Dispatch a prepared shipment: its kits go in transit. A kit that left the depot's stock since
    the preparation (damaged, destroyed, quarantined...) is taken out of the shipment and stays where
    it is; the kit numbers taken out are returned and recorded in the audit entry."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number)
        if shipment.status != "prepared":
            raise Conflict(f"shipment {number} is {shipment.status}")
        taken_out: list[str] = []
        for kit in _shipment_kits(session, shipment):
            if kit.status != S.AT_DEPOT.value:
                kit.shipment_id = None
                taken_out.append(kit.kit_number)
                continue
            _event(session, kit, S.IN_TRANSIT, actor, f"shipped in {number}", now, from_status=kit.status)
        if taken_out and len(taken_out) == shipment.kit_count:
            raise Conflict(f"no kit of shipment {number} can still be shipped")
        shipment.kit_count -= len(taken_out)
        shipment.status = "shipped"
        shipment.shipped_at = now
        shipment.shipped_by_name = actor.name
        site = session.get(Site, shipment.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SHIPMENT_SHIPPED,
            object_type="shipment",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": "prepared"},
            new={"status": "shipped", "kits": shipment.kit_count, "taken_out": sorted(taken_out)},
            at=now,
        )
        return tuple(sorted(taken_out))


@dataclass(frozen=True, slots=True)
class Receipt:
    received: int
    missing: tuple[str, ...]
    # Scanned kits that were not in transit (quarantined or lost on the way): they keep their status,
    # since releasing a quarantined kit needs its own signed decision (ACC-12, LBL-05).
    held: tuple[str, ...] = ()


def receive(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    scanned: Sequence[str],
    *,
    scope: Scope,
    missing_reason: str = "",
) -> Receipt:
    """Receive a shipment at the site: every kit is scanned or typed (check digit verified, LBL-09).
    A kit that does not belong to the shipment refuses the whole receipt; kits of the shipment not
    scanned are recorded lost, which needs a reason."""
    now = ctx.now()
    problems = []
    numbers: list[str] = []
    for index, raw in enumerate(scanned):
        if not raw.strip():
            continue
        try:
            numbers.append(_number_from_scan(raw, trial_code, ctx))
        except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
            problems.append(FieldProblem(f"kits[{index}]", str(exc)))
    if problems:
        raise ValidationFailed("some kit numbers are not valid", errors=problems)
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number)
        if not scope.allows_site(shipment.site_id):
            raise NotFound(f"no shipment {number}")
        if shipment.status != "shipped":
            raise Conflict(f"shipment {number} is {shipment.status}, not shipped")
        kits = {k.kit_number: k for k in _shipment_kits(session, shipment)}
        foreign = sorted(set(numbers) - set(kits))
        if foreign:
            raise ValidationFailed(
                "kits not in this shipment",
                errors=[
                    FieldProblem("kits", f"{kitlib.format_kit_number(n)} is not in shipment {number}")
                    for n in foreign
                ],
            )
        missing = sorted(set(kits) - set(numbers))
        if missing and not missing_reason.strip():
            raise ValidationFailed(
                f"{len(missing)} kit(s) of the shipment were not scanned",
                errors=[FieldProblem("missing_reason", "give a reason: unscanned kits are recorded as lost")],
            )
        site = _site_by_id(session, shipment.site_id)
        held: list[str] = []
        for kit_number, kit in kits.items():
            kit.site_id = shipment.site_id
            if kit.status == S.LOST.value:
                if kit_number not in missing:
                    held.append(kit_number)
            elif kit_number in missing:
                _event(
                    session,
                    kit,
                    S.LOST,
                    actor,
                    f"missing at receipt of {number}: {missing_reason.strip()}",
                    now,
                    from_status=kit.status,
                )
            elif kit.status == S.IN_TRANSIT.value:
                _event(session, kit, S.AVAILABLE, actor, f"received in {number}", now, from_status=kit.status)
            else:
                held.append(kit_number)
        shipment.status = "received"
        shipment.received_at = now
        shipment.received_by_name = actor.name
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SHIPMENT_RECEIVED,
            object_type="shipment",
            object_id=number,
            site_code=site.code,
            old={"status": "shipped"},
            new={
                "status": "received",
                "received": len(kits) - len(missing) - len(held),
                "missing": missing,
                "held": sorted(held),
            },
            reason=missing_reason.strip() or None,
            at=now,
        )
        return Receipt(
            received=len(kits) - len(missing) - len(held), missing=tuple(missing), held=tuple(sorted(held))
        )


def _number_from_scan(raw: str, trial_code: str, ctx: ServiceContext) -> str:
    """A typed kit number, or a scanned kit label (its MAC checked)."""
    text = raw.strip()
    if "/" in text:
        return kitlib.verify_payload(text, trial_code, mac(ctx)).kit_number
    return kitlib.normalize_kit_number(text)


def shipments(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[ShipmentView]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        rows = session.execute(
            select(Shipment).where(Shipment.trial_id == trial.id).order_by(Shipment.id.desc())
        ).scalars()
        return [_shipment_view(session, s, sites[s.site_id]) for s in rows if scope.allows_site(s.site_id)]


def _shipment_view(session: Session, shipment: Shipment, site_code: str) -> ShipmentView:
    kits = tuple(sorted(k.kit_number for k in _shipment_kits(session, shipment)))
    return ShipmentView(
        number=shipment.number,
        site=site_code,
        status=shipment.status,
        kit_count=shipment.kit_count,
        created_at=shipment.created_at,
        created_by=shipment.created_by_name,
        shipped_at=shipment.shipped_at,
        received_at=shipment.received_at,
        received_by=shipment.received_by_name,
        kits=kits,
    )


def _shipment(session: Session, trial: Trial, number: str) -> Shipment:
    shipment = session.execute(
        select(Shipment).where(Shipment.trial_id == trial.id, Shipment.number == number).with_for_update()
    ).scalar_one_or_none()
    if shipment is None:
        raise NotFound(f"no shipment {number}")
    return shipment


def _shipment_kits(session: Session, shipment: Shipment) -> list[Kit]:
    return list(
        session.execute(select(Kit).where(Kit.shipment_id == shipment.id).order_by(Kit.kit_number)).scalars()
    )


def _site(session: Session, trial: Trial, code: str) -> Site:
    site = session.execute(
        select(Site).where(Site.trial_id == trial.id, Site.code == code)
    ).scalar_one_or_none()
    if site is None:
        raise NotFound(f"no site {code!r} in {trial.code}", errors=[FieldProblem("site", "unknown site")])
    return site


def _site_by_id(session: Session, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None:  # pragma: no cover - a foreign key guarantees it
        raise NotFound("no such site")
    return site


# --- status changes --------------------------------------------------------------------------


def change_status(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    kit_number: str,
    to: str,
    *,
    reason: str,
    scope: Scope,
    depot: bool,
    signature: signatures.SignatureRequest | None = None,
) -> None:
    """Record a kit's new status with a reason (quarantine after a temperature excursion, damage,
    loss, return, destruction, expiry). Quarantine and release from it are signed (ACC-12).
    `scope` limits the sites; `depot` allows depot kits (supply managers)."""
    try:
        target = KitStatus(to)
    except ValueError:
        raise ValidationFailed(
            "unknown status", errors=[FieldProblem("status", f"{to!r} is not a kit status")]
        ) from None
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    try:
        number = _number_from_scan(kit_number, trial_code, ctx)  # typed, or the scanned label (LBL-09)
    except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
        raise ValidationFailed("invalid kit number", errors=[FieldProblem("kit_number", str(exc))]) from None
    now = ctx.now()
    # The meaning states what is signed (21 CFR 11.50): a release only when the kit becomes usable.
    if target is S.QUARANTINED:
        meaning = "kit quarantine"
    elif target is S.AVAILABLE:
        meaning = "kit release from quarantine"
    else:
        meaning = f"kit {target.value} from quarantine"
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="kit", object_id=number
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        kit = session.execute(
            select(Kit).where(Kit.trial_id == trial.id, Kit.kit_number == number).with_for_update()
        ).scalar_one_or_none()
        if (
            kit is None
            or (kit.site_id is None and not depot)
            or (kit.site_id is not None and not scope.allows_site(kit.site_id))
        ):
            raise NotFound(f"no kit {kitlib.format_kit_number(number)} within your reach")
        current = KitStatus(kit.status)
        if target not in MANUAL_TRANSITIONS[current]:
            raise Conflict(f"a {current.value} kit cannot become {target.value}")
        needs_signature = target in SIGNED_TARGETS or current in SIGNED_SOURCES
        signature_id = None
        if needs_signature:
            if signature is None:
                raise ValidationFailed(
                    "this change is signed", errors=[FieldProblem("password", "is required")]
                )
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=meaning,
                object_type="kit",
                object_id=number,
                content={
                    "kit": number,
                    "from": current.value,
                    "to": target.value,
                    "reason": reason.strip(),
                },
                now=now,
            )
            signature_id = signed.id
        site = session.get(Site, kit.site_id) if kit.site_id else None
        _event(session, kit, target, actor, reason.strip(), now, from_status=current.value)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.KIT_STATUS_CHANGED,
            object_type="kit",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": current.value},
            new={"status": target.value, "signature": signature_id},
            reason=reason.strip(),
            at=now,
        )


def update_batch_expiry(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    lot_code: str,
    expiry: date,
    *,
    reason: str,
    signature: signatures.SignatureRequest,
) -> int:
    """Change a batch's expiry (re-test, shortened shelf life): every kit of the batch follows.
    Signed and reasoned (LBL-05, ACC-12). Returns the number of kits updated."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    meaning = "expiry change"
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="batch", object_id=lot_code
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        batch = session.execute(
            select(Batch).where(Batch.trial_id == trial.id, Batch.lot_code == lot_code).with_for_update()
        ).scalar_one_or_none()
        if batch is None:
            raise NotFound(f"no batch {lot_code}", errors=[FieldProblem("lot_code", "unknown batch")])
        old = batch.expiry_date
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=meaning,
            object_type="batch",
            object_id=lot_code,
            content={
                "batch": lot_code,
                "from": old.isoformat(),
                "to": expiry.isoformat(),
                "reason": reason.strip(),
            },
            now=now,
        )
        batch.expiry_date = expiry
        kits = list(session.execute(select(Kit).where(Kit.batch_id == batch.id)).scalars())
        for kit in kits:
            kit.expiry_date = expiry
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.BATCH_EXPIRY_CHANGED,
            object_type="batch",
            object_id=lot_code,
            old={"expiry": old.isoformat()},
            new={"expiry": expiry.isoformat(), "kits": len(kits), "signature": signed.id},
            reason=reason.strip(),
            at=now,
        )
        return len(kits)


@dataclass(frozen=True, slots=True)
class BatchView:
    lot_code: str
    expiry: date
    kits: int


def batches(ctx: ServiceContext, trial_code: str) -> list[BatchView]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        counts = {
            row[0]: row[1]
            for row in session.execute(
                select(Kit.batch_id, func.count()).where(Kit.trial_id == trial.id).group_by(Kit.batch_id)
            )
        }
        return [
            BatchView(b.lot_code, b.expiry_date, counts.get(b.id, 0))
            for b in session.execute(
                select(Batch).where(Batch.trial_id == trial.id).order_by(Batch.lot_code)
            ).scalars()
        ]


# --- labels (LBL-01..LBL-04, LBL-12) ---------------------------------------------------------


def _expiry(value: date | None) -> kitlib.Expiry:
    if value is None:  # pragma: no cover - every stored kit has an expiry
        raise Conflict("a kit without an expiry date cannot be labelled")
    return kitlib.Expiry(value.year, value.month)


def next_document_id(session: Session, trial: Trial, prefix: str) -> str:
    count = session.execute(
        select(func.count()).select_from(PrintedDocument).where(PrintedDocument.trial_id == trial.id)
    ).scalar_one()
    return f"{prefix}-{trial.code}-{count + 1:06d}"


def print_kit_labels(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    kit_numbers: Sequence[str],
    *,
    kind: str,
    scope: Scope,
    depot: bool,
) -> tuple[str, bytes]:
    """Labels for the given kits (outer or immediate, French first). A kit printed before makes
    the document a reprint, marked DUPLICATA, numbered by that kit's reprints and counted (LBL-12);
    new kits and reprints go in separate documents. Returns (document id, PDF)."""
    try:
        label_kind = kitlib.LabelKind(kind)
    except ValueError:
        raise ValidationFailed(
            "unknown label kind", errors=[FieldProblem("kind", "outer or immediate")]
        ) from None
    problems = []
    numbers = []
    for index, raw in enumerate(kit_numbers):
        try:
            number = _number_from_scan(raw, trial_code, ctx)  # typed or scanned (LBL-09)
        except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
            problems.append(FieldProblem(f"kits[{index}]", str(exc)))
        else:
            if number not in numbers:
                numbers.append(number)
    if problems or not numbers:
        raise ValidationFailed(
            "invalid kit numbers", errors=problems or [FieldProblem("kits", "give at least one")]
        )
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        rows = session.execute(
            select(Kit, Batch.lot_code)
            .join(Batch, Batch.id == Kit.batch_id)
            .where(Kit.trial_id == trial.id, Kit.kit_number.in_(numbers))
        ).all()
        found = {
            kit.kit_number: (kit, lot)
            for kit, lot in rows
            if (kit.site_id is None and depot) or (kit.site_id is not None and scope.allows_site(kit.site_id))
        }
        unknown = [n for n in numbers if n not in found]
        if unknown:
            raise NotFound(
                "unknown kits",
                errors=[
                    FieldProblem("kits", f"no kit {kitlib.format_kit_number(n)} within your reach")
                    for n in unknown
                ],
            )
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        labels = [
            kitlib.KitLabel(
                kit_number=n,
                qr_payload=kitlib.build_payload(trial.code, n, KIT_UNIT, mac(ctx)),
                batch=found[n][1],
                expiry=_expiry(found[n][0].expiry_date),
                unit=KIT_UNIT,
                site_code=sites.get(found[n][0].site_id or -1, "DEPOT"),
            )
            for n in numbers
        ]
        # How many earlier documents of this kind carried each kit: a kit's n-th reprint is numbered n.
        printed_before = dict.fromkeys(numbers, 0)
        for items in session.execute(
            select(PrintedDocument.items).where(
                PrintedDocument.trial_id == trial.id,
                PrintedDocument.kind == f"kit_labels_{label_kind.value}",
            )
        ).scalars():
            for item in set(items) & printed_before.keys():
                printed_before[item] += 1
        duplicates = {n for n, times in printed_before.items() if times}
        if duplicates and duplicates != set(numbers):
            # One document is either all originals or all DUPLICATA, so that the reconciliation counts
            # every label as printed or reprinted correctly (LBL-11, LBL-12).
            raise ValidationFailed(
                "print new labels and reprints separately",
                errors=[
                    FieldProblem(
                        "kits",
                        "already printed, reprint separately: "
                        + ", ".join(kitlib.format_kit_number(n) for n in sorted(duplicates)),
                    )
                ],
            )
        document_id = next_document_id(session, trial, "LBL")
        meta = kitlib.DocumentMeta(
            document_id=document_id, created_at=now, reprint_number=max(printed_before.values())
        )
        pdf = kitlib.render_label_sheet(
            label_info(definition, ctx.settings.env), labels, kind=label_kind, document=meta
        )
        session.add(
            PrintedDocument(
                trial_id=trial.id,
                kind=f"kit_labels_{label_kind.value}",
                document_id=document_id,
                subject_id=None,
                items=numbers,
                reprint_number=meta.reprint_number,
                content_sha256=hashlib.sha256(pdf).hexdigest(),
                printed_at=now,
                printed_by_id=actor.user_id,
                printed_by_name=actor.name,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DOCUMENT_PRINTED,
            object_type="printed_document",
            object_id=document_id,
            new={
                "kind": f"kit_labels_{label_kind.value}",
                "kits": len(numbers),
                "reprint": meta.reprint_number,
            },
            at=now,
        )
        return document_id, pdf


# --- reconciliation (LBL-11, REP-09) ---------------------------------------------------------

FLOW_STATUSES = (
    S.IN_TRANSIT,
    S.AVAILABLE,
    S.DISPENSED,
    S.ADMINISTERED,
    S.RETURNED,
    S.DAMAGED,
    S.LOST,
    S.QUARANTINED,
    S.EXPIRED,
    S.DESTROYED,
)


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    site: str
    batch: str
    current: dict[str, int]  # kits whose status is now X
    ever: dict[str, int]  # kits that ever entered status X (shipped = ever in transit, received, ...)
    labels_printed: int
    labels_reprinted: int

    @property
    def total(self) -> int:
        return sum(self.current.values())


@dataclass(frozen=True, slots=True)
class Reconciliation:
    rows: tuple[ReconciliationRow, ...]
    discrepancies: tuple[str, ...]

    @property
    def balanced(self) -> bool:
        return not self.discrepancies


def reconciliation(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, include_depot: bool
) -> Reconciliation:
    """Kit accountability per site and batch, with every place where the records do not balance:
    a kit whose event history does not chain up to its current status, a kit in use at no site, a
    shipment whose recorded kit count differs from its kits or whose kits are still in transit
    after its receipt (blinded: no arm anywhere)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        lots = {
            b.id: b.lot_code
            for b in session.execute(select(Batch).where(Batch.trial_id == trial.id)).scalars()
        }
        kits = [
            k
            for k in session.execute(select(Kit).where(Kit.trial_id == trial.id).order_by(Kit.id)).scalars()
            if (k.site_id is None and include_depot)
            or (k.site_id is not None and scope.allows_site(k.site_id))
        ]
        events: dict[int, list[KitEvent]] = {}
        for event in session.execute(
            select(KitEvent)
            .join(Kit, Kit.id == KitEvent.kit_id)
            .where(Kit.trial_id == trial.id)
            .order_by(KitEvent.id)
        ).scalars():
            events.setdefault(event.kit_id, []).append(event)
        printed: Counter[str] = Counter()
        reprinted: Counter[str] = Counter()
        for items, reprint in session.execute(
            select(PrintedDocument.items, PrintedDocument.reprint_number).where(
                PrintedDocument.trial_id == trial.id
            )
        ):
            for item in items:
                (reprinted if reprint else printed)[item] += 1
        groups: dict[tuple[str, str], dict[str, Counter[str]]] = {}
        problems: list[str] = []
        for kit in kits:
            key = (
                sites.get(kit.site_id, "depot") if kit.site_id is not None else "depot",
                lots.get(kit.batch_id or -1, "-"),
            )
            group = groups.setdefault(key, {"current": Counter(), "ever": Counter(), "printed": Counter()})
            group["current"][kit.status] += 1
            history = events.get(kit.id, [])
            for status in {e.to_status for e in history}:
                group["ever"][status] += 1
            group["printed"]["printed"] += printed[kit.kit_number]
            group["printed"]["reprinted"] += reprinted[kit.kit_number]
            previous: str | None = None
            for event in history:
                if event.from_status != previous:
                    problems.append(
                        f"kit {kitlib.format_kit_number(kit.kit_number)}: the event at "
                        f"{event.at:%Y-%m-%d %H:%M} starts from {event.from_status}, not {previous}"
                    )
                    break
                previous = event.to_status
            if previous != kit.status:
                problems.append(
                    f"kit {kitlib.format_kit_number(kit.kit_number)} is {kit.status} but its history ends "
                    f"at {previous}"
                )
            if (
                kit.status in (S.AVAILABLE.value, S.ALLOCATED.value, S.DISPENSED.value)
                and kit.site_id is None
            ):
                problems.append(
                    f"kit {kitlib.format_kit_number(kit.kit_number)} is {kit.status} but at no site"
                )
        problems += _shipment_discrepancies(session, trial, scope)
        rows = tuple(
            ReconciliationRow(
                site=site,
                batch=lot,
                current=dict(g["current"]),
                ever=dict(g["ever"]),
                labels_printed=g["printed"]["printed"],
                labels_reprinted=g["printed"]["reprinted"],
            )
            for (site, lot), g in sorted(groups.items(), key=lambda item: (item[0][0] == "depot", item[0]))
        )
        return Reconciliation(rows=rows, discrepancies=tuple(problems))


def _shipment_discrepancies(session: Session, trial: Trial, scope: Scope) -> list[str]:
    """Each shipment within reach must hold as many kits as it records, and once received none of
    them may still be in transit."""
    carried: Counter[int | None] = Counter()
    in_transit: Counter[int | None] = Counter()
    for shipment_id, status in session.execute(
        select(Kit.shipment_id, Kit.status).where(Kit.trial_id == trial.id, Kit.shipment_id.is_not(None))
    ):
        carried[shipment_id] += 1
        in_transit[shipment_id] += status == S.IN_TRANSIT.value
    problems = []
    for shipment in session.execute(
        select(Shipment).where(Shipment.trial_id == trial.id).order_by(Shipment.id)
    ).scalars():
        if not scope.allows_site(shipment.site_id):
            continue
        if carried[shipment.id] != shipment.kit_count:
            problems.append(
                f"shipment {shipment.number} records {shipment.kit_count} kits but {carried[shipment.id]} "
                "kits belong to it"
            )
        if shipment.status == "received" and in_transit[shipment.id]:
            problems.append(
                f"shipment {shipment.number} was received but {in_transit[shipment.id]} of its kits are "
                "still in transit"
            )
    return problems


def reconciliation_csv(report: Reconciliation) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    statuses = [s.value for s in KitStatus]
    writer.writerow(
        [
            "site",
            "batch",
            "total",
            *(f"now_{s}" for s in statuses),
            *(f"ever_{s}" for s in statuses),
            "labels_printed",
            "labels_reprinted",
        ]
    )
    for row in report.rows:
        writer.writerow(
            [
                row.site,
                row.batch,
                row.total,
                *(row.current.get(s, 0) for s in statuses),
                *(row.ever.get(s, 0) for s in statuses),
                row.labels_printed,
                row.labels_reprinted,
            ]
        )
    for problem in report.discrepancies:
        writer.writerow(["DISCREPANCY", problem])
    return buffer.getvalue()


# --- allocation support (used by randomization; LBL-05, BLD-04) ------------------------------


def usable_kits_by_arm(
    ctx: ServiceContext,
    session: Session,
    reader: Actor,
    trial: Trial,
    definition: TrialDefinition,
    site_id: int,
    today: date,
) -> dict[str, list[Kit]]:
    """The site's available kits that do not expire before a full treatment plus the margin,
    grouped by arm (an audited machine read, in the caller's transaction), rows locked."""
    needed = _needed_until(definition, today)
    candidates = list(
        session.execute(
            select(Kit)
            .where(Kit.trial_id == trial.id, Kit.site_id == site_id, Kit.status == S.AVAILABLE.value)
            .order_by(Kit.id)
            .with_for_update()
        ).scalars()
    )
    usable = [k for k in candidates if k.expiry_date is not None and k.expiry_date >= needed]
    arms = arm_access.kit_arms_in(session, ctx, reader, trial.code, usable, "choosing kits for an allocation")
    grouped: dict[str, list[Kit]] = {arm: [] for arm in definition.arm_codes}
    for kit in usable:
        grouped[arms[kit.id]].append(kit)
    return grouped


_USABLE_AT_SITE = (
    Kit.trial_id == bindparam("trial_id"),
    Kit.site_id == bindparam("site_id"),
    Kit.status == S.AVAILABLE.value,
    Kit.expiry_date >= bindparam("needed"),
)
_USABLE_IDS = select(Kit.id).where(*_USABLE_AT_SITE)
_LOCK_USABLE = (
    select(Kit.id, Kit.kit_number, Kit.sealed_arm)
    .where(Kit.id.in_(bindparam("ids", expanding=True)), *_USABLE_AT_SITE)
    .with_for_update()
)


def draw_usable_kits(
    ctx: ServiceContext,
    session: Session,
    reader: Actor,
    trial: Trial,
    definition: TrialDefinition,
    site_id: int,
    today: date,
    per_arm: int,
) -> dict[str, list[arm_access.SealedKit]]:
    """`per_arm` kits of every arm drawn uniformly at random from the site's usable kits (those
    `usable_kits_by_arm` returns), rows locked; fewer for an arm that has fewer. For allocations:
    the result is the same draw as picking from `usable_kits_by_arm`, but only the kits needed to
    find `per_arm` of each arm are locked and opened (a handful, instead of the whole stock).

    How (BLD-04, RND-08): the ids of the usable kits are read without opening anything and put in
    a uniformly random order (Fisher-Yates on the OS CSPRNG); kits are then locked and opened in
    that order, in small batches, until every arm has `per_arm`. The first `per_arm` kits of an arm
    in a uniformly random order of all usable kits are a uniformly random choice among that arm's
    kits, so nothing favours a kit number, a position in the stock or an arm. The locking query
    repeats the usability conditions: on PostgreSQL a kit changed by a concurrent transaction is
    re-checked once its lock is granted and dropped if no longer usable; on SQLite the write
    transaction (BEGIN IMMEDIATE) already excludes every other writer. The caller holds the site's
    row lock, so no concurrent allocation at the site can take the same kits."""
    connection = session.connection()
    where = {"trial_id": trial.id, "site_id": site_id, "needed": _needed_until(definition, today)}
    order = _random_order(connection.execute(_USABLE_IDS, where).scalars().all())

    def batches() -> Iterator[list[arm_access.SealedKit]]:
        size = 2 * per_arm * max(1, len(definition.arm_codes))
        while batch := list(islice(order, size)):
            rank = {kit_id: i for i, kit_id in enumerate(batch)}
            rows = connection.execute(_LOCK_USABLE, {**where, "ids": batch})
            yield sorted((arm_access.SealedKit(*row) for row in rows), key=lambda kit: rank[kit.id])
            size *= 2

    return arm_access.kits_by_arm_until(
        session,
        ctx,
        reader,
        trial.code,
        batches(),
        definition.arm_codes,
        per_arm,
        "choosing kits for an allocation",
    )


def _random_order(items: Sequence[int]) -> Iterator[int]:
    """`items` in a uniformly random order, drawn lazily (Fisher-Yates from the end, with the OS
    CSPRNG): taking k of n costs k draws."""
    rng = secrets.SystemRandom()
    pool = list(items)
    for last in range(len(pool) - 1, -1, -1):
        j = rng.randrange(last + 1)
        pool[last], pool[j] = pool[j], pool[last]
        yield pool[last]


def pick(kits: Sequence[K], count: int) -> list[K]:
    """`count` kits chosen uniformly at random (never the lowest number; BLD-04)."""
    return secrets.SystemRandom().sample(list(kits), count)
