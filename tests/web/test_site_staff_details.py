"""Issue 13 point 9, the smaller items site staff met: the authenticator key in groups of four and
kept on a reload until confirmed or cancelled; the ineligible check's "Close" (the log is already
written); the pharmacy queue in the site's time first, UTC beside; the "to be confirmed" notes
(with the definition file's field names) kept from site staff; yes/no questions grouped under
their question with big radios. (The kit label's "Jour / Day" and 10^6: tests/unit/kits.)"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, Clock, ReadyTrial, make_user
from tests.web.conftest import csrf_token, https_client, sign_in

TRIAL = "IFNG-PAIS"
RANDOMIZE = f"/trials/{TRIAL}/randomize"
KEY = re.compile(r'data-testid="totp-secret"[^>]*>([A-Z2-7 ]+)<')


def client_for(app: Flask, username: str, language: str = "en") -> FlaskClient:
    client = https_client(app)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    sign_in(client, username, GOOD_PASSWORD)
    return client


def key_on(page: str) -> str:
    match = KEY.search(page)
    assert match, "no authenticator key on the page"
    return match.group(1)


@pytest.mark.req("ACC-04")
def test_the_authenticator_key_is_grouped_and_kept_on_reload_until_cancelled(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    nurse = client_for(app, "nurse-p1")
    first = key_on(nurse.get("/account/totp/enroll").get_data(as_text=True))
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4}){7}", first), first  # 32 characters, 8 groups
    assert key_on(nurse.get("/account/totp/enroll").get_data(as_text=True)) == first  # a reload
    cancelled = nurse.post(
        "/account/totp/enroll",
        data={"action": "cancel", "csrf_token": csrf_token(nurse, "/account/totp/enroll")},
    )
    assert cancelled.status_code == 303
    assert key_on(nurse.get("/account/totp/enroll").get_data(as_text=True)) != first
    french = client_for(app, "pharm-p1", "fr").get("/account/totp/enroll").get_data(as_text=True)
    assert "Ou tapez cette clé à la main (les espaces ne comptent pas)" in french
    assert "Annuler : oublier cette clé" in french


@pytest.mark.req("RND-06")
def test_the_ineligible_check_closes_without_a_second_recording(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    data = {f"eligibility.{k}": str(v) for k, v in ELIGIBLE.items()}
    data.update({"site": "P1", "screening_number": "P1-0043", "strata.admission_cause": "septic"})
    data["eligibility.sofa_24h"] = "3"
    for language, close in (("en", "Close"), ("fr", "Fermer")):
        inv = client_for(app, "inv-p1", language)
        page = inv.post(RANDOMIZE, data={**data, "csrf_token": csrf_token(inv, RANDOMIZE)}).get_data(
            as_text=True
        )
        assert f'<a class="button primary" href="/trials/{TRIAL}">{close}</a>' in page
        assert 'name="step" value="confirm"' not in page
        assert "Record in the screening log" not in page and "Enregistrer dans le registre" not in page


@pytest.mark.req("DIB-01")
def test_the_pharmacy_queue_shows_the_site_time_first_and_utc_beside(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, clock: Clock
) -> None:
    from tests.support import randomize as randomize_one

    randomize_one(ctx, world, "P1-0001")
    page = client_for(app, "pharm-p1").get(f"/trials/{TRIAL}/pharmacy").get_data(as_text=True)
    moment = re.search(r"<td>([A-Z][a-z]{2} \d{1,2}, \d{4}, \d\d:\d\d \(\d\d:\d\d UTC\))</td>", page)
    assert moment, page[page.find("<tbody>") : page.find("</tbody>")]
    local, utc = re.findall(r"\d\d:\d\d", moment.group(1))
    assert local != utc  # Paris first, then UTC


@pytest.mark.req("ACC-01")
def test_the_definitions_to_be_confirmed_notes_are_not_shown_to_site_staff(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    page_path = f"/trials/{TRIAL}"
    for username in ("inv-p1", "pharm-p1", "nurse-p1"):
        page = client_for(app, username).get(page_path).get_data(as_text=True)
        assert "To be confirmed" not in page and "sponsor.address" not in page, username
    manager = make_user(ctx, "manager-1", "trial_manager")
    manager_client = https_client(app)
    sign_in(manager_client, "manager-1", manager.one_time_password)
    shown = manager_client.get(page_path, follow_redirects=True).get_data(as_text=True)
    assert "To be confirmed against the protocol" in shown and "sponsor.address" in shown
    # The API's trial summary keeps the same rule (it gave the notes to every role).
    for username, sees in (("inv-p1", False), ("nurse-p1", False), ("manager-1", True)):
        token = users.create_token(ctx, CLI_ACTOR, username, "edc").token
        summary = app.test_client().get(
            f"/api/v1/trials/{TRIAL}",
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        assert summary.status_code == 200
        notes = summary.get_json().get("unconfirmed")
        assert bool(notes and any(n["field"] == "sponsor.address" for n in notes)) is sees, username


@pytest.mark.req("RND-05")
def test_each_yes_no_question_is_a_group_named_by_its_question(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    page = client_for(app, "inv-p1").get(RANDOMIZE).get_data(as_text=True)
    groups = re.findall(
        r'<fieldset class="question"[^>]*>\s*<legend>(.*?)</legend>(.*?)</fieldset>', page, re.S
    )
    assert len(groups) >= 10
    for legend, body in groups:
        assert legend.strip() and body.count('type="radio"') == 2
        assert body.count('<label class="choice">') == 2  # each radio inside its label: a big target
