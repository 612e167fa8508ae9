"""The cohort's whole journey in Debian's Chromium on a phone (issue 20, "done when"): the
investigator registers an eligible septic-shock patient through the screening form (a tube set of
the site's stock assigned to the D3 sample) and refuses an ineligible one with its reasons; the
nurse collects the D3 sample by scanning a tube of that set, then ships it to the central lab; the
lab technician opens the receipt by the manifest's QR and receives the tube set by scan; the sample
accountability counts it received. No screen shows anything of a randomized trial."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

import kits as kitlib
from allocator.services import auth
from allocator.services.samples import rules
from tests.e2e.conftest import LiveServer, shot
from tests.e2e.test_cohort_journey import RANDOMIZED_ONLY, _collectable_onset, _fill
from tests.e2e.test_lab_shipment_journey import _scan, _sign_in
from tests.support import COHORT, COHORT_ELIGIBLE, GOOD_PASSWORD, HERE, make_user, ready_cohort
from tests.support.cohort import lab_technician, manifest_payload, tube_set_label

pytestmark = pytest.mark.e2e


@pytest.mark.req("RND-05", "RND-06", "LBL-09")
def test_register_collect_ship_and_receive_a_d3_sample(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready_cohort(ctx, tube_sets=2)
    nurse = make_user(ctx, "nurse-l1", "nurse", trial=COHORT, site="L1")
    auth.change_password(ctx, nurse.user_id, nurse.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    lab_technician(ctx)
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    onset = _collectable_onset(today)
    if onset is None:  # pragma: no cover - a day whose D3 window holds no lab working day
        pytest.skip("no onset date puts today in a D3 window with a lab working day")
    answers = {
        **COHORT_ELIGIBLE,
        "icu_admission_date": onset.isoformat(),
        "septic_shock_onset_date": onset.isoformat(),
    }

    # a. The investigator registers an eligible patient; the D3 sample gets its tube set.
    inv = _sign_in(new_page, live_server, "inv-l1")
    inv.get_by_role("link", name="Register a patient").click()
    inv.wait_for_url(f"**/trials/{COHORT}/register")
    inv.get_by_label(re.compile("Screening number")).fill("L1-0001")
    _fill(inv, answers)
    inv.get_by_role("button", name="Check eligibility and register").click()
    inv.wait_for_url(f"**/trials/{COHORT}/subjects/L1-001")
    shown = inv.get_by_test_id("tube-set-D3").inner_text().strip()
    tube_set = kitlib.normalize_kit_number(shown)
    assert not RANDOMIZED_ONLY.search(inv.locator("main").inner_text())
    shot(inv, "90-journey-registered-with-tube-set")
    # ... and refuses an ineligible one, with its reasons.
    inv.goto(f"{live_server.url}/trials/{COHORT}/register")
    inv.get_by_label(re.compile("Screening number")).fill("L1-0002")
    _fill(inv, {**answers, "age": 16})
    inv.get_by_role("button", name="Check eligibility and register").click()
    expect(inv.get_by_role("heading", name="Not registered")).to_be_visible()
    assert "Age" in inv.locator("main").inner_text()
    shot(inv, "91-journey-ineligible")

    # b. The nurse collects the D3 sample by scanning a tube of the participant's set.
    ward = _sign_in(new_page, live_server, "nurse-l1")
    ward.get_by_role("link", name="Sample collection scan").click()
    ward.wait_for_url(f"**/trials/{COHORT}/samples/collect")
    ward.get_by_label(re.compile("Participant's subject number")).fill("L1-001")
    ward.get_by_label("Sample", exact=True).select_option("D3")
    scan = ward.get_by_label(re.compile("Tube set label"))
    scan.fill(kitlib.build_payload(COHORT, tube_set, kitlib.sample_unit(1), rules.mac(ctx)))
    scan.press("Enter")
    expect(ward.locator("#payload-verdict")).to_contain_text("right participant, right sample")
    ward.get_by_role("button", name="Check and record").click()
    expect(ward.get_by_test_id("collected")).to_contain_text("L1-001 · D3")
    shot(ward, "92-journey-collected")

    # c. The nurse ships it to the central lab.
    ward.goto(f"{live_server.url}/trials/{COHORT}/lab-shipments")
    ward.locator(f"#pick-{tube_set}").check()
    ward.get_by_role("button", name="Prepare the shipment").click()
    card = ward.get_by_test_id("shipment-LS-0001")
    expect(card).to_contain_text("1 tube set")
    card.get_by_role("button", name="Mark as shipped").click()
    expect(ward.get_by_test_id("shipment-LS-0001")).to_contain_text("shipped")
    assert not RANDOMIZED_ONLY.search(ward.locator("main").inner_text())
    shot(ward, "93-journey-shipped")

    # d. The lab technician receives it by scanning the manifest's QR, then the tube set.
    lab = _sign_in(new_page, live_server, "lab-tech")
    lab.get_by_role("link", name="Sample receipt").click()
    _scan(lab, "#manifest-field", manifest_payload(ctx, "LS-0001"))
    lab.wait_for_url(f"**/trials/{COHORT}/lab-receipt/LS-0001")
    _scan(lab, "#tube_set", tube_set_label(ctx, tube_set))
    expect(lab.get_by_text("Recorded: received.")).to_be_visible()
    shot(lab, "94-journey-received")
    lab.get_by_role("button", name="Close the receipt").click()
    lab.goto(f"{live_server.url}/trials/{COHORT}/sample-accountability")
    row = lab.get_by_test_id("accountability").locator("tbody tr").first
    expect(row.locator("th")).to_have_text("L1")
    expect(row.locator("td").first).to_have_text("1")  # collected
    assert not RANDOMIZED_ONLY.search(lab.locator("main").inner_text())
    shot(lab, "95-journey-accountability")

    # The participant's page, as the investigator reads it afterwards.
    inv.goto(f"{live_server.url}/trials/{COHORT}/subjects/L1-001")
    expect(inv.get_by_test_id("sample-status-D3")).to_contain_text("received")
    shot(inv, "96-journey-participant-received")
