"""Recruitment of an observational study (issue 20): registrations per site and per month,
cumulative against the target sample size, first and last registration per site."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime

from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports import cohort_common
from allocator.services.reports.filters import ALL_SITES, ReportFilter, scoped_frame
from allocator.wording import Words

TARGET = N_("Target")


@dataclass(frozen=True, slots=True)
class SiteRecruitment:
    site: str
    registered: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class MonthRecruitment:
    month: str  # YYYY-MM in the study's time zone
    site: str  # a site code, or ALL_SITES
    registered: int
    cumulative: int


@dataclass(frozen=True, slots=True)
class Recruitment:
    timezone: str
    target: int
    sites: tuple[SiteRecruitment, ...]
    overall: SiteRecruitment
    months: tuple[MonthRecruitment, ...]  # per site, then ALL_SITES, month by month
    chart: monitoring_reports.StepChart | None

    def _share(self, count: int, _: Words) -> str:
        return _("%(percent)s %%", percent=_.n(round(100 * count / self.target, 1)))

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        return (
            (_("Target sample size"), _.n(self.target)),
            (_("Participants registered"), _.n(self.overall.registered)),
            (_("Share of the target"), self._share(self.overall.registered, _)),
            (_("First registration (UTC)"), _.utc(self.overall.first)),
            (_("Last registration (UTC)"), _.utc(self.overall.last)),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        per_site = tuple(
            (_(s.site) if s is self.overall else s.site, _.n(s.registered), _.utc(s.first), _.utc(s.last))
            for s in (*self.sites, self.overall)
        )
        months = tuple(
            (m.month, _(m.site) if m.site == ALL_SITES else m.site, _.n(m.registered), _.n(m.cumulative))
            for m in self.months
            if m.site != ALL_SITES
        )
        against = tuple(
            (m.month, _.n(m.registered), _.n(m.cumulative), _.n(self.target), self._share(m.cumulative, _))
            for m in self.months
            if m.site == ALL_SITES
        )
        zone = _("Months in the study's time zone (%(zone)s).", zone=self.timezone)
        return (
            monitoring_reports.Table(
                _("Registrations per site"),
                (_("Site"), _("Registered"), _("First registration (UTC)"), _("Last registration (UTC)")),
                per_site,
                totals=1,
            ),
            monitoring_reports.Table(
                _("Registrations per month and site"),
                (_("Month"), _("Site"), _("Registered"), _("Cumulative")),
                months,
                zone,
            ),
            monitoring_reports.Table(
                _("Cumulative recruitment against the target"),
                (_("Month"), _("Registered"), _("Cumulative"), _("Target"), _("Share of the target")),
                against,
                zone,
            ),
        )

    def chart_in(self, _: Words) -> monitoring_reports.StepChart | None:
        if self.chart is None:
            return None
        return monitoring_reports.StepChart(
            _(self.chart.title),
            _(self.chart.y_label),
            tuple(
                monitoring_reports.Series(_(s.label) if s.label in (ALL_SITES, TARGET) else s.label, s.points)
                for s in self.chart.series
            ),
            x_label=_("Date"),
        )


def _months(first: date, last: date) -> list[str]:
    out, year, month = [], first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _cumulative(label: str, days: list[date]) -> monitoring_reports.Series:
    counts = Counter(days)
    points, total = [], 0
    for day in sorted(counts):
        total += counts[day]
        points.append((day, total))
    return monitoring_reports.Series(label, tuple(points))


def recruitment(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Recruitment:
    """Participants registered per site and per month (the study's time zone), the cumulative count
    against the definition's target sample size, first and last registration per site, and the
    cumulative chart with the target. One query for the registrations."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    rows = cohort_common.registrations(ctx, frame)
    by_site: dict[str, list[datetime]] = {code: [] for code in frame.site_codes}
    for r in rows:
        by_site.setdefault(r.site, []).append(r.registered_at)
    everything = [r.registered_at for r in rows]
    sites = tuple(
        SiteRecruitment(code, len(times), min(times, default=None), max(times, default=None))
        for code, times in sorted(by_site.items())
    )
    overall = SiteRecruitment(
        ALL_SITES, len(everything), min(everything, default=None), max(everything, default=None)
    )
    local = frame.definition.local_date
    months: list[MonthRecruitment] = []
    chart = None
    target = frame.definition.target_sample_size
    if everything:
        span = _months(local(min(everything)), local(max(everything)))
        for code, times in (*sorted(by_site.items()), (ALL_SITES, everything)):
            counts = Counter(local(at).strftime("%Y-%m") for at in times)
            cumulative = 0
            for month in span:
                cumulative += counts.get(month, 0)
                months.append(MonthRecruitment(month, code, counts.get(month, 0), cumulative))
        series = [_cumulative(code, [local(at) for at in times]) for code, times in sorted(by_site.items())]
        if len(by_site) > 1:
            series.append(_cumulative(ALL_SITES, [local(at) for at in everything]))
        series.append(monitoring_reports.Series(TARGET, ((local(min(everything)), target),)))
        chart = monitoring_reports.StepChart(
            N_("Cumulative recruitment per site against the target"),
            N_("Participants registered"),
            tuple(series),
        )
    return Recruitment(frame.definition.timezone, target, sites, overall, tuple(months), chart)
