"""Dispensing completeness report: doses dispensed and
administered per subject and site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from allocator.models import Dispensation, Subject
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import (
    ALL_SITES,
    Frame,
    ReportFilter,
    Window,
    frame_subjects,
    scoped_frame,
    strata_text,
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
    window: Window | None = None  # `subjects` are the page's window of them (issue 21)

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
                totals=1,
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
                total=self.window.counted(self.sites[-1].subjects) if self.window is not None else None,
                start=self.window.start if self.window is not None else 0,
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


def _site_totals(ctx: ServiceContext, frame: Frame) -> list[SiteDoses]:
    """Per site of the frame, then for all of them: subjects, kits dispensed and administered per day,
    complete treatments; counted in the database (three statements, whatever the number of
    subjects). A day's kit is the subject's latest for that day (a replaced kit is never dispensed
    or administered any more)."""
    schedule = sorted(frame.definition.dispensing.schedule, key=lambda d: d.day)
    position = {d.day: i for i, d in enumerate(schedule)}
    n = len(schedule)
    ids = frame_subjects(frame, Subject.id).scalar_subquery()
    with ctx.db.reading() as session:
        subjects: dict[int, int] = dict(
            session.execute(
                frame_subjects(frame, Subject.site_id, func.count(Subject.id)).group_by(Subject.site_id)
            ).all()
        )
        kits = session.execute(
            select(Subject.site_id, Dispensation.day, Dispensation.status, func.count(Dispensation.id))
            .join(Subject, Subject.id == Dispensation.subject_id)
            .where(
                Dispensation.subject_id.in_(ids),
                Dispensation.status.in_(("dispensed", "administered")),
                Dispensation.day.in_(list(position)),
            )
            .group_by(Subject.site_id, Dispensation.day, Dispensation.status)
        ).all()
        all_given = (
            select(Dispensation.subject_id)
            .where(
                Dispensation.subject_id.in_(ids),
                Dispensation.status == "administered",
                Dispensation.day.in_(list(position)),
            )
            .group_by(Dispensation.subject_id)
            .having(func.count(func.distinct(Dispensation.day)) == n)
        )
        complete: dict[int, int] = dict(
            session.execute(
                select(Subject.site_id, func.count(Subject.id))
                .where(Subject.id.in_(all_given))
                .group_by(Subject.site_id)
            ).all()
            if n
            else ()
        )
    dispensed = {sid: [0] * n for sid in frame.sites}
    administered = {sid: [0] * n for sid in frame.sites}
    for site_id, day, status, count in kits:
        dispensed[site_id][position[day]] += count
        if status == "administered":
            administered[site_id][position[day]] += count
    by_code = {code: sid for sid, code in frame.sites.items()}
    out = [
        SiteDoses(
            code,
            subjects.get(by_code[code], 0),
            tuple(dispensed[by_code[code]]),
            tuple(administered[by_code[code]]),
            complete.get(by_code[code], 0),
        )
        for code in frame.site_codes
    ]
    out.append(
        SiteDoses(
            ALL_SITES,
            sum(s.subjects for s in out),
            tuple(sum(s.dispensed[i] for s in out) for i in range(n)),
            tuple(sum(s.administered[i] for s in out) for i in range(n)),
            sum(s.complete for s in out),
        )
    )
    return out


def frame_doses(ctx: ServiceContext, frame: Frame, window: Window | None = None) -> list[SubjectDoses]:
    """The doses of the frame's subjects in randomization order (of the `window`'s, when given)."""
    with ctx.db.reading() as session:
        query = frame_subjects(frame).order_by(Subject.id)
        if window is not None:
            query = query.offset(window.start).limit(window.size)
        subjects = list(session.execute(query).scalars())
        views = subjects_views.subject_views(session, frame.definition, subjects, frame.sites)
    return subject_doses(frame, views)


def dispensing_completeness(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter, window: Window | None = None
) -> DispensingCompleteness:
    """Per subject randomized in the period, whether each day's kit was dispensed and administered,
    and per site the totals and the number of complete (3/3) treatments. With a `window` (a page),
    only its subjects are read; the per-site totals are counted in the database (issue 21)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    rows = frame_doses(ctx, frame, window)
    return DispensingCompleteness(frame.day_labels, tuple(rows), tuple(_site_totals(ctx, frame)), window)
