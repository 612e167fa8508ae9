"""The cohort's tube sets (issue 20): generation, label sheets, damage, assignment at registration,
the bedside collection scan and its refusals, a missed sample. Each refusal changes nothing but its
audit entry."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

import kits as kitlib
from allocator import crypto
from allocator.audit import Actor
from allocator.db import Database
from allocator.models import (
    LabClosure,
    LabClosureWithdrawal,
    PlannedSample,
    PrintedDocument,
    Registration,
    SampleKit,
    SampleKitEvent,
    ScreeningEntry,
)
from allocator.services import lab_calendar
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.samples import collection, kits, rules
from allocator.services.subjects import register
from allocator.settings import Environment, Settings
from tests.conftest import FreshDatabase
from tests.support import (
    ALL_SITES,
    CLI_ACTOR,
    COHORT,
    COHORT_ELIGIBLE,
    Clock,
    events,
    ready_cohort,
    stock_tube_sets,
)
from tests.support.cohort import live_answers

D3_MORNING = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # 10:00 in Lyon, the planned day of L1-001's D3


def _register(ctx: ServiceContext, actor: Actor, screening: str = "L1-0001") -> register.RegistrationResult:
    return register.register(
        ctx,
        actor,
        COHORT,
        register.RegistrationRequest(site="L1", screening_number=screening, eligibility=COHORT_ELIGIBLE),
        ALL_SITES,
    )


def _label(ctx: ServiceContext, number: str, unit: str = rules.SET_UNIT, trial: str = COHORT) -> str:
    return kitlib.build_payload(trial, number, unit, rules.mac(ctx))


def _kits(ctx: ServiceContext) -> dict[str, SampleKit]:
    with ctx.db.reading() as s:
        return {k.kit_number: k for k in s.execute(select(SampleKit)).scalars()}


def _snapshot(ctx: ServiceContext) -> tuple[object, ...]:
    """Everything a refusal must leave as it was."""
    with ctx.db.reading() as s:
        kits_state = sorted(
            (k.kit_number, k.status, k.planned_sample_id, k.collected_at, k.reason)
            for k in s.execute(select(SampleKit)).scalars()
        )
        return (
            kits_state,
            s.execute(select(func.count()).select_from(SampleKitEvent)).scalar_one(),
            s.execute(select(func.count()).select_from(Registration)).scalar_one(),
            s.execute(select(func.count()).select_from(ScreeningEntry)).scalar_one(),
            s.execute(select(func.count()).select_from(PlannedSample)).scalar_one(),
        )


@pytest.mark.req("LBL-08", "LBL-11")
def test_generated_tube_sets_have_unique_checked_numbers_a_history_and_an_audit_entry(
    ctx: ServiceContext,
) -> None:
    ready_cohort(ctx, tube_sets=0)
    numbers = stock_tube_sets(ctx, 40)
    numbers += stock_tube_sets(ctx, 40)
    assert len(set(numbers)) == 80 and all(kitlib.is_valid_kit_number(n) for n in numbers)
    stored = _kits(ctx)
    assert set(stored) == set(numbers)
    assert {(k.status, k.kit_type) for k in stored.values()} == {("available", "BIOMARKER")}
    with ctx.db.reading() as s:
        history = s.execute(select(SampleKitEvent)).scalars().all()
    assert len(history) == 80 and {(e.from_status, e.to_status) for e in history} == {(None, "available")}
    assert [e.object_id for e in events(ctx, "sample_kit.generated")] == ["L1", "L1"]
    [line] = kits.stock(ctx, COHORT, ALL_SITES)
    assert (line.site, line.kit_type, line.counts["available"]) == ("L1", "BIOMARKER", 80)


@pytest.mark.req("LBL-08")
def test_a_wrong_generation_is_refused_naming_the_field_and_writes_nothing(ctx: ServiceContext) -> None:
    ready_cohort(ctx, tube_sets=0)
    for count, kit_type, field in (
        (0, "BIOMARKER", "count"),
        ("x", "BIOMARKER", "count"),
        ("1_0", "BIOMARKER", "count"),  # int() reads it as 10
        ("\u0663", "BIOMARKER", "count"),  # an Arabic-Indic 3, which int() reads too
        (5, "DRUG", "kit_type"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            kits.generate(ctx, CLI_ACTOR, COHORT, site="L1", kit_type=kit_type, count=count, scope=ALL_SITES)
        assert [e.field for e in refused.value.errors] == [field]
    with pytest.raises(NotFound):
        kits.generate(ctx, CLI_ACTOR, COHORT, site="ZZ", kit_type="BIOMARKER", count=1, scope=ALL_SITES)
    assert _kits(ctx) == {}


@pytest.mark.req("LBL-11", "LBL-12")
def test_the_label_sheet_is_recorded_and_a_reprint_is_a_duplicate(ctx: ServiceContext) -> None:
    ready_cohort(ctx, tube_sets=0)
    numbers = stock_tube_sets(ctx, 2)
    document_id, pdf = kits.print_labels(ctx, CLI_ACTOR, COHORT, numbers, scope=ALL_SITES)
    assert pdf.startswith(b"%PDF") and document_id.startswith("SLB-IMMUNOSEPSIS-4-")
    # A scanned tube's label names its set, as a typed number does.
    again, _ = kits.print_labels(
        ctx, CLI_ACTOR, COHORT, [_label(ctx, numbers[0], kitlib.sample_unit(2))], scope=ALL_SITES
    )
    with ctx.db.reading() as s:
        printed = {d.document_id: d for d in s.execute(select(PrintedDocument)).scalars()}
    assert printed[document_id].kind == "sample_labels" and sorted(printed[document_id].items) == sorted(
        numbers
    )
    assert printed[again].reprint_number == 1 and printed[again].items == [numbers[0]]
    assert kits.unprinted(ctx, COHORT, ALL_SITES) == []
    fresh = stock_tube_sets(ctx, 1)
    with pytest.raises(ValidationFailed) as mixed:  # new sets and reprints are printed apart
        kits.print_labels(ctx, CLI_ACTOR, COHORT, [fresh[0], numbers[1]], scope=ALL_SITES)
    assert mixed.value.errors[0].field == "kits"
    drug = kitlib.build_payload(COHORT, fresh[0], "K", rules.mac(ctx))
    with pytest.raises(ValidationFailed) as wrong_kind:
        kits.print_labels(ctx, CLI_ACTOR, COHORT, [drug], scope=ALL_SITES)
    assert wrong_kind.value.errors[0].message == "a drug kit's label, not a tube set's"


@pytest.mark.req("RND-05", "AUD-01")
def test_registration_assigns_a_tube_set_per_sample_and_refuses_without_stock(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx, tube_sets=0)
    before = _snapshot(ctx)
    with pytest.raises(kits.NoTubeSet) as refused:
        _register(ctx, investigator)
    assert "BIOMARKER" in refused.value.detail and refused.value.errors[0].field == "site"
    assert _snapshot(ctx) == before  # no screening entry, registration or planned sample
    [only] = stock_tube_sets(ctx, 1)
    result = _register(ctx, investigator)
    assert [s.kit_number for s in result.samples] == [only]
    kit = _kits(ctx)[only]
    assert (kit.status, kit.assigned_at) == ("assigned", ctx.now())
    with ctx.db.reading() as s:
        sample = s.execute(select(PlannedSample)).scalar_one()
    assert kit.planned_sample_id == sample.id
    view = register.registration(ctx, COHORT, result.subject_number, ALL_SITES)
    assert view.samples[0].kit_number == only and view.samples[0].status == "assigned"
    with pytest.raises(kits.NoTubeSet):  # the last set is taken
        _register(ctx, investigator, "L1-0002")


@pytest.mark.req("LBL-11")
def test_a_damaged_tube_set_is_never_assigned(ctx: ServiceContext) -> None:
    investigator = ready_cohort(ctx, tube_sets=0)
    [number] = stock_tube_sets(ctx, 1)
    with pytest.raises(ValidationFailed) as no_reason:
        kits.mark_damaged(ctx, CLI_ACTOR, COHORT, number, reason=" ", scope=ALL_SITES)
    assert [e.field for e in no_reason.value.errors] == ["reason"]
    kits.mark_damaged(ctx, CLI_ACTOR, COHORT, _label(ctx, number), reason="tube cracked", scope=ALL_SITES)
    kit = _kits(ctx)[number]
    assert (kit.status, kit.reason) == ("damaged", "tube cracked")
    with pytest.raises(kits.NoTubeSet):
        _register(ctx, investigator)
    with pytest.raises(Conflict):  # only once, and only an available set
        kits.mark_damaged(ctx, CLI_ACTOR, COHORT, number, reason="again", scope=ALL_SITES)
    [entry] = events(ctx, "sample_kit.status_changed")
    assert entry.object_id == number and entry.reason == "tube cracked"


def test_the_lifecycle_refuses_a_change_it_does_not_hold() -> None:
    kit = SampleKit(id=1, status="collected")
    with pytest.raises(Conflict):
        rules.move_sample_kit(None, kit, rules.S.ASSIGNED, CLI_ACTOR)  # type: ignore[arg-type]
    assert kit.status == "collected"


@pytest.mark.req("LBL-09", "AUD-01")
def test_the_collection_scan_records_the_time_and_the_collector(ctx: ServiceContext, clock: Clock) -> None:
    investigator = ready_cohort(ctx)
    result = _register(ctx, investigator)
    number = result.samples[0].kit_number
    assert number is not None
    clock.current = D3_MORNING
    tube = _label(ctx, number, kitlib.sample_unit(3))  # any tube of the set will do
    checked = collection.check_collection(
        ctx, investigator, COHORT, payload=tube, subject_number="l1-001", label="d3", scope=ALL_SITES
    )
    assert checked.kit_number == number and _kits(ctx)[number].status == "assigned"  # nothing recorded
    drawn = D3_MORNING - timedelta(minutes=20)
    done = collection.record_collection(
        ctx,
        investigator,
        COHORT,
        payload=tube,
        subject_number="L1-001",
        label="D3",
        scope=ALL_SITES,
        collected_at=drawn,
    )
    assert (done.subject_number, done.label, done.collected_at) == ("L1-001", "D3", drawn)
    kit = _kits(ctx)[number]
    assert (kit.status, kit.collected_at, kit.collection_recorded_at) == ("collected", drawn, D3_MORNING)
    assert (kit.collected_by_id, kit.collected_by_name) == (investigator.user_id, investigator.name)
    with ctx.db.reading() as s:
        moves = [
            (e.from_status, e.to_status)
            for e in s.execute(
                select(SampleKitEvent)
                .join(SampleKit)
                .where(SampleKit.kit_number == number)
                .order_by(SampleKitEvent.id)
            ).scalars()
        ]
    assert moves == [(None, "available"), ("available", "assigned"), ("assigned", "collected")]
    [entry] = events(ctx, "sample.collected")
    assert entry.object_id == "L1-001" and number in (entry.new_values or "")
    view = register.registration(ctx, COHORT, "L1-001", ALL_SITES)
    assert (view.samples[0].status, view.samples[0].collected_at) == ("collected", drawn)
    # A late entry needs its reason (DIB-09), as at the drug bedside.
    with pytest.raises(ValidationFailed) as late:
        collection.record_collection(
            ctx,
            investigator,
            COHORT,
            payload=tube,
            subject_number="L1-001",
            label="D3",
            scope=ALL_SITES,
            collected_at=D3_MORNING - timedelta(hours=3),
        )
    assert [e.field for e in late.value.errors] == ["late_reason"]


@pytest.mark.req("LBL-09", "AUD-01")
def test_each_refused_collection_scan_is_audited_and_changes_nothing(
    ctx: ServiceContext, clock: Clock
) -> None:
    investigator = ready_cohort(ctx, tube_sets=3)
    first = _register(ctx, investigator).samples[0].kit_number
    second = _register(ctx, investigator, "L1-0002").samples[0].kit_number
    assert first and second
    [spare] = [n for n, k in _kits(ctx).items() if k.status == "available"]
    clock.current = D3_MORNING

    def scan(payload: str, subject: str = "L1-001") -> collection.CollectionResult:
        return collection.record_collection(
            ctx, investigator, COHORT, payload=payload, subject_number=subject, label="D3", scope=ALL_SITES
        )

    before = _snapshot(ctx)
    drug = kitlib.build_payload(COHORT, first, "K", rules.mac(ctx))  # a drug kit's label
    with pytest.raises(ValidationFailed) as wrong_kind:
        scan(drug)
    assert wrong_kind.value.errors[0].message == "a drug kit's label, not a tube set's"
    with pytest.raises(ValidationFailed):
        scan(_label(ctx, first, trial="IFNG-PAIS"))  # another trial's
    with pytest.raises(collection.WrongParticipant) as other:
        scan(_label(ctx, second))  # L1-002's set
    assert (
        other.value.detail == f"STOP: tube set {kitlib.format_kit_number(second)} is not L1-001's D3 tube set"
    )
    with pytest.raises(collection.WrongParticipant) as unassigned:
        scan(_label(ctx, spare))
    assert "not assigned" in unassigned.value.detail
    clock.current = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # D2: before the window
    with pytest.raises(collection.OutsideWindow) as early:
        scan(_label(ctx, first))
    assert "planned 2026-03-04" in early.value.detail
    clock.current = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)  # 00:30 on 6 March in Lyon: after D4
    with pytest.raises(collection.OutsideWindow):
        scan(_label(ctx, first))
    assert _snapshot(ctx) == before
    causes = [e.new_values for e in events(ctx, "sample.scan_refused")]
    assert len(causes) == 6
    for cause in (
        "drug-kit-label",
        "unreadable-label",
        "wrong-participant",
        "not-assigned",
        "outside-window",
    ):
        assert any(f'"cause":"{cause}"' in (c or "") for c in causes), cause
    clock.current = D3_MORNING
    scan(_label(ctx, first))
    after = _snapshot(ctx)
    with pytest.raises(collection.AlreadyCollected):
        scan(_label(ctx, first, kitlib.sample_unit(1)))
    assert _snapshot(ctx) == after
    assert '"cause":"already-collected"' in (events(ctx, "sample.scan_refused")[-1].new_values or "")


@pytest.mark.req("AUD-01")
def test_a_missed_sample_needs_a_reason_and_is_never_collected_after(
    ctx: ServiceContext, clock: Clock
) -> None:
    investigator = ready_cohort(ctx)
    number = _register(ctx, investigator).samples[0].kit_number
    assert number
    with pytest.raises(ValidationFailed) as no_reason:
        collection.record_missed(
            ctx, investigator, COHORT, subject_number="L1-001", label="D3", reason="", scope=ALL_SITES
        )
    assert [e.field for e in no_reason.value.errors] == ["reason"]

    def miss() -> None:
        collection.record_missed(
            ctx,
            investigator,
            COHORT,
            subject_number="L1-001",
            label="D3",
            reason="patient in CT scan",
            scope=ALL_SITES,
        )

    # Missed is final: not before the sample's window opens (the review: one early click lost it).
    with pytest.raises(Conflict) as early:
        miss()
    assert [e.field for e in early.value.errors] == ["label"] and _kits(ctx)[number].status == "assigned"
    clock.current = D3_MORNING
    miss()
    kit = _kits(ctx)[number]
    assert (kit.status, kit.reason) == ("missed", "patient in CT scan")
    with pytest.raises(collection.CollectionRefused):
        collection.record_collection(
            ctx,
            investigator,
            COHORT,
            payload=_label(ctx, number),
            subject_number="L1-001",
            label="D3",
            scope=ALL_SITES,
        )
    with pytest.raises(Conflict):
        collection.record_missed(
            ctx, investigator, COHORT, subject_number="L1-001", label="D3", reason="twice", scope=ALL_SITES
        )
    assert register.registration(ctx, COHORT, "L1-001", ALL_SITES).samples[0].reason == "patient in CT scan"


@pytest.mark.req("AUD-02", "DIB-03")
def test_a_missed_record_made_by_mistake_is_withdrawn_with_a_reason_and_kept(
    ctx: ServiceContext, clock: Clock
) -> None:
    """A missed record was final: a wrong click at the bedside lost the sample for good. It is now
    withdrawn by a new, reasoned and attributed record; the first stays in the history."""
    investigator = ready_cohort(ctx)
    number = _register(ctx, investigator).samples[0].kit_number
    assert number
    clock.current = D3_MORNING

    def withdraw(reason: str) -> str:
        return collection.withdraw_missed(
            ctx, investigator, COHORT, subject_number="L1-001", label="D3", reason=reason, scope=ALL_SITES
        )

    with pytest.raises(Conflict, match="is assigned, not missed: there is nothing to withdraw"):
        withdraw("not missed")
    collection.record_missed(
        ctx,
        investigator,
        COHORT,
        subject_number="L1-001",
        label="D3",
        reason="wrong patient",
        scope=ALL_SITES,
    )
    with pytest.raises(ValidationFailed) as no_reason:
        withdraw("  ")
    assert [e.field for e in no_reason.value.errors] == ["reason"] and _kits(ctx)[number].status == "missed"
    assert withdraw("recorded on the wrong patient's page") == number
    kit = _kits(ctx)[number]
    assert (kit.status, kit.reason) == ("assigned", None)
    with ctx.db.reading() as s:
        history = s.execute(
            select(SampleKitEvent.from_status, SampleKitEvent.to_status, SampleKitEvent.reason)
            .where(SampleKitEvent.sample_kit_id == kit.id)
            .order_by(SampleKitEvent.id)
        ).all()
    assert [tuple(h) for h in history][-2:] == [
        ("assigned", "missed", "wrong patient"),
        ("missed", "assigned", "recorded on the wrong patient's page"),
    ]
    withdrawn = events(ctx, "sample_kit.status_changed")[-1]
    assert withdrawn.reason == "recorded on the wrong patient's page" and "wrong patient" in (
        withdrawn.old_values or ""
    )
    collected = collection.record_collection(
        ctx,
        investigator,
        COHORT,
        payload=_label(ctx, number),
        subject_number="L1-001",
        label="D3",
        scope=ALL_SITES,
    )
    assert collected.kit_number == number and _kits(ctx)[number].status == "collected"
    with pytest.raises(Conflict):
        withdraw("again")  # a collected sample has no missed record to withdraw


# --- two registrations on the last tube set, against a committed database -----------------------

REGISTRATIONS = 6


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    settings = Settings(env=Environment.TEST, database_url=fresh_database.url, key_dir=key_dir)
    db = Database.connect(fresh_database.url, pool_size=REGISTRATIONS)
    yield ServiceContext.build(
        settings, db, crypto.KeyRing.load(key_dir), passwords=crypto.FAST_PASSWORD_HASHING
    )
    db.dispose()


@pytest.mark.slow
@pytest.mark.req("RND-05")
def test_simultaneous_registrations_never_share_a_tube_set(live: ServiceContext) -> None:
    """Six registrations at once for two tube sets: two registered, each with its own set; four
    refused with no-tube-set, never a database error."""
    investigator = ready_cohort(live, tube_sets=2)
    answers = live_answers()  # the service runs on the real clock
    start = threading.Barrier(REGISTRATIONS)

    def attempt(index: int) -> str:
        start.wait()
        try:
            register.register(
                live,
                investigator,
                COHORT,
                register.RegistrationRequest(
                    site="L1", screening_number=f"L1-{index + 1:04d}", eligibility=answers
                ),
                ALL_SITES,
            )
        except kits.NoTubeSet:
            return "no-tube-set"
        except Exception as exc:  # anything else is the defect being tested
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(max_workers=REGISTRATIONS) as pool:
        outcomes = Counter(pool.map(attempt, range(REGISTRATIONS)))
    assert outcomes == {"ok": 2, "no-tube-set": REGISTRATIONS - 2}
    with live.db.reading() as s:
        assigned = (
            s.execute(select(SampleKit.planned_sample_id).where(SampleKit.status == "assigned"))
            .scalars()
            .all()
        )
        assert len(set(assigned)) == 2 and None not in assigned
        assert s.execute(select(func.count()).select_from(Registration)).scalar_one() == 2


@pytest.mark.slow
def test_simultaneous_closures_of_one_day_leave_one_in_force(live: ServiceContext) -> None:
    """Six people close the lab on the same day at once, then, once it is withdrawn, six close it
    again: each time one closure is recorded and five are refused as already closed, never a
    database error. Since closures can be withdrawn, nothing unique in the database keeps one per
    day: the trial row's lock does (lab_calendar.add_closure)."""
    ready_cohort(live, tube_sets=1)
    day = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()  # the service runs on the real clock

    def race() -> Counter[str]:
        start = threading.Barrier(REGISTRATIONS)

        def attempt(index: int) -> str:
            start.wait()
            try:
                lab_calendar.add_closure(live, CLI_ACTOR, COHORT, {"day": day, "reason": f"closure {index}"})
            except lab_calendar.AlreadyClosed:
                return "already-closed"
            except Exception as exc:  # anything else is the defect being tested
                return type(exc).__name__
            return "ok"

        with ThreadPoolExecutor(max_workers=REGISTRATIONS) as pool:
            return Counter(pool.map(attempt, range(REGISTRATIONS)))

    assert race() == {"ok": 1, "already-closed": REGISTRATIONS - 1}
    lab_calendar.withdraw_closure(live, CLI_ACTOR, COHORT, {"day": day, "reason": "entered on the wrong day"})
    assert race() == {"ok": 1, "already-closed": REGISTRATIONS - 1}
    with live.db.reading() as s:
        closures = (
            s.execute(select(LabClosure).where(LabClosure.day == date.fromisoformat(day))).scalars().all()
        )
        withdrawn = s.execute(select(func.count()).select_from(LabClosureWithdrawal)).scalar_one()
    assert len(closures) == 2 and withdrawn == 1
