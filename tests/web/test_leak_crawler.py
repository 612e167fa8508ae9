"""H1, the leak-proof suite (issue 7, part 5): no blinded role can learn an arm from anything the
service gives it, and an active and a placebo subject look the same.

A world with subjects of both arms in every state (tests/web/leak_world.py) is built once per
database backend. The crawler (tests/web/crawler.py) then signs in as every role — blinded and
unblinded — and walks every route of `app.url_map` with real ids (and an error path per
parameter), follows links and GET forms, calls every API endpoint with the role's bearer token and
submits every POST route with refused input. Everything received goes through the checks of
tests/leakcheck.py: bodies (HTML text and markup, JSON, CSV, PDF text, metadata, attachments and
barcodes), headers and file names, redirects, flash messages; so do the e-mails of the outbox and
every log line written meanwhile. Responses about the two twins of a pair (arm A, arm B, same
history) are compared after masking their identifiers (BLD-02).

The last tests inject leaks into a test-only route — in a template, a header, PDF metadata, a QR
code, a log line, an e-mail... — and check that the same crawl catches each one: the suite is
proven able to fail.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pypdf
import pytest
from flask import Blueprint, Flask, Response, abort, flash, jsonify, redirect, render_template_string
from flask import session as browser_session
from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas
from sqlalchemy import select
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator import crypto
from allocator.app import create_app
from allocator.db import Database
from allocator.logs import JsonFormatter, log_event
from allocator.models import AuditEvent, Notification, Trial
from allocator.permissions import ROLE_PERMISSIONS, UNBLINDED_ROLES, Permission, Role, requires
from allocator.services.context import ServiceContext
from allocator.services.reports.catalogue import COHORT_REPORTS
from allocator.settings import Environment, Settings
from allocator.web.qr import svg_data_uri
from tests.conftest import FreshDatabase, Kept
from tests.leakcheck import AllowedPhrase, Finding, LeakChecker, Vocabulary
from tests.masking import (
    VOLATILE_HEADERS,
    Subject,
    assert_same_response,
    decoded_qr,
    mask,
    pdf_fingerprint,
    pdf_text,
)
from tests.support import IFN_TRIAL, ROOT, Clock
from tests.web.crawler import Crawler, Fetched, Resolver, UnknownParameter
from tests.web.leak_world import (
    ARMS,
    COHORT,
    COHORT_MONITOR,
    COHORT_PRINCIPAL,
    TRIAL,
    World,
    build_world,
    capture_mail,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "leak-crawl"
BLINDED = sorted(r.value for r in Role if r not in UNBLINDED_ROLES)
UNBLINDED = sorted(r.value for r in UNBLINDED_ROLES)
SUBJECT_VIEWERS = sorted(
    r.value
    for r in Role
    if Permission.SUBJECT_VIEW in ROLE_PERMISSIONS[r] and r is not Role.PHARMACOVIGILANCE
)


@dataclass(frozen=True)
class Allowed:
    """Where an arm may legitimately appear for an unblinded role, and why."""

    roles: frozenset[str]
    reason: str
    reads_arm: bool  # True: each such response must be matched by an `arm.read` audit entry (BLD-08)


# Routes where an unblinded role may see an arm. Anything else an unblinded role receives is held to
# the blinded standard (pages shared with blinded roles must not show arms to anybody).
UNBLINDED_ALLOWED: dict[str, Allowed] = {
    "subjects.preparation": Allowed(
        frozenset({"unblinded_pharmacist"}),
        "the preparation instruction tells the unblinded pharmacist which product to prepare for the "
        "subject and day (DISPENSATION_PREPARE); an audited read",
        reads_arm=True,
    ),
    "audit.trail_unblinded": Allowed(
        frozenset({"unblinded_statistician"}),
        "the restricted audit view opens sealed values, arms included, for the unblinded statistician "
        "(AUD-05, BLD-07); every opening is audited",
        reads_arm=True,
    ),
    "lists.review": Allowed(
        frozenset({"unblinded_statistician"}),
        "list review shows the slots per stratum and arm before approval (RND-02); an audited read",
        reads_arm=True,
    ),
    "unblinding.pharmacovigilance_result": Allowed(
        frozenset({"pharmacovigilance"}),
        "the result of a pharmacovigilance unblinding shows the arm once, to the person who unblinded "
        "(UNB-08, issue 13 point 3); later visits say when it was shown, without the arm; an audited read",
        reads_arm=True,
    ),
}


@dataclass(frozen=True)
class KnownLeak:
    """A real leak found by the crawler, kept visible as a strict xfail until the application is
    fixed (the application code is not this suite's to change)."""

    role: str
    endpoint: str
    what: str  # a substring of Finding.what
    reason: str


KNOWN_LEAKS: list[KnownLeak] = []


@dataclass(frozen=True)
class Documented:
    """A finding that is not a leak, for every role: where exactly, and why."""

    endpoint: str
    where: str  # a substring of Finding.where
    what: str  # a substring of Finding.what
    reason: str


DOCUMENTED: list[Documented] = [
    Documented(
        "api.openapi",
        ".schema.properties",
        "names an arm",
        "the OpenAPI document (served to every signed-in user, contract.md) describes the fields of the "
        "emergency-unblinding answer, 'arm' and 'arm_label': a schema, never a subject's value",
    ),
]
# Texts with a product word that name no arm, beyond those of the trial definition (leakcheck.Vocabulary).
EXTRA_ALLOWED = (
    AllowedPhrase(
        str(IFN_TRIAL.relative_to(ROOT)),
        "the file the trial definition was loaded from, recorded in the audit trail: it names the trial",
    ),
)
# Twin documents whose byte length may differ, and why (everything else about them is still compared:
# status, headers, PDF structure, metadata, masked text and QR codes).
LENGTH_FOLLOWS_KIT_NUMBER: dict[str, str] = {
    "supply.labels": "kit label sheets are printed per kit, compressed, with QR drawings whose length "
    "depends on the payload: their size follows the kit numbers, which are random and carry no arm "
    "(BLD-03), not the arm. (Unlike the confirmation and the dispensation sheet, which are uncompressed "
    "with fixed-length QR drawings so that their sizes are equal.)",
}
# GET routes no role can open in a trial in progress (the coverage test accepts their refusal).
NOT_YET: dict[str, str] = {
    "unblinding.emergency_result": "the result of an emergency unblinding answers only the investigator "
    "who unblinded, once with the arm; the crawled investigators' emergency forms are refused (no "
    "confirmed subject), so no crawled role owns one: covered by tests/web/test_unblinding_pages.py and "
    "the Chromium unblinding journey",
    "unblinding.drill_result": "the result of an unblinding drill (UNB-11) answers only the investigator "
    "who ran the drill, once with the drill value; no crawled role runs one: covered by "
    "tests/web/test_drill_pages.py",
    "unblinding.listing": "the unblinded listing answers 409 until the final unblinding (UNB-10, BLD-09); "
    "the world is a trial in progress, whose blind the suite exists to protect",
}


# --- fixtures -------------------------------------------------------------------------------------


class Captured(logging.Handler):
    """Every log record, formatted as it would be written (JSON lines for the allocator)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []  # (logger, line)
        self.json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("allocator"):
            line = self.json.format(record)
        else:
            line = f"{record.name} {record.levelname} {record.getMessage()}"
        self.lines.append((record.name, line))


@contextmanager
def captured_logs() -> Iterator[Captured]:
    """Capture the allocator's loggers (at DEBUG) and everything else reaching the root logger
    (werkzeug's included) while the block runs."""
    captured = Captured()
    loggers = [logging.getLogger("allocator"), logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(captured)
    loggers[0].setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(captured)
            logger.setLevel(level)


@dataclass
class CrawlResult:
    world: World
    crawler: Crawler
    checker: LeakChecker
    mail: list[tuple[str, EmailMessage]]  # (when, message)
    logs: list[tuple[str, str]]  # (logger, line)
    seconds: dict[str, float]

    def fetched(self, role: str) -> list[Fetched]:
        return [f for f in self.crawler.fetched if f.principal == role]

    def mail_findings(self) -> list[Finding]:
        return [
            f
            for when, message in self.mail
            for f in self.checker.email(f"e-mail {when} to {message['To']}: {message['Subject']}", message)
        ]

    def log_findings(self) -> list[Finding]:
        return [f for name, line in self.logs for f in self.checker.log_line(f"log {name}", line)]


def make_app(
    fresh: FreshDatabase, key_dir: Path, ring: crypto.KeyRing, clock: Clock
) -> tuple[Flask, ServiceContext]:
    settings = Settings(env=Environment.TEST, database_url=fresh.url, key_dir=key_dir)
    db = Database.connect(fresh.url)
    ctx = ServiceContext.build(settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
    app = create_app(settings, db=db, ring=ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
    return app, ctx


def run_crawl(
    app: Flask,
    ctx: ServiceContext,
    build: Callable[[], World],
    *,
    roles: list[str] | None = None,
    only: frozenset[str] | None = None,
) -> CrawlResult:
    """Build the world and crawl it as `roles` (all: None), logs captured throughout; then the
    e-mails of the outbox."""
    seconds: dict[str, float] = {}
    with captured_logs() as captured:
        start = time.perf_counter()
        world = build()
        seconds["world"] = time.perf_counter() - start
        checker = LeakChecker(Vocabulary.of(world.definition, EXTRA_ALLOWED))
        crawler = Crawler(app, world, checker, only=only)
        for role, principal in sorted(world.principals.items()):
            if roles is None or role in roles:
                start = time.perf_counter()
                crawler.crawl(principal)
                seconds[role] = time.perf_counter() - start
        mail = [("after the world", m) for m in world.mail] + [
            ("after the crawl", m) for m in capture_mail(ctx)
        ]
    return CrawlResult(world, crawler, checker, mail, list(captured.lines), seconds)


@pytest.fixture
def crawl(
    kept: Kept, tmp_path_factory: pytest.TempPathFactory, key_dir: Path, ring: crypto.KeyRing, backend: str
) -> CrawlResult:
    """The whole world in a database of its own, crawled by every role, once per backend and test
    process (tests.conftest.Kept); the summary is written before any test looks."""

    def build() -> tuple[CrawlResult, Callable[[], None]]:
        fresh = FreshDatabase(backend, tmp_path_factory.mktemp(f"leak-{backend}")).migrate()
        clock = Clock()
        app, ctx = make_app(fresh, key_dir, ring, clock)
        result = run_crawl(app, ctx, lambda: build_world(ctx, clock))
        write_summary(result, backend)

        def cleanup() -> None:
            ctx.db.dispose()
            fresh.drop()

        return result, cleanup

    return kept.get(("leak-crawl", backend), build)


# --- checking the crawl ---------------------------------------------------------------------------


def known(role: str, fetched: Fetched, finding: Finding) -> KnownLeak | None:
    return next(
        (
            k
            for k in KNOWN_LEAKS
            if k.role == role and k.endpoint == (fetched.endpoint or "") and k.what in finding.what
        ),
        None,
    )


def allowed(role: str, fetched: Fetched) -> Allowed | None:
    entry = UNBLINDED_ALLOWED.get(fetched.endpoint or "")
    return entry if entry is not None and role in entry.roles and fetched.status < 300 else None


def documented(fetched: Fetched, finding: Finding) -> Documented | None:
    return next(
        (
            d
            for d in DOCUMENTED
            if d.endpoint == fetched.endpoint and d.where in finding.where and d.what in finding.what
        ),
        None,
    )


def violations(result: CrawlResult, role: str) -> list[str]:
    out = []
    for fetched in result.fetched(role):
        if allowed(role, fetched):
            continue
        out += [
            str(f)
            for f in fetched.findings
            if known(role, fetched, f) is None and documented(fetched, f) is None
        ]
    return out


def report(lines: list[str], limit: int = 40) -> str:
    shown = "\n".join(lines[:limit])
    return f"{len(lines)} finding(s):\n{shown}" + ("\n…" if len(lines) > limit else "")


@pytest.mark.req(
    "BLD-01", "BLD-06", "BLD-07", "BLD-12", "BLD-14", "LBL-08", "LBL-10", "UNB-05", "UNB-08", "RND-12"
)
@pytest.mark.parametrize("role", BLINDED)
def test_a_blinded_role_receives_no_arm(crawl: CrawlResult, role: str) -> None:
    """Every page, JSON, CSV, PDF (text, metadata, barcodes), header, redirect and flash message a
    blinded role receives, on every route, with real ids of both arms and on the error paths."""
    assert crawl.fetched(role), f"{role} was not crawled"
    problems = violations(crawl, role)
    assert problems == [], report(problems)


@pytest.mark.req("BLD-01", "UNB-08")
@pytest.mark.parametrize("role", UNBLINDED)
def test_an_unblinded_role_sees_arms_only_where_documented(crawl: CrawlResult, role: str) -> None:
    """Unblinded roles share most pages with blinded ones: those must not show arms to anybody.
    Arms may appear only on the routes of UNBLINDED_ALLOWED, each with its reason."""
    assert crawl.fetched(role), f"{role} was not crawled"
    problems = violations(crawl, role)
    assert problems == [], report(problems)


@pytest.mark.req("BLD-08")
def test_every_arm_shown_was_an_audited_read(crawl: CrawlResult) -> None:
    """Each response that showed an arm (on an allow-listed route) is matched by an `arm.read`
    audit entry of the same request and user — and every allow-list entry is still needed."""
    with crawl.world.ctx.db.reading() as session:
        reads = {
            (row.request_id, row.actor_username)
            for row in session.execute(select(AuditEvent).where(AuditEvent.action == "arm.read")).scalars()
        }
    shown: dict[str, int] = dict.fromkeys(UNBLINDED_ALLOWED, 0)
    unaudited = []
    for fetched in crawl.crawler.fetched:
        entry = allowed(fetched.principal, fetched)
        if entry is None or not fetched.findings:
            continue
        shown[fetched.endpoint or ""] += 1
        username = crawl.world.principals[fetched.principal].username
        if entry.reads_arm and (fetched.response.headers["X-Request-ID"], username) not in reads:
            unaudited.append(f"{fetched.principal} {fetched.method} {fetched.url}")
    assert unaudited == [], "arms shown without an arm.read audit entry"
    stale = [endpoint for endpoint, count in shown.items() if count == 0]
    assert stale == [], "allow-list entries that no longer match anything: remove them"


@pytest.mark.req("BLD-10", "UNB-05", "UNB-08")
def test_the_emails_carry_no_arm(crawl: CrawlResult) -> None:
    """Every message of the outbox (randomizations, unblindings, alerts), to whomever it goes."""
    assert len(crawl.mail) >= 12, (
        "the world should have produced e-mails (one per dispensation request at least)"
    )
    assert [str(f) for f in crawl.mail_findings()] == []
    if crawl.world.unblinding:
        subjects = " ".join(str(m["Subject"]) for _, m in crawl.mail)
        assert "Emergency unblinding" in subjects and "Pharmacovigilance unblinding" in subjects


@pytest.mark.req("BLD-01", "RND-12")
def test_the_logs_carry_no_arm(crawl: CrawlResult) -> None:
    """Every log line written while the world was built and crawled (allocator JSON lines at DEBUG,
    everything else at the root logger's level)."""
    assert len(crawl.logs) > 1000, "the request log should hold a line per request"
    assert [str(f) for f in crawl.log_findings()] == []


# --- twins ----------------------------------------------------------------------------------------


def differences(a: Fetched, b: Fetched, sa: Subject, sb: Subject) -> list[str]:
    """What differs between the answers about two twins, identifiers masked (each side's partner
    too, for requests that name the other twin's kits or labels)."""
    own_a = Subject(
        sa.screening_number,
        sa.subject_number,
        sa.randomization_number,
        kits=sa.kits,
        kit_labels=sa.kit_labels,
        payloads=sa.payloads,
        extra=[(v, "<PARTNER" + p[1:]) for v, p in sb.identifiers()] + sa.extra,
    )
    own_b = Subject(
        sb.screening_number,
        sb.subject_number,
        sb.randomization_number,
        kits=sb.kits,
        kit_labels=sb.kit_labels,
        payloads=sb.payloads,
        extra=[(v, "<PARTNER" + p[1:]) for v, p in sa.identifiers()] + sb.extra,
    )
    what = f"{a.principal} {a.method} {a.url} ~ {b.url} ({a.via})"
    try:
        if a.endpoint in LENGTH_FOLLOWS_KIT_NUMBER and a.response.mimetype == "application/pdf":
            assert (a.status, sorted(a.response.headers.keys())) == (
                b.status,
                sorted(b.response.headers.keys()),
            )
            for name, value in a.response.headers.items():
                if name not in VOLATILE_HEADERS | {"Content-Length"}:
                    assert mask(value, own_a) == mask(b.response.headers[name], own_b), (
                        f"{what}: header {name}"
                    )
        else:
            assert_same_response(what, a.response, b.response, own_a, own_b)
        if a.response.mimetype == "application/pdf" and a.status == 200:
            pdf_a, pdf_b = a.response.get_data(), b.response.get_data()
            assert pdf_fingerprint(pdf_a) == pdf_fingerprint(pdf_b), f"{what}: PDF structure"
            meta = [
                {k: mask(str(v), s) for k, v in (pypdf.PdfReader(io.BytesIO(p)).metadata or {}).items()}
                for p, s in ((pdf_a, own_a), (pdf_b, own_b))
            ]
            assert meta[0] == meta[1], f"{what}: PDF metadata"
            assert mask(pdf_text(pdf_a), own_a) == mask(pdf_text(pdf_b), own_b), f"{what}: PDF text"
            codes = [
                sorted((mask(t, s), ec) for t, ec in decoded_qr(p))
                for p, s in ((pdf_a, own_a), (pdf_b, own_b))
            ]
            assert codes[0] == codes[1], f"{what}: QR codes"
    except AssertionError as exc:
        return [str(exc).splitlines()[0]]
    return []


def twin_state(pair_key: str | None) -> str:
    """The world state in a pair key (its last field, before "|follow" for a followed redirect)."""
    parts = (pair_key or "").split("|")
    while parts and parts[-1] == "follow":
        parts.pop()
    return parts[-1] if parts else ""


def twin_pairs(result: CrawlResult, role: str) -> list[tuple[Fetched, Fetched, Subject, Subject]]:
    by_key: dict[str, dict[str, Fetched]] = {}
    for fetched in result.fetched(role):
        if fetched.pair_key and fetched.subject:
            by_key.setdefault(fetched.pair_key, {})[fetched.subject] = fetched
    pairs = []
    for key, found in by_key.items():
        twins = result.world.twins.get(twin_state(key))
        if twins is None:
            continue
        a, b = twins
        if a.subject_number in found and b.subject_number in found:
            pairs.append((found[a.subject_number], found[b.subject_number], a, b))
    return pairs


@pytest.mark.req("BLD-02")
@pytest.mark.parametrize("role", BLINDED + UNBLINDED)
def test_active_and_placebo_twins_get_the_same_answers(crawl: CrawlResult, role: str) -> None:
    """For every subject route the crawl reached (pages, JSON, PDFs, refusals, flash messages),
    the answer about the arm-A twin equals the answer about the arm-B twin of the same history,
    byte length included, once identifiers are masked — in every state of the world."""
    pairs = twin_pairs(crawl, role)
    assert pairs, f"{role}: no twin pair compared"
    assert {a.arm for _, _, a, _ in pairs} == {ARMS[0]} and {b.arm for _, _, _, b in pairs} == {ARMS[1]}
    if Permission.SUBJECT_VIEW in ROLE_PERMISSIONS[Role(role)]:
        # the subject page, its JSON (session and bearer) and the confirmation PDF, in every state
        opened = Counter(twin_state(a.pair_key) for a, b, _, _ in pairs if a.status == b.status == 200)
        thin = {state: opened[state] for state in crawl.world.twins if opened[state] < 4}
        assert thin == {}, f"{role}: too few answers compared in these states"

    problems = []
    for a, b, sa, sb in pairs:
        if allowed(role, a):
            continue  # where an unblinded role is shown the arm, the twins differ by design
        problems += differences(a, b, sa, sb)
    assert problems == [], report(problems)


def cross_pairs(
    result: CrawlResult, role: str, first: str, second: str
) -> list[tuple[Fetched, Fetched, Subject, Subject]]:
    """The same request about the subject of one arm in state `first` and the subject of the same
    arm in state `second`."""
    by_key: dict[tuple[str, str], Fetched] = {}
    for fetched in result.fetched(role):
        state = twin_state(fetched.pair_key)
        if fetched.pair_key and fetched.subject and state in (first, second):
            generic = fetched.pair_key.replace(f"|{state}", "|<state>")
            by_key[(generic, fetched.subject)] = fetched
    pairs = []
    for index in range(len(ARMS)):
        x, y = result.world.twins[first][index], result.world.twins[second][index]
        for (generic, subject), fetched in by_key.items():
            other = by_key.get((generic, y.subject_number))
            if subject == x.subject_number and other is not None:
                pairs.append((fetched, other, x, y))
    return pairs


@pytest.mark.req("UNB-08", "BLD-01")
@pytest.mark.parametrize("role", SUBJECT_VIEWERS)
def test_a_pharmacovigilance_unblinding_is_invisible_to_everyone_else(crawl: CrawlResult, role: str) -> None:
    """Every answer about a subject unblinded by pharmacovigilance equals the answer about the
    subject of the same arm and the same history without that unblinding (identifiers masked), for
    every role that may see subjects, but pharmacovigilance itself."""
    if not crawl.world.unblinding:
        pytest.fail("allocator.services.unblinding is missing: the world has no pharmacovigilance unblinding")
    pairs = cross_pairs(crawl, role, "administered", "pv_unblinded")
    assert pairs, f"{role}: nothing compared"
    problems = [p for a, b, sa, sb in pairs if not allowed(role, a) for p in differences(a, b, sa, sb)]
    assert problems == [], report(problems)


# --- coverage of the crawl ------------------------------------------------------------------------


def test_every_route_parameter_can_be_filled(app: Flask) -> None:
    """A new route with a parameter the resolver does not know fails here, naming it."""
    unknown = []
    for rule in app.url_map.iter_rules():
        for name in rule.arguments:
            try:
                Resolver.kind(rule, name)
            except UnknownParameter as exc:
                unknown.append(str(exc))
    assert unknown == []


@pytest.mark.req("BLD-01")
def test_the_crawl_reached_every_route(crawl: CrawlResult) -> None:
    """Every GET route answered 2xx with real ids to at least one role; every POST route was
    submitted, and every API route called with a bearer token, by every role; documents of each
    kind were checked and QR codes decoded."""
    fetched = crawl.crawler.fetched
    rules = list(crawl.crawler.rules)
    ok = {f.endpoint for f in fetched if f.method == "GET" and 200 <= f.status < 300}
    unreached = [
        r.rule
        for r in rules
        if "GET" in (r.methods or set()) and r.endpoint not in ok and r.endpoint not in NOT_YET
    ]
    assert unreached == [], "GET routes no role could open with the world's ids"
    for role in crawl.world.principals:
        mine = [f for f in fetched if f.principal == role]
        posted = {f.endpoint for f in mine if f.method == "POST"}
        missing = [r.rule for r in rules if "POST" in (r.methods or set()) and r.endpoint not in posted]
        assert missing == [], f"{role}: POST routes not submitted"
        called = {f.endpoint for f in mine if f.channel == "bearer"}
        missing = [r.rule for r in rules if r.rule.startswith("/api/") and r.endpoint not in called]
        assert missing == [], f"{role}: API routes not called with a bearer token"
    kinds = crawl.checker.seen.documents
    for kind in ("html", "json", "csv", "pdf"):
        assert kinds.get(kind, 0) > 0, f"no {kind} checked"
    assert any(p.startswith("AL1/") for p in crawl.checker.seen.barcodes), "no kit QR code decoded"
    assert any(p.startswith("otpauth://") for p in crawl.checker.seen.barcodes), "no page QR code decoded"


def test_no_route_fails_with_a_server_error(crawl: CrawlResult) -> None:
    errors = [f"{f.principal} {f.method} {f.url} ({f.via})" for f in crawl.crawler.fetched if f.status >= 500]
    assert errors == []


# --- the summary artefact --------------------------------------------------------------------------


def write_summary(result: CrawlResult, backend: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    roles = {}
    for role in sorted(result.world.principals):
        mine = result.fetched(role)
        roles[role] = {
            "blinded": result.world.principals[role].blinded,
            "requests": len(mine),
            "endpoints": len({f.endpoint for f in mine if f.endpoint}),
            "endpoints_answered_2xx": len({f.endpoint for f in mine if f.endpoint and f.status < 300}),
            "by_status": _count(str(f.status) for f in mine),
            "by_via": _count(f.via.split(" ")[0] for f in mine),
            "barcodes_decoded": sum(f.barcodes for f in mine),
            "findings": sum(len(f.findings) for f in mine),
            "findings_allowed": sum(len(f.findings) for f in mine if allowed(role, f)),
            "seconds": round(result.seconds.get(role, 0.0), 2),
            "slowest": [
                f"{f.seconds:.2f}s {f.method} {f.url} ({f.status})"
                for f in sorted(mine, key=lambda f: f.seconds, reverse=True)[:8]
            ],
        }
    summary = {
        "backend": backend,
        "world": {
            "steps": result.world.steps,
            "subjects": {s.subject.subject_number: s.state for s in result.world.subjects},
            "twins": {k: [a.subject_number, b.subject_number] for k, (a, b) in result.world.twins.items()},
            "unblinding_included": result.world.unblinding,
            "seconds": round(result.seconds.get("world", 0.0), 2),
        },
        "routes": sorted({f"{sorted(r.methods or [])} {r.rule}" for r in result.crawler.rules}),
        "roles": roles,
        "documents_checked": result.checker.seen.documents,
        "pdf_pages": result.checker.seen.pdf_pages,
        "pdf_pages_not_scanned_for_codes": result.checker.seen.pages_not_scanned,
        "barcodes_decoded": len(result.checker.seen.barcodes),
        "barcode_formats": _count(p.split("/")[0].split(":")[0] for p in result.checker.seen.barcodes),
        "emails_checked": len(result.mail),
        "log_lines_checked": len(result.logs),
        "allowed_for_unblinded_roles": {
            k: {"roles": sorted(v.roles), "reason": v.reason} for k, v in UNBLINDED_ALLOWED.items()
        },
        "allowed_phrases": [
            {"phrase": a.phrase, "reason": a.reason} for a in result.checker.vocabulary.allowed
        ],
        "known_leaks": [vars(k) for k in KNOWN_LEAKS],
        "documented_exceptions": [vars(d) for d in DOCUMENTED],
        "twin_length_exceptions": LENGTH_FOLLOWS_KIT_NUMBER,
        "not_yet_reachable": NOT_YET,
        "findings": [
            {
                "role": f.principal,
                "endpoint": f.endpoint,
                "finding": str(x),
                "allowed": bool(allowed(f.principal, f)),
            }
            for f in result.crawler.fetched
            for x in f.findings
        ][:500],
    }
    (ARTIFACTS / f"summary-{backend}.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
    )


def _count(items: Iterator[str] | list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


# --- proof that the suite can fail: injected leaks ------------------------------------------------


@dataclass(frozen=True)
class Leaked:
    """What a test-only route knows about the subject it is asked about."""

    subject: str
    arm: str  # the code
    label: str
    product: str
    ctx: ServiceContext


@dataclass(frozen=True)
class Leak:
    """A test-only route that leaks the arm one way, and where the crawl must catch it: in its own
    answer ("response"), in a page it redirects to ("redirect"), in the e-mails ("mail"), in the
    logs ("log"), or only by comparing the twins ("twins"). Controls leak nothing: they must pass."""

    name: str
    caught_in: str
    channel: str  # the Finding.channel that must report it ("twins": the comparison of the twins)
    view: Callable[[Leaked], object]
    control: bool = False


def pdf_document(
    lines: list[str], *, subject: str = "", hidden: str = "", qr: str = "", attachment: str = ""
) -> bytes:
    """A one-page PDF (reportlab, invariant): text lines, then optionally PDF metadata, invisible
    text (render mode 3), a QR code, an embedded file."""
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, invariant=1)
    page.setTitle("Dispensation note")
    if subject:
        page.setSubject(subject)
    for index, line in enumerate(lines):
        page.drawString(72, 770 - 16 * index, line)
    if hidden:
        text = page.beginText(72, 600)
        text.setTextRenderMode(3)
        text.textLine(hidden)
        page.drawText(text)
    if qr:
        widget = QrCodeWidget(qr)
        x0, y0, x1, y1 = widget.getBounds()
        drawing = Drawing(160, 160, transform=[160 / (x1 - x0), 0, 0, 160 / (y1 - y0), 0, 0])
        drawing.add(widget)
        renderPDF.draw(drawing, page, 72, 380)
    page.showPage()
    page.save()
    data = buffer.getvalue()
    if attachment:
        writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
        writer.add_attachment("allocation.txt", attachment.encode())
        out = io.BytesIO()
        writer.write(out)
        data = out.getvalue()
    return data


def pdf_response(data: bytes, name: str = "note") -> Response:
    return Response(
        data, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}.pdf"'}
    )


def page(body: str) -> str:
    return render_template_string('{% extends "base.html" %}{% block content %}' + body + "{% endblock %}")


def _notify(leaked: Leaked) -> str:
    with leaked.ctx.db.unit_of_work() as session:
        trial_id = session.execute(select(Trial.id).where(Trial.code == TRIAL)).scalar_one()
        session.add(
            Notification(
                trial_id=trial_id,
                site_id=None,
                audience="monitor",
                kind="dispensation",
                subject_number=leaked.subject,
                title=f"[leak-email] Dispensed for {leaked.subject}",
                body=f"{leaked.subject} receives {leaked.label}.",
                created_at=leaked.ctx.now(),
            )
        )
    return page("<p>Noted.</p>")


def _log(leaked: Leaked) -> str:
    log_event("leak-log: dispensing prepared", subject=leaked.subject, detail=leaked.product)
    return page("<p>Logged.</p>")


def _flash(leaked: Leaked) -> WerkzeugResponse:
    flash(f"Prepared {leaked.label} for {leaked.subject}.", "ok")
    return redirect(f"/trials/{TRIAL}/subjects/{leaked.subject}/leak-landing", code=303)


def _cookie(value: str) -> Response:
    response = Response(page("<p>Noted.</p>"), mimetype="text/html")
    response.set_cookie("prepared", value, httponly=True)
    return response


def _session(leaked: Leaked) -> str:
    browser_session["prepared"] = leaked.arm  # signed, not encrypted: the browser can read it
    return page("<p>Noted.</p>")


KIT_LIKE = "AL1/IFNG-PAIS/12345678/{arm}/ABCDEFGHIJKLMNOP"


def _pdf(x: Leaked, **leak: str) -> Response:
    return pdf_response(pdf_document([x.subject], **leak))


LEAKS = [
    # name, where the crawl must catch it, the check that must report it, the route's answer
    Leak("template", "response", "html-text", lambda x: page(f"<p>{x.subject} is on {x.label}.</p>")),
    Leak(
        "template-cell",
        "response",
        "html-element",
        lambda x: page(f"<table><tr><td>{x.subject}</td><td>{x.arm}</td></tr></table>"),
    ),
    Leak(
        "template-attribute",
        "response",
        "html-attribute",
        lambda x: page(f'<p data-group="{x.arm}">{x.subject}</p>'),
    ),
    Leak(
        "template-comment",
        "response",
        "html-comment",
        lambda x: page(f"<!-- {x.product} --><p>{x.subject}</p>"),
    ),
    Leak("json-key", "response", "json-key", lambda x: jsonify({"subject": x.subject, "treatment": x.arm})),
    Leak(
        "json-value",
        "response",
        "json",
        lambda x: jsonify({"subject": x.subject, "kits": [{"day": "D1", "group": x.arm}]}),
    ),
    Leak(
        "csv",
        "response",
        "csv",
        lambda x: Response(f"subject,allocation\r\n{x.subject},{x.arm}\r\n", mimetype="text/csv"),
    ),
    Leak("header", "response", "header", lambda x: Response("ok", headers={"X-Prepared": x.label})),
    Leak(
        "file-name",
        "response",
        "file-name",
        lambda x: pdf_response(pdf_document([x.subject]), f"{x.subject}-{x.arm}"),
    ),
    Leak("redirect", "response", "url", lambda x: redirect(f"/trials/{TRIAL}?arm={x.arm}", code=302)),
    Leak("flash", "redirect", "html-text", _flash),
    Leak("cookie", "response", "cookie", lambda x: _cookie(x.label)),
    Leak("cookie-token", "response", "cookie", lambda x: _cookie(f"{x.label}-{x.subject}".replace(" ", "_"))),
    Leak("session", "response", "cookie-json", _session),
    Leak(
        "pdf-text",
        "response",
        "pdf-text",
        lambda x: pdf_response(pdf_document([x.subject, f"Product: {x.product}"])),
    ),
    Leak("pdf-metadata", "response", "pdf-metadata", lambda x: _pdf(x, subject=x.label)),
    Leak("pdf-hidden-text", "response", "pdf-text", lambda x: _pdf(x, hidden=x.label)),
    Leak("pdf-attachment", "response", "pdf-attachment", lambda x: _pdf(x, attachment=f"arm={x.arm}")),
    Leak("pdf-qr", "response", "barcode", lambda x: _pdf(x, qr=KIT_LIKE.format(arm=x.arm))),
    Leak(
        "page-qr",
        "response",
        "barcode",
        lambda x: page(f'<img alt="" src="{svg_data_uri(f"{x.subject};{x.arm}")}">'),
    ),
    Leak("email", "mail", "email-body", _notify),
    Leak("log", "log", "log", _log),
    # No word, no code: only the comparison of the twins sees these.
    Leak(
        "markup-by-arm",
        "twins",
        "twins",
        lambda x: page(f'<p class="{"a" if x.arm == ARMS[0] else "b"}">{x.subject}</p>'),
    ),
    Leak(
        "size-by-arm",
        "twins",
        "twins",
        lambda x: page(f"<p>{x.subject}</p>" + ("<p></p>" if x.arm == ARMS[0] else "")),
    ),
    # Controls: the same kinds of answers without the arm must pass every check.
    Leak(
        "control-page",
        "response",
        "",
        lambda x: page(f"<table><tr><td>{x.subject}</td><td>D1</td></tr></table>"),
        control=True,
    ),
    Leak(
        "control-json",
        "response",
        "",
        lambda x: jsonify({"subject": x.subject, "kits": [{"day": "D1"}]}),
        control=True,
    ),
    Leak("control-pdf", "response", "", lambda x: _pdf(x, qr=KIT_LIKE.format(arm="D1")), control=True),
    Leak("landing", "response", "", lambda x: page(f"<p>{x.subject}</p>"), control=True),
    # A device cookie's random parts hold a product word now and then ("-IFN_"): opaque, not text.
    Leak(
        "control-cookie",
        "response",
        "",
        lambda x: _cookie("v1.session-1.k7Qw-IFN_x2Lp9RtYv3Mn8Bc." + "c" * 43),
        control=True,
    ),
]


def leak_blueprint(world_of: Callable[[], World]) -> Blueprint:
    """The test-only routes, one per leak, at /trials/<trial>/subjects/<subject>/leak-<name>: the
    crawler's resolver fills them like any subject route."""
    bp = Blueprint("leak", __name__)

    def make(leak: Leak) -> Callable[[str, str], object]:
        def view(trial: str, subject: str) -> object:
            world = world_of()
            found = world.subject(subject)
            if found is None:
                abort(404)
            arm = found.subject.arm
            definition = next(a for a in world.definition.arms if a.code == arm)
            return leak.view(Leaked(subject, arm, definition.label, definition.product, world.ctx))

        view.__name__ = f"leak_{leak.name.replace('-', '_')}"
        return requires(Permission.SUBJECT_VIEW)(view)

    for leak in LEAKS:
        bp.add_url_rule(
            f"/trials/<trial>/subjects/<subject>/leak-{leak.name}",
            endpoint=leak.name,
            view_func=make(leak),
        )
    return bp


@pytest.fixture
def leaky(
    kept: Kept, tmp_path_factory: pytest.TempPathFactory, backend: str, key_dir: Path, ring: crypto.KeyRing
) -> CrawlResult:
    """A fresh app with the leaking routes registered before its first request, a small world
    (twins allocated and administered), crawled by the monitor (a blinded role that may view
    subjects) on those routes only, through the same checks as the real crawl. Once per backend
    and test process (tests.conftest.Kept)."""

    def build_and_crawl() -> tuple[CrawlResult, Callable[[], None]]:
        fresh = FreshDatabase(backend, tmp_path_factory.mktemp(f"leaky-{backend}")).migrate()
        clock = Clock()
        app, ctx = make_app(fresh, key_dir, ring, clock)
        holder: list[World] = []
        app.register_blueprint(leak_blueprint(lambda: holder[0]))

        def build() -> World:
            holder.append(build_world(ctx, clock, states=("allocated", "administered"), extras=False))
            return holder[0]

        def cleanup() -> None:
            ctx.db.dispose()
            fresh.drop()

        only = frozenset(f"leak.{leak.name}" for leak in LEAKS)
        try:
            return run_crawl(app, ctx, build, roles=["monitor"], only=only), cleanup
        except BaseException:
            cleanup()
            raise

    return kept.get(("leaky-crawl", backend), build_and_crawl)


def caught(result: CrawlResult, leak: Leak) -> list[tuple[str, str]]:
    """(channel, description) of everything the crawl's checks report about `leak`."""
    endpoint = f"leak.{leak.name}"
    found: list[Finding] = []
    if leak.caught_in == "response":  # (a page reached by a redirect belongs to the redirecting route)
        found = [
            f
            for x in result.crawler.fetched
            if x.endpoint == endpoint and x.via != "redirect"
            for f in x.findings
        ]
    elif leak.caught_in == "redirect":  # the page redirected to, and the redirect itself (its cookie)
        found = [
            f
            for x in result.crawler.fetched
            if (x.via == "redirect" and x.endpoint == "leak.landing")
            or (x.endpoint == endpoint and x.via != "redirect")
            for f in x.findings
        ]
    elif leak.caught_in == "mail":
        found = [f for f in result.mail_findings() if "[leak-email]" in f.where]
    elif leak.caught_in == "log":
        found = [
            f for name, line in result.logs if "leak-log" in line for f in result.checker.log_line(name, line)
        ]
    else:
        return [
            ("twins", problem)
            for a, b, sa, sb in twin_pairs(result, "monitor")
            if a.endpoint == endpoint
            for problem in differences(a, b, sa, sb)
        ]
    return [(f.channel, str(f)) for f in found]


@pytest.mark.req("BLD-01", "BLD-02", "BLD-10")
@pytest.mark.parametrize("leak", LEAKS, ids=lambda leak: leak.name)
def test_an_injected_leak_is_caught(leaky: CrawlResult, leak: Leak) -> None:
    """The proof that the suite can fail: each leaking route is found by the crawl (no route is
    named to it: it walks app.url_map) and reported by the checks that guard the real routes; the
    controls, identical but for the arm, are not."""
    endpoint = f"leak.{leak.name}"
    requested = [x for x in leaky.crawler.fetched if x.endpoint == endpoint]
    assert len(requested) >= 4, f"the crawl did not request {endpoint} for the subjects of both arms"
    assert {
        leaky.world.subject(x.args["subject"]).subject.arm
        for x in requested
        if leaky.world.subject(x.args.get("subject", ""))
    } == set(ARMS)  # type: ignore[union-attr]
    found = caught(leaky, leak)
    if leak.control:
        assert found == [], "a control without the arm was reported"
    else:
        assert found, f"the {leak.name} leak was not caught"
        assert leak.channel in {channel for channel, _ in found}, f"not reported by the {leak.channel} check"


def test_the_leaking_routes_are_clean_apart_from_their_leak(leaky: CrawlResult) -> None:
    """Nothing else the leak crawl saw was reported: the findings above are the leaks themselves."""
    leaking = {
        f"leak.{leak.name}"
        for leak in LEAKS
        if leak.caught_in in ("response", "redirect") and not leak.control
    }
    others = [
        str(f)
        for x in leaky.crawler.fetched
        if x.endpoint not in leaking and not (x.via == "redirect" and x.endpoint == "leak.landing")
        for f in x.findings
    ]
    assert others == []


@pytest.mark.req("BLD-01")
def test_a_flash_message_is_read_in_the_session_cookie_too(leaky: CrawlResult) -> None:
    """Flask keeps flash messages in its session cookie, signed but not encrypted: an arm in a
    flash reaches the browser before any page shows it, and the cookie check reads it there."""
    own = [
        f
        for x in leaky.crawler.fetched
        if x.endpoint == "leak.flash" and x.via != "redirect"
        for f in x.findings
    ]
    assert own and {f.channel for f in own} == {"cookie-json"}


# --- the observational cohort beside the trial (issue 20) -----------------------------------------


@pytest.mark.req("BLD-01", "BLD-06")
@pytest.mark.parametrize("principal", [COHORT_PRINCIPAL, COHORT_MONITOR])
def test_a_cohort_user_gets_nothing_of_the_randomized_trial(crawl: CrawlResult, principal: str) -> None:
    """The investigator and the monitor of IMMUNOSEPSIS-4 have no role in IFNG-PAIS: every page and
    call about IFNG-PAIS is refused (the home page does not list it), no answer carries an arm, and
    the cohort's own pages — registration form, participants, subject page, screening log; for the
    monitor the cohort's reports, their CSV and PDF — were open to them."""
    mine = [f for f in crawl.crawler.fetched if f.principal == principal]
    assert mine, f"{principal} did not crawl"
    opened = [
        f"{f.method} {f.url} ({f.status})"
        for f in mine
        if f"/{TRIAL}" in f.url and f.status < 400 and f.method == "GET"
    ]
    assert opened == [], "IFNG-PAIS pages answered to a user of the cohort only"
    home = [f for f in mine if f.url == "/" and f.status == 200]
    assert home and all(TRIAL not in f.response.get_data(as_text=True) for f in home)
    reached = {f.endpoint for f in mine if f"/{COHORT}" in f.url and 200 <= f.status < 300}
    assert {"main.trial", "subjects.subject_list", "subjects.subject_page", "subjects.screening"} <= reached
    if principal == COHORT_PRINCIPAL:
        # issue 20: registration, the tube-set stock and the collection scan
        assert {"subjects.register_form", "samples.tube_sets", "samples.collect"} <= reached
    else:
        assert {"reports.index", "reports.page", "reports.download", "reports.review_page"} <= reached
        pages = {f.url.split("?")[0] for f in mine if f.endpoint == "reports.page" and f.status == 200}
        assert {f"/trials/{COHORT}/reports/{name}" for name in COHORT_REPORTS} <= pages
    assert violations(crawl, principal) == []
