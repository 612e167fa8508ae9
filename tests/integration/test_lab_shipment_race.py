"""Lab shipments at the same moment, against a committed database (issue 20, labship): two sites
preparing at once get two numbers (numbered under the trial row's lock, backed by the unique
constraint), two preparations racing for the same tube set ship it once, and two technicians
scanning the same tube set record it once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from allocator import crypto
from allocator.db import Database
from allocator.models import LabShipment, SampleKit
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.samples import lab_shipments as ls
from allocator.settings import Environment, Settings
from tests.conftest import FreshDatabase
from tests.support import ALL_SITES, COHORT, ready_cohort
from tests.support.cohort import collected_samples, lab_technician, live_answers, second_site

pytestmark = pytest.mark.slow


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    settings = Settings(env=Environment.TEST, database_url=fresh_database.url, key_dir=key_dir)
    db = Database.connect(fresh_database.url, pool_size=4)
    yield ServiceContext.build(
        settings, db, crypto.KeyRing.load(key_dir), passwords=crypto.FAST_PASSWORD_HASHING
    )
    db.dispose()


def _both(first: Callable[[], object], second: Callable[[], object]) -> list[object]:
    def run(call: Callable[[], object]) -> object:
        try:
            return call()
        except DomainError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, (first, second)))


def test_racing_preparations_and_receipts_never_clash(live: ServiceContext) -> None:
    answers = live_answers()
    l1 = ready_cohort(live)
    l2 = second_site(live)
    mine = collected_samples(live, l1, 2, eligibility=answers)
    theirs = collected_samples(live, l2, 1, "L2", eligibility=answers)
    # Two sites at once: two shipments, two numbers.
    done = _both(
        lambda: ls.prepare(live, l1, COHORT, "L1", [mine[0]], ALL_SITES),
        lambda: ls.prepare(live, l2, COHORT, "L2", theirs, ALL_SITES),
    )
    assert sorted(v.number for v in done if isinstance(v, ls.LabShipmentView)) == ["LS-0001", "LS-0002"]
    # The same tube set in two preparations at once: shipped once, the other refused.
    done = _both(
        lambda: ls.prepare(live, l1, COHORT, "L1", [mine[1]], ALL_SITES),
        lambda: ls.prepare(live, l1, COHORT, "L1", [mine[1]], ALL_SITES),
    )
    assert sum(isinstance(v, ls.LabShipmentView) for v in done) == 1
    assert [str(e) for e in done if isinstance(e, DomainError)] == ["some tube sets cannot be shipped"]
    number = next(v.number for v in done if isinstance(v, ls.LabShipmentView))
    ls.ship(live, l1, COHORT, number, ALL_SITES)
    # Two technicians scan the same tube set at once: recorded once.
    first, second = lab_technician(live, "lab-1"), lab_technician(live, "lab-2")
    done = _both(
        lambda: ls.receive_sample(live, first, COHORT, number, ls.SampleOutcome(mine[1]), ALL_SITES),
        lambda: ls.receive_sample(live, second, COHORT, number, ls.SampleOutcome(mine[1]), ALL_SITES),
    )
    assert sum(isinstance(v, ls.SampleRow) for v in done) == 1
    with live.db.reading() as s:
        assert (
            s.execute(select(SampleKit.status).where(SampleKit.kit_number == mine[1])).scalar_one()
            == "received"
        )
        assert len(s.execute(select(LabShipment.number)).scalars().all()) == 3
