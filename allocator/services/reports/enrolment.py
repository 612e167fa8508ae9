"""Enrolment (accrual) report per site and week."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from allocator.models import Subject
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, time_text

# --- recruitment and enrolment (REP-05, REP-08) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteAccrual:
    site: str
    randomized: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class WeekAccrual:
    week_start: date  # the Monday, trial local time
    site: str
    randomized: int
    cumulative: int


@dataclass(frozen=True, slots=True)
class Enrolment:
    timezone: str
    sites: tuple[SiteAccrual, ...]
    overall: SiteAccrual
    weeks: tuple[WeekAccrual, ...]
    chart: monitoring_reports.StepChart | None

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Subjects randomized", str(self.overall.randomized)),
            ("First randomization (UTC)", time_text(self.overall.first)),
            ("Last randomization (UTC)", time_text(self.overall.last)),
        )

    def tables(self) -> tuple[monitoring_reports.Table, ...]:
        per_site = tuple(
            (s.site, str(s.randomized), time_text(s.first), time_text(s.last))
            for s in (*self.sites, self.overall)
        )
        weeks = tuple(
            (w.week_start.isoformat(), w.site, str(w.randomized), str(w.cumulative)) for w in self.weeks
        )
        return (
            monitoring_reports.Table(
                "Recruitment dates per site",
                ("Site", "Randomized", "First randomization (UTC)", "Last randomization (UTC)"),
                per_site,
            ),
            monitoring_reports.Table(
                "Accrual per week and site",
                ("Week starting", "Site", "Randomized", "Cumulative"),
                weeks,
                f"Weeks start on Monday, dates in the trial's time zone ({self.timezone}).",
            ),
        )


def enrolment(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Enrolment:
    """First and last randomization per site and overall, accrual per week and site, and the
    cumulative enrolment chart (every subject counts, randomized in error included: ITT)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        rows = [
            (site_id, at)
            for site_id, at in session.execute(
                select(Subject.site_id, Subject.randomized_at)
                .where(Subject.trial_id == frame.trial_id)
                .order_by(Subject.randomized_at, Subject.id)
            ).all()
            if frame.visible(site_id) and frame.flt.in_period(at)
        ]
    codes = frame.site_codes
    by_site: dict[str, list[datetime]] = {code: [] for code in codes}
    for site_id, at in rows:
        by_site.setdefault(frame.sites[site_id], []).append(at)
    everything = [at for _, at in rows]
    sites = tuple(
        SiteAccrual(code, len(times), min(times, default=None), max(times, default=None))
        for code, times in sorted(by_site.items())
    )
    overall = SiteAccrual(
        "All sites", len(everything), min(everything, default=None), max(everything, default=None)
    )
    local = frame.definition.local_date
    weeks: list[WeekAccrual] = []
    if everything:
        first = local(min(everything))
        monday = first - timedelta(days=first.weekday())
        last = local(max(everything))
        for code, times in sorted(by_site.items()):
            counts = Counter(local(at) - timedelta(days=local(at).weekday()) for at in times)
            cumulative, week = 0, monday
            while week <= last:
                cumulative += counts.get(week, 0)
                weeks.append(WeekAccrual(week, code, counts.get(week, 0), cumulative))
                week += timedelta(days=7)
    chart = None
    if everything:
        series = [_cumulative(code, [local(at) for at in times]) for code, times in sorted(by_site.items())]
        if len(by_site) > 1:
            series.append(_cumulative("All sites", [local(at) for at in everything]))
        chart = monitoring_reports.StepChart(
            "Cumulative enrolment per site", "Subjects randomized", tuple(series)
        )
    weeks.sort(key=lambda w: (w.week_start, w.site))
    return Enrolment(frame.definition.timezone, sites, overall, tuple(weeks), chart)


def _cumulative(label: str, days: Iterable[date]) -> monitoring_reports.Series:
    counts = Counter(days)
    points, total = [], 0
    for day in sorted(counts):
        total += counts[day]
        points.append((day, total))
    return monitoring_reports.Series(label, tuple(points))
