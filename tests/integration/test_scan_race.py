"""Issue 14, D1: twenty scans of the same kit at the same moment, against a committed database.
Exactly one administration is recorded; the nineteen others are refused as already administered
(409), each refusal audited, and none is a database error (a 500 on PostgreSQL before the fix: the
dispensation's status was read before the kit row was locked, so a waiting scan still saw it
"dispensed" and then hit the unique constraint)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

import kits as kitlib
from allocator import audit
from allocator.models import Administration, AuditEvent
from allocator.permissions import Scope
from allocator.services import bedside, dispensing, signatures
from allocator.services.context import ServiceContext
from allocator.services.supply import kit_rules
from tests.conftest import FreshDatabase
from tests.support import GOOD_PASSWORD, committed_context, randomized_now, ready_trial

pytestmark = pytest.mark.slow
TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SCANS = 20


@pytest.fixture
def live(fresh_database: FreshDatabase, key_dir: Path) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    with committed_context(fresh_database.url, key_dir, pool_size=SCANS) as ctx:
        yield ctx


@pytest.mark.req("DIB-01", "LBL-09")
def test_d1_twenty_simultaneous_scans_of_one_kit_record_one(live: ServiceContext) -> None:
    ready = ready_trial(live)
    first = randomized_now(live, ready)
    kits_of = {k.day: k.kit_number for k in first.kits}
    dispensing.dispense(
        live,
        ready.pharmacist,
        TRIAL,
        first.subject_number,
        kits_of,
        scope=ALL,
        signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
    )
    label = kitlib.build_payload(TRIAL, kits_of["D1"], "D1", kit_rules.mac(live))
    start = threading.Barrier(SCANS)

    def scan(_: int) -> str:
        start.wait()
        try:
            bedside.record_scan(
                live,
                ready.nurse,
                TRIAL,
                payload=label,
                subject_number=first.subject_number,
                day="D1",
                scope=ALL,
            )
        except bedside.AlreadyAdministered:
            return "already-administered"
        except Exception as exc:  # anything else is the defect being tested
            return type(exc).__name__
        return "ok"

    with ThreadPoolExecutor(max_workers=SCANS) as pool:
        outcomes = Counter(pool.map(scan, range(SCANS)))
    assert outcomes == {"ok": 1, "already-administered": SCANS - 1}
    with live.db.reading() as s:
        assert s.execute(select(func.count()).select_from(Administration)).scalar_one() == 1
        refusals = (
            s.execute(
                select(AuditEvent.new_values).where(AuditEvent.action == audit.Action.SCAN_REFUSED.value)
            )
            .scalars()
            .all()
        )
        assert len(refusals) == SCANS - 1
        assert all('"cause":"already-administered"' in (r or "") for r in refusals)
        recorded = s.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == audit.Action.ADMINISTRATION_RECORDED.value)
        ).scalar_one()
        assert recorded == 1
        assert audit.verify_chain(s.connection(), live.ring, TRIAL).ok
