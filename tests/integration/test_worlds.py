"""The suite's replayed worlds (tests/support/worlds.py) are the worlds a real build makes: same
rows, same result, same clock, an audit trail that verifies, and a database that keeps working."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from allocator import audit, crypto
from allocator.db import Database
from allocator.services import lookups
from allocator.services.context import ServiceContext
from allocator.settings import Settings
from tests.conftest import FreshDatabase
from tests.support import Clock, ReadyTrial, build_ready_trial, load_ifn, make_user, worlds


def _built(ctx: ServiceContext) -> ReadyTrial:
    ctx.clock.advance(hours=2)  # type: ignore[attr-defined]  # a builder may move the clock
    return build_ready_trial(ctx, kits_per_site=4, slots_text=None)


@pytest.fixture
def second(
    fresh_database: FreshDatabase, settings: Settings, ring: crypto.KeyRing
) -> Iterator[ServiceContext]:
    """Another empty database (committing for real), with a clock at the same start."""
    fresh_database.migrate()
    database = Database.connect(fresh_database.url)
    try:
        yield ServiceContext.build(
            dataclasses.replace(settings, database_url=fresh_database.url),
            database,
            ring,
            clock=Clock(),
            passwords=crypto.FAST_PASSWORD_HASHING,
        )
    finally:
        database.write_engine.dispose()
        database.read_engine.dispose()


def _everything(ctx: ServiceContext) -> worlds.Rows:
    with ctx.db.reading() as session:
        return worlds.read_all(session)


def test_a_replay_copies_every_row_the_result_and_the_clock(
    ctx: ServiceContext, clock: Clock, second: ServiceContext
) -> None:
    name = f"self-check-{uuid.uuid4().hex}"  # never recorded before in this process
    built = worlds.replayed(ctx, name, _built)
    replays = worlds.stats["replayed"]
    again = worlds.replayed(second, name, _built)
    assert worlds.stats["replayed"] == replays + 1
    assert again == built and again is not built
    assert second.clock() == clock() == Clock().current.replace(hour=11)
    rows = _everything(second)
    assert sum(len(r) for r in rows.values()) > 100
    assert rows == _everything(ctx)
    with second.db.reading() as session:
        connection = session.connection()
        for chain in audit.chains(connection):
            assert audit.verify_chain(connection, second.ring, chain).ok, chain
    # New rows get new ids after the copied ones (PostgreSQL: the sequences were moved).
    make_user(second, "after-the-replay", "monitor")


def test_a_database_that_is_not_in_the_recorded_state_gets_a_real_build(
    ctx: ServiceContext, second: ServiceContext
) -> None:
    name = f"self-check-{uuid.uuid4().hex}"  # never recorded before in this process
    worlds.replayed(ctx, name, _built)
    make_user(second, "already-there", "admin")
    builds, replays = worlds.stats["built"], worlds.stats["replayed"]
    worlds.replayed(second, name, _built)
    assert (worlds.stats["built"], worlds.stats["replayed"]) == (builds + 1, replays)


def test_a_build_that_changes_an_existing_row_is_never_replayed(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    name = f"self-check-{uuid.uuid4().hex}"  # never recorded before in this process

    def renames(c: ServiceContext) -> None:
        with c.db.unit_of_work() as session:
            trial = lookups.get_trial(session, "IFNG-PAIS")
            trial.title = trial.title + " (renamed)"

    worlds.replayed(ctx, name, renames)
    assert worlds.recorded(name) == [False]
