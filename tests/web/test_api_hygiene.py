"""Issue 14, D2-D6: hostile input to the JSON API gets a 4xx problem document naming the field and
changes nothing, on SQLite and PostgreSQL; never a 500. Each test cites the finding it reproduces."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from sqlalchemy import func, select

import kits as kitlib
from allocator import audit, crypto
from allocator.models import AuditEvent, ScreeningEntry, Subject
from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize
from allocator.services.supply import kit_rules
from tests.support import (
    CLI_ACTOR,
    ELIGIBLE,
    GOOD_PASSWORD,
    Clock,
    ReadyTrial,
    enroll_totp,
    make_actor,
    ready_trial,
)
from tests.support import randomization as randomize_one

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
PROBLEM = "application/problem+json"

Call = Callable[..., tuple[int, dict[str, object]]]


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx)


def _caller(app: Flask, token: str) -> Call:
    client = app.test_client()

    def call(method: str, path: str, raw: str | bytes | None = None) -> tuple[int, dict[str, object]]:
        response = client.open(
            path,
            method=method,
            data=raw,
            content_type="application/json" if raw is not None else None,
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        assert response.status_code < 500, response.get_data(as_text=True)[:500]
        assert response.mimetype in (PROBLEM, "application/json"), response.mimetype
        return response.status_code, response.get_json() or {}

    return call


@pytest.fixture
def investigator(app: Flask, ctx: ServiceContext, world: ReadyTrial) -> Call:
    return _caller(app, users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token)


@pytest.fixture
def monitor(app: Flask, ctx: ServiceContext, world: ReadyTrial) -> Call:
    make_actor(ctx, "mon", "monitor")
    return _caller(app, users.create_token(ctx, CLI_ACTOR, "mon", "cro").token)


def fields(problem: dict[str, object]) -> set[str]:
    errors = problem.get("errors") or []
    assert isinstance(errors, list)
    return {e["field"] for e in errors}


def counts(ctx: ServiceContext) -> tuple[int, int, int]:
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(Subject)).scalar_one(),
            s.execute(select(func.count()).select_from(ScreeningEntry)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


def randomization(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "site": "P1",
        "screening_number": "P1-0001",
        "eligibility": dict(ELIGIBLE),
        "strata": {"admission_cause": "septic"},
    }
    body.update(changes)
    return body


def dispensed_subject(ctx: ServiceContext, world: ReadyTrial) -> tuple[str, dict[str, str]]:
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    first = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL)
    kits_of = {k.day: k.kit_number for k in first.kits}
    dispensing.dispense(
        ctx,
        world.pharmacist,
        TRIAL,
        first.subject_number,
        kits_of,
        scope=ALL,
        signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
    )
    return first.subject_number, {
        d: kitlib.build_payload(TRIAL, n, d, kit_rules.mac(ctx)) for d, n in kits_of.items()
    }


# --- D2: nesting and size -------------------------------------------------------------------


@pytest.mark.req("RND-05")
def test_d2_deeply_nested_json_is_refused_not_a_500(investigator: Call, ctx: ServiceContext) -> None:
    before = counts(ctx)
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", "[" * 100_000 + "]" * 100_000)
    assert status in (400, 413, 422)
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", "[" * 5_000 + "]" * 5_000)
    assert status in (400, 422) and fields(problem) == {"body"}
    nested = '{"a":' * 5_000 + "1" + "}" * 5_000
    raw = json.dumps(randomization(eligibility={})).replace('"eligibility": {}', f'"eligibility": {nested}')
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", raw)
    assert status in (400, 422) and fields(problem) == {"body"}
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/scans", "[" * 100_000 + "]" * 100_000)
    assert status in (400, 413, 422)
    assert counts(ctx) == before


def test_d2_an_oversized_body_is_a_413_problem(investigator: Call) -> None:
    big = json.dumps(randomization(screening_number="x" * (2 * 1024 * 1024)))
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", big)
    assert status == 413 and problem["status"] == 413


@pytest.mark.parametrize(("criterion", "text"), [("age", "64"), ("mhladr", "5400"), ("sofa_24h", "9")])
def test_text_where_a_number_is_asked_is_refused(
    investigator: Call, ctx: ServiceContext, criterion: str, text: str
) -> None:
    """Issue 14: "age": "64" was silently read as a number; the contract says a number."""
    before = counts(ctx)
    body = randomization(eligibility={**ELIGIBLE, criterion: text})
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", json.dumps(body))
    assert status == 422, problem
    assert fields(problem) == {f"eligibility.{criterion}"}
    assert counts(ctx) == before


def test_d2_malformed_json_names_the_body(investigator: Call) -> None:
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/subjects", '{"site": ')
    assert status == 422 and fields(problem) == {"body"}


# --- D3 / D4: lone surrogates, NUL and other non-characters ----------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"site": "S\udfff1"}, "site"),
        ({"screening_number": "S01-\ud800"}, "screening_number"),
        ({"site": "S0\x001"}, "site"),
        ({"screening_number": "P1-\ufffe"}, "screening_number"),
        ({"strata": {"admission_cause": "sep\x00tic"}}, "strata.admission_cause"),
        ({"eligibility": {**ELIGIBLE, "age\ud800": 64}}, "eligibility"),
    ],
)
def test_d3_d4_bad_characters_in_a_randomization_are_named(
    investigator: Call, ctx: ServiceContext, changes: dict[str, object], field: str
) -> None:
    before = counts(ctx)
    status, problem = investigator(
        "POST", f"/api/v1/trials/{TRIAL}/subjects", json.dumps(randomization(**changes))
    )
    assert status == 422, problem
    assert any(f == field or f.startswith(field + ".") for f in fields(problem)), problem
    assert counts(ctx) == before


@pytest.mark.parametrize("value", ["S01-\ud800", "S0\x001"])
def test_d3_d4_bad_characters_in_a_scan_are_named(
    investigator: Call, ctx: ServiceContext, world: ReadyTrial, value: str
) -> None:
    _, labels = dispensed_subject(ctx, world)
    before = counts(ctx)
    raw = json.dumps({"payload": labels["D1"], "subject_number": value, "day": "D1"})
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/scans", raw)
    assert status == 422 and fields(problem) == {"subject_number"}
    assert counts(ctx) == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/trials/%00",
        f"/api/v1/trials/{TRIAL}/subjects/%00",
        "/api/v1/trials/%EF%BF%BF",
    ],
)
def test_d4_nul_in_a_path_is_a_404(investigator: Call, path: str) -> None:
    status, problem = investigator("GET", path)
    assert status == 404 and problem["status"] == 404


@pytest.mark.parametrize("query", ["user=%00", "action=a%00b", "object_id=%EF%BF%BE", "since=%00"])
def test_d4_nul_in_a_query_is_a_422_naming_it(monitor: Call, query: str) -> None:
    status, problem = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?{query}")
    assert status == 422 and fields(problem) == {query.split("=", maxsplit=1)[0]}


def test_d3_an_audit_entry_stores_what_it_cannot_store_escaped(ctx: ServiceContext) -> None:
    """The audit trail records a refusal whatever characters it holds (D3): lone surrogates and NUL
    are written as visible escapes, and the chain still verifies."""
    with ctx.db.unit_of_work() as s:
        ctx.audit.record(
            s,
            actor=CLI_ACTOR,
            chain="hygiene",
            action=audit.Action.SCAN_REFUSED,
            object_type="subject",
            object_id="S01-\ud800\x00",
            new={"day\udfff": "D\x001", "list": ["\ud800"]},
            reason="why\x00\udc80",
            site_code="S\udfff1",
            at=ctx.now(),
        )
    with ctx.db.reading() as s:
        entry = s.execute(select(AuditEvent).where(AuditEvent.chain == "hygiene")).scalar_one()
        assert audit.verify_chain(s.connection(), ctx.ring, "hygiene").ok
    assert entry.object_id == "S01-\\ud800\\x00"
    assert entry.new_values is not None and "\\ud800" in entry.new_values and "\x00" not in entry.new_values
    assert entry.reason == "why\\x00\\udc80" and entry.site_code == "S\\udfff1"


# --- D5: paging numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "after=99999999999999999999999",
        "after=9223372036854775808",
        "after=%C2%B2",
        "after=%D9%A1%D9%A2",  # Arabic-Indic digits
        "after=%EF%BC%91",  # full-width 1
        "after=-1",
        "after=1&after=2",
        "limit=0",
        "limit=1001",
        "limit=%EF%BC%95",
    ],
)
def test_d5_paging_numbers_are_ascii_digits_within_range(monitor: Call, query: str) -> None:
    status, problem = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?{query}")
    assert status == 422 and fields(problem) == {query.split("=", maxsplit=1)[0]}, problem


def test_d5_paging_at_the_limits_is_accepted(monitor: Call) -> None:
    status, page = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?after=9223372036854775807&limit=1000")
    assert status == 200 and page["entries"] == []
    status, page = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?after=0&limit=1")
    assert status == 200 and len(page["entries"]) == 1


# --- D6: dates are range-checked before any arithmetic ----------------------------------------


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1899-12-31T00:00:00Z"]
)
def test_d6_an_administration_time_out_of_range_is_a_422(
    investigator: Call, ctx: ServiceContext, world: ReadyTrial, when: str
) -> None:
    number, labels = dispensed_subject(ctx, world)
    before = counts(ctx)
    raw = json.dumps(
        {
            "payload": labels["D1"],
            "subject_number": number,
            "day": "D1",
            "administered_at": when,
            "late_reason": "entered from the paper chart",
        }
    )
    status, problem = investigator("POST", f"/api/v1/trials/{TRIAL}/scans", raw)
    assert status == 422 and fields(problem) == {"administered_at"}
    assert counts(ctx) == before


# --- Every error of the API is a problem document ---------------------------------------------


def test_405_is_a_problem_with_allow(app: Flask, ctx: ServiceContext, world: ReadyTrial) -> None:
    token = users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token
    response = app.test_client().open(
        f"/api/v1/trials/{TRIAL}/scans",
        method="TRACE",
        headers={"Authorization": f"Bearer {token}"},
        base_url="https://localhost",
    )
    assert response.status_code == 405 and response.mimetype == PROBLEM
    assert "POST" in response.headers["Allow"]


def test_an_overlong_request_line_is_a_414_problem(investigator: Call) -> None:
    status, problem = investigator("GET", f"/api/v1/trials/{TRIAL}/subjects/{'P' * 5000}")
    assert status == 414 and problem["status"] == 414


# --- The second-factor code of an unblinding: exactly what the OpenAPI document states ----------


def _unblind_body(otp: object) -> str:
    return json.dumps(
        {
            "reason_category": "other_medical_emergency",
            "reason": "anaphylaxis after the second dose, treatment decision",
            "password": GOOD_PASSWORD,
            "otp": otp,
        }
    )


def _otp_schema() -> dict[str, object]:
    from allocator.web.openapi import document

    body = document()["paths"]["/trials/{trial}/subjects/{subject}/unblind"]["post"]["requestBody"]
    return body["content"]["application/json"]["schema"]["properties"]["otp"]


@pytest.mark.req("UNB-04")
def test_the_otp_document_admits_exactly_what_the_service_strips() -> None:
    from allocator.services.errors import bad_character

    validator = Draft202012Validator(_otp_schema())
    # Whatever str.strip() removes and the body check lets through may surround the six digits.
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace() and not bad_character(chr(c))]
    assert spaces and "\u00a0" in spaces and "\t" in spaces
    for space in spaces:
        assert validator.is_valid(f"{space}123456{space}{space}"), hex(ord(space))
    for good in ("123456", "", None):
        assert validator.is_valid(good), good
    for bad in ("12345", "1234567", "123 456", "abcdef", "\u00b2" * 6, "\u0661" * 6, "\x0b123456", " "):
        assert not validator.is_valid(bad), bad


@pytest.mark.req("UNB-04")
@pytest.mark.parametrize(
    "otp",
    ["\u00b2" * 6, "\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11" * 6, "12345", "123 456", " "],
    ids=["superscripts", "arabic-indic", "full-width", "short", "inner-space", "blank"],
)
def test_an_unblinding_with_a_malformed_code_is_a_422_naming_otp(
    app: Flask,
    ctx: ServiceContext,
    world: ReadyTrial,
    clock: Clock,
    otp: str,
) -> None:
    """Non-ASCII digits passed str.isdigit() and failed at encode("ascii"): a 500 for an enrolled
    investigator. A code that cannot be one is now refused whatever the enrolment."""
    subject = randomize_one(ctx, world.investigator, "P1-0001").subject_number
    assert world.investigator.user_id is not None
    enroll_totp(ctx, world.investigator.user_id, clock)
    call = _caller(app, users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token)
    before = counts(ctx)
    status, problem = call("POST", f"/api/v1/trials/{TRIAL}/subjects/{subject}/unblind", _unblind_body(otp))
    assert status == 422 and fields(problem) == {"otp"}, problem
    assert counts(ctx) == before


@pytest.mark.req("UNB-04")
def test_a_good_code_between_spaces_signs_the_unblinding(
    app: Flask,
    ctx: ServiceContext,
    world: ReadyTrial,
    clock: Clock,
) -> None:
    subject = randomize_one(ctx, world.investigator, "P1-0001").subject_number
    assert world.investigator.user_id is not None
    secret = enroll_totp(ctx, world.investigator.user_id, clock)
    clock.advance(seconds=60)
    call = _caller(app, users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token)
    code = crypto.totp_now(secret, clock())
    status, answer = call(
        "POST", f"/api/v1/trials/{TRIAL}/subjects/{subject}/unblind", _unblind_body(f"\u00a0{code}\t")
    )
    assert status == 200 and answer["subject_number"] == subject, answer


# --- The audit filters: the service and the OpenAPI document refuse the same values ------------


def _audit_parameter(name: str) -> Draft202012Validator:
    from allocator.web.openapi import document

    (parameter,) = [
        p for p in document()["paths"]["/trials/{trial}/audit"]["get"]["parameters"] if p["name"] == name
    ]
    return Draft202012Validator(parameter["schema"], format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.req("AUD-05")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("until", "9999-12-31"),  # was a 500: the day after the period overflowed
        ("since", "0001-01-01"),
        ("since", "20260301"),  # date.fromisoformat reads these; the document does not
        ("since", "2026-W10-1"),
        ("until", "2026-02-30"),
        ("user", "u" * 201),
        ("object_type", "t" * 201),
        ("object_id", "i" * 201),
        ("action", "subject.eaten"),
    ],
)
def test_an_audit_filter_the_document_refuses_is_a_422_naming_it(
    monitor: Call, name: str, value: str
) -> None:
    assert not _audit_parameter(name).is_valid(value)
    status, problem = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?{name}={value}")
    assert status == 422 and fields(problem) == {name}, problem


@pytest.mark.req("AUD-05")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("since", "2000-01-01"),
        ("until", "2999-12-31"),
        ("user", "u" * 200),
        ("object_id", "P1-001"),
        ("action", "subject.randomized"),
    ],
)
def test_an_audit_filter_the_document_admits_is_served(monitor: Call, name: str, value: str) -> None:
    assert _audit_parameter(name).is_valid(value)
    status, answer = monitor("GET", f"/api/v1/trials/{TRIAL}/audit?{name}={value}")
    assert status == 200 and "entries" in answer, answer


def _scan_property(name: str) -> Draft202012Validator:
    from allocator.web.openapi import document

    body = document()["paths"]["/trials/{trial}/scans"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]["properties"][name]
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.req("DIB-09")
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("late_reason", "r" * 1001),  # was taken whatever its length
        ("late_reason", 5),  # was read as the text "5"
        ("payload", "   "),  # refused as missing; the document now says so
        ("subject_number", "\t"),
        ("day", " "),
        ("administered_at", "2026-03-02T09:30:00" + "0" * 60 + "+00:00"),
    ],
)
def test_a_scan_field_the_document_refuses_is_a_422_naming_it(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, name: str, value: object
) -> None:
    number, payloads = dispensed_subject(ctx, world)
    assert not _scan_property(name).is_valid(value)
    nurse = _caller(app, users.create_token(ctx, CLI_ACTOR, "nurse-p1", "ward").token)
    body = {"payload": payloads["D1"], "subject_number": number, "day": "D1", name: value}
    before = counts(ctx)
    status, problem = nurse("POST", f"/api/v1/trials/{TRIAL}/scans", json.dumps(body))
    assert status == 422 and fields(problem) == {name}, problem
    assert counts(ctx) == before
