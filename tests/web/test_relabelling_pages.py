"""Relabelling pages as people use them (issue 19): the trial manager changes a batch's expiry
(signed) on the stock page; the pharmacist sees the kits of their site to relabel, prints the sheet
(PDF), scans each kit; other sites and the monitor cannot act; French and English (LBL-05, LBL-12)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

import kits as kitlib
from allocator.models import Kit
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.supply import kit_lists, kit_rules
from allocator.services.supply import shipments as supply_shipments
from tests.support import CLI_ACTOR, GOOD_PASSWORD, code_break_sheets, load_ifn, make_user
from tests.web.conftest import csrf_token, without_tokens

SignedIn = Callable[[str, str], FlaskClient]
TRIAL = "IFNG-PAIS"
BASE = f"/trials/{TRIAL}"
ALL = Scope(all_sites=True, site_ids=frozenset())
ARM_TEXT = re.compile(r"placebo|interf[eé]ron|\bbras\b|\barms?\b", re.IGNORECASE)


def flashes(response: object) -> list[str]:
    html = response.get_data(as_text=True)  # type: ignore[attr-defined]
    return re.findall(r'<p class="flash [a-z]+" role="[a-z]+">([^<]*)</p>', html)


def pending(ctx: ServiceContext) -> set[str]:
    with ctx.db.reading() as s:
        return set(s.execute(select(Kit.kit_number).where(Kit.relabel_requested_at.is_not(None))).scalars())


@pytest.fixture
def clients(ctx: ServiceContext, signed_in: SignedIn) -> dict[str, FlaskClient]:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=8, lot_code="LOT-WEB", expiry=date(2027, 6, 30))
    code_break_sheets(ctx)
    made = {}
    for username, role, site in (
        ("tman", "trial_manager", None),
        ("pharma-p1", "pharmacist", "P1"),
        ("pharma-p2", "pharmacist", "P2"),
        ("mon", "monitor", None),
    ):
        created = make_user(ctx, username, role, site=site)
        made[username] = signed_in(username, created.one_time_password)
    return made


@pytest.mark.req("LBL-05", "LBL-12", "ACC-12")
def test_an_expiry_change_sends_the_pharmacist_to_relabel_and_scan(
    ctx: ServiceContext, clients: dict[str, FlaskClient]
) -> None:
    manager, pharmacist, other, monitor = (clients[n] for n in ("tman", "pharma-p1", "pharma-p2", "mon"))
    view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P1", 4)
    supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
    supply_shipments.receive(ctx, CLI_ACTOR, TRIAL, view.number, list(view.kits), scope=ALL)
    token = csrf_token(manager, f"{BASE}/stock")
    changed = manager.post(
        f"{BASE}/batches/LOT-WEB/expiry",
        data={
            "expiry": "2027-03-31",
            "reason": "stability data",
            "password": GOOD_PASSWORD,
            "csrf_token": token,
        },
        follow_redirects=True,
    )
    assert "Expiry of batch LOT-WEB changed (signed)." in flashes(changed)
    assert set(view.kits) <= pending(ctx) and len(pending(ctx)) == 8  # P1 and the depot

    page = without_tokens(pharmacist.get(f"{BASE}/relabelling").get_data(as_text=True))
    assert all(f"{n[:4]}-{n[4:]}" in page for n in view.kits) and "4 kit(s) to relabel" in page
    assert not ARM_TEXT.search(page) and "Depot" not in page
    assert "to relabel" not in other.get(f"{BASE}/relabelling").get_data(as_text=True)
    assert "Depot" in monitor.get(f"{BASE}/relabelling").get_data(as_text=True)  # trial-wide reader
    assert "/relabelling/confirm" not in monitor.get(f"{BASE}/relabelling").get_data(as_text=True)

    token = csrf_token(pharmacist, f"{BASE}/relabelling")
    tag = kit_rules.mac(ctx)
    label = kitlib.build_payload(TRIAL, view.kits[0], "K", tag)
    early = pharmacist.post(
        f"{BASE}/relabelling/confirm", data={"kit": label, "csrf_token": token}, follow_redirects=True
    )
    assert any("print the relabelling sheet first" in f for f in flashes(early))
    sheet = pharmacist.post(f"{BASE}/relabelling/sheet", data={"site": "P1", "csrf_token": token})
    assert sheet.mimetype == "application/pdf" and sheet.data.startswith(b"%PDF")
    refused = other.post(
        f"{BASE}/relabelling/sheet",
        data={"site": "P1", "csrf_token": csrf_token(other, f"{BASE}/relabelling")},
        follow_redirects=True,
    )
    assert any("within your reach" in f for f in flashes(refused))
    for number in view.kits:
        done = pharmacist.post(
            f"{BASE}/relabelling/confirm",
            data={"kit": kitlib.build_payload(TRIAL, number, "K", tag), "csrf_token": token},
            follow_redirects=True,
        )
        assert flashes(done) == [
            f"Kit {kitlib.format_kit_number(number)} relabelled: it can be allocated and dispensed again."
        ]
    assert not set(view.kits) & pending(ctx)
    assert "No kit awaits relabelling." in pharmacist.get(f"{BASE}/relabelling").get_data(as_text=True)

    # In French.
    pharmacist.post("/language", data={"language": "fr", "next": "/", "csrf_token": token})
    french = pharmacist.get(f"{BASE}/relabelling").get_data(as_text=True)
    assert "Réétiquetage" in french and "Aucun kit n’attend de réétiquetage." in french
