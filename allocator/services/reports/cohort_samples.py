"""Sample completeness of an observational study (issue 20): per timepoint (D3) and site, the
samples planned, collected (on the planned date, within the window on another day, outside the
window), missed (with reasons), received at the central lab, unusable, still pending, and the
pre-analytical delay (received_at - collected_at, median and max); then every sample."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports import cohort_common
from allocator.services.reports.cohort_common import MISSED, STATE_WORDS, UNUSABLE, Sample
from allocator.services.reports.filters import ALL_SITES, ReportFilter, kit_text, scoped_frame
from allocator.wording import Words


@dataclass(frozen=True, slots=True)
class Completeness:
    timepoint: str
    site: str  # a site code, or ALL_SITES
    planned: int
    collected: int
    on_planned_date: int
    in_window_other_day: int
    outside_window: int
    missed: int
    received: int
    unusable: int
    pending: int
    delay_median: timedelta | None
    delay_max: timedelta | None


def completeness(timepoint: str, site: str, rows: Sequence[Sample]) -> Completeness:
    delays = [d for d in (r.delay for r in rows) if d is not None]
    return Completeness(
        timepoint,
        site,
        planned=len(rows),
        collected=sum(r.collected for r in rows),
        on_planned_date=sum(r.on_planned_date for r in rows),
        in_window_other_day=sum(r.in_window and not r.on_planned_date for r in rows),
        outside_window=sum(r.collected and not r.in_window for r in rows),
        missed=sum(r.missed for r in rows),
        received=sum(r.received for r in rows),
        unusable=sum(r.unusable for r in rows),
        pending=sum(r.pending for r in rows),
        delay_median=cohort_common.median_delay(delays),
        delay_max=max(delays, default=None),
    )


@dataclass(frozen=True, slots=True)
class SampleCompleteness:
    rows: tuple[Completeness, ...]  # per timepoint: each site, then ALL_SITES
    overall: Completeness  # every timepoint and site
    reasons: tuple[tuple[str, str, str, str, int], ...]  # timepoint, site, state, reason, samples
    samples: tuple[Sample, ...]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        o = self.overall
        return (
            (_("Samples planned"), _.n(o.planned)),
            (_("Collected"), _.n(o.collected)),
            (_("Collected on the planned date"), _.n(o.on_planned_date)),
            (_("Missed"), _.n(o.missed)),
            (_("Received at the lab"), _.n(o.received)),
            (_("Unusable"), _.n(o.unusable)),
            (_("Pending (not yet collected)"), _.n(o.pending)),
            (_("Pre-analytical delay, median"), cohort_common.hours_text(o.delay_median, _)),
            (_("Pre-analytical delay, maximum"), cohort_common.hours_text(o.delay_max, _)),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        hours = cohort_common.hours_text
        return (
            monitoring_reports.Table(
                _("Sample completeness per timepoint and site"),
                (
                    _("Timepoint"),
                    _("Site"),
                    _("Planned"),
                    _("Collected"),
                    _("On the planned date"),
                    _("Within the window, another day"),
                    _("Outside the window"),
                    _("Missed"),
                    _("Received at the lab"),
                    _("Unusable"),
                    _("Pending"),
                    _("Delay, median"),
                    _("Delay, maximum"),
                ),
                tuple(
                    (
                        c.timepoint,
                        _(c.site) if c.site == ALL_SITES else c.site,
                        _.n(c.planned),
                        _.n(c.collected),
                        _.n(c.on_planned_date),
                        _.n(c.in_window_other_day),
                        _.n(c.outside_window),
                        _.n(c.missed),
                        _.n(c.received),
                        _.n(c.unusable),
                        _.n(c.pending),
                        hours(c.delay_median, _),
                        hours(c.delay_max, _),
                    )
                    for c in self.rows
                ),
                _(
                    "Collection dates in the study's time zone; the pre-analytical delay runs from "
                    "collection to receipt at the central lab."
                ),
            ),
            monitoring_reports.Table(
                _("Missed and unusable samples: reasons"),
                (_("Timepoint"), _("Site"), _("Outcome"), _("Reason"), _("Samples")),
                tuple(
                    (timepoint, site, _(STATE_WORDS[state]), reason, _.n(n))
                    for timepoint, site, state, reason, n in self.reasons
                ),
            ),
            monitoring_reports.Table(
                _("Samples"),
                (
                    _("Subject"),
                    _("Site"),
                    _("Timepoint"),
                    _("Planned date"),
                    _("Window"),
                    _("Tube set"),
                    _("Status"),
                    _("Collected at (UTC)"),
                    _("Received at the lab (UTC)"),
                    _("Pre-analytical delay"),
                    _("Reason"),
                ),
                tuple(
                    (
                        s.subject_number,
                        s.site,
                        s.label,
                        _.day(s.planned),
                        _("%(start)s to %(end)s", start=_.day(s.due), end=_.day(s.window_end)),
                        kit_text(s.kit_number) if s.kit_number else "",
                        _(STATE_WORDS[s.state]),
                        _.utc(s.collected_at),
                        _.utc(s.received_at),
                        hours(s.delay, _),
                        s.reason or "",
                    )
                    for s in self.samples
                ),
            ),
        )


def sample_completeness(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> SampleCompleteness:
    """The planned samples of the participants registered in the period, within reach: one query
    (planned_sample, registration, sample_kit)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    rows = cohort_common.samples(ctx, frame)
    labels = list(cohort_common.timepoints(frame.definition))
    labels += sorted({r.label for r in rows} - set(labels))  # a timepoint since removed
    out: list[Completeness] = []
    for label in labels:
        at = [r for r in rows if r.label == label]
        out.extend(completeness(label, code, [r for r in at if r.site == code]) for code in frame.site_codes)
        out.append(completeness(label, ALL_SITES, at))
    reasons = Counter(
        (r.label, r.site, r.state, (r.reason or "").strip()) for r in rows if r.state in (MISSED, UNUSABLE)
    )
    return SampleCompleteness(
        tuple(out),
        completeness("", ALL_SITES, rows),
        tuple((t, site, state, why, n) for (t, site, state, why), n in sorted(reasons.items())),
        tuple(rows),
    )
