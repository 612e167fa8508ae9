"""Issue 14, idempotent retries: a POST sent with an Idempotency-Key is done once; its answer is
stored with the action and replayed to a retry, even when the first answer was lost after the
commit; the same key with another body is a 422; without a key, a repeated randomization tells its
own investigator the subject number it got."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.wrappers import Response

import kits as kitlib
from allocator import crypto
from allocator.app import create_app
from allocator.db import Database
from allocator.models import Administration, AuditEvent, IdempotentRequest, ScreeningEntry, Subject
from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize
from allocator.services.supply import kit_rules
from allocator.settings import Environment, Settings
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, ReadyTrial, eligible_on, make_actor, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SUBJECTS = f"/api/v1/trials/{TRIAL}/subjects"
BODY = {
    "site": "P1",
    "screening_number": "P1-0001",
    "eligibility": dict(ELIGIBLE),
    "strata": {"admission_cause": "septic"},
}
Post = Callable[..., Response]


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx)


def poster(app: Flask, ctx: ServiceContext, username: str) -> Post:
    token = users.create_token(ctx, CLI_ACTOR, username, "edc").token
    client = app.test_client()

    def post(path: str, body: object, key: str | None = None) -> Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return client.post(path, json=body, headers=headers, base_url="https://localhost")

    return post


def count(ctx: ServiceContext, model: type[object]) -> int:
    with ctx.db.reading() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def test_a_retry_with_the_same_key_gets_the_same_answer_and_does_nothing_twice(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    post = poster(app, ctx, "inv-p1")
    first = post(SUBJECTS, BODY, key="9b2f6c1e-retry")
    assert first.status_code == 201
    audited = count(ctx, AuditEvent)
    again = post(SUBJECTS, BODY, key="9b2f6c1e-retry")
    assert again.status_code == 201 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(ctx, Subject) == 1 and count(ctx, AuditEvent) == audited


def test_a_lost_answer_after_the_commit_is_recovered_by_retrying(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """The connection dies after the commit and before the answer reaches the client (simulated:
    the response is discarded after the handler returned, once). The retry gets the original 201."""
    lost: list[bytes] = []

    @app.after_request
    def drop_the_first_answer(response: Response) -> Response:
        if response.status_code == 201 and not lost:
            lost.append(response.get_data())
            raise ConnectionAbortedError("the client's connection was killed")
        return response

    post = poster(app, ctx, "inv-p1")
    broken = post(SUBJECTS, BODY, key="edc-visit-42")
    assert broken.status_code == 500 and lost  # the client saw no 201 ...
    assert count(ctx, Subject) == 1  # ... but the randomization was committed
    retry = post(SUBJECTS, BODY, key="edc-visit-42")
    assert retry.status_code == 201 and retry.get_data() == lost[0]
    with ctx.db.reading() as s:
        number = s.execute(select(Subject.subject_number)).scalar_one()
    assert retry.get_json()["subject_number"] == number and count(ctx, Subject) == 1


def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    post = poster(app, ctx, "inv-p1")
    assert post(SUBJECTS, BODY, key="k-1").status_code == 201
    other = post(SUBJECTS, {**BODY, "screening_number": "P1-0002"}, key="k-1")
    assert other.status_code == 422
    assert other.get_json()["errors"] == [
        {"field": "Idempotency-Key", "message": "already used with another body or path; use a new key"}
    ]
    assert count(ctx, Subject) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "a b"])
def test_a_malformed_key_is_refused(app: Flask, ctx: ServiceContext, world: ReadyTrial, key: str) -> None:
    response = poster(app, ctx, "inv-p1")(SUBJECTS, BODY, key=key)
    assert response.status_code == 422 and response.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert count(ctx, Subject) == 0


def test_a_refusal_is_replayed_too_and_screened_once(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    post = poster(app, ctx, "inv-p1")
    ineligible = {**BODY, "eligibility": {**ELIGIBLE, "sofa_24h": 3}}
    first = post(SUBJECTS, ineligible, key="k-ineligible")
    assert first.status_code == 422 and first.mimetype == "application/problem+json"
    again = post(SUBJECTS, ineligible, key="k-ineligible")
    assert again.status_code == 422 and again.get_json() == first.get_json()
    assert count(ctx, ScreeningEntry) == 1


def test_a_scan_retried_with_its_key_is_recorded_once(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
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
    scan = {
        "payload": kitlib.build_payload(TRIAL, kits_of["D1"], "D1", kit_rules.mac(ctx)),
        "subject_number": first.subject_number,
        "day": "D1",
    }
    post = poster(app, ctx, "nurse-p1")
    answers = [post(f"/api/v1/trials/{TRIAL}/scans", scan, key="scan-1") for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[1].get_json() == answers[0].get_json() == answers[2].get_json()
    assert count(ctx, Administration) == 1


def test_without_a_key_the_409_names_the_subject_to_its_own_investigator(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    post = poster(app, ctx, "inv-p1")
    created = post(SUBJECTS, BODY).get_json()
    repeated = post(SUBJECTS, BODY)
    problem = repeated.get_json()
    assert repeated.status_code == 409 and problem["type"] == "urn:allocator:problem:already-randomized"
    assert problem["subject_number"] == created["subject_number"]
    make_actor(ctx, "inv-p1b", "investigator", site="P1")
    colleague = poster(app, ctx, "inv-p1b")(SUBJECTS, BODY)
    assert colleague.status_code == 409 and "subject_number" not in colleague.get_json()


def test_against_a_committed_database_the_answer_commits_with_the_action(
    fresh_database: FreshDatabase, key_dir: Path
) -> None:
    """The same, outside the suite's rolled-back transaction: the production path of
    Database.shared_transaction (BEGIN IMMEDIATE on SQLite, a real commit on PostgreSQL)."""
    from datetime import UTC, datetime

    fresh_database.migrate()
    settings = Settings(env=Environment.TEST, database_url=fresh_database.url, key_dir=key_dir)
    db = Database.connect(fresh_database.url, limits=settings.db_limits())
    ring = crypto.KeyRing.load(key_dir)
    try:
        live = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
        app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
        ready_trial(live)
        post = poster(app, live, "inv-p1")
        body = {**BODY, "eligibility": eligible_on(datetime.now(UTC).date())}
        first = post(SUBJECTS, body, key="live-1")
        assert first.status_code == 201, first.get_json()
        again = post(SUBJECTS, body, key="live-1")
        assert again.status_code == 201 and again.get_json() == first.get_json()
        assert count(live, Subject) == 1 and count(live, IdempotentRequest) == 1
        busy = post(SUBJECTS, {**body, "screening_number": "P1-0002"}, key="live-1")
        assert busy.status_code == 422 and count(live, Subject) == 1
    finally:
        db.dispose()


# --- the emergency unblinding (its answer reveals the arm) ------------------------------------------


def _randomized(ctx: ServiceContext, world: ReadyTrial) -> str:
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0009",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    return randomize.randomize(ctx, world.investigator, TRIAL, request, ALL).subject_number


def _actions(ctx: ServiceContext) -> list[str]:
    with ctx.db.reading() as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


def test_an_unblinding_replayed_with_its_key_is_read_again_not_unblinded_twice(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    from allocator.models import Unblinding

    number = _randomized(ctx, world)
    path = f"/api/v1/trials/{TRIAL}/subjects/{number}/unblind"
    body = {
        "reason_category": "other_medical_emergency",
        "reason": "anaphylaxis in the ICU",
        "password": GOOD_PASSWORD,
    }
    post = poster(app, ctx, "inv-p1")
    first = post(path, body, key="unblind-1")
    assert first.status_code == 200, first.get_json()
    arm = first.get_json()["arm"]
    before = len(_actions(ctx))

    again = post(path, body, key="unblind-1")
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Cache-Control"] == "no-store"
    assert count(ctx, Unblinding) == 1
    assert _actions(ctx)[before:] == ["arm.read"]  # no second unblinding, signature or notice

    with ctx.db.reading() as s:
        stored = s.execute(select(IdempotentRequest)).scalar_one()
    assert stored.status == 200 and stored.body is not None
    label = first.get_json()["arm_label"]
    assert '"arm"' not in stored.body and label not in stored.body  # sealed, never in clear
    sealed = base64.b64decode(stored.body)
    # The arm as the JSON holds it, not the three bytes '"A"', which random ciphertext holds by chance.
    assert label.encode() not in sealed
    assert not any(f'"arm"{gap}"{arm}"'.encode() in sealed for gap in (":", ": "))
    assert GOOD_PASSWORD not in stored.body and GOOD_PASSWORD not in stored.fingerprint

    wrong = post(path, {**body, "password": "not the password"}, key="unblind-1")
    assert wrong.status_code == 401 and "arm" not in (wrong.get_json() or {})
    assert _actions(ctx)[-1] == "signature.failed"

    other = post(path, {**body, "reason": "another reason entirely"}, key="unblind-1")
    assert other.status_code == 422
    assert [e["field"] for e in other.get_json()["errors"]] == ["Idempotency-Key"]
    assert count(ctx, Unblinding) == 1


def test_a_refused_unblinding_is_not_stored_and_its_retry_runs_afresh(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    number = _randomized(ctx, world)
    path = f"/api/v1/trials/{TRIAL}/subjects/{number}/unblind"
    body = {
        "reason_category": "other_medical_emergency",
        "reason": "anaphylaxis in the ICU",
        "password": "wrong",
    }
    post = poster(app, ctx, "inv-p1")
    assert post(path, body, key="unblind-2").status_code == 401
    assert _actions(ctx)[-1] == "signature.failed"  # the refusal is audited all the same
    assert count(ctx, IdempotentRequest) == 0
    assert post(path, {**body, "password": GOOD_PASSWORD}, key="unblind-2").status_code == 200
