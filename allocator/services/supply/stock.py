"""Stock per site, and the usable kits the randomization
draws from."""

from __future__ import annotations

import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import islice
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    any_,
    bindparam,
    case,
    cast,
    false,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from allocator.audit import Actor
from allocator.db import Direct
from allocator.models import Kit, Site, Trial
from allocator.models.base import IntegerArrayText
from allocator.permissions import Scope
from allocator.services import arm_access
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialRef, current_definition, get_trial
from allocator.services.supply.kit_rules import K, S, needed_until
from allocator.trialdef import TrialDefinition

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


def stock(ctx: ServiceContext, trial_code: str, scope: Scope, *, include_depot: bool) -> list[StockRow]:
    """The kits of each place within reach (and the depot's when `include_depot`) by status, and
    how many are usable, counted in the database (issue 21: every kit of the trial was read to be
    counted, 15,000 at 5,000 subjects)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        needed = needed_until(definition, definition.local_date(ctx.now()))
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        # Available (at the depot: in stock, not in a prepared shipment, which is spoken for) and not
        # expiring before a full treatment (LBL-05).
        free = or_(
            Kit.status == S.AVAILABLE.value, and_(Kit.status == S.AT_DEPOT.value, Kit.shipment_id.is_(None))
        )
        usable = case((and_(free, or_(Kit.expiry_date.is_(None), Kit.expiry_date >= needed)), 1), else_=0)
        places: dict[int | None, dict[str, int]] = {}
        counted: Counter[int | None] = Counter()
        for site_id, status, count, usable_count in session.execute(
            select(Kit.site_id, Kit.status, func.count(), func.sum(usable))
            .where(Kit.trial_id == trial.id, kit_reach(scope, include_depot))
            .group_by(Kit.site_id, Kit.status)
        ):
            places.setdefault(site_id, {})[status] = count
            counted[site_id] += usable_count or 0
        out = [
            StockRow(site=sites[i] if i is not None else "depot", by_status=c, usable=counted[i])
            for i, c in places.items()
        ]
        return sorted(out, key=lambda r: (r.site == "depot", r.site))


def kit_reach(scope: Scope, include_depot: bool) -> ColumnElement[bool]:
    """The kits a reader of `scope` accounts for: those at its sites, and the depot's (kits at no
    site) when `include_depot`."""
    within: list[ColumnElement[bool]] = []
    if include_depot:
        within.append(Kit.site_id.is_(None))
    if scope.all_sites:
        within.append(Kit.site_id.is_not(None))
    elif scope.site_ids:
        within.append(Kit.site_id.in_(sorted(scope.site_ids)))
    return or_(*within) if within else false()


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
    """The site's available kits that do not expire before a full treatment plus the margin and
    await no relabelling, grouped by arm (an audited machine read, in the caller's transaction), rows locked."""
    needed = needed_until(definition, today)
    candidates = list(
        session.execute(
            select(Kit)
            .where(Kit.trial_id == trial.id, Kit.site_id == site_id, Kit.status == S.AVAILABLE.value)
            .order_by(Kit.id)
            .with_for_update()
        ).scalars()
    )
    usable = [
        k
        for k in candidates
        if k.expiry_date is not None and k.expiry_date >= needed and k.relabel_requested_at is None
    ]
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
    # Issue 19: a kit awaiting its new expiry label is not drawn. Checked on rows the draw reads
    # anyway (by id), so the draw's cost stays flat.
    Kit.relabel_requested_at.is_(None),
)
_USABLE_IDS = select(Kit.id).where(*_USABLE_AT_SITE)
# The id range of the site's available kits: two look-ups in the index (site_id, status, id).
# `AVAILABLE_ID_RANGE_COLUMNS` lets the allocation read the range in a statement it sends anyway.
AVAILABLE_ID_RANGE_COLUMNS = (
    select(func.min(Kit.id))
    .where(Kit.site_id == bindparam("site_id"), Kit.status == S.AVAILABLE.value)
    .scalar_subquery()
    .label("kit_id_lo"),
    select(func.max(Kit.id))
    .where(Kit.site_id == bindparam("site_id"), Kit.status == S.AVAILABLE.value)
    .scalar_subquery()
    .label("kit_id_hi"),
)
_AVAILABLE_ID_RANGE = Direct(select(*AVAILABLE_ID_RANGE_COLUMNS))
# Which of a batch of candidate ids are usable kits of the site (nothing locked, nothing opened),
# and the locking read of a batch. On PostgreSQL the ids go as one array parameter (`= ANY`), so
# that a batch of any length is one statement, prepared once; SQLite expands an IN list. The array
# is bound as its text (`IntegerArrayText`): psycopg dumps a Python list element by element.
_IDS_IN = Kit.id.in_(bindparam("ids", expanding=True))
_IDS_ANY = Kit.id == any_(cast(bindparam("ids", type_=IntegerArrayText()), postgresql.ARRAY(Integer)))
_USABLE_AMONG = {
    "sqlite": select(Kit.id).where(_IDS_IN, *_USABLE_AT_SITE),
    "postgresql": select(Kit.id).where(_IDS_ANY, *_USABLE_AT_SITE),
}
_LOCK_USABLE = {
    dialect: select(Kit.id, Kit.kit_number, Kit.sealed_arm).where(ids, *_USABLE_AT_SITE).with_for_update()
    for dialect, ids in (("sqlite", _IDS_IN), ("postgresql", _IDS_ANY))
}
# Candidate ids probed before falling back to reading every usable id of the site: the stock is
# then sparse in its id range, so that read is short.
_PROBES = (64, 128, 256, 512)


def draw_usable_kits(
    ctx: ServiceContext,
    session: Session,
    reader: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    site_id: int,
    today: date,
    per_arm: int,
    id_range: tuple[int | None, int | None] | None = None,
) -> dict[str, list[arm_access.SealedKit]]:
    """`per_arm` kits of every arm drawn uniformly at random from the site's usable kits (those
    `usable_kits_by_arm` returns), rows locked; fewer for an arm that has fewer. For allocations:
    the result is the same draw as picking from `usable_kits_by_arm`, but only the kits needed to
    find `per_arm` of each arm are locked and opened, and the site's stock is not read whole
    (issue 16): the cost does not grow with the stock.

    How (BLD-04, RND-08): `_usable_in_random_order` yields the ids of the usable kits in a
    uniformly random order (see there); kits are then locked and opened in that order, in small
    batches, until every arm has `per_arm`. The first `per_arm` kits of an arm in a uniformly
    random order of all usable kits are a uniformly random choice among that arm's kits, so nothing
    favours a kit number, a position in the stock or an arm; and the kits of every arm are drawn
    before the slot's arm is read, so the draw cannot depend on it. `id_range`, when given, is the
    id range of the site's available kits (`AVAILABLE_ID_RANGE_COLUMNS`), read by the caller under
    the site's row lock in a statement it sends anyway (the allocation's screening check): no
    allocation at the site can change it while that lock is held. A kit made available meanwhile
    without that lock (a shipment received, a kit's status changed by hand) and outside the range
    read is drawn only when the range holds too few usable kits, and is not seen at all when the
    whole range has been probed (the randomization then refuses, and its retry sees the kit): the
    same as a kit made available just after the draw, never dependent on an arm. The locking query repeats the
    usability conditions: on PostgreSQL a kit changed by a concurrent transaction is re-checked
    once its lock is granted and dropped if no longer usable; on SQLite the write transaction
    (BEGIN IMMEDIATE) already excludes every other writer. The caller holds the site's row lock, so
    no concurrent allocation at the site can take the same kits."""
    connection = session.connection()
    where = {"trial_id": trial.id, "site_id": site_id, "needed": needed_until(definition, today)}
    size = 2 * per_arm * max(1, len(definition.arm_codes))
    if connection.dialect.name == "postgresql":
        batches = _locked_in_random_order(connection, where, size, id_range)
    else:
        batches = _locked_batches(
            connection, _usable_in_random_order(connection, where, id_range), where, size
        )
    return arm_access.kits_by_arm_until(
        session,
        ctx,
        reader,
        trial.code,
        batches,
        definition.arm_codes,
        per_arm,
        "choosing kits for an allocation",
    )


def _locked_batches(
    connection: Connection, order: Iterator[int], where: dict[str, object], size: int
) -> Iterator[list[arm_access.SealedKit]]:
    """The kits of the ids of `order` that are still usable, locked and read in batches of
    `size`, then twice as many each time, in the order of `order`."""
    lock = _LOCK_USABLE[connection.dialect.name]
    return locked_batches(order, size, lambda batch: connection.execute(lock, {**where, "ids": batch}))


def locked_batches(
    order: Iterator[int], size: int, lock: Callable[[list[int]], Iterable[Sequence[Any]]]
) -> Iterator[list[arm_access.SealedKit]]:
    """The rule of every draw that opens kits in a random order (an allocation's, a shipment's):
    the ids of `order` in batches of `size`, then twice as many each time; `lock` locks a batch's
    kits that still qualify and returns their (id, kit number, sealed arm) rows, which come back
    in the order of `order`."""
    while batch := list(islice(order, size)):
        rank = {kit_id: i for i, kit_id in enumerate(batch)}
        yield sorted((arm_access.SealedKit(*row) for row in lock(batch)), key=lambda kit: rank[kit.id])
        size *= 2


# PostgreSQL: the first `size` usable kits among candidate ids, in the candidates' order, locked,
# in one statement (the probe and the lock of `_usable_in_random_order` and `_locked_batches`
# together; issue 16). LIMIT applies after the rows are locked and re-checked, so a kit changed by
# a concurrent transaction is skipped and the next usable candidate takes its place; fewer than
# `size` rows therefore means that no usable kit is left among the candidates given.
_CANDIDATES = (
    func.unnest(cast(bindparam("ids", type_=IntegerArrayText()), postgresql.ARRAY(Integer)))
    .table_valued("id", with_ordinality="ord")
    .render_derived(name="candidates")
)
_LOCK_FIRST_USABLE = Direct(
    select(Kit.id, Kit.kit_number, Kit.sealed_arm, _CANDIDATES.c.ord)
    .join_from(_CANDIDATES, Kit, Kit.id == _CANDIDATES.c.id)
    .where(*_USABLE_AT_SITE)
    .order_by(_CANDIDATES.c.ord)
    .limit(bindparam("size"))
    .with_for_update(of=Kit)
)


def _locked_in_random_order(
    connection: Connection,
    where: dict[str, object],
    size: int,
    id_range: tuple[int | None, int | None] | None = None,
) -> Iterator[list[arm_access.SealedKit]]:
    """PostgreSQL: the same sequence of kits as `_locked_batches` over `_usable_in_random_order`
    (the usable kits in the uniformly random order of the probed id range, then the others in a
    fresh random order), each batch found and locked by one statement instead of two."""
    lo, hi = id_range or _AVAILABLE_ID_RANGE.one(connection, {"site_id": where["site_id"]})
    probed: set[int] = set()
    if lo is not None and hi is not None:
        candidates = _random_order_of_range(lo, hi)
        for probe in _PROBES:
            batch = list(islice(candidates, probe))
            if not batch:
                return  # every id of the range was probed: every usable kit was yielded
            probed.update(batch)
            start = 0
            while start < len(batch):
                rows = _LOCK_FIRST_USABLE.rows(connection, {**where, "ids": batch[start:], "size": size})
                if rows:
                    yield [arm_access.SealedKit(row.id, row.kit_number, row.sealed_arm) for row in rows]
                if len(rows) < size:
                    break  # no usable kit left among this probe's candidates
                start += rows[-1].ord  # ord counts from 1 within batch[start:]
                size *= 2
            if len(batch) < probe:
                return
    rest = [kit_id for kit_id in connection.execute(_USABLE_IDS, where).scalars() if kit_id not in probed]
    yield from _locked_batches(connection, _random_order(rest), where, size)


def _usable_in_random_order(
    connection: Connection,
    where: dict[str, object],
    id_range: tuple[int | None, int | None] | None = None,
) -> Iterator[int]:
    """The ids of the site's usable kits in a uniformly random order, drawn lazily without reading
    the whole stock (issue 16).

    Rejection sampling over ids: the integers of [lo, hi], the id range of the site's available
    kits, are put in a uniformly random order (a lazy Fisher-Yates on the OS CSPRNG) and probed in
    batches; the usable ones are yielded in that order. Restricting a uniformly random order of
    the range to the usable ids gives a uniformly random order of the usable kits: every usable kit
    has exactly one id in the range, and each order of them is equally likely. If the probes
    (`_PROBES`) end before the caller has enough, the stock is sparse in its range: the remaining
    usable ids (those not yet probed) are read and follow in a fresh uniformly random order, which
    keeps the whole sequence a uniformly random order (the first part is a uniformly random subset
    of the usable kits, in random order, the rest the others, in random order). Whether the
    fallback is needed depends on where the usable ids lie, never on which arm a kit holds."""
    among = _USABLE_AMONG[connection.dialect.name]
    lo, hi = id_range or _AVAILABLE_ID_RANGE.one(connection, {"site_id": where["site_id"]})
    probed: set[int] = set()
    if lo is not None and hi is not None:
        candidates = _random_order_of_range(lo, hi)
        for size in _PROBES:
            batch = list(islice(candidates, size))
            if not batch:
                return  # every id of the range was probed: every usable kit was yielded
            probed.update(batch)
            usable = set(connection.execute(among, {**where, "ids": batch}).scalars())
            yield from (kit_id for kit_id in batch if kit_id in usable)
            if len(batch) < size:
                return
    rest = [kit_id for kit_id in connection.execute(_USABLE_IDS, where).scalars() if kit_id not in probed]
    yield from _random_order(rest)


def _random_order_of_range(lo: int, hi: int) -> Iterator[int]:
    """The integers lo..hi in a uniformly random order, drawn lazily: a Fisher-Yates shuffle that
    stores only the positions it has moved, so that taking k of n costs k draws and O(k) memory."""
    draws = _below()
    next(draws)
    moved: dict[int, int] = {}
    for last in range(hi - lo, -1, -1):
        j = draws.send(last + 1)
        chosen = moved.get(j, j)
        moved[j] = moved.pop(last, last)
        yield lo + chosen


def _below() -> Generator[int, int, None]:
    """Exactly uniform integers in [0, m) for each m sent, from the OS CSPRNG read 256 bytes at a
    time (one system call per 32 draws instead of one per draw): a 64-bit value v is used only when
    v < m * floor(2**64 / m), so v % m has no bias (rejection sampling)."""
    m = yield 0
    while True:
        for (value,) in struct.iter_unpack("<Q", os.urandom(256)):
            if value < (1 << 64) - (1 << 64) % m:
                m = yield value % m


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
