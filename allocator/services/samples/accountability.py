"""Sample accountability of an observational study (issue 20): per site, the tube sets collected,
awaiting shipment, shipped, in transit, received, unusable (by reason) and missing (not received at
the lab), the pre-analytical delays beyond the definition's limit, and the list of every collected
sample; as a page and as CSV. For the monitor, the trial manager and the lab technician."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, case, func, select

from allocator.models import SampleKit, SampleKitStatus, Site
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services.context import ServiceContext
from allocator.services.lookups import current_definition, get_trial
from allocator.services.reports.filters import Window
from allocator.services.samples.lab_shipments import (
    NOT_RECEIVED,
    SampleRow,
    late_in_sql,
    max_delay_hours,
    sample_rows,
)

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
    samples: tuple[SampleRow, ...]  # every collected sample, or with a window only the window's
    window: Window | None = None

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


def accountability(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, window: Window | None = None
) -> Accountability:
    """The accountability of the collected samples of the sites in `scope`: the counts per site
    over every collected sample, and the list of them (every one, or with a `window` a page of
    them: issue 21, one row per tube set collected, 20,000 in a large cohort). The counts are made
    in the database, in one statement, however many samples there are. Raises NotFound, Conflict
    (a randomized trial has no samples)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        limit = max_delay_hours(current_definition(session, trial))
        conditions: list[ColumnElement[bool]] = [SampleKit.collected_at.is_not(None)]
        if not scope.all_sites:
            conditions.append(SampleKit.site_id.in_(sorted(scope.site_ids)))
        # The flags computed once per tube set, then grouped (PostgreSQL would not match a grouped
        # expression holding a parameter with the same expression in the select list).
        flagged = (
            select(
                Site.code.label("site"),
                SampleKit.status.label("status"),
                SampleKit.lab_shipment_id.is_not(None).label("shipped"),
                case((SampleKit.status == T.UNUSABLE.value, SampleKit.reason), else_=None).label("reason"),
                case((late_in_sql(session, limit), 1), else_=0).label("late"),
            )
            .join(Site, Site.id == SampleKit.site_id)
            .where(SampleKit.trial_id == trial.id, *conditions)
            .subquery()
        )
        columns = (flagged.c.site, flagged.c.status, flagged.c.shipped, flagged.c.reason, flagged.c.late)
        counted = session.execute(select(*columns, func.count()).group_by(*columns)).all()
        if window is None:
            rows = sample_rows(session, trial, limit, *conditions)
        else:
            rows = sample_rows(session, trial, limit, *conditions, start=window.start, size=window.size)
    sites: dict[str, SiteAccount] = {}
    for site, status, shipped, reason, late, count in counted:
        account = sites.setdefault(site, SiteAccount(site=site))
        account.collected += count
        if status == T.COLLECTED.value:
            account.awaiting_shipment += count
            continue
        if shipped:
            account.shipped += count
        if status == T.SHIPPED.value:
            account.in_transit += count
        elif status == T.RECEIVED.value:
            account.received += count
        elif status == T.UNUSABLE.value and reason == NOT_RECEIVED:
            account.missing += count
        elif status == T.UNUSABLE.value:
            account.unusable += count
            account.unusable_reasons[reason_code(reason)] += count
        if late:
            account.late += count
    return Accountability(limit, tuple(sites[k] for k in sorted(sites)), tuple(rows), window)


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
