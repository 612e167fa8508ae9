"""The account lockout cannot be used to keep a user out (issue 15, point 7; ACC-05).

Found in review: five wrong passwords from anywhere locked the account for 15 minutes, and its
owner's right password was then refused. Now a browser in which the user has signed in carries a
device cookie; its attempts are counted for that device alone, so the owner signs in from their own
browser while strangers (and unknown browsers) stay locked out. A stolen cookie still allows only
five guesses per lockout period."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from flask.testing import FlaskClient

from allocator import crypto
from allocator.services import auth
from allocator.services.context import ServiceContext
from allocator.services.errors import TooManyRequests, Unauthenticated
from allocator.web.security import DEVICE_COOKIE
from tests.support import GOOD_PASSWORD, Clock, load_ifn, make_user

OWNER = auth.Client(address="192.0.2.10", user_agent="owner's browser", request_id="req")
ATTACKER = auth.Client(address="203.0.113.66", user_agent="curl", request_id="req")


def _holds_no_name(ctx: ServiceContext, cookie: str) -> bool:
    """The device cookie is the session key's id, a random nonce and a MAC, each of a fixed length:
    no room for the user name. (Searching the random parts for "inv" fails one run in 4,000.)"""
    key_id = re.escape(ctx.ring.keyset(crypto.Purpose.SESSION).active.key_id)
    return re.fullmatch(rf"v1\.{key_id}\.[A-Za-z0-9_-]{{24}}\.[A-Za-z0-9_-]{{43}}", cookie) is not None


def user_with_a_device(ctx: ServiceContext, username: str = "inv") -> auth.Client:
    """The owner has signed in once from their browser, which keeps the device cookie."""
    load_ifn(ctx)
    created = make_user(ctx, username, "investigator", site="P1")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, OWNER)
    outcome = auth.login(ctx, username, GOOD_PASSWORD, OWNER)
    assert _holds_no_name(ctx, outcome.device_cookie)
    return replace(OWNER, device=outcome.device_cookie)


def lock_out(ctx: ServiceContext, client: auth.Client, username: str = "inv") -> None:
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(Unauthenticated):
            auth.login(ctx, username, "wrong password!", client)


@pytest.mark.req("ACC-05")
def test_strangers_cannot_lock_the_owner_out_of_their_own_browser(ctx: ServiceContext) -> None:
    own_browser = user_with_a_device(ctx)
    lock_out(ctx, ATTACKER)
    # Unknown browsers are locked out, the right password included ...
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv", GOOD_PASSWORD, ATTACKER)
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv", GOOD_PASSWORD, OWNER)  # the owner on a colleague's computer
    # ... but the owner's own browser signs in.
    assert auth.login(ctx, "inv", GOOD_PASSWORD, own_browser).session_token


@pytest.mark.req("ACC-05")
def test_a_stolen_device_cookie_gives_five_guesses_then_locks_that_device(
    ctx: ServiceContext, clock: Clock
) -> None:
    own_browser = user_with_a_device(ctx)
    stolen = replace(ATTACKER, device=own_browser.device)
    lock_out(ctx, stolen)
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv", GOOD_PASSWORD, own_browser)
    # Other browsers were not affected by those guesses, and the device recovers after the lockout.
    assert auth.login(ctx, "inv", GOOD_PASSWORD, OWNER).session_token
    clock.advance(minutes=16)
    assert auth.login(ctx, "inv", GOOD_PASSWORD, own_browser).session_token


@pytest.mark.req("ACC-05")
def test_a_forged_or_borrowed_cookie_counts_as_no_cookie(ctx: ServiceContext) -> None:
    own_browser = user_with_a_device(ctx)
    make_user(ctx, "inv2", "investigator", site="P1")
    assert own_browser.device is not None
    other_users = crypto.device_cookie(ctx.ring, "inv2")
    forged = own_browser.device[:-4] + "AAAA"
    lock_out(ctx, ATTACKER)
    for device in (other_users, forged, "v1.session-x.y.z", "garbage"):
        with pytest.raises(TooManyRequests):
            auth.login(ctx, "inv", GOOD_PASSWORD, replace(ATTACKER, device=device))
    assert crypto.device_nonce(ctx.ring, "inv", other_users) is None
    assert crypto.device_nonce(ctx.ring, "inv", own_browser.device) is not None


def post(client: FlaskClient, path: str, **data: str) -> int:
    page = client.get("/login" if path == "/login" else "/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return client.post(path, data={**data, "csrf_token": token.group(1)}).status_code


@pytest.mark.req("ACC-05")
def test_the_sign_in_page_gives_the_browser_its_device_cookie(ctx: ServiceContext) -> None:
    from allocator.app import create_app

    load_ifn(ctx)
    created = make_user(ctx, "inv", "investigator", site="P1")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, OWNER)
    app = create_app(ctx.settings, db=ctx.db, ring=ctx.ring, clock=ctx.clock, passwords=ctx.passwords)
    browser = app.test_client()
    assert post(browser, "/login", username="inv", password=GOOD_PASSWORD) == 302
    cookie = browser.get_cookie(DEVICE_COOKIE)
    assert cookie is not None and cookie.http_only and _holds_no_name(ctx, cookie.value)
    # Strangers lock the account; this browser, signed out, still gets in.
    stranger = app.test_client()
    for _ in range(ctx.settings.login_max_failures_per_account):
        assert post(stranger, "/login", username="inv", password="wrong password!") == 401
    assert post(stranger, "/login", username="inv", password=GOOD_PASSWORD) == 429
    assert post(browser, "/logout") == 302
    assert post(browser, "/login", username="inv", password=GOOD_PASSWORD) == 302
