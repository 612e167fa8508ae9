"""Issue 13: axe-core over the main pages, in French and in English, as the roles that use them.

axe-core is vendored in tests/e2e/axe/ (pinned, with its licence; tests/unit/test_vendored_js.py
checks the file) and evaluated in each page after it has loaded; nothing is fetched. A rule broken
with the impact "serious" or "critical" fails the test, which names the page, the language, the rule,
the elements and axe's help text. Lesser impacts ("moderate", "minor") are not checked here.

One world (a ready trial; one patient randomized for the investigator's and the pharmacist's pages,
and one dispensed patient per language for the bedside's doses), one browser context per role; each
role's pages are checked in English, then again after the role switches the interface to French.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import kits as kitlib
from allocator import crypto
from allocator.permissions import Scope
from allocator.services import auth, dispensing, signatures
from allocator.services.subjects import randomize
from allocator.services.supply import kit_rules
from tests.e2e.conftest import LiveServer, shot, sign_in_browser
from tests.support import GOOD_PASSWORD, eligible_on, make_actor, make_user, ready_trial

pytestmark = pytest.mark.e2e

AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"
TRIAL = "IFNG-PAIS"
T = f"/trials/{TRIAL}"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
BLOCKING = ("serious", "critical")
LANGUAGES = ("en", "fr")
SWITCH = {"fr": "Français", "en": "English"}
CLIENT = auth.Client("127.0.0.1", "e2e", "setup")


@dataclass(frozen=True)
class Visit:
    """A page to check: its name in the failure message, its path, and what to do there first (fill
    a form, scan a label) so that the state users meet is checked, not only the empty page."""

    name: str
    path: str
    prepare: Callable[[Page], None] | None = None


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations of the page as it stands (WCAG 2.x A and AA rules and axe's best
    practices), each with its rule id, impact, help text and the offending elements."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))  # through the driver: the page's CSP is kept
    result: dict[str, Any] = page.evaluate(
        "async () => JSON.stringify(await axe.run(document, {resultTypes: ['violations']}))"
    )
    return list(json.loads(str(result))["violations"])


def blocking(violations: list[dict[str, Any]], where: str) -> list[str]:
    """One line per serious or critical violation: where, the rule, its help, the elements."""
    lines = []
    for v in violations:
        if v["impact"] in BLOCKING:
            targets = "; ".join(" ".join(map(str, node["target"])) for node in v["nodes"][:5])
            lines.append(f"{where}: [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']}) at {targets}")
    return lines


def check(page: Page, language: str, visit: Visit, found: list[str]) -> None:
    response = page.goto(_origin(page) + visit.path)
    assert response is not None and response.status < 400, (visit.name, response and response.status)
    expect(page.locator("html")).to_have_attribute("lang", language)
    if visit.prepare is not None:
        visit.prepare(page)
    # The title is what a screen reader announces first: words only, no markup.
    if "<" in page.title():
        found.append(f"{visit.name} ({language}): markup in the page's title: {page.title()}")
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")
    found.extend(blocking(axe_violations(page), f"{visit.name} ({language})"))
    if visit.prepare is not None:  # the states worth looking at (a screenshot costs time)
        shot(page, f"axe-{language}-{visit.name.replace(' ', '-').replace(',', '')}")


def _origin(page: Page) -> str:
    return "/".join(page.url.split("/", 3)[:3])


def switch_to(page: Page, language: str) -> None:
    if page.locator("html").get_attribute("lang") != language:
        page.get_by_role("button", name=SWITCH[language]).click()
        expect(page.locator("html")).to_have_attribute("lang", language)


def submit_unchecked(page: Page) -> None:
    """Send the page's main form without the browser's own checks, so that the server's errors are
    shown beside their fields."""
    form = page.locator("main form:not(.inline)").last
    form.evaluate("f => { f.noValidate = true; }")
    form.locator("button[type=submit]").last.click()
    page.wait_for_load_state()
    expect(page.locator(".error-summary")).to_be_visible()


def fill_eligible(page: Page) -> None:
    """Answer the randomization form as for an eligible patient (by field names: both languages)."""
    page.locator("#site").select_option("P1")
    page.locator("#screening_number").fill("P1-0099")
    for criterion, value in eligible_on(datetime.now(UTC).date()).items():
        field = page.locator(f'[name="eligibility.{criterion}"]')
        if value in ("yes", "no"):
            field.and_(page.locator(f'[value="{value}"]')).check()
        else:
            field.fill(str(value))
    page.locator('[name="strata.admission_cause"]').select_option("septic")
    page.locator("main form button[type=submit]").last.click()
    expect(page.locator("dl.facts")).to_be_visible()  # the confirmation, before anything is recorded


def focused(selector: str) -> Callable[[Page], None]:
    """Give the keyboard focus to the first `selector`, as Tab would (a wide box that scrolls)."""

    def focus(page: Page) -> None:
        page.locator(selector).first.focus()
        expect(page.locator(selector).first).to_be_focused()

    return focus


def wedge(page: Page, text: str) -> None:
    """A keyboard-wedge scanner: the label typed into whatever has the focus, then Enter."""
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def authenticator(live: LiveServer, user_id: int) -> bytes:
    """Enrol an authenticator for the user; returns its secret."""
    enrollment = auth.start_totp_enrollment(live.ctx, user_id)
    secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
    # Enrolled with the previous time step, so that the sign-in may use the current one (no replay).
    previous = crypto.totp_now(secret, datetime.now(UTC) - timedelta(seconds=30))
    auth.confirm_totp_enrollment(live.ctx, user_id, None, previous, CLIENT, ticket=enrollment.ticket)
    return secret


@dataclass(frozen=True)
class World:
    patient: str  # randomized, kits allocated: the investigator's and the pharmacist's pages
    labels: dict[str, str]  # the patient's kit labels by day
    other_label: str  # another patient's kit: a wrong scan
    bedside: dict[str, tuple[str, dict[str, str]]]  # by language: a dispensed patient and its labels
    authenticators: dict[str, bytes]  # the second factor of the roles that must have one


def build_world(live: LiveServer) -> World:
    ctx = live.ctx
    ready = ready_trial(ctx)
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    today = datetime.now(UTC).date()
    results = [
        randomize.randomize(
            ctx,
            ready.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                "P1", f"P1-{i:04d}", eligible_on(today), {"admission_cause": "septic"}
            ),
            everywhere,
        )
        for i in (1, 2, 3)
    ]
    mac = kit_rules.mac(ctx)
    kits = [{k.day: k.kit_number for k in r.kits} for r in results]
    for result, kits_of in zip(results[1:], kits[1:], strict=True):
        signature = signatures.SignatureRequest(password=GOOD_PASSWORD)
        dispensing.dispense(
            ctx,
            ready.pharmacist,
            TRIAL,
            result.subject_number,
            kits_of,
            scope=everywhere,
            signature=signature,
        )
    make_actor(ctx, "monitor1", "monitor")
    make_actor(ctx, "manager", "trial_manager")
    admin = make_user(ctx, "admin", "admin", full_name="Ada Admin")
    auth.change_password(ctx, admin.user_id, admin.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT)
    assert ready.statistician.user_id is not None
    statistician = ready.statistician.user_id
    return World(
        patient=results[0].subject_number,
        labels={d: kitlib.build_payload(TRIAL, n, kit_rules.KIT_UNIT, mac) for d, n in kits[0].items()},
        other_label=kitlib.build_payload(TRIAL, kits[1]["D2"], kit_rules.KIT_UNIT, mac),
        bedside={
            language: (
                result.subject_number,
                {d: kitlib.build_payload(TRIAL, n, d, mac) for d, n in kits_of.items()},
            )
            for language, result, kits_of in zip(LANGUAGES, results[1:], kits[1:], strict=True)
        },
        authenticators={
            "admin": authenticator(live, admin.user_id),
            "stat": authenticator(live, statistician),
        },
    )


def roles(world: World, language: str) -> list[tuple[str, dict[str, int], list[Visit]]]:
    """Who checks what, in `language`: each role's main pages, in the states its users meet."""

    def scans_one_wrong(page: Page) -> None:
        page.locator('[id="scans.D1"]').click()
        wedge(page, world.labels["D1"])
        wedge(page, world.other_label)
        wedge(page, world.labels["D3"])
        expect(page.locator('[id="scans.D2-verdict"]')).to_contain_text("✖")
        expect(page.locator('[id="scans.D3-verdict"]')).to_contain_text("✔")

    subject, labels = world.bedside[language]

    def bedside_scan(day: str, label: str) -> Callable[[Page], None]:
        def scan(page: Page) -> None:
            page.locator("#subject_number").fill(subject)
            page.locator("#day").select_option(day)
            page.locator("#payload").fill(label)
            page.locator("#scan button[type=submit]").click()
            page.wait_for_load_state()

        return scan

    def chosen_subject(page: Page) -> None:
        page.locator("#subject").select_option(world.patient)
        expect(page.get_by_test_id("chosen-subject")).to_have_text(world.patient)

    return [
        (
            "inv-p1",
            PHONE,
            [
                Visit("investigator home", "/"),
                Visit("trial page", T),
                Visit("randomize form with errors", f"{T}/randomize", submit_unchecked),
                Visit("randomize confirmation", f"{T}/randomize", fill_eligible),
                Visit("randomization result", f"{T}/subjects/{world.patient}/randomized"),
                Visit("subject page", f"{T}/subjects/{world.patient}"),
                Visit("emergency unblinding form", f"{T}/unblind", chosen_subject),
                Visit("emergency unblinding form with errors", f"{T}/unblind", submit_unchecked),
                Visit("screening log", f"{T}/screening"),
                Visit("account", "/account"),
                Visit("password change", "/account/password"),
            ],
        ),
        (
            "pharm-p1",
            DESKTOP,
            [
                Visit("pharmacy queue", f"{T}/pharmacy"),
                Visit("dispense form, one wrong scan", f"{T}/subjects/{world.patient}", scans_one_wrong),
            ],
        ),
        (
            "nurse-p1",
            PHONE,
            [
                Visit("bedside", f"{T}/bedside"),
                Visit("bedside, unreadable label", f"{T}/bedside", bedside_scan("D1", "not a label")),
                Visit("bedside, dose recorded", f"{T}/bedside", bedside_scan("D1", labels["D1"])),
                Visit("bedside, early dose stopped", f"{T}/bedside", bedside_scan("D2", labels["D2"])),
            ],
        ),
        (
            "monitor1",
            DESKTOP,
            [
                Visit("subject list", f"{T}/subjects"),
                Visit("audit trail", f"{T}/audit"),
                Visit("reports index", f"{T}/reports"),
                Visit("participant flow report", f"{T}/reports/participant-flow"),
                Visit(
                    "allocation history report", f"{T}/reports/allocation-history", focused(".table-scroll")
                ),  # a wide table
            ],
        ),
        (
            "manager",
            DESKTOP,
            [
                Visit("stock", f"{T}/stock"),
                Visit("shipments", f"{T}/shipments"),
                Visit("a shipment's kits", f"{T}/shipments/SH-0001"),  # its packing list
                Visit("reconciliation", f"{T}/reconciliation"),
                Visit("temperature excursions, the report form", f"{T}/excursions"),  # issue 19
                Visit("relabelling", f"{T}/relabelling"),
            ],
        ),
        # A wide block of text, scrolled sideways on a small screen.
        ("stat", PHONE, [Visit("design quality report", f"{T}/quality", focused("pre.report"))]),
        (
            "admin",
            DESKTOP,
            [Visit("admin users", "/admin/users"), Visit("admin sessions", "/admin/sessions")],
        ),
    ]


def test_main_pages_have_no_serious_or_critical_accessibility_violation(
    live_server: LiveServer, browser, new_page
) -> None:  # type: ignore[no-untyped-def]
    world = build_world(live_server)
    found: list[str] = []
    for language in LANGUAGES:  # before signing in, the browser's language chooses
        context = browser.new_context(viewport=PHONE, locale="fr-FR" if language == "fr" else "en-GB")
        page = context.new_page()
        page.goto(live_server.url + "/login")
        check(page, language, Visit("login", "/login"), found)
        context.close()
    pages = {}  # one browser context per role, signed in once, switched from English to French
    for language in LANGUAGES:
        for username, viewport, visits in roles(world, language):
            if username not in pages:
                secret = world.authenticators.get(username)
                code = crypto.totp_now(secret, datetime.now(UTC)) if secret else None
                pages[username] = sign_in_browser(new_page, live_server, username, viewport, totp_code=code)
            page = pages[username]
            switch_to(page, language)
            for visit in visits:
                check(page, language, visit, found)
    assert not found, "axe-core, serious or critical:\n" + "\n".join(found)


def test_the_check_finds_what_it_looks_for(browser) -> None:  # type: ignore[no-untyped-def]
    """The check above can fail: on a page with an unnamed button, an image without text and grey
    on white, axe reports them as critical or serious, and the failure lines name rule and element."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content(
        '<html lang="en"><head><title>t</title></head><body><main><h1>t</h1><button id="b"></button>'
        '<img id="i" src="data:,"><p id="p" style="color:#bbb;background:#fff">faint</p></main></body></html>'
    )
    lines = blocking(axe_violations(page), "sample")
    context.close()
    rules = {line.split(": ")[1].split("] ")[1] for line in lines}
    assert rules == {"button-name", "image-alt", "color-contrast"}, lines
    assert any(line.endswith("at #b") and "discernible text" in line for line in lines), lines
