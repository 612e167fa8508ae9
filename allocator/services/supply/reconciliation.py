"""Kit reconciliation per site and its CSV export."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    func,
    select,
)
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.models import Batch, Kit, KitEvent, KitStatus, Shipment, Site, Trial
from allocator.models.kit import status_bit, status_bits
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services import documents
from allocator.services.context import ServiceContext
from allocator.services.lookups import get_trial
from allocator.services.supply import kit_check
from allocator.services.supply.kit_rules import S
from allocator.services.supply.stock import kit_reach

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


# Issue 19: where a kit shipped to a site is now, for the balance of every kit's life. Lost kits
# are recorded with a reason and counted on their own.
BALANCE_TERMS: dict[str, tuple[KitStatus, ...]] = {
    "dispensed": (S.DISPENSED, S.ADMINISTERED),
    "returned": (S.RETURNED,),
    "destroyed": (S.DESTROYED,),
    "lost": (S.LOST,),
    "on_hand": (S.AVAILABLE, S.ALLOCATED, S.QUARANTINED, S.DAMAGED, S.EXPIRED),
    "in_transit": (S.IN_TRANSIT,),
}
_TERM_OF = {status.value: term for term, statuses in BALANCE_TERMS.items() for status in statuses}
# What a kit with no site can be in a shipped parcel (a transit excursion's quarantine, the
# sponsor's destruction decision, a loss on the way).
_ON_THE_WAY = frozenset(s.value for s in (S.IN_TRANSIT, S.QUARANTINED, S.DAMAGED, S.LOST))
# A kit's shipment when it has no site and is in one of those statuses, else NULL: grouped by.
_ON_THE_WAY_SHIPMENT = case(
    (and_(Kit.site_id.is_(None), Kit.status.in_(sorted(_ON_THE_WAY))), Kit.shipment_id), else_=None
).label("on_the_way")


@dataclass(frozen=True, slots=True)
class SiteBalance:
    """One site's kits: shipped (by its shipments' records) against where they are now (by the kits'
    statuses), never split by arm. Balanced when shipped equals the sum of the terms."""

    site: str
    shipped: int
    terms: dict[str, int]  # dispensed, returned, destroyed, lost, on_hand, in_transit

    @property
    def accounted(self) -> int:
        return sum(self.terms.values())

    @property
    def open(self) -> int:
        """Kits whose life at the site is not closed yet: on hand or on the way."""
        return self.terms.get("on_hand", 0) + self.terms.get("in_transit", 0)

    @property
    def balanced(self) -> bool:
        return self.shipped == self.accounted


@dataclass(frozen=True, slots=True)
class Reconciliation:
    rows: tuple[ReconciliationRow, ...]
    discrepancies: tuple[str, ...]
    balances: tuple[SiteBalance, ...] = ()

    @property
    def balanced(self) -> bool:
        return not self.discrepancies


def reconciliation(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, include_depot: bool
) -> Reconciliation:
    """Kit accountability per site and batch, with every place where the records do not balance:
    a kit whose event history does not chain up to its current status, a kit in use at no site, a
    shipment whose recorded kit count differs from its kits or whose kits are still in transit
    after its receipt (blinded: no arm anywhere).

    Issue 21: counted in the database (statuses, the statuses kits ever entered and the labels
    printed, per site and batch; the balances and the shipments' kits per site and shipment), in a
    number of statements that does not grow with the kits. Only the kits whose records do not
    chain up (normally none) are read one by one, to word their discrepancies."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        lots = {
            row.id: row.lot_code
            for row in session.execute(select(Batch.id, Batch.lot_code).where(Batch.trial_id == trial.id))
        }
        reach = and_(Kit.trial_id == trial.id, kit_reach(scope, include_depot))
        groups: dict[tuple[str, str], dict[str, Counter[str]]] = {}

        def group(site_id: int | None, batch_id: int | None) -> dict[str, Counter[str]]:
            key = (
                sites.get(site_id, "depot") if site_id is not None else "depot",
                lots.get(batch_id or -1, "-"),
            )
            return groups.setdefault(key, {"current": Counter(), "ever": Counter(), "printed": Counter()})

        # The trial's kits in one grouped read (issue 21: not of every kit event, and once for the
        # per-batch counts and the balances): current statuses, the statuses ever entered (the kits'
        # `ever_statuses`, checked against their histories below) and, for a kit on its way with no
        # site, its shipment.
        kits = session.execute(
            select(
                Kit.site_id, Kit.batch_id, Kit.status, Kit.ever_statuses, _ON_THE_WAY_SHIPMENT, func.count()
            )
            .where(Kit.trial_id == trial.id)
            .group_by(Kit.site_id, Kit.batch_id, Kit.status, Kit.ever_statuses, _ON_THE_WAY_SHIPMENT)
        ).all()
        for site_id, batch_id, status, ever, _shipment, count in kits:
            if not (scope.allows_site(site_id) if site_id is not None else include_depot):
                continue  # kit_reach, for this read of every kit of the trial
            counts = group(site_id, batch_id)
            counts["current"][status] += count
            for entered in KitStatus:
                if ever & status_bit(entered.value):
                    counts["ever"][entered.value] += count
        for site_id, batch_id, printed, reprinted in session.execute(_labels_printed(session, reach, trial)):
            group(site_id, batch_id)["printed"]["printed"] += printed or 0
            group(site_id, batch_id)["printed"]["reprinted"] += reprinted or 0
        problems = _kit_discrepancies(session, reach, kit_check.kept(session, ctx.ring, trial))
        problems += _shipment_discrepancies(session, trial, scope)
        balances = _balances(session, trial, scope, sites, kits)
        problems += [
            f"site {b.site}: {b.shipped} kits shipped but {b.accounted} accounted for"
            for b in balances
            if not b.balanced
        ]
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
        return Reconciliation(rows=rows, discrepancies=tuple(problems), balances=balances)


def _labels_printed(
    session: Session, reach: ColumnElement[bool], trial: Trial
) -> Select[int | None, int | None, Any, Any]:
    """Per site and batch of the kits within reach: how many times their numbers appear on the
    trial's printed documents that list kit numbers, first prints and reprints apart."""
    per_number = documents.printed_items(session, trial, documents.KIT_NUMBER_KINDS)
    return (
        select(Kit.site_id, Kit.batch_id, func.sum(per_number.c.printed), func.sum(per_number.c.reprinted))
        .join(per_number, and_(Kit.trial_id == trial.id, Kit.kit_number == per_number.c.item))
        .where(reach)
        .group_by(Kit.site_id, Kit.batch_id)
    )


_IN_USE = (S.AVAILABLE.value, S.ALLOCATED.value, S.DISPENSED.value)


def _kit_discrepancies(
    session: Session, reach: ColumnElement[bool], kept: kit_check.KeptCheck | None
) -> list[str]:
    """A kit within reach whose records do not agree (`kit_check`: its events do not chain up from
    nothing to its current status, or it has no event, or its statuses ever entered differ from its
    events'), checked since the `kept` daily check or, without one, every kit; or a kit in use at no
    site. The database finds these kits; only they are read, and worded in kit order."""
    astray = select(Kit.id).where(reach, Kit.site_id.is_(None), Kit.status.in_(_IN_USE))
    suspects = sorted(set(kit_check.suspects(session, reach, kept)) | set(session.execute(astray).scalars()))
    problems: list[str] = []
    for start in range(0, len(suspects), 500):
        ids = suspects[start : start + 500]
        events: dict[int, list[Any]] = {}
        for event in session.execute(
            select(KitEvent.kit_id, KitEvent.at, KitEvent.from_status, KitEvent.to_status)
            .where(KitEvent.kit_id.in_(ids))
            .order_by(KitEvent.id)
        ):
            events.setdefault(event.kit_id, []).append(event)
        for kit in session.execute(
            select(Kit.id, Kit.kit_number, Kit.status, Kit.site_id, Kit.ever_statuses)
            .where(Kit.id.in_(ids))
            .order_by(Kit.id)
        ):
            number = kitlib.format_kit_number(kit.kit_number)
            previous: str | None = None
            for event in events.get(kit.id, []):
                if event.from_status != previous:
                    problems.append(
                        f"kit {number}: the event at {event.at:%Y-%m-%d %H:%M} starts from "
                        f"{event.from_status}, not {previous}"
                    )
                    break
                previous = event.to_status
            if previous != kit.status:
                problems.append(f"kit {number} is {kit.status} but its history ends at {previous}")
            if kit.ever_statuses != status_bits(event.to_status for event in events.get(kit.id, [])):
                problems.append(f"kit {number}: its statuses ever entered differ from its history")
            if kit.status in _IN_USE and kit.site_id is None:
                problems.append(f"kit {number} is {kit.status} but at no site")
    return problems


def _balances(
    session: Session, trial: Trial, scope: Scope, sites: dict[int, str], kits: Sequence[Sequence[Any]]
) -> tuple[SiteBalance, ...]:
    """Per site within reach: the kits its shipped or received shipments record, against the kits
    that are there now or on their way there (a kit in transit is not at a site yet: its shipment
    says where it goes), by term of BALANCE_TERMS. A kit of a shipped shipment with no site that is
    not in transit (quarantined, damaged or lost on the way after a transit excursion) counts at its
    shipment's destination too: as in transit while the parcel is on its way, else by its status.
    `kits` are the trial's kits counted in the database per site (or, for kits on the way, per
    shipment), batch, status and statuses ever entered (`reconciliation`)."""
    sent = (Shipment.trial_id == trial.id, Shipment.status.in_(("shipped", "received")))
    destination: dict[int, tuple[int, str]] = {
        row.id: (row.site_id, row.status)
        for row in session.execute(select(Shipment.id, Shipment.site_id, Shipment.status).where(*sent))
    }
    shipped: Counter[int] = Counter()
    for destined, count in session.execute(
        select(Shipment.site_id, func.sum(Shipment.kit_count)).where(*sent).group_by(Shipment.site_id)
    ):
        shipped[destined] += count or 0
    terms: dict[int, Counter[str]] = {}
    for kit_site, _batch, status, _ever, shipment_id, count in kits:
        term = _TERM_OF.get(status)
        place = kit_site
        if kit_site is None and shipment_id in destination and status in _ON_THE_WAY:
            place, shipment_status = destination[shipment_id]
            if shipment_status == "shipped" and term == "on_hand":
                term = "in_transit"  # quarantined or damaged in the parcel, still on its way
        if place is None or term is None:
            continue
        terms.setdefault(place, Counter())[term] += count
    return tuple(
        SiteBalance(
            site=code,
            shipped=shipped[site_id],
            terms={term: terms.get(site_id, Counter())[term] for term in BALANCE_TERMS},
        )
        for site_id, code in sorted(sites.items(), key=lambda item: item[1])
        if scope.allows_site(site_id) and (shipped[site_id] or site_id in terms)
    )


def _shipment_discrepancies(session: Session, trial: Trial, scope: Scope) -> list[str]:
    """Each shipment within reach must hold as many kits as it records, and once received none of
    them may still be in transit (its kits counted per shipment in the database)."""
    carried: Counter[int | None] = Counter()
    in_transit: Counter[int | None] = Counter()
    for shipment_id, count, moving in session.execute(
        select(
            Kit.shipment_id,
            func.count(),
            func.sum(case((Kit.status == S.IN_TRANSIT.value, 1), else_=0)),
        )
        .where(Kit.trial_id == trial.id, Kit.shipment_id.is_not(None))
        .group_by(Kit.shipment_id)
    ):
        carried[shipment_id] = count
        in_transit[shipment_id] = moving or 0
    problems = []
    for shipment in session.execute(
        select(Shipment.id, Shipment.site_id, Shipment.number, Shipment.status, Shipment.kit_count)
        .where(Shipment.trial_id == trial.id)
        .order_by(Shipment.id)
    ):
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
    """One row per site and batch, then one DISCREPANCY row per problem (ACC-11: text cells
    neutralised, like every CSV of the service)."""
    statuses = [s.value for s in KitStatus]
    rows: list[Sequence[object]] = [
        [
            "site",
            "batch",
            "total",
            *(f"now_{s}" for s in statuses),
            *(f"ever_{s}" for s in statuses),
            "labels_printed",
            "labels_reprinted",
        ]
    ]
    for row in report.rows:
        rows.append(
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
    # Issue 19: each site's balance of every kit's life, after the site-and-batch rows.
    rows += [
        ["BALANCE", b.site, b.shipped, *(f"{term}={b.terms[term]}" for term in BALANCE_TERMS)]
        for b in report.balances
    ]
    rows += [["DISCREPANCY", problem] for problem in report.discrepancies]
    return csv_text(rows)
