"""Samples of the cohort on their way to the central lab, in Debian's Chromium on a phone (issue 20,
labship): the site picks its collected tube sets, prepares and ships a shipment; the lab technician
scans the manifest's QR and each tube set (a keyboard-wedge scanner types the label and presses
Enter), records one unusable, closes the receipt and reads the sample accountability."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

import kits
from tests.e2e.conftest import LiveServer, shot
from tests.e2e.test_cohort_journey import PHONE, RANDOMIZED_ONLY, _onset
from tests.support import COHORT, COHORT_ELIGIBLE, GOOD_PASSWORD, ready_cohort
from tests.support.cohort import collected_samples, lab_technician, manifest_payload, tube_set_label

pytestmark = pytest.mark.e2e


def _sign_in(new_page, live: LiveServer, username: str):  # type: ignore[no-untyped-def]
    page = new_page(PHONE)
    page.goto(live.url + "/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live.url + "/")
    page.get_by_role("link", name="IMMUNOSEPSIS 4").click()
    page.wait_for_url(f"**/trials/{COHORT}")
    return page


def _scan(page, field: str, payload: str) -> None:  # type: ignore[no-untyped-def]
    """What a keyboard-wedge scanner does: type the label into the focused field, press Enter."""
    page.locator(field).click()
    page.keyboard.type(payload)
    page.keyboard.press("Enter")


@pytest.mark.req("LBL-09")
def test_the_site_ships_and_the_lab_receives_by_scan(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    investigator = ready_cohort(ctx)
    onset = _onset(datetime.now(ZoneInfo("Europe/Paris")).date())
    answers = {
        **COHORT_ELIGIBLE,
        "icu_admission_date": onset.isoformat(),
        "septic_shock_onset_date": onset.isoformat(),
    }
    tubes = collected_samples(ctx, investigator, 3, eligibility=answers)
    lab_technician(ctx)

    # a. The site: picks two collected tube sets, scans the third, prepares, ships.
    site = _sign_in(new_page, live_server, "inv-l1")
    site.get_by_role("link", name="Lab shipments").click()
    site.wait_for_url(f"**/trials/{COHORT}/lab-shipments")
    site.locator(f"#pick-{tubes[0]}").check()
    site.locator(f"#pick-{tubes[1]}").check()
    site.locator("#tube_sets").fill(tube_set_label(ctx, tubes[2]))
    shot(site, "80-lab-shipment-prepare")
    site.get_by_role("button", name="Prepare the shipment").click()
    expect(site.get_by_text("Shipment prepared")).to_be_visible()
    card = site.get_by_test_id("shipment-LS-0001")
    expect(card).to_contain_text("3 tube sets")
    card.get_by_role("button", name="Mark as shipped").click()
    expect(site.get_by_text("Shipment LS-0001 marked shipped.")).to_be_visible()
    expect(site.get_by_test_id("shipment-LS-0001")).to_contain_text("shipped")
    assert not RANDOMIZED_ONLY.search(site.locator("main").inner_text())
    shot(site, "81-lab-shipment-shipped")

    # b. The lab: the manifest's QR opens the receipt; each tube set is scanned.
    lab = _sign_in(new_page, live_server, "lab-tech")
    lab.get_by_role("link", name="Sample receipt").click()
    lab.wait_for_url(f"**/trials/{COHORT}/lab-receipt")
    _scan(lab, "#manifest-field", manifest_payload(ctx, "LS-0001"))
    lab.wait_for_url(f"**/trials/{COHORT}/lab-receipt/LS-0001")
    expect(lab.get_by_text("3 of 3 tube sets still to scan")).to_be_visible()
    _scan(lab, "#tube_set", tube_set_label(ctx, tubes[0]))
    expect(lab.get_by_text("Recorded: received.")).to_be_visible()
    expect(lab.get_by_text("2 of 3 tube sets still to scan")).to_be_visible()
    # the same tube set again: refused beside the field, nothing changed
    _scan(lab, "#tube_set", tube_set_label(ctx, tubes[0]))
    expect(lab.locator("#tube_set-error")).to_contain_text("already scanned")
    shot(lab, "82-lab-receipt-refused-twice")
    lab.locator("#outcome-unusable").check()
    lab.locator("#reason").select_option("haemolysed")
    _scan(lab, "#tube_set", tube_set_label(ctx, tubes[1]))
    expect(lab.get_by_text("Recorded: unusable.")).to_be_visible()
    shot(lab, "83-lab-receipt-scanning")
    lab.get_by_role("button", name="Close the receipt").click()
    expect(lab.get_by_text("1 tube set(s) not scanned: recorded as not received.")).to_be_visible()
    samples = lab.get_by_test_id("samples")
    expect(samples).to_contain_text("haemolysed")
    expect(samples).to_contain_text("not received")
    expect(samples).to_contain_text(kits.format_kit_number(tubes[0]))
    shot(lab, "84-lab-receipt-closed")

    # c. The accountability: per site, collected, shipped, received, unusable by reason, missing.
    lab.goto(f"{live_server.url}/trials/{COHORT}/sample-accountability")
    table = lab.get_by_test_id("accountability")
    expect(table).to_contain_text("haemolysed: 1")
    row = table.locator("tbody tr").first
    expect(row.locator("th")).to_have_text("L1")
    expect(row.locator("td")).to_have_text(["3", "0", "3", "0", "1", "1 (haemolysed: 1)", "1", "0"])
    assert not RANDOMIZED_ONLY.search(lab.locator("main").inner_text())
    shot(lab, "85-sample-accountability")
