"""The reports counted in the database (issue 21: the participant flow, the blinded balance, the
deviations' late entries and replacements, the enrolment) give exactly what each subject's view,
counted one by one, gives: the per-subject computations the reports used before are kept here as
oracles and compared on worlds with replacements, randomizations in error, withdrawals, stratum corrections, re-screened
patients and records that only the per-subject semantics get right (a replaced kit that was given,
strata as entered in another key order, a criterion failed twice), in every scope and period
(REP-04, REP-05, REP-07, REP-08)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update

from allocator import dbguards
from allocator.audit import Actor
from allocator.models import Administration, Dispensation, ScreeningEntry, Site, Subject, SubjectCorrection
from allocator.permissions import Scope
from allocator.services import arm_access, signatures
from allocator.services.bedside import LATE_AFTER
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.lookups import trial_definition
from allocator.services.reports import balance, deviations, dispensing, enrolment, filters, participant_flow
from allocator.services.reports.participant_flow import FlowCounts, ParticipantFlow
from allocator.services.subjects import randomize, views
from tests.reporting import ALL, TRIAL, Truth, build, p1_scope
from tests.support import GOOD_PASSWORD, Clock, eligible_on
from tests.support.crowd import crowded_trial

FILTERS = (
    filters.ReportFilter(),
    filters.ReportFilter(until=date(2026, 3, 8)),
    filters.ReportFilter(since=date(2026, 3, 3)),
    filters.ReportFilter(since=date(2026, 3, 4), until=date(2026, 3, 12)),
    filters.ReportFilter(site="P1", since=date(2026, 3, 3)),
)


# --- the oracles: each subject's view, counted one by one -----------------------------------------


def _counts(
    rows: list[dispensing.SubjectDoses], screened: list[filters.Screened] | None, n: int
) -> FlowCounts:
    return FlowCounts(
        screened=None if screened is None else len(screened),
        ineligible=None if screened is None else sum(not e.eligible for e in screened),
        randomized=len(rows),
        in_error=sum(r.in_error for r in rows),
        withdrawn=sum(r.withdrawn for r in rows),
        dispensed=tuple(sum(r.doses[i].dispensed for r in rows) for i in range(n)),
        administered=tuple(sum(r.doses[i].administered for r in rows) for i in range(n)),
        complete=sum(r.complete for r in rows),
    )


def flow_one_by_one(ctx: ServiceContext, scope: Scope, flt: filters.ReportFilter) -> ParticipantFlow:
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    rows = dispensing.frame_doses(ctx, frame)
    screened = filters.latest_screenings(ctx, frame)
    n = len(frame.day_labels)
    failed = Counter(c for e in screened if not e.eligible for c in set(e.failed))
    labels = {c.id: c.label.en for c in frame.definition.eligibility}
    return ParticipantFlow(
        frame.day_labels,
        (filters.ALL_SITES, *frame.site_codes),
        (
            _counts(rows, screened, n),
            *(
                _counts([r for r in rows if r.site == code], [e for e in screened if e.site == code], n)
                for code in frame.site_codes
            ),
        ),
        tuple(
            (site, stratum, _counts([r for r in rows if (r.site, r.strata) == (site, stratum)], None, n))
            for site, stratum in sorted({(r.site, r.strata) for r in rows})
        ),
        tuple(
            (labels.get(c, c), count)
            for c, count in sorted(failed.items(), key=lambda item: (-item[1], item[0]))
        ),
    )


def late_one_by_one(ctx: ServiceContext, scope: Scope, flt: filters.ReportFilter) -> list[tuple[object, ...]]:
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    with ctx.db.reading() as s:
        rows = s.execute(
            select(Administration, Subject.subject_number, Subject.site_id)
            .join(Subject, Subject.id == Administration.subject_id)
            .where(Subject.trial_id == frame.trial_id)
            .order_by(Administration.id)
        ).all()
    return [
        (number, frame.sites[site_id], a.administered_at, a.recorded_at, a.late_entry_reason or "")
        for a, number, site_id in rows
        if a.recorded_at - a.administered_at > LATE_AFTER
        and frame.visible(site_id)
        and frame.flt.in_period(a.recorded_at)
    ]


def replacements_one_by_one(
    ctx: ServiceContext, scope: Scope, flt: filters.ReportFilter
) -> list[tuple[object, ...]]:
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    with ctx.db.reading() as s:
        rows = s.execute(
            select(Dispensation, Subject.subject_number, Subject.site_id)
            .join(Subject, Subject.id == Dispensation.subject_id)
            .where(Subject.trial_id == frame.trial_id, Dispensation.status == "replaced")
            .order_by(Dispensation.id)
        ).all()
    return [
        (number, frame.sites[site_id], d.replaced_at, d.replacement_reason or "")
        for d, number, site_id in rows
        if frame.visible(site_id) and frame.flt.in_period(d.replaced_at)
    ]


def enrolment_one_by_one(ctx: ServiceContext, scope: Scope, flt: filters.ReportFilter) -> tuple[object, ...]:
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    zone = ZoneInfo(frame.definition.timezone)
    times: dict[str, list[datetime]] = {code: [] for code in frame.site_codes}
    # Every subject's blinded view within reach, kept when randomized in the period: the oracle.
    for v in (
        v for v in views.subjects(ctx, frame.code, frame.scope) if frame.flt.in_period(v.randomized_at)
    ):
        times[v.site].append(v.randomized_at)
    everything = [at for ts in times.values() for at in ts]
    sites = [
        (code, len(ts), min(ts, default=None), max(ts, default=None)) for code, ts in sorted(times.items())
    ]
    overall = (len(everything), min(everything, default=None), max(everything, default=None))
    weeks: list[tuple[date, str, int, int]] = []
    series: dict[str, tuple[tuple[date, int], ...]] = {}
    if everything:

        def monday(at: datetime) -> date:
            day = at.astimezone(zone).date()
            return day - timedelta(days=day.weekday())

        week, last = monday(min(everything)), max(everything).astimezone(zone).date()
        per_week = {code: Counter(monday(at) for at in ts) for code, ts in times.items()}
        cumulative = dict.fromkeys(times, 0)
        while week <= last:
            for code in sorted(times):
                cumulative[code] += per_week[code][week]
                weeks.append((week, code, per_week[code][week], cumulative[code]))
            week += timedelta(days=7)
        groups = dict(times) if len(times) < 2 else {**times, filters.ALL_SITES: everything}
        for label, ts in groups.items():
            days = Counter(at.astimezone(zone).date() for at in ts)
            series[label] = tuple((day, sum(n for d, n in days.items() if d <= day)) for day in sorted(days))
    return tuple(sites), overall, weeks, series


def balance_one_by_one(ctx: ServiceContext, scope: Scope, flt: filters.ReportFilter) -> balance.Balance:
    """Every subject of the frame read and counted here, its stratum corrections applied in order:
    the blinded balance as it was computed before its counts moved into the database."""
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    with ctx.db.reading() as s:
        subjects = s.execute(filters.frame_subjects(frame, Subject.id, Subject.site_id, Subject.strata)).all()
        changes = s.execute(
            select(
                SubjectCorrection.subject_id,
                SubjectCorrection.kind,
                SubjectCorrection.field,
                SubjectCorrection.new_value,
            ).order_by(SubjectCorrection.id)
        ).all()
    corrected_values: dict[int, dict[str, object]] = {}
    in_error: set[int] = set()
    for subject_id, kind, field_name, new_value in changes:
        if kind == "randomized_in_error":
            in_error.add(subject_id)
        elif kind == "stratum" and field_name:
            corrected_values.setdefault(subject_id, {})[field_name] = new_value
    used: Counter[tuple[str, str]] = Counter()
    corrected: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    per_site: Counter[str] = Counter()
    for subject_id, site_id, strata in subjects:
        site = frame.sites[site_id]
        key = (site, filters.strata_text(strata))
        used[key] += 1
        errors[key] += subject_id in in_error
        corrected[(site, filters.strata_text({**strata, **corrected_values.get(subject_id, {})}))] += 1
        per_site[site] += 1
    keys = []
    for combo in frame.definition.strata():
        values = dict(combo)
        if "site" not in values or values["site"] in frame.site_codes:
            keys.append((values.get("site", ""), filters.strata_text(values)))
    keys += sorted(k for k in set(used) | set(corrected) if k not in keys)
    return balance.Balance(
        tuple(
            balance.StratumCount(
                site, text, used[(site, text)], corrected[(site, text)], errors[(site, text)]
            )
            for site, text in keys
        ),
        tuple((code, per_site[code]) for code in frame.site_codes),
    )


# --- the comparison -------------------------------------------------------------------------------


def assert_as_one_by_one(ctx: ServiceContext, scopes: tuple[Scope, ...]) -> None:
    for scope in scopes:
        for flt in FILTERS:
            where = (scope, flt)
            assert participant_flow.participant_flow(ctx, TRIAL, scope, flt) == flow_one_by_one(
                ctx, scope, flt
            ), where
            d = deviations.deviations(ctx, TRIAL, scope, flt)
            assert [
                (e.subject_number, e.site, e.administered_at, e.recorded_at, e.reason) for e in d.late_entries
            ] == late_one_by_one(ctx, scope, flt), where
            assert [
                (r.subject_number, r.site, r.at, r.reason) for r in d.replacements
            ] == replacements_one_by_one(ctx, scope, flt), where
            assert balance.balance(ctx, TRIAL, scope, flt) == balance_one_by_one(ctx, scope, flt), where
            e = enrolment.enrolment(ctx, TRIAL, scope, flt)
            sites, overall, weeks, series = enrolment_one_by_one(ctx, scope, flt)
            assert tuple((s.site, s.randomized, s.first, s.last) for s in e.sites) == sites, where
            assert (e.overall.randomized, e.overall.first, e.overall.last) == overall, where
            assert [(w.week_start, w.site, w.randomized, w.cumulative) for w in e.weeks] == sorted(weeks), (
                where
            )
            assert ({s.label: s.points for s in e.chart.series} if e.chart else {}) == series, where


def _screen(ctx: ServiceContext, truth: Truth, screening: str, site: str, **changes: object) -> None:
    """A patient screened (again) and found ineligible."""
    investigator = truth.ready.investigator if site == "P1" else truth.ready.investigator_p2
    request = randomize.RandomizationRequest(
        site=site,
        screening_number=screening,
        eligibility={**eligible_on(ctx.now().date()), **changes},
        strata={"admission_cause": "non_septic"},
    )
    with pytest.raises(randomize.Ineligible):
        randomize.randomize(ctx, investigator, TRIAL, request, ALL)


@pytest.mark.req("REP-04")
@pytest.mark.req("REP-07")
def test_the_counted_reports_are_each_subjects_view_counted(ctx: ServiceContext, clock: Clock) -> None:
    truth = build(ctx, clock)
    scopes = (ALL, p1_scope(ctx))
    assert_as_one_by_one(ctx, scopes)
    s = truth.subjects
    # Re-screened patients (11 March, 00:30 in Paris on the 12th): the ineligible patients of P1 and
    # P2 checked again, now failing on their age only, and a new one at P2; only the latest check
    # of a patient counts, and a later check outside a period hides the earlier one inside it.
    # (No patient is randomized here: which arm, hence which kits, would vary from run to run.)
    clock.current = datetime(2026, 3, 11, 23, 30, tzinfo=ZoneInfo("UTC"))
    _screen(ctx, truth, "P1-0100", "P1", age=16)
    _screen(ctx, truth, "P2-0100", "P2", age=17)
    _screen(ctx, truth, "P2-0101", "P2", sofa_24h=2, age=16)
    with ctx.db.unit_of_work() as session:
        # Records changed behind the services' back (as tests.support.tamper does), to reach what
        # the services never write: the guard triggers are dropped in the test's transaction.
        for table in ("subject", "administration", "screening_entry"):
            for ddl in dbguards.unguard(ctx.db.dialect, table, updates=False):
                session.execute(text(ddl))
        ids: dict[str, int] = dict(session.execute(select(Subject.subject_number, Subject.id)).all())
        # S1's replaced D2 kit given and the kit that replaced it only allocated: the day's kit is
        # the latest, not given (each subject's view shows the latest kit of a day).
        session.execute(
            update(Dispensation)
            .where(Dispensation.subject_id == ids[s["S1"]], Dispensation.day == 2)
            .values(status="administered")
            .where(Dispensation.replacement_number == 0)
        )
        session.execute(
            update(Dispensation)
            .where(Dispensation.subject_id == ids[s["S1"]], Dispensation.day == 2)
            .where(Dispensation.replacement_number == 1)
            .values(status="allocated")
        )
        # S4's strata as entered in another key order, with its site: the same stratum as S1's.
        session.execute(
            update(Subject)
            .where(Subject.id == ids[s["S4"]])
            .values(strata={"site": "P1", "admission_cause": "septic"})
        )
        # S1's first two doses recorded exactly LATE_AFTER after (not late) and a microsecond more (late).
        given = (
            session.execute(
                select(Administration)
                .where(Administration.subject_id == ids[s["S1"]])
                .order_by(Administration.day)
            )
            .scalars()
            .all()
        )
        given[0].administered_at = given[0].recorded_at - LATE_AFTER
        given[1].administered_at = given[1].recorded_at - LATE_AFTER - timedelta(microseconds=1)
        # A criterion failed twice by one patient, and a failure naming no criterion.
        entry = session.execute(
            select(ScreeningEntry).where(ScreeningEntry.screening_number == "P2-0101")
        ).scalar_one()
        entry.failures = [*entry.failures, *entry.failures, {"message": "no criterion named"}]
    flow = participant_flow.participant_flow(ctx, TRIAL, ALL, filters.ReportFilter())
    total, p1, p2 = flow.counts
    assert (total.screened, total.ineligible, p1.screened, p1.ineligible, p2.ineligible) == (8, 3, 4, 1, 2)
    assert (total.randomized, total.dispensed, total.administered, total.complete) == (
        5,
        (2, 0, 1),
        (1, 0, 1),
        0,
    )
    strata = {(site, stratum): c.randomized for site, stratum, c in flow.by_stratum}
    assert strata[("P1", "admission_cause=septic")] == 2  # S1 (corrected later) and S4
    assert dict(flow.ineligible_reasons) == {
        "Age": 3,
        "SOFA score over the first 24 h after admission": 1,
        "": 1,
    }
    late = deviations.deviations(ctx, TRIAL, ALL, filters.ReportFilter()).late_entries
    assert [(e.subject_number, e.day) for e in late] == [(s["S1"], "D2"), (s["S1"], "D3")]
    assert_as_one_by_one(ctx, scopes)


@pytest.mark.req("REP-08")
@pytest.mark.req("RND-09")
def test_the_balance_moves_each_corrected_subject_as_counting_one_by_one_does(
    ctx: ServiceContext, clock: Clock
) -> None:
    """Corrections the services never write but the records allow (a blank or missing field name, a
    value corrected twice or back to the one used, a stratum no other subject has, a subject in
    error corrected too) and strata stored in another spelling: the balance counted in the
    database moves each subject as reading them one by one does (a reviewer's cases)."""
    truth = build(ctx, clock)
    s = truth.subjects
    spelled = '{ "admission_cause" :  "septic" , "site":"P1"}'
    with ctx.db.unit_of_work() as session:
        ids: dict[str, int] = dict(session.execute(select(Subject.subject_number, Subject.id)).all())
        for ddl in dbguards.unguard(ctx.db.dialect, "subject", updates=False):
            session.execute(text(ddl))
        value = "CAST(:strata AS JSON)" if ctx.db.dialect == "postgresql" else ":strata"
        session.execute(
            text(f"UPDATE subject SET strata = {value} WHERE id = :id"),
            {"strata": spelled, "id": ids[s["S4"]]},
        )

        def corrected(number: str, kind: str, field: str | None, new: object) -> SubjectCorrection:
            return SubjectCorrection(
                subject_id=ids[s[number]],
                kind=kind,
                field=field,
                new_value=new,
                reason="review",
                at=ctx.now(),
                by_name="Reviewer",
            )

        session.add_all(
            [
                corrected("S1", "stratum", "", "non_septic"),
                corrected("S1", "stratum", None, "non_septic"),
                corrected("S3", "stratum", "admission_cause", "non_septic"),
                corrected("S3", "stratum", "admission_cause", "septic"),  # back to the one used
                corrected("S2", "stratum", "admission_cause", "burns"),  # no other subject's
                corrected("S2", "stratum", "extra", "yes"),
                corrected("S2", "randomized_in_error", None, None),  # a second time
                corrected("S5", "stratum", "site", None),
            ]
        )
    for scope in (ALL, p1_scope(ctx)):
        for flt in FILTERS:
            assert balance.balance(ctx, TRIAL, scope, flt) == balance_one_by_one(ctx, scope, flt), (
                scope,
                flt,
            )
    counts = {
        (c.site, c.stratum): c.after_correction for c in balance.balance(ctx, TRIAL, ALL, FILTERS[0]).strata
    }
    assert sum(counts.values()) == 5 and counts[("P1", "admission_cause=burns; extra=yes")] == 1


@pytest.mark.req("REP-04")
@pytest.mark.req("REP-08")
def test_a_crowd_is_counted_as_each_subjects_view(ctx: ServiceContext, clock: Clock) -> None:
    crowded_trial(ctx, subjects=40)
    assert_as_one_by_one(ctx, (ALL, p1_scope(ctx)))


@pytest.mark.req("REP-05")
def test_subjects_views_are_the_same_read_as_a_page_or_as_the_whole_trial(
    ctx: ServiceContext, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's views look up their kits one by one, more than a page's (a whole report) join the
    kit table: both give every subject the same kits, the latest replacement of each day."""
    truth = build(ctx, clock)
    as_pages = views.subjects(ctx, TRIAL, ALL)
    kits = {d.kit_number for v in as_pages for d in v.days}
    assert len(as_pages) == 5 and truth.new_kit in kits and truth.replaced_kit not in kits
    monkeypatch.setattr(views, "MAX_PAGE", 2)  # every read above it: the whole trial's rows
    assert views.subjects(ctx, TRIAL, ALL) == as_pages
    one = views.subjects(ctx, TRIAL, p1_scope(ctx))[0]
    with ctx.db.reading() as s:
        subject = s.execute(select(Subject).where(Subject.subject_number == one.subject_number)).scalar_one()
        sites = dict(s.execute(select(Site.id, Site.code)).all())
        assert views.subject_view(s, trial_definition(ctx, TRIAL), subject, sites) == one


# --- the per-arm flow, after the final unblinding --------------------------------------------------


def flow_by_arm_one_by_one(
    ctx: ServiceContext, reader: Actor, scope: Scope, flt: filters.ReportFilter
) -> ParticipantFlow:
    """Each subject's view and its arm read on its own (`subject_arm_in`), counted one by one."""
    frame = filters.scoped_frame(ctx, TRIAL, scope, flt)
    rows = dispensing.frame_doses(ctx, frame)
    wanted = {r.subject_number for r in rows}
    with ctx.db.unit_of_work() as session:
        arms = {
            subject.subject_number: arm_access.subject_arm_in(session, ctx, reader, TRIAL, subject, "oracle")
            for subject in session.execute(
                select(Subject).where(Subject.subject_number.in_(wanted))
            ).scalars()
        }
    n = len(frame.day_labels)
    labels = [(a.code, f"{a.code}: {a.label}") for a in frame.definition.arms]
    by_arm = []
    for site in sorted({r.site for r in rows}):
        at_site = [r for r in rows if r.site == site]
        for stratum in (*sorted({r.strata for r in at_site}), participant_flow.ALL_STRATA):
            group = [r for r in at_site if stratum in (participant_flow.ALL_STRATA, r.strata)]
            for code, column in labels:
                by_arm.append(
                    (
                        site,
                        stratum,
                        column,
                        _counts([r for r in group if arms[r.subject_number] == code], None, n),
                    )
                )
    return ParticipantFlow(
        frame.day_labels,
        (participant_flow.ALL_ARMS, *(column for _, column in labels)),
        (
            _counts(rows, None, n),
            *(_counts([r for r in rows if arms[r.subject_number] == code], None, n) for code, _ in labels),
        ),
        tuple(
            (site, stratum, _counts([r for r in rows if (r.site, r.strata) == (site, stratum)], None, n))
            for site, stratum in sorted({(r.site, r.strata) for r in rows})
        ),
        (),
        per_arm=True,
        by_arm_and_stratum=tuple(by_arm),
    )


@pytest.mark.req("REP-04")
@pytest.mark.req("BLD-08")
def test_the_flow_per_arm_is_each_subjects_view_and_arm_counted(ctx: ServiceContext, clock: Clock) -> None:
    """Issue 21: each subject's counts from the database and the arms read in bulk; the same flow
    per arm as each subject's view and arm, read one by one, for every filter and scope."""
    crowd = crowded_trial(ctx, subjects=40)
    stat = crowd.ready.statistician
    signed = signatures.SignatureRequest(password=GOOD_PASSWORD)
    state.lock(ctx, stat, TRIAL, reason="last patient out", signature=signed)
    state.unblind_trial(ctx, stat, TRIAL, reason="final analysis", signature=signed)
    for scope in (ALL, p1_scope(ctx)):
        for flt in FILTERS:
            counted = participant_flow.participant_flow_by_arm(ctx, stat, TRIAL, scope, flt)
            assert counted == flow_by_arm_one_by_one(ctx, stat, scope, flt), (scope, flt)
    whole = participant_flow.participant_flow_by_arm(ctx, stat, TRIAL, ALL, filters.ReportFilter())
    assert whole.counts[0].randomized == 40 and all(c.randomized for c in whole.counts[1:])  # both arms
