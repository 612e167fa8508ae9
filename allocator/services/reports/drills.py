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

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import unblinding, unblinding_drills
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, time_text


@dataclass(frozen=True, slots=True)
class DrillLog:
    events: tuple[unblinding_drills.DrillEvent, ...]
    subjects: tuple[unblinding_drills.DrillSubjectRow, ...]

    def facts(self) -> tuple[tuple[str, str], ...]:
        channels = Counter(e.channel for e in self.events)
        last = max((e.unblinded_at for e in self.events), default=None)
        drilled = {e.site for e in self.events}
        undrilled = sorted({s.site for s in self.subjects} - drilled)
        return (
            ("Online drills", str(channels[unblinding_drills.ONLINE])),
            ("Offline drills (drill code-break sheet)", str(channels[unblinding_drills.OFFLINE])),
            ("Last drill", time_text(last) or "none"),
            ("Drill subjects", str(len(self.subjects))),
            ("Sites with a drill subject but no drill in the period", ", ".join(undrilled) or "none"),
            (
                "What a drill is",
                "The emergency-unblinding path run on a drill subject, which is not a patient: it takes no "
                "slot and no kit, and is in no count, report, export or analysis of the trial.",
            ),
        )

    def tables(self) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                "Drills",
                (
                    "Unblinded at (UTC)",
                    "Site",
                    "Drill subject",
                    "Channel",
                    "Unblinded by",
                    "Role",
                    "Reason category",
                    "Reason",
                    "Drill sheet",
                    "Recorded at (UTC)",
                    "Recorded by",
                    "Registered after",
                    "Electronic signature",
                ),
                tuple(
                    (
                        time_text(e.unblinded_at),
                        e.site,
                        e.drill_number,
                        e.channel,
                        e.unblinded_by,
                        e.unblinded_by_role,
                        unblinding.EMERGENCY_REASONS.get(e.reason_category, e.reason_category),
                        e.reason,
                        e.sheet_number or "",
                        time_text(e.recorded_at),
                        e.recorded_by,
                        _delay(e.unblinded_at, e.recorded_at),
                        e.signature,
                    )
                    for e in self.events
                ),
                "The value of a drill is never part of this log. Offline drills: the time from the opening of the "
                "sheet to its registration in the service.",
            ),
            monitoring_reports.Table(
                "Drill subjects",
                ("Drill subject", "Site", "Drill code-break sheet", "Created at (UTC)", "Created by", "Note"),
                tuple(
                    (s.drill_number, s.site, s.sheet_number, time_text(s.created_at), s.created_by, s.note)
                    for s in self.subjects
                ),
            ),
        )


def _delay(opened: datetime, recorded: datetime) -> str:
    minutes = max(0, int((recorded - opened).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


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
