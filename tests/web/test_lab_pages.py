"""The cohort's lab shipment, receipt and sample accountability pages (issue 20, labship): the site
prepares, prints and ships; the lab technician scans the manifest and each tube set on a phone
page, closes the receipt; refusals are shown beside their field; every action is PRG."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

import kits
from allocator import crypto
from allocator.services.context import ServiceContext
from allocator.services.reports import filters as report_filters
from allocator.services.samples import lab_shipments
from allocator.web import lab as web_lab
from tests.support import ALL_SITES, COHORT, GOOD_PASSWORD, Clock, ready_cohort
from tests.support.cohort import collected_samples, lab_technician, manifest_payload, tube_set_label
from tests.web.conftest import button_link, csrf_token

BASE = f"/trials/{COHORT}"


@pytest.mark.req("LBL-09")
def test_site_ships_and_the_lab_receives_through_the_pages(
    ctx: ServiceContext,
    clock: Clock,
    signed_in: Callable[[str, str], FlaskClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 3)
    lab_technician(ctx)
    site = signed_in("inv-l1", GOOD_PASSWORD)
    assert "Lab shipments" in site.get(BASE).get_data(as_text=True)
    page = site.get(f"{BASE}/lab-shipments").get_data(as_text=True)
    assert "Prepare a shipment" in page and kits.format_kit_number(tubes[0]) in page
    token = csrf_token(site, f"{BASE}/lab-shipments")
    # a drug kit's label is refused beside the field, nothing prepared
    drug = kits.build_payload(COHORT, tubes[0], "K", lambda m: crypto.label_mac(ctx.ring, m))
    refused = site.post(f"{BASE}/lab-shipments", data={"site": "L1", "tube_sets": drug, "csrf_token": token})
    assert refused.status_code == 303 and refused.headers["Location"].endswith("/lab-shipments#prepare")
    shown = site.get(f"{BASE}/lab-shipments").get_data(as_text=True)
    assert "a drug kit&#39;s label, not a tube set&#39;s" in shown and "No shipment yet." in shown
    assert f"Tube set {kits.format_kit_number(tubes[0])}: a drug kit" in shown
    done = site.post(
        f"{BASE}/lab-shipments",
        data={
            "site": "L1",
            "pick": [tubes[0], tubes[1]],
            "tube_sets": tube_set_label(ctx, tubes[2]),
            "csrf_token": token,
        },
    )
    assert done.status_code == 303
    page = site.get(f"{BASE}/lab-shipments").get_data(as_text=True)
    assert "LS-0001" in page and "Shipment prepared" in page
    printed = site.post(f"{BASE}/lab-shipments/LS-0001/manifests", data={"csrf_token": token})
    assert printed.status_code == 303 and printed.headers["Location"].endswith(".pdf")
    pdf = site.get(printed.headers["Location"])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert site.post(f"{BASE}/lab-shipments/LS-0001/ship", data={"csrf_token": token}).status_code == 303

    clock.advance(hours=3)
    lab = signed_in("lab-tech", GOOD_PASSWORD)
    home = lab.get(BASE).get_data(as_text=True)
    assert "Sample receipt" in home and "Lab shipments" not in home
    token = csrf_token(lab, f"{BASE}/lab-receipt")
    wrong = lab.post(
        f"{BASE}/lab-receipt",
        data={"manifest": manifest_payload(ctx, "LS-0001", trial="IFNG-PAIS"), "csrf_token": token},
    )
    assert wrong.status_code == 303
    assert "a manifest of another study" in lab.get(f"{BASE}/lab-receipt").get_data(as_text=True)
    opened = lab.post(
        f"{BASE}/lab-receipt", data={"manifest": manifest_payload(ctx, "LS-0001"), "csrf_token": token}
    )
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/lab-receipt/LS-0001")
    receipt = lab.get(opened.headers["Location"]).get_data(as_text=True)
    assert "3 of 3 tube sets still to scan" in receipt and 'name="viewport"' in receipt
    ok = lab.post(
        f"{BASE}/lab-receipt/LS-0001/samples",
        data={"tube_set": tube_set_label(ctx, tubes[0]), "outcome": "received", "csrf_token": token},
    )
    assert ok.status_code == 303
    lab.post(
        f"{BASE}/lab-receipt/LS-0001/samples",
        data={"tube_set": tubes[1], "outcome": "unusable", "reason": "haemolysed", "csrf_token": token},
    )
    again = lab.post(
        f"{BASE}/lab-receipt/LS-0001/samples",
        data={"tube_set": tubes[0], "outcome": "received", "csrf_token": token},
    )
    assert again.status_code == 303
    receipt = lab.get(f"{BASE}/lab-receipt/LS-0001").get_data(as_text=True)
    assert "already scanned: received" in receipt and "1 of 3 tube sets still to scan" in receipt
    assert "5 h" in receipt and "haemolysed" in receipt
    assert lab.post(f"{BASE}/lab-receipt/LS-0001/close", data={"csrf_token": token}).status_code == 303
    closed = lab.get(f"{BASE}/lab-receipt/LS-0001").get_data(as_text=True)
    assert "not received" in closed and "Close the receipt" not in closed

    report = lab.get(f"{BASE}/sample-accountability").get_data(as_text=True)
    assert "Sample accountability" in report and "haemolysed: 1" in report
    csv = lab.get(f"{BASE}/sample-accountability.csv")
    assert csv.mimetype == "text/csv" and csv.get_data(as_text=True).count("\r\n") == 4
    # The lab has no shipment preparation; the site's investigator no receipt, and the samples of
    # its own site only in the accountability (SAMPLE_VIEW, within its reach).
    assert lab.get(f"{BASE}/lab-shipments").status_code == 403
    site = signed_in("inv-l1", GOOD_PASSWORD)
    assert site.get(f"{BASE}/lab-receipt").status_code == 403
    assert site.get(f"{BASE}/sample-accountability").status_code == 200

    # Issue 21: the counts cover every sample, the list is a page of them with links either way.
    monkeypatch.setattr(report_filters, "PAGE_ROWS", 2)
    first = lab.get(f"{BASE}/sample-accountability").get_data(as_text=True)
    assert "Rows 1 to 2 of 3; the CSV holds every row." in first and "haemolysed: 1" in first
    assert first.count("<td>L1</td>") == 2  # two sample rows (the counts' row is a header cell)
    following = re.search(r'<a href="([^"]+)">Next rows</a>', first)
    assert following is not None and "offset=2" in following.group(1) and "Previous rows" not in first
    last = lab.get(following.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert "Rows 3 to 3 of 3" in last and last.count("<td>L1</td>") == 1 and "Next rows" not in last
    assert "Previous rows" in last
    assert lab.get(f"{BASE}/sample-accountability?offset=x").status_code == 422
    twice = lab.get(f"{BASE}/sample-accountability?offset=0&offset=2")  # was read at its first value
    assert twice.status_code == 422 and "give it once" in twice.get_data(as_text=True)
    # Past the end: the previous link goes back to the last rows, not to another empty page.
    beyond = lab.get(f"{BASE}/sample-accountability?offset=50").get_data(as_text=True)
    assert "No rows from row 51; the table has 3." in beyond
    assert 'offset=1#samples">Previous rows' in beyond


@pytest.mark.req("REP-08")
def test_the_lab_shipment_pages_show_a_page_of_shipments_with_the_older_ones_a_link_away(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: the site's lab shipments and the lab's shipments on their way are pages, newest
    first, with links to the older page and back."""
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 3)
    for tube in tubes:
        lab_shipments.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, tube)], ALL_SITES)
    for number in ("LS-0001", "LS-0003"):
        lab_shipments.ship(ctx, investigator, COHORT, number, ALL_SITES)
    lab_technician(ctx)
    monkeypatch.setattr(web_lab, "LAB_SHIPMENT_PAGE", 2)
    site = signed_in("inv-l1", GOOD_PASSWORD)

    def cards(html: str) -> list[str]:
        return re.findall(r'data-testid="shipment-(LS-\d{4})"', html)

    first = site.get(f"{BASE}/lab-shipments").get_data(as_text=True)
    assert cards(first) == ["LS-0003", "LS-0002"] and "Newest shipments" not in first
    older = button_link(first, "Older shipments")
    assert older is not None
    second = site.get(older).get_data(as_text=True)
    assert cards(second) == ["LS-0001"] and "Older shipments" not in second and "Newest shipments" in second
    # An action on an older page comes back to that page.
    from_page = site.get(f"{BASE}/lab-shipments?before=LS-0003").get_data(as_text=True)
    assert cards(from_page) == ["LS-0002", "LS-0001"] and 'name="before" value="LS-0003"' in from_page
    token = csrf_token(site, f"{BASE}/lab-shipments?before=LS-0003")
    shipped = site.post(f"{BASE}/lab-shipments/LS-0002/ship", data={"csrf_token": token, "before": "LS-0003"})
    assert shipped.status_code == 303 and shipped.headers["Location"].endswith(
        "/lab-shipments?before=LS-0003#list"
    )
    bad = site.get(f"{BASE}/lab-shipments?before=LS-0099")
    assert bad.status_code == 422 and "no such shipment" in bad.get_data(as_text=True)

    lab = signed_in("lab-tech", GOOD_PASSWORD)
    on_the_way = lab.get(f"{BASE}/lab-receipt").get_data(as_text=True)
    assert re.findall(r"/lab-receipt/(LS-\d{4})\"", on_the_way) == ["LS-0003", "LS-0002"]
    older_on_the_way = button_link(on_the_way, "Older shipments")
    assert older_on_the_way is not None
    rest = lab.get(older_on_the_way).get_data(as_text=True)
    assert re.findall(r"/lab-receipt/(LS-\d{4})\"", rest) == ["LS-0001"] and "Newest shipments" in rest
    [extra] = collected_samples(ctx, investigator, 1)
    lab_shipments.prepare(ctx, investigator, COHORT, "L1", [tube_set_label(ctx, extra)], ALL_SITES)  # LS-0004
    assert "LS-0004" not in lab.get(f"{BASE}/lab-receipt").get_data(as_text=True)  # prepared, not on its way


def test_the_lab_pages_speak_french(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """Every user-visible string of the receipt exists in French: titles, the refusal beside the
    field, the status words, the reasons."""
    investigator = ready_cohort(ctx)
    tubes = collected_samples(ctx, investigator, 2)
    from allocator.services.samples import lab_shipments as ls
    from tests.support import ALL_SITES

    number = ls.prepare(ctx, investigator, COHORT, "L1", tubes, ALL_SITES).number
    ls.ship(ctx, investigator, COHORT, number, ALL_SITES)
    lab_technician(ctx)
    lab = signed_in("lab-tech", GOOD_PASSWORD)
    lab.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(lab, "/")})
    token = csrf_token(lab, f"{BASE}/lab-receipt/{number}")
    lab.post(
        f"{BASE}/lab-receipt/{number}/samples",
        data={"tube_set": tubes[0], "outcome": "unusable", "reason": "haemolysed", "csrf_token": token},
    )
    drug = kits.build_payload(COHORT, tubes[1], "K", lambda m: crypto.label_mac(ctx.ring, m))
    lab.post(f"{BASE}/lab-receipt/{number}/samples", data={"tube_set": drug, "csrf_token": token})
    page = lab.get(f"{BASE}/lab-receipt/{number}").get_data(as_text=True)
    for french in (
        "Réception de LS-0001",
        "Scanner un kit de tubes",
        "l&#39;étiquette d&#39;un kit de médicament, pas d&#39;un kit de tubes",
        "hémolysé",
        "inutilisable",
        "expédié",
        "Clore la réception",
    ):
        assert french in page, french
    report = lab.get(f"{BASE}/sample-accountability").get_data(as_text=True)
    assert "Comptabilité des échantillons" in report and "En attente d'envoi" in report
    # From the review of the paged list: the window's refusal had its heading in English.
    refused = lab.get(f"{BASE}/sample-accountability?offset=x")
    html = refused.get_data(as_text=True)
    assert (
        refused.status_code == 422 and "position de départ invalide" in html and "invalid offset" not in html
    )


def test_the_roles_page_offers_the_lab_technician_in_the_cohort_only(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    from allocator.services.accounts import users
    from tests.support import CLI_ACTOR, load_cohort, load_ifn, make_user

    load_ifn(ctx)
    load_cohort(ctx)
    made = make_user(ctx, "tm-both", "trial_manager")
    users.grant_role(
        ctx,
        CLI_ACTOR,
        "tm-both",
        users.RoleRequest(role="trial_manager", trial_code=COHORT, reason="both studies"),
    )
    manager = signed_in("tm-both", made.one_time_password)
    cohort = manager.get(f"{BASE}/roles").get_data(as_text=True)
    randomized = manager.get("/trials/IFNG-PAIS/roles").get_data(as_text=True)
    assert 'value="lab_technician"' in cohort
    assert 'value="lab_technician"' not in randomized
