"""Issue 16: no statement of the hot paths is compiled again for every request. The audit append
(PostgreSQL) was a multi-row INSERT, to which SQLAlchemy gives no cache key: it was compiled anew
in every transaction that recorded something, about 3.5 ms of a randomization's 13 ms of CPU.
After a warm-up, every statement of a randomization, a dispensing and a bedside scan must come
from the compiled cache, on both backends, with few enough parameters for psycopg to keep its
parsed form too (it parsed the audit append again every time: 67 parameters)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExecutionContext

import kits as kitlib
from allocator.permissions import Scope
from allocator.services import bedside, dispensing, signatures
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize
from allocator.services.supply import kit_rules
from tests.support import ELIGIBLE, GOOD_PASSWORD, ReadyTrial, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
# psycopg keeps the parsed form of a statement of at most 50 parameters (psycopg/_queries.py,
# MAX_CACHED_STATEMENT_PARAMS); the audit append of three entries had 67.
PSYCOPG_CACHED_PARAMETERS = 50


def _request(number: str) -> randomize.RandomizationRequest:
    return randomize.RandomizationRequest(
        site="P1",
        screening_number=number,
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )


def _allocate_dispense_give(ctx: ServiceContext, ready: ReadyTrial, number: str) -> None:
    """What a subject's first day does: randomization, dispensing (signed), the D1 bedside scan."""
    done = randomize.randomize(ctx, ready.investigator, TRIAL, _request(number), ALL)
    kits = {k.day: k.kit_number for k in done.kits}
    signature = signatures.SignatureRequest(password=GOOD_PASSWORD)
    dispensing.dispense(
        ctx, ready.pharmacist, TRIAL, done.subject_number, kits, scope=ALL, signature=signature
    )
    payload = kitlib.build_payload(TRIAL, kits["D1"], "D1", kit_rules.mac(ctx))
    bedside.record_scan(
        ctx, ready.nurse, TRIAL, payload=payload, subject_number=done.subject_number, day="D1", scope=ALL
    )


def test_a_subjects_first_day_sends_only_statements_from_the_compiled_cache(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    for number in ("P1-0001", "P1-0002"):  # warm-up: every statement compiled once
        _allocate_dispense_give(ctx, ready, number)
    sent: list[tuple[str, str]] = []  # (cache statistic, statement) of each compiled statement
    crowded: list[tuple[int, str]] = []  # statements psycopg would parse again on every call

    def seen(
        _conn: Connection,
        _cursor: object,
        statement: str,
        params: object,
        context: ExecutionContext | None,
        _many: bool,
    ) -> None:
        if isinstance(params, dict) and len(params) > PSYCOPG_CACHED_PARAMETERS:
            crowded.append((len(params), " ".join(statement.split())[:120]))
        if context is None:  # a `db.Direct` statement: compiled once per process, sent as compiled
            sent.append(("direct", " ".join(statement.split())[:120]))
        # Savepoints (the test's own transaction around each test) have no cache key by nature.
        elif context.compiled is not None and "SAVEPOINT" not in statement:
            sent.append((str(getattr(context, "cache_hit", "?")), " ".join(statement.split())[:120]))

    engine = ctx.db.write_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        _allocate_dispense_give(ctx, ready, "P1-0003")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(sent) >= 5, sent
    not_cached = [(hit, sql) for hit, sql in sent if not (hit.endswith("CACHE_HIT") or hit == "direct")]
    assert not_cached == [], not_cached
    assert crowded == [], crowded
