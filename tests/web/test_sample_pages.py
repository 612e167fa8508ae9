"""The cohort's tube-set pages (issue 20): the trial manager's stock page (generate, print, damaged),
the bedside collection scan on a phone (check as scanned, record, refusals named by field in
English and French, Post/Redirect/Get), and the participant's page with each sample's tube set."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient

import kits as kitlib
from allocator.services.context import ServiceContext
from allocator.services.samples import rules
from allocator.services.subjects import register
from tests.support import ALL_SITES, COHORT, COHORT_ELIGIBLE, GOOD_PASSWORD, Clock, make_user, ready_cohort
from tests.web.conftest import csrf_token

STOCK = f"/trials/{COHORT}/tube-sets"
COLLECT = f"/trials/{COHORT}/samples/collect"
D3_MORNING = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def _french(client: FlaskClient, path: str) -> None:
    done = client.post("/language", data={"language": "fr", "csrf_token": csrf_token(client, path)})
    assert done.status_code in (302, 303)


@pytest.mark.req("LBL-11", "LBL-04")
def test_the_trial_manager_generates_prints_and_marks_tube_sets_damaged(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    ready_cohort(ctx, tube_sets=0)
    manager = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    client = signed_in("tm-cohort", manager.one_time_password)
    assert "Tube sets" in client.get(f"/trials/{COHORT}").get_data(as_text=True)
    page = client.get(STOCK).get_data(as_text=True)
    assert "No tube set yet." in page and "Generate tube sets" in page
    token = csrf_token(client, STOCK)
    refused = client.post(
        STOCK, data={"site": "L1", "kit_type": "BIOMARKER", "count": "0", "csrf_token": token}
    )
    assert refused.status_code == 303 and refused.headers["Location"].endswith("#generate")
    shown = client.get(STOCK).get_data(as_text=True)
    assert "Number of tube sets: a whole number from 1 to 500" in shown and 'aria-invalid="true"' in shown
    done = client.post(STOCK, data={"site": "L1", "kit_type": "BIOMARKER", "count": "3", "csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"].endswith(STOCK)
    page = client.get(STOCK).get_data(as_text=True)
    assert "Tube sets generated: print their labels below." in page and "Tube sets just generated" in page
    assert "Tube sets just generated" not in client.get(STOCK).get_data(as_text=True)  # shown once
    pdf = client.post(
        f"{STOCK}/labels",
        data={"kits": "\n".join(_numbers(ctx)), "csrf_token": token},
    )
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    first = _numbers(ctx)[0]
    bad = client.post(f"{STOCK}/damaged", data={"kit_number": first, "reason": "", "csrf_token": token})
    assert bad.headers["Location"].endswith("#damaged")
    assert "Reason: is required" in client.get(STOCK).get_data(as_text=True)
    client.post(f"{STOCK}/damaged", data={"kit_number": first, "reason": "tube cracked", "csrf_token": token})
    page = client.get(STOCK).get_data(as_text=True)
    assert "Tube set recorded as damaged" in page
    _french(client, STOCK)
    client.post(STOCK, data={"site": "L1", "kit_type": "BIOMARKER", "count": "x", "csrf_token": token})
    french = client.get(STOCK).get_data(as_text=True)
    assert "Kits de tubes" in french and "un nombre entier de 1 à 500" in french


def _numbers(ctx: ServiceContext) -> list[str]:
    from sqlalchemy import select

    from allocator.models import SampleKit

    with ctx.db.reading() as s:
        return list(s.execute(select(SampleKit.kit_number).order_by(SampleKit.id)).scalars())


def _registered(ctx: ServiceContext) -> str:
    investigator = ready_cohort(ctx)
    result = register.register(
        ctx,
        investigator,
        COHORT,
        register.RegistrationRequest(site="L1", screening_number="L1-0001", eligibility=COHORT_ELIGIBLE),
        ALL_SITES,
    )
    number = result.samples[0].kit_number
    assert number
    return number


@pytest.mark.req("LBL-09", "DIB-09")
def test_the_nurse_collects_a_sample_by_scanning_the_tube_set(
    ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    number = _registered(ctx)
    nurse = make_user(ctx, "nurse-l1", "nurse", trial=COHORT, site="L1")
    clock.current = D3_MORNING
    client = signed_in("nurse-l1", nurse.one_time_password)
    assert "Sample collection scan" in client.get(f"/trials/{COHORT}").get_data(as_text=True)
    page = client.get(COLLECT).get_data(as_text=True)
    assert 'data-scan-check="/trials/IMMUNOSEPSIS-4/samples/collect/check"' in page
    token = csrf_token(client, COLLECT)
    tube = kitlib.build_payload(COHORT, number, kitlib.sample_unit(2), rules.mac(ctx))
    drug = kitlib.build_payload(COHORT, number, "K", rules.mac(ctx))
    check = client.post(
        f"{COLLECT}/check",
        json={"scan": drug, "subject_number": "L1-001", "label": "D3"},
        headers={"X-CSRFToken": token},
    )
    assert check.get_json() == {
        "ok": False,
        "field": "payload",
        "message": "a drug kit's label, not a tube set's",
    }
    right = client.post(
        f"{COLLECT}/check",
        json={"scan": tube, "subject_number": "L1-001", "label": "D3"},
        headers={"X-CSRFToken": token},
    ).get_json()
    assert right["ok"] and right["message"] == "right participant, right sample"
    form = {"subject_number": "L1-001", "label": "D3", "csrf_token": token}
    refused = client.post(COLLECT, data={**form, "payload": drug})
    assert refused.status_code == 303 and refused.headers["Location"].endswith(COLLECT)
    shown = client.get(COLLECT).get_data(as_text=True)
    assert "Tube set label: a drug kit&#39;s label, not a tube set&#39;s" in shown
    assert "Nothing was recorded." in shown and 'value="L1-001"' in shown
    late = client.post(COLLECT, data={**form, "payload": tube, "collected_at": "2026-03-04T06:00"})
    assert late.status_code == 303
    assert "Why recorded late: a late entry needs a reason" in client.get(COLLECT).get_data(as_text=True)
    done = client.post(COLLECT, data={**form, "payload": tube, "collected_at": "2026-03-04T09:45"})
    assert done.status_code == 303
    recorded = client.get(COLLECT).get_data(as_text=True)
    assert (
        "✔ L1-001 · D3" in recorded
        and f"Tube set {number[:4]}-{number[4:]} recorded as collected" in recorded
    )
    assert "recorded as collected" not in client.get(COLLECT).get_data(as_text=True)  # a reload: nothing new
    subject = client.get(f"/trials/{COHORT}/subjects/L1-001").get_data(as_text=True)
    assert f"{number[:4]}-{number[4:]}" in subject and "collected" in subject, subject[-3000:]
    assert "Nurse L1" in subject  # who drew it
    assert "was not taken" not in subject  # the nurse does not record a missed sample
    _french(client, COLLECT)
    client.post(COLLECT, data={**form, "payload": tube})
    french = client.get(COLLECT).get_data(as_text=True)
    assert "Ce prélèvement a déjà été fait" in french and "déjà prélevé" in french


@pytest.mark.req("AUD-01")
def test_the_investigator_records_a_missed_sample_with_its_reason(
    ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    number = _registered(ctx)
    clock.current = D3_MORNING  # a sample is recorded missed once its window has opened
    client = signed_in("inv-l1", GOOD_PASSWORD)
    path = f"/trials/{COHORT}/subjects/L1-001"
    page = client.get(path).get_data(as_text=True)
    assert f"{number[:4]}-{number[4:]}" in page and "The D3 sample was not taken" in page
    token = csrf_token(client, path)
    refused = client.post(f"{path}/samples/D3/missed", data={"reason": "", "csrf_token": token})
    assert refused.headers["Location"].endswith("#missed-D3")
    assert "Why the sample was not taken: is required" in client.get(path).get_data(as_text=True)
    done = client.post(
        f"{path}/samples/D3/missed", data={"reason": "patient in CT scan", "csrf_token": token}
    )
    assert done.status_code == 303
    page = client.get(path).get_data(as_text=True)
    assert "Sample recorded as missed." in page and "patient in CT scan" in page
    assert "The D3 sample was not taken" not in page
    # Recorded missed again from a page left open, in French: the refusal is shown though the form
    # is gone, and the sample's status is in French words too, not `missed`.
    _french(client, path)
    again = client.post(f"{path}/samples/D3/missed", data={"reason": "encore", "csrf_token": token})
    assert again.status_code == 303
    french = client.get(again.headers["Location"]).get_data(as_text=True)
    assert "le prélèvement D3 de L1-001 est manqué : il ne peut pas être enregistré comme manqué" in french
    assert re.search(r"Prélèvement\s:\sest manqué", french) and "est missed" not in french


@pytest.mark.req("DIB-03")
def test_a_missed_record_made_by_mistake_is_withdrawn_from_the_participants_page(
    ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    number = _registered(ctx)
    clock.current = D3_MORNING
    client = signed_in("inv-l1", GOOD_PASSWORD)
    path = f"/trials/{COHORT}/subjects/L1-001"
    token = csrf_token(client, path)
    assert "recorded missed by mistake" not in client.get(path).get_data(as_text=True)
    client.post(f"{path}/samples/D3/missed", data={"reason": "wrong patient", "csrf_token": token})
    page = client.get(path).get_data(as_text=True)
    assert "The D3 sample was recorded missed by mistake" in page
    refused = client.post(f"{path}/samples/D3/missed/withdraw", data={"reason": "", "csrf_token": token})
    assert refused.status_code == 303 and refused.headers["Location"].endswith("#unmissed-D3")
    shown = client.get(path).get_data(as_text=True)
    assert "Why the missed record is withdrawn: is required" in shown and 'aria-invalid="true"' in shown
    done = client.post(
        f"{path}/samples/D3/missed/withdraw",
        data={"reason": "recorded on the wrong page", "csrf_token": token},
    )
    assert done.status_code == 303 and done.headers["Location"].endswith(path)
    page = client.get(path).get_data(as_text=True)
    assert "The missed record is withdrawn: the sample is to be collected." in page
    assert "The D3 sample was not taken" in page and "recorded missed by mistake" not in page
    assert register.registration(ctx, COHORT, "L1-001", ALL_SITES).samples[0].status == "assigned"
    assert number


@pytest.mark.req("DIB-09")
@pytest.mark.parametrize("typed", ["0001-01-01T00:00", "9999-12-31T23:59", "yesterday"])
def test_a_collection_time_out_of_this_era_is_named_not_a_500(
    ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient], typed: str
) -> None:
    """The review of the merged cohort: a year 0001 overflowed the conversion to UTC (a 500)."""
    number = _registered(ctx)
    nurse = make_user(ctx, "nurse-l1", "nurse", trial=COHORT, site="L1")
    clock.current = D3_MORNING
    client = signed_in("nurse-l1", nurse.one_time_password)
    token = csrf_token(client, COLLECT)
    tube = kitlib.build_payload(COHORT, number, kitlib.sample_unit(1), rules.mac(ctx))
    form = {"subject_number": "L1-001", "label": "D3", "payload": tube, "csrf_token": token}
    answer = client.post(COLLECT, data={**form, "collected_at": typed, "late_reason": "on paper first"})
    assert answer.status_code == 303
    page = client.get(COLLECT).get_data(as_text=True)
    assert "date and time" in page
    assert register.registration(ctx, COHORT, "L1-001", ALL_SITES).samples[0].status == "assigned"


@pytest.mark.req("DIB-09")
def test_a_time_the_clocks_skipped_is_refused_by_name(
    ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """02:30 on 29 March 2026 never showed on a clock in Paris (02:00 became 03:00): it was taken as
    03:30 without a word. Refused beside the field, nothing recorded; in French too."""
    number = _registered(ctx)
    nurse = make_user(ctx, "nurse-l1", "nurse", trial=COHORT, site="L1")
    clock.current = D3_MORNING
    client = signed_in("nurse-l1", nurse.one_time_password)
    token = csrf_token(client, COLLECT)
    tube = kitlib.build_payload(COHORT, number, kitlib.sample_unit(1), rules.mac(ctx))
    form = {"subject_number": "L1-001", "label": "D3", "payload": tube, "csrf_token": token}
    skipped = {**form, "collected_at": "2026-03-29T02:30", "late_reason": "on paper first"}
    assert client.post(COLLECT, data=skipped).status_code == 303
    page = client.get(COLLECT).get_data(as_text=True)
    assert "this time did not exist that day: the clocks went forward" in page
    _french(client, COLLECT)
    client.post(COLLECT, data=skipped)
    french = client.get(COLLECT).get_data(as_text=True)
    assert "cette heure n&#39;a pas existé ce jour-là" in french
    assert "heure sautée par le passage à l’heure d’été" in french and "summer time" not in french
    assert register.registration(ctx, COHORT, "L1-001", ALL_SITES).samples[0].status == "assigned"


@pytest.mark.req("BLD-01", "AUD-01")
def test_a_randomized_trials_staff_cannot_act_on_samples_there(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """The review of the merged cohort: nurses, investigators and trial managers hold the sample
    permissions in every study, and the scan check, the missed sample, the label sheet and damage
    did not ask whether the study was a cohort: an IFNG-PAIS nurse's scan check was answered and
    audited in IFNG-PAIS. They are now refused there before anything is read or recorded."""
    from tests.support import events, load_ifn

    load_ifn(ctx)
    nurse = make_user(ctx, "nurse-p1", "nurse", trial="IFNG-PAIS", site="P1")
    manager = make_user(ctx, "tman-p", "trial_manager", trial="IFNG-PAIS")
    investigator = make_user(ctx, "inv-p1", "investigator", trial="IFNG-PAIS", site="P1")
    base = "/trials/IFNG-PAIS"
    client = signed_in("nurse-p1", nurse.one_time_password)
    token = csrf_token(client, f"{base}/bedside")
    check = client.post(
        f"{base}/samples/collect/check",
        json={"scan": "12345678", "subject_number": "P1-001", "label": "D3"},
        headers={"X-CSRFToken": token},
    )
    assert check.status_code == 409
    boss = signed_in("tman-p", manager.one_time_password)
    token = csrf_token(boss, base)
    for path, data in (
        (f"{base}/tube-sets", {"site": "P1", "kit_type": "BIOMARKER", "count": "2"}),
        (f"{base}/tube-sets/labels", {"kits": "12345678"}),
        (f"{base}/tube-sets/damaged", {"kit": "12345678", "reason": "broken"}),
    ):
        assert boss.post(path, data={**data, "csrf_token": token}).status_code == 409, path
    inv = signed_in("inv-p1", investigator.one_time_password)
    token = csrf_token(inv, base)
    missed = inv.post(f"{base}/subjects/P1-001/samples/D3/missed", data={"reason": "x", "csrf_token": token})
    assert missed.status_code == 409
    assert events(ctx, "sample.scan_refused") == [] and events(ctx, "sample_kit.generated") == []
