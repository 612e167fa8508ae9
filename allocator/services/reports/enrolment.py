"""Enrolment (accrual) report per site and week."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func

from allocator.models import Subject
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ALL_SITES, ReportFilter, frame_subjects, scoped_frame
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
                totals=1,
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
    cumulative enrolment chart (every subject counts, randomized in error included: ITT). The
    database counts each site's subjects and finds their first and last randomization; the weeks
    and the chart are of calendar days in the trial's time zone, which SQLite cannot tell: each
    subject's randomization time is read and put in that zone once, then only days are counted
    (issue 21)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    zone = ZoneInfo(frame.definition.timezone)
    with ctx.db.reading() as session:
        totals = {
            site_id: (count, first, last)
            for site_id, count, first, last in session.execute(
                frame_subjects(
                    frame,
                    Subject.site_id,
                    func.count(Subject.id),
                    func.min(Subject.randomized_at),
                    func.max(Subject.randomized_at),
                ).group_by(Subject.site_id)
            ).all()
        }
        # A Core statement (rows by position, no ORM layer): one row per subject.
        days: dict[str, Counter[date]] = {code: Counter() for code in frame.site_codes}
        every_day: Counter[date] = Counter()
        per_site = {site_id: days[code] for site_id, code in frame.sites.items() if code in days}
        for site_id, at in (
            session.connection().execute(frame_subjects(frame, Subject.site_id, Subject.randomized_at)).all()
        ):
            day = at.astimezone(zone).date()
            per_site[site_id][day] += 1
            every_day[day] += 1
    by_code = {frame.sites[site_id]: counted for site_id, counted in totals.items()}
    sites = tuple(SiteAccrual(code, *by_code.get(code, (0, None, None))) for code in sorted(days))
    firsts = [s.first for s in sites if s.first is not None]
    lasts = [s.last for s in sites if s.last is not None]
    overall = SiteAccrual(
        ALL_SITES, sum(s.randomized for s in sites), min(firsts, default=None), max(lasts, default=None)
    )
    weeks: list[WeekAccrual] = []
    chart = None
    if overall.first is not None and overall.last is not None:
        first = overall.first.astimezone(zone).date()
        monday = first - timedelta(days=first.weekday())
        last = overall.last.astimezone(zone).date()
        for code, counted in sorted(days.items()):
            per_week: Counter[date] = Counter()
            for day, n in counted.items():
                per_week[day - timedelta(days=day.weekday())] += n
            cumulative, week = 0, monday
            while week <= last:
                cumulative += per_week.get(week, 0)
                weeks.append(WeekAccrual(week, code, per_week.get(week, 0), cumulative))
                week += timedelta(days=7)
        series = [_cumulative(code, counted) for code, counted in sorted(days.items())]
        if len(days) > 1:
            series.append(_cumulative(ALL_SITES, every_day))
        chart = monitoring_reports.StepChart(
            N_("Cumulative enrolment per site"), N_("Subjects randomized"), tuple(series)
        )
    weeks.sort(key=lambda w: (w.week_start, w.site))
    return Enrolment(frame.definition.timezone, sites, overall, tuple(weeks), chart)


def _cumulative(label: str, counts: Counter[date]) -> monitoring_reports.Series:
    points, total = [], 0
    for day in sorted(counts):
        total += counts[day]
        points.append((day, total))
    return monitoring_reports.Series(label, tuple(points))
