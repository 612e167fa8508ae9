"""The randomization-list pages: the unblinded statistician's (generate, review, sign, check, verify,
extend, export, design quality) and the blinded stratum overview every role of the trial sees."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import select, update

from allocator import crypto
from allocator.app import StartupError, create_app
from allocator.audit import Actor
from allocator.db import Database
from allocator.models import RandomizationList, Stratum
from allocator.services import auth, trials
from allocator.services.context import ServiceContext
from allocator.services.lists import approval, generation
from allocator.services.signatures import SignatureRequest
from allocator.settings import Environment, Settings
from tests.support import CLI_ACTOR, GOOD_PASSWORD, IFN_TRIAL, Clock, enroll_totp, events, load_ifn, make_user
from tests.web.conftest import csrf_token, https_client

SignedIn = Callable[[str, str], FlaskClient]
TRIAL = "IFNG-PAIS"
LABEL = "IFNG-PAIS/TEST/1"
NAME = "Stéphane Tatisticien"
KEYS = (
    "site=P1;admission_cause=septic",
    "site=P1;admission_cause=non_septic",
    "site=P2;admission_cause=septic",
    "site=P2;admission_cause=non_septic",
)
LISTS = f"/trials/{TRIAL}/lists"
HERE = auth.Client("192.0.2.1", "pytest", "req")


class Statistician:
    """The unblinded statistician signed in with both factors, able to sign forms."""

    def __init__(
        self,
        app: Flask,
        ctx: ServiceContext,
        clock: Clock,
        *,
        load: bool = True,
        username: str = "stat",
        name: str = NAME,
    ) -> None:
        if load:
            load_ifn(ctx)
        created = make_user(ctx, username, "unblinded_statistician", full_name=name)
        auth.change_password(
            ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE
        )
        self.secret = enroll_totp(ctx, created.user_id, clock)
        self.clock = clock
        self.actor = Actor(
            user_id=created.user_id,
            username=username,
            name=name,
            role="unblinded_statistician",
            request_id="t",
        )
        self.client = https_client(app)
        response = self.client.post(
            "/login",
            data={"username": username, "password": GOOD_PASSWORD, "csrf_token": csrf_token(self.client)},
        )
        assert response.status_code == 302
        done = self.client.post(
            "/account/totp",
            data={"code": self.code(), "csrf_token": csrf_token(self.client, "/account/totp")},
        )
        assert done.status_code == 302 and done.headers["Location"] == "/", done.get_data(as_text=True)[:300]

    def code(self) -> str:
        self.clock.advance(seconds=31)  # a fresh TOTP step: a code is never accepted twice
        return crypto.totp_now(self.secret, self.clock())

    def signature(self, password: str = GOOD_PASSWORD) -> dict[str, str]:
        return {"password": password, "otp": self.code()}

    def request(self) -> SignatureRequest:
        return SignatureRequest(password=GOOD_PASSWORD, totp=self.code())

    def post(self, path: str, **data: str) -> str:
        """POST a form of the lists page; follow the redirect back and return the page."""
        response = self.client.post(
            path, data={**data, "csrf_token": csrf_token(self.client, LISTS)}, follow_redirects=True
        )
        assert response.status_code == 200
        return response.get_data(as_text=True)


@pytest.fixture
def stat(app: Flask, ctx: ServiceContext, clock: Clock) -> Statistician:
    return Statistician(app, ctx, clock)


def list_id(ctx: ServiceContext) -> int:
    with ctx.db.reading() as s:
        return s.execute(select(RandomizationList.id).where(RandomizationList.label == LABEL)).scalar_one()


def active_list(ctx: ServiceContext, stat: Statistician) -> generation.Generated:
    generated = generation.generate_lists(ctx, stat.actor, TRIAL, "test")
    approval.approve_list(ctx, stat.actor, TRIAL, generated.list_id, stat.request())
    approval.activate_list(ctx, stat.actor, TRIAL, generated.list_id, stat.request())
    return generated


def capacities(ctx: ServiceContext, identifier: int) -> dict[str, int]:
    with ctx.db.reading() as s:
        return {
            st.key: st.capacity
            for st in s.execute(select(Stratum).where(Stratum.list_id == identifier)).scalars()
        }


@pytest.mark.req("RND-02", "ACC-12", "BLD-08")
def test_the_statistician_generates_reviews_approves_and_activates_a_list(
    ctx: ServiceContext, stat: Statistician
) -> None:
    page = stat.client.get(LISTS).get_data(as_text=True)
    assert "No list yet." in page and "holds TEST lists only" in page

    page = stat.post(LISTS, mode="test")
    assert "List generated (DRAFT)" in page and LABEL in page and "draft" in page
    assert "2, 4, 6" in page  # the statistician sees the design
    identifier = list_id(ctx)
    page = stat.post(LISTS, mode="test")
    assert "already has a TEST list" in page
    page = stat.post(LISTS, mode="production")
    assert (
        "RND-13" not in page and "it holds TEST lists only, not PRODUCTION" in page
    )  # the requirement id stays in the logs

    reads = len(events(ctx, "arm.read", chain=TRIAL))
    review = stat.client.get(f"{LISTS}/{identifier}/review")
    assert review.status_code == 200
    html = review.get_data(as_text=True)
    assert "Arm A" in html and "Arm B" in html and "this read was audited" in html
    # each stratum named by its factors' and levels' labels, not by its key
    words = {"septic": "Septic", "non_septic": "Non-septic", "P1": "Paris site 1 (Pr Dépret)"}
    words["P2"] = "Paris site 2 (Dr de Roquetaillade)"
    for key, capacity in capacities(ctx, identifier).items():
        site, cause = (part.split("=")[1] for part in key.split(";"))
        label = f"Site: {words[site]} · Cause of ICU admission: {words[cause]}"
        assert re.search(
            rf"<td>{re.escape(label)}</td><td>{capacity // 2}</td><td>{capacity // 2}</td>", html
        )
    audited = events(ctx, "arm.read", chain=TRIAL)
    assert len(audited) == reads + 1
    assert audited[-1].actor_username == "stat" and audited[-1].object_id == LABEL
    assert json.loads(audited[-1].new_values or "{}")["purpose"] == "QC review of the list"
    assert stat.client.get(f"{LISTS}/999999/review").status_code == 404

    page = stat.post(f"{LISTS}/{identifier}/activate", **stat.signature())
    assert "no signed QC approval" in page
    page = stat.post(f"{LISTS}/{identifier}/approve", **stat.signature("a wrong password"))
    assert "the password is wrong" in page and "List approved" not in page
    page = stat.post(f"{LISTS}/{identifier}/approve", password=GOOD_PASSWORD)  # no authenticator code
    assert "the authenticator code is wrong" in page
    assert len(events(ctx, "signature.failed", chain=TRIAL)) == 2

    page = stat.post(f"{LISTS}/{identifier}/approve", **stat.signature())
    assert "List approved (signed)." in page
    assert re.search(
        rf"Signed electronically by {NAME} \(stat\) on \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC, "
        r"meaning: randomization list approval",
        page,
    )
    page = stat.post(f"{LISTS}/{identifier}/activate", **stat.signature())
    assert "List activated (signed)" in page
    assert "meaning: randomization list activation" in page and "active" in page
    with ctx.db.reading() as s:
        assert s.get(RandomizationList, identifier).status == "active"  # type: ignore[union-attr]

    assert "Integrity check passed." in stat.post(f"{LISTS}/check")
    assert "Every list is identical to its regeneration from the seed." in stat.post(f"{LISTS}/verify")
    assert "intact" in stat.client.get(LISTS).get_data(as_text=True)


@pytest.mark.req("RND-10", "ACC-12")
def test_the_statistician_extends_and_exports_an_active_list(
    app: Flask, ctx: ServiceContext, clock: Clock, stat: Statistician
) -> None:
    generated = active_list(ctx, stat)
    before = capacities(ctx, generated.list_id)
    page = stat.post(
        f"{LISTS}/{generated.list_id}/extend", additional="ten", reason="more", **stat.signature()
    )
    assert "Slots to add per stratum (whole blocks): must be a whole number" in page
    page = stat.post(f"{LISTS}/{generated.list_id}/extend", additional="6", reason="", **stat.signature())
    assert "Reason: is required" in page
    page = stat.post(
        f"{LISTS}/{generated.list_id}/extend",
        additional="6",
        reason="faster recruitment at P2",
        stratum=KEYS[2],
        **stat.signature(),
    )
    assert "Extension proposed (signed)" in page and "awaiting a second signature" in page
    assert "You proposed it: another unblinded statistician must approve it" in page
    assert "Approve and extend" not in page and capacities(ctx, generated.list_id) == before
    # The second statistician sees the proposal, and approves it with their own signature (RND-10).
    second = Statistician(app, ctx, clock, load=False, username="stat2", name="Dr Second")
    page = second.client.get(LISTS).get_data(as_text=True)
    assert "Approve and extend" in page and "faster recruitment at P2" in page
    proposal = re.search(r'name="proposal" value="(\d+)"', page)
    assert proposal is not None
    page = second.post(
        f"{LISTS}/{generated.list_id}/extension/approve", proposal=proposal.group(1), **second.signature()
    )
    assert "Extension approved (signed)" in page and "v2 · " in page and "faster recruitment at P2" in page
    assert "applied" in page and "by Dr Second (v2)" in page
    after = capacities(ctx, generated.list_id)
    assert {k for k in KEYS if after[k] != before[k]} == {KEYS[2]}

    short = stat.client.post(
        f"{LISTS}/{generated.list_id}/export",
        data={
            "passphrase": "short",
            "reason": "CRO",
            **stat.signature(),
            "csrf_token": csrf_token(stat.client, LISTS),
        },
    )
    assert short.status_code == 303
    assert "Passphrase (at least 16 characters): at least 16 characters" in stat.client.get(LISTS).get_data(
        as_text=True
    )
    passphrase = "the CRO's own passphrase, 2026"
    download = stat.client.post(
        f"{LISTS}/{generated.list_id}/export",
        data={
            "passphrase": passphrase,
            "reason": "independent verification",
            **stat.signature(),
            "csrf_token": csrf_token(stat.client, LISTS),
        },
    )
    assert download.status_code == 200 and download.mimetype == "application/octet-stream"
    assert download.headers["Content-Disposition"] == 'attachment; filename="IFNG-PAIS-TEST-1.json.enc"'
    document = json.loads(crypto.decrypt_download(download.data, passphrase))
    assert document["label"] == LABEL and len(document["slots"]) == sum(after.values())
    assert [v["version"] for v in document["versions"]] == [1, 2]
    assert [e.reason for e in events(ctx, "list.exported", chain=TRIAL)] == ["independent verification"]


@pytest.mark.req("RND-01", "REP-01")
def test_the_quality_page_embeds_two_charts_and_offers_a_pdf(ctx: ServiceContext, stat: Statistician) -> None:
    response = stat.client.get(f"/trials/{TRIAL}/quality")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "RANDOMIZATION DESIGN QUALITY REPORT" in page
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all("<svg" in base64.b64decode(i).decode("utf-8") for i in images)
    # The charts need no script: the only script is the shared, same-origin table helper.
    assert re.findall(r"<script[^>]*>", page.lower()) == ['<script src="/static/tables.js" defer>']
    pdf = stat.client.get(f"/trials/{TRIAL}/quality.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    assert 'filename="quality-IFNG-PAIS.pdf"' in pdf.headers["Content-Disposition"]
    text = "".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "NE PAS UTILISER" in text


@pytest.mark.req("RND-12", "BLD-06")
def test_a_monitor_sees_counts_per_stratum_and_nothing_of_the_list(
    ctx: ServiceContext, stat: Statistician, signed_in: SignedIn
) -> None:
    created = make_user(ctx, "mon", "monitor")
    monitor = signed_in("mon", created.one_time_password)
    assert "No randomization list is active yet." in monitor.get(f"/trials/{TRIAL}/strata").get_data(
        as_text=True
    )
    generated = active_list(ctx, stat)
    with ctx.db.reading() as s:
        strata = {
            st.key: st
            for st in s.execute(select(Stratum).where(Stratum.list_id == generated.list_id)).scalars()
        }
        row = s.get(RandomizationList, generated.list_id)
    assert row is not None
    low = strata[KEYS[2]]
    with ctx.db.unit_of_work() as session:  # some subjects randomized; one stratum running low
        session.execute(update(Stratum).where(Stratum.id == low.id).values(used=low.capacity - 20))
        session.execute(update(Stratum).where(Stratum.id == strata[KEYS[0]].id).values(used=7))

    token = csrf_token(monitor, "/account")
    for path in (
        LISTS,
        f"/trials/{TRIAL}/quality",
        f"/trials/{TRIAL}/quality.pdf",
        f"{LISTS}/{generated.list_id}/review",
    ):
        assert monitor.get(path).status_code == 403, path
    for path in (LISTS, f"{LISTS}/{generated.list_id}/export", f"{LISTS}/{generated.list_id}/approve"):
        assert monitor.post(path, data={"csrf_token": token, "mode": "test"}).status_code == 403, path

    response = monitor.get(f"/trials/{TRIAL}/strata")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    table = page[page.index("<tbody>") : page.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert len(rows) == 4
    assert "Site: Paris site 1 (Pr Dépret)" in rows[0] and "<td>7</td>" in rows[0]
    assert "Cause of ICU admission: Septic" in rows[0] and "admission_cause" not in rows[0]
    assert f"<td>{low.capacity - 20}</td>" in rows[2] and "running low" in rows[2]
    assert "sufficient" in rows[1] and "sufficient" in rows[3]
    cells = re.findall(r"<td>\s*(\d+)\s*</td>", table)
    assert sorted(int(c) for c in cells) == sorted([7, 0, low.capacity - 20, 0])  # randomized counts only
    assert "block" not in table.lower() and "arm" not in table.lower()
    for capacity in {st.capacity for st in strata.values()}:
        assert not re.search(rf"\b{capacity}\b", page), capacity
    for secret in ("Arm A", "Arm B", "2, 4, 6", "[2, 4, 6]", "block size", "block_size", row.seed_id):
        assert secret not in page, secret
    assert not re.search(r"R-\d{8}", page)
    assert generated.storage_sha256 not in page and generated.content_sha256 not in page


@pytest.mark.req("RND-12", "BLD-07")
def test_the_monitors_audit_trail_does_not_show_the_list_length(
    ctx: ServiceContext, stat: Statistician, signed_in: SignedIn
) -> None:
    created = make_user(ctx, "mon", "monitor")
    monitor = signed_in("mon", created.one_time_password)
    generated = active_list(ctx, stat)
    assert "Every list is identical" in stat.post(f"{LISTS}/verify")
    page = monitor.get(f"/trials/{TRIAL}/audit").get_data(as_text=True)
    assert "list.verified" in page
    assert not re.search(rf"\b{generated.slots}\b", page)


@pytest.mark.req("RND-02")
def test_the_review_page_of_a_minimization_list(app: Flask, ctx: ServiceContext, clock: Clock) -> None:
    source = IFN_TRIAL.read_text(encoding="utf-8")
    start = source.index("[randomization]")
    end = source.index("alert_remaining = 20\n") + len("alert_remaining = 20\n")
    source = (
        source[:start]
        + '[randomization]\nmethod = "minimization"\nfactors = ["site", "admission_cause"]\n'
        + 'imbalance = "range"\np_preferred = 0.8\nmax_subjects = 200\nalert_remaining = 10\n'
        + source[end:]
    ).replace('field = "randomization.block_sizes"', 'field = "randomization.method"')
    trials.load_trial(ctx, CLI_ACTOR, source, source_name="ifn-minimization.toml")
    stat = Statistician(app, ctx, clock, load=False)
    generated = generation.generate_lists(ctx, stat.actor, TRIAL, "test")
    assert generated.method == "minimization"
    assert stat.client.get(f"/trials/{TRIAL}/quality").status_code == 409  # blocks only, said plainly
    response = stat.client.get(f"{LISTS}/{generated.list_id}/review")
    assert response.status_code == 200


@pytest.mark.req("RND-13")
def test_a_production_instance_refuses_to_start_over_a_test_list(
    ctx: ServiceContext,
    stat: Statistician,
    settings: Settings,
    db: Database,
    ring: crypto.KeyRing,
    clock: Clock,
) -> None:
    generation.generate_lists(ctx, stat.actor, TRIAL, "test")
    with pytest.raises(StartupError, match=re.escape(LABEL)):
        create_app(replace(settings, env=Environment.PRODUCTION), db=db, ring=ring, clock=clock)
    assert create_app(settings, db=db, ring=ring, clock=clock) is not None


@pytest.mark.req("RND-10")
def test_a_proposed_extension_is_withdrawn_by_its_author_from_the_page(
    ctx: ServiceContext, stat: Statistician
) -> None:
    generated = active_list(ctx, stat)
    page = stat.post(
        f"{LISTS}/{generated.list_id}/extend", additional="6", reason="steering committee", **stat.signature()
    )
    proposal = re.search(r'name="proposal" value="(\d+)"', page)
    assert proposal is not None and "Withdraw" in page
    page = stat.post(f"{LISTS}/{generated.list_id}/extension/decline", proposal=proposal.group(1), reason="")
    assert "Reason: is required" in page and "awaiting a second signature" in page
    for typed in ("x", "²", "٣", "9" * 30):  # D5: "²" passes str.isdigit() and int() refused it
        page = stat.post(f"{LISTS}/{generated.list_id}/extension/decline", proposal=typed, reason="typo")
        assert "Extension: must be a whole number" in page, typed
        page = stat.post(
            f"{LISTS}/{generated.list_id}/extend",
            additional=typed,
            reason="steering committee",
            **stat.signature(),
        )
        assert "must be a whole number" in page and "awaiting a second signature" in page, typed
    page = stat.post(
        f"{LISTS}/{generated.list_id}/extension/decline", proposal=proposal.group(1), reason="wrong stratum"
    )
    assert "Extension proposal declined: the list is unchanged." in page
    assert "awaiting a second signature" not in page and "declined" in page and "wrong stratum" in page
    assert "Propose the extension (signed)" in page
    assert [e.reason for e in events(ctx, "list.extension_declined")] == ["wrong stratum"]
