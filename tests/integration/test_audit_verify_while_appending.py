"""A verification made while entries are appended finds the chain intact (AUD-03).

On PostgreSQL each statement of a read transaction sees its own snapshot, so the chain's head,
read after its entries, has moved on with every commit made meanwhile. Before the head was
compared with entries read again up to it, a page viewed while the sites randomized said
"entries after N are missing (deleted?)": 307 of 316 verifications of a chain appended to
without pause (the reproduction below, the page's verification, 2026-12-07)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from allocator import audit, crypto
from allocator.audit import AuditLog
from allocator.db import Database
from tests.conftest import FreshDatabase
from tests.support import Clock, record_user_updates

CHAIN = "BUSY"


@pytest.fixture
def busy(fresh_database: FreshDatabase, ring: crypto.KeyRing, clock: Clock) -> Iterator[Database]:
    """A chain of 150 entries, and a writer appending one entry per transaction while the test runs."""
    fresh_database.migrate()
    db = Database.connect(fresh_database.url)
    log = AuditLog(ring=ring, checkpoint_every=100)

    def append(count: int) -> None:
        with db.unit_of_work() as session:
            record_user_updates(session, log, CHAIN, count, clock)

    append(150)
    stop = threading.Event()
    writer = threading.Thread(target=lambda: [append(1) for _ in iter(stop.is_set, True)])
    writer.start()
    try:
        yield db
    finally:
        stop.set()
        writer.join()
        db.dispose()


def verifications(db: Database, verify: Callable[[Database], audit.VerifyResult]) -> list[audit.VerifyResult]:
    results = []
    end = time.monotonic() + 2
    while time.monotonic() < end:
        results.append(verify(db))
    return results


@pytest.mark.req("AUD-03")
def test_a_page_verifying_while_entries_are_appended_finds_the_chain_intact(
    busy: Database, ring: crypto.KeyRing, clock: Clock
) -> None:
    def page(db: Database) -> audit.VerifyResult:
        with db.reading() as session:
            return audit.verify_chain_since(session.connection(), ring, CHAIN, None, clock())[0]

    results = verifications(busy, page)
    broken = [r.problems[0].message for r in results if not r.ok]
    assert len(results) >= 5 and broken == [], (len(results), broken[:3])
    assert results[-1].entries > results[0].entries  # entries were appended meanwhile


@pytest.mark.req("AUD-03")
def test_a_whole_verification_while_entries_are_appended_finds_the_chain_intact(
    busy: Database, ring: crypto.KeyRing
) -> None:
    def whole(db: Database) -> audit.VerifyResult:
        with db.read_engine.connect() as connection:
            return audit.verify_chain(connection, ring, CHAIN)

    results = verifications(busy, whole)
    broken = [r.problems[0].message for r in results if not r.ok]
    assert len(results) >= 5 and broken == [], (len(results), broken[:3])
