"""The database lock against a randomization running at the same time, on a committed PostgreSQL
database (a closing note of 2026-12-06: "a randomization that waited on the site's lock sees the
trial's status from before its wait").

A randomization reads the trial and locks its site's row in one statement; on PostgreSQL (READ
COMMITTED) a statement that waits for a row lock still reads the other rows as of its own start,
and nothing made the lock wait for a randomization that had read the trial "active": reproduced
here before the fix, a randomization paused after its first statement while the lock was signed
went on and randomized a subject into the locked trial.

Now the randomization's next statement, under its site's lock, reads the trial's status again and
locks the trial's row FOR KEY SHARE (the lock its inserts take anyway) until it commits; the lock
takes the trial's row FOR UPDATE. Either the randomization holds its key-share lock first and the
database lock waits for it to commit, or the lock holds the row first and the randomization waits,
then reads "locked" and is refused. A first version of the fix had the lock take every site's row
too: the review of this change found it deadlocked with a batch-expiry change (its signature's
insert holds a key-share lock on the trial, then resupply locks a site), kept below."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from allocator.models import Dispensation, Subject, Trial, TrialStatus
from allocator.services import codebreak, dispensing, signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialLocked
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.supply import kit_lists, kit_status, resupply
from tests.conftest import FreshDatabase
from tests.integration.test_resupply import LEVELS, activate, deliver, world
from tests.support import (
    ALL_SITES,
    CLI_ACTOR,
    GOOD_PASSWORD,
    TRIAL,
    ReadyTrial,
    code_break_sheets,
    committed_context,
    person,
    randomized_now,
    ready_trial,
    waiting_for_a_row_lock,
)

pytestmark = pytest.mark.slow
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    with committed_context(fresh_database.url, key_dir, pool_size=4) as ctx:
        yield ctx


def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("row locks and per-statement snapshots are PostgreSQL's (SQLite serializes writers)")


def _subjects(ctx: ServiceContext) -> int:
    with ctx.db.write_engine.connect() as probe:
        return probe.execute(select(func.count()).select_from(Subject)).scalar_one()


def _status(ctx: ServiceContext) -> str:
    with ctx.db.write_engine.connect() as probe:
        return probe.execute(select(Trial.status).where(Trial.code == TRIAL)).scalar_one()


def _randomizing(
    ctx: ServiceContext, outcome: dict[str, object], ready: ReadyTrial | None = None
) -> threading.Thread:
    """A randomization at P1 in a thread of its own, its outcome (or error) put in `outcome`."""
    ready = ready or ready_trial(ctx)

    def run() -> None:
        try:
            outcome["subject"] = randomized_now(ctx, ready, "P1-0901")
        except Exception as exc:
            outcome["error"] = exc

    return threading.Thread(target=run)


def _lock(ctx: ServiceContext, outcome: dict[str, object]) -> threading.Thread:
    """The trial manager's signed database lock in a thread of its own."""
    manager = person(ctx, "tman-lock", "trial_manager")

    def run() -> None:
        try:
            outcome["step"] = state.lock(
                ctx, manager, TRIAL, reason="last patient's last visit", signature=SIGNED
            )
        except Exception as exc:
            outcome["error"] = exc

    return threading.Thread(target=run)


def _paused_before(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str
) -> tuple[threading.Event, threading.Event]:
    """Pause the thread that calls `module.name` just before the call. Returns (reached, go)."""
    reached, go = threading.Event(), threading.Event()
    real = getattr(module, name)

    def paused(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        assert go.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, paused)
    return reached, go


def _paused_after_the_site(
    monkeypatch: pytest.MonkeyPatch, *, before_the_trial: bool
) -> tuple[threading.Event, threading.Event]:
    """Pause a randomization holding its site's row: just before (or just after) the statement that
    reads the trial's status again. Returns (reached, go)."""
    reached, go = threading.Event(), threading.Event()
    real = subjects_randomize._SCREENING_TAKEN_AND_SITE_SUBJECTS

    class Paused:
        def one(self, connection: Any, params: Any) -> Any:
            if before_the_trial:
                reached.set()
                assert go.wait(30)
                return real.one(connection, params)
            row = real.one(connection, params)
            reached.set()
            assert go.wait(30)
            return row

    monkeypatch.setattr(subjects_randomize, "_SCREENING_TAKEN_AND_SITE_SUBJECTS", Paused())
    return reached, go


@pytest.mark.req("UNB-10")
def test_a_randomization_that_had_read_the_trial_active_is_refused_once_the_lock_is_signed(
    live: ServiceContext, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race as it happens: the randomization holds its site and has read "active"; the lock is
    signed and committed; the randomization goes on. Before the fix it randomized P1-001."""
    _postgresql_only(backend)
    randomized: dict[str, object] = {}
    locked: dict[str, object] = {}
    randomization = _randomizing(live, randomized)
    lock = _lock(live, locked)
    reached, go = _paused_after_the_site(monkeypatch, before_the_trial=True)
    randomization.start()
    assert reached.wait(30)
    lock.start()
    lock.join(timeout=30)
    assert not lock.is_alive() and "error" not in locked, locked.get("error")  # nothing to wait for
    go.set()
    randomization.join(timeout=30)
    assert isinstance(randomized.get("error"), TrialLocked), randomized
    assert _subjects(live) == 0 and _status(live) == TrialStatus.LOCKED.value


@pytest.mark.req("UNB-10")
def test_a_randomization_that_asks_for_the_trial_during_the_lock_waits_and_is_refused(
    live: ServiceContext, backend: str
) -> None:
    """The lock holds the trial's row (its status changed, not committed yet) when the
    randomization reads the status again: it waits, then reads "locked"."""
    _postgresql_only(backend)
    randomized: dict[str, object] = {}
    randomization = _randomizing(live, randomized)
    with live.db.write_engine.connect() as lock:  # the lock's transaction, up to its commit
        lock.execute(select(Trial.id).where(Trial.code == TRIAL).with_for_update())
        lock.execute(
            Trial.__table__.update().where(Trial.code == TRIAL).values(status=TrialStatus.LOCKED.value)
        )
        randomization.start()
        assert waiting_for_a_row_lock(live), "the randomization did not wait for the trial's row"
        lock.commit()
    randomization.join(timeout=30)
    assert not randomization.is_alive()
    assert isinstance(randomized.get("error"), TrialLocked), randomized
    assert _subjects(live) == 0


@pytest.mark.req("UNB-10")
def test_the_lock_waits_for_a_randomization_that_has_read_the_trial(
    live: ServiceContext, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A randomization past its second read holds the trial's row (key share): the lock waits for
    its commit, so the subject is randomized before the lock, in the trail's order too."""
    _postgresql_only(backend)
    randomized: dict[str, object] = {}
    locked: dict[str, object] = {}
    randomization = _randomizing(live, randomized)
    lock = _lock(live, locked)
    reached, go = _paused_after_the_site(monkeypatch, before_the_trial=False)
    randomization.start()
    assert reached.wait(30)
    lock.start()
    assert waiting_for_a_row_lock(live), "the lock did not wait for the randomization in progress"
    assert lock.is_alive() and not locked and _status(live) == TrialStatus.ACTIVE.value
    go.set()
    randomization.join(timeout=30)
    lock.join(timeout=30)
    assert "error" not in randomized and "error" not in locked, (randomized, locked)
    assert _subjects(live) == 1 and _status(live) == TrialStatus.LOCKED.value


@pytest.mark.req("UNB-10")
def test_the_lock_does_not_deadlock_with_a_change_that_signs_then_resupplies(
    live: ServiceContext, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the review of the first version (which took every site's row before the trial's):
    a batch-expiry change inserts its signature (a key-share lock on the trial), then locks a site's
    row to resupply it. The lock and the change both commit."""
    _postgresql_only(backend)
    world(live, LEVELS, {"LOT-1": (48, 365)})
    activate(live)
    deliver(live, "SH-0001")
    supply = person(live, "supply-lead", "trial_manager")
    reached, go = _paused_before(monkeypatch, resupply, "check_sites_in")
    changed: dict[str, object] = {}
    locked: dict[str, object] = {}

    def change_expiry() -> None:
        try:
            changed["view"] = kit_status.update_batch_expiry(
                live,
                supply,
                TRIAL,
                "LOT-1",
                live.now().date() + timedelta(days=1),
                reason="retest",
                signature=SIGNED,
            )
        except Exception as exc:
            changed["error"] = exc

    change = threading.Thread(target=change_expiry)
    change.start()
    assert reached.wait(30), changed
    lock = _lock(live, locked)
    lock.start()
    assert waiting_for_a_row_lock(live), "the lock did not wait for the change in progress"
    go.set()
    change.join(timeout=30)
    lock.join(timeout=30)
    assert "error" not in changed and "error" not in locked, (changed, locked)
    assert _status(live) == TrialStatus.LOCKED.value


@pytest.mark.req("UNB-10")
def test_a_dispensing_that_reads_the_trial_during_the_lock_waits_and_is_refused(
    live: ServiceContext, backend: str
) -> None:
    """The same for every record a locked trial refuses (dispensing here; administration,
    corrections, withdrawals, screenings, samples and closures use the same check): the status
    is read with the trial's row held. Before, the dispensing read "active" while the lock was
    being committed, waited at its first insert and dispensed into the locked trial."""
    _postgresql_only(backend)
    ready = ready_trial(live)
    result = randomized_now(live, ready, "P1-0901")
    first = result.kits[0]
    dispensed: dict[str, object] = {}

    def dispense() -> None:
        try:
            dispensed["done"] = dispensing.dispense(
                live,
                ready.pharmacist,
                TRIAL,
                result.subject_number,
                {first.day: first.kit_number},
                scope=ALL_SITES,
                signature=SIGNED,
            )
        except Exception as exc:
            dispensed["error"] = exc

    worker = threading.Thread(target=dispense)
    with live.db.write_engine.connect() as lock:
        lock.execute(select(Trial.id).where(Trial.code == TRIAL).with_for_update())
        lock.execute(
            Trial.__table__.update().where(Trial.code == TRIAL).values(status=TrialStatus.LOCKED.value)
        )
        worker.start()
        assert waiting_for_a_row_lock(live), "the dispensing did not wait for the trial's row"
        lock.commit()
    worker.join(timeout=30)
    assert isinstance(dispensed.get("error"), TrialLocked), dispensed
    with live.db.write_engine.connect() as probe:
        statuses = set(probe.execute(select(Dispensation.status)).scalars())
    assert statuses == {"allocated"}  # nothing dispensed


@pytest.mark.req("UNB-07")
def test_a_randomization_does_not_wait_for_code_break_sheets_being_printed(
    live: ServiceContext, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the review of the key-share reads: code-break sheets (and list generation) took the
    trial's row FOR UPDATE and rendered their PDF holding it, so every record that now reads the
    status with the row held key-share (a bedside scan, a randomization) waited for the whole
    rendering, and failed at the lock timeout for a large print. They take it FOR NO KEY UPDATE now
    (one generation at a time still): only the database lock excludes the records."""
    _postgresql_only(backend)
    ready = ready_trial(live)
    kit_lists.generate_kit_list(
        live, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-2", expiry=live.now().date() + timedelta(days=400)
    )
    reached, go = _paused_before(monkeypatch, codebreak, "_print")
    printed: dict[str, object] = {}

    def generate() -> None:
        try:
            printed["sheets"] = code_break_sheets(live)
        except Exception as exc:
            printed["error"] = exc

    generation = threading.Thread(target=generate)
    generation.start()
    assert reached.wait(30), printed
    randomized: dict[str, object] = {}
    randomization = _randomizing(live, randomized, ready)
    randomization.start()
    randomization.join(timeout=10)
    finished = not randomization.is_alive()
    go.set()
    generation.join(timeout=30)
    randomization.join(timeout=30)
    assert finished, "the randomization waited for the code-break sheets' printing"
    assert "error" not in randomized and "error" not in printed, (randomized, printed)
    assert printed["sheets"] == 4
