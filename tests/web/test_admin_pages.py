"""Administration and audit pages as people use them (ACC-02, ACC-09, BLD-11, AUD-05)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator.models import RoleAssignment
from allocator.services import spooling
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.supply import kit_lists
from tests.support import CLI_ACTOR, code_break_sheets, load_ifn, make_user
from tests.web.conftest import csrf_token

SignedIn = Callable[[str, str], FlaskClient]


def manager(ctx: ServiceContext, signed_in: SignedIn) -> FlaskClient:
    load_ifn(ctx)
    created = make_user(ctx, "tman", "trial_manager")
    return signed_in("tman", created.one_time_password)


@pytest.mark.req("BLD-11")
def test_a_role_revoked_by_the_trial_manager_stops_the_user_at_the_next_request(
    ctx: ServiceContext, signed_in: SignedIn
) -> None:
    tm = manager(ctx, signed_in)
    created = make_user(ctx, "inv", "investigator", site="P1")
    investigator = signed_in("inv", created.one_time_password)
    assert investigator.get("/trials/IFNG-PAIS").status_code == 200
    page = tm.get("/trials/IFNG-PAIS/roles").get_data(as_text=True)
    assert "Inv (inv)" in page and "active" in page
    with ctx.db.reading() as s:
        assignment = s.execute(
            select(RoleAssignment.id).where(RoleAssignment.user_id == created.user_id)
        ).scalar_one()
    response = tm.post(
        f"/trials/IFNG-PAIS/roles/{assignment}/revoke",
        data={"reason": "left the unit", "csrf_token": csrf_token(tm, "/trials/IFNG-PAIS/roles")},
    )
    assert response.status_code == 303
    assert investigator.get("/trials/IFNG-PAIS").status_code == 403
    history = tm.get("/trials/IFNG-PAIS/roles").get_data(as_text=True)
    assert "left the unit" in history and "revoked" in history


def test_granting_in_a_trial_validates_and_reports_errors(ctx: ServiceContext, signed_in: SignedIn) -> None:
    tm = manager(ctx, signed_in)
    make_user(ctx, "newcomer", "monitor")
    token = csrf_token(tm, "/trials/IFNG-PAIS/roles")
    bad = tm.post(
        "/trials/IFNG-PAIS/roles",
        data={"username": "newcomer", "role": "nurse", "reason": "cover", "csrf_token": token},
        follow_redirects=True,
    )
    shown = bad.get_data(as_text=True)  # beside its field, which the summary links to (issue 13)
    assert '<p class="field-error" id="site-error">this role must be granted for a site</p>' in shown
    assert '<a href="#t-site">Site (site roles; optional for monitors): the nurse role' not in shown
    assert '<a href="#t-site">Site: this role must be granted for a site</a>' in shown
    assert 'value="newcomer"' in shown and 'value="cover"' in shown  # what was typed is kept
    ok = tm.post(
        "/trials/IFNG-PAIS/roles",
        data={
            "username": "newcomer",
            "role": "nurse",
            "site": "P2",
            "reason": "night cover",
            "ends_on": "2026-04-01",
            "csrf_token": token,
        },
        follow_redirects=True,
    )
    page = ok.get_data(as_text=True)
    assert "Role granted." in page and "night cover" in page and "(Apr 1, 23:59 UTC)" in page


@pytest.mark.req("RND-14", "UNB-07")
def test_site_activation_page(ctx: ServiceContext, signed_in: SignedIn) -> None:
    tm = manager(ctx, signed_in)
    kit_lists.generate_kit_list(
        ctx, CLI_ACTOR, "IFNG-PAIS", count=4, lot_code="LOT-1", expiry=date(2027, 6, 30)
    )
    page = tm.get("/trials/IFNG-PAIS/sites").get_data(as_text=True)
    assert 'name="code_break_evidence"' in page and "4 kit(s) without a sheet" in page  # UNB-07 checklist
    token = csrf_token(tm, "/trials/IFNG-PAIS/sites")
    missing = tm.post(
        "/trials/IFNG-PAIS/sites/P1/activate",
        data={"reason": "ok", "csrf_token": token},
        follow_redirects=True,
    )
    refused = missing.get_data(as_text=True)
    assert '<p class="field-error" id="approval_date-error">is required</p>' in refused
    assert '<a href="#ap-P1">Approval date: is required</a>' in refused and "approval_date:" not in refused
    form = {
        "approval_date": "2026-01-10",
        "delegation_log_date": "2026-02-01",
        "reason": "CPP ok",
        "csrf_token": token,
    }
    no_evidence = tm.post("/trials/IFNG-PAIS/sites/P1/activate", data=form, follow_redirects=True)
    assert '<p class="field-error" id="code_break_evidence-error">say where' in no_evidence.get_data(
        as_text=True
    )
    evidence = "sheets of kits 1-4 held by the on-call unblinded pharmacist, receipt 2026-02-01"
    no_sheets = tm.post(
        "/trials/IFNG-PAIS/sites/P1/activate",
        data={**form, "code_break_evidence": evidence},
        follow_redirects=True,
    )
    assert "generate the code-break sheets first" in no_sheets.get_data(as_text=True)
    assert code_break_sheets(ctx) == 4  # the unblinded statistician, signed (UNB-06)
    assert "every kit has its sheet" in tm.get("/trials/IFNG-PAIS/sites").get_data(as_text=True)
    done = tm.post(
        "/trials/IFNG-PAIS/sites/P1/activate",
        data={**form, "code_break_evidence": evidence},
        follow_redirects=True,
    )
    text = done.get_data(as_text=True)
    assert "Site P1 activated." in text and "Approved Jan 10, 2026" in text
    assert f"Code-break material: {evidence}" in text
    trial_page = tm.get("/trials/IFNG-PAIS").get_data(as_text=True)
    assert re.search(r"P1 – Paris site 1.*?<td>active</td>", trial_page, re.S)


def test_own_api_token_shown_once_and_usable(ctx: ServiceContext, signed_in: SignedIn) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = signed_in("mon", created.one_time_password)
    response = client.post(
        "/account/tokens", data={"name": "EDC", "csrf_token": csrf_token(client, "/account")}
    )
    token = re.search(r'data-testid="api-token">(alc_[^<]+)<', response.get_data(as_text=True))
    assert token is not None
    assert token.group(1) not in client.get("/account").get_data(as_text=True)  # never shown again
    api = client.application.test_client()
    assert api.get(
        "/api/v1/trials/IFNG-PAIS/audit/verify", headers={"Authorization": f"Bearer {token.group(1)}"}
    ).json["ok"]  # type: ignore[index]


def test_admin_creates_a_user_and_sees_the_password_once(
    ctx: ServiceContext, signed_in: SignedIn, clock
) -> None:  # type: ignore[no-untyped-def]
    from allocator import crypto
    from allocator.services import auth
    from tests.web.test_authorization_matrix import _secret

    load_ifn(ctx)
    created = make_user(ctx, "adm", "admin")
    client = signed_in("adm", created.one_time_password)
    enroll = client.get("/account/totp/enroll").get_data(as_text=True)
    shown = re.search(r'data-testid="totp-secret"[^>]*>([A-Z2-7 ]+)<', enroll).group(1)  # type: ignore[union-attr]
    # Issue 13: in groups of four, and the same key again on a reload (kept until confirmed).
    assert re.fullmatch(r"[A-Z2-7]{4}( [A-Z2-7]{4})+", shown), shown
    assert shown in client.get("/account/totp/enroll").get_data(as_text=True)
    secret = _secret(shown.replace(" ", ""))
    ticket = re.search(r'name="ticket" value="([^"]+)"', enroll).group(1)  # type: ignore[union-attr]
    token = re.search(r'name="csrf_token" value="([^"]+)"', enroll).group(1)  # type: ignore[union-attr]
    wrong = client.post(
        "/account/totp/enroll", data={"code": "000000", "ticket": ticket, "csrf_token": token}
    )
    assert (
        wrong.status_code == 422 and secret.hex() and ticket in wrong.get_data(as_text=True)
    )  # same secret again
    done = client.post(
        "/account/totp/enroll",
        data={"code": crypto.totp_now(secret, clock()), "ticket": ticket, "csrf_token": token},
    )
    assert done.status_code == 302 and done.headers["Location"] == "/"
    response = client.post(
        "/admin/users",
        data={
            "username": "new-nurse",
            "full_name": "Nina Nurse",
            "role": "nurse",
            "trial": "IFNG-PAIS",
            "site": "P1",
            "reason": "hired",
            "csrf_token": csrf_token(client, "/admin/users"),
        },
    )
    password = re.search(r'data-testid="one-time-password">([a-z2-9-]+)<', response.get_data(as_text=True))
    assert password is not None
    assert all(password.group(1) not in value for value in response.headers.getlist("Set-Cookie"))
    outcome = auth.login(ctx, "new-nurse", password.group(1), auth.Client("192.0.2.9", "t", "r"))
    assert outcome.must_change_password
    listing = client.get("/admin/users").get_data(as_text=True)
    assert "new-nurse" in listing and "first sign-in pending" in listing


def test_audit_page_filters_and_csv(ctx: ServiceContext, signed_in: SignedIn) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = signed_in("mon", created.one_time_password)
    page = client.get("/trials/IFNG-PAIS/audit?action=site.created").get_data(as_text=True)
    assert "Chain verified" in page and page.count(">Site created</span>") == 2
    assert "trial.created" not in page.split("<tbody>")[1]
    bad = client.get("/trials/IFNG-PAIS/audit?since=never")
    assert bad.status_code == 422 and "since" in bad.get_data(as_text=True)
    csv_response = client.get("/trials/IFNG-PAIS/audit.csv")
    assert csv_response.mimetype == "text/csv" and csv_response.headers["Cache-Control"] == "no-store"
    assert 'filename="audit-IFNG-PAIS.csv"' in csv_response.headers["Content-Disposition"]
    assert csv_response.is_streamed and "Content-Length" not in csv_response.headers  # issue 21
    assert csv_response.get_data(as_text=True).startswith("seq,at_utc,actor_username")
    csv_response.close()


def test_the_audit_csvs_spooled_file_is_let_go_once_sent_and_a_nul_filter_is_refused(
    ctx: ServiceContext, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the review of the spooled audit CSV: nothing checked that its file is closed once the
    response is (a GET read whole, a HEAD); and a NUL in a filter reached PostgreSQL (a 500) on
    the page and the CSV, where it is now refused naming the field, in French too."""
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = signed_in("mon", created.one_time_password)
    made: list[spooling.Spooled] = []
    real_spool = spooling.spool

    def spy(pieces: Any) -> spooling.Spooled:
        made.append(real_spool(pieces))
        return made[-1]

    monkeypatch.setattr(spooling, "spool", spy)
    sent = client.get("/trials/IFNG-PAIS/audit.csv")
    assert sent.get_data(as_text=True).startswith("seq,") and not made[-1].file.closed
    sent.close()
    assert made[-1].file.closed
    head = client.head("/trials/IFNG-PAIS/audit.csv")
    head.close()
    assert head.status_code == 200 and len(made) == 2 and made[-1].file.closed
    for path in ("/trials/IFNG-PAIS/audit", "/trials/IFNG-PAIS/audit.csv"):
        for key in ("object_id", "user", "object_type"):
            refused = client.get(f"{path}?{key}=a%00b")
            assert refused.status_code == 422, (path, key)
            assert "not allowed (U+0000)" in refused.get_data(as_text=True), (path, key)
    client.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(client, "/")})
    french = client.get("/trials/IFNG-PAIS/audit.csv?object_id=a%00b").get_data(as_text=True)
    assert "contient un caractère non autorisé (U+0000)" in french and "not allowed" not in french


@pytest.mark.req("AUD-05")
def test_the_audit_trail_reads_in_plain_words_newest_first(ctx: ServiceContext, signed_in: SignedIn) -> None:
    """Issue 13 point 9: newest first; each action a label with its code kept smaller; the person
    filter takes a printed name; the values as "key: value" lines, no JSON, no escaped accents."""
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = signed_in("mon", created.one_time_password)
    page = client.get("/trials/IFNG-PAIS/audit").get_data(as_text=True)
    body = page.split("<tbody>")[1]
    numbers = [int(n) for n in re.findall(r"<tr>\s*<td>(\d+)</td>", body)]
    assert len(numbers) >= 5 and numbers == sorted(numbers, reverse=True)
    assert '<span>Site created</span><br><span class="muted small code-name">site.created' in body
    assert "Pr Dépret" in body and "\\u00" not in body and '{"' not in body and "&#34;" not in body
    by_name = client.get("/trials/IFNG-PAIS/audit?user=test+runner").get_data(as_text=True)
    assert by_name.count("<tr>") - 1 == len(numbers)  # every entry of the set-up is by the command line
    nobody = client.get("/trials/IFNG-PAIS/audit?user=Nobody").get_data(as_text=True)
    assert "No entry matches." in nobody
    assert ">Centre créé</span>" in _in_french(client)


def _in_french(client: FlaskClient) -> str:
    token = csrf_token(client, "/")
    client.post("/language", data={"language": "fr", "next": "/", "csrf_token": token})
    return client.get("/trials/IFNG-PAIS/audit").get_data(as_text=True)


def test_api_audit_pages_and_verify(ctx: ServiceContext, client: FlaskClient) -> None:
    from allocator.services import auth

    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    auth.change_password(
        ctx,
        created.user_id,
        created.one_time_password,
        "a long new passphrase 9",
        "a long new passphrase 9",
        auth.Client("192.0.2.1", "t", "r"),
    )
    headers = {"Authorization": f"Bearer {users.create_token(ctx, CLI_ACTOR, 'mon', 'edc').token}"}
    seqs: list[int] = []
    after = ""
    while True:
        body = client.get(f"/api/v1/trials/IFNG-PAIS/audit?limit=2{after}", headers=headers).json
        assert body is not None
        seqs += [e["seq"] for e in body["entries"]]
        assert all("sealed" not in e for e in body["entries"])
        if body["next_after"] is None:
            break
        after = f"&after={body['next_after']}"
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 5
    verify = client.get("/api/v1/trials/IFNG-PAIS/audit/verify", headers=headers).json
    assert verify is not None and verify["ok"] is True and verify["first_bad"] is None
    assert verify["entries"] >= len(seqs)
    for query, field in (
        ("limit=5000", "limit"),
        ("after=abc", "after"),
        ("action=nope", "action"),
        ("action=subject.randomized&action=kit.received", "action"),  # was read at its first value
    ):
        problem = client.get(f"/api/v1/trials/IFNG-PAIS/audit?{query}", headers=headers)
        assert problem.status_code == 422 and problem.mimetype == "application/problem+json"
        assert problem.json["errors"][0]["field"] == field  # type: ignore[index]


@pytest.mark.req("AUD-09")
@pytest.mark.req("ACC-12")
def test_a_monitor_signs_off_an_audit_review(ctx: ServiceContext, signed_in: SignedIn) -> None:
    from tests.support import GOOD_PASSWORD

    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor", full_name="Monique Onitor")
    client = signed_in("mon", created.one_time_password)
    token = csrf_token(client, "/trials/IFNG-PAIS/audit")
    wrong = client.post(
        "/trials/IFNG-PAIS/audit/review",
        data={"up_to_seq": "3", "password": "nope nope nope", "csrf_token": token},
        follow_redirects=True,
    )
    assert "Your password (electronic signature): is wrong" in wrong.get_data(as_text=True)
    for typed in ("²", "٣", "9" * 20):  # D5: "²" passes str.isdigit() and int() refused it
        odd = client.post(
            "/trials/IFNG-PAIS/audit/review",
            data={"up_to_seq": typed, "password": GOOD_PASSWORD, "csrf_token": token},
            follow_redirects=True,
        )
        assert odd.status_code == 200 and "must be an entry number" in odd.get_data(as_text=True), typed
    for query, words in (
        ("after=%C2%B2", "must be a sequence number"),
        ("after=%D9%A3", "must be a sequence number"),
        ("after=99999999999999999999", "must be a sequence number"),
        ("after=1&after=2", "give it once"),
        ("action=subject.randomized&action=kit.received", "give it once"),
    ):
        refused = client.get(f"/trials/IFNG-PAIS/audit?{query}")
        assert refused.status_code == 422 and words in refused.get_data(as_text=True), query
    ok = client.post(
        "/trials/IFNG-PAIS/audit/review",
        data={"up_to_seq": "3", "comment": "no findings", "password": GOOD_PASSWORD, "csrf_token": token},
        follow_redirects=True,
    )
    page = ok.get_data(as_text=True)
    assert "Review signed up to entry 3." in page
    assert re.search(
        r"Entries 1–3: Signed electronically by Monique Onitor \(mon\) on 2026-03-02 09:30:00 UTC, "
        r"meaning: audit trail review \[signature #\d+\] — no findings",
        page,
    )
    sessions_admin = make_user(ctx, "adm2", "admin")
    _ = sessions_admin  # the security event (refused signature) shows on the admin's sessions page:
    from allocator.services import audit_trail

    assert any(e.action == "signature.failed" for e in audit_trail.security_events(ctx))


def test_control_characters_in_usernames_are_encoded(ctx: ServiceContext, client: FlaskClient) -> None:
    load_ifn(ctx)
    client.post(
        "/login",
        data={
            "username": "bob\n[INFO] admin signed in",
            "password": "x" * 12,
            "csrf_token": csrf_token(client),
        },
    )
    from allocator.services import audit_trail

    (event,) = [e for e in audit_trail.security_events(ctx) if e.action == "auth.login_failed"]
    assert "\n" not in event.object_id and event.object_id.startswith("bob\\x0a[info]")
