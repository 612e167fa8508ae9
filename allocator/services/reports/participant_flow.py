"""CONSORT participant flow, overall, by stratum and
(restricted, after the final unblinding) by arm."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import Subject
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import arm_access, lookups
from allocator.services.context import ServiceContext
from allocator.services.lookups import get_trial
from allocator.services.reports.dispensing import SubjectDoses, frame_doses
from allocator.services.reports.filters import ALL_SITES, Frame, ReportFilter, latest_screenings, scoped_frame
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


def _flow(
    screening: Sequence[tuple[bool, list[str]]] | None, rows: Sequence[SubjectDoses], days: int
) -> FlowCounts:
    return FlowCounts(
        screened=len(screening) if screening is not None else None,
        ineligible=sum(not eligible for eligible, _ in screening) if screening is not None else None,
        randomized=len(rows),
        in_error=sum(r.in_error for r in rows),
        withdrawn=sum(r.withdrawn for r in rows),
        dispensed=tuple(sum(r.doses[i].dispensed for r in rows) for i in range(days)),
        administered=tuple(sum(r.doses[i].administered for r in rows) for i in range(days)),
        complete=sum(r.complete for r in rows),
    )


def _screening(ctx: ServiceContext, frame: Frame) -> list[tuple[str, bool, list[str]]]:
    """(site, eligible, failed criterion ids) of each patient screened in reach and period."""
    return [(e.site, e.eligible, list(e.failed)) for e in latest_screenings(ctx, frame)]


def participant_flow(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """CONSORT-style numbers, blinded: screened, ineligible (with the failed criteria), randomized,
    randomized in error, withdrawn, kits dispensed and administered per day, complete treatments; in
    total, per site and per stratum."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    rows = frame_doses(ctx, frame)
    screening = _screening(ctx, frame)
    n = len(frame.day_labels)
    columns = (ALL_SITES, *frame.site_codes)
    counts = [_flow([(e, f) for _, e, f in screening], rows, n)]
    screened_at: dict[str, list[tuple[bool, list[str]]]] = defaultdict(list)
    for site, eligible, failed in screening:
        screened_at[site].append((eligible, failed))
    randomized_at: dict[str, list[SubjectDoses]] = defaultdict(list)
    for r in rows:
        randomized_at[r.site].append(r)
    for code in frame.site_codes:
        counts.append(_flow(screened_at[code], randomized_at[code], n))
    return ParticipantFlow(
        frame.day_labels,
        columns,
        tuple(counts),
        _by_stratum(frame, rows),
        _reasons(frame, screening),
    )


def _by_stratum(frame: Frame, rows: Sequence[SubjectDoses]) -> tuple[tuple[str, str, FlowCounts], ...]:
    groups: dict[tuple[str, str], list[SubjectDoses]] = defaultdict(list)
    for r in rows:
        groups[(r.site, r.strata)].append(r)
    n = len(frame.day_labels)
    return tuple((site, stratum, _flow(None, groups[(site, stratum)], n)) for site, stratum in sorted(groups))


def _reasons(frame: Frame, screening: Sequence[tuple[str, bool, list[str]]]) -> tuple[tuple[str, int], ...]:
    failed = Counter(c for _, eligible, criteria in screening if not eligible for c in set(criteria))
    labels = {c.id: c.label.en for c in frame.definition.eligibility}
    return tuple(
        (labels.get(c, c), n) for c, n in sorted(failed.items(), key=lambda item: (-item[1], item[0]))
    )


def participant_flow_by_arm(
    ctx: ServiceContext, reader: Actor, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """The participant flow per arm (REP-04, unblinded): only once the trial is UNBLINDED
    (trial_state.NotUnblinded, 409, before). The arms of the frame's subjects are read through
    `arm_access.subject_arms_in`, in one unit of work: two statements and one audited read naming
    every subject read, whatever their number (issue 21: three statements and an audit entry per
    subject before)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        lookups.require_unblinded(get_trial(session, frame.code))
    rows = frame_doses(ctx, frame)
    wanted = {r.subject_number for r in rows}
    with ctx.db.unit_of_work() as session:
        lookups.require_unblinded(get_trial(session, frame.code))  # again, where the arms are read
        numbers = {
            subject_id: number
            for subject_id, number in session.execute(
                select(Subject.id, Subject.subject_number).where(Subject.trial_id == frame.trial_id)
            ).all()
            if number in wanted
        }
        by_id = arm_access.subject_arms_in(
            session,
            ctx,
            reader,
            frame.code,
            frame.trial_id,
            "participant flow per arm (REP-04)",
            subject_ids=numbers,
        )
    arms = {numbers[subject_id]: arm for subject_id, arm in by_id.items()}
    n = len(frame.day_labels)
    labels = [(a.code, a.label) for a in frame.definition.arms]
    counts = [_flow(None, rows, n)] + [
        _flow(None, [r for r in rows if arms.get(r.subject_number) == code], n) for code, _ in labels
    ]
    by_arm: list[tuple[str, str, str, FlowCounts]] = []
    for site in sorted({r.site for r in rows}):
        at_site = [r for r in rows if r.site == site]
        for stratum in (*sorted({r.strata for r in at_site}), ALL_STRATA):
            group = [r for r in at_site if stratum in (ALL_STRATA, r.strata)]
            for code, label in labels:
                chosen = [r for r in group if arms.get(r.subject_number) == code]
                by_arm.append((site, stratum, f"{code}: {label}", _flow(None, chosen, n)))
    return ParticipantFlow(
        frame.day_labels,
        (ALL_ARMS, *(f"{code}: {label}" for code, label in labels)),
        tuple(counts),
        _by_stratum(frame, rows),
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
