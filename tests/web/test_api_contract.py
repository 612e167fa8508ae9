"""Issue 14, a machine-checked contract: real answers of the API are validated against the OpenAPI
document it serves (every status must be documented for its operation, every JSON body must match
the documented schema), and a bounded Hypothesis run posts generated bodies to the POST endpoints:
no 5xx, no answer outside the document."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from werkzeug.wrappers import Response

import kits as kitlib
from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize
from allocator.services.supply import kit_rules
from allocator.web.openapi import document
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, ReadyTrial, make_actor, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
DOC = document()
Call = Callable[..., Response]


def _operation(path: str, method: str) -> tuple[str, dict[str, Any]]:
    """The documented operation matching a concrete API path."""
    relative = path.split("?", 1)[0].removeprefix("/api/v1")
    for template, item in DOC["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, relative) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {relative} is not in the document")


def conforms(response: Response, path: str, method: str, seen: set[tuple[str, str]] | None = None) -> None:
    """Fail unless `response` is a documented answer of the operation at `path`."""
    template, operation = _operation(path, method)
    if seen is not None:
        seen.add((method.lower(), template))
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {template}: {status} is not documented"
    content = operation["responses"][status].get("content", {})
    if response.mimetype not in ("application/json", "application/problem+json"):
        assert not content or response.mimetype in content, (template, status, response.mimetype)
        return
    assert response.mimetype in content, f"{method} {template} {status}: {response.mimetype} not documented"
    schema = content[response.mimetype].get("schema")
    if schema is not None:
        validator = Draft202012Validator({"allOf": [schema], "components": DOC["components"]})
        errors = sorted(validator.iter_errors(response.get_json()), key=str)
        assert not errors, f"{method} {template} {status}: {errors[0].message}"


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx)


def caller(app: Flask, ctx: ServiceContext, username: str, seen: set[tuple[str, str]] | None = None) -> Call:
    token = users.create_token(ctx, CLI_ACTOR, username, "edc").token
    client = app.test_client()

    def call(method: str, path: str, body: object = None, raw: str | None = None) -> Response:
        response = client.open(
            path,
            method=method,
            json=body if raw is None and body is not None else None,
            data=raw,
            content_type="application/json" if raw is not None else None,
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        assert response.status_code < 500, response.get_data(as_text=True)[:300]
        conforms(response, path, method, seen)
        return response

    return call


def test_the_document_itself_is_valid_json_schema() -> None:
    for name, schema in DOC["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name


def test_the_document_is_strict() -> None:
    """Issue 14: every object schema says what else it accepts, so that nothing extra slips by."""
    loose: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
                loose.append(where)
            for key, inner in node.items():
                walk(inner, f"{where}/{key}")
        elif isinstance(node, list):
            for i, inner in enumerate(node):
                walk(inner, f"{where}/{i}")

    walk(DOC, "#")
    assert not loose, loose


def _operations() -> set[tuple[str, str]]:
    return {(method, template) for template, item in DOC["paths"].items() for method in item}


def test_real_answers_match_the_document(app: Flask, ctx: ServiceContext, world: ReadyTrial) -> None:
    """Every operation, called by a role that may call it, answers as documented."""
    seen: set[tuple[str, str]] = set()
    inv = caller(app, ctx, "inv-p1", seen)
    body = {
        "site": "P1",
        "screening_number": "P1-0001",
        "eligibility": ELIGIBLE,
        "strata": {"admission_cause": "septic"},
    }
    created = inv("POST", f"/api/v1/trials/{TRIAL}/subjects", body)
    assert created.status_code == 201
    number = created.get_json()["subject_number"]
    assert inv("POST", f"/api/v1/trials/{TRIAL}/subjects", body).status_code == 409
    assert inv("POST", f"/api/v1/trials/{TRIAL}/subjects", {**body, "arm": "A"}).status_code == 422
    ineligible = {**body, "screening_number": "P1-0002", "eligibility": {**ELIGIBLE, "sofa_24h": 3}}
    assert inv("POST", f"/api/v1/trials/{TRIAL}/subjects", ineligible).status_code == 422
    assert inv("POST", f"/api/v1/trials/{TRIAL}/subjects", raw="[" * 50 + "]" * 50).status_code == 422
    assert inv("GET", "/api/v1/openapi.json").status_code == 200
    assert inv("GET", f"/api/v1/trials/{TRIAL}").status_code == 200
    assert inv("GET", f"/api/v1/trials/{TRIAL}/subjects").status_code == 200
    assert inv("GET", f"/api/v1/trials/{TRIAL}/subjects/{number}").status_code == 200
    assert inv("GET", f"/api/v1/trials/{TRIAL}/subjects/P9-999").status_code == 404
    confirmations = f"/api/v1/trials/{TRIAL}/subjects/{number}/confirmations"
    confirmed = inv("POST", confirmations)
    assert confirmed.status_code == 201
    assert inv("GET", confirmed.get_json()["href"]).status_code == 200
    assert inv("GET", f"{confirmations}/RAND-NONE-1.pdf").status_code == 404
    assert inv("GET", f"/api/v1/trials/{TRIAL}/audit").status_code in (200, 403)
    wrong = {
        "reason_category": "other_medical_emergency",
        "reason": "a serious adverse event",
        "password": "wrong",
    }
    assert inv("POST", f"/api/v1/trials/{TRIAL}/subjects/{number}/unblind", wrong).status_code == 401

    mon = make_actor(ctx, "mon", "monitor")
    monitor = caller(app, ctx, mon.username, seen)
    assert monitor("GET", f"/api/v1/trials/{TRIAL}/audit?limit=5").status_code == 200
    assert monitor("GET", f"/api/v1/trials/{TRIAL}/audit?after=%C2%B2").status_code == 422
    assert monitor("GET", f"/api/v1/trials/{TRIAL}/audit/verify").status_code == 200
    assert monitor("POST", f"/api/v1/trials/{TRIAL}/subjects", body).status_code == 403
    assert monitor("GET", f"/api/v1/trials/{TRIAL}/exports/odm").status_code == 200
    assert monitor("GET", "/api/v1/trials/NO-SUCH").status_code == 404

    first = randomize.randomize(
        ctx,
        world.investigator,
        TRIAL,
        randomize.RandomizationRequest(
            site="P1",
            screening_number="P1-0003",
            eligibility=dict(ELIGIBLE),
            strata={"admission_cause": "septic"},
        ),
        ALL,
    )
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
    pharmacist = caller(app, ctx, "pharm-p1", seen)
    sheets = f"/api/v1/trials/{TRIAL}/subjects/{first.subject_number}/dispensation-sheets"
    printed = pharmacist("POST", sheets)
    assert printed.status_code == 201
    assert pharmacist("GET", printed.get_json()["href"]).status_code == 200
    assert pharmacist("GET", f"{sheets}/DISP-NONE-1.pdf").status_code == 404
    assert (
        pharmacist("POST", f"/api/v1/trials/{TRIAL}/subjects/{number}/dispensation-sheets").status_code == 409
    )

    nurse = caller(app, ctx, "nurse-p1", seen)
    scan = {
        "payload": kitlib.build_payload(TRIAL, kits_of["D1"], "D1", kit_rules.mac(ctx)),
        "subject_number": first.subject_number,
        "day": "D1",
    }
    assert nurse("POST", f"/api/v1/trials/{TRIAL}/scans", scan).status_code == 201
    assert nurse("POST", f"/api/v1/trials/{TRIAL}/scans", scan).status_code == 409
    assert nurse("POST", f"/api/v1/trials/{TRIAL}/scans", {**scan, "payload": "garbage"}).status_code == 422
    # Check, then record (issue 13), through the API as on the bedside page: D2 scanned the day of
    # D1 is a stop that records nothing, until the same scan comes back with a reason.
    early = {
        "payload": kitlib.build_payload(TRIAL, kits_of["D2"], "D2", kit_rules.mac(ctx)),
        "subject_number": first.subject_number,
        "day": "D2",
    }
    stopped = nurse("POST", f"/api/v1/trials/{TRIAL}/scans", early)
    assert stopped.status_code == 409, stopped.get_json()
    problem = stopped.get_json()
    assert problem["type"].endswith("confirmation-needed") and "D2 was planned for" in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == ["confirmation"]
    # Nothing was recorded by the stop: else this would be a 409 already-administered.
    given = nurse("POST", f"/api/v1/trials/{TRIAL}/scans", {**early, "confirmation": "prescribed early"})
    assert given.status_code == 201, given.get_json()
    assert given.get_json()["warnings"] and "D2 was planned for" in given.get_json()["warnings"][0]
    assert nurse("POST", f"/api/v1/trials/{TRIAL}/scans", {**early, "confirmation": 7}).status_code == 422
    assert nurse("GET", f"/api/v1/trials/{TRIAL}/subjects/{first.subject_number}").status_code == 200

    right = {**wrong, "password": GOOD_PASSWORD}
    revealed = inv("POST", f"/api/v1/trials/{TRIAL}/subjects/{number}/unblind", right)
    assert revealed.status_code == 200, revealed.get_json()
    assert seen == _operations(), _operations() - seen


# --- a bounded fuzz run of the POST endpoints ----------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()),  # surrogates, NUL, non-characters included
    max_size=12,
)
_SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_RANDOMIZATION = st.fixed_dictionaries(
    {},
    optional={
        "site": st.sampled_from(["P1", "P2", "S\udfff1", "S0\x001", ""]) | _JSON,
        "screening_number": st.sampled_from(["P1-0100", "P1-\ud800", "P1-\x00"]) | _JSON,
        "eligibility": st.just(dict(ELIGIBLE)) | _JSON,
        "strata": st.just({"admission_cause": "septic"}) | _JSON,
        "arm": _JSON,
    },
)
_SCAN = st.fixed_dictionaries(
    {},
    optional={
        "payload": _TEXT | _JSON,
        "subject_number": st.sampled_from(["P1-001", "P1-\x00", ""]) | _JSON,
        "day": st.sampled_from(["D1", "D2", "D9"]) | _JSON,
        "administered_at": st.sampled_from(["0001-01-01T00:00:00+14:00", "2026-03-02T10:00:00Z", "x"])
        | _JSON,
        "late_reason": _JSON,
        "confirmation": _JSON,
    },
)
_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@_FUZZ
@given(body=_RANDOMIZATION)
def test_fuzzed_randomizations_never_answer_5xx_or_outside_the_document(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, body: dict[str, object]
) -> None:
    caller(app, ctx, "inv-p1")("POST", f"/api/v1/trials/{TRIAL}/subjects", body)


@_FUZZ
@given(body=_SCAN)
def test_fuzzed_scans_never_answer_5xx_or_outside_the_document(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, body: dict[str, object]
) -> None:
    caller(app, ctx, "nurse-p1")("POST", f"/api/v1/trials/{TRIAL}/scans", body)


@_FUZZ
@given(depth=st.integers(0, 20_000), opener=st.sampled_from(["[", '{"a":']))
def test_fuzzed_nesting_never_answers_5xx(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, depth: int, opener: str
) -> None:
    closer = "]" if opener == "[" else "}"
    raw = opener * depth + ("1" if opener != "[" else "") + closer * depth
    caller(app, ctx, "inv-p1")("POST", f"/api/v1/trials/{TRIAL}/subjects", raw=raw)
