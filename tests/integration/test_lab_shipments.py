"""Shipments of the cohort's collected samples to the central lab, their receipt by scan at the lab
and the sample accountability (issue 20, labship): each step with its audit entry and tube-set
history; every refusal names its field and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

import kits
from allocator import crypto
from allocator.models import LabShipment, LabShipmentStatus, PrintedDocument, SampleKit, SampleKitEvent
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.reports.filters import Window
from allocator.services.samples import accountability as sample_accountability
from allocator.services.samples import lab_shipments as ls
from tests.support import ALL_SITES, COHORT, Clock, events, ready_cohort
from tests.support.cohort import (
    collected_samples,
    lab_technician,
    manifest_payload,
    second_site,
    tube_set_label,
)
from tests.support.crowd import statements


def _status(ctx: ServiceContext, number: str) -> tuple[str, str | None]:
    with ctx.db.reading() as s:
        kit = s.execute(select(SampleKit).where(SampleKit.kit_number == number)).scalar_one()
        return kit.status, kit.reason


def _problems(exc: pytest.ExceptionInfo[ValidationFailed] | pytest.ExceptionInfo[Conflict]) -> dict[str, str]:
    return {p.field: p.message for p in exc.value.errors}


def _shipped(ctx: ServiceContext, n: int = 3) -> tuple[list[str], str]:
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, n)
    view = ls.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, t) for t in tubes], ALL_SITES)
    ls.ship(ctx, investigator, COHORT, view.number, ALL_SITES)
    return tubes, view.number


@pytest.mark.req("LBL-09")
def test_site_prepares_prints_and_ships_then_lab_receives_and_closes(
    ctx: ServiceContext, clock: Clock
) -> None:
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 4)
    assert {r.kit_number for r in ls.collected_samples(ctx, COHORT, ALL_SITES)} == set(tubes)
    # scanned labels and a typed number (with its check digit) mixed
    view = ls.prepare(
        ctx,
        investigator,
        COHORT,
        "L1",
        [tube_set_label(ctx, tubes[0]), tubes[1], tube_set_label(ctx, tubes[2]), tubes[3]],
        ALL_SITES,
    )
    assert view.number == "LS-0001" and view.status == "prepared" and view.sample_count == 4
    assert ls.collected_samples(ctx, COHORT, ALL_SITES) == []  # all in the shipment now
    document_id, pdf = ls.print_manifest(ctx, investigator, COHORT, "LS-0001", ALL_SITES)
    assert pdf.startswith(b"%PDF") and ls.manifest_pdf(ctx, COHORT, "LS-0001", document_id, ALL_SITES) == pdf
    with ctx.db.reading() as s:
        doc = s.execute(
            select(PrintedDocument).where(PrintedDocument.document_id == document_id)
        ).scalar_one()
        assert doc.kind == "lab_manifest" and doc.items[0] == "LS-0001" and set(doc.items[1:]) == set(tubes)
    ls.ship(ctx, investigator, COHORT, "LS-0001", ALL_SITES)
    assert {_status(ctx, t)[0] for t in tubes} == {"shipped"}

    lab = lab_technician(ctx)
    clock.advance(hours=3)  # collected 2 h before the shipment: a 5 h pre-analytical delay
    assert ls.open_receipt(ctx, COHORT, manifest_payload(ctx, "LS-0001"), ALL_SITES) == "LS-0001"
    assert ls.open_receipt(ctx, COHORT, "ls-1", ALL_SITES) == "LS-0001"  # typed
    row = ls.receive_sample(
        ctx, lab, COHORT, "LS-0001", ls.SampleOutcome(tube_set_label(ctx, tubes[0])), ALL_SITES
    )
    assert row.status == "received" and row.received_by == "Lucie Labo"
    assert (row.delay_hours, row.late) == (5.0, False)
    ls.receive_sample(
        ctx, lab, COHORT, "LS-0001", ls.SampleOutcome(tubes[1], usable=False, reason="haemolysed"), ALL_SITES
    )
    ls.receive_sample(
        ctx,
        lab,
        COHORT,
        "LS-0001",
        ls.SampleOutcome(tubes[2], usable=False, reason="other", note="tube cracked"),
        ALL_SITES,
    )
    missing = ls.close_receipt(ctx, lab, COHORT, "LS-0001", ALL_SITES)
    assert missing == (tubes[3],)
    assert _status(ctx, tubes[0]) == ("received", None)
    assert _status(ctx, tubes[1]) == ("unusable", "haemolysed")
    assert _status(ctx, tubes[2]) == ("unusable", "other: tube cracked")
    assert _status(ctx, tubes[3]) == ("unusable", "not received")
    with ctx.db.reading() as s:
        shipment = s.execute(select(LabShipment)).scalar_one()
        assert shipment.status == "received" and shipment.received_by_name == "Lucie Labo"
        kit = s.execute(select(SampleKit).where(SampleKit.kit_number == tubes[3])).scalar_one()
        history = [
            e.to_status
            for e in s.execute(
                select(SampleKitEvent)
                .where(SampleKitEvent.sample_kit_id == kit.id)
                .order_by(SampleKitEvent.id)
            ).scalars()
        ]
        # generated, assigned at registration, collected, shipped, unusable: nothing deleted
        assert history == ["available", "assigned", "collected", "shipped", "unusable"]
    assert [e.object_id for e in events(ctx, "lab_shipment.prepared")] == ["LS-0001"]
    assert [e.object_id for e in events(ctx, "lab_shipment.shipped")] == ["LS-0001"]
    assert len(events(ctx, "sample.received")) == 3
    [closed] = events(ctx, "lab_shipment.received")
    assert tubes[3] in (closed.new_values or "")
    assert [e for e in events(ctx, "document.printed") if "lab_manifest" in (e.new_values or "")]

    report = sample_accountability.accountability(ctx, COHORT, ALL_SITES)
    [site] = report.sites
    assert (site.collected, site.shipped, site.received, site.unusable, site.missing, site.in_transit) == (
        4,
        4,
        1,
        2,
        1,
        0,
    )
    assert site.unusable_reasons == {"haemolysed": 1, "other": 1}
    text = sample_accountability.accountability_csv(ctx, COHORT, ALL_SITES)
    assert text.splitlines()[0].startswith("site,subject_number,sample,tube_set,status")
    assert len(text.splitlines()) == 5 and "not received" in text


@pytest.mark.req("LBL-09")
def test_prepare_refuses_other_sites_shipped_uncollected_and_drug_kits(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 2)
    other = second_site(ctx)
    theirs = collected_samples(ctx, other, 1, "L2")
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(ctx, investigator, COHORT, "L1", [tubes[0], theirs[0]], ALL_SITES)
    assert _problems(exc) == {"tube_sets[1]": "a tube set of another site"}
    ls.prepare(ctx, investigator, COHORT, "L1", [tubes[0]], ALL_SITES)
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(ctx, investigator, COHORT, "L1", [tubes[1], tubes[0]], ALL_SITES)
    assert _problems(exc) == {"tube_sets[1]": "already in another shipment"}
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(ctx, investigator, COHORT, "L1", [tubes[1], tubes[1]], ALL_SITES)
    assert _problems(exc) == {"tube_sets[1]": "listed twice"}
    # a drug kit's label, a manifest, a label of another study: refused by what they are
    drug_label = kits.build_payload(COHORT, tubes[1], "K", lambda m: crypto.label_mac(ctx.ring, m))
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(ctx, investigator, COHORT, "L1", [drug_label], ALL_SITES)
    assert _problems(exc) == {"tube_sets[0]": "a drug kit's label, not a tube set's"}
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(ctx, investigator, COHORT, "L1", [manifest_payload(ctx, "LS-0001")], ALL_SITES)
    assert _problems(exc) == {"tube_sets[0]": "a shipment manifest, not a tube set"}
    with pytest.raises(ValidationFailed) as exc:
        ls.prepare(
            ctx, investigator, COHORT, "L1", [tube_set_label(ctx, tubes[1], trial="IFNG-PAIS")], ALL_SITES
        )
    assert _problems(exc) == {"tube_sets[0]": "a label of another study"}
    # a site-scoped investigator cannot ship from another site
    with pytest.raises(NotFound):
        ls.prepare(ctx, other, COHORT, "L1", [tubes[1]], Scope(all_sites=False, site_ids=frozenset({999})))
    with ctx.db.reading() as s:
        assert s.execute(select(LabShipment.number)).scalars().all() == ["LS-0001"]  # nothing else written


@pytest.mark.req("LBL-09")
def test_receipt_refuses_other_shipment_already_received_and_foreign_manifests(ctx: ServiceContext) -> None:
    tubes, number = _shipped(ctx, 2)
    lab = lab_technician(ctx)
    ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tubes[0]), ALL_SITES)
    with pytest.raises(Conflict) as conflict:
        ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tubes[0]), ALL_SITES)
    assert _problems(conflict) == {"tube_set": "already scanned: received"}
    with pytest.raises(ValidationFailed) as exc:
        ls.receive_sample(
            ctx, lab, COHORT, number, ls.SampleOutcome(tubes[1], usable=False, reason="other"), ALL_SITES
        )
    assert _problems(exc) == {"note": "say why the sample is unusable"}
    with pytest.raises(ValidationFailed) as exc:
        ls.receive_sample(
            ctx, lab, COHORT, number, ls.SampleOutcome(tubes[1], usable=False, reason="ugly"), ALL_SITES
        )
    assert set(_problems(exc)) == {"reason"}
    drug_label = kits.build_payload(COHORT, tubes[1], "K", lambda m: crypto.label_mac(ctx.ring, m))
    with pytest.raises(ValidationFailed) as exc:
        ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(drug_label), ALL_SITES)
    assert _problems(exc) == {"tube_set": "a drug kit's label, not a tube set's"}
    # a tube set of another shipment
    investigator_tubes = collected_samples(ctx, _investigator(ctx), 1)
    other = ls.prepare(ctx, _investigator(ctx), COHORT, "L1", investigator_tubes, ALL_SITES)
    ls.ship(ctx, _investigator(ctx), COHORT, other.number, ALL_SITES)
    with pytest.raises(ValidationFailed) as exc:
        ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(investigator_tubes[0]), ALL_SITES)
    assert _problems(exc) == {"tube_set": "not in this shipment"}
    assert _status(ctx, tubes[1]) == ("shipped", None)  # nothing changed by the refusals
    # manifests: of another study, forged, a kit label, a shipment not in transit
    for raw, message in (
        (manifest_payload(ctx, number, trial="IFNG-PAIS"), "a manifest of another study"),
        (
            manifest_payload(ctx, number)[:-4] + "AAAA",
            "the manifest's security code is wrong: not printed by this service, or altered",
        ),
        (tube_set_label(ctx, tubes[1]), "a kit label, not a shipment manifest"),
        ("hello", "scan the manifest's QR or type its number (LS-0001)"),
    ):
        with pytest.raises(ValidationFailed) as exc:
            ls.open_receipt(ctx, COHORT, raw, ALL_SITES)
        assert _problems(exc) == {"manifest": message}, raw
    with pytest.raises(NotFound):
        ls.open_receipt(ctx, COHORT, "LS-0099", ALL_SITES)
    ls.close_receipt(ctx, lab, COHORT, number, ALL_SITES)
    with pytest.raises(Conflict) as conflict:
        ls.open_receipt(ctx, COHORT, number, ALL_SITES)
    assert _problems(conflict) == {"manifest": "the shipment is received, not in transit"}
    with pytest.raises(Conflict):
        ls.close_receipt(ctx, lab, COHORT, number, ALL_SITES)
    with pytest.raises(Conflict):
        ls.ship(ctx, lab, COHORT, number, ALL_SITES)


def _investigator(ctx: ServiceContext):  # type: ignore[no-untyped-def]
    from allocator.audit import Actor
    from allocator.models import User

    with ctx.db.reading() as s:
        user = s.execute(select(User).where(User.username == "inv-l1")).scalar_one()
        return Actor(user_id=user.id, username="inv-l1", name="Inv-L1", role="investigator", site_code="L1")


def test_a_late_sample_is_flagged_and_accounted(ctx: ServiceContext, clock: Clock) -> None:
    tubes, number = _shipped(ctx, 2)
    lab = lab_technician(ctx)
    clock.advance(hours=30)  # collected 2 h before: 32 h, beyond the 24 h limit
    row = ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tubes[0]), ALL_SITES)
    assert (row.delay_hours, row.late) == (32.0, True)
    report = sample_accountability.accountability(ctx, COHORT, ALL_SITES)
    assert report.max_delay_hours == 24
    [site] = report.sites
    assert (site.received, site.in_transit, site.late) == (1, 1, 1)


def test_samples_of_a_randomized_trial_do_not_exist(ctx: ServiceContext) -> None:
    from tests.support import load_ifn

    load_ifn(ctx)
    with pytest.raises(Conflict):
        sample_accountability.accountability(ctx, "IFNG-PAIS", ALL_SITES)


def test_the_lab_technician_role_is_for_a_whole_observational_study_only(ctx: ServiceContext) -> None:
    from tests.support import load_cohort, load_ifn, make_user

    load_ifn(ctx)
    load_cohort(ctx)
    with pytest.raises(ValidationFailed) as exc:
        make_user(ctx, "lab-ifn", "lab_technician", trial="IFNG-PAIS")
    assert _problems(exc) == {"role": "is for an observational study (its central lab)"}
    with pytest.raises(ValidationFailed) as exc:
        make_user(ctx, "lab-l1", "lab_technician", trial=COHORT, site="L1")
    assert _problems(exc) == {"site": "the lab_technician role cannot be limited to a site"}
    assert make_user(ctx, "lab-ok", "lab_technician", trial=COHORT).user_id


def test_a_sample_a_few_minutes_beyond_the_limit_is_late(ctx: ServiceContext, clock: Clock) -> None:
    """The review of the merged cohort: the delay was rounded to a tenth of an hour before it was
    compared with the limit, so 24 h 02 min (shown 24.0 h) was not late."""
    tubes, number = _shipped(ctx, 2)
    lab = lab_technician(ctx)
    clock.advance(hours=22, minutes=2)  # collected 2 h before the shipment: 24 h 02 min
    row = ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tubes[0]), ALL_SITES)
    assert (row.delay_hours, row.late) == (24.0, True)


def test_nothing_of_the_samples_changes_once_the_database_is_locked(ctx: ServiceContext) -> None:
    """The review of the merged cohort: shipments could be prepared, shipped and received, and
    samples recorded missing, in a locked study."""
    from allocator.models import Trial
    from allocator.services.lookups import TrialLocked

    tubes, number = _shipped(ctx, 2)
    lab = lab_technician(ctx)
    with ctx.db.unit_of_work() as s:
        s.execute(select(Trial).where(Trial.code == COHORT)).scalar_one().status = "locked"
    with pytest.raises(TrialLocked):
        ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tubes[0]), ALL_SITES)
    with pytest.raises(TrialLocked):
        ls.close_receipt(ctx, lab, COHORT, number, ALL_SITES)
    assert [r.status for r in ls.shipment(ctx, COHORT, number, ALL_SITES).samples] == ["shipped", "shipped"]


@pytest.mark.req("REP-08")
def test_the_shipments_list_costs_the_same_statements_with_more_shipments(ctx: ServiceContext) -> None:
    """The list read each shipment's site and tube sets apart: two statements more per shipment."""
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 3)

    def listed() -> tuple[int, list[tuple[str, list[str]]]]:
        with statements(ctx.db) as seen:
            views = ls.shipments(ctx, COHORT, ALL_SITES).shipments
        return seen.count, [(v.number, [row.kit_number for row in v.samples]) for v in views]

    ls.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, tubes[0])], ALL_SITES)
    one, first = listed()
    for tube in tubes[1:]:
        ls.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, tube)], ALL_SITES)
    three, shown = listed()
    assert three == one, (one, three)
    assert shown == [("LS-0003", [tubes[2]]), ("LS-0002", [tubes[1]]), *first]  # newest first, each its own
    assert first == [("LS-0001", [tubes[0]])]


@pytest.mark.req("REP-08")
def test_the_shipments_list_is_a_page_newest_first_narrowed_to_a_status_and_the_readers_sites(
    ctx: ServiceContext,
) -> None:
    """Issue 21: a cohort ships for years; the lab shipments page and the lab's list of shipments
    on their way read a page, newest first, with the number to start the older page from; the
    receipt's list reads no tube set; a cursor outside the reader's sites reads as unknown."""
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 5)
    for tube in tubes:
        ls.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, tube)], ALL_SITES)
    for number in ("LS-0002", "LS-0004"):
        ls.ship(ctx, investigator, COHORT, number, ALL_SITES)

    def numbers(page: ls.LabShipmentPage) -> list[str]:
        return [v.number for v in page.shipments]

    first = ls.shipments(ctx, COHORT, ALL_SITES, limit=2)
    assert (numbers(first), first.next_before) == (["LS-0005", "LS-0004"], "LS-0004")
    second = ls.shipments(ctx, COHORT, ALL_SITES, limit=2, before=first.next_before)
    assert (numbers(second), second.next_before) == (["LS-0003", "LS-0002"], "LS-0002")
    last = ls.shipments(ctx, COHORT, ALL_SITES, limit=2, before=" ls-0002 ")
    assert (numbers(last), last.next_before) == (["LS-0001"], None)
    assert [v.samples[0].kit_number for v in last.shipments] == [tubes[0]]
    with statements(ctx.db) as seen:
        on_the_way = ls.shipments(ctx, COHORT, ALL_SITES, status=LabShipmentStatus.SHIPPED, samples=False)
    assert numbers(on_the_way) == ["LS-0004", "LS-0002"] and on_the_way.next_before is None
    assert all(v.samples == () for v in on_the_way.shipments)
    assert not [sql for sql in seen.sql if "sample_kit" in sql], "the receipt's list read tube sets"
    elsewhere = Scope(all_sites=False, site_ids=frozenset({10**6}))
    assert ls.shipments(ctx, COHORT, elsewhere).shipments == ()
    for arguments, scope in (
        ({"before": "LS-0099"}, ALL_SITES),
        ({"before": "LS-0003"}, elsewhere),
        ({"limit": 0}, ALL_SITES),
        ({"limit": ls.MAX_LAB_SHIPMENT_PAGE + 1}, ALL_SITES),
    ):
        with pytest.raises(ValidationFailed) as refused:
            ls.shipments(ctx, COHORT, scope, **arguments)  # type: ignore[arg-type]
        assert list(_problems(refused)) == [next(iter(arguments))], arguments


@pytest.mark.req("UNB-10", "AUD-01")
def test_the_study_opens_with_its_first_site_and_its_database_can_be_locked(ctx: ServiceContext) -> None:
    """An observational study has no randomization list, whose activation makes a trial active: it
    stayed in set-up for good, and its database lock (active to locked) could never be signed."""
    from allocator.audit import Actor
    from allocator.services import auth, signatures, sites
    from allocator.services.closeout import state
    from tests.support import GOOD_PASSWORD, HERE, make_user

    ready_cohort(ctx)
    opened = events(ctx, "trial.status_changed")
    assert [(e.object_id, e.reason) for e in opened] == [
        (COHORT, "first site activated (L1): recruitment open")
    ]
    second_site(ctx)  # a second site activated: the study is open already, nothing more recorded
    assert len(events(ctx, "trial.status_changed")) == 1
    assert [s.status for s in sites.sites(ctx, COHORT)] == ["active", "active"]
    created = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    manager = Actor(created.user_id, "tm-cohort", "TM", "trial_manager", None, "test")
    step = state.lock(
        ctx, manager, COHORT, reason="database lock", signature=signatures.SignatureRequest(GOOD_PASSWORD)
    )
    assert (step.from_status, step.to_status) == ("active", "locked")


@pytest.mark.req("UNB-10", "AUD-01")
def test_a_cohort_whose_sites_were_active_before_studies_opened_is_opened_at_its_lock(
    ctx: ServiceContext,
) -> None:
    """A study deployed before studies opened with their first site stays in set-up with its sites
    active: its lock opens it first (audited), then is signed."""
    from allocator.audit import Actor
    from allocator.models import Trial
    from allocator.services import auth, signatures
    from allocator.services.closeout import state
    from tests.support import GOOD_PASSWORD, HERE, make_user

    ready_cohort(ctx)
    with ctx.db.unit_of_work() as s:  # as such a study is
        s.execute(select(Trial).where(Trial.code == COHORT)).scalar_one().status = "setup"
    created = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    manager = Actor(created.user_id, "tm-cohort", "TM", "trial_manager", None, "test")
    step = state.lock(
        ctx, manager, COHORT, reason="database lock", signature=signatures.SignatureRequest(GOOD_PASSWORD)
    )
    assert (step.from_status, step.to_status) == ("active", "locked")
    reasons = [e.reason for e in events(ctx, "trial.status_changed")]
    assert reasons[-2:] == ["recruitment open: a site was active already", "database lock"]


def _counts_from_rows(report: sample_accountability.Accountability) -> dict[str, tuple[int, ...]]:
    """The per-site counts as the page made them before issue 21: from every listed sample."""
    out: dict[str, list[int]] = {}
    for row in report.samples:
        c = out.setdefault(row.site, [0] * 8)
        c[0] += 1
        if row.status == "collected":
            c[1] += 1
            continue
        c[2] += row.shipment is not None
        c[3] += row.status == "shipped"
        c[4] += row.status == "received"
        c[5] += row.status == "unusable" and row.reason != ls.NOT_RECEIVED
        c[6] += row.status == "unusable" and row.reason == ls.NOT_RECEIVED
        c[7] += row.late
    return {site: tuple(c) for site, c in out.items()}


def _counts(report: sample_accountability.Accountability) -> dict[str, tuple[int, ...]]:
    return {
        s.site: (
            s.collected,
            s.awaiting_shipment,
            s.shipped,
            s.in_transit,
            s.received,
            s.unusable,
            s.missing,
            s.late,
        )
        for s in report.sites
    }


@pytest.mark.req("REP-08")
def test_the_accountability_counts_in_the_database_what_the_rows_say_to_the_microsecond(
    ctx: ServiceContext, clock: Clock
) -> None:
    """Issue 21: the counts per site are made in one grouped statement, and the page lists a window
    of the samples (the CSV every one). The database judges a delay beyond the limit exactly as the
    rows do: received at the limit to the microsecond is not late, a microsecond later is; a
    collection at .9996 s (which SQLite's date functions would round up to the next second) too."""
    tubes, number = _shipped(ctx, 5)
    lab = lab_technician(ctx)
    collected = clock.current.replace(hour=1, minute=2, second=3, microsecond=999_600)
    with ctx.db.unit_of_work() as s:
        for kit in s.execute(select(SampleKit).where(SampleKit.kit_number.in_(tubes))).scalars():
            kit.collected_at = collected
    limit = timedelta(hours=24)
    for tube, received in (
        (tubes[0], collected + limit),  # at the limit: not late
        (tubes[1], collected + limit + timedelta(microseconds=1)),  # beyond it
        (tubes[2], collected + limit - timedelta(microseconds=1)),
        (tubes[3], collected + timedelta(hours=30)),
    ):
        clock.current = received
        ls.receive_sample(ctx, lab, COHORT, number, ls.SampleOutcome(tube), ALL_SITES)
    report = sample_accountability.accountability(ctx, COHORT, ALL_SITES)
    assert {r.kit_number: r.late for r in report.samples if r.status == "received"} == {
        tubes[0]: False,
        tubes[1]: True,
        tubes[2]: False,
        tubes[3]: True,
    }
    assert _counts(report) == _counts_from_rows(report) == {"L1": (5, 0, 5, 1, 4, 0, 0, 2)}
    if ctx.db.is_sqlite:
        # From the review: times stored without decimals (raw SQL) are compared as if they had
        # them. Collected at 01:02:03 and received exactly 24 h later: not late (a bare text
        # comparison said "…03.000000" > "…03").
        with ctx.db.unit_of_work() as s:
            s.execute(
                text(
                    "UPDATE sample_kit SET collected_at = substr(collected_at, 1, 19), "
                    "received_at = substr(received_at, 1, 19) || '.000000' WHERE kit_number = :n"
                ),
                {"n": tubes[0]},
            )
        again = sample_accountability.accountability(ctx, COHORT, ALL_SITES)
        assert [r.late for r in again.samples if r.kit_number == tubes[0]] == [False]
        assert _counts(again) == _counts_from_rows(again) == {"L1": (5, 0, 5, 1, 4, 0, 0, 2)}

    # More sites and states: still the same counts as the rows give, and a window is a slice.
    investigator = _investigator(ctx)
    more = collected_samples(ctx, investigator, 4)
    view = ls.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, t) for t in more[:3]], ALL_SITES)
    ls.ship(ctx, investigator, COHORT, view.number, ALL_SITES)
    ls.receive_sample(
        ctx, lab, COHORT, view.number, ls.SampleOutcome(more[0], usable=False, reason="haemolysed"), ALL_SITES
    )
    ls.close_receipt(ctx, lab, COHORT, view.number, ALL_SITES)  # more[1], more[2]: not received
    report = sample_accountability.accountability(ctx, COHORT, ALL_SITES)
    assert _counts(report) == _counts_from_rows(report)
    assert _counts(report)["L1"] == (9, 1, 8, 1, 4, 1, 2, 2)
    assert report.sites[0].unusable_reasons == {"haemolysed": 1}
    window = Window(2, 3)
    paged = sample_accountability.accountability(ctx, COHORT, ALL_SITES, window=window)
    assert paged.samples == report.samples[2:5] and paged.sites == report.sites and paged.window == window
    assert sample_accountability.accountability(ctx, COHORT, ALL_SITES, window=Window(8, 3)).samples == (
        report.samples[8],
    )
