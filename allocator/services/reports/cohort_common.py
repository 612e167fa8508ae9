"""What the reports of an observational study (issue 20) read: its registrations and its planned
samples with their tube sets, each in one query whatever the size of the cohort (issue 21), and
the words they share (a failed criterion, a sample's state, a pre-analytical delay).

A planned sample's state comes from the tube set assigned to it (`sample_kit`, one per planned
sample): none or not collected yet is *pending*; *missed* and *unusable* carry the site's or the
lab's reason; a collected sample counts as collected whatever happened next; *received* is the
lab's receipt (received_at), *analysable* a received sample that is not unusable.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select

from allocator.models import PlannedSample, Registration, SampleKit, SampleKitStatus
from allocator.notices import N_
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import Frame
from allocator.trialdef import TrialDefinition
from allocator.wording import Words

# A sample's state as the reports show it (translated where shown).
PENDING, MISSED, UNUSABLE = "pending", "missed", "unusable"
STATE_WORDS = {
    PENDING: N_("not yet collected"),
    SampleKitStatus.COLLECTED.value: N_("collected"),
    SampleKitStatus.SHIPPED.value: N_("shipped to the lab"),
    SampleKitStatus.RECEIVED.value: N_("received at the lab"),
    UNUSABLE: N_("unusable"),
    MISSED: N_("missed"),
}


@dataclass(frozen=True, slots=True)
class Registered:
    subject_number: str
    site: str
    registered_at: datetime


def registrations(ctx: ServiceContext, frame: Frame) -> list[Registered]:
    """The participants within the frame (registered in its period), in registration order."""
    query = select(Registration.subject_number, Registration.site_id, Registration.registered_at).where(
        Registration.trial_id == frame.trial_id
    )
    if not frame.scope.all_sites:
        query = query.where(Registration.site_id.in_(sorted(frame.scope.site_ids)))
    if frame.flt.start is not None:
        query = query.where(Registration.registered_at >= frame.flt.start)
    if frame.flt.end is not None:
        query = query.where(Registration.registered_at < frame.flt.end)
    with ctx.db.reading() as session:
        return [
            Registered(number, frame.sites[site_id], at)
            for number, site_id, at in session.execute(query.order_by(Registration.id)).all()
        ]


@dataclass(frozen=True, slots=True)
class Sample:
    """One planned sample of a participant within the frame, and its tube set if it has one."""

    subject_number: str
    site: str
    label: str  # the timepoint (D3)
    due: date
    window_end: date
    planned: date
    kit_number: str | None
    kit_status: str | None
    collected_at: datetime | None
    collected_day: date | None  # the collection's date in the study's time zone
    received_at: datetime | None
    reason: str | None

    @property
    def collected(self) -> bool:
        return self.collected_at is not None

    @property
    def received(self) -> bool:
        return self.received_at is not None

    @property
    def missed(self) -> bool:
        return self.kit_status == SampleKitStatus.MISSED.value

    @property
    def unusable(self) -> bool:
        return self.kit_status == SampleKitStatus.UNUSABLE.value

    @property
    def pending(self) -> bool:
        """Not collected and neither missed nor unusable: still to be taken."""
        return not self.collected and not self.missed and not self.unusable

    @property
    def analysable(self) -> bool:
        return self.received and not self.unusable

    @property
    def on_planned_date(self) -> bool:
        return self.collected_day is not None and self.collected_day == self.planned

    @property
    def in_window(self) -> bool:
        """Collected within its window (due day to last day), on the planned date or not."""
        return self.collected_day is not None and self.due <= self.collected_day <= self.window_end

    @property
    def delay(self) -> timedelta | None:
        """The pre-analytical delay: from collection to the lab's receipt."""
        if self.collected_at is None or self.received_at is None:
            return None
        return self.received_at - self.collected_at

    @property
    def state(self) -> str:
        if self.missed:
            return MISSED
        if self.unusable:
            return UNUSABLE
        if self.kit_status in (
            SampleKitStatus.COLLECTED.value,
            SampleKitStatus.SHIPPED.value,
            SampleKitStatus.RECEIVED.value,
        ):
            return str(self.kit_status)
        return PENDING


def samples(ctx: ServiceContext, frame: Frame) -> list[Sample]:
    """The planned samples of the participants within the frame (registered in its period), with
    their tube sets: one query. In registration order, then the schedule's."""
    query = (
        select(
            Registration.subject_number,
            Registration.site_id,
            PlannedSample.label,
            PlannedSample.due_date,
            PlannedSample.window_end,
            PlannedSample.planned_date,
            SampleKit.kit_number,
            SampleKit.status,
            SampleKit.collected_at,
            SampleKit.received_at,
            SampleKit.reason,
        )
        .join(Registration, Registration.id == PlannedSample.registration_id)
        .outerjoin(SampleKit, SampleKit.planned_sample_id == PlannedSample.id)
        .where(Registration.trial_id == frame.trial_id)
        .order_by(Registration.id, PlannedSample.id)
    )
    if not frame.scope.all_sites:
        query = query.where(Registration.site_id.in_(sorted(frame.scope.site_ids)))
    if frame.flt.start is not None:
        query = query.where(Registration.registered_at >= frame.flt.start)
    if frame.flt.end is not None:
        query = query.where(Registration.registered_at < frame.flt.end)
    local = frame.definition.local_date
    with ctx.db.reading() as session:
        return [
            Sample(
                r.subject_number,
                frame.sites[r.site_id],
                r.label,
                r.due_date,
                r.window_end,
                r.planned_date,
                r.kit_number,
                r.status,
                r.collected_at,
                local(r.collected_at) if r.collected_at is not None else None,
                r.received_at,
                r.reason,
            )
            for r in session.execute(query).all()
        ]


def timepoints(definition: TrialDefinition) -> tuple[str, ...]:
    """The schedule's timepoints in order (D3), whether or not any sample is planned yet."""
    return tuple(tp.label for tp in definition.sampling.timepoints) if definition.sampling else ()


def criterion_text(definition: TrialDefinition, criterion: str, _: Words) -> str:
    """A failed criterion in the reader's language: the definition's label, or for a sample
    whose window holds no lab working day (`sampling.D3`) the reason in words."""
    if criterion.startswith("sampling."):
        return _("No central-lab working day in the %(label)s sample's window", label=criterion[9:])
    for c in definition.eligibility:
        if c.id == criterion:
            return c.label.fr if _.language == "fr" else c.label.en
    return criterion


def hours_text(delay: timedelta | None, _: Words) -> str:
    """A delay in hours and minutes (to the nearest minute): `26 h 30 min`."""
    if delay is None:
        return ""
    hours, minutes = divmod(round(delay.total_seconds() / 60), 60)
    return _("%(hours)s h %(minutes)s min", hours=_.n(hours), minutes=f"{minutes:02d}")


def median_delay(delays: list[timedelta]) -> timedelta | None:
    return timedelta(seconds=statistics.median(d.total_seconds() for d in delays)) if delays else None
