"""Allocation history report (REP-05, BLD-07,
RND-07, RND-09)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, ScalarSelect, distinct, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from allocator.models import Dispensation, Kit, Subject, SubjectCorrection, SubjectWithdrawal
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import unblinding
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import (
    Frame,
    ReportFilter,
    Window,
    frame_subjects,
    kit_text,
    scoped_frame,
)
from allocator.services.reports.unblindings import accidental_events
from allocator.services.subjects import views as subjects_views
from allocator.services.subjects import withdrawal as subjects_withdrawal
from allocator.wording import Words

# --- allocation history (REP-05, BLD-07, RND-07, RND-09) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplacedKit:
    kit_number: str
    replaced_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class KitDay:
    day: str
    kit_number: str
    status: str
    replaced: tuple[ReplacedKit, ...]

    def cell(self, _: Words) -> str:
        text = f"{kit_text(self.kit_number)} ({_.word(self.status)})"
        for old in self.replaced:
            text += "; " + _(
                "replaces %(kit)s (%(reason)s, %(at)s)",
                kit=kit_text(old.kit_number),
                reason=old.reason,
                at=_.utc(old.replaced_at),
            )
        return text


@dataclass(frozen=True, slots=True)
class BlindBreak:
    """A blind-break event as blinded roles see it: emergency (online or offline) or an accidental
    report naming the subject. Never a pharmacovigilance unblinding (UNB-08), never an arm."""

    at: datetime
    kind: str  # emergency | accidental
    channel: str  # online | offline | reported
    by: str
    role: str

    def cell(self, _: Words) -> str:
        return _(
            "%(kind)s (%(channel)s) %(at)s by %(by)s (%(role)s)",
            kind=_.word(self.kind),
            channel=_.word(self.channel),
            at=_.utc(self.at),
            by=self.by,
            role=_.role(self.role),
        )


@dataclass(frozen=True, slots=True)
class AllocationRow:
    subject_number: str
    site: str
    strata_at_randomization: dict[str, str]
    strata_corrected: dict[str, str] | None  # None when never corrected
    randomization_number: str
    randomized_at: datetime
    randomized_by: str
    kits: tuple[KitDay, ...]
    in_error: bool
    in_error_reason: str | None
    corrections: tuple[subjects_views.CorrectionView, ...]  # stratum corrections
    blind_breaks: tuple[BlindBreak, ...]
    withdrawal: subjects_views.WithdrawalView | None = None  # REP-04


@dataclass(frozen=True, slots=True)
class HistoryTotals:
    """The report's summary, counted in the database over every subject of the filter."""

    subjects: int
    in_error: int
    corrected: int  # with a stratum correction
    blind_broken: int
    withdrawn: int
    replacements: int


@dataclass(frozen=True, slots=True)
class AllocationHistory:
    day_labels: tuple[str, ...]
    rows: tuple[AllocationRow, ...]
    totals: HistoryTotals
    window: Window | None = None  # `rows` are the page's window of the subjects (issue 21)

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        t = self.totals
        return (
            (_("Subjects randomized"), _.n(t.subjects)),
            (_("Randomized in error (kept, intention to treat)"), _.n(t.in_error)),
            (_("With a stratum correction"), _.n(t.corrected)),
            (_("With a blind-break event"), _.n(t.blind_broken)),
            (_("Withdrawn (kept, intention to treat)"), _.n(t.withdrawn)),
            (_("Kit replacements"), _.n(t.replacements)),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        columns = (
            _("Subject"),
            _("Site"),
            _("Stratum at randomization"),
            _("Stratum corrected"),
            _("Randomization number"),
            _("Randomized at (UTC)"),
            _("Randomized by"),
            *(_("%(day)s kit", day=label) for label in self.day_labels),
            _("Randomized in error"),
            _("Stratum corrections"),
            _("Blind-break events"),
            _("Withdrawal"),
        )
        rows = []
        for r in self.rows:
            by_day = {k.day: k.cell(_) for k in r.kits}
            rows.append(
                (
                    r.subject_number,
                    r.site,
                    _.strata(r.strata_at_randomization),
                    _.strata(r.strata_corrected) if r.strata_corrected is not None else "",
                    r.randomization_number,
                    _.utc(r.randomized_at),
                    r.randomized_by,
                    *(by_day.get(label, "") for label in self.day_labels),
                    _("yes: %(reason)s", reason=r.in_error_reason) if r.in_error else _("no"),
                    " | ".join(
                        _(
                            "%(factor)s: %(old)s -> %(new)s (%(reason)s; %(by)s, %(at)s)",
                            factor=_.label(c.field or ""),
                            old=_.label(f"{c.field}={c.old}"),
                            new=_.label(f"{c.field}={c.new}"),
                            reason=c.reason,
                            by=c.by,
                            at=_.utc(c.at),
                        )
                        for c in r.corrections
                    ),
                    " | ".join(b.cell(_) for b in r.blind_breaks),
                    _withdrawal_cell(r.withdrawal, _),
                )
            )
        return (
            monitoring_reports.Table(
                _("Allocation history"),
                columns,
                tuple(rows),
                _(
                    "Who randomized whom, when, and which kits; corrections are shown beside the values "
                    "used at randomization, which never change."
                ),
                total=self.window.counted(self.totals.subjects) if self.window is not None else None,
                start=self.window.start if self.window is not None else 0,
            ),
        )


def _withdrawal_cell(w: subjects_views.WithdrawalView | None, _: Words) -> str:
    if w is None:
        return ""
    kind = subjects_withdrawal.WITHDRAWAL_KINDS.get(w.kind, w.kind)
    return _(
        "%(kind)s on %(date)s: %(reason)s (%(by)s, %(at)s)",
        kind=_(kind),
        date=_.day(w.effective_date),
        reason=w.reason,
        by=w.by,
        at=_.utc(w.at),
    )


def _replaced_kits(
    session: Session, frame: Frame, subject_ids: Sequence[int] | None
) -> dict[tuple[str, int], list[ReplacedKit]]:
    """The replaced kits of the frame's trial, per subject number and day, in the order they were
    replaced: of `subject_ids` only (a page's subjects), or of every subject (None). Columns, not
    entities (issue 21: a page read every replaced dispensation of the trial as an ORM object)."""
    query = (
        select(
            Subject.subject_number,
            Dispensation.day,
            Kit.kit_number,
            Dispensation.replaced_at,
            Dispensation.replacement_reason,
        )
        .join(Kit, Kit.id == Dispensation.kit_id)
        .join(Subject, Subject.id == Dispensation.subject_id)
        .where(Subject.trial_id == frame.trial_id, Dispensation.status == "replaced")
        .order_by(Dispensation.id)
    )
    if subject_ids is not None:
        query = query.where(Dispensation.subject_id.in_(subject_ids))
    out: dict[tuple[str, int], list[ReplacedKit]] = {}
    for number, day, kit_number, replaced_at, reason in session.execute(query).all():
        out.setdefault((number, day), []).append(ReplacedKit(kit_number, replaced_at, reason or ""))
    return out


def _blind_breaks(ctx: ServiceContext, frame: Frame) -> dict[str, list[BlindBreak]]:
    out: dict[str, list[BlindBreak]] = {}
    for event in unblinding.unblindings(ctx, frame.code, frame.scope, include_pharmacovigilance=False):
        out.setdefault(event.subject_number, []).append(
            BlindBreak(
                event.unblinded_at, event.kind, event.channel, event.unblinded_by, event.unblinded_by_role
            )
        )
    for report in accidental_events(ctx, frame):
        if report.subject_number is not None:
            out.setdefault(report.subject_number, []).append(
                BlindBreak(
                    report.occurred_at, "accidental", "reported", report.reported_by, report.reported_by_role
                )
            )
    for events in out.values():
        events.sort(key=lambda b: b.at)
    return out


def _totals(session: Session, frame: Frame, broken: set[str]) -> HistoryTotals:
    """One statement of counts over the frame's subjects, whatever their number."""
    ids = frame_subjects(frame, Subject.id).scalar_subquery()

    def subjects_with(column: InstrumentedAttribute[int], *where: ColumnElement[bool]) -> ScalarSelect[int]:
        return select(func.count(distinct(column))).where(column.in_(ids), *where).scalar_subquery()

    counted = session.execute(
        select(
            frame_subjects(frame, func.count(Subject.id)).scalar_subquery(),
            subjects_with(SubjectCorrection.subject_id, SubjectCorrection.kind == "randomized_in_error"),
            subjects_with(SubjectCorrection.subject_id, SubjectCorrection.kind == "stratum"),
            frame_subjects(frame, func.count(Subject.id))
            .where(Subject.subject_number.in_(sorted(broken)))
            .scalar_subquery(),
            subjects_with(SubjectWithdrawal.subject_id),
            select(func.count(Dispensation.id))
            .where(Dispensation.subject_id.in_(ids), Dispensation.status == "replaced")
            .scalar_subquery(),
        )
    ).one()
    return HistoryTotals(*(int(n or 0) for n in counted))


def allocation_history(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter, window: Window | None = None
) -> AllocationHistory:
    """Per subject randomized in the period: site, strata as entered and corrected, randomization
    number, time and author, the kit of each day with its replacements, the in-error flag, the
    blind-break events and the withdrawal. Never an arm (BLD-07). With a `window` (a page), only
    its subjects are read; the summary is counted in the database over all of them (issue 21)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    breaks = _blind_breaks(ctx, frame)
    with ctx.db.reading() as session:
        query = frame_subjects(frame).order_by(Subject.id)
        if window is not None:
            query = query.offset(window.start).limit(window.size)
        subjects = list(session.execute(query).scalars())
        views = subjects_views.subject_views(session, frame.definition, subjects, frame.sites)
        replaced = _replaced_kits(session, frame, [s.id for s in subjects] if window is not None else None)
        totals = _totals(session, frame, set(breaks))
    rows = []
    for view in views:
        rows.append(
            AllocationRow(
                subject_number=view.subject_number,
                site=view.site,
                strata_at_randomization=view.strata_at_randomization,
                strata_corrected=view.strata_corrected
                if view.strata_corrected != view.strata_at_randomization
                else None,
                randomization_number=view.randomization_number,
                randomized_at=view.randomized_at,
                randomized_by=view.randomized_by,
                kits=tuple(
                    KitDay(
                        d.label, d.kit_number, d.status, tuple(replaced.get((view.subject_number, d.day), ()))
                    )
                    for d in view.days
                ),
                in_error=view.in_error,
                in_error_reason=next(
                    (c.reason for c in view.corrections if c.kind == "randomized_in_error"), None
                ),
                corrections=tuple(c for c in view.corrections if c.kind == "stratum"),
                blind_breaks=tuple(breaks.get(view.subject_number, ())),
                withdrawal=view.withdrawal,
            )
        )
    return AllocationHistory(frame.day_labels, tuple(rows), totals, window)
