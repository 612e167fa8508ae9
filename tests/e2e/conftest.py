"""Browser tests: a live server on loopback and Debian's Chromium driven by Playwright.

The browser is never downloaded: Playwright starts /usr/bin/chromium. Without it the tests are
skipped, unless ALLOCATOR_REQUIRE_BROWSER=1 (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from allocator import crypto, migrate
from allocator.app import create_app
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"


@dataclass
class LiveServer:
    url: str
    ctx: ServiceContext


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(
        env=Environment.DEVELOPMENT,
        database_url=f"sqlite:///{tmp_path / 'e2e.db'}",
        key_dir=tmp_path / "keys",
    )
    crypto.KeyRing.create_missing(settings.key_dir)
    migrate.upgrade(settings.database_url)
    ring = crypto.KeyRing.load(settings.key_dir)
    db = Database.connect(settings.database_url)
    ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
    app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", ctx=ctx)
    finally:
        server.shutdown()
        db.dispose()


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    if not CHROMIUM.exists():
        if os.environ.get("ALLOCATOR_REQUIRE_BROWSER") == "1":
            pytest.fail(
                "ALLOCATOR_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)"
            )
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 412, "height": 915})  # a phone at the bedside
    page = context.new_page()
    yield page
    context.close()


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def new_page(browser):  # type: ignore[no-untyped-def]
    """A factory of pages, each in its own browser context (its own cookies), closed afterwards."""
    contexts = []

    def factory(viewport: dict[str, int]):  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page

    yield factory
    for context in contexts:
        context.close()


def sign_in_browser(  # type: ignore[no-untyped-def]
    new_page, live: LiveServer, username: str, viewport: dict[str, int], *, totp_code: str | None = None
):
    """Sign in through the login page (and the second-factor page when a code is given), then open
    the IFN-γ trial's page."""
    from tests.support import GOOD_PASSWORD

    page = new_page(viewport)
    page.goto(live.url + "/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(GOOD_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if totp_code is not None:
        page.wait_for_url("**/account/totp")
        page.get_by_label("Code").fill(totp_code)
        page.get_by_role("button", name="Continue").click()
    page.wait_for_url(live.url + "/")
    page.get_by_role("link", name="IFN-gamma PAIS").click()
    page.wait_for_url("**/trials/IFNG-PAIS")
    return page
