"""The order in which use cases lock rows, against a committed PostgreSQL database (the closing note
of 2026-12-05: a return or destruction locked its kits, then the site's row; a randomization at the
same site locks the site's row, then the kits it draws: two transactions each holding what the
other waits for, a deadlock, one of them refused). Every use case that takes a site's row and some
of its kits now takes the site's row first.

The test holds a site's row as a randomization does, starts a return of one of the site's kits
beside it, and checks from a third connection that the kit is not locked while the return waits:
on the old order the return held the kit (the NOWAIT lock failed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from allocator.audit import Actor
from allocator.models import Kit, KitStatus, Shipment, Site, Trial
from allocator.permissions import Scope
from allocator.services import dispensing, signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict
from allocator.services.supply import disposal, excursions, kit_lists, kit_status, shipments
from tests.conftest import FreshDatabase
from tests.support import (
    CLI_ACTOR,
    GOOD_PASSWORD,
    code_break_sheets,
    committed_context,
    load_ifn,
    person,
    randomized_now,
    ready_trial,
    waiting_for_a_row_lock,
)

pytestmark = pytest.mark.slow
TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    with committed_context(fresh_database.url, key_dir, pool_size=4) as ctx:
        yield ctx


@pytest.mark.req("LBL-11")
def test_a_return_waits_for_the_site_before_it_locks_any_kit(live: ServiceContext, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    returned = _kit_number(live, kit_id)
    outcome = _waits_for_the_site(
        live,
        site_id,
        [kit_id],
        lambda: disposal.record(live, pharmacist, TRIAL, "return", [returned], method="courier", scope=ALL),
    )
    assert "error" not in outcome, outcome.get("error")
    assert _kit_status(live, kit_id) == KitStatus.RETURNED.value


def _stocked_site(live: ServiceContext) -> tuple[Actor, int, int]:
    """P1 holding 4 available kits; returns its pharmacist, the site's id and one kit's id."""
    load_ifn(live)
    kit_lists.generate_kit_list(
        live,
        CLI_ACTOR,
        TRIAL,
        count=12,
        lot_code="LOT-1",
        expiry=datetime.now(UTC).date() + timedelta(days=400),
    )
    code_break_sheets(live)
    manager = person(live, "tman", "trial_manager")
    pharmacist = person(live, "pharma-p1", "pharmacist", "P1")
    view = shipments.create_shipment(live, manager, TRIAL, "P1", 4)
    shipments.ship(live, manager, TRIAL, view.number)
    shipments.receive(live, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL)
    with live.db.write_engine.connect() as probe:
        kit_id, site_id = probe.execute(
            select(Kit.id, Kit.site_id).where(Kit.kit_number == view.kits[0])
        ).one()
    assert site_id is not None
    return pharmacist, site_id, kit_id


def _report_now(live: ServiceContext, pharmacist: Actor, shipment: str = "") -> excursions.ExcursionView:
    """An excursion reported at P1's refrigerator, or in `shipment`."""
    return excursions.report_excursion(
        live,
        pharmacist,
        TRIAL,
        place="shipment" if shipment else "site",
        site_code="" if shipment else "P1",
        shipment_number=shipment,
        minimum="2",
        maximum="14",
        duration_minutes="240",
        note="door left open",
        logger=excursions.LoggerFile("fridge.csv", b"t,c\n1,14\n"),
        scope=ALL,
        signature=SIGNED,
    )


def _report(
    live: ServiceContext, pharmacist: Actor, outcome: dict[str, object], shipment: str = ""
) -> threading.Thread:
    """`_report_now` in a thread of its own, started; its view (or error) put in `outcome`."""

    def run() -> None:
        try:
            outcome["view"] = _report_now(live, pharmacist, shipment)
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    return worker


def _by_hand(live: ServiceContext, actor: Actor, number: str, to: str, reason: str) -> None:
    """A kit's status changed by hand (signed, as a quarantine and its end are)."""
    kit_status.change_status(
        live, actor, TRIAL, number, to, reason=reason, scope=ALL, depot=False, signature=SIGNED
    )


def _kit_number(live: ServiceContext, kit_id: int) -> str:
    with live.db.write_engine.connect() as probe:
        return probe.execute(select(Kit.kit_number).where(Kit.id == kit_id)).scalar_one()


def _kit_status(live: ServiceContext, kit_id: int) -> str:
    with live.db.write_engine.connect() as probe:
        return probe.execute(select(Kit.status).where(Kit.id == kit_id)).scalar_one()


@pytest.mark.req("LBL-05")
def test_an_excursion_report_waits_for_the_site_before_it_locks_any_kit(
    live: ServiceContext, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    outcome = _waits_for_the_site(live, site_id, [kit_id], lambda: _report_now(live, pharmacist))
    assert "error" not in outcome, outcome.get("error")
    assert _kit_status(live, kit_id) == KitStatus.QUARANTINED.value


@pytest.mark.req("LBL-05")
def test_an_excursion_report_does_not_wait_for_the_randomizations_of_the_trial(
    live: ServiceContext, backend: str
) -> None:
    """A randomization's inserts that refer to the trial hold a key-share lock on the trial's row
    until it commits; the report's numbering lock must not wait for it (it did: FOR UPDATE)."""
    if backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, _site_id, _kit_id = _stocked_site(live)
    engine = live.db.write_engine
    outcome: dict[str, object] = {}
    with engine.connect() as randomization:
        randomization.execute(text("SELECT id FROM trial WHERE code = :c FOR KEY SHARE"), {"c": TRIAL})
        worker = _report(live, pharmacist, outcome)
        worker.join(timeout=15)
        finished = not worker.is_alive()
        randomization.rollback()
    worker.join(timeout=30)
    assert finished, "the report waited for a transaction that merely refers to the trial"
    assert "error" not in outcome, outcome.get("error")


@pytest.mark.req("LBL-05")
@pytest.mark.parametrize("parcel", ["received", "in transit"])
def test_a_shipment_s_excursion_waits_for_its_site_before_it_locks_its_kits_or_the_trial(
    live: ServiceContext, backend: str, parcel: str
) -> None:
    """A closing note of 2026-12-06: the report on a shipment locked the shipment's kits and the
    trial's row (its number), and only then its destination's row (resupply, at the end). A
    randomization holds the site and waits for the kits it draws (a received shipment's kits are
    the site's stock); a return holds the site and its kits, then waits for the trial's row for its
    document number: two orders, a deadlock waiting to happen. Now the report takes the site
    first, like both of them, and holds nothing else while it waits for it."""
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    engine = live.db.write_engine
    if parcel == "in transit":
        manager = person(live, "tman-2", "trial_manager")
        view = shipments.create_shipment(live, manager, TRIAL, "P1", 4)
        shipments.ship(live, manager, TRIAL, view.number)
        with engine.connect() as probe:
            kit_id = probe.execute(select(Kit.id).where(Kit.kit_number == view.kits[0])).scalar_one()
    with engine.connect() as probe:
        number = probe.execute(
            select(Shipment.number).join(Kit, Kit.shipment_id == Shipment.id).where(Kit.id == kit_id)
        ).scalar_one()
    outcome = _waits_for_the_site(
        live, site_id, [kit_id], lambda: _report_now(live, pharmacist, number), trial_too=True
    )
    assert "error" not in outcome, outcome.get("error")
    assert _kit_status(live, kit_id) == KitStatus.QUARANTINED.value


def _waits_for_the_site(
    live: ServiceContext,
    site_id: int,
    kit_ids: list[int],
    work: Callable[[], object],
    *,
    trial_too: bool = False,
) -> dict[str, object]:
    """Hold the site's row as a randomization does, run `work` beside it, and check from a third
    connection that while it waits it holds none of `kit_ids` (nor, with `trial_too`, the trial's
    row for a number); then let it go. Returns its outcome ("done" or "error")."""
    engine = live.db.write_engine
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["done"] = work()
        except Exception as exc:
            outcome["error"] = exc

    with engine.connect() as holder:
        holder.execute(select(Site.id).where(Site.id == site_id).with_for_update())
        worker = threading.Thread(target=run)
        worker.start()
        assert waiting_for_a_row_lock(live), outcome  # it reached the site's row and waits for it
        assert worker.is_alive() and not outcome, outcome
        with engine.connect() as other:
            other.execute(text("SET lock_timeout = '200ms'"))
            for kit_id in kit_ids:
                assert (
                    other.execute(
                        select(Kit.id).where(Kit.id == kit_id).with_for_update(nowait=True)
                    ).scalar_one()
                    == kit_id
                )
            if trial_too:
                other.execute(
                    select(Trial.id).where(Trial.code == TRIAL).with_for_update(nowait=True, key_share=True)
                ).one()
            other.rollback()
        holder.rollback()
    worker.join(timeout=30)
    assert not worker.is_alive()
    return outcome


@pytest.mark.req("LBL-05")
def test_a_kit_s_status_change_waits_for_its_site_before_it_locks_the_kit(
    live: ServiceContext, backend: str
) -> None:
    """Found by the review of the shipment report's order: a quarantine by hand locked the kit, then
    its event's reference to the site waited for the site (key share), while a report on the kit's
    shipment held the site and waited for the kit: a deadlock. The kit's site comes first now."""
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    number = _kit_number(live, kit_id)
    outcome = _waits_for_the_site(
        live,
        site_id,
        [kit_id],
        lambda: _by_hand(live, pharmacist, number, "quarantined", "dropped"),
    )
    assert "error" not in outcome, outcome.get("error")
    assert _kit_status(live, kit_id) == KitStatus.QUARANTINED.value


@pytest.mark.req("LBL-05")
def test_a_shipment_s_excursion_and_a_quarantine_by_hand_of_one_of_its_kits_do_not_deadlock(
    live: ServiceContext, backend: str
) -> None:
    """The review's reproduction: the report waits for the site (held by a randomization, say) and
    a quarantine by hand of one of the shipment's kits starts; once the site is free both finish,
    the second refused in words if the report quarantined the kit first."""
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    engine = live.db.write_engine
    with engine.connect() as probe:
        shipment, number = probe.execute(
            select(Shipment.number, Kit.kit_number)
            .join(Kit, Kit.shipment_id == Shipment.id)
            .where(Kit.id == kit_id)
        ).one()
    report: dict[str, object] = {}
    manual: dict[str, object] = {}

    def quarantine() -> None:
        try:
            _by_hand(live, pharmacist, number, "quarantined", "dropped")
            manual["done"] = True
        except Exception as exc:
            manual["error"] = exc

    with engine.connect() as holder:
        holder.execute(select(Site.id).where(Site.id == site_id).with_for_update())
        first = _report(live, pharmacist, report, shipment=shipment)
        time.sleep(1.0)
        second = threading.Thread(target=quarantine)
        second.start()
        time.sleep(1.0)
        holder.rollback()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert "error" not in report, report.get("error")
    assert "done" in manual or isinstance(manual.get("error"), Conflict), manual


@pytest.mark.req("UNB-01", "ACC-12")
def test_a_dispensing_and_an_emergency_unblinding_of_its_subject_do_not_deadlock(
    live: ServiceContext, backend: str
) -> None:
    """Found by the review of a first version of the kit status change's order, which also had a
    dispensing lock its site after its subject: an unblinding's insert takes the site's row, then
    the subject's, key-share (its foreign keys, in that order), so a dispensing holding the subject
    and waiting for the site FOR UPDATE deadlocked with it. A dispensing takes its subject, then its
    allocated kits, and refers to the site key-share only (its kits' events): kept as a guard."""
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    ready = ready_trial(live)
    result = randomized_now(live, ready)
    engine = live.db.write_engine
    with engine.connect() as probe:
        site_id = probe.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    first = result.kits[0]
    outcome: dict[str, object] = {}

    def dispense() -> None:
        try:
            outcome["dispensed"] = dispensing.dispense(
                live,
                ready.pharmacist,
                TRIAL,
                result.subject_number,
                {first.day: first.kit_number},
                scope=ALL,
                signature=SIGNED,
            )
        except Exception as exc:
            outcome["dispensing"] = exc

    def unblind() -> None:
        try:
            outcome["unblinded"] = unblinding.emergency_unblind(
                live,
                ready.investigator,
                TRIAL,
                result.subject_number,
                reason_category="serious_adverse_event",
                reason="Anaphylaxis after D1.",
                confirmed=True,
                signature=SIGNED,
                scope=ALL,
            )
        except Exception as exc:
            outcome["unblinding"] = exc

    with engine.connect() as other:  # an administration's uncommitted kit event at the site, say
        other.execute(text("SELECT id FROM site WHERE id = :i FOR KEY SHARE"), {"i": site_id})
        first_worker = threading.Thread(target=dispense)
        first_worker.start()
        time.sleep(1.0)
        second_worker = threading.Thread(target=unblind)
        second_worker.start()
        time.sleep(1.0)
        other.rollback()
    first_worker.join(30)
    second_worker.join(30)
    assert not first_worker.is_alive() and not second_worker.is_alive()
    assert "dispensing" not in outcome and "unblinding" not in outcome, outcome


@pytest.mark.req("LBL-05")
def test_a_status_change_of_a_quarantined_kit_and_the_sponsor_s_decision_do_not_deadlock(
    live: ServiceContext, backend: str
) -> None:
    """Found by the third review: a change by hand of a quarantined kit takes its site first, while
    the sponsor's decision on the excursion locked the kits first and then referred to the site
    (its kits' events, key share). The decision takes the site before the kits now. Either order
    of arrival: the change waits for the site, the decision then for the change."""
    if backend != "postgresql":
        pytest.skip("row locks and deadlocks are PostgreSQL's (SQLite serializes writers)")
    pharmacist, site_id, kit_id = _stocked_site(live)
    manager = person(live, "tman-2", "trial_manager")
    reported: dict[str, object] = {}
    _report(live, pharmacist, reported).join(30)
    assert "error" not in reported, reported
    engine = live.db.write_engine
    with engine.connect() as probe:
        number, status = probe.execute(select(Kit.kit_number, Kit.status).where(Kit.id == kit_id)).one()
    assert status == KitStatus.QUARANTINED.value
    changed: dict[str, object] = {}
    decided: dict[str, object] = {}

    def change() -> None:
        try:
            changed["done"] = _by_hand(live, pharmacist, number, "damaged", "broken")
        except Exception as exc:
            changed["error"] = exc

    def decide() -> None:
        try:
            decided["moved"] = excursions.decide_excursion(
                live, manager, TRIAL, "EXC-0001", "release", reason="within limits", signature=SIGNED
            )
        except Exception as exc:
            decided["error"] = exc

    with engine.connect() as holder:
        holder.execute(select(Site.id).where(Site.id == site_id).with_for_update())
        first = threading.Thread(target=change)
        first.start()
        assert waiting_for_a_row_lock(live)
        second = threading.Thread(target=decide)
        second.start()
        time.sleep(1.0)
        holder.rollback()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert "error" not in decided, decided  # the decision went through
    assert decided["moved"] == 4
    # the change by hand was refused in words (the kit awaited the decision), or came after the
    # decision and damaged the released kit
    assert "done" in changed or isinstance(changed.get("error"), Conflict), changed
