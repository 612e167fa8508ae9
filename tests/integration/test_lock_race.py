"""The database lock against a randomization running at the same time, on a committed PostgreSQL
database (a closing note of 2026-12-06: "a randomization that waited on the site's lock sees the
trial's status from before its wait").

A randomization reads the trial and locks its site's row in one statement; on PostgreSQL (READ
COMMITTED) a statement that waits for a row lock still reads the other rows as of its own start.
So a randomization that waited while the trial was locked went on with the status it had read
before the wait ("active") and randomized a subject into a locked trial; and the lock itself
waited for no randomization, so one already past its reads committed after the lock.

Now the status change takes the row of every site of the trial first (it waits for the
randomizations in progress, which then come before it in every order), and a randomization reads
the trial's status again once it holds its site (after any wait)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from allocator.models import Site, Subject, Trial, TrialStatus
from allocator.services import signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialLocked
from allocator.services.subjects import randomize as subjects_randomize
from tests.conftest import FreshDatabase
from tests.support import ALL_SITES, GOOD_PASSWORD, TRIAL, committed_context, eligible_on, person, ready_trial

pytestmark = pytest.mark.slow


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    with committed_context(fresh_database.url, key_dir, pool_size=4) as ctx:
        yield ctx


def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("row locks and per-statement snapshots are PostgreSQL's (SQLite serializes writers)")


def _waiting(ctx: ServiceContext, seconds: float = 10.0) -> bool:
    """Whether another connection of the test's database waits for a row lock (polled)."""
    deadline = time.monotonic() + seconds
    with ctx.db.write_engine.connect() as probe:
        while time.monotonic() < deadline:
            waits = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            probe.rollback()
            if waits:
                return True
            time.sleep(0.05)
    return False


def _subjects(ctx: ServiceContext) -> int:
    with ctx.db.write_engine.connect() as probe:
        return probe.execute(select(func.count()).select_from(Subject)).scalar_one()


@pytest.mark.req("UNB-10")
def test_a_randomization_that_waited_while_the_trial_was_locked_is_refused(
    live: ServiceContext, backend: str
) -> None:
    _postgresql_only(backend)
    ready = ready_trial(live)
    engine = live.db.write_engine
    outcome: dict[str, object] = {}

    def randomize() -> None:
        try:
            request = subjects_randomize.RandomizationRequest(
                site="P1",
                screening_number="P1-0901",
                eligibility=eligible_on(datetime.now(UTC).date()),  # the service runs on the real clock
                strata={"admission_cause": "septic"},
            )
            outcome["subject"] = subjects_randomize.randomize(
                live, ready.investigator, TRIAL, request, ALL_SITES
            )
        except Exception as exc:
            outcome["error"] = exc

    with engine.connect() as lock:  # a database lock in progress: it holds the site, then the trial
        lock.execute(select(Site.id).where(Site.code == "P1").with_for_update())
        lock.execute(
            Trial.__table__.update().where(Trial.code == TRIAL).values(status=TrialStatus.LOCKED.value)
        )
        worker = threading.Thread(target=randomize)
        worker.start()
        assert _waiting(live), "the randomization did not wait for the site's row"
        lock.commit()  # the lock commits while the randomization waits
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), TrialLocked), outcome
    assert _subjects(live) == 0  # nothing randomized into the locked trial


@pytest.mark.req("UNB-10")
def test_the_database_lock_waits_for_a_randomization_in_progress(live: ServiceContext, backend: str) -> None:
    _postgresql_only(backend)
    ready_trial(live)
    manager = person(live, "tman-lock", "trial_manager")
    engine = live.db.write_engine
    outcome: dict[str, object] = {}

    def lock_the_database() -> None:
        try:
            outcome["step"] = state.lock(
                live,
                manager,
                TRIAL,
                reason="last patient's last visit",
                signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
            )
        except Exception as exc:
            outcome["error"] = exc

    with engine.connect() as randomizing:  # a randomization in progress holds its site's row
        randomizing.execute(select(Site.id).where(Site.code == "P2").with_for_update())
        worker = threading.Thread(target=lock_the_database)
        worker.start()
        assert _waiting(live), "the lock did not wait for the randomization in progress"
        assert worker.is_alive() and not outcome
        with engine.connect() as probe:
            status = probe.execute(select(Trial.status).where(Trial.code == TRIAL)).scalar_one()
        assert status == TrialStatus.ACTIVE.value
        randomizing.rollback()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome.get("error")
    with engine.connect() as probe:
        status = probe.execute(select(Trial.status).where(Trial.code == TRIAL)).scalar_one()
    assert status == TrialStatus.LOCKED.value
