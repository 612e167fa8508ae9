"""Deviations report: mis-stratifications, randomized
in error, refused attempts, blocked kits, replacements, late entries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, func, literal, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from allocator.audit import Action
from allocator.models import (
    Administration,
    Batch,
    Dispensation,
    Kit,
    KitEvent,
    KitStatus,
    Subject,
    SubjectCorrection,
)
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import audit_trail
from allocator.services.bedside import LATE_AFTER
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import (
    Frame,
    ReportFilter,
    audit_time,
    kit_text,
    scoped_frame,
)
from allocator.wording import Words

# --- protocol-deviation listings (REP-07) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MisStratification:
    subject_number: str
    site: str
    factor: str
    at_randomization: str
    corrected: str
    reason: str
    agreement: str | None
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RandomizedInError:
    subject_number: str
    site: str
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RefusedAttempt:
    """A refused bedside scan or dispensing attempt, from the clear values of its audit entry."""

    at: datetime
    kind: str  # scan | dispensing
    site: str
    subject_number: str
    day: str
    cause: str
    detail: str
    by: str
    role: str


@dataclass(frozen=True, slots=True)
class BlockedKit:
    at: datetime
    kit_number: str
    site: str
    batch: str
    status: str  # expired | quarantined
    from_status: str
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class Replacement:
    at: datetime | None
    subject_number: str
    site: str
    day: str
    old_kit: str
    new_kit: str
    reason: str


@dataclass(frozen=True, slots=True)
class LateEntry:
    subject_number: str
    site: str
    day: str
    administered_at: datetime
    recorded_at: datetime
    reason: str
    by: str

    @property
    def delay(self) -> timedelta:
        return self.recorded_at - self.administered_at


@dataclass(frozen=True, slots=True)
class Deviations:
    mis_stratifications: tuple[MisStratification, ...]
    in_error: tuple[RandomizedInError, ...]
    refused: tuple[RefusedAttempt, ...]
    blocked_kits: tuple[BlockedKit, ...]
    replacements: tuple[Replacement, ...]
    late_entries: tuple[LateEntry, ...]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        return (
            (_("Mis-stratifications"), _.n(len(self.mis_stratifications))),
            (_("Randomizations in error"), _.n(len(self.in_error))),
            (_("Refused scans"), _.n(sum(r.kind == "scan" for r in self.refused))),
            (_("Refused dispensing attempts"), _.n(sum(r.kind == "dispensing" for r in self.refused))),
            (_("Kits blocked (expired or quarantined)"), _.n(len(self.blocked_kits))),
            (_("Kit replacements"), _.n(len(self.replacements))),
            (
                _(
                    "Late entries (recorded more than %(hours)s h after the administration)",
                    hours=_.n(LATE_AFTER.total_seconds() / 3600),
                ),
                _.n(len(self.late_entries)),
            ),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Mis-stratifications"),
                (
                    _("Subject"),
                    _("Site"),
                    _("Factor"),
                    _("At randomization"),
                    _("Corrected"),
                    _("Reason"),
                    _("Investigator agreement"),
                    _("Corrected by"),
                    _("Corrected at (UTC)"),
                ),
                tuple(
                    (
                        m.subject_number,
                        m.site,
                        _.label(m.factor),
                        _.label(f"{m.factor}={m.at_randomization}"),
                        _.label(f"{m.factor}={m.corrected}"),
                        m.reason,
                        m.agreement or "",
                        m.by,
                        _.utc(m.at),
                    )
                    for m in self.mis_stratifications
                ),
                _("The allocation and the kits were kept: a correction never re-randomizes."),
            ),
            monitoring_reports.Table(
                _("Randomizations in error"),
                (_("Subject"), _("Site"), _("Reason"), _("Flagged by"), _("Flagged at (UTC)")),
                tuple((r.subject_number, r.site, r.reason, r.by, _.utc(r.at)) for r in self.in_error),
                _("These subjects stay in every report (intention to treat)."),
            ),
            monitoring_reports.Table(
                _("Refused scans and dispensing attempts"),
                (
                    _("At (UTC)"),
                    _("Kind"),
                    _("Site"),
                    _("Subject"),
                    _("Day"),
                    _("Cause"),
                    _("Detail"),
                    _("By"),
                    _("Role"),
                ),
                tuple(
                    (
                        _.utc(r.at),
                        _(_KINDS[r.kind]),
                        r.site,
                        r.subject_number,
                        r.day,
                        _(_CAUSES.get(r.cause, r.cause)),
                        _("scanned kit %(kit)s", kit=r.detail)
                        if r.kind == "dispensing"
                        else _.message(r.detail),
                        r.by,
                        _.role(r.role),
                    )
                    for r in self.refused
                ),
            ),
            monitoring_reports.Table(
                _("Expired or quarantined kits blocked"),
                (
                    _("At (UTC)"),
                    _("Kit"),
                    _("Site"),
                    _("Batch"),
                    _("Blocked as"),
                    _("Previous status"),
                    _("Reason"),
                    _("By"),
                ),
                tuple(
                    (
                        _.utc(b.at),
                        kit_text(b.kit_number),
                        _.place(b.site),  # a site's code, or the depot in the reader's words
                        b.batch,
                        _.word(b.status),
                        _.word(b.from_status),
                        b.reason,
                        b.by,
                    )
                    for b in self.blocked_kits
                ),
            ),
            monitoring_reports.Table(
                _("Kit replacements"),
                (
                    _("Replaced at (UTC)"),
                    _("Subject"),
                    _("Site"),
                    _("Day"),
                    _("Replaced kit"),
                    _("New kit"),
                    _("Reason"),
                ),
                tuple(
                    (
                        _.utc(r.at),
                        r.subject_number,
                        r.site,
                        r.day,
                        kit_text(r.old_kit),
                        kit_text(r.new_kit) if r.new_kit else "",
                        _.word(r.reason),
                    )
                    for r in self.replacements
                ),
            ),
            monitoring_reports.Table(
                _("Late entries"),
                (
                    _("Subject"),
                    _("Site"),
                    _("Day"),
                    _("Administered at (UTC)"),
                    _("Recorded at (UTC)"),
                    _("Delay"),
                    _("Reason given"),
                    _("Recorded by"),
                ),
                tuple(
                    (
                        e.subject_number,
                        e.site,
                        e.day,
                        _.utc(e.administered_at),
                        _.utc(e.recorded_at),
                        _duration(e.delay, _),
                        e.reason,
                        e.by,
                    )
                    for e in self.late_entries
                ),
            ),
        )


_KINDS = {"scan": N_("bedside scan"), "dispensing": N_("dispensing")}
# The refusal causes recorded in the audit entries (services/bedside.py, services/dispensing.py).
_CAUSES = {
    "unreadable-label": N_("unreadable label"),
    "wrong-patient": N_("wrong patient"),
    "wrong-day": N_("wrong day"),
    "already-administered": N_("already given"),
    "not-dispensed": N_("not dispensed"),
    "confirmation-needed": N_("confirmation needed"),
    "wrong-kit": N_("wrong kit"),
    "already-dispensed": N_("already dispensed"),
    "scan-refused": N_("scan refused"),
}


def _duration(delta: timedelta, _: Words) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    return (_("%(days)s d", days=days) + " " if days else "") + f"{rest // 60} h {rest % 60:02d} min"


def _refused(ctx: ServiceContext, frame: Frame) -> list[RefusedAttempt]:
    """From the audit entries administration.scan_refused and dispensation.refused: their clear
    values only (`EntryView` never carries a sealed value)."""
    out = []
    for entry in audit_trail.entries(
        ctx,
        frame.code,
        actions=(Action.SCAN_REFUSED.value, Action.DISPENSING_REFUSED.value),
        since=frame.flt.start,
        until=frame.flt.end,
        scope=frame.scope,
    ):
        if frame.flt.site is not None and entry.site_code != frame.flt.site:
            continue
        new = entry.new or {}
        scan = entry.action == Action.SCAN_REFUSED.value
        out.append(
            RefusedAttempt(
                at=audit_time(entry.at),
                kind="scan" if scan else "dispensing",
                site=entry.site_code or "",
                subject_number=entry.object_id,
                day=str(new.get("day", "")),
                cause=str(new.get("cause", "")),
                detail=str(new.get("detail", "")) if scan else str(new.get("scanned", "")),
                by=entry.actor_name,
                role=entry.actor_role,
            )
        )
    return out


def _in_reach(frame: Frame, moment: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
    """The conditions of a row joined to its subject: the frame's trial and sites, and a `moment`
    in the period (none without a moment, when there is a period)."""
    conditions: list[ColumnElement[bool]] = [Subject.trial_id == frame.trial_id]
    if not frame.scope.all_sites:
        conditions.append(Subject.site_id.in_(sorted(frame.scope.site_ids)))
    if frame.flt.start is not None:
        conditions.append(moment >= frame.flt.start)
    if frame.flt.end is not None:
        conditions.append(moment < frame.flt.end)
    return conditions


def _recorded_late(session: Session) -> ColumnElement[bool]:
    """Administrations recorded more than LATE_AFTER after the time the nurse stated (DIB-09), as
    the database can tell: an interval on PostgreSQL; on SQLite, the difference of Julian days,
    whose rounding a second's margin covers (the rows kept are checked again exactly)."""
    if session.get_bind().dialect.name == "postgresql":
        return Administration.recorded_at - Administration.administered_at > literal(LATE_AFTER, Interval())
    seconds = (
        func.julianday(Administration.recorded_at) - func.julianday(Administration.administered_at)
    ) * 86400
    return seconds > LATE_AFTER.total_seconds() - 1


def deviations(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Deviations:
    """Protocol-deviation support listings for the period: mis-stratifications, randomizations in
    error, refused scans and dispensing attempts, expired or quarantined kits blocked, kit
    replacements, late entries."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    mis, errors = [], []
    with ctx.db.reading() as session:
        # The corrections of the period within reach, with their subjects: one query, in the order
        # of the subjects' views (issue 21).
        query = (
            select(SubjectCorrection, Subject.subject_number, Subject.site_id, Subject.strata)
            .join(Subject, Subject.id == SubjectCorrection.subject_id)
            .where(
                Subject.trial_id == frame.trial_id,
                SubjectCorrection.kind.in_(("stratum", "randomized_in_error")),
            )
            .order_by(Subject.id, SubjectCorrection.id)
        )
        if not frame.scope.all_sites:
            query = query.where(Subject.site_id.in_(sorted(frame.scope.site_ids)))
        if frame.flt.start is not None:
            query = query.where(SubjectCorrection.at >= frame.flt.start)
        if frame.flt.end is not None:
            query = query.where(SubjectCorrection.at < frame.flt.end)
        for c, number, site_id, strata in session.execute(query).all():
            site = frame.sites[site_id]
            if c.kind == "stratum":
                mis.append(
                    MisStratification(
                        number,
                        site,
                        c.field or "",
                        str(dict(strata).get(c.field or "", c.old_value)),
                        str(c.new_value),
                        c.reason,
                        c.investigator_agreement_ref,
                        c.by_name,
                        c.at,
                    )
                )
            else:
                errors.append(RandomizedInError(number, site, c.reason, c.by_name, c.at))
    with ctx.db.reading() as session:
        lots = {
            b.id: b.lot_code
            for b in session.execute(select(Batch).where(Batch.trial_id == frame.trial_id)).scalars()
        }
        blocked = [
            BlockedKit(
                event.at,
                kit.kit_number,
                frame.sites.get(event.site_id or kit.site_id or -1, "depot"),
                lots.get(kit.batch_id or -1, ""),
                event.to_status,
                event.from_status or "",
                event.reason,
                event.actor_name,
            )
            for event, kit in session.execute(
                select(KitEvent, Kit)
                .join(Kit, Kit.id == KitEvent.kit_id)
                .where(
                    Kit.trial_id == frame.trial_id,
                    KitEvent.to_status.in_([KitStatus.EXPIRED.value, KitStatus.QUARANTINED.value]),
                )
                .order_by(KitEvent.at, KitEvent.id)
            ).all()
            if frame.visible(event.site_id if event.site_id is not None else kit.site_id)
            and (frame.flt.in_period(event.at))
        ]
        # Columns, not entities, and only the rows listed (issue 21): the replaced kits with the kit
        # that replaced each, and the late administrations, within reach and in the period, each
        # with its subject's number; the database leaves the others out.
        after, new_kit = aliased(Dispensation), aliased(Kit)
        replaced = session.execute(
            select(
                Subject.subject_number,
                Subject.site_id,
                Dispensation.day,
                Dispensation.replaced_at,
                Dispensation.replacement_reason,
                Kit.kit_number,
                new_kit.kit_number,
            )
            .join(Kit, Kit.id == Dispensation.kit_id)
            .join(Subject, Subject.id == Dispensation.subject_id)
            .outerjoin(
                after,
                (after.subject_id == Dispensation.subject_id)
                & (after.day == Dispensation.day)
                & (after.replacement_number == Dispensation.replacement_number + 1),
            )
            .outerjoin(new_kit, new_kit.id == after.kit_id)
            .where(Dispensation.status == "replaced", *_in_reach(frame, Dispensation.replaced_at))
            .order_by(Dispensation.id)
        ).all()
        administrations = session.execute(
            select(
                Subject.subject_number,
                Subject.site_id,
                Administration.day,
                Administration.administered_at,
                Administration.recorded_at,
                Administration.late_entry_reason,
                Administration.recorded_by_name,
            )
            .join(Subject, Subject.id == Administration.subject_id)
            .where(_recorded_late(session), *_in_reach(frame, Administration.recorded_at))
            .order_by(Administration.id)
        ).all()
    labels = {d.day: d.label for d in frame.definition.dispensing.schedule}
    replacements = [
        Replacement(
            replaced_at,
            number,
            frame.sites[site_id],
            labels.get(day, str(day)),
            kit_number,
            replaced_by or "",
            reason or "",
        )
        for number, site_id, day, replaced_at, reason, kit_number, replaced_by in replaced
    ]
    late = [
        LateEntry(
            a.subject_number,
            frame.sites[a.site_id],
            labels.get(a.day, str(a.day)),
            a.administered_at,
            a.recorded_at,
            a.late_entry_reason or "",
            a.recorded_by_name,
        )
        for a in administrations
        if a.recorded_at - a.administered_at > LATE_AFTER  # exact, whatever the database's arithmetic
    ]
    return Deviations(
        tuple(sorted(mis, key=lambda m: m.at)),
        tuple(sorted(errors, key=lambda e: e.at)),
        tuple(_refused(ctx, frame)),
        tuple(blocked),
        tuple(replacements),
        tuple(late),
    )
