"""A first browser journey: sign in with a one-time password, choose a password, see the trial,
sign out (Debian's Chromium through Playwright)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, shot
from tests.support import GOOD_PASSWORD, load_ifn, make_user

pytestmark = pytest.mark.e2e


@pytest.mark.req("ACC-06")
def test_sign_in_change_password_see_trial_sign_out(live_server: LiveServer, page) -> None:  # type: ignore[no-untyped-def]
    load_ifn(live_server.ctx)
    created = make_user(live_server.ctx, "investigator", "investigator", site="P1", full_name="Dr Inès Test")

    page.goto(live_server.url + "/")
    assert page.url.startswith(live_server.url + "/login")
    assert page.locator(".test-banner").inner_text().startswith("TEST – NE PAS UTILISER")
    shot(page, "01-login")
    page.get_by_label("User name").fill("investigator")
    page.get_by_label("Password").fill(created.one_time_password)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url("**/account/password")
    page.get_by_label("Current (or one-time) password").fill(created.one_time_password)
    page.get_by_label("New password", exact=True).fill(GOOD_PASSWORD)
    page.get_by_label("New password again").fill(GOOD_PASSWORD)
    shot(page, "02-password")
    page.get_by_role("button", name="Change password").click()

    page.wait_for_url(live_server.url + "/")
    expect(page.get_by_role("heading", name="Your trials")).to_be_visible()
    page.get_by_role("link", name="IFN-gamma PAIS").click()
    page.wait_for_url("**/trials/IFNG-PAIS")
    expect(page.get_by_text("2023-506725-11-00")).to_be_visible()
    assert "Pr Dépret" in page.content()
    shot(page, "03-trial")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    page.goto(live_server.url + "/trials/IFNG-PAIS")
    assert "/login" in page.url  # the session is gone


def test_wrong_password_stays_on_the_login_page(live_server: LiveServer, page) -> None:  # type: ignore[no-untyped-def]
    load_ifn(live_server.ctx)
    make_user(live_server.ctx, "nurse", "nurse", site="P1")
    page.goto(live_server.url + "/login")
    page.get_by_label("User name").fill("nurse")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    # In plain words at the top of the form (issue 13); the style sheet capitalises the first letter.
    assert "the user name or the password is wrong" in page.get_by_role("alert").inner_text().lower()
