"""Temperature excursion pages as people use them (issue 19): the receipt asks about the logger, a
yes opens the report for that shipment; the pharmacist reports with the logger's file and signs;
the kits are quarantined; the sponsor signs the decision; the monitor only reads; nothing is split
by arm; French and English (LBL-05, ACC-12, BLD-12)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator.models import AuditEvent, Kit
from allocator.services.context import ServiceContext
from allocator.services.supply import kit_lists
from allocator.services.supply import shipments as supply_shipments
from allocator.web import excursions as web_excursions
from tests.support import CLI_ACTOR, GOOD_PASSWORD, code_break_sheets, load_ifn, make_user
from tests.web.conftest import button_link, csrf_token, without_tokens

SignedIn = Callable[[str, str], FlaskClient]
TRIAL = "IFNG-PAIS"
BASE = f"/trials/{TRIAL}"
ARM_TEXT = re.compile(r"placebo|interf[eé]ron|\bbras\b|\barms?\b", re.IGNORECASE)
LOGGER = b"time,temperature\n2026-12-05 10:00,5.0\n2026-12-05 11:30,12.4\n"


def flashes(response: object) -> list[str]:
    html = response.get_data(as_text=True)  # type: ignore[attr-defined]
    return re.findall(r'<p class="flash [a-z]+" role="[a-z]+">([^<]*)</p>', html)


def statuses(ctx: ServiceContext, numbers: tuple[str, ...]) -> set[str]:
    with ctx.db.reading() as s:
        return set(s.execute(select(Kit.status).where(Kit.kit_number.in_(numbers))).scalars())


@pytest.fixture
def clients(ctx: ServiceContext, signed_in: SignedIn) -> dict[str, FlaskClient]:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=12, lot_code="LOT-WEB", expiry=date(2027, 6, 30))
    code_break_sheets(ctx)
    made = {}
    for username, role, site in (
        ("tman", "trial_manager", None),
        ("pharma-p1", "pharmacist", "P1"),
        ("pharma-p2", "pharmacist", "P2"),
        ("mon", "monitor", None),
    ):
        created = make_user(ctx, username, role, site=site)
        made[username] = signed_in(username, created.one_time_password)
    return made


def report_form(**overrides: object) -> dict[str, object]:
    return {
        "place": "shipment",
        "shipment": "SH-0001",
        "minimum": "4,8",
        "maximum": "12.4",
        "duration_minutes": "90",
        "note": "parcel left on the loading dock",
        "password": GOOD_PASSWORD,
        "logger": (io.BytesIO(LOGGER), "logger.csv"),
        **overrides,
    }


@pytest.mark.req("LBL-05", "ACC-12", "BLD-12")
def test_the_receipt_asks_about_the_logger_and_the_excursion_runs_to_a_signed_release(
    ctx: ServiceContext, clients: dict[str, FlaskClient]
) -> None:
    pharmacist, manager, monitor = clients["pharma-p1"], clients["tman"], clients["mon"]
    view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P1", 6)
    supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
    shipments_page = f"{BASE}/shipments"
    assert 'name="logger_excursion"' in pharmacist.get(shipments_page).get_data(as_text=True)

    # No answer: nothing received. A yes: nothing received, the report opens for this shipment.
    token = csrf_token(pharmacist, shipments_page)
    kits = "\n".join(view.kits)
    unanswered = pharmacist.post(
        f"{shipments_page}/SH-0001/receive", data={"kits": kits, "csrf_token": token}, follow_redirects=True
    )
    assert any("logger_excursion" in f for f in flashes(unanswered))
    yes = pharmacist.post(
        f"{shipments_page}/SH-0001/receive",
        data={"kits": kits, "logger_excursion": "yes", "csrf_token": token},
    )
    assert yes.status_code == 303 and yes.headers["Location"].endswith("/excursions?shipment=SH-0001#report")
    assert statuses(ctx, view.kits) == {"in_transit"}
    page = pharmacist.get(f"{BASE}/excursions?shipment=SH-0001").get_data(as_text=True)
    assert 'value="SH-0001"' in page and 'enctype="multipart/form-data"' in page

    # A bad file is refused beside its field, nothing changes; the signed report quarantines all six.
    token = csrf_token(pharmacist, f"{BASE}/excursions")
    bad = pharmacist.post(
        f"{BASE}/excursions",
        data={**report_form(logger=(io.BytesIO(b"MZ\x90\x00"), "logger.exe")), "csrf_token": token},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert "must be a CSV, text or PDF file" in bad.get_data(as_text=True)
    assert statuses(ctx, view.kits) == {"in_transit"}
    done = pharmacist.post(
        f"{BASE}/excursions",
        data={**report_form(), "csrf_token": token},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert flashes(done) == ["Excursion EXC-0001 reported: 6 kit(s) in quarantine until the sponsor decides."]
    assert statuses(ctx, view.kits) == {"quarantined"}
    detail = done.get_data(as_text=True)
    assert "4.8 to 12.4 °C" in detail and "logger.csv" in detail and "/decision" not in detail

    # Everyone with kit:view reads it, blinded; the logger downloads under our own name.
    for client in (pharmacist, manager, monitor):
        for path in (f"{BASE}/excursions", f"{BASE}/excursions/EXC-0001"):
            html = without_tokens(client.get(path).get_data(as_text=True))
            assert "EXC-0001" in html and not ARM_TEXT.search(html), path
    logger = monitor.get(f"{BASE}/excursions/EXC-0001/logger")
    assert logger.data == LOGGER and logger.mimetype == "text/csv"
    assert logger.headers["Content-Disposition"] == 'attachment; filename="logger-EXC-0001.csv"'
    assert clients["pharma-p2"].get(f"{BASE}/excursions/EXC-0001").status_code == 404
    assert "EXC-0001" not in clients["pharma-p2"].get(f"{BASE}/excursions").get_data(as_text=True)
    monitor_token = csrf_token(monitor, f"{BASE}/excursions")
    assert monitor.post(f"{BASE}/excursions", data={"csrf_token": monitor_token}).status_code == 403

    # The sponsor's decision: refused unsigned, then signed; final.
    decision = f"{BASE}/excursions/EXC-0001/decision"
    token = csrf_token(manager, f"{BASE}/excursions/EXC-0001")
    form = {"decision": "release", "reason": "stable 72 h at 25 °C", "csrf_token": token}
    unsigned = manager.post(decision, data=form, follow_redirects=True)
    assert any("is required" in f for f in flashes(unsigned))
    assert statuses(ctx, view.kits) == {"quarantined"}
    pharmacist_token = csrf_token(pharmacist, f"{BASE}/excursions/EXC-0001")
    assert pharmacist.post(decision, data={**form, "csrf_token": pharmacist_token}).status_code == 403
    released = manager.post(decision, data={**form, "password": GOOD_PASSWORD}, follow_redirects=True)
    assert flashes(released) == ["Decision recorded (signed): the kits are released."]
    assert statuses(ctx, view.kits) == {"in_transit"}  # not received yet: back in transit
    again = manager.post(decision, data={**form, "password": GOOD_PASSWORD}, follow_redirects=True)
    assert any("already decided" in f for f in flashes(again))

    # Now the receipt goes through with the truth: yes, reported as EXC-0001 (review of issue 19:
    # it went through only with a "no", and the audit recorded logger_excursion: false).
    page = pharmacist.get(shipments_page).get_data(as_text=True)
    assert 'value="reported"' in page and "Yes, reported as EXC-0001" in page
    token = csrf_token(pharmacist, shipments_page)
    received = pharmacist.post(
        f"{shipments_page}/SH-0001/receive",
        data={"kits": kits, "logger_excursion": "reported", "csrf_token": token},
        follow_redirects=True,
    )
    assert "Shipment SH-0001 received." in flashes(received)
    assert statuses(ctx, view.kits) == {"available"}
    with ctx.db.reading() as s:
        entry = s.execute(
            select(AuditEvent.new_values).where(AuditEvent.action == "shipment.received")
        ).scalar_one()
    recorded = json.loads(entry or "{}")
    assert (recorded["logger_excursion"], recorded["excursions"]) == (True, ["EXC-0001"])


def test_the_excursion_pages_speak_french(ctx: ServiceContext, clients: dict[str, FlaskClient]) -> None:
    manager = clients["tman"]
    view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P2", 4)
    supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
    token = csrf_token(manager, f"{BASE}/excursions")
    manager.post(
        f"{BASE}/depot/excursions",
        data={**report_form(shipment=view.number, minimum="-2", maximum="3"), "csrf_token": token},
        content_type="multipart/form-data",
    )
    assert statuses(ctx, view.kits) == {"quarantined"}
    manager.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(manager, "/")})
    listing = manager.get(f"{BASE}/excursions").get_data(as_text=True)
    assert "Excursions de température" in listing and "Déclarer une excursion de température" in listing
    assert "de -2 à 3 °C" in listing and "envoi SH-0001 vers P2" in listing
    detail = manager.get(f"{BASE}/excursions/EXC-0001").get_data(as_text=True)
    assert "La décision du promoteur" in detail and "quarantaine" in detail
    # A refusal in plain French, beside its field.
    token = csrf_token(manager, f"{BASE}/excursions")
    refused = manager.post(
        f"{BASE}/depot/excursions",
        data={**report_form(minimum="3", maximum="7,5"), "csrf_token": token},
        content_type="multipart/form-data",
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "les deux températures sont entre 2 et 8 °C" in refused


@pytest.mark.req("REP-08")
def test_the_excursions_list_is_paged_filtered_and_refuses_in_french(
    ctx: ServiceContext, clients: dict[str, FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: a page of excursions, newest first, with links to the older ones and back that keep
    the filters; a bad filter or cursor is a 422 naming it, in French too."""
    manager = clients["tman"]
    for _ in range(3):
        view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P2", 2)
        supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
        token = csrf_token(manager, f"{BASE}/excursions")
        manager.post(
            f"{BASE}/depot/excursions",
            data={**report_form(shipment=view.number), "csrf_token": token},
            content_type="multipart/form-data",
        )
    monkeypatch.setattr(web_excursions, "EXCURSION_PAGE", 2)

    def listed(html: str) -> list[str]:
        return re.findall(r'/excursions/(EXC-\d+)">', html)

    first = manager.get(f"{BASE}/excursions?status=pending").get_data(as_text=True)
    assert listed(first) == ["EXC-0003", "EXC-0002"] and button_link(first, "Newest excursions") is None
    older = button_link(first, "Older excursions")
    assert older is not None and "status=pending" in older and "before=EXC-0002" in older
    second = manager.get(older).get_data(as_text=True)
    assert listed(second) == ["EXC-0001"] and button_link(second, "Older excursions") is None
    assert button_link(second, "Newest excursions") is not None
    none = manager.get(f"{BASE}/excursions?status=released").get_data(as_text=True)
    assert listed(none) == [] and "No excursion matches." in none
    emptied = manager.get(f"{BASE}/excursions?before=EXC-0001").get_data(as_text=True)
    assert listed(emptied) == [] and "Nothing further on the list" in emptied
    assert "No excursion matches." not in emptied and button_link(emptied, "Newest excursions") is not None
    for query, words in (
        ("status=lost", "unknown status"),
        ("before=EXC-0099", "no excursion"),
        ("site=P9", "is not a site of"),
        ("before=a%00b", "printable characters"),
    ):
        refused = manager.get(f"{BASE}/excursions?{query}")
        assert refused.status_code == 422 and words in refused.get_data(as_text=True), query
    manager.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(manager, "/")})
    french = manager.get(f"{BASE}/excursions").get_data(as_text=True)
    assert "Excursions, les plus récentes d’abord" in french and "Excursions plus anciennes" in french
    cursor = manager.get(f"{BASE}/excursions?before=EXC-%27x").get_data(as_text=True)
    assert "aucune excursion" in cursor and "within your reach" not in cursor
    # The report form's prefill (the receipt's link): a NUL or control character is left out.
    prefilled = manager.get(f"{BASE}/excursions?shipment=SH-%00x")
    assert prefilled.status_code == 200 and "\x00" not in prefilled.get_data(as_text=True)
    assert 'value="SH-0001"' in manager.get(f"{BASE}/excursions?shipment=SH-0001").get_data(as_text=True)


@pytest.mark.req("ACC-02")
def test_forms_are_offered_only_for_the_pages_trial(
    ctx: ServiceContext, clients: dict[str, FlaskClient], signed_in: SignedIn
) -> None:
    """Review of issue 19: a pharmacist and trial manager of another trial who monitors this one saw
    the report, decision and return forms here, which then answered 403."""
    from allocator.permissions import Scope
    from allocator.services import signatures, trials
    from allocator.services.accounts import users
    from allocator.services.supply import excursions
    from tests.support import IFN_TRIAL, person

    trials.load_trial(
        ctx,
        CLI_ACTOR,
        IFN_TRIAL.read_text().replace('code = "IFNG-PAIS"', 'code = "OTHER"'),
        source_name="other.toml",
    )
    view = supply_shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P1", 4)
    supply_shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
    excursions.report_excursion(
        ctx,
        person(ctx, "pharma-x", "pharmacist", "P1"),
        TRIAL,
        place="shipment",
        shipment_number=view.number,
        minimum="2",
        maximum="15",
        duration_minutes="60",
        note="",
        logger=excursions.LoggerFile("l.csv", LOGGER),
        scope=Scope(all_sites=True, site_ids=frozenset()),
        signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
    )
    created = make_user(ctx, "mon-tm", "monitor")
    for role, site in (("trial_manager", None), ("pharmacist", "P1")):
        users.grant_role(ctx, CLI_ACTOR, "mon-tm", users.RoleRequest(role, "OTHER", site, reason="both"))
    client = signed_in("mon-tm", created.one_time_password)
    listing = client.get(f"{BASE}/excursions").get_data(as_text=True)
    assert "EXC-0001" in listing and 'enctype="multipart/form-data"' not in listing  # no report form
    detail = client.get(f"{BASE}/excursions/EXC-0001").get_data(as_text=True)
    assert "/decision" not in detail
    returns = client.get(f"{BASE}/returns").get_data(as_text=True)
    assert "<h1" in returns and f'action="{BASE}/returns"' not in returns
    # The trial's own manager still sees the decision form (the check is not simply always false).
    assert "/decision" in clients["tman"].get(f"{BASE}/excursions/EXC-0001").get_data(as_text=True)
