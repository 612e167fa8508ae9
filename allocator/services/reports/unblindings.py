"""Unblinding report: emergency, offline and accidental
unblindings (PV ones in the restricted version only)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from allocator.models import AccidentalUnblinding, Signature, Subject, Unblinding
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import Frame, ReportFilter, scoped_frame, time_text

# --- unblinding report (REP-03, UNB-05, UNB-08, UNB-09) ------------------------------------------


@dataclass(frozen=True, slots=True)
class UnblindingEvent:
    unblinded_at: datetime
    recorded_at: datetime
    site: str
    subject_number: str
    kind: str  # emergency | pharmacovigilance
    channel: str  # online | offline
    unblinded_by: str
    role: str
    reason_category: str
    reason: str
    recorded_by: str
    sheet_number: str | None
    signature: str


@dataclass(frozen=True, slots=True)
class AccidentalEvent:
    occurred_at: datetime
    reported_at: datetime
    site: str | None
    subject_number: str | None
    persons_unblinded: str
    how: str
    impact: str
    actions: str
    reported_by: str
    reported_by_role: str


_BLINDING_STATEMENT = (
    ("Blinded", "Investigators, pharmacists, nurses, monitors, auditors, trial managers and administrators."),
    (
        "Unblinded",
        "The unblinded statistician, pharmacovigilance (per subject), an unblinded pharmacist where the "
        "preparation model needs one; see the sequence-generation report for every holder of these roles.",
    ),
    (
        "How the blind is kept",
        "Identical kits and labels for every arm, random opaque kit and randomization "
        "numbers, random kit choice at the site, arms stored only encrypted, blinded notifications and reports.",
    ),
)


@dataclass(frozen=True, slots=True)
class UnblindingReport:
    events: tuple[UnblindingEvent, ...]
    accidental: tuple[AccidentalEvent, ...]
    includes_pharmacovigilance: bool

    def facts(self) -> tuple[tuple[str, str], ...]:
        kinds = Counter((e.kind, e.channel) for e in self.events)
        out = [
            ("Emergency unblindings online", str(kinds[("emergency", "online")])),
            ("Emergency unblindings offline (code-break sheet)", str(kinds[("emergency", "offline")])),
            ("Accidental unblinding reports", str(len(self.accidental))),
        ]
        if self.includes_pharmacovigilance:
            out.append(
                (
                    "Pharmacovigilance unblindings",
                    str(sum(n for (k, _), n in kinds.items() if k == "pharmacovigilance")),
                )
            )
        else:
            out.append(("Pharmacovigilance unblindings", "not shown to trial staff (UNB-08)"))
        return (*out, *_BLINDING_STATEMENT)

    def tables(self) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                "Unblinding events",
                (
                    "Unblinded at (UTC)",
                    "Site",
                    "Subject",
                    "Kind",
                    "Channel",
                    "Unblinded by",
                    "Role",
                    "Reason category",
                    "Reason",
                    "Code-break sheet",
                    "Recorded at (UTC)",
                    "Recorded by",
                    "Electronic signature",
                ),
                tuple(
                    (
                        time_text(e.unblinded_at),
                        e.site,
                        e.subject_number,
                        e.kind,
                        e.channel,
                        e.unblinded_by,
                        e.role,
                        e.reason_category,
                        e.reason,
                        e.sheet_number or "",
                        time_text(e.recorded_at),
                        e.recorded_by,
                        e.signature,
                    )
                    for e in self.events
                ),
                "Every unblinding is recorded and cannot be hidden (UNB-05); the arm is never part of this report.",
            ),
            monitoring_reports.Table(
                "Accidental or unplanned unblinding reports",
                (
                    "Occurred at (UTC)",
                    "Site",
                    "Subject",
                    "Persons unblinded",
                    "How",
                    "Impact",
                    "Actions taken",
                    "Reported at (UTC)",
                    "Reported by",
                    "Role",
                ),
                tuple(
                    (
                        time_text(a.occurred_at),
                        a.site or "",
                        a.subject_number or "",
                        a.persons_unblinded,
                        a.how,
                        a.impact,
                        a.actions,
                        time_text(a.reported_at),
                        a.reported_by,
                        a.reported_by_role,
                    )
                    for a in self.accidental
                ),
            ),
        )


def accidental_events(ctx: ServiceContext, frame: Frame) -> list[AccidentalEvent]:
    with ctx.db.reading() as session:
        rows = session.execute(
            select(AccidentalUnblinding, Subject.subject_number)
            .outerjoin(Subject, Subject.id == AccidentalUnblinding.subject_id)
            .where(AccidentalUnblinding.trial_id == frame.trial_id)
            .order_by(AccidentalUnblinding.occurred_at, AccidentalUnblinding.id)
        ).all()
    return [
        AccidentalEvent(
            row.occurred_at,
            row.reported_at,
            frame.sites.get(row.site_id) if row.site_id is not None else None,
            number,
            row.persons_unblinded,
            row.how,
            row.impact,
            row.actions,
            row.reported_by_name,
            row.reported_by_role,
        )
        for row, number in rows
        if frame.visible(row.site_id)
    ]


def unblinding_report(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter, *, include_pharmacovigilance: bool
) -> UnblindingReport:
    """Every emergency unblinding (online and offline) and every accidental report in the period,
    with date, site, subject, role, reason and signature. Pharmacovigilance unblindings only when
    `include_pharmacovigilance` (restricted and safety versions, UNB-08). Never an arm."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    recorded = [
        e
        for e in unblinding.unblindings(
            ctx, frame.code, frame.scope, include_pharmacovigilance=include_pharmacovigilance
        )
        if frame.flt.in_period(e.unblinded_at)
    ]
    with ctx.db.reading() as session:
        signed = {
            unblinding_id: signatures.manifestation(signature).line()
            for unblinding_id, signature in session.execute(
                select(Unblinding.id, Signature)
                .join(Signature, Signature.id == Unblinding.signature_id)
                .where(Unblinding.id.in_([e.unblinding_id for e in recorded]))
            ).all()
        }
    reasons = {**unblinding.EMERGENCY_REASONS, **unblinding.PV_REASONS}
    events = tuple(
        UnblindingEvent(
            e.unblinded_at,
            e.recorded_at,
            e.site,
            e.subject_number,
            e.kind,
            e.channel,
            e.unblinded_by,
            e.unblinded_by_role,
            reasons.get(e.reason_category, e.reason_category),
            e.reason,
            e.recorded_by,
            e.sheet_number,
            signed.get(e.unblinding_id, ""),
        )
        for e in sorted(recorded, key=lambda e: (e.unblinded_at, e.unblinding_id))
    )
    accidental = tuple(a for a in accidental_events(ctx, frame) if frame.flt.in_period(a.occurred_at))
    return UnblindingReport(events, accidental, include_pharmacovigilance)
