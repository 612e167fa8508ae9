"""Enrolment (accrual) report per site and week."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from allocator.models import Subject
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ALL_SITES, ReportFilter, scoped_frame
from allocator.wording import Words

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

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        return (
            (_("Subjects randomized"), _.n(self.overall.randomized)),
            (_("First randomization (UTC)"), _.utc(self.overall.first)),
            (_("Last randomization (UTC)"), _.utc(self.overall.last)),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        per_site = tuple(
            (_(s.site) if s is self.overall else s.site, _.n(s.randomized), _.utc(s.first), _.utc(s.last))
            for s in (*self.sites, self.overall)
        )
        weeks = tuple((_.day(w.week_start), w.site, _.n(w.randomized), _.n(w.cumulative)) for w in self.weeks)
        return (
            monitoring_reports.Table(
                _("Recruitment dates per site"),
                (_("Site"), _("Randomized"), _("First randomization (UTC)"), _("Last randomization (UTC)")),
                per_site,
            ),
            monitoring_reports.Table(
                _("Accrual per week and site"),
                (_("Week starting"), _("Site"), _("Randomized"), _("Cumulative")),
                weeks,
                _("Weeks start on Monday, dates in the trial's time zone (%(zone)s).", zone=self.timezone),
            ),
        )

    def chart_in(self, _: Words) -> monitoring_reports.StepChart | None:
        """The chart with its title, axis and the all-sites series in the reader's words."""
        if self.chart is None:
            return None
        return monitoring_reports.StepChart(
            _(self.chart.title),
            _(self.chart.y_label),
            tuple(
                monitoring_reports.Series(_(s.label) if s.label == ALL_SITES else s.label, s.points)
                for s in self.chart.series
            ),
            x_label=_("Date"),
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
        ALL_SITES, len(everything), min(everything, default=None), max(everything, default=None)
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
            series.append(_cumulative(ALL_SITES, [local(at) for at in everything]))
        chart = monitoring_reports.StepChart(
            N_("Cumulative enrolment per site"), N_("Subjects randomized"), tuple(series)
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
