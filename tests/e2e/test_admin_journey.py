"""Issue 3's browser journey: an administrator signs in with a second factor (TOTP), revokes an
investigator's role, and the investigator is refused on the very next request (BLD-11)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from allocator import crypto
from allocator.services import auth
from tests.e2e.conftest import LiveServer, shot
from tests.support import GOOD_PASSWORD, load_ifn, make_user

pytestmark = pytest.mark.e2e
CLIENT = auth.Client("127.0.0.1", "e2e", "setup")


def ready(live: LiveServer, username: str, role: str, site: str | None = None) -> int:
    created = make_user(live.ctx, username, role, site=site, full_name=username.title())
    auth.change_password(
        live.ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT
    )
    return created.user_id


@pytest.mark.req("BLD-11")
@pytest.mark.req("ACC-04")
def test_admin_with_totp_revokes_a_role_and_the_user_is_refused_next(
    live_server: LiveServer, browser
) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    load_ifn(ctx)
    admin_id = ready(live_server, "admin", "admin")
    ready(live_server, "investigator", "investigator", site="P1")
    enrollment = auth.start_totp_enrollment(ctx, admin_id)
    secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
    # Enrol with the previous time step, so that the sign-in below may use the current one (no replay).
    auth.confirm_totp_enrollment(
        ctx,
        admin_id,
        None,
        crypto.totp_now(secret, datetime.now(UTC) - timedelta(seconds=30)),
        CLIENT,
        ticket=enrollment.ticket,
    )

    investigator = browser.new_context(viewport={"width": 412, "height": 915}).new_page()
    investigator.goto(live_server.url + "/login")
    investigator.get_by_label("User name").fill("investigator")
    investigator.get_by_label("Password").fill(GOOD_PASSWORD)
    investigator.get_by_role("button", name="Sign in").click()
    investigator.goto(live_server.url + "/trials/IFNG-PAIS")
    expect(investigator.get_by_role("heading", name="IFN-gamma PAIS")).to_be_visible()

    admin = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    admin.goto(live_server.url + "/login")
    admin.get_by_label("User name").fill("admin")
    admin.get_by_label("Password").fill(GOOD_PASSWORD)
    admin.get_by_role("button", name="Sign in").click()
    admin.wait_for_url("**/account/totp")
    admin.get_by_label("Code").fill(crypto.totp_now(secret, datetime.now(UTC)))
    shot(admin, "10-admin-totp")
    admin.get_by_role("button", name="Continue").click()
    admin.wait_for_url(live_server.url + "/")
    admin.get_by_role("link", name="Users").click()
    admin.get_by_role("link", name="investigator").click()
    admin.get_by_label("Reason for revoking").fill("moved to another unit")
    shot(admin, "11-admin-user")
    admin.get_by_role("button", name="Revoke").click()
    # The click returns before the redirected page has loaded: wait for it, do not sample it.
    expect(admin.get_by_text("Role revoked.")).to_be_visible()
    expect(admin.get_by_text("moved to another unit")).to_be_visible()
    shot(admin, "12-admin-revoked")

    response = investigator.goto(live_server.url + "/trials/IFNG-PAIS")
    assert response is not None and response.status == 403
    expect(investigator.get_by_role("heading", name="Not allowed")).to_be_visible()
    shot(investigator, "13-investigator-refused")
