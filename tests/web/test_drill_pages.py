"""Unblinding drills through the pages and the API (UNB-11): the trial manager creates a drill
subject, the investigator runs the drill on the ordinary emergency form and sees a result marked
DRILL once, the unblinded statistician prints the drill sheet, its opening is registered on the
ordinary offline form, and the monitor reads the drill log without anything about a value."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from allocator.models import Unblinding, UnblindingDrill
from allocator.services import lookups
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from tests.support import CLI_ACTOR, GOOD_PASSWORD, Clock, ReadyTrial, make_actor, randomize
from tests.web.conftest import TotpSignedIn, csrf_token, https_client, sign_in

TRIAL = "IFNG-PAIS"
LABELS = {"A": "Interferon gamma-1b", "B": "Placebo"}
TREATMENT = re.compile(r"interferon|placebo|imukin|saline|nacl|gamma", re.IGNORECASE)
FORM = {
    "reason_category": "other_medical_emergency",
    "reason": "Yearly emergency-unblinding drill of the night shift.",
    "confirm": "yes",
    "password": GOOD_PASSWORD,
}


def text_of(html: str, ctx: ServiceContext) -> str:
    text = re.sub(r"<[^>]+>", " ", html).replace("ifn-gamma-pais.toml", "")
    return text.replace(lookups.trial_definition(ctx, TRIAL).title, "")


def counts(ctx: ServiceContext) -> tuple[int, int]:
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(Unblinding)).scalar_one(),
            s.execute(select(func.count()).select_from(UnblindingDrill)).scalar_one(),
        )


@pytest.fixture
def signed_in(app: Flask, ctx: ServiceContext, world: ReadyTrial):  # type: ignore[no-untyped-def]
    def client(username: str) -> FlaskClient:
        c = https_client(app)
        sign_in(c, username, GOOD_PASSWORD)
        return c

    return client


def create_drill_subject(ctx: ServiceContext, client: FlaskClient, site: str = "P1") -> str:
    path = f"/trials/{TRIAL}/drills"
    page = client.get(path)
    assert page.status_code == 200 and "Unblinding drills" in page.get_data(as_text=True)
    posted = client.post(
        path, data={"site": site, "note": "yearly drill", "csrf_token": csrf_token(client, path)}
    )
    assert posted.status_code == 303
    listed = client.get(posted.headers["Location"]).get_data(as_text=True)
    number = re.search(r"DRILL-[A-Z0-9]+-\d+", listed)
    assert number is not None
    return number.group(0)


@pytest.mark.req("UNB-11", "UNB-01")
def test_an_online_drill_runs_on_the_emergency_form_and_shows_drill_once(
    ctx: ServiceContext,
    world: ReadyTrial,
    signed_in,
    app: Flask,  # type: ignore[no-untyped-def]
) -> None:
    randomize(ctx, world, "P1-0001")
    make_actor(ctx, "drill-tm", "trial_manager")
    make_actor(ctx, "monitor1", "monitor")
    manager = signed_in("drill-tm")
    refused = manager.post(
        f"/trials/{TRIAL}/drills",
        data={"site": "", "csrf_token": csrf_token(manager, f"/trials/{TRIAL}/drills")},
    )
    assert refused.status_code == 303
    assert 'id="site-error"' in manager.get(refused.headers["Location"]).get_data(as_text=True)
    number = create_drill_subject(ctx, manager)
    investigator = signed_in("inv-p1")
    path = f"/trials/{TRIAL}/unblind"
    form = investigator.get(path).get_data(as_text=True)
    assert f'<option value="{number}"' in form and "Drill subjects (DRILL, not patients)" in form
    before = counts(ctx)
    posted = investigator.post(
        path, data={**FORM, "subject": number, "csrf_token": csrf_token(investigator, path)}
    )
    assert posted.status_code == 303 and "/unblind/drill/" in posted.headers["Location"]
    result = investigator.get(posted.headers["Location"])
    page = result.get_data(as_text=True)
    assert result.status_code == 200 and result.headers["Cache-Control"] == "no-store"
    assert 'data-testid="drill-notice"' in page and "meaning: emergency unblinding drill" in page
    assert any(label in page for label in LABELS.values())
    again = investigator.get(posted.headers["Location"]).get_data(as_text=True)
    assert "DRILL" in again and not TREATMENT.search(text_of(again, ctx))
    assert counts(ctx) == (before[0], before[1] + 1)  # a drill, never an unblinding
    # Another site's investigator is not offered it and cannot run it.
    other = signed_in("inv-p2")
    assert number not in other.get(path).get_data(as_text=True)
    refused = other.post(path, data={**FORM, "subject": number, "csrf_token": csrf_token(other, path)})
    assert refused.status_code == 404
    # The monitor reads the drill log: the drill, never a value.
    monitor = signed_in("monitor1")
    log = monitor.get(f"/trials/{TRIAL}/reports/drill-log")
    body = log.get_data(as_text=True)
    assert log.status_code == 200 and number in body and "Online drills" in body
    assert not TREATMENT.search(text_of(body, ctx))
    for fmt in ("csv", "pdf"):
        assert monitor.get(f"/trials/{TRIAL}/reports/drill-log/{fmt}").status_code == 200
    unblinding_report = monitor.get(f"/trials/{TRIAL}/reports/unblinding").get_data(as_text=True)
    assert number not in unblinding_report


@pytest.mark.req("UNB-11", "UNB-06")
def test_an_offline_drill_prints_a_drill_sheet_and_registers_its_opening(
    ctx: ServiceContext,
    world: ReadyTrial,
    signed_in,
    app: Flask,
    clock: Clock,  # type: ignore[no-untyped-def]
) -> None:
    make_actor(ctx, "drill-tm", "trial_manager")
    number = create_drill_subject(ctx, signed_in("drill-tm"), "P2")
    sheet = "DRILL-CB-" + number.removeprefix("DRILL-")
    stat = TotpSignedIn(app, ctx, clock, world.statistician.user_id or 0, "stat")
    path = f"/trials/{TRIAL}/drills/sheets"
    page = stat.client.get(path).get_data(as_text=True)
    assert sheet in page and not TREATMENT.search(text_of(page, ctx))
    wrong = stat.client.post(
        path, data={"subject": number, "password": "", "csrf_token": csrf_token(stat.client, path)}
    )
    assert wrong.status_code == 303
    printed = stat.client.post(
        path, data={"subject": number, **stat.signature(), "csrf_token": csrf_token(stat.client, path)}
    )
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    assert printed.headers["Content-Disposition"].startswith('attachment; filename="DRILLDOC')
    investigator = signed_in("inv-p2")
    check = investigator.post(
        f"/trials/{TRIAL}/unblind/offline/check",
        json={"scan": sheet.lower()},
        headers={"X-CSRFToken": csrf_token(investigator, f"/trials/{TRIAL}/unblind/offline")},
    )
    assert check.status_code == 200 and check.get_json()["ok"] is True
    clock.advance(minutes=10)  # within the session's idle time
    offline = f"/trials/{TRIAL}/unblind/offline"
    opened = (clock() - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M+00:00")
    before = counts(ctx)
    posted = investigator.post(
        offline,
        data={
            "sheet_number": sheet,
            "opened_at": opened,
            "opened_by": "Dr Night",
            "opened_by_role": "physician",
            **{k: v for k, v in FORM.items() if k != "confirm"},
            "csrf_token": csrf_token(investigator, offline),
        },
    )
    assert posted.status_code == 303
    assert "DRILL" in investigator.get(posted.headers["Location"]).get_data(as_text=True)
    assert counts(ctx) == (before[0], before[1] + 1)


@pytest.mark.req("UNB-11")
def test_the_api_runs_a_drill_marked_drill(
    ctx: ServiceContext, world: ReadyTrial, signed_in, app: Flask
) -> None:  # type: ignore[no-untyped-def]
    make_actor(ctx, "drill-tm", "trial_manager")
    number = create_drill_subject(ctx, signed_in("drill-tm"))
    token = users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token
    response = app.test_client().post(
        f"/api/v1/trials/{TRIAL}/subjects/{number}/unblind",
        json={
            "reason_category": "other_medical_emergency",
            "reason": FORM["reason"],
            "password": GOOD_PASSWORD,
        },
        headers={"Authorization": f"Bearer {token}"},
        base_url="https://localhost",
    )
    body = response.get_json()
    assert response.status_code == 200 and body["drill"] is True and body["subject_number"] == number
    assert body["arm"] in LABELS and counts(ctx)[0] == 0


@pytest.mark.req("UNB-11")
def test_the_drill_pages_speak_french(ctx: ServiceContext, world: ReadyTrial, signed_in) -> None:  # type: ignore[no-untyped-def]
    make_actor(ctx, "drill-tm", "trial_manager")
    manager = signed_in("drill-tm")
    manager.post("/language", data={"language": "fr", "csrf_token": csrf_token(manager, "/")})
    page = manager.get(f"/trials/{TRIAL}/drills").get_data(as_text=True)
    assert "Exercices de levée d'aveugle" in page and "Créer le sujet d'exercice" in page
