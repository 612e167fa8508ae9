"""Review of issue 19: the sponsor's decision on a shipment's excursion at the same moment as the
shipment's receipt, against a committed database. Before the fix the decision read the shipment
without locking it: on PostgreSQL the released kits could end "in_transit" inside a received
shipment. The decision now locks the shipment before its kits, as the receipt does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from allocator.models import Kit, Shipment
from allocator.permissions import Scope
from allocator.services import signatures
from allocator.services.context import ServiceContext
from allocator.services.supply import excursions, kit_lists, resupply, shipments
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, GOOD_PASSWORD, code_break_sheets, committed_context, load_ifn, person

pytestmark = pytest.mark.slow
TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    with committed_context(fresh_database.url, key_dir, pool_size=4) as ctx:
        yield ctx


@pytest.mark.req("LBL-05")
def test_a_release_racing_the_receipt_leaves_every_kit_available_in_the_received_shipment(
    live: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_ifn(live)
    kit_lists.generate_kit_list(
        live,
        CLI_ACTOR,
        TRIAL,
        count=24,
        lot_code="LOT-1",
        expiry=datetime.now(UTC).date() + timedelta(days=400),
    )
    code_break_sheets(live)
    view = shipments.create_shipment(live, CLI_ACTOR, TRIAL, "P1", 6)
    shipments.ship(live, CLI_ACTOR, TRIAL, view.number)
    pharmacist = person(live, "pharma-p1", "pharmacist", "P1")
    manager = person(live, "tman", "trial_manager")
    signed = signatures.SignatureRequest(password=GOOD_PASSWORD)
    excursions.report_excursion(
        live,
        pharmacist,
        TRIAL,
        place="shipment",
        shipment_number=view.number,
        minimum="2",
        maximum="15",
        duration_minutes="300",
        note="",
        logger=excursions.LoggerFile("l.csv", b"t,c\n1,15\n"),
        scope=ALL,
        signature=signed,
    )
    slow = threading.local()
    real = resupply.after_stock_change

    def dawdling(*args: Any, **kwargs: Any) -> None:  # the decision pauses after moving its kits
        if getattr(slow, "on", False):
            time.sleep(1.5)
        real(*args, **kwargs)

    monkeypatch.setattr(resupply, "after_stock_change", dawdling)

    def decide() -> int:
        slow.on = True
        return excursions.decide_excursion(
            live, manager, TRIAL, "EXC-0001", "release", reason="stable", signature=signed
        )

    def receive() -> shipments.Receipt:
        time.sleep(0.5)  # while the decision holds its locks
        return shipments.receive(live, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL)

    with ThreadPoolExecutor(max_workers=2) as pool:
        decided, received = pool.submit(decide), pool.submit(receive)
        assert decided.result() == 6
        received.result()
    with live.db.reading() as s:
        rows = s.execute(select(Kit.status, Kit.site_id).where(Kit.kit_number.in_(view.kits))).all()
        status = s.execute(select(Shipment.status).where(Shipment.number == view.number)).scalar_one()
    assert status == "received"
    assert [st for st, _ in rows] == ["available"] * 6
    assert all(site is not None for _, site in rows)
