"""The returns and destruction page as site pharmacists use it (issue 19): kits scanned into a
return (return form) or a signed destruction (certificate), PRG with plain messages, scoped to the
pharmacist's site, the documents downloaded as printed; the monitor only reads (ACC-12, LBL-11)."""

from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfReader

import kits as kitlib
from allocator.services.supply import kit_rules
from allocator.web import supply as web_supply
from tests.support import GOOD_PASSWORD
from tests.web import test_supply_pages
from tests.web.conftest import button_link
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


def records(html: str) -> list[str]:
    return re.findall(r"<tr><td>((?:RET|DES)-[^<]+)</td>", html)


@pytest.mark.req("REP-08", "LBL-11")
def test_the_records_are_paged_newest_first_filtered_and_refusals_read_in_french(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: at close-out every site returns or destroys what it holds, record after record; the
    page reads a page of them, newest first, with links to the older ones and back that keep the
    filters (site, kind); a site's pharmacist pages through their own site's records only."""
    ctx = people.ctx
    generate(ctx, 16)
    at_p1 = kits_at(ctx, "P1", 4)
    at_p2 = kits_at(ctx, "P2", 2)
    for number in at_p1[:3]:
        people.post(people.pharmacist, f"{BASE}/returns", PAGE, kits=number, method="courier")
    people.post(
        people.pharmacist,
        f"{BASE}/destructions",
        PAGE,
        kits=at_p1[3],
        method="incineration",
        password=GOOD_PASSWORD,
    )
    people.post(people.other_pharmacist, f"{BASE}/returns", PAGE, kits=at_p2[0], method="courier")
    monkeypatch.setattr(web_supply, "DISPOSAL_PAGE", 2)

    first = people.monitor.get(PAGE).get_data(as_text=True)
    assert records(first) == ["RET-P2-0001", "DES-P1-0001"]
    older = button_link(first, "Older records")
    assert older is not None and button_link(first, "Newest records") is None
    second = people.monitor.get(older).get_data(as_text=True)
    assert records(second) == ["RET-P1-0003", "RET-P1-0002"]
    last = people.monitor.get(button_link(second, "Older records") or "").get_data(as_text=True)
    assert records(last) == ["RET-P1-0001"] and button_link(last, "Older records") is None
    assert button_link(last, "Newest records") is not None
    emptied = people.monitor.get(f"{PAGE}?before=RET-P1-0001").get_data(as_text=True)
    assert records(emptied) == [] and "Nothing further on the list" in emptied
    assert "No record matches." not in emptied and button_link(emptied, "Newest records") is not None

    narrowed = people.monitor.get(f"{PAGE}?site=P1&kind=return").get_data(as_text=True)
    assert records(narrowed) == ["RET-P1-0003", "RET-P1-0002"]
    older = button_link(narrowed, "Older records")
    assert older is not None and "site=P1" in older and "kind=return" in older
    assert records(people.monitor.get(older).get_data(as_text=True)) == ["RET-P1-0001"]
    only = people.monitor.get(f"{PAGE}?kind=destruction").get_data(as_text=True)
    assert records(only) == ["DES-P1-0001"] and "No record matches." not in only
    none = people.monitor.get(f"{PAGE}?site=P2&kind=destruction").get_data(as_text=True)
    assert records(none) == [] and "No record matches." in none
    assert records(people.other_pharmacist.get(PAGE).get_data(as_text=True)) == ["RET-P2-0001"]
    for client, query, words in (
        (people.other_pharmacist, "site=P1", "P1"),
        (people.other_pharmacist, "before=RET-P1-0002", "no record"),  # another site's: unknown
        (people.monitor, "kind=lost", "unknown kind"),
        (people.monitor, "before=RET-P1-0099", "no record"),
    ):
        refused = client.get(f"{PAGE}?{query}")
        assert refused.status_code == 422 and words in refused.get_data(as_text=True), query

    token = csrf_token(people.other_pharmacist, "/")
    people.other_pharmacist.post("/language", data={"language": "fr", "next": "/", "csrf_token": token})
    french = people.other_pharmacist.get(PAGE).get_data(as_text=True)
    assert "Enregistrements, les plus récents d’abord" in french
    for query, words in (
        ("kind=lost", "type inconnu"),
        ("before=RET-P%271", "aucun enregistrement"),
        ("site=P%271", "n’est pas un centre de IFNG-PAIS à votre portée"),
    ):
        refused = people.other_pharmacist.get(f"{PAGE}?{query}").get_data(as_text=True)
        assert words in refused, query
        assert "within your reach" not in refused and "unknown kind" not in refused, query
