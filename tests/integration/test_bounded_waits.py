"""Issue 14, bounded waits: a randomization that meets a site row lock held by a hung transaction
answers 503 with Retry-After within the configured lock timeout and writes nothing; the pool and
the server's max_connections are checked before serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text
from sqlalchemy import exc as sa_exc

from allocator import crypto
from allocator import db as dbmod
from allocator.app import create_app
from allocator.db import Database, Limits
from allocator.models import AuditEvent, ScreeningEntry, Subject
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, eligible_on, ready_trial

TRIAL = "IFNG-PAIS"
LOCK_TIMEOUT_MS = 700


@dataclass
class Live:
    ctx: ServiceContext
    app: Flask
    url: str


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[Live]:
    if fresh_database.backend != "postgresql":
        pytest.skip("lock_timeout is PostgreSQL's; SQLite's busy timeout bounds its waits")
    fresh_database.migrate()
    settings = Settings(
        env=Environment.TEST,
        database_url=fresh_database.url,
        key_dir=key_dir,
        db_lock_timeout_ms=LOCK_TIMEOUT_MS,
    )
    db = Database.connect(fresh_database.url, limits=settings.db_limits())
    ring = crypto.KeyRing.load(key_dir)
    ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
    app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
    yield Live(ctx, app, fresh_database.url)
    db.dispose()


def _counts(ctx: ServiceContext) -> tuple[int, int, int]:
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(Subject)).scalar_one(),
            s.execute(select(func.count()).select_from(ScreeningEntry)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


def test_a_held_site_lock_gives_503_within_the_timeout_and_writes_nothing(live: Live) -> None:
    from datetime import UTC, datetime

    ready_trial(live.ctx)
    token = users.create_token(live.ctx, CLI_ACTOR, "inv-p1", "edc").token
    body = {
        "site": "P1",
        "screening_number": "P1-0001",
        "eligibility": eligible_on(datetime.now(UTC).date()),
        "strata": {"admission_cause": "septic"},
    }
    client = live.app.test_client()

    def post() -> tuple[int, dict[str, object], dict[str, str], float]:
        started = time.monotonic()
        response = client.post(
            f"/api/v1/trials/{TRIAL}/subjects",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        return response.status_code, response.get_json(), dict(response.headers), time.monotonic() - started

    before = _counts(live.ctx)
    holder = create_engine(live.url)
    try:
        with holder.connect() as conn, conn.begin():
            conn.execute(text("SELECT id FROM site WHERE code = 'P1' FOR UPDATE"))  # a hung transaction
            status, problem, headers, elapsed = post()
            assert status == 503, problem
            assert problem["type"] == "urn:allocator:problem:database-busy"
            assert headers["Content-Type"].startswith("application/problem+json")
            assert int(headers["Retry-After"]) >= 1
            assert LOCK_TIMEOUT_MS / 1000 <= elapsed < LOCK_TIMEOUT_MS / 1000 + 5
            assert _counts(live.ctx) == before  # nothing half-written
    finally:
        holder.dispose()
    status, created, _, _ = post()  # the lock released, the same request succeeds
    assert status == 201, created


def test_is_busy_tells_a_timeout_from_a_bug() -> None:
    class Orig(Exception):
        def __init__(self, sqlstate: str | None, message: str = "") -> None:
            super().__init__(message)
            self.sqlstate = sqlstate

    def wrapped(orig: Exception) -> sa_exc.DBAPIError:
        return sa_exc.OperationalError("SELECT 1", {}, orig)

    assert dbmod.is_busy(wrapped(Orig("55P03")))  # lock_timeout
    assert dbmod.is_busy(wrapped(Orig("57014")))  # statement_timeout
    assert dbmod.is_busy(wrapped(Orig("40P01")))  # deadlock victim
    assert dbmod.is_busy(wrapped(Orig(None, "database is locked")))  # SQLite busy timeout
    assert dbmod.is_busy(sa_exc.TimeoutError("QueuePool limit reached"))
    assert not dbmod.is_busy(wrapped(Orig("23505")))  # a unique violation is a bug, not a wait
    assert not dbmod.is_busy(ValueError("x"))


def test_the_pool_is_derived_from_threads_and_checked_against_max_connections() -> None:
    settings = Settings()
    assert settings.db_limits(threads=4).connections == 8
    assert Settings(db_pool_size=10).db_limits(threads=4).connections == 20
    limits = settings.db_limits(threads=4)
    assert dbmod.connection_budget_problem(workers=10, limits=limits, max_connections=100, reserved=3) is None
    problem = dbmod.connection_budget_problem(workers=33, limits=limits, max_connections=100, reserved=3)
    assert problem is not None and "33 workers" in problem and "max_connections" in problem


def test_the_server_reports_its_connection_limit(fresh_database: FreshDatabase) -> None:
    if fresh_database.backend != "postgresql":
        pytest.skip("PostgreSQL only")
    max_connections, reserved = dbmod.server_connection_limit(fresh_database.url)
    assert max_connections >= 1 and 0 <= reserved < max_connections
    assert isinstance(Limits(1, 1, 1.0, 1, 1).connections, int)


def test_serve_refuses_more_connections_than_the_server_allows(
    fresh_database: FreshDatabase, key_dir: Path
) -> None:
    from click.testing import CliRunner

    from allocator.cli import main

    if fresh_database.backend != "postgresql":
        pytest.skip("PostgreSQL only")
    fresh_database.migrate()
    env = {
        "ALLOCATOR_DATABASE_URL": fresh_database.url,
        "ALLOCATOR_KEY_DIR": str(key_dir),
        "ALLOCATOR_ENV": "test",
    }
    result = CliRunner().invoke(main, ["serve", "--workers", "1000"], env=env)
    assert result.exit_code == 2, result.output
    assert "1000 workers" in result.output and "max_connections" in result.output
