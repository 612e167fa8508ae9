"""Issue 19's supply journeys in Debian's Chromium, with screenshots in test-artifacts/e2e/ (looked at
by eye):

- temperature excursion: at the receipt the pharmacist answers that the parcel's logger shows an
  excursion; the report opens for that shipment; they attach the logger's file and sign; the six
  kits are quarantined; the trial manager (the sponsor) releases them, signed; the receipt then goes
  through;
- relabelling, in French: the trial manager shortens the batch's expiry (signed) on the stock page;
  the pharmacist sees the site's kits to relabel, prints the sheet (a PDF download), and scans a kit
  with a keyboard-wedge scanner to confirm its new label.
"""

from __future__ import annotations

from datetime import timedelta

import pypdfium2 as pdfium
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

import kits as kitlib
from allocator.models import Kit, Site
from allocator.permissions import Scope
from allocator.services.supply import kit_rules
from allocator.services.supply import shipments as supply_shipments
from tests.e2e.conftest import ARTIFACTS, LiveServer, shot
from tests.support import CLI_ACTOR, GOOD_PASSWORD, person, ready_trial

pytestmark = pytest.mark.e2e

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
DESKTOP = {"width": 1280, "height": 1000}
LOGGER = b"time,temperature\n2026-12-05 08:00,5.2\n2026-12-05 09:30,13.1\n2026-12-05 10:00,6.0\n"


def sign_in(new_page, live: LiveServer, username: str, *, french: bool = False):  # type: ignore[no-untyped-def]
    page = new_page(DESKTOP)
    page.goto(live.url + "/login")
    if french:
        page.get_by_role("button", name="Français").click()
        expect(page.locator("html")).to_have_attribute("lang", "fr")
    page.get_by_label("Identifiant" if french else "User name").fill(username)
    page.get_by_label("Mot de passe" if french else "Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Se connecter" if french else "Sign in").click()
    page.wait_for_url(live.url + "/")
    return page


def statuses(live: LiveServer, numbers: tuple[str, ...]) -> set[str]:
    with live.ctx.db.reading() as s:
        return set(s.execute(select(Kit.status).where(Kit.kit_number.in_(numbers))).scalars())


@pytest.mark.req("LBL-05", "ACC-12")
def test_an_excursion_reported_at_the_receipt_then_released_by_the_sponsor(
    live_server: LiveServer, new_page
) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready_trial(ctx)
    person(ctx, "sponsor", "trial_manager", full_name="Sponsor Supply")
    view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P1", 6)
    supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)

    pharm = sign_in(new_page, live_server, "pharm-p1")
    pharm.goto(f"{live_server.url}/trials/{TRIAL}/shipments")
    pharm.get_by_label("Yes: report it first (nothing is received yet)").check()
    shot(pharm, "excursion-1-receipt-question")
    pharm.get_by_role("button", name="Confirm receipt").click()
    pharm.wait_for_url(f"**/trials/{TRIAL}/excursions?shipment={view.number}*")
    expect(pharm.get_by_label("Shipment number (for a shipment)")).to_have_value(view.number)
    expect(pharm.get_by_text("Report the excursion first")).to_be_visible()
    pharm.get_by_label("Lowest temperature (°C)").fill("5,2")
    pharm.get_by_label("Highest temperature (°C)").fill("13,1")
    pharm.get_by_label("Duration outside 2-8 °C (minutes)").fill("95")
    pharm.get_by_label("Temperature logger file (CSV, text or PDF, at most 2 MB)").set_input_files(
        files=[{"name": "logger-box-17.csv", "mimeType": "text/csv", "buffer": LOGGER}]
    )
    pharm.get_by_label("What happened (optional)").fill("parcel left on the loading dock")
    pharm.locator("#ex-password").fill(GOOD_PASSWORD)
    shot(pharm, "excursion-2-report-form")
    pharm.get_by_role("button", name="Report and quarantine the kits (signed)").click()
    pharm.wait_for_url(f"**/trials/{TRIAL}/excursions/EXC-0001")
    expect(pharm.get_by_text("6 kit(s) in quarantine until the sponsor decides")).to_be_visible()
    shot(pharm, "excursion-3-reported")
    assert statuses(live_server, view.kits) == {"quarantined"}

    sponsor = sign_in(new_page, live_server, "sponsor")
    sponsor.goto(f"{live_server.url}/trials/{TRIAL}/excursions/EXC-0001")
    sponsor.get_by_label("Release: the kits can be used again").check()
    sponsor.get_by_label("Reason (e.g. the stability data)").fill(
        "stable 72 h at 25 °C (stability report SR-12)"
    )
    sponsor.locator("#dc-password").fill(GOOD_PASSWORD)
    shot(sponsor, "excursion-4-decision-form")
    sponsor.get_by_role("button", name="Record the decision (signed)").click()
    expect(sponsor.get_by_text("Decision recorded (signed): the kits are released.")).to_be_visible()
    shot(sponsor, "excursion-5-released")
    assert statuses(live_server, view.kits) == {"in_transit"}

    pharm.goto(f"{live_server.url}/trials/{TRIAL}/shipments")
    pharm.locator(f"#rc-{view.number}").fill("\n".join(view.kits))
    pharm.get_by_label("No", exact=True).check()
    pharm.get_by_role("button", name="Confirm receipt").click()
    expect(pharm.get_by_text(f"Shipment {view.number} received.")).to_be_visible()
    assert statuses(live_server, view.kits) == {"available"}


@pytest.mark.req("LBL-05", "LBL-09", "LBL-12", "ACC-12")
def test_relabelling_after_an_expiry_change_in_french(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready_trial(ctx)
    person(ctx, "sponsor", "trial_manager", full_name="Sponsor Supply")
    with ctx.db.reading() as s:
        site_kits = tuple(s.execute(select(Kit.kit_number).where(Kit.site_id.is_not(None))).scalars())
    new_expiry = (ctx.now() + timedelta(days=200)).date()

    sponsor = sign_in(new_page, live_server, "sponsor", french=True)
    sponsor.goto(f"{live_server.url}/trials/{TRIAL}/stock")
    sponsor.locator("#exp-LOT-1").fill(new_expiry.isoformat())
    sponsor.locator("#why-LOT-1").fill("données de stabilité révisées")
    sponsor.locator("#exp-LOT-1-password").fill(GOOD_PASSWORD)
    sponsor.locator("#exp-LOT-1-password").press("Enter")
    sponsor.wait_for_load_state()
    with ctx.db.reading() as s:
        waiting = set(
            s.execute(select(Kit.kit_number).where(Kit.relabel_requested_at.is_not(None))).scalars()
        )
    assert set(site_kits) <= waiting

    pharm = sign_in(new_page, live_server, "pharm-p1", french=True)
    pharm.goto(f"{live_server.url}/trials/{TRIAL}/stock")
    pharm.get_by_role("link", name="Réétiquetage").click()
    pharm.wait_for_url(f"**/trials/{TRIAL}/relabelling")
    expect(pharm.get_by_role("heading", name="Centre P1 · 24 kit(s) à réétiqueter")).to_be_visible()
    shot(pharm, "relabelling-1-list-fr")
    with pharm.expect_download() as download:
        pharm.get_by_role("button", name="Imprimer la planche de réétiquetage (PDF)").click()
    pdf = download.value.path().read_bytes()
    assert pdf.startswith(b"%PDF") and download.value.suggested_filename.startswith("RLB-")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the sheet's first page, to be looked at
    pdfium.PdfDocument(pdf)[0].render(scale=1.5).to_pil().save(ARTIFACTS / "relabelling-sheet.png")

    with ctx.db.reading() as s:
        number = s.execute(
            select(Kit.kit_number)
            .join(Site, Site.id == Kit.site_id)
            .where(Kit.relabel_requested_at.is_not(None), Site.code == "P1")
            .order_by(Kit.kit_number)
            .limit(1)
        ).scalar_one()
    pharm.get_by_label("Kit (scannez sa nouvelle étiquette)").click()
    label = kitlib.build_payload(TRIAL, number, kit_rules.KIT_UNIT, kit_rules.mac(ctx))
    pharm.keyboard.type(label, delay=4)  # a keyboard-wedge scanner
    pharm.keyboard.press("Enter")
    expect(pharm.get_by_text(f"Kit {kitlib.format_kit_number(number)} réétiqueté")).to_be_visible()
    expect(pharm.get_by_role("heading", name="Centre P1 · 23 kit(s) à réétiqueter")).to_be_visible()
    shot(pharm, "relabelling-2-scanned-fr")
