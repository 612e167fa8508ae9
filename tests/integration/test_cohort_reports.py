"""The monitor's reports of the observational cohort IMMUNOSEPSIS-4 (issue 20): recruitment, the
screening log with failure reasons, sample completeness and the STROBE-style participant flow,
figure by figure on a small world with every case (tests.support.cohort_reports.cohort_world), and
the API's participant list."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import Site, Trial
from allocator.permissions import Scope
from allocator.services import archive, auth, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import NotFound, ValidationFailed
from allocator.services.reports import audit_review, catalogue, cohort_common, export
from allocator.services.reports.catalogue import COHORT_REPORTS
from allocator.services.reports.cohort_flow import StrobeFlow
from allocator.services.reports.cohort_recruitment import Recruitment
from allocator.services.reports.cohort_samples import SampleCompleteness
from allocator.services.reports.cohort_screening import CohortScreening
from allocator.services.reports.filters import ALL_SITES as ALL_SITES_ROW
from allocator.services.reports.filters import ReportFilter
from allocator.services.subjects import participants
from allocator.wording import ENGLISH, Words
from tests.support import ALL_SITES, CLI_ACTOR, COHORT, GOOD_PASSWORD, HERE, Clock, events, make_user
from tests.support.cohort_reports import CohortWorld, cohort_world

FR = Words.of("fr")


@pytest.fixture
def world(ctx: ServiceContext, clock: Clock) -> CohortWorld:
    return cohort_world(ctx, clock)


def view(
    ctx: ServiceContext,
    name: str,
    flt: ReportFilter | None = None,
    scope: Scope = ALL_SITES,
    words: Words = ENGLISH,
) -> catalogue.ReportView:
    return catalogue.build(ctx, CLI_ACTOR, COHORT, name, flt or ReportFilter(), scope, words=words)


def only(ctx: ServiceContext, code: str) -> Scope:
    with ctx.db.reading() as s:
        site_id = s.execute(
            select(Site.id)
            .join(Trial, Trial.id == Site.trial_id)
            .where(Trial.code == COHORT, Site.code == code)
        ).scalar_one()
    return Scope(all_sites=False, site_ids=frozenset({site_id}))


@pytest.mark.req("REP-05")
def test_recruitment_per_site_and_month_against_the_target(ctx: ServiceContext, world: CohortWorld) -> None:
    data = view(ctx, "recruitment").data
    assert isinstance(data, Recruitment)
    assert data.target == 305 and data.overall.registered == 10
    assert [(s.site, s.registered) for s in data.sites] == [("L1", 5), ("L2", 5)]
    l1 = data.sites[0]
    assert l1.first is not None and l1.last is not None
    assert (l1.first.isoformat(), l1.last.isoformat()) == (
        "2026-03-02T09:31:00+00:00",
        "2026-04-02T08:01:00+00:00",
    )
    assert [(m.month, m.site, m.registered, m.cumulative) for m in data.months] == [
        ("2026-03", "L1", 4, 4),
        ("2026-04", "L1", 1, 5),
        ("2026-03", "L2", 4, 4),
        ("2026-04", "L2", 1, 5),
        ("2026-03", ALL_SITES_ROW, 8, 8),
        ("2026-04", ALL_SITES_ROW, 2, 10),
    ]
    shown = view(ctx, "recruitment", words=FR)
    assert ("Part de l'objectif", "3,3 %") in shown.facts
    against = shown.tables[2]
    assert against.rows == (("2026-03", "8", "8", "305", "2,6 %"), ("2026-04", "2", "10", "305", "3,3 %"))
    assert shown.chart is not None and [s.label for s in shown.chart.series] == [
        "L1",
        "L2",
        "Tous les centres",
        "Objectif",
    ]
    # The filter: site L2 only; the period April only.
    l2 = view(ctx, "recruitment", ReportFilter(site="L2")).data
    assert isinstance(l2, Recruitment) and l2.overall.registered == 5 and [s.site for s in l2.sites] == ["L2"]
    april = view(ctx, "recruitment", ReportFilter.parse({"since": "2026-04-01"})).data
    assert isinstance(april, Recruitment) and april.overall.registered == 2


@pytest.mark.req("REP-04")
def test_the_screening_log_counts_each_patient_once_with_its_failed_criteria(
    ctx: ServiceContext, world: CohortWorld
) -> None:
    data = view(ctx, "screening-log").data
    assert isinstance(data, CohortScreening)
    assert [(c.site, c.screened, c.eligible, c.registered, c.not_eligible) for c in data.counts] == [
        ("L1", 7, 5, 5, 2),
        ("L2", 6, 5, 5, 1),
        (ALL_SITES_ROW, 13, 10, 10, 3),
    ]
    # L1-0005 failed on age, then was corrected and registered: counted once, as registered.
    assert data.reasons == (
        ("age", 2, (1, 1)),
        ("pregnancy_breastfeeding", 1, (0, 1)),
        ("sampling.D3", 1, (1, 0)),
    )
    french = view(ctx, "screening-log", words=FR)
    assert [row[0] for row in french.tables[1].rows] == [
        "Âge",
        "Grossesse ou allaitement",
        "Aucun jour ouvré du laboratoire central dans la fenêtre du prélèvement D3",
    ]
    log = {row[0]: row for row in french.tables[2].rows}
    assert log["L1-0005"][3] == "inclus sous le numéro L1-004" and log["L1-0005"][4] == ""
    assert log["L2-0901"][3] == "non éligible" and log["L2-0901"][4] == "Âge; Grossesse ou allaitement"
    mine = view(ctx, "screening-log", scope=only(ctx, "L2")).data
    assert isinstance(mine, CohortScreening) and mine.overall.screened == 6 and mine.sites == ("L2",)


@pytest.mark.req("REP-08")
def test_sample_completeness_per_timepoint_and_site(ctx: ServiceContext, world: CohortWorld) -> None:
    data = view(ctx, "sample-completeness").data
    assert isinstance(data, SampleCompleteness)
    figures = {
        (c.timepoint, c.site): (
            c.planned,
            c.collected,
            c.on_planned_date,
            c.in_window_other_day,
            c.outside_window,
            c.missed,
            c.received,
            c.unusable,
            c.pending,
        )
        for c in data.rows
    }
    assert figures == {
        ("D3", "L1"): (5, 2, 1, 1, 0, 1, 2, 1, 2),
        ("D3", "L2"): (5, 3, 1, 1, 1, 0, 1, 2, 1),
        ("D3", ALL_SITES_ROW): (10, 5, 2, 2, 1, 1, 3, 3, 3),
    }
    l1, l2, everything = data.rows
    # Delays: L1-001 26 h 30 min, L1-002 6 h (received, then unusable), L2-005 3 h.
    assert (l1.delay_median, l1.delay_max) == (
        timedelta(hours=16, minutes=15),
        timedelta(hours=26, minutes=30),
    )
    assert (everything.delay_median, everything.delay_max) == (
        timedelta(hours=6),
        timedelta(hours=26, minutes=30),
    )
    assert l2.delay_median == timedelta(hours=3)
    assert data.reasons == (
        ("D3", "L1", "missed", "patient transferred", 1),
        ("D3", "L1", "unusable", "haemolysed", 1),
        ("D3", "L2", "unusable", "tube broken at the site", 1),
        ("D3", "L2", "unusable", "tube set expired", 1),
    )
    french = view(ctx, "sample-completeness", words=FR)
    assert ("Délai pré-analytique, médiane", "6 h 00 min") in french.facts
    assert french.tables[0].rows[0][-2:] == ("16 h 15 min", "26 h 30 min")
    samples = {row[0]: row for row in french.tables[2].rows}
    assert samples[world.subjects["A"]][6] == "reçu au laboratoire"
    assert (
        samples[world.subjects["C"]][6] == "manqué"
        and samples[world.subjects["C"]][10] == "patient transferred"
    )
    # F's tube set was assigned at its registration; nothing recorded since.
    assert samples[world.subjects["F"]][5] != "" and samples[world.subjects["F"]][6] == "pas encore prélevé"


@pytest.mark.req("REP-04")
def test_the_strobe_flow_accounts_for_every_patient_and_sample(
    ctx: ServiceContext, world: CohortWorld
) -> None:
    data = view(ctx, "strobe-flow").data
    assert isinstance(data, StrobeFlow)
    assert data.columns == (ALL_SITES_ROW, "L1", "L2")
    total, l1, l2 = data.counts
    assert (total.screened, total.not_eligible, total.eligible, total.registered) == (13, 3, 10, 10)
    assert (l1.screened, l1.not_eligible, l1.registered, l2.screened, l2.registered) == (7, 2, 5, 6, 5)
    [d3] = total.samples
    assert (d3.planned, d3.collected, d3.missed, d3.pending) == (10, 5, 1, 3)
    assert (d3.received, d3.awaiting_receipt, d3.analysable) == (3, 1, 2)
    assert (d3.unusable, d3.unusable_before_collection, d3.unusable_before_receipt, d3.unusable_at_lab) == (
        3,
        1,
        1,
        1,
    )
    # Every sample is in exactly one branch.
    assert d3.planned == d3.collected + d3.missed + d3.pending + d3.unusable_before_collection
    assert d3.collected == d3.received + d3.awaiting_receipt + d3.unusable_before_receipt
    assert d3.received == d3.analysable + d3.unusable_at_lab
    assert (total.analysable_participants, l1.analysable_participants, l2.analysable_participants) == (
        2,
        1,
        1,
    )
    measures = {row[0]: row[1:] for row in view(ctx, "strobe-flow", words=FR).tables[0].rows}
    assert measures["Patients sélectionnés"] == ("13", "7", "6")
    assert measures["D3 inutilisable au laboratoire"] == ("1", "1", "0")
    assert measures["D3 analysable"] == ("2", "1", "1")


@pytest.mark.req("REP-08")
def test_a_cohort_has_only_its_own_reports(ctx: ServiceContext, world: CohortWorld) -> None:
    for name in ("enrolment", "balance", "unblinding", "dispensing", "accountability", "participant-flow"):
        with pytest.raises(NotFound):
            view(ctx, name)
    for version in ("restricted", "safety"):
        with pytest.raises(NotFound):
            catalogue.build(ctx, CLI_ACTOR, COHORT, "strobe-flow", ReportFilter(), ALL_SITES, version=version)
    with pytest.raises(NotFound):
        catalogue.build(ctx, CLI_ACTOR, COHORT, "arm-reads", ReportFilter(), ALL_SITES, version="review")
    with pytest.raises(ValidationFailed) as bad:
        view(ctx, "recruitment", ReportFilter(site="P1"))
    assert [e.field for e in bad.value.errors] == ["site"]
    shown = view(ctx, "strobe-flow")
    assert all(key != "Version" for key, _ in shown.metadata())  # nothing is blinded in a cohort


@pytest.mark.req("REP-08")
def test_an_export_is_audited_as_any_report(ctx: ServiceContext, world: CohortWorld) -> None:
    done = export.export(
        ctx, CLI_ACTOR, COHORT, "sample-completeness", ReportFilter(site="L1"), ALL_SITES, "csv"
    )
    assert done.filename.startswith("sample-completeness-IMMUNOSEPSIS-4-") and done.rows > 0
    [entry] = events(ctx, "report.exported", chain=COHORT)
    assert entry.object_id == "blinded:sample-completeness" and entry.site_code == "L1"
    assert '"rows":' in (entry.new_values or "")


def test_delays_are_shown_to_the_nearest_minute() -> None:
    assert cohort_common.hours_text(timedelta(minutes=59, seconds=40), Words.of("en")) == "1 h 00 min"
    assert cohort_common.hours_text(None, Words.of("en")) == ""


@pytest.mark.req("RND-06")
def test_the_api_list_pages_the_participants_with_their_samples(
    ctx: ServiceContext, world: CohortWorld
) -> None:
    first = participants.participants_page(ctx, COHORT, ALL_SITES, limit=3)
    assert [p.subject_number for p in first.participants] == ["L1-001", "L1-002", "L1-003"]
    assert first.next_after == "L1-003"
    rest = participants.participants_page(ctx, COHORT, ALL_SITES, after=first.next_after, limit=10)
    assert [p.subject_number for p in rest.participants] == [
        "L2-001",
        "L2-002",
        "L2-003",
        "L2-004",
        "L1-004",
        "L1-005",
        "L2-005",
    ]
    assert rest.next_after is None
    at_l2 = participants.participants_page(ctx, COHORT, ALL_SITES, site="L2")
    assert [p.subject_number for p in at_l2.participants] == [
        "L2-001",
        "L2-002",
        "L2-003",
        "L2-004",
        "L2-005",
    ]
    # A reader of L1 alone: another site's participant is no cursor (it answered a page, telling
    # that L2-001 exists, where an unknown number was refused).
    with ctx.db.reading() as s:
        l1 = s.execute(select(Site.id).where(Site.code == "L1")).scalar_one()
    only_l1 = Scope(all_sites=False, site_ids=frozenset({l1}))
    for cursor in ("L2-001", "L2-999"):
        with pytest.raises(ValidationFailed) as refused:
            participants.participants_page(ctx, COHORT, only_l1, after=cursor)
        assert [e.field for e in refused.value.errors] == ["after"]
    a = participants.participant(ctx, COHORT, "l1-001", ALL_SITES).as_json()
    assert a["site"] == "L1" and a["registered_at"] == "2026-03-02T09:31:00Z"
    assert a["samples"] == [
        {
            "label": "D3",
            "kit_type": "BIOMARKER",
            "due_date": "2026-03-04",
            "window_end": "2026-03-05",
            "planned_date": "2026-03-04",
            "status": "received",
            "kit_number": world.kits["A"],
            "collected_at": "2026-03-04T07:00:00Z",
            "received_at": "2026-03-05T09:30:00Z",
        }
    ]
    statuses = {
        p.subject_number: p.samples[0].status
        for p in participants.participants_page(ctx, COHORT, ALL_SITES).participants
    }
    assert statuses == {
        "L1-001": "received",
        "L1-002": "unusable",
        "L1-003": "missed",
        "L2-001": "shipped",
        "L2-002": "planned",
        "L2-003": "unusable",
        "L2-004": "unusable",
        "L1-004": "planned",
        "L1-005": "planned",
        "L2-005": "received",
    }
    with pytest.raises(NotFound):
        participants.participant(ctx, COHORT, "L2-001", only(ctx, "L1"))  # another site's participant
    for bad, field in (({"after": "L9-999"}, "after"), ({"site": "P1"}, "site"), ({"limit": 0}, "limit")):
        with pytest.raises(ValidationFailed) as refused:
            participants.participants_page(ctx, COHORT, ALL_SITES, **bad)  # type: ignore[arg-type]
        assert [e.field for e in refused.value.errors] == [field]


@pytest.mark.req("AUD-09")
def test_a_cohort_signs_off_only_its_own_reviews(ctx: ServiceContext, world: CohortWorld) -> None:
    """The reviews about arms, unblindings or kits do not exist for a cohort: none can be signed."""
    created = make_user(ctx, "mon-cohort", "monitor", trial=COHORT)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    monitor = Actor(
        user_id=created.user_id, username="mon-cohort", name="Mon Cohort", role="monitor", request_id="t"
    )
    period = (date(2026, 3, 1), date(2026, 3, 31))
    signed = signatures.SignatureRequest(password=GOOD_PASSWORD)
    with pytest.raises(ValidationFailed) as refused:
        audit_review.sign_review(ctx, monitor, COHORT, "arm-reads", *period, "", signed, scope=ALL_SITES)
    assert [e.field for e in refused.value.errors] == ["report"]
    done = audit_review.sign_review(
        ctx, monitor, COHORT, "off-hours", *period, "none", signed, scope=ALL_SITES
    )
    assert done.period_start == period[0]


@pytest.mark.req("REP-04")
def test_the_closing_archive_of_a_cohort_holds_its_own_reports(
    ctx: ServiceContext, world: CohortWorld
) -> None:
    """The review of the merged cohort: the archive read the randomized trial's catalogue, whose
    every report refuses a cohort, so a cohort's archive held no report at all."""
    made = archive._reports(ctx, CLI_ACTOR, COHORT)
    assert {f"reports/{name}.{fmt}" for name in COHORT_REPORTS for fmt in ("csv", "pdf")} <= set(made)
