"""What a reader sees of subjects: the subject list and page,
the screening log, the notifications, whether a blind is broken (blinded; never an arm)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from allocator.models import (
    Administration,
    Dispensation,
    Kit,
    Notification,
    Registration,
    ScreeningEntry,
    Site,
    Subject,
    SubjectCorrection,
    SubjectWithdrawal,
)
from allocator.permissions import Scope
from allocator.services import unblinding
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, site_filter, subject_in_reach
from allocator.trialdef import TrialDefinition


def withdrawal_of(session: Session, subject_id: int) -> SubjectWithdrawal | None:
    return session.execute(
        select(SubjectWithdrawal).where(SubjectWithdrawal.subject_id == subject_id)
    ).scalar_one_or_none()


def current_strata(session: Session, subject: Subject) -> dict[str, str]:
    """The stratification values as corrected (the values used at randomization stay in
    `subject.strata`)."""
    values = dict(subject.strata)
    for correction in session.execute(
        select(SubjectCorrection)
        .where(SubjectCorrection.subject_id == subject.id, SubjectCorrection.kind == "stratum")
        .order_by(SubjectCorrection.id)
    ).scalars():
        if correction.field:
            values[correction.field] = correction.new_value
    return values


# --- blinded views (BLD-01, BLD-06) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayView:
    day: int
    label: str
    kit_number: str
    status: str  # allocated | dispensed | administered
    dispensed_at: datetime | None
    administered_at: datetime | None
    replacements: int


@dataclass(frozen=True, slots=True)
class CorrectionView:
    kind: str
    field: str | None
    old: Any
    new: Any
    reason: str
    by: str
    at: datetime
    agreement: str | None


@dataclass(frozen=True, slots=True)
class WithdrawalView:
    kind: str
    effective_date: date
    reason: str
    by: str
    at: datetime
    agreement: str | None = None  # DIB-03: the investigator's agreement, when recorded by someone else

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "effective_date": self.effective_date.isoformat()}


@dataclass(frozen=True, slots=True)
class SubjectView:
    """A subject as every role of the trial may see it: no arm, no stratum position (BLD-01)."""

    subject_number: str
    screening_number: str
    randomization_number: str
    site: str
    randomized_at: datetime
    randomized_by: str
    strata_at_randomization: dict[str, str]
    strata_corrected: dict[str, str]
    in_error: bool
    blind_broken: bool
    days: tuple[DayView, ...]
    corrections: tuple[CorrectionView, ...]
    withdrawal: WithdrawalView | None = None  # REP-04

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "screening_number": self.screening_number,
            "randomization_number": self.randomization_number,
            "site": self.site,
            "randomized_at": self.randomized_at.isoformat().replace("+00:00", "Z"),
            "strata": self.strata_at_randomization,
            "strata_corrected": self.strata_corrected
            if self.strata_corrected != self.strata_at_randomization
            else None,
            "randomized_in_error": self.in_error,
            "blind_broken": self.blind_broken,
            "withdrawal": self.withdrawal.as_json() if self.withdrawal else None,
            "kits": [
                {
                    "day": d.label,
                    "kit_number": d.kit_number,
                    "status": d.status,
                    "administered_at": d.administered_at.isoformat().replace("+00:00", "Z")
                    if d.administered_at
                    else None,
                }
                for d in self.days
            ],
        }


MAX_PAGE = 1000  # subjects of one page of a list or a report


def subject_view(
    session: Session, definition: TrialDefinition, subject: Subject, site_codes: Mapping[int, str]
) -> SubjectView:
    """One subject's view (a handful of queries, whatever the size of the trial)."""
    return subject_views(session, definition, [subject], site_codes)[0]


def subject_views(
    session: Session,
    definition: TrialDefinition,
    subjects: Sequence[Subject],
    site_codes: Mapping[int, str],
) -> list[SubjectView]:
    """The views of `subjects` (all of one trial), in their order, read with one query per kind of
    fact (kits, administrations, corrections, withdrawals, broken blinds) for all of them at once:
    the cost of a list or a report does not grow with its subjects (issue 21)."""
    if not subjects:
        return []
    trial_id = subjects[0].trial_id
    ids = [s.id for s in subjects]
    # One subject (a subject page): narrow by id; a page of a list or a report (at most MAX_PAGE):
    # by its ids, a bounded parameter list. More (a whole report): the trial's rows, which costs
    # one scan instead of a parameter list that grows with the subjects.
    if len(ids) == 1:
        mine: Callable[[Any], Any] = lambda column: column == ids[0]  # noqa: E731
    elif len(ids) <= MAX_PAGE:
        mine = lambda column: column.in_(ids)  # noqa: E731
    else:
        in_trial = select(Subject.id).where(Subject.trial_id == trial_id).scalar_subquery()
        mine = lambda column: column.in_(in_trial)  # noqa: E731
    labels = {d.day: d.label for d in definition.dispensing.schedule}
    wanted = set(ids)

    # Columns, not entities: a report reads three rows per subject, and building an ORM object for
    # each cost more than the rest of the view. A page's kits are looked up one by one by their key:
    # joined, PostgreSQL hashed the whole kit table for a page's 300 kits once it held 19,000 (the
    # subject list 20 -> 25 ms from 500 to 5,000 subjects); a whole report's are joined.
    kit_number: Any = (
        select(Kit.kit_number).where(Kit.id == Dispensation.kit_id).scalar_subquery()
        if len(ids) <= MAX_PAGE
        else Kit.kit_number
    )
    kit_rows = select(
        Dispensation.subject_id,
        Dispensation.day,
        Dispensation.id,
        Dispensation.status,
        Dispensation.dispensed_at,
        Dispensation.replacement_number,
        kit_number.label("kit_number"),
    )
    if len(ids) > MAX_PAGE:
        kit_rows = kit_rows.join(Kit, Kit.id == Dispensation.kit_id)
    kits: dict[int, dict[int, Any]] = defaultdict(dict)
    for row in session.execute(
        kit_rows.where(mine(Dispensation.subject_id)).order_by(
            Dispensation.subject_id, Dispensation.day, Dispensation.replacement_number
        )
    ).all():
        kits[row.subject_id][row.day] = row  # the last replacement
    administered = dict(
        session.execute(
            select(Administration.dispensation_id, Administration.administered_at).where(
                mine(Administration.subject_id)
            )
        ).all()
    )
    corrections: dict[int, list[SubjectCorrection]] = defaultdict(list)
    for c in session.execute(
        select(SubjectCorrection).where(mine(SubjectCorrection.subject_id)).order_by(SubjectCorrection.id)
    ).scalars():
        corrections[c.subject_id].append(c)
    withdrawals = {
        w.subject_id: w
        for w in session.execute(
            select(SubjectWithdrawal).where(mine(SubjectWithdrawal.subject_id))
        ).scalars()
    }
    broken = unblinding.blind_broken_subject_ids(session, trial_id) & wanted

    views: list[SubjectView] = []
    for subject in subjects:
        own = corrections.get(subject.id, [])
        strata = dict(subject.strata)
        for c in own:  # the stratification values as corrected, in order
            if c.kind == "stratum" and c.field:
                strata[c.field] = c.new_value
        w = withdrawals.get(subject.id)
        views.append(
            SubjectView(
                subject_number=subject.subject_number,
                screening_number=subject.screening_number,
                randomization_number=subject.randomization_number,
                site=site_codes[subject.site_id],
                randomized_at=subject.randomized_at,
                randomized_by=subject.randomized_by_name,
                strata_at_randomization=dict(subject.strata),
                strata_corrected=strata,
                in_error=any(c.kind == "randomized_in_error" for c in own),
                blind_broken=subject.id in broken,
                days=tuple(
                    DayView(
                        day=day,
                        label=labels.get(day, f"D{day}"),
                        kit_number=d.kit_number,
                        status=d.status,
                        dispensed_at=d.dispensed_at,
                        administered_at=administered.get(d.id),
                        replacements=d.replacement_number,
                    )
                    for day, d in sorted(kits.get(subject.id, {}).items())
                ),
                corrections=tuple(
                    CorrectionView(
                        c.kind,
                        c.field,
                        c.old_value,
                        c.new_value,
                        c.reason,
                        c.by_name,
                        c.at,
                        c.investigator_agreement_ref,
                    )
                    for c in own
                ),
                withdrawal=WithdrawalView(
                    w.kind,
                    w.effective_date,
                    w.reason,
                    w.recorded_by_name,
                    w.recorded_at,
                    w.investigator_agreement_ref,
                )
                if w is not None
                else None,
            )
        )
    return views


def blind_broken(session: Session, subject_id: int) -> bool:
    """Whether the subject's blind is broken as blinded roles see it: an emergency unblinding
    (online or offline) or an accidental report naming the subject; never a pharmacovigilance
    unblinding (UNB-05, UNB-08)."""
    subject = session.get(Subject, subject_id)
    return subject is not None and subject_id in unblinding.blind_broken_subject_ids(
        session, subject.trial_id
    )


def _site_codes(session: Session, trial_id: int) -> dict[int, str]:
    return {s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial_id)).scalars()}


def subjects(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[SubjectView]:
    """Every subject within `scope`, in randomization order."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        query = select(Subject).where(Subject.trial_id == trial.id).order_by(Subject.id)
        if not scope.all_sites:
            query = query.where(Subject.site_id.in_(sorted(scope.site_ids)))
        rows = list(session.execute(query).scalars())
        return subject_views(session, definition, rows, _site_codes(session, trial.id))


@dataclass(frozen=True, slots=True)
class SubjectChoice:
    """A subject as a form offers it to be chosen (the unblinding forms): never an arm."""

    subject_number: str
    site: str
    randomized_at: datetime


def subject_choices(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[SubjectChoice]:
    """Every subject within `scope`, by site and subject number: one statement and no view built
    (issue 21: a pharmacovigilance officer's form built the views of 5,000 subjects, 0.4-0.8 s, to
    show three texts of each)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        query = (
            select(Subject.subject_number, Site.code, Subject.randomized_at)
            .join(Site, Site.id == Subject.site_id)
            .where(Subject.trial_id == trial.id)
            .order_by(Site.code, Subject.subject_number)
        )
        if not scope.all_sites:
            query = query.where(Subject.site_id.in_(sorted(scope.site_ids)))
        return [SubjectChoice(*row) for row in session.execute(query).all()]


def site_choices(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[str]:
    """The codes of the trial's sites within `scope`, for a site filter."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        return sorted(code for sid, code in _site_codes(session, trial.id).items() if scope.allows_site(sid))


@dataclass(frozen=True, slots=True)
class SubjectPage:
    subjects: list[SubjectView]
    next_after: str | None  # the subject number to pass as `after` for the next page; None: last page


def subjects_page(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    after: str | None = None,
    limit: int = 100,
    site: str | None = None,
) -> SubjectPage:
    """One page of the subjects within `scope` (and at `site`, when given), in randomization order,
    after the subject numbered `after`: a few queries and `limit` views, whatever the size of the
    trial (issue 21). Raises ValidationFailed naming `after`, `site` or `limit`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed("invalid limit", errors=[FieldProblem("limit", f"from 1 to {MAX_PAGE}")])
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        codes = _site_codes(session, trial.id)
        query = select(Subject).where(Subject.trial_id == trial.id).order_by(Subject.id).limit(limit + 1)
        if not scope.all_sites:
            query = query.where(Subject.site_id.in_(sorted(scope.site_ids)))
        if site:
            query = query.where(Subject.site_id == site_filter(codes, site, scope, trial.code))
        if after:
            start = session.execute(
                select(Subject.id).where(Subject.trial_id == trial.id, Subject.subject_number == after)
            ).scalar_one_or_none()
            if start is None:
                raise ValidationFailed(
                    "unknown cursor", errors=[FieldProblem("after", f"no subject {after!r} in {trial.code}")]
                )
            query = query.where(Subject.id > start)
        rows = list(session.execute(query).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return SubjectPage(
            subject_views(session, definition, rows, codes),
            rows[-1].subject_number if more and rows else None,
        )


def subject(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> SubjectView:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        found = subject_in_reach(session, trial, number, scope)
        return subject_view(session, definition, found, _site_codes(session, trial.id))


@dataclass(frozen=True, slots=True)
class ScreeningView:
    screening_number: str
    site: str
    screened_at: datetime
    screened_by: str
    eligible: bool
    failures: tuple[str, ...]
    subject_number: str | None
    superseded: bool = False  # a later check of the same screening number corrected the answers


def screening_log(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[ScreeningView]:
    """Every screening within `scope`, newest first."""
    return screening_page(ctx, trial_code, scope, limit=None).entries


@dataclass(frozen=True, slots=True)
class ScreeningPage:
    entries: list[ScreeningView]
    next_before: int | None  # pass as `before` for the next (older) page; None: last page


def screening_page(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, before: int | None = None, limit: int | None = 100
) -> ScreeningPage:
    """One page of the screening log within `scope`, newest first, older than the entry `before`:
    one query, whatever the size of the log (issue 21). An entry is `superseded` when a later
    check of the same screening number at the same site exists."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        codes = _site_codes(session, trial.id)
        later = aliased(ScreeningEntry)
        superseded = (
            select(later.id)
            .where(
                later.trial_id == ScreeningEntry.trial_id,
                later.site_id == ScreeningEntry.site_id,
                later.screening_number == ScreeningEntry.screening_number,
                later.id > ScreeningEntry.id,
            )
            .exists()
        )
        query = (
            # A randomized subject's number, or a registered participant's (observational study).
            select(
                ScreeningEntry,
                func.coalesce(Subject.subject_number, Registration.subject_number),
                superseded,
            )
            .outerjoin(Subject, Subject.screening_entry_id == ScreeningEntry.id)
            .outerjoin(Registration, Registration.screening_entry_id == ScreeningEntry.id)
            .where(ScreeningEntry.trial_id == trial.id)
            .order_by(ScreeningEntry.id.desc())
        )
        if not scope.all_sites:
            query = query.where(ScreeningEntry.site_id.in_(sorted(scope.site_ids)))
        if before is not None:
            query = query.where(ScreeningEntry.id < before)
        if limit is not None:
            query = query.limit(limit + 1)
        rows = session.execute(query).all()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        return ScreeningPage(
            [
                ScreeningView(
                    e.screening_number,
                    codes[e.site_id],
                    e.screened_at,
                    e.screened_by_name,
                    e.eligible,
                    tuple(f["message"] for f in e.failures),
                    number,
                    superseded=bool(is_superseded),
                )
                for e, number, is_superseded in rows
            ],
            rows[-1][0].id if more and rows else None,
        )


def notifications(
    ctx: ServiceContext, trial_code: str, audience: set[str], scope: Scope, limit: int = 50
) -> list[Notification]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(Notification)
            .where(Notification.trial_id == trial.id, Notification.audience.in_(audience))
            .order_by(Notification.id.desc())
            .limit(limit * 4)
        ).scalars()
        return [n for n in rows if n.site_id is None or scope.allows_site(n.site_id)][:limit]
