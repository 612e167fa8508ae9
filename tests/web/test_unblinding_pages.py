"""Unblinding through the pages and the API, as the users work: the investigator in three screens,
the monitor who sees the event and the flag but never the arm, the signed close-out."""

from __future__ import annotations

import csv
import io
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator import crypto
from allocator.models import AuditEvent, Dispensation, Kit, Subject, Unblinding
from allocator.permissions import Scope
from allocator.services import lookups
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from tests.support import (
    CLI_ACTOR,
    GOOD_PASSWORD,
    Clock,
    ReadyTrial,
    make_actor,
    randomize,
)
from tests.web.conftest import TotpSignedIn, csrf_token, https_client, sign_in

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
LABELS = {"A": "Interferon gamma-1b", "B": "Placebo"}
TREATMENT = re.compile(r"interferon|placebo|imukin|saline|nacl|gamma", re.IGNORECASE)
FORM = {
    "reason_category": "serious_adverse_event",
    "reason": "Anaphylaxis after D2; the choice of treatment depends on the product.",
    "confirm": "yes",
    "password": GOOD_PASSWORD,
}


def true_arm(ctx: ServiceContext, number: str) -> str:
    with ctx.db.reading() as s:
        kit = (
            s.execute(
                select(Kit)
                .join(Dispensation, Dispensation.kit_id == Kit.id)
                .join(Subject, Subject.id == Dispensation.subject_id)
                .where(Subject.subject_number == number)
            )
            .scalars()
            .first()
        )
        assert kit is not None
    return crypto.open_arm(
        ctx.ring, kit.sealed_arm, crypto.Binding(TRIAL, "kit", kit.kit_number, "sealed_arm")
    )


def text_of(html: str, ctx: ServiceContext | None = None) -> str:
    """The visible text, without the trial's public title and definition file name (which name both
    arms, as a trial's title does)."""
    text = re.sub(r"<[^>]+>", " ", html).replace("ifn-gamma-pais.toml", "")
    if ctx is not None:
        text = text.replace(lookups.trial_definition(ctx, TRIAL).title, "")
    return text


@pytest.fixture
def investigator(app: Flask, world: ReadyTrial) -> FlaskClient:
    client = https_client(app)
    sign_in(client, "inv-p1", GOOD_PASSWORD)
    return client


@pytest.mark.req("UNB-01", "UNB-04", "UNB-05", "BLD-14")
def test_an_investigator_unblinds_in_three_screens_from_the_home_page(
    ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    number = randomize(ctx, world, "P1-0001")
    # Screen 1: the home page carries the emergency link for each trial where one is investigator.
    home = investigator.get("/").get_data(as_text=True)
    link = re.search(r'href="([^"]+/unblind)"', home)
    assert link is not None and link.group(1) == f"/trials/{TRIAL}/unblind"
    # Screen 2: the form.
    form = investigator.get(link.group(1))
    assert form.status_code == 200 and "Emergency unblinding" in form.get_data(as_text=True)
    # Screen 3: the arm, once, not cached, on the GET the POST redirects to (Post/Redirect/Get).
    posted = investigator.post(
        link.group(1), data={**FORM, "subject": number, "csrf_token": csrf_token(investigator, link.group(1))}
    )
    assert posted.status_code == 303
    result = investigator.get(posted.headers["Location"])
    page = result.get_data(as_text=True)
    assert result.status_code == 200 and result.headers["Cache-Control"] == "no-store"
    assert LABELS[true_arm(ctx, number)] in page and "meaning: emergency unblinding" in page
    assert number not in result.headers.get("Content-Disposition", "")
    # Nothing on the subject page shows the arm afterwards; it says "blind broken".
    subject_page = investigator.get(f"/trials/{TRIAL}/subjects/{number}").get_data(as_text=True)
    assert "blind broken" in subject_page and not TREATMENT.search(text_of(subject_page))


@pytest.mark.req("UNB-04", "UNB-02")
def test_an_incomplete_form_names_its_fields_and_reveals_nothing(
    ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    number = randomize(ctx, world, "P1-0001")
    path = f"/trials/{TRIAL}/unblind"
    response = investigator.post(
        path, data={"subject": number, "reason": "x", "csrf_token": csrf_token(investigator, path)}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    for field in ("reason_category", "reason", "confirm"):  # each error beside its field (issue 13)
        assert f'id="{field}-error"' in page and f'href="#{field}"' in page
    assert not TREATMENT.search(text_of(page).replace("Emergency unblinding", ""))
    wrong = investigator.post(
        path,
        data={**FORM, "subject": number, "password": "wrong", "csrf_token": csrf_token(investigator, path)},
    )
    wrong_page = wrong.get_data(as_text=True)
    assert wrong.status_code == 401 and 'id="password-error">is wrong' in wrong_page
    many = investigator.post(
        path, data={**FORM, "subject": "*", "csrf_token": csrf_token(investigator, path)}
    )
    assert many.status_code == 400


@pytest.mark.req("UNB-05", "BLD-07")
def test_the_monitor_sees_the_event_and_the_flag_never_the_arm(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    make_actor(ctx, "monitor1", "monitor")
    number = randomize(ctx, world, "P1-0001")
    path = f"/trials/{TRIAL}/unblind"
    investigator.post(path, data={**FORM, "subject": number, "csrf_token": csrf_token(investigator, path)})
    monitor = https_client(app)
    sign_in(monitor, "monitor1", GOOD_PASSWORD)
    pages = {
        "subject": monitor.get(f"/trials/{TRIAL}/subjects/{number}"),
        "subjects": monitor.get(f"/trials/{TRIAL}/subjects"),
        "audit": monitor.get(f"/trials/{TRIAL}/audit"),
        "api": monitor.get(f"/api/v1/trials/{TRIAL}/subjects/{number}"),
    }
    assert all(r.status_code == 200 for r in pages.values())
    assert "blind broken" in pages["subject"].get_data(as_text=True)
    assert pages["api"].get_json()["blind_broken"] is True
    assert "unblinding.emergency" in pages["audit"].get_data(as_text=True)
    for name, response in pages.items():
        body = response.get_data(as_text=True)
        assert not TREATMENT.search(text_of(body, ctx)), name
        assert '"arm"' not in body, name


@pytest.mark.req("UNB-01", "UNB-02", "UNB-03", "UNB-04")
def test_the_api_unblinds_one_subject_of_ones_own_site(
    ctx: ServiceContext, world: ReadyTrial, app: Flask
) -> None:
    number = randomize(ctx, world, "P1-0001")
    other = randomize(ctx, world, "P2-0001", "P2")
    client = app.test_client()

    def call(subject: str, body: object, username: str = "inv-p1") -> tuple[int, dict[str, object], str]:
        token = users.create_token(ctx, CLI_ACTOR, username, "edc").token
        response = client.post(
            f"/api/v1/trials/{TRIAL}/subjects/{subject}/unblind",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        return response.status_code, response.get_json(), response.headers.get("Cache-Control", "")

    good = {"reason_category": "serious_adverse_event", "reason": FORM["reason"], "password": GOOD_PASSWORD}
    assert call(number, {**good, "reason": ""})[0] == 422
    status, problem, _ = call(number, {**good, "password": "wrong"})
    assert status == 401 and problem["type"] == "urn:allocator:problem:signature-refused"
    assert call(number, {**good, "reason": ["a", "b"]})[0] == 400
    assert call("*", good)[0] == 400
    assert call(number, {**good, "subjects": [number, other]})[0] == 400
    assert call(number, {**good, "subject": other})[0] == 422  # an unknown field is refused
    status, problem, _ = call(other, good)
    assert status == 403 and "arm" not in problem
    with ctx.db.reading() as s:
        refused = s.execute(select(AuditEvent).where(AuditEvent.action == "unblinding.refused")).scalar_one()
    assert refused.object_id == other
    status, body, cache = call(number, good)
    assert status == 200 and cache == "no-store"
    assert body["arm"] == true_arm(ctx, number) and body["subject_number"] == number
    assert body["drill"] is False  # UNB-11: only a drill subject's answer says drill
    assert set(body) == {
        "drill",
        "arm",
        "arm_label",
        "product",
        "subject_number",
        "site",
        "unblinding_id",
        "unblinded_at",
        "signature",
    }


@pytest.mark.req("UNB-09")
def test_an_accidental_unblinding_form_refuses_a_treatment_name_and_records_the_rest(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    number = randomize(ctx, world, "P1-0001")
    nurse = https_client(app)
    sign_in(nurse, "nurse-p1", GOOD_PASSWORD)
    path = f"/trials/{TRIAL}/unblinding/accidental"
    data = {
        "subject": number,
        "occurred_at": "2026-03-02T08:15",
        "persons_unblinded": "Night nurse, P1",
        "how": "The preparation note saying placebo was left with the syringe.",
        "impact": "One nurse unblinded for one subject.",
        "actions": "Note removed; pharmacy retrained.",
    }
    refused = nurse.post(path, data={**data, "csrf_token": csrf_token(nurse, path)})
    assert refused.status_code == 422 and 'id="how-error"' in refused.get_data(as_text=True)
    ancient = nurse.post(
        path, data={**data, "occurred_at": "0001-01-01T00:00", "csrf_token": csrf_token(nurse, path)}
    )
    assert ancient.status_code == 422 and 'id="occurred_at-error"' in ancient.get_data(
        as_text=True
    )  # was a 500
    data["how"] = "The pharmacy's preparation note was left with the syringe."
    done = nurse.post(path, data={**data, "csrf_token": csrf_token(nurse, path)})
    assert done.status_code == 303
    assert "blind broken" in nurse.get(f"/trials/{TRIAL}/subjects/{number}").get_data(as_text=True)


@pytest.mark.req("UNB-10", "BLD-09", "REP-06")
def test_the_planned_unblinding_walks_its_signed_states_and_the_listing_waits(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, clock: Clock, investigator: FlaskClient
) -> None:
    numbers = [randomize(ctx, world, f"P1-{n:04d}") for n in (1, 2)]
    manager_actor = make_actor(ctx, "manager", "trial_manager")
    assert manager_actor.user_id is not None
    manager = https_client(app)
    sign_in(manager, "manager", GOOD_PASSWORD)
    assert world.statistician.user_id is not None
    stat = TotpSignedIn(app, ctx, clock, world.statistician.user_id, "stat")
    listing = f"/trials/{TRIAL}/unblinded-listing"
    closeout = f"/trials/{TRIAL}/closeout"

    assert stat.client.get(listing).status_code == 409
    assert (
        stat.client.post(
            listing, data={**stat.signature(), "csrf_token": csrf_token(stat.client, closeout)}
        ).status_code
        == 409
    )
    treatment = f"/trials/{TRIAL}/subjects/{numbers[0]}/treatment"
    assert (
        investigator.post(treatment, data={"csrf_token": csrf_token(investigator, closeout)}).status_code
        == 409
    )

    page = manager.get(closeout).get_data(as_text=True)
    assert "Lock the database" in page and "Unblind the trial" not in page
    manager.post(
        f"/trials/{TRIAL}/lock",
        data={
            "reason": "last patient out",
            "password": GOOD_PASSWORD,
            "csrf_token": csrf_token(manager, closeout),
        },
    )
    page = stat.client.get(closeout).get_data(as_text=True)
    assert "locked" in page and "meaning: database lock" in page and "Unblind the trial" in page
    stat.client.post(
        f"/trials/{TRIAL}/final-unblinding",
        data={"reason": "SAP signed", **stat.signature(), "csrf_token": csrf_token(stat.client, closeout)},
    )
    assert "meaning: final unblinding" in stat.client.get(closeout).get_data(as_text=True)

    assert stat.client.get(listing).status_code == 200
    released = stat.client.post(
        listing, data={**stat.signature(), "csrf_token": csrf_token(stat.client, listing)}
    )
    assert released.status_code == 200 and released.mimetype == "text/csv"
    assert re.fullmatch(
        r'attachment; filename="IFNG-PAIS-unblinded-listing-\d{8}T\d{6}Z\.csv"',
        released.headers["Content-Disposition"],
    )
    rows = list(csv.reader(io.StringIO(released.get_data(as_text=True))))
    assert {r[0]: r[8] for r in rows[2:]} == {n: true_arm(ctx, n) for n in numbers}

    shown = investigator.post(treatment, data={"csrf_token": csrf_token(investigator, closeout)})
    assert shown.status_code == 200 and LABELS[true_arm(ctx, numbers[0])] in shown.get_data(as_text=True)


@pytest.mark.req("UNB-06")
def test_the_offline_registration_form_names_bad_fields(
    ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    path = f"/trials/{TRIAL}/unblind/offline"
    assert investigator.get(path).status_code == 200
    response = investigator.post(
        path,
        data={"sheet_number": "", "opened_at": "yesterday", "csrf_token": csrf_token(investigator, path)},
    )
    assert response.status_code == 422 and 'id="opened_at-error"' in response.get_data(as_text=True)
    for moment in ("0001-01-01T00:00", "0001-01-01"):  # overflowed the conversion to UTC: a 500
        response = investigator.post(
            path,
            data={"sheet_number": "", "opened_at": moment, "csrf_token": csrf_token(investigator, path)},
        )
        assert response.status_code == 422 and 'id="opened_at-error"' in response.get_data(as_text=True)
    response = investigator.post(
        path,
        data={
            "sheet_number": "CB-IFNG-PAIS-999999",
            "opened_at": "2026-03-02T03:10",
            "opened_by": "Dr Night",
            "opened_by_role": "physician",
            **{k: v for k, v in FORM.items() if k != "confirm"},
            "csrf_token": csrf_token(investigator, path),
        },
    )
    assert response.status_code == 404 and 'id="sheet_number-error"' in response.get_data(as_text=True)


def unblinding_count(ctx: ServiceContext) -> int:
    with ctx.db.reading() as s:
        return len(s.execute(select(Unblinding)).scalars().all())


@pytest.mark.req("UNB-05")
def test_a_reload_or_the_back_button_never_unblinds_again_and_shows_the_arm_once(
    ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    """Issue 13 point 3: reloading the result created a second unblinding (a second signature,
    record and notifications). Now the POST redirects; the GET shows the arm once to the person who
    unblinded, audited; a reload says when and to whom it was shown, without the arm."""
    number = randomize(ctx, world, "P1-0001")
    path = f"/trials/{TRIAL}/unblind"
    posted = investigator.post(
        path, data={**FORM, "subject": number, "csrf_token": csrf_token(investigator, path)}
    )
    assert posted.status_code == 303 and unblinding_count(ctx) == 1
    result = posted.headers["Location"]
    first = investigator.get(result)
    assert first.status_code == 200 and LABELS[true_arm(ctx, number)] in first.get_data(as_text=True)
    for _again in range(2):  # a reload, then the back button: the same GET
        again = investigator.get(result)
        text = again.get_data(as_text=True)
        assert again.status_code == 200 and again.headers["Cache-Control"] == "no-store"
        assert "was shown once" in text
        assert number in text and not TREATMENT.search(text_of(text, ctx)), text
    assert unblinding_count(ctx) == 1
    with ctx.db.reading() as s:
        shown = (
            s.execute(select(AuditEvent).where(AuditEvent.action == "unblinding.result_shown"))
            .scalars()
            .all()
        )
        signed = (
            s.execute(select(AuditEvent).where(AuditEvent.action == "unblinding.emergency")).scalars().all()
        )
    assert len(shown) == 1 and len(signed) == 1


def test_the_result_page_is_for_the_person_who_unblinded_only(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    number = randomize(ctx, world, "P1-0001")
    path = f"/trials/{TRIAL}/unblind"
    posted = investigator.post(
        path, data={**FORM, "subject": number, "csrf_token": csrf_token(investigator, path)}
    )
    other = https_client(app)
    sign_in(other, "inv-p2", GOOD_PASSWORD)
    response = other.get(posted.headers["Location"])
    assert response.status_code in (403, 404)
    assert not TREATMENT.search(text_of(response.get_data(as_text=True), ctx))
    # The unblinder still sees it once afterwards.
    assert LABELS[true_arm(ctx, number)] in investigator.get(posted.headers["Location"]).get_data(
        as_text=True
    )


def test_the_subject_is_chosen_in_a_list_of_the_sites_subjects_and_shown_back_large(
    ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    """Issue 13 point 8: the subject was typed (P1-001 and the screening number P1-0001 differ by
    one zero). Now it is chosen in a list of the site's subjects with their randomization date,
    and the chosen number is shown back large beside the confirmation."""
    mine = randomize(ctx, world, "P1-0001")
    theirs = randomize(ctx, world, "P2-0001", site="P2")
    path = f"/trials/{TRIAL}/unblind"
    page = investigator.get(path).get_data(as_text=True)
    select_html = re.search(r'<select id="subject" name="subject"[^>]*>(.*?)</select>', page, re.S)
    assert select_html is not None and '<input id="subject"' not in page
    options = re.findall(r'<option value="([^"]*)"', select_html.group(1))
    assert options == ["", mine] and theirs not in page  # own site only
    assert re.search(rf"{mine} · randomized \w", select_html.group(1))
    assert re.search(r'data-testid="chosen-subject"><output[^>]*>—<', page)
    chosen = investigator.get(f"{path}?subject={mine}").get_data(as_text=True)
    assert f'<option value="{mine}" selected>' in chosen
    assert re.search(rf'data-testid="chosen-subject"><output[^>]*>{mine}<', chosen)
    other = investigator.get(f"{path}?subject={theirs}").get_data(as_text=True)
    assert (
        re.search(r'data-testid="chosen-subject"><output[^>]*>—<', other)
        and "selected>" not in other.split('id="subject"')[1].split("</select>")[0]
    )
    # A refused form keeps the choice and shows it again, large.
    wrong = investigator.post(
        path,
        data={**FORM, "subject": mine, "password": "wrong", "csrf_token": csrf_token(investigator, path)},
    ).get_data(as_text=True)
    assert re.search(rf'data-testid="chosen-subject"><output[^>]*>{mine}<', wrong)
    # In French, the same choice, in French words.
    switched = investigator.post(
        "/language", data={"language": "fr", "next": path, "csrf_token": csrf_token(investigator, path)}
    )
    assert switched.status_code == 303
    french = investigator.get(f"{path}?subject={mine}").get_data(as_text=True)
    assert "— choisir le patient —" in french and re.search(rf"{mine} · randomisé le \w", french)
    assert re.search(rf'data-testid="chosen-subject"><output[^>]*>{mine}<', french)


def test_withdrawal_and_correction_forms_show_the_subject_large(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, investigator: FlaskClient
) -> None:
    number = randomize(ctx, world, "P1-0001")
    page = investigator.get(f"/trials/{TRIAL}/subjects/{number}").get_data(as_text=True)
    assert page.count(f'<p class="big" data-testid="form-subject">Subject {number}</p>') == 3
    listing = investigator.get(f"/trials/{TRIAL}/subjects").get_data(as_text=True)
    assert f"/trials/{TRIAL}/subjects/{number}" in listing


@pytest.mark.req("UNB-08")
def test_a_pharmacovigilance_result_is_shown_once_and_its_showing_stays_hidden_from_trial_staff(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, clock: Clock
) -> None:
    number = randomize(ctx, world, "P1-0001")
    pv_actor = make_actor(ctx, "pv1", "pharmacovigilance")
    make_actor(ctx, "monitor1", "monitor")
    assert pv_actor.user_id is not None
    pv = TotpSignedIn(app, ctx, clock, pv_actor.user_id, "pv1")
    path = f"/trials/{TRIAL}/pv-unblind"
    # Every subject within reach, grouped by site (a pharmacovigilance officer may have thousands).
    other = randomize(ctx, world, "P2-0001", "P2")
    form = pv.client.get(path).get_data(as_text=True)
    p1, p2 = form.index('<optgroup label="Site P1">'), form.index('<optgroup label="Site P2">')
    assert p1 < form.index(f'value="{number}"') < p2 < form.index(f'value="{other}"')
    posted = pv.client.post(
        path,
        data={
            **FORM,
            **pv.signature(),
            "reason_category": "susar",
            "subject": number,
            "csrf_token": csrf_token(pv.client, path),
        },
    )
    assert posted.status_code == 303, posted.get_data(as_text=True)[:500]
    assert LABELS[true_arm(ctx, number)] in pv.client.get(posted.headers["Location"]).get_data(as_text=True)
    again = pv.client.get(posted.headers["Location"]).get_data(as_text=True)
    assert "was shown once" in again and not TREATMENT.search(text_of(again, ctx))
    monitor = https_client(app)
    sign_in(monitor, "monitor1", GOOD_PASSWORD)
    review = monitor.get(f"/trials/{TRIAL}/reports/review/unblindings").get_data(as_text=True)
    assert review.count("<tr") >= 1 and "unblinding.result_shown" not in review and number not in review
