"""Web fixtures: the Flask app over the rolled-back test database, and signed-in clients."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator import crypto
from allocator.app import create_app
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Settings
from tests.support import GOOD_PASSWORD, Clock, ReadyTrial, ready_trial

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    """IFNG-PAIS ready to randomize (tests.support.ready_trial): lists active, kits at both sites."""
    return ready_trial(ctx)


@pytest.fixture
def app(settings: Settings, db: Database, ring: crypto.KeyRing, clock: Clock) -> Flask:
    return create_app(settings, db=db, ring=ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)


def https_client(app: Flask) -> FlaskClient:
    """A test client speaking https: outside development the cookies are Secure (__Host-)."""
    c = app.test_client()
    c.environ_base["wsgi.url_scheme"] = "https"
    return c


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return https_client(app)


def without_tokens(page: str) -> str:
    """The page with its CSRF tokens' values left out: they carry their time (two views of one
    page differ there only), and as random base64 they hold a short word such as "-arm-" now and
    then, which a search of the raw page for arm words would report."""
    return _CSRF.sub('name="csrf_token" value=""', page)


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = _CSRF.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def button_link(html: str, words: str) -> str | None:
    """The address of the page's button link worded `words` (a paged list's older and newest
    links), entities decoded; None when the page has none."""
    found = re.search(rf'<a class="button" href="([^"]+)">{words}</a>', html)
    return found.group(1).replace("&amp;", "&") if found else None


def sign_in(client: FlaskClient, username: str, password: str) -> None:
    """Sign in through the login form and complete the forced password change if needed."""
    token = csrf_token(client)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    if response.headers["Location"].endswith("/account/password") or client.get("/").headers.get(
        "Location", ""
    ).endswith("/account/password"):
        token = csrf_token(client, "/account/password")
        changed = client.post(
            "/account/password",
            data={"current": password, "new": GOOD_PASSWORD, "confirm": GOOD_PASSWORD, "csrf_token": token},
        )
        assert changed.status_code == 302, changed.get_data(as_text=True)[:800]


@pytest.fixture
def signed_in(app: Flask) -> Callable[[str, str], FlaskClient]:
    """Return a factory: a fresh client signed in as `username` with its one-time password."""

    def factory(username: str, password: str) -> FlaskClient:
        c = https_client(app)
        sign_in(c, username, password)
        return c

    return factory


class TotpSignedIn:
    """A user whose role requires a second factor, enrolled and signed in with both factors; it
    can produce fresh authenticator codes for e-signatures (a code is never accepted twice)."""

    def __init__(self, app: Flask, ctx: ServiceContext, clock: Clock, user_id: int, username: str) -> None:
        from tests.support import enroll_totp

        self.secret = enroll_totp(ctx, user_id, clock)
        self.clock = clock
        self.client = https_client(app)
        response = self.client.post(
            "/login",
            data={"username": username, "password": GOOD_PASSWORD, "csrf_token": csrf_token(self.client)},
        )
        assert response.status_code == 302
        done = self.client.post(
            "/account/totp",
            data={"code": self.code(), "csrf_token": csrf_token(self.client, "/account/totp")},
        )
        assert done.status_code == 302 and done.headers["Location"] == "/", done.get_data(as_text=True)[:300]

    def code(self) -> str:
        self.clock.advance(seconds=31)
        return crypto.totp_now(self.secret, self.clock())

    def signature(self) -> dict[str, str]:
        return {"password": GOOD_PASSWORD, "otp": self.code()}
