"""Issue 19's destruction journey in Debian's Chromium, in English and in French: the site
pharmacist opens *Returns and destruction* from the stock page, scans two kit labels and types a
third number, gives the method and a witness, signs, and downloads the destruction certificate,
which is opened and rendered with pypdfium2; screenshots and the rendered certificate in
test-artifacts/e2e/ (looked at by eye)."""

from __future__ import annotations

import re

import pypdfium2 as pdfium
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

import kits as kitlib
from allocator.models import Kit, Site
from allocator.services.supply import kit_rules
from tests.e2e.conftest import ARTIFACTS, LiveServer, shot
from tests.e2e.test_scanning_journey import DESKTOP, sign_in
from tests.support import GOOD_PASSWORD, ready_trial

pytestmark = pytest.mark.e2e

TRIAL = "IFNG-PAIS"
WORDS = {
    "en": {
        "stock": "Kit stock",
        "link": "Returns and destruction",
        "destroy": "Destroy (signed)",
        "done": "Destruction DES-P1-0001 recorded (signed): download its certificate below.",
        "certificate": "Destruction certificate (PDF)",
        "unsigned": "Your password (electronic signature): is required",
    },
    "fr": {
        "stock": "Stock de kits",
        "link": "Retours et destruction",
        "destroy": "Détruire (signé)",
        "done": "Destruction DES-P1-0001 enregistrée (signée) : téléchargez son certificat ci-dessous.",
        "certificate": "Certificat de destruction (PDF)",
        "unsigned": "Votre mot de passe (signature électronique)",
    },
}


@pytest.mark.req("ACC-12", "LBL-09", "LBL-11", "BLD-01")
@pytest.mark.parametrize("language", ["en", "fr"])
def test_the_pharmacist_scans_kits_signs_their_destruction_and_opens_the_certificate(
    live_server: LiveServer, new_page, language: str
) -> None:  # type: ignore[no-untyped-def]
    ctx = live_server.ctx
    ready_trial(ctx)
    with ctx.db.reading() as session:
        numbers = list(
            session.execute(
                select(Kit.kit_number)
                .join(Site, Site.id == Kit.site_id)
                .where(Site.code == "P1", Kit.status == "available")
                .order_by(Kit.kit_number)
                .limit(3)
            ).scalars()
        )
    labels = [kitlib.build_payload(TRIAL, n, kit_rules.KIT_UNIT, kit_rules.mac(ctx)) for n in numbers[:2]]
    words = WORDS[language]

    pharm = sign_in(new_page, live_server, "pharm-p1", DESKTOP, language)
    pharm.goto(f"{live_server.url}/trials/{TRIAL}/stock")
    pharm.get_by_role("link", name=words["link"]).click()
    pharm.wait_for_url(f"**/trials/{TRIAL}/returns")
    kits = pharm.locator("#ds-kits")
    kits.click()
    for label in labels:  # a keyboard-wedge scanner: the label typed fast, then Enter
        pharm.keyboard.type(label, delay=2)
        pharm.keyboard.press("Enter")
    pharm.keyboard.type(kitlib.format_kit_number(numbers[2]))
    pharm.locator("#ds-method").fill("incineration, hospital pharmacy")
    pharm.locator("#ds-witness").fill("Claire Témoin")
    shot(pharm, f"destruction-{language}-01-scanned")

    # Without the signature nothing is destroyed; then signed.
    pharm.locator("#ds-password").evaluate("field => field.removeAttribute('required')")
    pharm.get_by_role("button", name=words["destroy"]).click()
    expect(pharm.locator(".flash.error")).to_contain_text(words["unsigned"])
    with ctx.db.reading() as session:
        assert set(session.execute(select(Kit.status).where(Kit.kit_number.in_(numbers))).scalars()) == {
            "available"
        }
    pharm.locator("#ds-kits").fill("\n".join([*labels, numbers[2]]))
    pharm.locator("#ds-method").fill("incineration, hospital pharmacy")
    pharm.locator("#ds-witness").fill("Claire Témoin")
    pharm.locator("#ds-password").fill(GOOD_PASSWORD)
    pharm.get_by_role("button", name=words["destroy"]).click()
    expect(pharm.get_by_text(words["done"])).to_be_visible()
    expect(pharm.get_by_role("cell", name="DES-P1-0001")).to_be_visible()
    shot(pharm, f"destruction-{language}-02-recorded")
    with ctx.db.reading() as session:
        assert set(session.execute(select(Kit.status).where(Kit.kit_number.in_(numbers))).scalars()) == {
            "destroyed"
        }

    # The certificate, downloaded as the browser does, opened and rendered.
    with pharm.expect_download() as download_info:
        pharm.get_by_role("link", name=words["certificate"]).click()
    download = download_info.value
    assert download.suggested_filename.startswith("DES-IFNG-PAIS-")
    path = ARTIFACTS / f"destruction-{language}-03-certificate.pdf"
    download.save_as(str(path))
    pdf = path.read_bytes()
    assert pdf.startswith(b"%PDF")
    document = pdfium.PdfDocument(pdf)
    try:
        assert len(document) == 1
        text = document[0].get_textpage().get_text_range()
        image = document[0].render(scale=2).to_pil()
    finally:
        document.close()
    image.save(ARTIFACTS / f"destruction-{language}-03-certificate.png")
    flat = " ".join(text.split())
    for expected in (
        "Certificat de destruction de kits",
        "Kit destruction certificate",
        "DES-P1-0001",
        "incineration, hospital pharmacy",
        "Claire Témoin",
        "Signé électroniquement par",
        "Signed electronically by",
        *(kitlib.format_kit_number(n) for n in numbers),
    ):
        assert expected in flat, expected
    assert not re.search(r"(?i)placebo|interf[eé]ron|\barms?\b|\bbras\b", flat), flat
