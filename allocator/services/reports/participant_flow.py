"""CONSORT participant flow, overall, by stratum and
(restricted, after the final unblinding) by arm."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Subquery,
    Text,
    case,
    cast,
    func,
    literal,
    null,
    select,
    true,
    union_all,
)

from allocator.audit import Actor
from allocator.models import Dispensation, ScreeningEntry, Subject, SubjectCorrection, SubjectWithdrawal
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import arm_access, lookups
from allocator.services.context import ServiceContext
from allocator.services.lookups import get_trial
from allocator.services.reports.filters import (
    ALL_SITES,
    Frame,
    ReportFilter,
    frame_subjects,
    scoped_frame,
    strata_text,
)
from allocator.wording import Words

# --- CONSORT-style participant flow (REP-04) ------------------------------------------------------


ALL_STRATA = N_("all strata")  # the site-total rows of the per-arm flow
ALL_ARMS = N_("All arms")


@dataclass(frozen=True, slots=True)
class FlowCounts:
    screened: int | None  # None where screening does not apply (strata, arms)
    ineligible: int | None
    randomized: int
    in_error: int
    withdrawn: int  # REP-04: withdrawals recorded in this service, whatever their kind
    dispensed: tuple[int, ...]  # per day
    administered: tuple[int, ...]  # per day
    complete: int


@dataclass(frozen=True, slots=True)
class ParticipantFlow:
    day_labels: tuple[str, ...]
    columns: tuple[str, ...]  # "All sites", then each site (or arm)
    counts: tuple[FlowCounts, ...]  # one per column
    by_stratum: tuple[tuple[str, str, FlowCounts], ...]  # site, stratum, counts
    ineligible_reasons: tuple[tuple[str, int], ...]
    per_arm: bool = False
    # per arm only: (site, stratum or ALL_STRATA, arm column, counts) for each site and stratum (REP-04)
    by_arm_and_stratum: tuple[tuple[str, str, str, FlowCounts], ...] = ()

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        total = self.counts[0]
        out = [
            (_("Randomized"), _.n(total.randomized)),
            (_("Randomized in error (kept in every count, intention to treat)"), _.n(total.in_error)),
            (_("Withdrawn (kept in every count, intention to treat)"), _.n(total.withdrawn)),
            (_("Received all %(n)s doses", n=len(self.day_labels)), _.n(total.complete)),
        ]
        if total.screened is not None:
            out[:0] = [
                (_("Patients screened"), _.n(total.screened)),
                (_("Ineligible"), _.n(total.ineligible)),
            ]
        return tuple(out)

    def _measures(self, counts: Sequence[FlowCounts], _: Words) -> tuple[tuple[str, ...], ...]:
        rows: list[tuple[str, ...]] = []
        if not self.per_arm:
            rows.append((_("Patients screened"), *(_.n(c.screened) for c in counts)))
            rows.append((_("Ineligible"), *(_.n(c.ineligible) for c in counts)))
        rows.append((_("Randomized"), *(_.n(c.randomized) for c in counts)))
        rows.append((_("Randomized in error"), *(_.n(c.in_error) for c in counts)))
        rows.append((_("Withdrawn"), *(_.n(c.withdrawn) for c in counts)))
        for i, label in enumerate(self.day_labels):
            rows.append((_("%(day)s dispensed", day=label), *(_.n(c.dispensed[i]) for c in counts)))
            rows.append((_("%(day)s administered", day=label), *(_.n(c.administered[i]) for c in counts)))
        n = len(self.day_labels)
        rows.append((_("%(n)s/%(n)s doses administered", n=n), *(_.n(c.complete) for c in counts)))
        return tuple(rows)

    def _stratum_columns(self, _: Words, *, arm: bool) -> tuple[str, ...]:
        n = len(self.day_labels)
        return (
            _("Site"),
            _("Stratum"),
            *((_("Arm"),) if arm else ()),
            _("Randomized"),
            _("Randomized in error"),
            _("Withdrawn"),
            *(_("%(day)s administered", day=d) for d in self.day_labels),
            f"{n}/{n}",
        )

    @staticmethod
    def _stratum_counts(c: FlowCounts, _: Words) -> tuple[str, ...]:
        return (
            _.n(c.randomized),
            _.n(c.in_error),
            _.n(c.withdrawn),
            *(_.n(x) for x in c.administered),
            _.n(c.complete),
        )

    def arm_strata_table(self, _: Words) -> monitoring_reports.Table:
        """The per-arm counts of each site and stratum (restricted, REP-04)."""
        return monitoring_reports.Table(
            _("Participant flow per arm, site and stratum"),
            self._stratum_columns(_, arm=True),
            tuple(
                (
                    site,
                    _(stratum) if stratum == ALL_STRATA else _.strata(stratum),
                    arm,
                    *self._stratum_counts(c, _),
                )
                for site, stratum, arm, c in self.by_arm_and_stratum
            ),
            _("Strata as used at randomization."),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Participant flow per arm") if self.per_arm else _("Participant flow"),
                (_("Measure"), *(_(c) if c in (ALL_SITES, ALL_ARMS) else c for c in self.columns)),
                self._measures(self.counts, _),
                _(
                    "Every randomized subject is counted where randomized, including those randomized in error."
                ),
            ),
            monitoring_reports.Table(
                _("Per stratum"),
                self._stratum_columns(_, arm=False),
                tuple(
                    (site, _.strata(stratum), *self._stratum_counts(c, _))
                    for site, stratum, c in self.by_stratum
                ),
            ),
            monitoring_reports.Table(
                _("Ineligible: failed criteria"),
                (_("Criterion"), _("Patients")),
                tuple((_.criterion(label), _.n(n)) for label, n in self.ineligible_reasons),
                _("Patients may fail several criteria."),
            ),
        )


@dataclass(slots=True)
class _Tally:
    """The counts of a group of subjects, added up from the database's groups."""

    days: int
    randomized: int = 0
    in_error: int = 0
    withdrawn: int = 0
    complete: int = 0
    dispensed: list[int] = field(init=False)  # per day
    administered: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.dispensed = [0] * self.days
        self.administered = [0] * self.days

    def add(self, other: _Tally) -> None:
        self.randomized += other.randomized
        self.in_error += other.in_error
        self.withdrawn += other.withdrawn
        self.complete += other.complete
        for i in range(self.days):
            self.dispensed[i] += other.dispensed[i]
            self.administered[i] += other.administered[i]

    def counts(self, screened: int | None = None, ineligible: int | None = None) -> FlowCounts:
        return FlowCounts(
            screened,
            ineligible,
            self.randomized,
            self.in_error,
            self.withdrawn,
            tuple(self.dispensed),
            tuple(self.administered),
            self.complete,
        )


# A kit's status as a digit, so that one MAX over `replacement_number * 4 + digit` finds the status of
# a subject's latest kit of a day (the highest replacement number; one row per number and day).
_STATUS_DIGIT = {"dispensed": 1, "administered": 2}  # anything else (allocated, replaced): 0


@dataclass(frozen=True, slots=True)
class _PerSubject:
    """Each subject of the frame joined to its kits and summed up (the day's kit is its latest, as
    the subject's view shows it), with what the counts need of it, as SQL columns over `rows`."""

    rows: Subquery
    days: int
    administered: tuple[ColumnElement[int], ...]  # 1 when the day's latest kit was administered
    dispensed: tuple[ColumnElement[int], ...]  # 1 when it was dispensed (or then administered)
    in_error: ColumnElement[int]
    withdrawn: ColumnElement[int]
    complete: ColumnElement[int]  # 1 when every day's latest kit was administered


def _per_subject(frame: Frame) -> _PerSubject:
    """Only tables are joined, never a grouped result: without statistics, PostgreSQL looped over
    one for each subject. The JSON of the strata has no equality on PostgreSQL: its text is kept."""
    days = sorted(d.day for d in frame.definition.dispensing.schedule)
    n = len(days)
    strata = cast(Subject.strata, Text)
    digit = case(
        *((Dispensation.status == status, value) for status, value in _STATUS_DIGIT.items()), else_=0
    )
    ranked = Dispensation.replacement_number * 4 + digit
    rows = (
        frame_subjects(
            frame,
            Subject.id.label("subject_id"),
            Subject.site_id,
            strata.label("strata"),
            *(
                func.max(case((Dispensation.day == day, ranked))).label(f"kit_{i}")
                for i, day in enumerate(days)
            ),
        )
        .outerjoin(Dispensation, Dispensation.subject_id == Subject.id)
        .group_by(Subject.id, Subject.site_id, strata)
        .subquery()
    )
    # The latest kit's digit of each day (none: no kit that day).
    latest = [rows.c[f"kit_{i}"] % 4 for i in range(n)]
    administered = tuple(case((status == _STATUS_DIGIT["administered"], 1), else_=0) for status in latest)
    dispensed = tuple(case((status.in_(tuple(_STATUS_DIGIT.values())), 1), else_=0) for status in latest)
    in_error = select(SubjectCorrection.subject_id).where(SubjectCorrection.kind == "randomized_in_error")
    return _PerSubject(
        rows,
        n,
        administered,
        dispensed,
        case((rows.c.subject_id.in_(in_error), 1), else_=0),
        case((rows.c.subject_id.in_(select(SubjectWithdrawal.subject_id)), 1), else_=0),
        case((sum(administered[1:], administered[0]) == n, 1), else_=0) if n else literal(0),
    )


def _stratum_tallies(ctx: ServiceContext, frame: Frame) -> dict[tuple[str, str], _Tally]:
    """Per site and stratum (as used at randomization) of the frame's subjects: randomized, in
    error, withdrawn, complete, and each schedule day's kit dispensed and administered. Counted in
    the database, one statement whatever the number of subjects (issue 21): `_per_subject`, then
    summed per site and stratum; each distinct text of the strata parsed once here and groups of the
    same stratum text merged."""
    per = _per_subject(frame)
    with ctx.db.reading() as session:
        rows = session.execute(
            select(
                per.rows.c.site_id,
                per.rows.c.strata,
                func.count(),
                func.sum(per.in_error),
                func.sum(per.withdrawn),
                func.sum(per.complete),
                *(func.sum(given) for given in per.dispensed),
                *(func.sum(given) for given in per.administered),
            ).group_by(per.rows.c.site_id, per.rows.c.strata)
        ).all()
    return _tallied(frame, per.days, rows)


def _subject_tallies(ctx: ServiceContext, frame: Frame) -> list[tuple[int, str, str, _Tally]]:
    """Each subject of the frame: (subject id, site, stratum as used at randomization, its own
    counts), one row each from the database (`_per_subject`), for the per-arm flow, whose groups
    are made once the arms are read (issue 21: each subject's whole view was built before)."""
    per = _per_subject(frame)
    with ctx.db.reading() as session:
        rows = session.execute(
            select(
                per.rows.c.subject_id,
                per.rows.c.site_id,
                per.rows.c.strata,
                per.in_error,
                per.withdrawn,
                per.complete,
                *per.dispensed,
                *per.administered,
            ).order_by(per.rows.c.subject_id)
        ).all()
    texts: dict[str, str] = {}
    out = []
    for subject_id, site_id, text, *counts in rows:
        (((site, stratum), tally),) = _tallied(frame, per.days, [(site_id, text, 1, *counts)], texts).items()
        out.append((subject_id, site, stratum, tally))
    return out


def _tallied(
    frame: Frame, n: int, rows: Iterable[Sequence[Any]], texts: dict[str, str] | None = None
) -> dict[tuple[str, str], _Tally]:
    """Rows of (site id, strata text, subjects, in error, withdrawn, complete, dispensed per day,
    administered per day) added up per site and stratum text (`strata_text`)."""
    texts = {} if texts is None else texts
    tallies: dict[tuple[str, str], _Tally] = {}
    for site_id, text, randomized, errors, withdrawals, completed, *doses in rows:
        if text not in texts:
            texts[text] = strata_text(json.loads(text))
        tally = tallies.setdefault((frame.sites[site_id], texts[text]), _Tally(n))
        tally.randomized += randomized
        tally.in_error += int(errors)
        tally.withdrawn += int(withdrawals)
        tally.complete += int(completed)
        for i in range(n):
            tally.dispensed[i] += int(doses[i])
            tally.administered[i] += int(doses[n + i])
    return tallies


def _latest_screenings(frame: Frame) -> CTE:
    """Each screening entry at a site within reach with `latest` = 1 when it is its patient's latest
    check (the highest id of its screening number at its site), as `filters.latest_screenings` reads
    them (ranked in a window: no grouped result joined back, see `_stratum_tallies`)."""
    query = select(
        ScreeningEntry.id,
        ScreeningEntry.site_id,
        ScreeningEntry.eligible,
        ScreeningEntry.failures,
        ScreeningEntry.screened_at,
        func.row_number()
        .over(
            partition_by=(ScreeningEntry.site_id, ScreeningEntry.screening_number),
            order_by=ScreeningEntry.id.desc(),
        )
        .label("latest"),
    ).where(ScreeningEntry.trial_id == frame.trial_id)
    if not frame.scope.all_sites:
        query = query.where(ScreeningEntry.site_id.in_(sorted(frame.scope.site_ids)))
    return query.cte("screened")


def _screening_counts(
    ctx: ServiceContext, frame: Frame
) -> tuple[dict[str, tuple[int, int]], tuple[tuple[str, int], ...]]:
    """Per site code, the patients screened in the period and found ineligible; and the failed
    criteria of the ineligible ones (each criterion once per patient, most failed first, then by
    id, worded by the definition). Counted in the database, each patient's failures unnested there
    (issue 21), in one statement: the entries ranked once (a WITH query used twice is computed
    once), then the rows of the sites (criterion null) and those of the criteria (site null). A
    patient is in the period when its latest check is."""
    entries = _latest_screenings(frame)
    patients: list[ColumnElement[bool]] = [entries.c.latest == 1]
    if frame.flt.start is not None:
        patients.append(entries.c.screened_at >= frame.flt.start)
    if frame.flt.end is not None:
        patients.append(entries.c.screened_at < frame.flt.end)
    with ctx.db.reading() as session:
        if session.get_bind().dialect.name == "postgresql":
            items = func.json_array_elements(entries.c.failures).table_valued("value")
            criterion = func.json_extract_path_text(items.c.value, "criterion")
        else:
            items = func.json_each(entries.c.failures).table_valued("value")
            criterion = func.json_extract(items.c.value, "$.criterion")
        criterion = func.coalesce(criterion, "")
        rows = session.execute(
            union_all(
                select(
                    entries.c.site_id,
                    cast(null(), Text),
                    func.count(),
                    func.sum(case((entries.c.eligible, 0), else_=1)),
                )
                .where(*patients)
                .group_by(entries.c.site_id),
                select(cast(null(), Integer), criterion, func.count(func.distinct(entries.c.id)), null())
                .select_from(entries)
                .join(items, true())
                .where(*patients, entries.c.eligible.is_(False))
                .group_by(criterion),
            )
        ).all()
    per_site = [(site_id, count, ineligible) for site_id, _, count, ineligible in rows if site_id is not None]
    failed = [(c, count) for site_id, c, count, _ in rows if site_id is None]
    screened = {frame.sites[site_id]: (count, int(ineligible)) for site_id, count, ineligible in per_site}
    counted: Counter[str] = Counter()
    for c, count in failed:
        counted[str(c)] += count
    labels = {c.id: c.label.en for c in frame.definition.eligibility}
    reasons = tuple(
        (labels.get(c, c), count)
        for c, count in sorted(counted.items(), key=lambda item: (-item[1], item[0]))
    )
    return screened, reasons


def participant_flow(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """CONSORT-style numbers, blinded: screened, ineligible (with the failed criteria), randomized,
    randomized in error, withdrawn, kits dispensed and administered per day, complete treatments; in
    total, per site and per stratum. Counted in the database by site and stratum, a fixed number of
    statements whatever the number of subjects and screenings (issue 21); the same numbers as each
    subject's view counted one by one (`participant_flow_by_arm` still reads those: it needs each
    subject's audited arm)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    n = len(frame.day_labels)
    tallies = _stratum_tallies(ctx, frame)
    screened, reasons = _screening_counts(ctx, frame)
    per_site = {code: _Tally(n) for code in frame.site_codes}
    for (site, _stratum), tally in tallies.items():
        per_site.setdefault(site, _Tally(n)).add(tally)
    total = _Tally(n)
    for tally in per_site.values():
        total.add(tally)
    counts = [
        total.counts(sum(s for s, _ in screened.values()), sum(i for _, i in screened.values())),
        *(per_site[code].counts(*screened.get(code, (0, 0))) for code in frame.site_codes),
    ]
    return ParticipantFlow(
        frame.day_labels,
        (ALL_SITES, *frame.site_codes),
        tuple(counts),
        tuple((site, stratum, tallies[(site, stratum)].counts()) for site, stratum in sorted(tallies)),
        reasons,
    )


def participant_flow_by_arm(
    ctx: ServiceContext, reader: Actor, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """The participant flow per arm (REP-04, unblinded): only once the trial is UNBLINDED
    (trial_state.NotUnblinded, 409, before). Each subject's counts come from the database, one row
    each (`_subject_tallies`), and the arms of the frame's subjects are read through
    `arm_access.subject_arms_in`, in one unit of work: two statements and one audited read that
    records the report's filter and the subjects read (issue 21: each subject's view, and three
    statements and an audit entry per subject for its arm, before)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        lookups.require_unblinded(get_trial(session, frame.code))
    subjects = _subject_tallies(ctx, frame)
    with ctx.db.unit_of_work() as session:
        lookups.require_unblinded(get_trial(session, frame.code))  # again, where the arms are read
        arms = arm_access.subject_arms_in(
            session,
            ctx,
            reader,
            frame.code,
            frame.trial_id,
            "participant flow per arm (REP-04)",
            subject_ids=[subject_id for subject_id, *_ in subjects],
            selection=f"randomized subjects of {frame.flt.describe()}",
        )
    n = len(frame.day_labels)
    labels = [(a.code, a.label) for a in frame.definition.arms]

    def total(chosen: Iterable[tuple[int, str, str, _Tally]]) -> FlowCounts:
        tally = _Tally(n)
        for *_, one in chosen:
            tally.add(one)
        return tally.counts()

    counts = [total(subjects)] + [total(s for s in subjects if arms.get(s[0]) == code) for code, _ in labels]
    by_arm: list[tuple[str, str, str, FlowCounts]] = []
    for site in sorted({s[1] for s in subjects}):
        at_site = [s for s in subjects if s[1] == site]
        for stratum in (*sorted({s[2] for s in at_site}), ALL_STRATA):
            group = [s for s in at_site if stratum in (ALL_STRATA, s[2])]
            for code, label in labels:
                chosen = [s for s in group if arms.get(s[0]) == code]
                by_arm.append((site, stratum, f"{code}: {label}", total(chosen)))
    strata = sorted({(site, stratum) for _, site, stratum, _ in subjects})
    return ParticipantFlow(
        frame.day_labels,
        (ALL_ARMS, *(f"{code}: {label}" for code, label in labels)),
        tuple(counts),
        tuple(
            (site, stratum, total(s for s in subjects if (s[1], s[2]) == (site, stratum)))
            for site, stratum in strata
        ),
        (),
        per_arm=True,
        by_arm_and_stratum=tuple(by_arm),
    )


@dataclass(frozen=True, slots=True)
class RestrictedFlow:
    """The blinded participant flow and its per-arm counterpart."""

    blinded: ParticipantFlow
    per_arm: ParticipantFlow

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        return self.blinded.facts(_)

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (self.per_arm.tables(_)[0], self.per_arm.arm_strata_table(_), *self.blinded.tables(_))
