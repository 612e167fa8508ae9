"""Two interface languages chosen per person (issue 13): Accept-Language before sign-in, a switch
on every page (kept on the account once signed in, Post/Redirect/Get), `<html lang>`, dates in the
site's time zone with UTC beside them, French number input."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator.models import AuditEvent, User
from allocator.services.context import ServiceContext
from allocator.web import i18n
from tests.support import GOOD_PASSWORD, load_ifn, make_user
from tests.web.conftest import csrf_token, https_client, sign_in


def _lang(page: str) -> str:
    return page.split('<html lang="', 1)[1].split('"', 1)[0]


def test_accept_language_is_the_default_before_sign_in(client: FlaskClient) -> None:
    french = client.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    page = french.get_data(as_text=True)
    assert _lang(page) == "fr" and "Aller au contenu" in page and "Mot de passe" in page
    english = https_client(client.application).get("/login", headers={"Accept-Language": "en-GB"})
    assert _lang(english.get_data(as_text=True)) == "en"
    unknown = https_client(client.application).get("/login", headers={"Accept-Language": "de"})
    assert _lang(unknown.get_data(as_text=True)) == "en"


def test_the_switch_before_sign_in_lasts_through_sign_in(app: Flask, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "inv", "investigator", site="P1")
    client = https_client(app)
    switched = client.post(
        "/language", data={"language": "fr", "next": "/login", "csrf_token": csrf_token(client)}
    )
    assert switched.status_code == 303 and switched.headers["Location"] == "/login"  # PRG
    assert _lang(client.get("/login").get_data(as_text=True)) == "fr"
    sign_in(client, "inv", created.one_time_password)
    home = client.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert _lang(home) == "fr" and "Se déconnecter" in home


def test_the_choice_is_stored_on_the_account_and_audited(app: Flask, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "inv", "investigator", site="P1")
    client = https_client(app)
    sign_in(client, "inv", created.one_time_password)
    assert _lang(client.get("/").get_data(as_text=True)) == "en"
    response = client.post(
        "/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(client, "/")}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    with ctx.db.reading() as s:
        assert s.execute(select(User.language).where(User.username == "inv")).scalar_one() == "fr"
        event = (
            s.execute(select(AuditEvent).where(AuditEvent.object_id == "inv").order_by(AuditEvent.id.desc()))
            .scalars()
            .first()
        )
        assert event is not None and event.action == "user.updated"
    # Another browser, another Accept-Language: the account's choice wins.
    other = https_client(app)
    sign_in(other, "inv", GOOD_PASSWORD)
    assert _lang(other.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)) == "fr"


def test_an_unknown_language_or_an_outside_target_changes_nothing(client: FlaskClient) -> None:
    response = client.post(
        "/language",
        data={"language": "xx", "next": "https://evil.example/", "csrf_token": csrf_token(client)},
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert _lang(client.get("/login").get_data(as_text=True)) == "en"


def test_the_switch_needs_the_csrf_token(client: FlaskClient) -> None:
    assert client.post("/language", data={"language": "fr"}).status_code == 400


def test_dates_in_the_site_zone_first_with_utc_beside(app: Flask) -> None:
    moment = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    with app.test_request_context("/", headers={"Accept-Language": "fr"}):
        assert i18n.when(moment) == "6 déc. 2026, 00:30 (5 déc., 23:30 UTC)"
        assert i18n.day(date(2026, 3, 1)) == "1 mars 2026"
        assert i18n.number(4200.5) == "4\u202f200,5"
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        assert i18n.when(moment.replace(hour=12)) == "Dec 5, 2026, 13:30 (12:30 UTC)"
        assert i18n.number(4200.5) == "4,200.5"


def test_french_and_english_number_input() -> None:
    for typed, plain in [
        ("4 200", "4200"),
        ("4\u202f200", "4200"),
        ("4\u00a0200,5", "4200.5"),
        ("2,5", "2.5"),
        ("2.5", "2.5"),
        ("4,200.5", "4200.5"),
        ("4.200,5", "4200.5"),
        (" 12 ", "12"),
        ("-3,25", "-3.25"),
    ]:
        assert i18n.plain_number(typed) == plain, typed
    for nonsense in ("abc", "1,2,3", "", "2,5 mg"):
        assert i18n.plain_number(nonsense) == nonsense.strip()
