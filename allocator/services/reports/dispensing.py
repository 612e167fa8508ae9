"""Dispensing completeness report: doses dispensed and
administered per subject and site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import (
    ALL_SITES,
    Frame,
    ReportFilter,
    scoped_frame,
    strata_text,
    subject_views,
)
from allocator.services.subjects import views as subjects_views
from allocator.wording import Words

# --- dispensing completeness (REP-08, REP-04) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dose:
    day: str
    dispensed: bool
    administered: bool
    administered_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubjectDoses:
    subject_number: str
    site: str
    strata: str
    in_error: bool
    doses: tuple[Dose, ...]
    withdrawn: bool = False  # REP-04

    @property
    def given(self) -> int:
        return sum(d.administered for d in self.doses)

    @property
    def complete(self) -> bool:
        return bool(self.doses) and all(d.administered for d in self.doses)


@dataclass(frozen=True, slots=True)
class SiteDoses:
    site: str
    subjects: int
    dispensed: tuple[int, ...]  # per day
    administered: tuple[int, ...]  # per day
    complete: int


@dataclass(frozen=True, slots=True)
class DispensingCompleteness:
    day_labels: tuple[str, ...]
    subjects: tuple[SubjectDoses, ...]
    sites: tuple[SiteDoses, ...]  # each site, then "All sites"

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        total = self.sites[-1]
        share = f"{_.n(round(100 * total.complete / total.subjects))} %" if total.subjects else "-"
        return (
            (_("Subjects"), _.n(total.subjects)),
            (
                _("All %(n)s doses administered", n=len(self.day_labels)),
                f"{_.n(total.complete)} ({share})",
            ),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        def dose(d: Dose) -> str:
            if d.administered:
                return _("administered %(at)s", at=_.utc(d.administered_at))
            return _("dispensed") if d.dispensed else _("not dispensed")

        n = len(self.day_labels)
        return (
            monitoring_reports.Table(
                _("Doses per site"),
                (
                    _("Site"),
                    _("Subjects"),
                    *(_("%(day)s dispensed", day=label) for label in self.day_labels),
                    *(_("%(day)s administered", day=label) for label in self.day_labels),
                    _("%(n)s/%(n)s administered", n=n),
                ),
                tuple(
                    (
                        _(s.site) if s is self.sites[-1] else s.site,
                        _.n(s.subjects),
                        *(_.n(x) for x in s.dispensed),
                        *(_.n(x) for x in s.administered),
                        _.n(s.complete),
                    )
                    for s in self.sites
                ),
            ),
            monitoring_reports.Table(
                _("Doses per subject"),
                (
                    _("Subject"),
                    _("Site"),
                    _("Randomized in error"),
                    *self.day_labels,
                    _("Administered"),
                    _("Complete"),
                ),
                tuple(
                    (
                        s.subject_number,
                        s.site,
                        _.yes_no(s.in_error),
                        *(dose(d) for d in s.doses),
                        f"{s.given}/{len(s.doses)}",
                        _.yes_no(s.complete),
                    )
                    for s in self.subjects
                ),
            ),
        )


def subject_doses(frame: Frame, views: Sequence[subjects_views.SubjectView]) -> list[SubjectDoses]:
    out = []
    for view in views:
        days = {d.label: d for d in view.days}
        doses = []
        for label in frame.day_labels:
            d = days.get(label)
            doses.append(
                Dose(
                    label,
                    d is not None and d.status in ("dispensed", "administered"),
                    d is not None and d.status == "administered",
                    d.administered_at if d is not None else None,
                )
            )
        out.append(
            SubjectDoses(
                view.subject_number,
                view.site,
                strata_text(view.strata_at_randomization),
                view.in_error,
                tuple(doses),
                view.withdrawal is not None,
            )
        )
    return out


def _site_doses(site: str, rows: Sequence[SubjectDoses], days: int) -> SiteDoses:
    return SiteDoses(
        site,
        len(rows),
        tuple(sum(r.doses[i].dispensed for r in rows) for i in range(days)),
        tuple(sum(r.doses[i].administered for r in rows) for i in range(days)),
        sum(r.complete for r in rows),
    )


def dispensing_completeness(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> DispensingCompleteness:
    """Per subject randomized in the period, whether each day's kit was dispensed and administered,
    and per site the totals and the number of complete (3/3) treatments."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    rows = subject_doses(frame, subject_views(ctx, frame))
    n = len(frame.day_labels)
    sites = [_site_doses(code, [r for r in rows if r.site == code], n) for code in frame.site_codes]
    sites.append(_site_doses(ALL_SITES, rows, n))
    return DispensingCompleteness(frame.day_labels, tuple(rows), tuple(sites))
