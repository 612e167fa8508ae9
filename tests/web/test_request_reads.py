"""Issue 16: what a randomization through the API reads beyond the allocation itself. The request
guard reads the trial of the URL (with the digest of its definition in force) once; the API then
asked the database again whether the trial registers or randomizes (issue 20's cohort), about
1.2 ms of a randomization's CPU. The trial was then read twice per randomization: by the guard and
in the allocation's own transaction, in a randomized trial and in a cohort. Since the database
lock's race was closed (tests/integration/test_lock_race.py), the unit of work reads the trial's
status a second time with its row held key-share, so that a record is either committed before the
lock or refused after it: in the randomization, inside the statement it already ran under its
site's lock (no statement more); in a registration, by a statement of its own (`require_open`)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from sqlalchemy import event

from allocator.services.context import ServiceContext
from tests.support import COHORT, COHORT_ELIGIBLE, ELIGIBLE, ready_cohort, ready_trial
from tests.web.test_api_contract import caller

# A statement that reads the trial's row (FROM trial / JOIN trial), not one that only refers to it.
TRIAL_READ = re.compile(r"\b(FROM|JOIN)\s+trial\b(?!_)", re.I)


def _trial_reads(ctx: ServiceContext, call: object) -> int:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") or "WITH" in statement[:10].upper():
            seen.append(statement)

    engine = ctx.db.write_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        call()  # type: ignore[operator]
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return sum(1 for statement in seen if TRIAL_READ.search(statement))


@pytest.mark.req("RND-06")
def test_a_randomization_through_the_api_reads_its_trial_three_times(app: Flask, ctx: ServiceContext) -> None:
    ready_trial(ctx)
    call = caller(app, ctx, "inv-p1")
    body = {"site": "P1", "eligibility": dict(ELIGIBLE), "strata": {"admission_cause": "septic"}}
    path = "/api/v1/trials/IFNG-PAIS/subjects"
    assert call("POST", path, {**body, "screening_number": "P1-0001"}).status_code == 201  # warm-up

    def second() -> None:
        assert call("POST", path, {**body, "screening_number": "P1-0002"}).status_code == 201

    assert _trial_reads(ctx, second) == 3


@pytest.mark.req("RND-06")
def test_a_registration_through_the_api_reads_its_trial_three_times(app: Flask, ctx: ServiceContext) -> None:
    ready_cohort(ctx)
    call = caller(app, ctx, "inv-l1")
    answers = {**COHORT_ELIGIBLE, "age": 58, "lactate": 3.4}
    path = f"/api/v1/trials/{COHORT}/subjects"
    first = call("POST", path, {"site": "L1", "screening_number": "L1-0001", "eligibility": answers})
    assert first.status_code == 201

    def second() -> None:
        created = call("POST", path, {"site": "L1", "screening_number": "L1-0002", "eligibility": answers})
        assert created.status_code == 201

    assert _trial_reads(ctx, second) == 3
