"""Issue 7's acceptance journey in Debian's Chromium: at night an investigator breaks the blind of one
patient from a phone (home page, form, result: three screens); the monitor sees the event and the
"blind broken" flag but never the arm; then the planned unblinding runs through its signed states —
the trial manager locks the database, the unblinded statistician (with a second factor) unblinds the
trial — after which the investigator may see the treatment of their own patient."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from allocator import crypto
from allocator.models import Unblinding
from allocator.permissions import Scope
from allocator.services import auth
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


# UNB-11: this is the end-to-end emergency unblinding test that the requirement's "how to test" asks
# the release pipeline to run (CI runs it in Chromium). The periodic production drill on a drill
# site or subject excluded from every count (issue 18) is not built yet.
@pytest.mark.req("UNB-01", "UNB-04", "UNB-05", "UNB-10", "UNB-11", "BLD-07")
def test_emergency_unblinding_then_the_planned_unblinding(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready = ready_trial(ctx)
    today = datetime.now(UTC)
    patients = []
    for number in ("P1-0101", "P1-0102"):
        request = randomize.RandomizationRequest(
            site="P1",
            screening_number=number,
            eligibility=eligible_on(today.date()),
            strata={"admission_cause": "septic"},
        )
        patients.append(randomize.randomize(ctx, ready.investigator, TRIAL, request, ALL).subject_number)
    patient, other = patients
    make_actor(ctx, "monitor1", "monitor")
    make_actor(ctx, "manager", "trial_manager")
    # The statistician's authenticator, enrolled with the previous time step so that the sign-in and
    # the signature below can use the current and the next one (a code is never accepted twice).
    assert ready.statistician.user_id is not None
    enrollment = auth.start_totp_enrollment(ctx, ready.statistician.user_id)
    secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
    auth.confirm_totp_enrollment(
        ctx,
        ready.statistician.user_id,
        None,
        crypto.totp_now(secret, datetime.now(UTC) - timedelta(seconds=30)),
        auth.Client("127.0.0.1", "e2e", "setup"),
        ticket=enrollment.ticket,
    )

    # a. The investigator, on a phone: home page -> form -> the treatment. Three screens.
    inv = new_page(PHONE)
    inv.goto(live_server.url + "/login")
    inv.get_by_label("User name").fill("inv-p1")
    inv.get_by_label("Password").fill(GOOD_PASSWORD)
    inv.get_by_role("button", name="Sign in").click()
    inv.wait_for_url(live_server.url + "/")
    shot(inv, "40-investigator-home")
    screens = [inv.url]
    inv.get_by_role("link", name="Emergency unblinding").first.click()
    inv.wait_for_url(f"**/trials/{TRIAL}/unblind")
    screens.append(inv.url)
    # The subject is chosen in the site's list, never typed, and shown back large (issue 13).
    inv.get_by_label("Subject number").select_option(patient)
    expect(inv.get_by_test_id("chosen-subject")).to_have_text(patient)
    inv.get_by_label("Reason").select_option("serious_adverse_event")
    inv.get_by_label("Details").fill(
        "Anaphylactic shock 20 min after D2; the treatment depends on the product."
    )
    inv.get_by_label("I confirm that I break the blind").check()
    inv.get_by_label("Your password (electronic signature)").fill(GOOD_PASSWORD)
    shot(inv, "41-investigator-unblinding-form")
    inv.get_by_role("button", name="Break the blind").click()
    expect(inv.get_by_role("heading", name=re.compile(f"{patient}"))).to_be_visible()
    screens.append(inv.url)
    assert len(screens) == 3
    treatment = inv.locator("dl.facts dd").first.inner_text()
    assert treatment in ("Interferon gamma-1b", "Placebo")
    expect(inv.get_by_text("meaning: emergency unblinding")).to_be_visible()
    shot(inv, "42-investigator-treatment-shown-once")
    # A reload shows when and to whom it was shown, never the arm again, and unblinds nothing (issue 13).
    inv.reload()
    expect(inv.get_by_text("was shown once")).to_be_visible()
    assert not TREATMENT.search(inv.locator("main").inner_text())
    shot(inv, "42b-investigator-result-reloaded")
    # Going back to the subject shows the flag, not the treatment.
    inv.get_by_role("link", name="Back to the subject").click()
    expect(inv.get_by_role("heading", name=re.compile(f"{patient}.*blind broken"))).to_be_visible()
    assert not TREATMENT.search(inv.locator("main").inner_text())
    # The back button returns to the result (shown before, no arm), then to an empty form.
    inv.go_back()
    expect(inv.get_by_text("was shown once")).to_be_visible()
    assert not TREATMENT.search(inv.locator("main").inner_text())
    inv.go_back()
    inv.wait_for_url(f"**/trials/{TRIAL}/unblind")
    with ctx.db.reading() as session:
        assert len(session.execute(select(Unblinding)).scalars().all()) == 1

    # b. The monitor, at a desk: the flag and the event, never the arm.
    monitor = sign_in(new_page, live_server, "monitor1", DESKTOP)
    monitor.get_by_role("link", name="Subjects").click()
    row = monitor.locator("tr", has_text=patient)
    expect(row.get_by_text("blind broken")).to_be_visible()
    expect(monitor.locator("tr", has_text=other).get_by_text("blind broken")).to_have_count(0)
    assert not TREATMENT.search(monitor.locator("main").inner_text())
    shot(monitor, "43-monitor-subjects-flag")
    monitor.goto(f"{live_server.url}/trials/{TRIAL}/audit?action=unblinding.emergency")
    expect(monitor.locator("table").get_by_text("unblinding.emergency").first).to_be_visible()
    main_text = monitor.locator("main").inner_text()
    assert patient in main_text and not TREATMENT.search(main_text)
    shot(monitor, "44-monitor-audit-event")

    # c. The planned unblinding: the trial manager locks the database (signed) ...
    manager = sign_in(new_page, live_server, "manager", DESKTOP)
    manager.get_by_role("link", name="Lock and final unblinding").click()
    manager.get_by_label("Reason (e.g. last patient's follow-up complete, data cleaned)").fill(
        "Last patient's D28 visit done; data cleaned and queries closed"
    )
    manager.get_by_label("Your password (electronic signature)").fill(GOOD_PASSWORD)
    manager.get_by_role("button", name="Lock the database").click()
    expect(manager.get_by_text("meaning: database lock").first).to_be_visible()
    expect(manager.locator("dl.facts dd").first).to_have_text("locked")
    shot(manager, "45-manager-locked")

    # ... and the unblinded statistician, with both factors, unblinds the trial (signed).
    stat = sign_in(
        new_page, live_server, "stat", DESKTOP, totp_code=crypto.totp_now(secret, datetime.now(UTC))
    )
    stat.get_by_role("link", name="Lock and final unblinding").click()
    stat.get_by_label("Reason (e.g. statistical analysis plan signed, blind review done)").fill(
        "Statistical analysis plan v2.0 signed; blind data review meeting held"
    )
    stat.get_by_label("Your password (electronic signature)").fill(GOOD_PASSWORD)
    stat.get_by_label("Authenticator code").fill(
        crypto.totp_now(secret, datetime.now(UTC) + timedelta(seconds=30))
    )
    stat.get_by_role("button", name="Unblind the trial").click()
    expect(stat.get_by_text("meaning: final unblinding").first).to_be_visible()
    expect(stat.locator("dl.facts dd").first).to_have_text("unblinded")
    expect(stat.get_by_role("link", name="Release the unblinded listing")).to_be_visible()
    shot(stat, "46-statistician-unblinded")

    # d. The investigator may now see the treatment of their own other patient.
    inv.goto(f"{live_server.url}/trials/{TRIAL}/subjects/{other}")
    inv.get_by_role("button", name="Show the treatment (trial unblinded)").click()
    expect(inv.get_by_text("trial unblinded")).to_be_visible()
    shown = inv.locator("dl.facts dd").first.inner_text()
    assert shown in ("Interferon gamma-1b", "Placebo")
    shot(inv, "47-investigator-treatment-after-unblinding")
