"""Code-break sheet pages as people use them: the unblinded statistician generates the sheets
(signed with both factors) and downloads the PDF; the monitor checks sheets and downloads the
reconciliation, blinded; blinded roles cannot reach the generation; the trial manager records the
code-break evidence at site activation (UNB-06, UNB-07, BLD-01, ACC-12)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator import crypto
from allocator.models import AuditEvent, Site
from allocator.services import auth
from allocator.services.context import ServiceContext
from allocator.services.reports import filters as report_filters
from allocator.services.supply import kit_lists
from tests.support import CLI_ACTOR, GOOD_PASSWORD, Clock, enroll_totp, load_ifn, make_user
from tests.unit.kits.kits_testdata import decode_qr_codes, page_count
from tests.web.conftest import csrf_token, https_client

SignedIn = Callable[[str, str], FlaskClient]
TRIAL = "IFNG-PAIS"
BASE = f"/trials/{TRIAL}"
HERE = auth.Client("192.0.2.1", "pytest", "req")
ARM_TEXT = re.compile(r"placebo|interf[eé]ron|gamma", re.IGNORECASE)
ARM_HEADER = re.compile(r"<th[^>]*>[^<]*\b(arm|bras|treatment|traitement)\b", re.IGNORECASE)


def flashes(response: object) -> list[str]:
    """The messages at the top of the page, and each error beside its field as `field: message`
    (the field named by the id of its message, which the form's field points to)."""
    html = response.get_data(as_text=True)  # type: ignore[attr-defined]
    found = re.findall(r'<p class="flash [a-z]+" role="[a-z]+">([^<]*)</p>', html)
    found += re.findall(r'<div class="error-summary"[^>]*>\s*<h2>[^<]*</h2>\s*<p>([^<]*)</p>', html)
    found += [
        f"{f}: {m}" for f, m in re.findall(r'<p class="field-error" id="([\w.]+)-error">([^<]*)</p>', html)
    ]
    return found


def post(client: FlaskClient, path: str, page: str, **data: str) -> object:
    token = csrf_token(client, page)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=True)


class Unblinded:
    """The unblinded statistician, signed in with both factors; `code()` is a fresh TOTP code."""

    def __init__(self, app: Flask, ctx: ServiceContext, clock: Clock) -> None:
        self.clock = clock
        created = make_user(ctx, "stat", "unblinded_statistician")
        auth.change_password(
            ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE
        )
        self.secret = enroll_totp(ctx, created.user_id, clock)
        clock.advance(seconds=31)
        self.client = https_client(app)
        signed = self.client.post(
            "/login",
            data={"username": "stat", "password": GOOD_PASSWORD, "csrf_token": csrf_token(self.client)},
        )
        assert signed.status_code == 302
        done = self.client.post(
            "/account/totp",
            data={"code": self.code(), "csrf_token": csrf_token(self.client, "/account/totp")},
        )
        assert done.status_code == 302 and done.headers["Location"] == "/"

    def code(self) -> str:
        self.clock.advance(seconds=31)  # each code is accepted once
        return crypto.totp_now(self.secret, self.clock())


@pytest.mark.req("UNB-06", "UNB-07", "BLD-01", "ACC-12")
def test_generate_check_reconcile_and_activate_through_the_pages(
    app: Flask, ctx: ServiceContext, clock: Clock, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=8, lot_code="LOT-WEB", expiry=date(2027, 6, 30))
    clients = {}
    for username, role, site in (
        ("mon", "monitor", None),
        ("pharma-p1", "pharmacist", "P1"),
        ("tman", "trial_manager", None),
    ):
        created = make_user(ctx, username, role, site=site)
        clients[username] = signed_in(username, created.one_time_password)
    monitor, pharmacist, manager = clients["mon"], clients["pharma-p1"], clients["tman"]
    stat = Unblinded(app, ctx, clock)
    page = f"{BASE}/code-break/sheets"

    # The trial manager cannot activate a site yet: no sheet, and the evidence is required.
    sites_page = f"{BASE}/sites"
    html = manager.get(sites_page).get_data(as_text=True)
    assert 'name="code_break_evidence"' in html and "8 kit(s) without a sheet" in html
    form = {"approval_date": "2026-01-05", "delegation_log_date": "2026-02-01", "reason": "approved"}
    missing = post(manager, f"{BASE}/sites/P1/activate", sites_page, **form)
    assert any("code_break_evidence" in f for f in flashes(missing)), flashes(missing)
    early = post(manager, f"{BASE}/sites/P1/activate", sites_page, **form, code_break_evidence="binder")
    assert any("generate the code-break sheets first" in f for f in flashes(early))

    # The statistician generates: the signature is required, then the PDF comes back.
    html = stat.client.get(page).get_data(as_text=True)
    assert "8 kit(s) have no sheet yet" in html and 'name="password"' in html
    unsigned = post(stat.client, page, page)
    assert any("password: is required" in f for f in flashes(unsigned))
    wrong = post(stat.client, page, page, password="not my password", otp=stat.code())
    assert any("password" in f and "wrong" in f for f in flashes(wrong))
    token = csrf_token(stat.client, page)
    done = stat.client.post(page, data={"csrf_token": token, "password": GOOD_PASSWORD, "otp": stat.code()})
    assert done.status_code == 200 and done.mimetype == "application/pdf"
    assert done.headers["Content-Disposition"] == f'attachment; filename="CBDOC-{TRIAL}-000001.pdf"'
    assert done.headers["Cache-Control"] == "no-store"
    assert not ARM_TEXT.search(" ".join(f"{k}: {v}" for k, v in done.headers.items()))
    assert page_count(done.data) == 8
    assert [c.text for c in decode_qr_codes(done.data, 0, scale=2.0)] == [f"CB-{TRIAL}-000001"]
    html = stat.client.get(page).get_data(as_text=True)
    assert "Every kit has its sheet." in html and f"CBDOC-{TRIAL}-000001" in html
    again = post(stat.client, page, page, password=GOOD_PASSWORD, otp=stat.code())
    assert any("nothing to generate" in f for f in flashes(again))
    with ctx.db.reading() as s:
        failed = s.execute(select(AuditEvent).where(AuditEvent.action == "signature.failed")).scalars().all()
    assert [e.actor_username for e in failed] == ["stat"]

    # Blinded roles never reach the generation, its reprints or replacements.
    for client in (monitor, pharmacist, manager):
        assert client.get(page).status_code == 403
        token = csrf_token(client, "/account")
        assert client.post(page, data={"csrf_token": token}).status_code == 403
        assert client.post(f"{BASE}/code-break/replacements", data={"csrf_token": token}).status_code == 403

    # The monitor checks a sheet; bad input is named, never a 500; the CSV is blinded.
    overview = f"{BASE}/code-break"
    html = monitor.get(overview).get_data(as_text=True)
    assert f"CB-{TRIAL}-000001" in html and "never checked" in html
    assert not ARM_TEXT.search(html) and not ARM_HEADER.search(html)
    torn = post(
        monitor, f"{BASE}/code-break/checks", overview, sheet_number=f"CB-{TRIAL}-000001", status="torn"
    )
    assert any("status" in f for f in flashes(torn))
    unknown = post(monitor, f"{BASE}/code-break/checks", overview, sheet_number="CB-NOPE", status="intact")
    assert any("sheet_number" in f for f in flashes(unknown))
    opened = post(
        monitor,
        f"{BASE}/code-break/checks",
        overview,
        sheet_number=f"cb-{TRIAL.lower()}-000002",
        status="opened",
        note="seal broken, nothing registered",
    )
    assert f"Sheet CB-{TRIAL}-000002 recorded as opened." in flashes(opened)
    assert any("protocol deviation" in f for f in flashes(opened))
    html = opened.get_data(as_text=True)  # type: ignore[attr-defined]
    assert "1 discrepancy(ies)" in html and not ARM_TEXT.search(html)
    exported = monitor.get(f"{BASE}/code-break.csv")
    assert exported.mimetype == "text/csv"
    assert (
        exported.headers["Content-Disposition"]
        == f'attachment; filename="code-break-reconciliation-{TRIAL}.csv"'
    )
    text = exported.get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(text)))
    assert len([r for r in rows[1:] if r and r[0].startswith("CB-")]) == 8
    assert not ARM_TEXT.search(text) and not [c for r in rows for c in r if c in ("A", "B")]
    # A page of the sheets (issue 21: about 19,000 at 5,000 subjects), three rows a page here; the
    # counts and the discrepancies still cover every sheet, the CSV every row (above).
    monkeypatch.setattr(report_filters, "PAGE_ROWS", 3)
    second = monitor.get(f"{overview}?offset=3").get_data(as_text=True)
    assert "Rows 4 to 6 of 8; the CSV holds every row." in second
    shown = re.findall(rf"<tr><td>(CB-{TRIAL}-\d+)", second)
    assert shown == [f"CB-{TRIAL}-00000{n}" for n in (4, 5, 6)]
    assert "offset=0" in second and "offset=6" in second and "1 discrepancy(ies)" in second
    # The discrepancy of sheet 2, off this page, is listed above the sheets with its number.
    listed = re.findall(r"<li>(CB-[A-Z-]+-\d+)[^<]*protocol deviation", second)
    assert listed == [f"CB-{TRIAL}-000002"]
    assert "Rows 7 to 8 of 8" in monitor.get(f"{overview}?offset=6").get_data(as_text=True)
    beyond = monitor.get(f"{overview}?offset=30").get_data(as_text=True)
    assert "No rows from row 31; the table has 8." in beyond and "No sheet within your reach." not in beyond
    bad = monitor.get(f"{overview}?offset=minus-one")
    assert bad.status_code == 422 and "offset" in bad.get_data(as_text=True)
    twice = monitor.get(f"{overview}?offset=3&offset=6")  # was read at its first value
    assert twice.status_code == 422 and "give it once" in twice.get_data(as_text=True)
    monkeypatch.undo()

    # The site pharmacist sees only the sheets of kits at the site: none yet, all at the depot.
    html = pharmacist.get(overview).get_data(as_text=True)
    assert "No sheet within your reach." in html and f"CB-{TRIAL}-000001" not in html
    refused = post(
        pharmacist, f"{BASE}/code-break/checks", overview, sheet_number=f"CB-{TRIAL}-000001", status="intact"
    )
    assert any("within your reach" in f for f in flashes(refused))

    # The trial page links each role to its page.
    assert f'href="{overview}"' in monitor.get(BASE).get_data(as_text=True)
    assert f'href="{page}"' in stat.client.get(BASE).get_data(as_text=True)

    # With the sheets, the site is activated and the evidence recorded.
    activated = post(
        manager,
        f"{BASE}/sites/P1/activate",
        sites_page,
        **form,
        code_break_evidence="sheets of kits 1-8 held by the on-call unblinded pharmacist, receipt 2026-02-01",
    )
    assert "Site P1 activated." in flashes(activated)
    assert "Code-break material: sheets of kits 1-8 held by" in activated.get_data(as_text=True)  # type: ignore[attr-defined]
    with ctx.db.reading() as s:
        assert (
            s.execute(select(Site.code_break_evidence).where(Site.code == "P1"))
            .scalar_one()
            .startswith("sheets of kits 1-8")
        )


@pytest.mark.req("UNB-06", "LBL-12")
def test_reprint_and_replacement_forms_answer_with_the_pdf_or_a_named_error(
    app: Flask, ctx: ServiceContext, clock: Clock
) -> None:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-WEB", expiry=date(2027, 6, 30))
    stat = Unblinded(app, ctx, clock)
    page = f"{BASE}/code-break/sheets"
    token = csrf_token(stat.client, page)
    first = stat.client.post(page, data={"csrf_token": token, "password": GOOD_PASSWORD, "otp": stat.code()})
    assert first.mimetype == "application/pdf"
    reprint = f"{BASE}/code-break/documents/CBDOC-{TRIAL}-000001/reprint"
    no_reason = post(stat.client, reprint, page, password=GOOD_PASSWORD, otp=stat.code())
    assert any("reason" in f for f in flashes(no_reason))
    token = csrf_token(stat.client, page)
    copy = stat.client.post(
        reprint, data={"csrf_token": token, "reason": "jammed", "password": GOOD_PASSWORD, "otp": stat.code()}
    )
    assert copy.mimetype == "application/pdf" and page_count(copy.data) == 4
    assert copy.headers["Content-Disposition"] == f'attachment; filename="CBDOC-{TRIAL}-000002.pdf"'
    replace = f"{BASE}/code-break/replacements"
    unknown = post(
        stat.client,
        replace,
        page,
        sheet_number="CB-NOPE",
        reason="lost",
        password=GOOD_PASSWORD,
        otp=stat.code(),
    )
    assert any("sheet_number" in f for f in flashes(unknown))
    token = csrf_token(stat.client, page)
    new = stat.client.post(
        replace,
        data={
            "csrf_token": token,
            "sheet_number": f"CB-{TRIAL}-000001",
            "reason": "lost",
            "password": GOOD_PASSWORD,
            "otp": stat.code(),
        },
    )
    assert new.mimetype == "application/pdf" and page_count(new.data) == 1
    assert [c.text for c in decode_qr_codes(new.data, 0, scale=2.0)] == [f"CB-{TRIAL}-000005"]
    html = stat.client.get(page).get_data(as_text=True)
    assert "reprint 1 of CBDOC-IFNG-PAIS-000001" in html and "CBDOC-IFNG-PAIS-000003" in html
