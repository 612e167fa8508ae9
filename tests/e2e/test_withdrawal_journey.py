"""A withdrawal as the users live it, in Debian's Chromium: the investigator records on a phone that a
patient's family withdrew consent after D1 (signed); the pharmacist is told and the patient leaves
the dispensation queue with no dispense form left; the monitor counts one withdrawal in the
CONSORT participant flow. No screen shows a treatment (REP-04, BLD-01)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from playwright.sync_api import expect

from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.subjects import randomize
from tests.e2e.conftest import LiveServer, shot
from tests.e2e.conftest import sign_in_browser as sign_in
from tests.support import GOOD_PASSWORD, eligible_on, make_actor, ready_trial

pytestmark = pytest.mark.e2e

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
PHONE = {"width": 412, "height": 915}
DESKTOP = {"width": 1280, "height": 900}
TREATMENT = re.compile(r"interferon|placebo|imukin|saline|nacl", re.IGNORECASE)


@pytest.mark.req("REP-04", "ACC-12", "BLD-01")
def test_a_withdrawal_stops_the_pharmacy_and_is_counted(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready = ready_trial(ctx)
    patients = []
    for number in ("P1-0201", "P1-0202"):
        request = randomize.RandomizationRequest(
            site="P1",
            screening_number=number,
            eligibility=eligible_on(datetime.now(UTC).date()),
            strata={"admission_cause": "septic"},
        )
        result = randomize.randomize(ctx, ready.investigator, TRIAL, request, ALL)
        dispensing.dispense(
            ctx,
            ready.pharmacist,
            TRIAL,
            result.subject_number,
            {"D1": result.kits[0].kit_number},
            scope=ALL,
            signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
        )
        patients.append(result.subject_number)
    patient, other = patients
    make_actor(ctx, "monitor1", "monitor")
    today = datetime.now(ZoneInfo("Europe/Paris")).date().isoformat()  # the trial's calendar date
    # ... as the English pages write it (issue 13: dates in the reader's language)
    shown_today = format_date(datetime.now(ZoneInfo("Europe/Paris")).date(), "medium", locale="en")

    # a. The investigator, on a phone: the subject's page, the withdrawal form, signed.
    inv = sign_in(new_page, live_server, "inv-p1", PHONE)
    inv.goto(f"{live_server.url}/trials/{TRIAL}/subjects/{patient}")
    form = inv.locator("form", has=inv.locator("#wd-kind"))
    form.get_by_label("Kind").select_option("consent_withdrawn")
    form.get_by_label("Effective date (site's calendar date)").fill(today)
    form.get_by_label("Reason").fill("The patient's family withdrew consent after the first dose.")
    form.get_by_label("Your password (electronic signature)").fill(GOOD_PASSWORD)
    form.scroll_into_view_if_needed()
    shot(inv, "50-investigator-withdrawal-form")
    form.get_by_role("button", name="Record the withdrawal (signed)").click()
    expect(inv.get_by_text(f"The withdrawal of {patient} is recorded (signed)")).to_be_visible()
    expect(inv.get_by_role("heading", name=re.compile(f"{patient}.*withdrawn"))).to_be_visible()
    expect(inv.get_by_text(f"withdrawn (consent withdrawn) on {shown_today}")).to_be_visible()
    expect(inv.get_by_role("heading", name="Record a withdrawal")).to_have_count(0)
    assert not TREATMENT.search(inv.locator("main").inner_text())
    shot(inv, "51-investigator-withdrawn")

    # b. The pharmacist: told at once; the patient leaves the queue, the other stays.
    pharm = sign_in(new_page, live_server, "pharm-p1", DESKTOP)
    pharm.get_by_role("link", name="Pharmacy queue").click()
    queue = pharm.locator("table")
    expect(queue.get_by_role("link", name=other)).to_be_visible()
    expect(queue.get_by_role("link", name=patient)).to_have_count(0)
    expect(pharm.get_by_text(f"Withdrawal of {patient}")).to_be_visible()
    assert not TREATMENT.search(pharm.locator("main").inner_text())
    shot(pharm, "52-pharmacist-queue-after-withdrawal")
    pharm.goto(f"{live_server.url}/trials/{TRIAL}/subjects/{patient}")
    expect(pharm.get_by_role("heading", name="Dispense")).to_have_count(0)
    expect(pharm.get_by_role("heading", name="Replace a lost, damaged or expired kit")).to_have_count(0)

    # c. The monitor: one withdrawal in the participant flow, in total and at P1; no treatment.
    monitor = sign_in(new_page, live_server, "monitor1", DESKTOP)
    monitor.goto(f"{live_server.url}/trials/{TRIAL}/reports/participant-flow")
    row = monitor.locator("tr", has=monitor.get_by_role("cell", name="Withdrawn", exact=True))
    expect(row.locator("td")).to_have_text(["Withdrawn", "1", "1", "0"])
    assert not TREATMENT.search(monitor.locator("main").inner_text())
    shot(monitor, "53-monitor-participant-flow")
