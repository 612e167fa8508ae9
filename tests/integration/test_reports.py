"""Monitoring and publication reports against a trial with a known history (tests/reporting.py):
every number is checked against what the fixture did, blinded reports are checked for arm words in
their rows, CSV and PDF, and the restricted parts for their gates (REP-01..09, BLD-07, BLD-09,
BLD-13, AUD-05, AUD-09, DIB-04, UNB-05, UNB-08, UNB-09, RND-07, RND-09)."""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from allocator.audit import Action
from allocator.models import AuditEvent, AuditReview, Batch, Kit, RoleAssignment, Signature
from allocator.permissions import Scope
from allocator.printing.monitoring_reports import render_report_pdf
from allocator.services import signatures, spooling
from allocator.services.accounts import users
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.services.reports import (
    accountability,
    allocation_history,
    audit_review,
    balance,
    catalogue,
    deviations,
    dispensing,
    enrolment,
    export,
    filters,
    participant_flow,
    sequence,
)
from allocator.services.reports import unblindings as reports_unblindings
from allocator.services.subjects import corrections, withdrawal
from allocator.services.supply import kit_lists, kit_status, reconciliation
from allocator.wording import ENGLISH, Words
from tests.reporting import (
    ALL,
    MONITOR,
    SIGNED,
    TRIAL,
    Truth,
    arm_leaks,
    arm_of_subject,
    build,
    csv_sections,
    flat,
    p1_scope,
    pdf_text,
    person,
)
from tests.support import CLI_ACTOR, Clock, load_ifn

EVERYTHING = filters.ReportFilter()


@pytest.fixture
def truth(ctx: ServiceContext, clock: Clock) -> Truth:
    return build(ctx, clock)


def view(
    ctx: ServiceContext, name: str, *, scope: Scope = ALL, version: str = "blinded"
) -> catalogue.ReportView:
    return catalogue.build(ctx, MONITOR, TRIAL, name, EVERYTHING, scope, version=version)


def table(v: catalogue.ReportView, title: str) -> list[dict[str, str]]:
    for t in v.tables:
        if t.title == title:
            return [dict(zip(t.columns, row, strict=True)) for row in t.rows]
    raise AssertionError(f"no table {title!r} in {[t.title for t in v.tables]}")


def facts(v: catalogue.ReportView) -> dict[str, str]:
    return dict(v.facts)


@pytest.mark.req("REP-05")
@pytest.mark.req("BLD-07")
@pytest.mark.req("RND-07")
@pytest.mark.req("RND-09")
@pytest.mark.req("UNB-08")
def test_the_allocation_history_is_the_known_history(ctx: ServiceContext, truth: Truth) -> None:
    s = truth.subjects
    history = allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING)
    rows = {r.subject_number: r for r in history.rows}
    assert list(rows) == [s["S1"], s["S2"], s["S3"], s["S4"], s["S5"]]
    assert [rows[s[k]].site for k in ("S1", "S2", "S3", "S4", "S5")] == ["P1", "P1", "P2", "P1", "P2"]
    assert rows[s["S3"]].randomized_by == "Inv-P2" and rows[s["S1"]].randomized_by == "Inv-P1"
    assert rows[s["S3"]].randomized_at.date() == date(2026, 3, 3)
    # RND-09: the stratum used stays, the corrected one is beside it; no re-randomization.
    s1 = rows[s["S1"]]
    assert s1.strata_at_randomization["admission_cause"] == "septic"
    assert s1.strata_corrected is not None and s1.strata_corrected["admission_cause"] == "non_septic"
    assert [c.reason for c in s1.corrections] == ["cause of admission re-assessed"]
    # Kits per day with the replacement of D2.
    days = {k.day: k for k in s1.kits}
    assert days["D2"].kit_number == truth.new_kit and days["D2"].status == "administered"
    assert [r.kit_number for r in days["D2"].replaced] == [truth.replaced_kit]
    assert "damaged: vial dropped" in days["D2"].replaced[0].reason
    # RND-07: the subject randomized in error stays, flagged with its reason.
    assert (
        rows[s["S2"]].in_error and rows[s["S2"]].in_error_reason == "randomized before the consent was signed"
    )
    # Blind breaks: offline for S1, online for S3, accidental for S5; S4's PV unblinding is invisible.
    assert [(b.kind, b.channel) for b in s1.blind_breaks] == [("emergency", "offline")]
    assert [(b.kind, b.channel) for b in rows[s["S3"]].blind_breaks] == [("emergency", "online")]
    assert [(b.kind, b.channel) for b in rows[s["S5"]].blind_breaks] == [("accidental", "reported")]
    assert rows[s["S4"]].blind_breaks == () and rows[s["S2"]].blind_breaks == ()
    cells = table(view(ctx, "allocation-history"), "Allocation history")
    assert cells[0]["D2 kit"].startswith(f"{truth.new_kit[:4]}-{truth.new_kit[4:]} (administered); replaces")
    assert cells[1]["Randomized in error"].startswith("yes: ")
    assert "pharmacovigilance" not in str(cells)


@pytest.mark.req("REP-05")
@pytest.mark.req("REP-08")
def test_a_page_window_reads_its_subjects_and_the_summary_counts_them_all(
    ctx: ServiceContext, truth: Truth
) -> None:
    """Issue 21: the allocation history and dispensing completeness read only the window's subjects
    for a page; their summaries are counted in the database over every subject of the filter."""
    window = filters.Window(1, 2)
    full = allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING)
    part = allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING, window)
    assert part.rows == full.rows[1:3] and len(full.rows) == 5
    # A window holding S1 reads its replaced D2 kit (a page's replacements are its subjects' only).
    first = allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING, filters.Window(0, 2))
    assert first.rows == full.rows[0:2] and [r.kit_number for r in first.rows[0].kits[1].replaced] == [
        truth.replaced_kit
    ]
    # S1 corrected and with its D2 kit replaced, S2 in error, blind breaks for S1, S3 and S5.
    expected = allocation_history.HistoryTotals(
        subjects=5, in_error=1, corrected=1, blind_broken=3, withdrawn=0, replacements=1
    )
    assert part.totals == full.totals == expected
    assert part.facts(ENGLISH) == full.facts(ENGLISH)
    (shown,) = part.tables(ENGLISH)
    assert (shown.total, shown.start, len(shown.rows)) == (5, 1, 2)
    (every,) = full.tables(ENGLISH)
    assert every.total is None and every.rows[1:3] == shown.rows
    # A window holding every row from the first is the whole table (no count, no links).
    (whole,) = allocation_history.allocation_history(
        ctx, TRIAL, ALL, EVERYTHING, filters.Window(0, 5)
    ).tables(ENGLISH)
    assert whole.total is None and whole.rows == every.rows
    p1 = allocation_history.allocation_history(ctx, TRIAL, p1_scope(ctx), EVERYTHING, window)
    assert p1.totals == allocation_history.HistoryTotals(3, 1, 1, 1, 0, 1)
    assert [r.subject_number for r in p1.rows] == [truth.subjects["S2"], truth.subjects["S4"]]

    doses = dispensing.dispensing_completeness(ctx, TRIAL, ALL, EVERYTHING)
    window_doses = dispensing.dispensing_completeness(ctx, TRIAL, ALL, EVERYTHING, window)
    assert window_doses.sites == doses.sites and window_doses.subjects == doses.subjects[1:3]
    per_site, per_subject = window_doses.tables(ENGLISH)
    assert per_site.total is None and (per_subject.total, per_subject.start) == (5, 1)
    # A report read whole is cut after it is built: a short table stays whole.
    # The per-site table's "All sites" row is a total, not an entry: two sites fit a window of two.
    cut = catalogue.build(ctx, MONITOR, TRIAL, "dispensing", EVERYTHING, ALL, window=filters.Window(2, 2))
    assert [(t.total, t.start, len(t.rows), t.totals) for t in cut.tables] == [(None, 0, 3, 1), (5, 2, 2, 0)]
    # A window of one site: the second site's row, and the total row after it.
    one = catalogue.build(ctx, MONITOR, TRIAL, "dispensing", EVERYTHING, ALL, window=filters.Window(1, 1))
    sites_cut = one.tables[0]
    assert (sites_cut.total, sites_cut.start, sites_cut.totals) == (2, 1, 1)
    assert [row[0] for row in sites_cut.rows] == [doses.sites[1].site, "All sites"]
    whole = catalogue.build(ctx, MONITOR, TRIAL, "dispensing", EVERYTHING, ALL, window=filters.Window(0, 3))
    assert [(t.total, len(t.rows)) for t in whole.tables] == [(None, 3), (5, 3)]
    # A review page reads and words only its window's entries (the database counts them all); its
    # SHA-256 is that of every entry, so a page that holds only some of them has none: the CSV and
    # the PDF have it. A window that holds every entry shows it.
    listed = {kind: view(ctx, kind, version="review") for kind in audit_review.REVIEW_KINDS}
    kind, every_entry = next((k, v) for k, v in listed.items() if len(v.tables[0].rows) >= 3)
    paged = catalogue.build(
        ctx, MONITOR, TRIAL, kind, EVERYTHING, ALL, version="review", window=filters.Window(1, 2)
    )
    sha = "SHA-256 of the listed entries"
    assert dict(paged.facts) == {
        **dict(every_entry.facts),
        sha: "in the CSV and the PDF, which hold every entry, and recorded with the signature",
    }
    assert dict(every_entry.facts)[sha] == audit_review.audit_review(ctx, TRIAL, kind, ALL, EVERYTHING).digest
    assert paged.tables[0].rows == every_entry.tables[0].rows[1:3]
    assert (paged.tables[0].total, paged.tables[0].start) == (len(every_entry.tables[0].rows), 1)
    whole = catalogue.build(
        ctx, MONITOR, TRIAL, kind, EVERYTHING, ALL, version="review", window=filters.Window(0, 10_000)
    )
    assert whole.facts == every_entry.facts and whole.tables[0].rows == every_entry.tables[0].rows
    assert whole.tables[0].total is None


def test_a_page_window_is_parsed_from_the_offset() -> None:
    assert filters.Window.parse({}) == filters.Window(0, filters.PAGE_ROWS)
    assert filters.Window.parse({"offset": " 400 "}) == filters.Window(400, filters.PAGE_ROWS)
    for bad in ("-1", "1.5", "x", "\u0663", "1" * 12):
        with pytest.raises(ValidationFailed) as refused:
            filters.Window.parse({"offset": bad})
        assert [p.field for p in refused.value.errors] == ["offset"], bad


@pytest.mark.req("REP-05")
def test_reports_are_limited_to_the_readers_sites_and_the_filters(ctx: ServiceContext, truth: Truth) -> None:
    s = truth.subjects
    p1 = p1_scope(ctx)
    assert [
        r.subject_number for r in allocation_history.allocation_history(ctx, TRIAL, p1, EVERYTHING).rows
    ] == [
        s["S1"],
        s["S2"],
        s["S4"],
    ]
    assert view(ctx, "allocation-history", scope=p1).site_choices == ("P1",)
    only_p2 = filters.ReportFilter(site="P2")
    assert [
        r.subject_number for r in allocation_history.allocation_history(ctx, TRIAL, ALL, only_p2).rows
    ] == [
        s["S3"],
        s["S5"],
    ]
    with pytest.raises(ValidationFailed) as outside:
        allocation_history.allocation_history(ctx, TRIAL, p1, only_p2)
    assert [e.field for e in outside.value.errors] == ["site"]
    with pytest.raises(ValidationFailed) as unknown:
        allocation_history.allocation_history(ctx, TRIAL, ALL, filters.ReportFilter(site="P9"))
    assert [e.field for e in unknown.value.errors] == ["site"]
    second_week = filters.ReportFilter.parse({"since": "2026-03-09", "until": "2026-03-15"})
    assert [
        r.subject_number for r in allocation_history.allocation_history(ctx, TRIAL, ALL, second_week).rows
    ] == [
        s["S4"],
        s["S5"],
    ]
    first_day = filters.ReportFilter.parse({"until": "2026-03-02"})
    assert len(allocation_history.allocation_history(ctx, TRIAL, ALL, first_day).rows) == 2
    # Unblinding events and deviations of a P1 monitor are P1's only.
    assert {
        e.site
        for e in reports_unblindings.unblinding_report(
            ctx, TRIAL, p1, EVERYTHING, include_pharmacovigilance=False
        ).events
    } == {"P1"}
    assert (
        reports_unblindings.unblinding_report(
            ctx, TRIAL, p1, EVERYTHING, include_pharmacovigilance=False
        ).accidental
        == ()
    )
    assert {b.site for b in deviations.deviations(ctx, TRIAL, p1, EVERYTHING).blocked_kits} == set()


def test_leading_zeros_are_an_hour_as_typed() -> None:
    parsed = filters.ReportFilter.parse({"hours_from": "008", "hours_to": "0018"})
    assert (parsed.hours_from, parsed.hours_to) == (8, 18)


@pytest.mark.parametrize(
    ("args", "fields"),
    [
        ({"since": "yesterday"}, ["since"]),
        ({"until": "2026-02-30"}, ["until"]),
        ({"since": "2026-03-09", "until": "2026-03-01"}, ["until"]),
        ({"since": "0001-01-01"}, ["since"]),
        ({"site": "P1'; drop"}, ["site"]),
        ({"hours_from": "25"}, ["hours_from"]),
        ({"hours_from": "0025"}, ["hours_from"]),
        ({"hours_from": "1" * 5000}, ["hours_from"]),
        ({"hours_from": "0" * 5000}, ["hours_from"]),  # past int()'s 4,300 digits
        ({"hours_from": "20", "hours_to": "8"}, ["hours_to"]),
        ({"since": "x", "site": "?", "hours_to": "x"}, ["since", "site", "hours_to"]),
    ],
)
def test_bad_filters_name_their_field(args: dict[str, str], fields: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        filters.ReportFilter.parse(args)
    assert [e.field for e in caught.value.errors] == fields


@pytest.mark.req("REP-05")
@pytest.mark.req("REP-08")
def test_enrolment_dates_accrual_and_chart(ctx: ServiceContext, truth: Truth) -> None:
    result = enrolment.enrolment(ctx, TRIAL, ALL, EVERYTHING)
    by_site = {s.site: s for s in result.sites}
    assert (by_site["P1"].randomized, by_site["P1"].first.date(), by_site["P1"].last.date()) == (  # type: ignore[union-attr]
        3,
        date(2026, 3, 2),
        date(2026, 3, 9),
    )
    assert (by_site["P2"].randomized, by_site["P2"].first.date()) == (2, date(2026, 3, 3))  # type: ignore[union-attr]
    assert result.overall.randomized == 5 and result.overall.last.date() == date(2026, 3, 9)  # type: ignore[union-attr]
    weeks = [(w.week_start.isoformat(), w.site, w.randomized, w.cumulative) for w in result.weeks]
    assert weeks == [
        ("2026-03-02", "P1", 2, 2),
        ("2026-03-02", "P2", 1, 1),
        ("2026-03-09", "P1", 1, 3),
        ("2026-03-09", "P2", 1, 2),
    ]
    assert result.chart is not None
    series = {s.label: s.points for s in result.chart.series}
    assert series["P1"] == ((date(2026, 3, 2), 2), (date(2026, 3, 9), 3))
    assert series["All sites"][-1] == (date(2026, 3, 9), 5)
    svg = view(ctx, "enrolment").svg or ""
    assert svg.startswith("<svg") and svg.count("<polyline") == 3
    # One date label per day over eight days, evenly spaced; the axis ends the day after the last
    # randomization, so that the last day's step is visible.
    labels = [f"2026-03-{d:02d}" for d in range(2, 11)]
    assert [label for label in labels if f">{label}</text>" in svg] == labels
    # Inlined under the CSP: no script, no style attribute, no event handler, no external reference.
    for forbidden in ("<script", "style=", "onload", "href", "<?xml"):
        assert forbidden not in svg


@pytest.mark.req("REP-08")
def test_blinded_balance_counts_per_stratum_and_site(ctx: ServiceContext, truth: Truth) -> None:
    result = balance.balance(ctx, TRIAL, ALL, EVERYTHING)
    counts = {(c.site, c.stratum): (c.randomized, c.after_correction, c.in_error) for c in result.strata}
    assert counts == {
        ("P1", "admission_cause=septic"): (2, 1, 0),
        ("P1", "admission_cause=non_septic"): (1, 2, 1),
        ("P2", "admission_cause=septic"): (1, 1, 0),
        ("P2", "admission_cause=non_septic"): (1, 1, 0),
    }
    assert result.sites == (("P1", 3), ("P2", 2))


@pytest.mark.req("REP-08")
@pytest.mark.req("REP-04")
def test_dispensing_completeness(ctx: ServiceContext, truth: Truth) -> None:
    result = dispensing.dispensing_completeness(ctx, TRIAL, ALL, EVERYTHING)
    sites = {s.site: s for s in result.sites}
    assert (sites["P1"].subjects, sites["P1"].dispensed, sites["P1"].administered, sites["P1"].complete) == (
        3,
        (2, 1, 1),
        (1, 1, 1),
        1,
    )
    assert (sites["P2"].dispensed, sites["P2"].administered, sites["P2"].complete) == (
        (0, 0, 0),
        (0, 0, 0),
        0,
    )
    assert sites["All sites"].subjects == 5 and sites["All sites"].complete == 1
    per_subject = {r.subject_number: r for r in result.subjects}
    assert per_subject[truth.subjects["S1"]].complete and per_subject[truth.subjects["S1"]].given == 3
    s4 = per_subject[truth.subjects["S4"]]
    assert [(d.dispensed, d.administered) for d in s4.doses] == [
        (True, False),
        (False, False),
        (False, False),
    ]


@pytest.mark.req("REP-09")
def test_kit_accountability_is_the_reconciliation(ctx: ServiceContext, truth: Truth) -> None:
    result = accountability.accountability(ctx, TRIAL, ALL, EVERYTHING)
    assert result.reconciliation == reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True)
    rows = table(view(ctx, "accountability"), "Kits per site and batch, by current status")
    by_site = {r["Site"]: r for r in rows}
    assert sum(int(r["Total"]) for r in rows) == 24 + 24 + 8
    assert by_site["P1"]["damaged"] == "1" and by_site["P1"]["administered"] == "3"
    assert sum(int(r["expired"]) for r in rows) == 1
    assert by_site["P1"]["Labels reprinted"] == "3"  # the reprinted confirmation lists S1's three kits
    assert facts(view(ctx, "accountability"))["Records balance"] == "yes"
    assert {
        r["Site"]
        for r in table(
            view(ctx, "accountability", scope=p1_scope(ctx)), "Kits per site and batch, by current status"
        )
    } == {"P1"}


@pytest.mark.req("REP-03")
@pytest.mark.req("UNB-05")
@pytest.mark.req("UNB-08")
@pytest.mark.req("UNB-09")
def test_the_unblinding_report_lists_every_event_and_hides_pharmacovigilance(
    ctx: ServiceContext, truth: Truth
) -> None:
    s = truth.subjects
    blinded = reports_unblindings.unblinding_report(
        ctx, TRIAL, ALL, EVERYTHING, include_pharmacovigilance=False
    )
    assert [(e.subject_number, e.kind, e.channel, e.site) for e in blinded.events] == [
        (s["S1"], "emergency", "offline", "P1"),
        (s["S3"], "emergency", "online", "P2"),
    ]
    online = blinded.events[1]
    assert online.role == "investigator" and online.unblinded_by == "Inv-P2"
    assert online.reason_category.startswith("Serious adverse event")
    assert online.reason == "severe reaction needing a specific treatment"
    assert (
        online.signature.startswith("Signed electronically by Inv P2 (inv-p2)")
        and "emergency unblinding" in online.signature
    )
    offline = blinded.events[0]
    assert (
        offline.unblinded_by == "Dr Night Duty" and offline.sheet_number and offline.recorded_by == "Inv-P1"
    )
    assert [(a.subject_number, a.site, a.persons_unblinded) for a in blinded.accidental] == [
        (s["S5"], "P2", "one ward nurse")
    ]
    assert s["S4"] not in str(view(ctx, "unblinding").tables)  # the PV-unblinded subject is absent
    restricted = reports_unblindings.unblinding_report(
        ctx, TRIAL, ALL, EVERYTHING, include_pharmacovigilance=True
    )
    pv = [e for e in restricted.events if e.kind == "pharmacovigilance"]
    assert [(e.subject_number, e.unblinded_by, e.role) for e in pv] == [
        (s["S4"], "Pat Vigil", "pharmacovigilance")
    ]
    for version in ("restricted", "safety"):
        assert s["S4"] in str(view(ctx, "unblinding", version=version).tables)
    later = reports_unblindings.unblinding_report(
        ctx, TRIAL, ALL, filters.ReportFilter(since=date(2026, 3, 8)), include_pharmacovigilance=False
    )
    assert [e.channel for e in later.events] == ["online"]  # the offline sheet was opened on the 7th


@pytest.mark.req("REP-07")
def test_protocol_deviation_listings(ctx: ServiceContext, truth: Truth) -> None:
    s = truth.subjects
    d = deviations.deviations(ctx, TRIAL, ALL, EVERYTHING)
    assert [(m.subject_number, m.factor, m.at_randomization, m.corrected) for m in d.mis_stratifications] == [
        (s["S1"], "admission_cause", "septic", "non_septic")
    ]
    assert [(e.subject_number, e.reason) for e in d.in_error] == [
        (s["S2"], "randomized before the consent was signed")
    ]
    assert [(r.kind, r.subject_number, r.day, r.cause) for r in d.refused] == [
        ("scan", s["S1"], "D2", "out-of-order"),
        ("dispensing", s["S4"], "D1", "wrong-kit"),
    ]
    assert truth.kits[s["S1"]]["D1"] in d.refused[1].detail
    assert [(b.kit_number, b.status, b.from_status) for b in d.blocked_kits] == [
        (truth.expired_kit, "expired", "available")
    ]
    assert [(r.subject_number, r.day, r.old_kit, r.new_kit) for r in d.replacements] == [
        (s["S1"], "D2", truth.replaced_kit, truth.new_kit)
    ]
    assert [(e.subject_number, e.day, e.delay, e.reason) for e in d.late_entries] == [
        (s["S1"], "D3", timedelta(hours=6), "network down on the ward")
    ]
    assert facts(view(ctx, "deviations"))["Refused scans"] == "1"
    first_week = deviations.deviations(ctx, TRIAL, ALL, filters.ReportFilter(until=date(2026, 3, 8)))
    assert [r.kind for r in first_week.refused] == ["scan"] and first_week.blocked_kits == ()
    # A kit blocked at the depot: its place is the depot in the reader's words, in English and in
    # French (seen on make demo: the code "depot" on French pages), while the data keep the code.
    kit_lists.generate_kit_list(
        ctx, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-DEPOT", expiry=ctx.now().date() + timedelta(days=200)
    )
    with ctx.db.reading() as session:
        at_depot = (
            session.execute(
                select(Kit.kit_number)
                .join(Batch, Batch.id == Kit.batch_id)
                .where(Batch.lot_code == "LOT-DEPOT", Kit.site_id.is_(None))
                .order_by(Kit.id)
            )
            .scalars()
            .first()
        )
    assert at_depot is not None
    kit_status.change_status(
        ctx,
        truth.ready.pharmacist,
        TRIAL,
        at_depot,
        "expired",
        reason="expiry date passed",
        scope=ALL,
        depot=True,
    )
    blocked = deviations.deviations(ctx, TRIAL, ALL, EVERYTHING).blocked_kits
    assert [(b.kit_number, b.site) for b in blocked] == [(truth.expired_kit, "P2"), (at_depot, "depot")]
    for words, title, column, depot in (
        (ENGLISH, "Expired or quarantined kits blocked", "Site", "depot"),
        (Words.of("fr"), "Kits périmés ou en quarantaine bloqués", "Centre", "dépôt"),
    ):
        shown = catalogue.build(ctx, MONITOR, TRIAL, "deviations", EVERYTHING, ALL, words=words)
        listed = next(t for t in shown.tables if t.title == title)
        assert [row[listed.columns.index(column)] for row in listed.rows] == ["P2", depot]


def withdraw_s4(ctx: ServiceContext, truth: Truth) -> str:
    """S4 (P1, septic, D1 dispensed) withdraws its consent: the one withdrawal of the known truth."""
    s4 = truth.subjects["S4"]
    withdrawal.withdraw(
        ctx,
        truth.ready.investigator,
        TRIAL,
        s4,
        kind="consent_withdrawn",
        effective_date=date(2026, 3, 9),
        reason="consent withdrawn by the patient",
        scope=ALL,
        signature=SIGNED,
        agreement_ref=None,
        is_investigator=True,
    )
    return s4


@pytest.mark.req("REP-04")
def test_participant_flow_in_total_per_site_and_stratum(ctx: ServiceContext, truth: Truth) -> None:
    assert participant_flow.participant_flow(ctx, TRIAL, ALL, EVERYTHING).counts[0].withdrawn == 0
    s4 = withdraw_s4(ctx, truth)
    flow = participant_flow.participant_flow(ctx, TRIAL, ALL, EVERYTHING)
    assert flow.columns == ("All sites", "P1", "P2")
    total, p1, p2 = flow.counts
    assert (total.screened, total.ineligible, total.randomized, total.in_error) == (7, 2, 5, 1)
    assert (p1.screened, p1.ineligible, p1.randomized, p2.screened, p2.randomized) == (4, 1, 3, 3, 2)
    assert (total.dispensed, total.administered, total.complete) == ((2, 1, 1), (1, 1, 1), 1)
    assert dict(flow.ineligible_reasons) == {"SOFA score over the first 24 h after admission": 2, "Age": 1}
    strata = {(site, stratum): c.randomized for site, stratum, c in flow.by_stratum}
    assert strata == {
        ("P1", "admission_cause=septic"): 2,
        ("P1", "admission_cause=non_septic"): 1,
        ("P2", "admission_cause=septic"): 1,
        ("P2", "admission_cause=non_septic"): 1,
    }
    # REP-04: withdrawn, in total, per site and per stratum (S4: P1, septic); kept in every other count.
    assert (total.withdrawn, p1.withdrawn, p2.withdrawn) == (1, 1, 0)
    withdrawn = {(site, stratum): c.withdrawn for site, stratum, c in flow.by_stratum}
    assert withdrawn == {key: int(key == ("P1", "admission_cause=septic")) for key in strata}
    flow_view = view(ctx, "participant-flow")
    measures = {r["Measure"]: r for r in table(flow_view, "Participant flow")}
    assert measures["Randomized"] == {"Measure": "Randomized", "All sites": "5", "P1": "3", "P2": "2"}
    assert measures["Withdrawn"] == {"Measure": "Withdrawn", "All sites": "1", "P1": "1", "P2": "0"}
    assert measures["3/3 doses administered"]["All sites"] == "1"
    assert facts(flow_view)["Withdrawn (kept in every count, intention to treat)"] == "1"
    per_stratum = table(flow_view, "Per stratum")
    in_words = ENGLISH.with_trial(trial_definition(ctx, TRIAL)).strata  # as the report shows a stratum
    assert in_words("admission_cause=septic") == "Cause of ICU admission: Septic"
    assert {(r["Site"], r["Stratum"]): r["Withdrawn"] for r in per_stratum} == {
        (site, in_words(stratum)): str(n) for (site, stratum), n in withdrawn.items()
    }
    # The allocation history shows the withdrawal beside the subject (a withdrawal is not a deviation).
    history = {
        r.subject_number: r for r in allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING).rows
    }
    assert [n for n, r in history.items() if r.withdrawal is not None] == [s4]
    cells = {r["Subject"]: r for r in table(view(ctx, "allocation-history"), "Allocation history")}
    assert cells[s4]["Withdrawal"].startswith(
        "consent withdrawn on Mar 9, 2026: consent withdrawn by the patient"
    )
    assert all(cells[n]["Withdrawal"] == "" for n in cells if n != s4)


@pytest.mark.req("REP-04")
@pytest.mark.req("BLD-09")
def test_the_flow_per_arm_exists_only_after_the_final_unblinding(ctx: ServiceContext, truth: Truth) -> None:
    stat = truth.ready.statistician
    with pytest.raises(Conflict) as early:
        catalogue.build(ctx, stat, TRIAL, "participant-flow", EVERYTHING, ALL, version="restricted")
    assert early.value.status == 409
    with ctx.db.reading() as s:
        reads_before = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "arm.read")
        ).scalar_one()
    s4 = withdraw_s4(ctx, truth)
    state.lock(ctx, stat, TRIAL, reason="database lock", signature=SIGNED)
    with pytest.raises(Conflict):
        participant_flow.participant_flow_by_arm(ctx, stat, TRIAL, ALL, EVERYTHING)
    state.unblind_trial(ctx, stat, TRIAL, reason="final analysis", signature=SIGNED)
    restricted = catalogue.build(ctx, stat, TRIAL, "participant-flow", EVERYTHING, ALL, version="restricted")
    per_arm = table(restricted, "Participant flow per arm")
    expected = {"A": 0, "B": 0}
    for number in truth.subjects.values():
        expected[arm_of_subject(ctx, truth, number)] += 1
    randomized = next(r for r in per_arm if r["Measure"] == "Randomized")
    assert randomized == {
        "Measure": "Randomized",
        "All arms": "5",
        "A: Interferon gamma-1b": str(expected["A"]),
        "B: Placebo": str(expected["B"]),
    }
    in_error = next(r for r in per_arm if r["Measure"] == "Randomized in error")
    column = {"A": "A: Interferon gamma-1b", "B": "B: Placebo"}[
        arm_of_subject(ctx, truth, truth.subjects["S2"])
    ]
    assert in_error[column] == "1" and in_error["All arms"] == "1"
    # REP-04: withdrawn per arm (S4 only), and per arm, site and stratum below.
    s4_column = {"A": "A: Interferon gamma-1b", "B": "B: Placebo"}[arm_of_subject(ctx, truth, s4)]
    withdrawn = next(r for r in per_arm if r["Measure"] == "Withdrawn")
    assert withdrawn == {
        "Measure": "Withdrawn",
        "All arms": "1",
        **{c: str(int(c == s4_column)) for c in ("A: Interferon gamma-1b", "B: Placebo")},
    }
    # Per arm, site and stratum (REP-04), each site's strata then its total, every arm in each.
    placed = {"S1": ("P1", "septic"), "S2": ("P1", "non_septic"), "S3": ("P2", "septic")}
    placed |= {"S4": ("P1", "septic"), "S5": ("P2", "non_septic")}
    arm_column = {"A": "A: Interferon gamma-1b", "B": "B: Placebo"}
    want: dict[tuple[str, str, str], int] = {}
    for key, (site, cause) in placed.items():
        column = arm_column[arm_of_subject(ctx, truth, truth.subjects[key])]
        in_words = ENGLISH.with_trial(trial_definition(ctx, TRIAL)).strata
        for stratum in (in_words(f"admission_cause={cause}"), "all strata"):
            want[(site, stratum, column)] = want.get((site, stratum, column), 0) + 1
    cells = table(restricted, "Participant flow per arm, site and stratum")
    assert len(cells) == 2 * (2 + 1) * 2  # two sites, two strata each plus the site's total, two arms
    shown = {(r["Site"], r["Stratum"], r["Arm"]): int(r["Randomized"]) for r in cells}
    assert set(want) <= set(shown) and shown == {key: want.get(key, 0) for key in shown}
    assert sum(n for (_, stratum, _), n in shown.items() if stratum == "all strata") == 5
    s1_arm = arm_column[arm_of_subject(ctx, truth, truth.subjects["S1"])]
    s1_row = next(r for r in cells if (r["Site"], r["Stratum"], r["Arm"]) == ("P1", "all strata", s1_arm))
    assert s1_row["3/3"] == "1"  # S1 is the only subject with all three doses
    assert {(r["Site"], r["Stratum"], r["Arm"]) for r in cells if r["Withdrawn"] != "0"} == {
        ("P1", "Cause of ICU admission: Septic", s4_column),
        ("P1", "all strata", s4_column),
    }
    assert all(r["Withdrawn"] in ("0", "1") for r in cells)
    # Every arm was read through arm_access: one audited read with its purpose, the report's filter
    # and the subjects read (issue 21: one per subject before), for each build.
    with ctx.db.reading() as s:
        reads = s.execute(
            select(AuditEvent.object_id, AuditEvent.new_values).where(
                AuditEvent.action == "arm.read", AuditEvent.new_values.contains("participant flow per arm")
            )
        ).all()
    numbers = sorted(truth.subjects.values())
    recorded = [json.loads(r.new_values or "{}") for r in reads]
    assert recorded and all(
        {k: v for k, v in entry.items() if k != "ids"}
        == {
            "purpose": "participant flow per arm (REP-04)",
            "selection": "randomized subjects of every site within the reader's reach; whole trial",
            "subjects": len(numbers),
            "first": numbers[0],
            "last": numbers[-1],
        }
        and "," not in entry["ids"]  # every subject: one range of ids
        for entry in recorded
    )
    assert {r.object_id for r in reads} == {f"{len(truth.subjects)} subjects"}
    assert reads_before > 0
    # The arm-word check sees arms when there are some (so that it can fail on the blinded reports).
    assert arm_leaks(export.to_csv(restricted))
    # Blinded readers keep their totals: the per-arm table is not part of the blinded report.
    assert "Participant flow per arm" not in [t.title for t in view(ctx, "participant-flow").tables]


@pytest.mark.req("REP-01")
@pytest.mark.req("REP-02")
@pytest.mark.req("BLD-13")
def test_sequence_generation_and_concealment(ctx: ServiceContext, truth: Truth) -> None:
    with ctx.db.reading() as s:
        pv_assignment = s.execute(
            select(RoleAssignment.id).where(RoleAssignment.role == "pharmacovigilance")
        ).scalar_one()
    users.revoke_role(ctx, CLI_ACTOR, pv_assignment, "left the safety department")
    blinded = sequence.sequence_report(ctx, TRIAL, restricted=False)
    (record,) = blinded.lists
    assert record.label == "IFNG-PAIS/TEST/1" and record.method == "permuted_blocks"
    assert record.generated_by == "test runner (command line)" and record.approved_by == "Stat"
    assert record.software_version != "unknown" and record.block_sizes is None and record.slot_count is None
    f = facts(view(ctx, "sequence"))
    assert f["Seed custodian"].startswith("Stat, unblinded statistician")
    assert f["Block sizes"].startswith("withheld") and f["Allocation ratio"] == "1:1"
    # REP-01: the stratification factors, like the block sizes, wait for the restricted version or
    # the final unblinding.
    assert blinded.factors is None and f["Stratification factors"].startswith("withheld")
    assert "Stratification factors" not in [t.title for t in view(ctx, "sequence").tables]
    assert "Who assigned" in f and "Mechanism" in f
    assert [r.username for r in blinded.enrolled_by] == ["inv-p1", "inv-p2"]
    holders = {r.username: r for r in blinded.unblinded_holders}
    assert set(holders) == {"stat", "pv-officer"}
    assert holders["pv-officer"].revoked_at is not None and holders["stat"].revoked_at is None
    rows = table(view(ctx, "sequence"), "Everyone who ever held an unblinded role (access to the sequence)")
    assert {r["Username"]: bool(r["Revoked (UTC)"]) for r in rows} == {"stat": False, "pv-officer": True}
    assert "2, 4, 6" not in export.to_csv(view(ctx, "sequence"))
    restricted = sequence.sequence_report(ctx, TRIAL, restricted=True)
    assert restricted.lists[0].block_sizes == (2, 4, 6) and restricted.lists[0].slot_count
    factors_shown = facts(view(ctx, "sequence", version="restricted"))["Stratification factors"]
    assert "Cause of ICU admission (Septic, Non-septic)" in factors_shown
    assert restricted.factors is not None and [code for code, _, _ in restricted.factors] == [
        "site",
        "admission_cause",
    ]
    stat = truth.ready.statistician
    state.lock(ctx, stat, TRIAL, reason="database lock", signature=SIGNED)
    assert sequence.sequence_report(ctx, TRIAL, restricted=False).factors is None  # locked is not enough
    state.unblind_trial(ctx, stat, TRIAL, reason="final analysis", signature=SIGNED)
    public = sequence.sequence_report(ctx, TRIAL, restricted=False)
    assert public.lists[0].block_sizes == (2, 4, 6) and public.factors == restricted.factors
    assert (
        "Cause of ICU admission (Septic, Non-septic)"
        in facts(view(ctx, "sequence"))["Stratification factors"]
    )


@pytest.mark.req("AUD-09")
@pytest.mark.req("UNB-08")
def test_each_review_report_lists_its_fixture_events(ctx: ServiceContext, truth: Truth) -> None:
    def actions(kind: str, flt: filters.ReportFilter = EVERYTHING) -> list[str]:
        return [e.action for e in audit_review.audit_review(ctx, TRIAL, kind, ALL, flt).entries]

    unblindings = actions("unblindings")
    assert (
        unblindings.count("unblinding.emergency") == 1
        and unblindings.count("unblinding.offline_registered") == 1
    )
    assert unblindings.count("unblinding.accidental_reported") == 1
    assert "unblinding.pharmacovigilance" not in unblindings
    arm_reads = audit_review.audit_review(ctx, TRIAL, "arm-reads", ALL, EVERYTHING).entries
    purposes = [e.details for e in arm_reads]
    assert any("emergency unblinding" in p for p in purposes)
    assert not any("pharmacovigilance" in p for p in purposes)  # UNB-08
    with ctx.db.reading() as s:
        pv_reads = s.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "arm.read",
                AuditEvent.new_values.contains("pharmacovigilance unblinding"),
            )
        ).scalar_one()
        every_read = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "arm.read")
        ).scalar_one()
    assert pv_reads == 1 and len(arm_reads) == every_read - 1
    sign_ins = audit_review.audit_review(ctx, TRIAL, "sign-ins", ALL, EVERYTHING).entries
    assert [(e.action, e.username) for e in sign_ins] == [("auth.login_failed", "inv-p1")]
    off_hours = audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, EVERYTHING).entries
    assert [(e.action, e.object, e.local_time) for e in off_hours] == [
        ("administration.recorded", f"subject {truth.subjects['S1']}", "Wed 2026-03-04 22:30 CET")
    ]
    late_day = filters.ReportFilter(hours_from=8, hours_to=23)
    assert actions("off-hours", late_day) == []
    assert actions("reprints") == ["document.printed"]
    assert actions("corrections") == [
        "subject.randomized_in_error",
        "subject.stratum_corrected",
        "kit.status_changed",
    ]
    assert actions("mis-stratifications") == ["subject.stratum_corrected"]
    assert actions("kit-replacements") == ["kit.replaced"]
    assert actions("withdrawals") == []
    withdraw_s4(ctx, truth)
    assert actions("withdrawals") == ["subject.withdrawn"]
    grants = audit_review.audit_review(
        ctx, TRIAL, "role-changes", ALL, filters.ReportFilter(since=date(2026, 3, 9))
    ).entries
    assert [e.action for e in grants] == ["role.granted"] and '"user": "mon-p1"' in grants[0].details
    with pytest.raises(NotFound) as unknown:
        audit_review.audit_review(ctx, TRIAL, "everything", ALL, EVERYTHING)
    assert unknown.value.errors[0].field == "report"


@pytest.mark.req("AUD-09")
def test_a_review_is_signed_off_with_the_digest_of_what_was_listed(ctx: ServiceContext, truth: Truth) -> None:
    monitor = person(ctx, "mon-review", "monitor", full_name="Rita Viewer")
    start, end = date(2026, 3, 2), date(2026, 3, 8)
    listed = audit_review.audit_review(
        ctx, TRIAL, "corrections", ALL, filters.ReportFilter(since=start, until=end)
    )
    assert len(listed.entries) == 2  # the expired kit is on the 9th
    done = audit_review.sign_review(
        ctx, monitor, TRIAL, "corrections", start, end, "no finding", SIGNED, scope=ALL
    )
    assert (done.entries, done.content_sha256) == (2, listed.digest)
    assert done.signature.meaning == "audit trail review" and done.signature.printed_name == "Rita Viewer"
    with ctx.db.reading() as s:
        row = s.execute(select(AuditReview)).scalar_one()
        signature = s.get(Signature, row.signature_id)
        entry = s.execute(
            select(AuditEvent).where(AuditEvent.action == Action.AUDIT_REVIEWED.value)
        ).scalar_one()
    assert (row.report, row.entries, row.content_sha256, row.comment) == (
        "corrections",
        2,
        listed.digest,
        "no finding",
    )
    assert row.period_start.date() == start and row.period_end.date() == end + timedelta(days=1)
    assert (
        signature is not None
        and signature.object_type == "audit_review"
        and signature.meaning == "audit trail review"
    )
    assert signatures.verify(
        signature,
        {
            "trial": TRIAL,
            "report": "corrections",
            "period_start": "2026-03-02",
            "period_end": "2026-03-08",
            "entries": 2,
            "sha256": listed.digest,
            "sites": "all",
        },
    )
    assert (
        entry.object_type == "audit_review"
        and entry.reason == "no finding"
        and listed.digest in (entry.new_values or "")
    )
    assert [(p.report, p.period_start, p.period_end) for p in audit_review.reviews(ctx, TRIAL)] == [
        ("corrections", start, end)
    ]
    assert audit_review.audit_review(ctx, TRIAL, "corrections", ALL, EVERYTHING).past[0].id == row.id
    with pytest.raises(signatures.SignatureRefused):
        audit_review.sign_review(
            ctx,
            monitor,
            TRIAL,
            "corrections",
            start,
            end,
            "",
            signatures.SignatureRequest(password="wrong"),
            scope=ALL,
        )
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(AuditReview)).scalar_one() == 1
        assert (
            s.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "signature.failed", AuditEvent.object_type == "audit_review")
            ).scalar_one()
            == 1
        )
    with pytest.raises(ValidationFailed) as bad:
        audit_review.sign_review(ctx, monitor, TRIAL, "nothing", end, start, "", SIGNED, scope=ALL)
    assert [e.field for e in bad.value.errors] == ["report", "until"]
    with pytest.raises(ValidationFailed) as missing:
        audit_review.sign_review(
            ctx, monitor, TRIAL, "corrections", None, date(2030, 1, 1), "", SIGNED, scope=ALL
        )
    assert [e.field for e in missing.value.errors] == ["since", "until"]


@pytest.mark.req("AUD-09")
def test_a_review_digest_is_the_text_of_its_rows_as_first_defined(ctx: ServiceContext, truth: Truth) -> None:
    """The SHA-256 a reviewer signs must come out the same for the same entries whatever version of
    the service computes it, or past signed reviews would no longer match. Issue 21 changed how the
    rows are built (time cells cut from the recorded text, one JSON encoder for every entry), not
    what they say: each review's digest is rebuilt here from the audit table, with the formulas of
    the first version."""
    withdraw_s4(ctx, truth)
    with ctx.db.reading() as s:
        recorded = {f"{e.chain}:{e.seq}": e for e in s.execute(select(AuditEvent)).scalars()}

    def spaced(text: str | None) -> str | None:
        values = json.loads(text) if text else None
        return json.dumps(values, sort_keys=True, ensure_ascii=False, default=str) if values else None

    listed = 0
    for kind in audit_review.REVIEW_KINDS:
        report = audit_review.audit_review(ctx, TRIAL, kind, ALL, EVERYTHING)
        zone = ZoneInfo(report.timezone)
        rows = []
        for shown in report.entries:
            e = recorded[shown.entry]
            at = datetime.strptime(e.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            before, after = spaced(e.old_values), spaced(e.new_values)
            details = [
                *([f"before {before}"] if before else []),
                *([after] if after else []),
                *([f"reason: {e.reason}"] if e.reason else []),
            ]
            rows.append(
                [
                    shown.entry,
                    at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
                    e.actor_name,
                    e.actor_username,
                    e.actor_role,
                    e.site_code or "",
                    e.action,
                    f"{e.object_type} {e.object_id}",
                    "; ".join(details),
                ]
            )
        text = json.dumps(
            {"report": kind, "columns": list(audit_review._REVIEW_COLUMNS), "rows": rows},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        assert report.digest == hashlib.sha256(text.encode("utf-8")).hexdigest(), kind
        listed += len(rows)
    assert listed > 10


@pytest.mark.req("AUD-09")
def test_the_off_hours_review_lists_exactly_the_entries_outside_the_working_hours(
    ctx: ServiceContext, truth: Truth
) -> None:
    """Issue 21 reads the clock once per minute of recorded time (the moment in the trial's zone and
    whether it is within the working hours), for every entry of that minute: the review must still
    list exactly the entries recorded outside the hours asked, worked out here entry by entry."""
    zone = ZoneInfo(trial_definition(ctx, TRIAL).timezone)
    with ctx.db.reading() as s:
        at = {f"{e.chain}:{e.seq}": e.at for e in s.execute(select(AuditEvent)).scalars()}
    # No working hours at all: every entry the review may list (checkpoints and pharmacovigilance
    # unblindings are never listed).
    always = filters.ReportFilter(hours_from=0, hours_to=0)
    listable = [e.entry for e in audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, always).entries]
    split = 0
    for hours in ((8, 20), (9, 10), (0, 24), (13, 23), (11, 12)):
        flt = filters.ReportFilter(hours_from=hours[0], hours_to=hours[1])
        listed = [e.entry for e in audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, flt).entries]
        expected = []
        for entry in listable:
            local = datetime.strptime(at[entry], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).astimezone(zone)
            if not (local.weekday() < 5 and hours[0] <= local.hour < hours[1]):
                expected.append(entry)
        assert listed == expected, hours
        split += 0 < len(listed) < len(listable)
    assert split >= 2  # entries on both sides of the hours, for at least two of them


def test_a_report_is_built_and_its_csv_written_with_the_collector_paused(
    ctx: ServiceContext, truth: Truth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: the cyclic collector walked the half-million short-lived objects of a large review
    (40 % of its CPU); a report's rows and its CSV are made with it paused, and it is on again
    after."""
    seen: list[bool] = []
    built = catalogue.audit_review
    written = export.csv_chunks

    def review(*args: object, **kwargs: object) -> audit_review.AuditReviewReport:
        seen.append(gc.isenabled())
        return built(*args, **kwargs)  # type: ignore[arg-type]

    def chunks(view: catalogue.ReportView) -> Iterator[str]:
        for piece in written(view):
            seen.append(gc.isenabled())
            yield piece

    # The collector is given back only once the report is let go: its objects are then freed by
    # their last reference. Resumed between the build and the CSV, it walked the whole report once
    # at its next allocation (issue 21: 80 ms of a 0.85 s review CSV).
    alive: list[int] = []
    enable = gc.enable

    def entries_alive() -> int:
        return sum(isinstance(o, audit_review.ReviewEntry) for o in gc.get_objects())

    def resumed() -> None:
        alive.append(entries_alive() - before)  # any other test's left alive are not this report's
        enable()

    always = filters.ReportFilter(hours_from=0, hours_to=0)  # every entry is off hours
    monkeypatch.setattr(catalogue, "audit_review", review)
    monkeypatch.setattr(export, "csv_chunks", chunks)
    monkeypatch.setattr(gc, "enable", resumed)
    assert gc.isenabled()
    before = entries_alive()
    made = export.export(ctx, MONITOR, TRIAL, "off-hours", always, ALL, "csv", version="review")
    made.close()
    monkeypatch.undo()
    assert len(seen) >= 2 and not any(seen)  # the review built, then the CSV written
    assert gc.isenabled()
    assert made.rows >= 50 and alive == [0], alive  # resumed once, every entry of the report let go


BLINDED = [(name, "blinded") for name in catalogue.REPORTS] + [
    (name, "review") for name in audit_review.REVIEW_KINDS
]


@pytest.mark.req("AUD-01")
@pytest.mark.req("BLD-07")
@pytest.mark.req("AUD-05")
@pytest.mark.req("DIB-04")
@pytest.mark.parametrize(("name", "version"), BLINDED, ids=str)
def test_blinded_exports_round_trip_name_no_arm_and_are_audited(
    ctx: ServiceContext, truth: Truth, name: str, version: str
) -> None:
    flt = filters.ReportFilter(until=date(2026, 3, 31))
    shown = catalogue.build(ctx, MONITOR, TRIAL, name, flt, ALL, version=version)
    csv_export = export.export(ctx, MONITOR, TRIAL, name, flt, ALL, "csv", version=version)
    pdf_export = export.export(ctx, MONITOR, TRIAL, name, flt, ALL, "pdf", version=version)
    text = csv_export.body.decode("utf-8")
    metadata, sections = csv_sections(text)
    # Round trip: every table, its columns and its rows; the metadata without any arm.
    assert list(sections) == [t.title for t in shown.tables]
    for t in shown.tables:
        assert len(sections[t.title]) == len(t.rows)
        if t.rows:
            assert tuple(sections[t.title][0]) == t.columns
    assert csv_export.rows == shown.rows == sum(len(r) for r in sections.values())
    assert metadata["trial"] == TRIAL and metadata["generated by"] == "Mona Itor (Monitor)"
    assert metadata["filters"].startswith("every site")
    # The PDF holds every column, the metadata and page numbers.
    pdf = flat(pdf_text(pdf_export.body))
    assert pdf_export.body.startswith(b"%PDF")
    for t in shown.tables:
        assert flat(t.title) in pdf
        for column in t.columns:
            assert flat(column) in pdf, column
    assert "Generated by: Mona Itor (Monitor)" in pdf and "Page 1 of" in pdf
    # BLD-07: no arm word, no arm code, in the rows, the CSV, the PDF text and its metadata, the name.
    assert arm_leaks(str(shown.tables) + str(shown.facts)) == []
    assert arm_leaks(text) == [] and arm_leaks(pdf) == []
    for filename in (csv_export.filename, pdf_export.filename):
        assert filename.startswith(("audit-review-" if version == "review" else "") + name)
        assert filename.endswith(f"-{TRIAL}-2026-03-09.{filename.rsplit('.', 1)[1]}")
        assert arm_leaks(filename.replace(TRIAL, "")) == []
    with ctx.db.reading() as s:
        audited = (
            s.execute(
                select(AuditEvent.new_values)
                .where(AuditEvent.action == Action.REPORT_EXPORTED.value)
                .order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
    entries = [json.loads(a or "{}") for a in audited]
    assert [e["format"] for e in entries] == ["csv", "pdf"]
    for e in entries:
        assert (e["report"], e["version"], e["rows"], e["filters"]) == (
            name,
            version,
            shown.rows,
            {"until": "2026-03-31"},
        )
    assert entries[0]["sha256"] == hashlib.sha256(csv_export.body).hexdigest()


@pytest.mark.req("AUD-05")
def test_a_csv_larger_than_the_spool_is_sent_whole_from_disk(
    ctx: ServiceContext, truth: Truth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: a CSV is written once, its SHA-256 taken as it is written, then sent from a spooled
    file, on disk past spooling.SPOOL_BYTES. What is sent is what the audit entry's digest covers, every time
    it is read, even two readings interleaved."""
    small = export.export(ctx, MONITOR, TRIAL, "allocation-history", EVERYTHING, ALL, "csv").body
    monkeypatch.setattr(spooling, "SPOOL_BYTES", 256)
    monkeypatch.setattr(spooling, "READ_BYTES", 64)  # several pieces, so that two readings interleave
    made = export.export(ctx, MONITOR, TRIAL, "allocation-history", EVERYTHING, ALL, "csv")
    first, second = made.chunks(), made.chunks()
    interleaved = [next(first), next(second), next(first), next(second)]
    body = interleaved[0] + interleaved[2] + b"".join(first)
    assert len(body) > 256 and body == interleaved[1] + interleaved[3] + b"".join(second) == made.body
    made.close()  # the spooled file is let go: it cannot be read again
    with pytest.raises(ValueError):
        _ = made.body
    assert body.replace(b"\r\n", b"\n").split(b"\n")[5:] == small.replace(b"\r\n", b"\n").split(b"\n")[5:]
    with ctx.db.reading() as s:
        recorded = json.loads(
            s.execute(
                select(AuditEvent.new_values)
                .where(AuditEvent.action == Action.REPORT_EXPORTED.value)
                .order_by(AuditEvent.seq.desc())
                .limit(1)
            ).scalar_one()
            or "{}"
        )
    assert recorded["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.req("AUD-05")
def test_csv_cells_that_could_be_formulas_are_neutralised(ctx: ServiceContext, truth: Truth) -> None:
    corrections.mark_in_error(
        ctx,
        truth.ready.investigator,
        TRIAL,
        truth.subjects["S4"],
        reason='=HYPERLINK("x")',
        scope=ALL,
        signature=SIGNED,
    )
    text = export.export(ctx, MONITOR, TRIAL, "deviations", EVERYTHING, ALL, "csv").body.decode()
    _, sections = csv_sections(text)
    reasons = [r["Reason"] for r in sections["Randomizations in error"]]
    assert '\'=HYPERLINK("x")' in reasons and '=HYPERLINK("x")' not in reasons


def test_unknown_reports_versions_and_formats_are_clear_errors(ctx: ServiceContext, truth: Truth) -> None:
    for name, version in (
        ("nope", "blinded"),
        ("balance", "restricted"),
        ("balance", "safety"),
        ("nope", "review"),
    ):
        with pytest.raises(NotFound) as caught:
            catalogue.build(ctx, MONITOR, TRIAL, name, EVERYTHING, ALL, version=version)
        assert caught.value.errors[0].field == "report"
    with pytest.raises(NotFound):
        catalogue.build(ctx, MONITOR, TRIAL, "balance", EVERYTHING, ALL, version="secret")
    with pytest.raises(ValidationFailed) as fmt:
        export.export(ctx, MONITOR, TRIAL, "balance", EVERYTHING, ALL, "xlsx")
    assert fmt.value.errors[0].field == "format"


def test_reports_of_an_empty_trial(ctx: ServiceContext) -> None:
    """Before any list or subject: every report still renders (zeros, no chart, no list)."""
    load_ifn(ctx)
    for name in catalogue.REPORTS:
        shown = catalogue.build(ctx, MONITOR, TRIAL, name, EVERYTHING, ALL)
        assert render_report_pdf(shown.document()).startswith(b"%PDF")
    assert allocation_history.allocation_history(ctx, TRIAL, ALL, EVERYTHING).rows == ()
    assert enrolment.enrolment(ctx, TRIAL, ALL, EVERYTHING).chart is None
    assert participant_flow.participant_flow(ctx, TRIAL, ALL, EVERYTHING).counts[0].screened == 0
    assert sequence.sequence_report(ctx, TRIAL, restricted=True).lists == ()


@pytest.mark.req("UNB-08")
@pytest.mark.req("BLD-09")
def test_restricted_exports_seal_their_row_count(ctx: ServiceContext, truth: Truth) -> None:
    """The number of rows of a restricted unblinding report would count the PV unblindings."""
    stat = truth.ready.statistician
    exported = export.export(ctx, stat, TRIAL, "unblinding", EVERYTHING, ALL, "csv", version="restricted")
    assert exported.filename.startswith("unblinding-restricted-IFNG-PAIS-")
    with ctx.db.reading() as s:
        entry = s.execute(
            select(AuditEvent).where(AuditEvent.action == Action.REPORT_EXPORTED.value)
        ).scalar_one()
    assert entry.sealed_values is not None
    assert json.loads(entry.new_values or "{}") == {
        "report": "unblinding",
        "version": "restricted",
        "format": "csv",
        "language": "en",
        "filters": {},
    }
