"""The screening log of an observational study with its failure reasons (issue 20): screened,
eligible, registered and not eligible per site, the patients per failed criterion (the criterion's
label in the reader's language), and the log itself, one row per patient."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports import cohort_common
from allocator.services.reports.filters import (
    ALL_SITES,
    ReportFilter,
    Screened,
    latest_screenings,
    scoped_frame,
)
from allocator.trialdef import TrialDefinition
from allocator.wording import Words


@dataclass(frozen=True, slots=True)
class ScreeningCounts:
    site: str  # a site code, or ALL_SITES
    screened: int
    eligible: int
    registered: int
    not_eligible: int


def _counts(site: str, patients: list[Screened]) -> ScreeningCounts:
    return ScreeningCounts(
        site,
        len(patients),
        sum(p.eligible for p in patients),
        sum(p.registered_as is not None for p in patients),
        sum(not p.eligible for p in patients),
    )


def failed_criteria(
    patients: list[Screened], sites: list[str]
) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """(criterion id, patients, patients per site in `sites`) of the patients not eligible, most
    frequent first: a patient counts once per criterion it failed."""
    total: Counter[str] = Counter()
    per_site: dict[str, Counter[str]] = {code: Counter() for code in sites}
    for p in patients:
        if p.eligible:
            continue
        for criterion in set(p.failed):
            total[criterion] += 1
            per_site.setdefault(p.site, Counter())[criterion] += 1
    return tuple(
        (c, n, tuple(per_site[code][c] for code in sites))
        for c, n in sorted(total.items(), key=lambda item: (-item[1], item[0]))
    )


@dataclass(frozen=True, slots=True)
class CohortScreening:
    definition: TrialDefinition
    sites: tuple[str, ...]
    counts: tuple[ScreeningCounts, ...]  # per site, then ALL_SITES
    reasons: tuple[tuple[str, int, tuple[int, ...]], ...]
    patients: tuple[Screened, ...]

    @property
    def overall(self) -> ScreeningCounts:
        return self.counts[-1]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        total = self.overall
        return (
            (_("Patients screened"), _.n(total.screened)),
            (_("Eligible"), _.n(total.eligible)),
            (_("Registered"), _.n(total.registered)),
            (_("Not eligible"), _.n(total.not_eligible)),
        )

    def _outcome(self, p: Screened, _: Words) -> str:
        if p.registered_as is not None:
            return _("registered as %(subject)s", subject=p.registered_as)
        return _("eligible, not registered") if p.eligible else _("not eligible")

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        text = cohort_common.criterion_text
        return (
            monitoring_reports.Table(
                _("Screening per site"),
                (_("Site"), _("Patients screened"), _("Eligible"), _("Registered"), _("Not eligible")),
                tuple(
                    (
                        _(c.site) if c.site == ALL_SITES else c.site,
                        _.n(c.screened),
                        _.n(c.eligible),
                        _.n(c.registered),
                        _.n(c.not_eligible),
                    )
                    for c in self.counts
                ),
                totals=1,
            ),
            monitoring_reports.Table(
                _("Not eligible: failed criteria"),
                (_("Criterion"), _(ALL_SITES), *self.sites),
                tuple(
                    (text(self.definition, c, _), _.n(n), *(_.n(x) for x in per_site))
                    for c, n, per_site in self.reasons
                ),
                _("Patients may fail several criteria."),
            ),
            monitoring_reports.Table(
                _("Screening log"),
                (
                    _("Screening number"),
                    _("Site"),
                    _("Screened at (UTC)"),
                    _("Outcome"),
                    _("Failed criteria"),
                ),
                tuple(
                    (
                        p.screening_number,
                        p.site,
                        _.utc(p.screened_at),
                        self._outcome(p, _),
                        "; ".join(text(self.definition, c, _) for c in p.failed),
                    )
                    for p in self.patients
                ),
                _(
                    "One row per patient: the latest check of each screening number (earlier checks "
                    "with corrected answers are kept in the screening log)."
                ),
            ),
        )


def cohort_screening(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> CohortScreening:
    """The study's screening log within reach and period (screening time): one query."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    patients = latest_screenings(ctx, frame)
    sites = frame.site_codes
    counts = [_counts(code, [p for p in patients if p.site == code]) for code in sites]
    counts.append(_counts(ALL_SITES, patients))
    return CohortScreening(
        frame.definition, tuple(sites), tuple(counts), failed_criteria(patients, sites), tuple(patients)
    )
