"""The observational cohort as its investigator lives it, in Debian's Chromium on a phone (issue 20):
register an eligible septic-shock patient through the screening form and read the D3 sample planned
on a central-lab working day; refuse an ineligible patient with its reasons; read the lab calendar;
and its nurse collects the D3 sample by scanning the participant's tube set. No screen shows a
randomization, an arm or an unblinding element."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

import kits as kitlib
from allocator import sampling
from allocator.services import auth
from allocator.services.samples import rules
from allocator.services.subjects import register
from allocator.trialdef import load_definition
from tests.e2e.conftest import LiveServer, shot
from tests.support import (
    ALL_SITES,
    COHORT,
    COHORT_ELIGIBLE,
    COHORT_TRIAL,
    GOOD_PASSWORD,
    HERE,
    make_user,
    ready_cohort,
)

pytestmark = pytest.mark.e2e

PHONE = {"width": 412, "height": 915}
RANDOMIZED_ONLY = re.compile(r"randomi[sz]|arm\b|unblind|placebo|interferon|strat", re.IGNORECASE)


def _onset(today: date) -> date:
    """A septic-shock onset of today or the days before whose D3/D4 window holds a lab working day
    (the live server runs on the real clock)."""
    plan = load_definition(COHORT_TRIAL)[0].sampling
    assert plan is not None
    for back in range(3):
        onset = today - timedelta(days=back)
        if all(p.planned is not None for p in sampling.plan(plan, onset)):
            return onset
    raise AssertionError("no onset date with a lab working day in its window")  # pragma: no cover


def _fill(page, answers: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    for key, value in answers.items():
        if value in ("yes", "no"):
            page.locator(f'input[name="eligibility.{key}"][value="{value}"]').check()
        else:
            page.locator(f'input[name="eligibility.{key}"]').fill(str(value))


@pytest.mark.req("RND-05", "RND-06")
def test_an_investigator_registers_a_patient_and_reads_the_sample_date(
    live_server: LiveServer, new_page
) -> None:  # type: ignore[no-untyped-def]
    ready_cohort(live_server.ctx)
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    onset = _onset(today)
    answers = {
        **COHORT_ELIGIBLE,
        "icu_admission_date": onset.isoformat(),
        "septic_shock_onset_date": onset.isoformat(),
    }
    plan = load_definition(COHORT_TRIAL)[0].sampling
    assert plan is not None
    [d3] = sampling.plan(plan, onset)

    page = new_page(PHONE)
    page.goto(live_server.url + "/login")
    page.get_by_label("User name").fill("inv-l1")
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/")
    expect(page.get_by_role("link", name="IFN-gamma PAIS")).to_have_count(0)  # no role there
    page.get_by_role("link", name="IMMUNOSEPSIS 4").click()
    page.wait_for_url(f"**/trials/{COHORT}")
    shot(page, "70-cohort-trial-page")
    assert not RANDOMIZED_ONLY.search(page.locator("main").inner_text())

    # a. An eligible patient: registered, the D3 sample planned on a lab working day.
    page.get_by_role("link", name="Register a patient").click()
    page.wait_for_url(f"**/trials/{COHORT}/register")
    page.get_by_label(re.compile("Screening number")).fill("L1-0001")
    _fill(page, answers)
    shot(page, "71-cohort-registration-form")
    page.get_by_role("button", name="Check eligibility and register").click()
    page.wait_for_url(f"**/trials/{COHORT}/subjects/L1-001")
    expect(page.get_by_text("Registered. Plan the samples below.")).to_be_visible()
    expect(page.get_by_test_id("subject-number")).to_have_text("L1-001")
    schedule = page.get_by_test_id("sample-schedule")
    expect(schedule).to_contain_text("D3")
    expect(schedule).to_contain_text("BIOMARKER")
    assert d3.planned is not None
    planned = page.locator("[data-testid=sample-schedule] strong").first.inner_text()
    assert planned == d3.planned.strftime("%b %-d, %Y"), planned
    assert not RANDOMIZED_ONLY.search(page.locator("main").inner_text())
    shot(page, "72-cohort-registered-with-schedule")

    # b. An ineligible patient: not registered, every reason listed, in the screening log.
    page.goto(f"{live_server.url}/trials/{COHORT}/register")
    page.get_by_label(re.compile("Screening number")).fill("L1-0002")
    _fill(page, {**answers, "age": 16, "non_opposition": "no"})
    page.get_by_role("button", name="Check eligibility and register").click()
    expect(page.get_by_role("heading", name="Not registered")).to_be_visible()
    main = page.locator("main").inner_text()
    assert "Age" in main and "Non-opposition" in main, main
    shot(page, "73-cohort-not-registered")
    page.get_by_role("link", name="Screening log").click()
    expect(page.locator("main")).to_contain_text("L1-0002")

    # c. The lab calendar: its working days and the coming days off.
    page.goto(f"{live_server.url}/trials/{COHORT}/lab-calendar")
    expect(page.get_by_role("heading", name=re.compile("Central lab calendar"))).to_be_visible()
    expect(page.get_by_text("Monday, Tuesday, Wednesday, Thursday, Friday")).to_be_visible()
    shot(page, "74-cohort-lab-calendar")


def _collectable_onset(today: date) -> date | None:
    """An onset whose D3 window holds today (so that today's collection is in it) and a lab working
    day (so that the patient is eligible); None on the rare day without one."""
    plan = load_definition(COHORT_TRIAL)[0].sampling
    assert plan is not None
    for back in (3, 4):
        onset = today - timedelta(days=back)
        [d3] = sampling.plan(plan, onset)
        if d3.planned is not None and d3.due <= today <= d3.window_end:
            return onset
    return None  # pragma: no cover


@pytest.mark.req("LBL-09", "RND-05")
def test_a_nurse_collects_the_d3_sample_by_scanning_its_tube_set(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    """Issue 20: registered with a tube set from the site's stock, the participant's D3 sample is
    collected at the bedside on a phone by scanning a tube of that set; a drug kit's label is
    refused as it is scanned, and nothing is recorded until the right set is scanned."""
    ctx = live_server.ctx
    investigator = ready_cohort(ctx, tube_sets=2)
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    onset = _collectable_onset(today)
    if onset is None:  # pragma: no cover
        pytest.skip("no onset date puts today in a D3 window with a lab working day")
    answers = {
        **COHORT_ELIGIBLE,
        "icu_admission_date": onset.isoformat(),
        "septic_shock_onset_date": onset.isoformat(),
    }
    result = register.register(
        ctx, investigator, COHORT, register.RegistrationRequest("L1", "L1-0001", answers), ALL_SITES
    )
    number = result.samples[0].kit_number
    assert number is not None
    nurse = make_user(ctx, "nurse-l1", "nurse", trial=COHORT, site="L1")
    auth.change_password(ctx, nurse.user_id, nurse.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)

    page = new_page(PHONE)
    page.goto(live_server.url + "/login")
    page.get_by_label("User name").fill("nurse-l1")
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(live_server.url + "/")
    page.get_by_role("link", name="IMMUNOSEPSIS 4").click()
    page.get_by_role("link", name="Sample collection scan").click()
    page.wait_for_url(f"**/trials/{COHORT}/samples/collect")
    page.get_by_label(re.compile("Participant's subject number")).fill("L1-001")
    page.get_by_label("Sample", exact=True).select_option("D3")
    scan = page.get_by_label(re.compile("Tube set label"))
    # A drug kit's label (the same number under a drug unit) is refused as soon as it is scanned.
    scan.fill(kitlib.build_payload(COHORT, number, "K", rules.mac(ctx)))
    scan.press("Enter")
    verdict = page.locator("#payload-verdict")
    expect(verdict).to_contain_text("a drug kit's label, not a tube set's")
    shot(page, "75-cohort-collection-drug-label-refused")
    # The scanner types the second tube's label of the participant's set, then Enter.
    scan.fill(kitlib.build_payload(COHORT, number, kitlib.sample_unit(2), rules.mac(ctx)))
    scan.press("Enter")
    expect(verdict).to_contain_text("right participant, right sample")
    shot(page, "76-cohort-collection-checked")
    page.get_by_role("button", name="Check and record").click()
    expect(page.get_by_test_id("collected")).to_contain_text("L1-001 · D3")
    expect(page.get_by_test_id("collected")).to_contain_text(f"{number[:4]}-{number[4:]}")
    shot(page, "77-cohort-collection-recorded")
    page.goto(f"{live_server.url}/trials/{COHORT}/subjects/L1-001")
    expect(page.get_by_test_id("tube-set-D3")).to_have_text(f"{number[:4]}-{number[4:]}")
    expect(page.get_by_test_id("sample-status-D3")).to_contain_text("collected")
    assert not RANDOMIZED_ONLY.search(page.locator("main").inner_text())
    shot(page, "78-cohort-sample-collected")
