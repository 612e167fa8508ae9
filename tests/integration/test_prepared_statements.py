"""Issue 16, point 1: on PostgreSQL the hot path's statements are prepared and stay prepared from
one request to the next (read transactions end with COMMIT: a ROLLBACK makes psycopg discard them),
and a connection the server dropped is recovered without a ping per checkout: a read is retried
once on a fresh connection, a write is refused as "busy" (503) and never retried blindly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from psycopg import pq
from psycopg._connection_base import BaseConnection
from sqlalchemy import create_engine, func, select, text
from sqlalchemy import exc as sa_exc

from allocator import crypto
from allocator import db as dbmod
from allocator.app import create_app
from allocator.db import Database, Limits
from allocator.models import ScreeningEntry, Site, Subject
from allocator.permissions import Scope
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize as randomize_service
from allocator.settings import Environment, Settings
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, eligible_on, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())


@dataclass
class Live:
    ctx: ServiceContext
    app: Flask
    db: Database
    url: str


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[Live]:
    if fresh_database.backend != "postgresql":
        pytest.skip("prepared statements and dropped backends are PostgreSQL's")
    fresh_database.migrate()
    settings = Settings(
        env=Environment.TEST,
        database_url=fresh_database.url,
        key_dir=key_dir,
    )
    # One pooled connection and no overflow: every request runs on the same backend.
    db = Database.connect(
        fresh_database.url,
        limits=Limits(
            pool_size=1, max_overflow=0, pool_timeout_s=5, lock_timeout_ms=5_000, statement_timeout_ms=30_000
        ),
    )
    ring = crypto.KeyRing.load(key_dir)
    ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
    app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
    yield Live(ctx, app, db, fresh_database.url)
    db.dispose()


def _body(n: int) -> dict[str, object]:
    return {
        "site": "P1",
        "screening_number": f"P1-{n:04d}",
        "eligibility": eligible_on(datetime.now(UTC).date()),
        "strata": {"admission_cause": "septic"},
    }


def _post(live: Live, token: str, n: int) -> int:
    response = live.app.test_client().post(
        f"/api/v1/trials/{TRIAL}/subjects",
        json=_body(n),
        headers={"Authorization": f"Bearer {token}"},
        base_url="https://localhost",
    )
    return response.status_code


def _prepared(live: Live) -> list[str]:
    with live.db.reading() as s:
        return list(s.execute(text("SELECT statement FROM pg_prepared_statements")).scalars())


def _backend_pid(live: Live) -> int:
    with live.db.reading() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_the_guard_and_allocation_statements_stay_prepared_across_requests(live: Live) -> None:
    ready_trial(live.ctx, kits_per_site=48)
    token = users.create_token(live.ctx, CLI_ACTOR, "inv-p1", "edc").token
    pid = _backend_pid(live)
    for n in range(1, 8):  # psycopg prepares a statement on its 5th run on a connection
        assert _post(live, token, n) == 201
    assert _backend_pid(live) == pid  # the same backend served every request
    statements = _prepared(live)
    # The guard's bearer look-up (a read transaction) and the allocation's trial read and site lock (a write
    # transaction) survived the requests that followed them.
    assert any("api_token" in s and "token_digest" in s for s in statements), statements
    assert any("JOIN site" in s and "FOR UPDATE OF site" in s for s in statements), statements


def test_a_read_transaction_that_wrote_nothing_ends_without_discarding_prepared_statements(
    live: Live,
) -> None:
    for _ in range(6):
        with live.db.reading() as s:
            s.execute(select(func.count()).select_from(Subject)).scalar_one()
    assert any("count(*)" in s.lower() and "subject" in s for s in _prepared(live))


def _kill(live: Live, pid: int) -> None:
    admin = create_engine(live.url)
    try:
        with admin.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        admin.dispose()


def test_a_killed_backend_is_recovered_by_the_next_request(live: Live) -> None:
    ready_trial(live.ctx)
    token = users.create_token(live.ctx, CLI_ACTOR, "inv-p1", "edc").token
    assert _post(live, token, 1) == 201
    pid = _backend_pid(live)
    _kill(live, pid)
    # The guard's read meets the dead connection, is retried once on a fresh one, and the
    # randomization then runs on it: the client sees nothing.
    assert _post(live, token, 2) == 201
    assert _backend_pid(live) != pid


def test_a_write_on_a_killed_backend_is_refused_as_busy_and_writes_nothing(live: Live) -> None:
    ready_trial(live.ctx)
    pid = _backend_pid(live)
    _kill(live, pid)
    request = randomize_service.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=eligible_on(datetime.now(UTC).date()),
        strata={"admission_cause": "septic"},
    )
    with pytest.raises(sa_exc.DBAPIError) as raised:
        randomize_service.randomize(live.ctx, CLI_ACTOR, TRIAL, request, ALL)
    assert raised.value.connection_invalidated
    assert dbmod.is_busy(raised.value)  # 503 with Retry-After, not 500; not retried by the server
    with live.db.reading() as s:  # a fresh connection: nothing was written
        assert s.execute(select(func.count()).select_from(ScreeningEntry)).scalar_one() == 0
    randomize_service.randomize(live.ctx, CLI_ACTOR, TRIAL, request, ALL)


def _commands(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commands psycopg sends on its own (BEGIN, COMMIT, ROLLBACK), in order, from now on."""
    sent: list[str] = []
    real = BaseConnection._exec_command

    def recording(self: BaseConnection[Any], command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(bytes(command).decode() if isinstance(command, bytes | bytearray) else str(command))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(BaseConnection, "_exec_command", recording)
    return sent


def test_the_guard_reads_without_begin_and_commit_and_the_allocation_is_one_transaction(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the guard's two statements ran in a transaction of their own, BEGIN and COMMIT two
    round trips of the fourteen of a randomization, for nothing: under READ COMMITTED each
    statement reads its own snapshot in a transaction too. They now run in autocommit, and the
    allocation on the same pooled connection is still one transaction."""
    ready_trial(live.ctx, kits_per_site=12)
    token = users.create_token(live.ctx, CLI_ACTOR, "inv-p1", "edc").token
    assert _post(live, token, 1) == 201  # the token's first use is written down (a transaction)
    sent = _commands(monkeypatch)
    assert _post(live, token, 2) == 201
    assert [c.split()[0] for c in sent] == ["BEGIN", "COMMIT"], sent


def test_an_autocommit_read_leaves_the_pooled_connection_in_transactions(live: Live) -> None:
    with live.db.reading(autocommit=True) as s:
        s.execute(text("SELECT 1")).scalar_one()
        driver = s.connection().connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status == pq.TransactionStatus.IDLE  # no BEGIN was sent
    with live.db.reading() as s:
        s.execute(text("SELECT 1")).scalar_one()
        assert s.connection().connection.driver_connection is driver  # the one pooled connection
        assert driver is not None and driver.info.transaction_status == pq.TransactionStatus.INTRANS
    # A unit of work on that connection that fails writes nothing: it was a transaction.
    with pytest.raises(ZeroDivisionError), live.db.unit_of_work() as s:
        s.execute(text("CREATE TEMPORARY TABLE probe (x integer)"))
        raise ZeroDivisionError
    with live.db.reading() as s:
        assert s.execute(text("SELECT to_regclass('pg_temp.probe')")).scalar_one() is None


def test_an_autocommit_read_refuses_to_flush_and_writes_nothing(live: Live) -> None:
    ready_trial(live.ctx)
    with pytest.raises(RuntimeError, match="autocommit cannot write"), live.db.reading(autocommit=True) as s:
        site = s.execute(select(Site).where(Site.code == "P1")).scalar_one()
        site.status = "closed"
        s.flush()
    with live.db.reading() as s:
        assert s.execute(select(Site.status).where(Site.code == "P1")).scalar_one() != "closed"
