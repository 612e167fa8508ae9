"""Sample accountability of an observational study (issue 20): per site, the tube sets collected,
awaiting shipment, shipped, in transit, received, unusable (by reason) and missing (not received at
the lab), the pre-analytical delays beyond the definition's limit, and the list of every collected
sample; as a page and as CSV. For the monitor, the trial manager and the lab technician."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from allocator.models import SampleKit, SampleKitStatus
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services.context import ServiceContext
from allocator.services.lookups import current_definition, get_trial
from allocator.services.samples.lab_shipments import NOT_RECEIVED, SampleRow, max_delay_hours, sample_rows

T = SampleKitStatus


@dataclass(slots=True)
class SiteAccount:
    site: str
    collected: int = 0
    awaiting_shipment: int = 0
    shipped: int = 0
    in_transit: int = 0
    received: int = 0
    unusable: int = 0
    missing: int = 0
    late: int = 0
    unusable_reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Accountability:
    max_delay_hours: int
    sites: tuple[SiteAccount, ...]
    samples: tuple[SampleRow, ...]

    @property
    def total(self) -> SiteAccount:
        total = SiteAccount(site="")
        for s in self.sites:
            for name in (
                "collected",
                "awaiting_shipment",
                "shipped",
                "in_transit",
                "received",
                "unusable",
                "missing",
                "late",
            ):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.unusable_reasons.update(s.unusable_reasons)
        return total


def reason_code(reason: str | None) -> str:
    """The reason's category (its words before a colon): "haemolysed", "other", ..."""
    return (reason or "").split(":", 1)[0].strip()


def accountability(ctx: ServiceContext, trial_code: str, scope: Scope) -> Accountability:
    """The accountability of the collected samples of the sites in `scope`. Raises NotFound,
    Conflict (a randomized trial has no samples)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        limit = max_delay_hours(current_definition(session, trial))
        conditions: list[object] = [SampleKit.collected_at.is_not(None)]
        if not scope.all_sites:
            conditions.append(SampleKit.site_id.in_(scope.site_ids))
        rows = sample_rows(session, trial, limit, *conditions)
    sites: dict[str, SiteAccount] = {}
    for row in rows:
        account = sites.setdefault(row.site, SiteAccount(site=row.site))
        account.collected += 1
        if row.status == T.COLLECTED.value:
            account.awaiting_shipment += 1
            continue
        if row.shipment is not None and row.status != T.COLLECTED.value:
            account.shipped += 1
        if row.status == T.SHIPPED.value:
            account.in_transit += 1
        elif row.status == T.RECEIVED.value:
            account.received += 1
        elif row.status == T.UNUSABLE.value and row.reason == NOT_RECEIVED:
            account.missing += 1
        elif row.status == T.UNUSABLE.value:
            account.unusable += 1
            account.unusable_reasons[reason_code(row.reason)] += 1
        if row.late:
            account.late += 1
    return Accountability(limit, tuple(sites[k] for k in sorted(sites)), tuple(rows))


CSV_COLUMNS = (
    "site",
    "subject_number",
    "sample",
    "tube_set",
    "status",
    "collected_at",
    "shipment",
    "received_at",
    "received_by",
    "preanalytical_delay_hours",
    "delay_beyond_limit",
    "reason",
)


def accountability_csv(ctx: ServiceContext, trial_code: str, scope: Scope) -> str:
    """The per-sample list as CSV (UTC times, ISO 8601; one line per collected tube set; cells that
    could start a spreadsheet formula neutralised)."""
    report = accountability(ctx, trial_code, scope)
    rows: list[tuple[object, ...]] = [CSV_COLUMNS]
    for s in report.samples:
        rows.append(
            (
                s.site,
                s.subject_number,
                s.label,
                s.kit_number,
                s.status,
                s.collected_at.isoformat() if s.collected_at else "",
                s.shipment or "",
                s.received_at.isoformat() if s.received_at else "",
                s.received_by or "",
                "" if s.delay_hours is None else s.delay_hours,
                "yes" if s.late else "no",
                s.reason or "",
            )
        )
    return csv_text(rows)  # formula cells neutralised (ACC-11)
