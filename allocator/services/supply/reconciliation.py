"""Kit reconciliation per site and its CSV export."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.models import Batch, Kit, KitEvent, KitStatus, PrintedDocument, Shipment, Site, Trial
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services.context import ServiceContext
from allocator.services.lookups import get_trial
from allocator.services.supply.kit_rules import S

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
        balances = _balances(session, trial, scope, sites)
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


def _balances(session: Session, trial: Trial, scope: Scope, sites: dict[int, str]) -> tuple[SiteBalance, ...]:
    """Per site within reach: the kits its shipped or received shipments record, against the kits
    that are there now or on their way there (a kit in transit is not at a site yet: its shipment
    says where it goes), by term of BALANCE_TERMS. A kit of a shipped shipment with no site that is
    not in transit (quarantined, damaged or lost on the way after a transit excursion) counts at its
    shipment's destination too: as in transit while the parcel is on its way, else by its status."""
    destination: dict[int, tuple[int, str]] = {
        row.id: (row.site_id, row.status)
        for row in session.execute(
            select(Shipment.id, Shipment.site_id, Shipment.status).where(
                Shipment.trial_id == trial.id, Shipment.status.in_(("shipped", "received"))
            )
        )
    }
    shipped: Counter[int] = Counter()
    for destined, count in session.execute(
        select(Shipment.site_id, Shipment.kit_count).where(
            Shipment.trial_id == trial.id, Shipment.status.in_(("shipped", "received"))
        )
    ):
        shipped[destined] += count
    terms: dict[int, Counter[str]] = {}
    for kit_site, shipment_id, status in session.execute(
        select(Kit.site_id, Kit.shipment_id, Kit.status).where(Kit.trial_id == trial.id)
    ):
        term = _TERM_OF.get(status)
        place = kit_site
        if kit_site is None and shipment_id in destination and status in _ON_THE_WAY:
            place, shipment_status = destination[shipment_id]
            if shipment_status == "shipped" and term == "on_hand":
                term = "in_transit"  # quarantined or damaged in the parcel, still on its way
        if place is None or term is None:
            continue
        terms.setdefault(place, Counter())[term] += 1
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
