"""Pages of the observational cohort IMMUNOSEPSIS-4 (issue 20) hosted beside the randomized trial."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator.services.context import ServiceContext
from allocator.web import subjects as web_subjects
from tests.support import (
    COHORT,
    COHORT_ELIGIBLE,
    GOOD_PASSWORD,
    Clock,
    load_cohort,
    load_ifn,
    make_user,
    ready_cohort,
)
from tests.support.cohort import collected_samples
from tests.support.crowd import statements
from tests.web.conftest import csrf_token, without_tokens


@pytest.mark.req("VAL-03")
def test_the_cohort_page_shows_the_study_without_randomized_trial_facts(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    load_ifn(ctx)
    load_cohort(ctx)
    created = make_user(ctx, "tm-cohort", "trial_manager", trial="IMMUNOSEPSIS-4")
    make_user(ctx, "tm-ifn", "trial_manager")
    client = signed_in("tm-cohort", created.one_time_password)
    home = client.get("/")
    assert home.status_code == 200
    assert "IMMUNOSEPSIS 4" in home.get_data(as_text=True)
    page = client.get("/trials/IMMUNOSEPSIS-4")
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    html = page.get_data(as_text=True)
    assert "NCT04067674" in html and "69HCL19_0071" in html
    assert "EU CT number" not in html  # an observational cohort has none
    for randomized_only in ("Randomization lists", "Code-break sheets", "Strata", "Unblinding", "Randomized"):
        assert randomized_only not in html, randomized_only
    assert "Registered" in html
    # A user of the cohort only has no access to the randomized trial (and does not see it).
    assert "IFN-gamma PAIS" not in home.get_data(as_text=True)
    assert client.get("/trials/IFNG-PAIS").status_code in (403, 404)


def _form(ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]) -> FlaskClient:
    ready_cohort(ctx)
    return signed_in_with(signed_in, "inv-l1")


def signed_in_with(signed_in: Callable[[str, str], FlaskClient], username: str) -> FlaskClient:
    return signed_in(username, GOOD_PASSWORD)


@pytest.mark.req("RND-05", "RND-06")
def test_an_investigator_registers_a_patient_through_the_screening_form(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    client = _form(ctx, signed_in)
    trial_page = client.get(f"/trials/{COHORT}").get_data(as_text=True)
    assert "Register a patient" in trial_page and "Randomize a patient" not in trial_page
    # The randomization form's address shows a cohort its registration form.
    moved = client.get(f"/trials/{COHORT}/randomize").get_data(as_text=True)
    assert "Register a patient" in moved and f'action="/trials/{COHORT}/register"' in moved
    form = client.get(f"/trials/{COHORT}/register").get_data(as_text=True)
    assert "Register a patient" in form and "Stratification" not in form and "Highest lactate" in form
    data = {f"eligibility.{key}": value for key, value in COHORT_ELIGIBLE.items()}
    data |= {
        "site": "L1",
        "screening_number": "L1-0001",
        "csrf_token": csrf_token(client, f"/trials/{COHORT}/register"),
    }
    done = client.post(f"/trials/{COHORT}/register", data=data)
    assert done.status_code == 303, done.get_data(as_text=True)[:1500]
    assert done.headers["Location"].endswith(f"/trials/{COHORT}/subjects/L1-001")
    page = without_tokens(client.get(done.headers["Location"]).get_data(as_text=True))
    assert "L1-001" in page and "Registered. Plan the samples below." in page
    assert "Sample schedule" in page and "D3" in page and "BIOMARKER" in page
    for randomized_only in ("Randomization number", "Kits", "arm", "Arm", "unblind", "Unblind"):
        assert randomized_only not in page, randomized_only
    again = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Registered. Plan the samples below." not in again  # said once
    listing = client.get(f"/trials/{COHORT}/subjects").get_data(as_text=True)
    assert "L1-001" in listing and "Randomized" not in listing

    data |= {"screening_number": "L1-0002", "eligibility.age": "16", "eligibility.non_opposition": "no"}
    refused = client.post(f"/trials/{COHORT}/register", data=data)
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "Not registered" in text and "Not randomized" not in text
    assert "Age" in text and "Non-opposition" in text
    log = client.get(f"/trials/{COHORT}/screening").get_data(as_text=True)
    assert "L1-0001" in log and "L1-0002" in log
    assert "registered as L1-001" in log and "randomized" not in log


def test_the_registration_form_reports_input_errors_by_field(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    client = _form(ctx, signed_in)
    data = {f"eligibility.{key}": value for key, value in COHORT_ELIGIBLE.items()}
    data |= {
        "site": "L1",
        "screening_number": "L1-0001",
        "eligibility.lactate": "high",
        "csrf_token": csrf_token(client, f"/trials/{COHORT}/register"),
    }
    response = client.post(f"/trials/{COHORT}/register", data=data)
    assert response.status_code == 422
    assert 'aria-invalid="true"' in response.get_data(as_text=True)
    # The randomized trial's registration URL does not exist for it.
    load_ifn(ctx)
    assert client.get("/trials/IFNG-PAIS/register").status_code in (403, 404, 409)


def test_the_lab_calendar_shows_days_off_and_takes_closures(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    client = _form(ctx, signed_in)  # the investigator reads the calendar, without the form
    page = client.get(f"/trials/{COHORT}/lab-calendar").get_data(as_text=True)
    assert "Central lab calendar" in page and "Easter Monday" in page and "Enter a closure" not in page
    manager = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    tm = signed_in("tm-cohort", manager.one_time_password)
    path = f"/trials/{COHORT}/lab-calendar"
    token = csrf_token(tm, path)
    refused = tm.post(f"{path}/closures", data={"day": "2026-03-04", "reason": "", "csrf_token": token})
    assert refused.status_code == 303 and refused.headers["Location"].endswith("#closure")
    again = tm.get(path).get_data(as_text=True)
    assert 'aria-invalid="true"' in again and "2026-03-04" in again  # what was typed is kept
    done = tm.post(
        f"{path}/closures", data={"day": "2026-03-04", "reason": "cytometer maintenance", "csrf_token": token}
    )
    assert done.status_code == 303
    shown = tm.get(path).get_data(as_text=True)
    assert "The closure is recorded" in shown and "Lab closed: cytometer maintenance" in shown
    french = tm.post("/language", data={"language": "fr", "csrf_token": csrf_token(tm, path)})
    assert french.status_code in (302, 303)
    assert "Lundi de Pâques" in tm.get(path).get_data(as_text=True)
    # Entered by mistake: withdrawn, in French, with a reason; it stays in the list, marked.
    token = csrf_token(tm, path)
    refused = tm.post(f"{path}/withdrawals", data={"day": "2026-03-04", "reason": "", "csrf_token": token})
    assert refused.status_code == 303 and refused.headers["Location"].endswith("#withdraw")
    assert "Pourquoi elle est retirée" in tm.get(path).get_data(as_text=True)
    done = tm.post(
        f"{path}/withdrawals", data={"day": "2026-03-04", "reason": "mauvais jour", "csrf_token": token}
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("#withdraw")
    shown = tm.get(path).get_data(as_text=True)
    assert "La fermeture est retirée" in shown and "<s>" in shown and "mauvais jour" in shown
    assert "cytometer maintenance" in shown  # the closure itself stays in the list
    assert "Retirer une fermeture saisie par erreur" not in tm.get(path).get_data(as_text=True)  # none left


def test_a_cohort_site_is_activated_without_code_break_material(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    load_cohort(ctx)
    manager = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    client = signed_in("tm-cohort", manager.one_time_password)
    page = client.get(f"/trials/{COHORT}/sites").get_data(as_text=True)
    assert "Activate the site" in page and "Code-break material" not in page and "code-break" not in page
    done = client.post(
        f"/trials/{COHORT}/sites/L1/activate",
        data={
            "approval_date": "2026-01-05",
            "delegation_log_date": "2026-02-01",
            "reason": "approvals received",
            "csrf_token": csrf_token(client, f"/trials/{COHORT}/sites"),
        },
    )
    assert done.status_code in (302, 303)
    assert "L1 – Lyon site 1" in client.get(f"/trials/{COHORT}").get_data(as_text=True)
    assert ">active<" in client.get(f"/trials/{COHORT}/sites").get_data(as_text=True)


@pytest.mark.req("UNB-10")
def test_the_cohort_trial_manager_locks_the_database_and_nothing_is_unblinded(
    app: Flask, ctx: ServiceContext, clock: Clock, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """The study opens with its first site; its trial manager reaches the lock from the study's page
    and signs it. There is no final unblinding of an observational study, on the page or by a POST."""
    from allocator.audit import Actor
    from allocator.services.closeout import state
    from allocator.services.signatures import SignatureRequest
    from allocator.trialdef import NotRandomized

    ready_cohort(ctx)
    created = make_user(ctx, "tm-cohort", "trial_manager", trial=COHORT)
    client = signed_in("tm-cohort", created.one_time_password)
    study = client.get(f"/trials/{COHORT}").get_data(as_text=True)
    assert f'href="/trials/{COHORT}/closeout">Database lock</a>' in study
    page = client.get(f"/trials/{COHORT}/closeout").get_data(as_text=True)
    assert "An observational study goes from active to locked" in page and "unblinding" not in page.lower()
    token = csrf_token(client, f"/trials/{COHORT}/closeout")
    done = client.post(
        f"/trials/{COHORT}/lock",
        data={"reason": "last sample received", "password": GOOD_PASSWORD, "csrf_token": token},
    )
    assert done.status_code == 303
    locked = client.get(done.headers["Location"]).get_data(as_text=True)
    assert f"{COHORT} is now locked" in locked and "Unblind the trial" not in locked
    assert state.status(ctx, COHORT) == "locked"
    manager = Actor(created.user_id, "tm-cohort", "TM", "trial_manager", None, "test")
    with pytest.raises(NotRandomized):  # refused before anything is signed or read
        state.unblind_trial(ctx, manager, COHORT, reason="x", signature=SignatureRequest(GOOD_PASSWORD))
    assert state.status(ctx, COHORT) == "locked"
    # A crafted POST by a role that may unblind: refused, Post/Redirect/Get, nothing signed.
    from allocator.services import auth
    from tests.web.conftest import TotpSignedIn

    stat = make_user(ctx, "stat-cohort", "unblinded_statistician", trial=COHORT)
    auth.change_password(
        ctx,
        stat.user_id,
        stat.one_time_password,
        GOOD_PASSWORD,
        GOOD_PASSWORD,
        auth.Client("192.0.2.1", "t", "s"),
    )
    signed = TotpSignedIn(app, ctx, clock, stat.user_id, "stat-cohort")
    statistician = signed.client
    refused = statistician.post(
        f"/trials/{COHORT}/final-unblinding",
        data={
            "reason": "x",
            **signed.signature(),
            "csrf_token": csrf_token(statistician, f"/trials/{COHORT}/closeout"),
        },
    )
    assert refused.status_code == 303 and refused.headers["Location"].endswith(f"/trials/{COHORT}/closeout")
    shown = statistician.get(refused.headers["Location"]).get_data(as_text=True)
    assert "observational study" in shown and state.status(ctx, COHORT) == "locked"


@pytest.mark.req("REP-08")
def test_the_studys_subject_page_is_paged_in_a_few_statements_whatever_the_participants(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: the observational study's subject page read every registration with every
    planned sample; it reads a page, in registration order, with a link to the next one, in as
    many statements for 2 participants as for 5, as the randomized trial's list and the API do."""
    investigator = ready_cohort(ctx)
    monkeypatch.setattr(web_subjects, "SUBJECT_PAGE", 2)
    client = signed_in("inv-l1", GOOD_PASSWORD)
    path = f"/trials/{COHORT}/subjects"

    def listed(html: str) -> list[str]:
        return re.findall(r'<td><a href="[^"]*/subjects/(L1-\d{3})">', html)

    collected_samples(ctx, investigator, 2)
    with statements(ctx.db) as few:
        first = client.get(path).get_data(as_text=True)
    assert listed(first) == ["L1-001", "L1-002"] and "Next page" not in first
    collected_samples(ctx, investigator, 3)
    with statements(ctx.db) as more:
        first = client.get(path).get_data(as_text=True)
    assert more.count == few.count, (few.count, more.count)
    assert listed(first) == ["L1-001", "L1-002"]
    link = re.search(r'<a class="button" href="\?([^"]+)">Next page</a>', first)
    assert link is not None and "after=L1-002" in link.group(1)
    second = client.get(f"{path}?{link.group(1).replace('&amp;', '&')}").get_data(as_text=True)
    assert listed(second) == ["L1-003", "L1-004"]
    third = client.get(f"{path}?after=L1-004").get_data(as_text=True)
    assert listed(third) == ["L1-005"] and "Next page" not in third
    bad = client.get(f"{path}?after=L9-999")
    assert bad.status_code == 422 and "L9-999" in bad.get_data(as_text=True)
    assert listed(client.get(f"{path}?after=%20").get_data(as_text=True)) == ["L1-001", "L1-002"]
    token = csrf_token(client, "/")
    client.post("/language", data={"language": "fr", "next": "/", "csrf_token": token})
    quoted = client.get(f"{path}?after=it%27s").get_data(as_text=True)
    assert "within your reach" not in quoted and "à votre portée" in quoted


def test_kit_lists_shipments_and_unblinding_drills_are_refused_in_an_observational_study(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """The fuzzing helper found both forms answering 500 whatever was typed: a shipment's kits are
    balanced by the arms' ratio (a division by zero without arms), a drill draws an arm. Both are
    refused, naming the study, and nothing is created."""
    from datetime import date

    from sqlalchemy import func, select

    from allocator.models import DrillSubject, Kit, Shipment
    from allocator.permissions import Scope
    from allocator.services import unblinding_drills
    from allocator.services.errors import ObservationalStudy
    from allocator.services.supply import kit_lists, shipments
    from tests.support import CLI_ACTOR

    ready_cohort(ctx)
    with pytest.raises(ObservationalStudy):
        shipments.create_shipment(ctx, CLI_ACTOR, COHORT, "L1", 2)
    with pytest.raises(ObservationalStudy):  # the review found the kit list's block size too
        kit_lists.generate_kit_list(
            ctx, CLI_ACTOR, COHORT, count=4, lot_code="LOT-1", expiry=date(2027, 6, 30)
        )
    with pytest.raises(ObservationalStudy):
        unblinding_drills.create_drill_subject(
            ctx, CLI_ACTOR, COHORT, "L1", "", scope=Scope(all_sites=True, site_ids=frozenset())
        )
    created = make_user(ctx, "tm-kits", "trial_manager", trial=COHORT)
    client = signed_in("tm-kits", created.one_time_password)
    page = f"/trials/{COHORT}/shipments"
    posted = client.post(
        page, data={"site": "L1", "count": "2", "csrf_token": csrf_token(client, f"/trials/{COHORT}")}
    )
    assert posted.status_code == 303  # Post/Redirect/Get, with the refusal in words
    shown = client.get(posted.headers["Location"]).get_data(as_text=True)
    assert "is an observational study: it has no arms, lists or drug kits" in shown
    with ctx.db.reading() as session:
        assert session.execute(select(func.count()).select_from(Shipment)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(DrillSubject)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Kit)).scalar_one() == 0
