"""A trial of many subjects, and a count of the SQL statements a piece of code issues (issue 21).

`crowded_trial(ctx, subjects=n)` randomizes `n` subjects over the two sites through the services,
with a share of them dispensed and given their first dose, stratum corrections, randomizations in
error and withdrawals in proportion, so that a read path that costs queries per subject (or per
dispensation, correction, withdrawal) costs more in a world of 200 than in a world of 20.
`statements(db)` counts what is sent to the database meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

import kits as kitlib
from allocator.db import Database
from allocator.services import bedside, dispensing, signatures
from allocator.services.context import ServiceContext
from allocator.services.subjects import corrections, withdrawal
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.supply import kit_rules
from tests.support import ALL_SITES, GOOD_PASSWORD, TRIAL, Clock, ReadyTrial, eligible_on, ready_trial

SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)


@dataclass
class Crowd:
    ready: ReadyTrial
    subjects: list[str] = field(default_factory=list)


def crowded_trial(ctx: ServiceContext, *, subjects: int, capacity: int | None = None) -> Crowd:
    """`subjects` randomized over P1 and P2, in a trial with kits for `capacity` subjects (by
    default `subjects`), so that `grow` can add more later. Built once per process, then replayed."""
    from tests.support.worlds import replayed

    room = max(capacity or subjects, subjects)
    return replayed(
        ctx, "crowded_trial", lambda c: _build(c, subjects, room), subjects=subjects, capacity=room
    )


def grow(ctx: ServiceContext, crowd: Crowd, *, to: int) -> Crowd:
    """Randomize more subjects (the same mix) until the crowd holds `to`."""
    _add(ctx, crowd, to)
    return crowd


def _build(ctx: ServiceContext, count: int, capacity: int) -> Crowd:
    # three days of kits per subject, with room for the imbalance of arms in the stock; an even count
    per_site = 2 * ((3 * ((capacity + 1) // 2) * 13 // 10 + 24) // 2)
    crowd = Crowd(ready_trial(ctx, kits_per_site=per_site))
    _add(ctx, crowd, count)
    return crowd


def _add(ctx: ServiceContext, crowd: Crowd, count: int) -> None:
    ready = crowd.ready
    mac = kit_rules.mac(ctx)
    clock = ctx.clock
    for i in range(len(crowd.subjects), count):
        site = "P1" if i % 2 == 0 else "P2"
        investigator = ready.investigator if site == "P1" else ready.investigator_p2
        result = subjects_randomize.randomize(
            ctx,
            investigator,
            TRIAL,
            subjects_randomize.RandomizationRequest(
                site=site,
                screening_number=f"{site}-{i:04d}",
                eligibility=eligible_on(ctx.now().date()),
                strata={"admission_cause": "septic" if i % 3 else "non_septic"},
            ),
            ALL_SITES,
        )
        number = result.subject_number
        crowd.subjects.append(number)
        kits = {k.day: k.kit_number for k in result.kits}
        if site == "P1" and i % 4 == 0:  # dispensed, and the first dose given at the bedside
            dispensing.dispense(ctx, ready.pharmacist, TRIAL, number, kits, scope=ALL_SITES, signature=SIGNED)
            bedside.record_scan(
                ctx,
                ready.nurse,
                TRIAL,
                payload=kitlib.build_payload(TRIAL, kits["D1"], "D1", mac),
                subject_number=number,
                day="D1",
                scope=ALL_SITES,
            )
        if i % 10 == 1:
            corrections.correct_stratum(
                ctx,
                investigator,
                TRIAL,
                number,
                factor="admission_cause",
                level="septic" if i % 3 == 0 else "non_septic",
                reason="cause of admission re-assessed",
                scope=ALL_SITES,
                agreement_ref=None,
                is_investigator=True,
            )
        if i % 10 == 3:
            corrections.mark_in_error(
                ctx,
                investigator,
                TRIAL,
                number,
                reason="consent signed late",
                scope=ALL_SITES,
                signature=SIGNED,
            )
        if i % 10 == 5:
            withdrawal.withdraw(
                ctx,
                investigator,
                TRIAL,
                number,
                kind="consent_withdrawn",
                effective_date=ctx.now().date(),
                reason="the patient's family asked",
                scope=ALL_SITES,
                signature=SIGNED,
                agreement_ref=None,
                is_investigator=True,
            )
        if isinstance(clock, Clock) and i % 8 == 7:
            clock.advance(hours=7)  # spread over days, in and out of working hours


@dataclass
class Statements:
    sql: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """The statements sent, without the signing of an audit checkpoint: it falls due every
        `checkpoint_every` entries (an audited download may or may not be the one that triggers
        it) and costs the same whatever the size of the trial (its hashes read, its row written)."""
        signing = [
            i
            for i, sql in enumerate(self.sql)
            if sql.lstrip().upper().startswith("INSERT INTO AUDIT_CHECKPOINT")
        ]
        # On PostgreSQL (psycopg's `%(name)s` parameters) an append is one statement with the
        # head's move (`WITH appended AS (INSERT INTO audit_event ...) UPDATE audit_chain_head`); a
        # checkpoint splits it back into the insert and the update: one statement more, the
        # signing's too.
        postgresql = any("%(" in sql for sql in self.sql)
        return len(self.sql) - (3 if postgresql else 2) * len(signing)


@contextmanager
def statements(db: Database) -> Iterator[Statements]:
    """Count every statement sent through `db`'s engines while the block runs."""
    seen = Statements()

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.sql.append(statement)

    engines = {id(e): e for e in (db.write_engine, db.read_engine)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)
