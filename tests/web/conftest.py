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
from allocator.settings import Settings
from tests.support import GOOD_PASSWORD, Clock

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


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


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = _CSRF.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


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
