"""Issue 14: a bounded schemathesis run over every operation of the served OpenAPI document, each
called with the token of a role that may call it and with path parameters naming real objects,
on each backend of the `db` fixture (SQLite; PostgreSQL too when ALLOCATOR_TEST_DATABASE_URL is
set). Every answer must be no 5xx and conform to the document: status, content type, headers and
body schema. The generated data are valid against the document ("positive" cases), so they reach
the service's own checks; hostile bodies are test_api_contract.py's and test_api_hygiene.py's.

Bounded: `EXAMPLES` cases per operation (about 10 s per backend here); ALLOCATOR_FUZZ_EXAMPLES
raises it for a longer run by hand."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from allocator.permissions import Scope
from allocator.services import dispensing
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.subjects import confirmation
from allocator.web.openapi import document
from tests.support import CLI_ACTOR, ReadyTrial, make_actor, ready_trial
from tests.web.test_api_hygiene import dispensed_subject

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
EXAMPLES = int(os.environ.get("ALLOCATOR_FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SCHEMA = schemathesis.openapi.from_dict(document())

# Who may call each operation (contract.md); the run uses that role's token.
CALLER = {
    "getOpenApi": "inv-p1",
    "getTrial": "inv-p1",
    "listAuditEntries": "mon",
    "verifyAudit": "mon",
    "exportOdm": "mon",
    "randomizeSubject": "inv-p1",
    "listSubjects": "inv-p1",
    "getSubject": "inv-p1",
    "printDispensationSheet": "pharm-p1",
    "getDispensationSheet": "pharm-p1",
    "printConfirmation": "inv-p1",
    "getConfirmation": "inv-p1",
    "emergencyUnblind": "inv-p1",
    "recordScan": "nurse-p1",
}


def _operations() -> list[Any]:
    return [result.ok() for result in SCHEMA.get_all_operations()]


def test_every_operation_has_a_caller() -> None:
    assert {op.definition.raw["operationId"] for op in _operations()} == set(CALLER)


def _fuzz(app: Flask, operation: Any, path_parameters: dict[str, str], headers: dict[str, str]) -> list[int]:
    """Run up to `EXAMPLES` generated cases of one operation (fewer when hypothesis runs out of
    distinct ones); the status of each answer."""
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(path_parameters=path_parameters))
    def run(case: Any) -> None:
        response = case.call(app=app, base_url="https://localhost/api/v1", headers=headers)
        seen.append(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
    return seen


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx)


def test_schemathesis_finds_no_5xx_and_nothing_outside_the_document(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    make_actor(ctx, "mon", "monitor")
    tokens = {
        name: users.create_token(ctx, CLI_ACTOR, name, "fuzz").token for name in sorted(set(CALLER.values()))
    }
    subject, _ = dispensed_subject(ctx, world)
    printed, _ = dispensing.dispensation_sheet(ctx, world.pharmacist, TRIAL, subject, ALL)
    confirmation_id, _ = confirmation.print_confirmation(ctx, world.investigator, TRIAL, subject, ALL)
    path_values = {"trial": TRIAL, "subject": subject, "document": printed}
    statuses: dict[str, set[int]] = {}
    cases: dict[str, int] = {}

    for operation in _operations():
        operation_id = operation.definition.raw["operationId"]
        headers = {"Authorization": f"Bearer {tokens[CALLER[operation_id]]}"}
        wanted = {p.name: path_values[p.name] for p in operation.path_parameters}
        if operation_id == "getConfirmation":
            wanted["document"] = confirmation_id

        answered = _fuzz(app, operation, wanted, headers)
        statuses[operation_id], cases[operation_id] = set(answered), len(answered)

    # Shown with `pytest -s`, for the record of a longer run by hand.
    print(f"\nschemathesis: {sum(cases.values())} cases, per operation {cases}, statuses {statuses}")
    assert set(statuses) == set(CALLER)
    # The tokens and path values were right: no operation answered only 401 or 404.
    assert all(codes - {401, 404} for codes in statuses.values()), statuses
