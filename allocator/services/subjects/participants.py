"""The participants of an observational study as the API lists them (issue 20): registered, never
randomized, each with its planned samples, their planned dates and where each stands (the state of
the tube set assigned to it). A page at a time, in registration order, as the randomized trial's
list (issue 21): a few queries whatever the size of the cohort. No randomization field exists to
leave out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator.models import PlannedSample, Registration, SampleKit, SampleKitStatus, Site
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import get_trial, site_filter

MAX_PAGE = 1000


def _utc(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


@dataclass(frozen=True, slots=True)
class SampleStatus:
    label: str
    kit_type: str
    due: date
    window_end: date
    planned: date
    status: str  # planned (no tube set collected yet), collected, shipped, received, unusable, missed
    kit_number: str | None
    collected_at: datetime | None
    received_at: datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "kit_type": self.kit_type,
            "due_date": self.due.isoformat(),
            "window_end": self.window_end.isoformat(),
            "planned_date": self.planned.isoformat(),
            "status": self.status,
            "kit_number": self.kit_number,
            "collected_at": _utc(self.collected_at),
            "received_at": _utc(self.received_at),
        }


@dataclass(frozen=True, slots=True)
class Participant:
    subject_number: str
    screening_number: str
    site: str
    registered_at: datetime
    anchor_date: date
    samples: tuple[SampleStatus, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "screening_number": self.screening_number,
            "site": self.site,
            "registered_at": _utc(self.registered_at),
            "anchor_date": self.anchor_date.isoformat(),
            "samples": [s.as_json() for s in self.samples],
        }


@dataclass(frozen=True, slots=True)
class ParticipantPage:
    participants: list[Participant]
    next_after: str | None  # pass as `after` for the next page; None: the last page


def _status(kit_status: str | None) -> str:
    """Where a planned sample stands: `planned` until its tube set is collected or missed."""
    if kit_status in (None, SampleKitStatus.AVAILABLE.value, SampleKitStatus.ASSIGNED.value):
        return "planned"
    return str(kit_status)


def participants_page(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    after: str | None = None,
    limit: int = 100,
    site: str | None = None,
) -> ParticipantPage:
    """One page of the participants within `scope` (and at `site`, when given), in registration
    order, after the participant numbered `after`. Raises ValidationFailed naming `after`, `site`
    or `limit`."""
    with ctx.db.reading() as session:
        rows, codes, next_after = page_rows(session, trial_code, scope, after=after, limit=limit, site=site)
        return ParticipantPage(_participants(session, rows, codes), next_after)


def page_rows(
    session: Session,
    trial_code: str,
    scope: Scope,
    *,
    after: str | None,
    limit: int,
    site: str | None,
) -> tuple[list[Registration], dict[int, str], str | None]:
    """The registrations of one page (the API's list and the study's subject page): those within
    `scope` (and at `site`), in registration order, after the participant numbered `after`, at
    most `limit`; with the trial's site codes and the `after` of the next page (None: the last).
    Raises ValidationFailed naming `after`, `site` or `limit`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("invalid limit", errors=[FieldProblem("limit", f"from 1 to {MAX_PAGE}")])
    trial = get_trial(session, trial_code)
    codes = dict(session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id)).all())
    query = (
        select(Registration)
        .where(Registration.trial_id == trial.id)
        .order_by(Registration.id)
        .limit(limit + 1)
    )
    if not scope.all_sites:
        query = query.where(Registration.site_id.in_(sorted(scope.site_ids)))
    if site:
        query = query.where(Registration.site_id == site_filter(codes, site, scope, trial.code))
    if after and after.strip():  # a blank cursor is the first page
        # Within the reader's sites only: a cursor must not tell whether another site's
        # participant exists (the review of the merged cohort).
        cursor = select(Registration.id).where(
            Registration.trial_id == trial.id, Registration.subject_number == after.strip().upper()
        )
        if not scope.all_sites:
            cursor = cursor.where(Registration.site_id.in_(sorted(scope.site_ids)))
        start = session.execute(cursor).scalar_one_or_none()
        if start is None:
            raise ValidationFailed(
                "unknown cursor",
                errors=[FieldProblem("after", f"no participant {after!r} within your reach")],
            )
        query = query.where(Registration.id > start)
    rows = list(session.execute(query).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, codes, rows[-1].subject_number if more and rows else None


def participant(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> Participant:
    """One participant within `scope`. Raises NotFound (also for a participant of another site)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        found = session.execute(
            select(Registration).where(
                Registration.trial_id == trial.id, Registration.subject_number == number.strip().upper()
            )
        ).scalar_one_or_none()
        if found is None or not scope.allows_site(found.site_id):
            raise NotFound(f"no subject {number!r} within your reach")
        codes = dict(session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id)).all())
        return _participants(session, [found], codes)[0]


def _participants(session: Session, rows: list[Registration], codes: dict[int, str]) -> list[Participant]:
    samples: dict[int, list[SampleStatus]] = {}
    if rows:
        for p, kit_number, status, collected_at, received_at in session.execute(
            select(
                PlannedSample,
                SampleKit.kit_number,
                SampleKit.status,
                SampleKit.collected_at,
                SampleKit.received_at,
            )
            .outerjoin(SampleKit, SampleKit.planned_sample_id == PlannedSample.id)
            .where(PlannedSample.registration_id.in_([r.id for r in rows]))
            .order_by(PlannedSample.id)
        ).all():
            samples.setdefault(p.registration_id, []).append(
                SampleStatus(
                    p.label,
                    p.kit_type,
                    p.due_date,
                    p.window_end,
                    p.planned_date,
                    _status(status),
                    kit_number,
                    collected_at,
                    received_at,
                )
            )
    return [
        Participant(
            r.subject_number,
            r.screening_number,
            codes[r.site_id],
            r.registered_at,
            r.anchor_date,
            tuple(samples.get(r.id, ())),
        )
        for r in rows
    ]
