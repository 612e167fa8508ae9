"""The STROBE-style participant flow of an observational study (issue 20): screened, not eligible
(by reason), eligible, registered; per timepoint, samples planned, collected or missed (or still
pending), received at the lab or unusable, analysable; participants with every sample analysable.
In total and per site.

Every planned sample is in exactly one branch: planned = collected + missed + pending + unusable
before collection; collected = received + awaiting receipt + unusable before receipt; received =
analysable + unusable at the lab."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports import cohort_common
from allocator.services.reports.cohort_common import Registered, Sample
from allocator.services.reports.cohort_screening import failed_criteria
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
class SampleFlow:
    planned: int
    collected: int
    missed: int
    pending: int
    received: int
    awaiting_receipt: int
    unusable: int  # the three below
    unusable_before_collection: int  # the tube set, before any blood was drawn into it
    unusable_before_receipt: int  # collected, never received at the lab
    unusable_at_lab: int  # received, then found unusable
    analysable: int


@dataclass(frozen=True, slots=True)
class StrobeCounts:
    screened: int
    not_eligible: int
    eligible: int
    registered: int
    samples: tuple[SampleFlow, ...]  # per timepoint
    analysable_participants: int  # every planned sample analysable


def _samples(rows: Sequence[Sample]) -> SampleFlow:
    return SampleFlow(
        planned=len(rows),
        collected=sum(r.collected for r in rows),
        missed=sum(r.missed for r in rows),
        pending=sum(r.pending for r in rows),
        received=sum(r.received for r in rows),
        awaiting_receipt=sum(r.collected and not r.received and not r.unusable for r in rows),
        unusable=sum(r.unusable for r in rows),
        unusable_before_collection=sum(r.unusable and not r.collected for r in rows),
        unusable_before_receipt=sum(r.unusable and r.collected and not r.received for r in rows),
        unusable_at_lab=sum(r.unusable and r.received for r in rows),
        analysable=sum(r.analysable for r in rows),
    )


def _counts(
    screened: Sequence[Screened],
    registered: Sequence[Registered],
    rows: Sequence[Sample],
    labels: Sequence[str],
) -> StrobeCounts:
    by_subject: dict[str, list[Sample]] = defaultdict(list)
    for r in rows:
        by_subject[r.subject_number].append(r)
    return StrobeCounts(
        screened=len(screened),
        not_eligible=sum(not s.eligible for s in screened),
        eligible=sum(s.eligible for s in screened),
        registered=len(registered),
        samples=tuple(_samples([r for r in rows if r.label == label]) for label in labels),
        analysable_participants=sum(
            bool(by_subject[p.subject_number]) and all(r.analysable for r in by_subject[p.subject_number])
            for p in registered
        ),
    )


@dataclass(frozen=True, slots=True)
class StrobeFlow:
    definition: TrialDefinition
    timepoints: tuple[str, ...]
    columns: tuple[str, ...]  # ALL_SITES, then each site
    counts: tuple[StrobeCounts, ...]  # one per column
    reasons: tuple[tuple[str, int, tuple[int, ...]], ...]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        total = self.counts[0]
        return (
            (_("Patients screened"), _.n(total.screened)),
            (_("Not eligible"), _.n(total.not_eligible)),
            (_("Registered"), _.n(total.registered)),
            (_("Participants with every sample analysable"), _.n(total.analysable_participants)),
        )

    def _measures(self, _: Words) -> tuple[tuple[str, ...], ...]:
        c = self.counts
        rows: list[tuple[str, ...]] = [
            (_("Patients screened"), *(_.n(x.screened) for x in c)),
            (_("Not eligible"), *(_.n(x.not_eligible) for x in c)),
            (_("Eligible"), *(_.n(x.eligible) for x in c)),
            (_("Registered"), *(_.n(x.registered) for x in c)),
        ]
        for i, label in enumerate(self.timepoints):
            for measure, field in (
                (N_("%(timepoint)s sample planned"), "planned"),
                (N_("%(timepoint)s collected"), "collected"),
                (N_("%(timepoint)s missed"), "missed"),
                (N_("%(timepoint)s not yet collected"), "pending"),
                (N_("%(timepoint)s tube set unusable before collection"), "unusable_before_collection"),
                (N_("%(timepoint)s collected, not yet received"), "awaiting_receipt"),
                (N_("%(timepoint)s unusable before receipt at the lab"), "unusable_before_receipt"),
                (N_("%(timepoint)s received at the lab"), "received"),
                (N_("%(timepoint)s unusable at the lab"), "unusable_at_lab"),
                (N_("%(timepoint)s analysable"), "analysable"),
            ):
                counted = (int(getattr(x.samples[i], field)) for x in c)
                rows.append((_(measure, timepoint=label), *(_.n(n) for n in counted)))
        rows.append(
            (_("Participants with every sample analysable"), *(_.n(x.analysable_participants) for x in c))
        )
        return tuple(rows)

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Participant flow (STROBE)"),
                (_("Measure"), *(_(c) if c == ALL_SITES else c for c in self.columns)),
                self._measures(_),
                _(
                    "Patients screened in the period (the latest check of each screening number); "
                    "participants registered in the period and their samples."
                ),
            ),
            monitoring_reports.Table(
                _("Not eligible: failed criteria"),
                (_("Criterion"), _("Patients")),
                tuple(
                    (cohort_common.criterion_text(self.definition, c, _), _.n(n))
                    for c, n, _sites in self.reasons
                ),
                _("Patients may fail several criteria."),
            ),
        )


def strobe_flow(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> StrobeFlow:
    """The participant flow within reach and period: three queries (screening, registrations,
    samples), whatever the size of the cohort."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    screened = latest_screenings(ctx, frame)
    registered = cohort_common.registrations(ctx, frame)
    rows = cohort_common.samples(ctx, frame)
    labels = list(cohort_common.timepoints(frame.definition))
    labels += sorted({r.label for r in rows} - set(labels))
    sites = frame.site_codes
    counts = [_counts(screened, registered, rows, labels)]
    for code in sites:
        counts.append(
            _counts(
                [s for s in screened if s.site == code],
                [r for r in registered if r.site == code],
                [r for r in rows if r.site == code],
                labels,
            )
        )
    return StrobeFlow(
        frame.definition, tuple(labels), (ALL_SITES, *sites), tuple(counts), failed_criteria(screened, sites)
    )
