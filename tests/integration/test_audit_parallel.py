"""`allocator audit verify` hashes long chains in several processes; it must find exactly what the
single-process verifier finds, including damage that straddles the boundary between two ranges."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from allocator import audit, crypto
from allocator.audit import AuditLog
from allocator.db import Database
from tests.conftest import FreshDatabase
from tests.support import Clock, record_user_updates, tamper

CHAIN = "PAR"
ENTRIES = 450  # three workers: ranges 1-150, 151-300, 301-450


@pytest.fixture
def chain_db(fresh_database: FreshDatabase, ring: crypto.KeyRing, clock: Clock) -> Iterator[Database]:
    fresh_database.migrate()
    db = Database.connect(fresh_database.url)
    log = AuditLog(ring=ring, checkpoint_every=100)
    with db.unit_of_work() as session:
        record_user_updates(session, log, CHAIN, ENTRIES, clock)
    yield db
    db.dispose()


def both(db: Database, ring: crypto.KeyRing) -> tuple[audit.VerifyResult, audit.VerifyResult]:
    with db.read_engine.connect() as conn:
        single = audit.verify_chain(conn, ring, CHAIN)
    return single, audit.verify_chain_parallel(db.url, ring, CHAIN, workers=3)


@pytest.mark.req("AUD-03")
@pytest.mark.parametrize(
    ("statements", "first_bad"),
    [
        ((), None),
        (("UPDATE audit_event SET object_id = 'x' WHERE seq = 151",), 151),
        (("DELETE FROM audit_event WHERE seq = 151",), 151),
        (("DELETE FROM audit_event WHERE seq = 150",), 150),
        (
            (
                "UPDATE audit_event SET seq = -1 WHERE seq = 150",
                "UPDATE audit_event SET seq = 150 WHERE seq = 151",
                "UPDATE audit_event SET seq = 151 WHERE seq = -1",
            ),
            150,
        ),
        (("DELETE FROM audit_event WHERE seq = 450",), 450),
    ],
    ids=[
        "intact",
        "altered-at-boundary",
        "deleted-first-of-range",
        "deleted-last-of-range",
        "swapped-across",
        "tail",
    ],
)
def test_parallel_and_single_verifiers_agree(
    chain_db: Database, ring: crypto.KeyRing, statements: tuple[str, ...], first_bad: int | None
) -> None:
    if statements:
        tamper(chain_db, "audit_event", *statements)
    single, parallel = both(chain_db, ring)
    assert (single.ok, single.first_bad) == (first_bad is None, first_bad)
    assert (parallel.ok, parallel.first_bad) == (first_bad is None, first_bad)
    assert parallel.entries == single.entries
    # Where a later verification may start (issue 21): the last checkpoint, for an intact chain only.
    assert parallel.resume == single.resume
    assert (single.resume is not None and single.resume[0] == 401) == (first_bad is None)
