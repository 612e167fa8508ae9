"""The investigator's journey in French (issue 13): sign in, switch to French, randomize with a
mistake, read the error in French beside its field, correct it with a French decimal comma, and
randomize. Screenshots in test-artifacts/e2e/ (looked at by eye when the screens change)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import LiveServer, shot
from tests.support import GOOD_PASSWORD, eligible_on, ready_trial

TRIAL = "IFNG-PAIS"
PHONE = {"width": 390, "height": 844}


@pytest.mark.req("RND-05")
def test_an_investigator_randomizes_in_french(live_server: LiveServer, new_page) -> None:  # type: ignore[no-untyped-def]
    ready_trial(live_server.ctx)
    answers = eligible_on(datetime.now(UTC).date())
    inv = new_page(PHONE)
    inv.goto(live_server.url + "/login")
    expect(inv.locator("html")).to_have_attribute("lang", "en")

    # The switch works before signing in, and the sign-in page is then in French.
    inv.get_by_role("button", name="Français").click()
    expect(inv.locator("html")).to_have_attribute("lang", "fr")
    inv.get_by_label("Identifiant").fill("inv-p1")
    inv.get_by_label("Mot de passe").fill(GOOD_PASSWORD)
    shot(inv, "fr-01-sign-in")
    inv.get_by_role("button", name="Se connecter").click()
    expect(inv.get_by_role("heading", name="Vos essais")).to_be_visible()
    shot(inv, "fr-02-home")

    inv.get_by_role("link", name="Randomiser un patient").first.click()
    expect(inv.get_by_role("heading", name="Randomiser un patient")).to_be_visible()
    inv.get_by_label("Centre").select_option("P1")
    inv.get_by_label("Numéro de sélection").fill("P1-0042")
    for criterion, value in answers.items():
        name = f"eligibility.{criterion}"
        if value in ("yes", "no"):
            group = inv.locator("fieldset.question").filter(has=inv.locator(f'[name="{name}"]'))
            group.get_by_label("Oui" if value == "yes" else "Non", exact=True).check()
        else:
            inv.locator(f'[name="{name}"]').fill(str(value))
    inv.locator('[name="eligibility.sofa_24h"]').fill("9,5")  # a mistake: the score is whole
    inv.locator('[name="eligibility.mhladr"]').fill("5 400")  # French thousands spacing
    inv.get_by_label("Motif d'admission en réanimation").select_option("septic")
    shot(inv, "fr-03-form")
    inv.get_by_role("button", name="Vérifier et confirmer").click()

    # The error is in French, at the top and beside its field; what was typed is kept.
    summary = inv.locator(".error-summary")
    expect(summary).to_contain_text("Veuillez corriger le formulaire")
    expect(summary).to_contain_text("Score SOFA des 24 premières heures")
    expect(inv.locator('[id="eligibility.sofa_24h-error"]')).to_have_text("doit être un nombre entier")
    expect(inv.locator('[name="eligibility.sofa_24h"]')).to_have_value("9,5")
    expect(inv.locator('[name="eligibility.mhladr"]')).to_have_value("5 400")
    assert "eligibility." not in inv.locator("main").inner_text()
    shot(inv, "fr-04-error-beside-field")
    summary.get_by_role("link").first.click()
    expect(inv.locator('[name="eligibility.sofa_24h"]')).to_be_in_viewport()

    inv.locator('[name="eligibility.sofa_24h"]').fill("9")
    inv.get_by_role("button", name="Vérifier et confirmer").click()
    expect(inv.get_by_role("heading", name="Confirmer la randomisation")).to_be_visible()
    facts = inv.locator("dl.facts").inner_text()
    assert "Septique" in facts and "Numéro de sélection" in facts, facts
    shot(inv, "fr-05-confirm")
    inv.get_by_role("button", name="Randomiser maintenant").click()
    expect(inv.get_by_role("heading", name="Randomisé", exact=True)).to_be_visible()
    assert inv.get_by_test_id("subject-number").inner_text().strip() == "P1-001"
    expect(inv.locator("main")).to_contain_text("La pharmacie a été prévenue.")
    shot(inv, "fr-06-randomized")

    # The choice is kept on the account: back in English only when switched back.
    inv.get_by_role("button", name="English").click()
    expect(inv.locator("html")).to_have_attribute("lang", "en")
