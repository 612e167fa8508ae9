"""Drill log (UNB-11): every emergency-unblinding drill, online and offline, and the drill subjects.

A drill is never an unblinding: it is in no count of this catalogue's other reports, and they are
in none of its counts. The log holds no value of a drill subject (blinded readers read it); the
drill subjects are listed so that a monitor can check that each site has one and when it was last
drilled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import unblinding, unblinding_drills
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, signature_text
from allocator.wording import Words

_WHAT_A_DRILL_IS = N_(
    "The emergency-unblinding path run on a drill subject, which is not a patient: it takes no slot and no "
    "kit, and is in no count, report, export or analysis of the trial."
)


@dataclass(frozen=True, slots=True)
class DrillLog:
    events: tuple[unblinding_drills.DrillEvent, ...]
    subjects: tuple[unblinding_drills.DrillSubjectRow, ...]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        channels = Counter(e.channel for e in self.events)
        last = max((e.unblinded_at for e in self.events), default=None)
        drilled = {e.site for e in self.events}
        undrilled = sorted({s.site for s in self.subjects} - drilled)
        return (
            (_("Online drills"), _.n(channels[unblinding_drills.ONLINE])),
            (_("Offline drills (drill code-break sheet)"), _.n(channels[unblinding_drills.OFFLINE])),
            (_("Last drill"), _.utc(last) or _("none")),
            (_("Drill subjects"), _.n(len(self.subjects))),
            (_("Sites with a drill subject but no drill in the period"), ", ".join(undrilled) or _("none")),
            (_("What a drill is"), _(_WHAT_A_DRILL_IS)),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Drills"),
                (
                    _("Unblinded at (UTC)"),
                    _("Site"),
                    _("Drill subject"),
                    _("Channel"),
                    _("Unblinded by"),
                    _("Role"),
                    _("Reason category"),
                    _("Reason"),
                    _("Drill sheet"),
                    _("Recorded at (UTC)"),
                    _("Recorded by"),
                    _("Registered after"),
                    _("Electronic signature"),
                ),
                tuple(
                    (
                        _.utc(e.unblinded_at),
                        e.site,
                        e.drill_number,
                        _.word(e.channel),
                        e.unblinded_by,
                        _.role(e.unblinded_by_role),
                        _(unblinding.EMERGENCY_REASONS.get(e.reason_category, e.reason_category)),
                        e.reason,
                        e.sheet_number or "",
                        _.utc(e.recorded_at),
                        e.recorded_by,
                        _delay(e.unblinded_at, e.recorded_at, _),
                        signature_text(e.signature, _),
                    )
                    for e in self.events
                ),
                _(
                    "The value of a drill is never part of this log. Offline drills: the time from the opening "
                    "of the sheet to its registration in the service."
                ),
            ),
            monitoring_reports.Table(
                _("Drill subjects"),
                (
                    _("Drill subject"),
                    _("Site"),
                    _("Drill code-break sheet"),
                    _("Created at (UTC)"),
                    _("Created by"),
                    _("Note"),
                ),
                tuple(
                    (s.drill_number, s.site, s.sheet_number, _.utc(s.created_at), s.created_by, s.note)
                    for s in self.subjects
                ),
            ),
        )


def _delay(opened: datetime, recorded: datetime, _: Words) -> str:
    minutes = max(0, int((recorded - opened).total_seconds() // 60))
    if minutes < 60:
        return _("%(minutes)s min", minutes=minutes)
    hours, rest = divmod(minutes, 60)
    return _("%(hours)s h %(minutes)s min", hours=hours, minutes=str(rest).zfill(2))


def drill_log(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> DrillLog:
    """The drills in the period within the reader's sites (and the filter's site), oldest first,
    and the drill subjects of those sites."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    events = tuple(
        e
        for e in unblinding_drills.drills(ctx, frame.code, frame.scope)
        if frame.flt.in_period(e.unblinded_at)
    )
    return DrillLog(events, tuple(unblinding_drills.drill_subjects(ctx, frame.code, frame.scope)))
