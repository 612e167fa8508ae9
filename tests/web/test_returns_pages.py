"""The returns and destruction page as site pharmacists use it (issue 19): kits scanned into a
return (return form) or a signed destruction (certificate), PRG with plain messages, scoped to the
pharmacist's site, the documents downloaded as printed; the monitor only reads (ACC-12, LBL-11)."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

import kits as kitlib
from allocator.services.supply import kit_rules
from tests.support import GOOD_PASSWORD
from tests.web import test_supply_pages
from tests.web.test_supply_pages import (
    ARM_TEXT,
    BASE,
    TRIAL,
    People,
    csrf_token,
    flashes,
    generate,
    kits_at,
    status_of,
)

people = test_supply_pages.people  # the supply pages' people (fixture)
PAGE = f"{BASE}/returns"


@pytest.mark.req("ACC-12", "LBL-11", "BLD-12")
def test_the_pharmacist_destroys_scanned_kits_signs_and_downloads_the_certificate(people: People) -> None:
    ctx = people.ctx
    generate(ctx, 12)
    kits = kits_at(ctx, "P1", 6)
    page = people.pharmacist.get(PAGE).get_data(as_text=True)
    assert 'action="/trials/IFNG-PAIS/destructions"' in page and 'name="password"' in page
    assert "No return or destruction yet." in page
    lines = "\r\n".join([kitlib.build_payload(TRIAL, kits[0], "K", kit_rules.mac(ctx)), kits[1]])
    form = {"kits": lines, "method": "incineration", "witness": "J. Témoin"}

    unsigned = people.post(people.pharmacist, f"{BASE}/destructions", PAGE, **form)
    assert any("password" in f for f in flashes(unsigned))
    elsewhere = people.post(
        people.other_pharmacist, f"{BASE}/destructions", PAGE, **form, password=GOOD_PASSWORD
    )
    assert any("within your reach" in f for f in flashes(elsewhere))
    assert {status_of(ctx, n) for n in kits[:2]} == {"available"}

    done = people.post(people.pharmacist, f"{BASE}/destructions", PAGE, **form, password=GOOD_PASSWORD)
    assert flashes(done) == ["Destruction DES-P1-0001 recorded (signed): download its certificate below."]
    assert [status_of(ctx, n) for n in kits[:2]] == ["destroyed", "destroyed"]
    html = done.get_data(as_text=True)  # type: ignore[attr-defined]
    assert "DES-P1-0001" in html and not ARM_TEXT.search(html)
    pdf = people.pharmacist.get(f"{PAGE}/DES-P1-0001.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert 'filename="DES-IFNG-PAIS-' in pdf.headers["Content-Disposition"]
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert kitlib.format_kit_number(kits[0]) in text and "Signed electronically" in text
    assert not ARM_TEXT.search(text)
    # The monitor reads the record and its certificate, P2's pharmacist sees neither; nobody but a
    # pharmacist records.
    assert "DES-P1-0001" in people.monitor.get(PAGE).get_data(as_text=True)
    assert people.monitor.get(f"{PAGE}/DES-P1-0001.pdf").data == pdf.data
    assert "DES-P1-0001" not in people.other_pharmacist.get(PAGE).get_data(as_text=True)
    assert people.other_pharmacist.get(f"{PAGE}/DES-P1-0001.pdf").status_code == 404
    token = csrf_token(people.monitor, PAGE)
    assert people.monitor.post(f"{BASE}/returns", data={**form, "csrf_token": token}).status_code == 403

    returned = people.post(people.pharmacist, f"{BASE}/returns", PAGE, kits=kits[2], method="courier")
    assert flashes(returned) == [
        "Return RET-P1-0001 recorded: print its return form below and send it with the kits."
    ]
    assert status_of(ctx, kits[2]) == "returned"
    bad = people.post(people.pharmacist, f"{BASE}/returns", PAGE, kits="not a kit", method="courier")
    assert any("Kit line 1: unreadable" in f for f in flashes(bad)), flashes(bad)
