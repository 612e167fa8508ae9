"""Unblinding report: emergency, offline and accidental
unblindings (PV ones in the restricted version only)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from allocator.models import AccidentalUnblinding, Signature, Subject, Unblinding
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import Frame, ReportFilter, scoped_frame, signature_text
from allocator.wording import Words

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
    signed: signatures.Manifestation | None = None


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
    (
        N_("Blinded"),
        N_("Investigators, pharmacists, nurses, monitors, auditors, trial managers and administrators."),
    ),
    (
        N_("Unblinded"),
        N_(
            "The unblinded statistician, pharmacovigilance (per subject), an unblinded pharmacist where the "
            "preparation model needs one; see the sequence-generation report for every holder of these roles."
        ),
    ),
    (
        N_("How the blind is kept"),
        N_(
            "Identical kits and labels for every arm, random opaque kit and randomization numbers, random kit "
            "choice at the site, arms stored only encrypted, blinded notifications and reports."
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class UnblindingReport:
    events: tuple[UnblindingEvent, ...]
    accidental: tuple[AccidentalEvent, ...]
    includes_pharmacovigilance: bool

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        kinds = Counter((e.kind, e.channel) for e in self.events)
        out = [
            (_("Emergency unblindings online"), _.n(kinds[("emergency", "online")])),
            (_("Emergency unblindings offline (code-break sheet)"), _.n(kinds[("emergency", "offline")])),
            (_("Accidental unblinding reports"), _.n(len(self.accidental))),
        ]
        if self.includes_pharmacovigilance:
            pv = sum(n for (kind, _channel), n in kinds.items() if kind == "pharmacovigilance")
            out.append((_("Pharmacovigilance unblindings"), _.n(pv)))
        else:
            out.append((_("Pharmacovigilance unblindings"), _("not shown to trial staff")))
        return (*out, *((_(key), _(value)) for key, value in _BLINDING_STATEMENT))

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Unblinding events"),
                (
                    _("Unblinded at (UTC)"),
                    _("Site"),
                    _("Subject"),
                    _("Kind"),
                    _("Channel"),
                    _("Unblinded by"),
                    _("Role"),
                    _("Reason category"),
                    _("Reason"),
                    _("Code-break sheet"),
                    _("Recorded at (UTC)"),
                    _("Recorded by"),
                    _("Electronic signature"),
                ),
                tuple(
                    (
                        _.utc(e.unblinded_at),
                        e.site,
                        e.subject_number,
                        _.word(e.kind),
                        _.word(e.channel),
                        e.unblinded_by,
                        _.role(e.role),
                        _(e.reason_category),
                        e.reason,
                        e.sheet_number or "",
                        _.utc(e.recorded_at),
                        e.recorded_by,
                        signature_text(e.signed, _) if e.signed is not None else e.signature,
                    )
                    for e in self.events
                ),
                _("Every unblinding is recorded and cannot be hidden; the arm is never part of this report."),
            ),
            monitoring_reports.Table(
                _("Accidental or unplanned unblinding reports"),
                (
                    _("Occurred at (UTC)"),
                    _("Site"),
                    _("Subject"),
                    _("Persons unblinded"),
                    _("How"),
                    _("Impact"),
                    _("Actions taken"),
                    _("Reported at (UTC)"),
                    _("Reported by"),
                    _("Role"),
                ),
                tuple(
                    (
                        _.utc(a.occurred_at),
                        a.site or "",
                        a.subject_number or "",
                        a.persons_unblinded,
                        a.how,
                        a.impact,
                        a.actions,
                        _.utc(a.reported_at),
                        a.reported_by,
                        _.role(a.reported_by_role),
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
            unblinding_id: signatures.manifestation(signature)
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
            manifestation.line() if (manifestation := signed.get(e.unblinding_id)) is not None else "",
            signed.get(e.unblinding_id),
        )
        for e in sorted(recorded, key=lambda e: (e.unblinded_at, e.unblinding_id))
    )
    accidental = tuple(a for a in accidental_events(ctx, frame) if frame.flt.in_period(a.occurred_at))
    return UnblindingReport(events, accidental, include_pharmacovigilance)
