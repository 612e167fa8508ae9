"""Expensive test worlds built once per process and replayed into each test's database.

A world (a trial ready to randomize, the report tests' history...) is built through the services,
which takes seconds: lists, kits, code-break sheets, shipments, signatures, audit chain. Dozens
of tests start from the same world, so `replayed` builds it for real the first time and records
the rows it added; a later test whose database is in the same state gets those rows inserted
directly (one multi-row INSERT per table, inside the test's own rolled-back transaction) and the
builder's result, in tens of milliseconds.

A replay is only used when it is indistinguishable from a fresh build:
- the key holds the builder, its arguments, the backend, the settings, the key directory, the
  password hashing and the clock's time; the clock is left where the builder left it;
- the database must hold exactly the rows it held before the recorded build (any test that wrote
  something first gets a build of its own);
- a build that changed or deleted a row that existed before it is never recorded.
Rows are copied as they were written, so the audit chain, its checkpoints and every signature
verify exactly as after the real build. On PostgreSQL the id sequences are moved past the copied
ids, as the real build would have left them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, select, text
from sqlalchemy.orm import Session

from allocator.models import Base
from allocator.services.context import ServiceContext

T = TypeVar("T")
Rows = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class _Recording:
    added: list[tuple[Table, list[dict[str, Any]]]]
    result: object
    clock_after: datetime


_RECORDINGS: dict[tuple[Hashable, ...], _Recording | None] = {}
"""Per process (each xdist worker has its own). None: the build cannot be replayed."""

stats = {"built": 0, "replayed": 0}


def recorded(name: str) -> list[bool]:
    """For each recorded build called `name`: whether it can be replayed."""
    return [v is not None for k, v in _RECORDINGS.items() if k[0] == name]


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def _pk(table: Table, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c.key] for c in table.primary_key.columns)


def read_all(session: Session) -> Rows:
    rows: Rows = {}
    for table in _tables():
        order = list(table.primary_key.columns)
        found = session.execute(select(table).order_by(*order)).all()
        as_dicts = [{c.key: r._mapping[c] for c in table.columns} for r in found]
        rows[table.name] = {_pk(table, r): r for r in as_dicts}
    return rows


def _digest(rows: Rows) -> str:
    h = hashlib.sha256()
    for name in sorted(rows):
        for key in sorted(rows[name], key=repr):
            h.update(repr((name, rows[name][key])).encode())
    return h.hexdigest()


def _settings_key(ctx: ServiceContext) -> str:
    return repr(dataclasses.replace(ctx.settings, database_url=""))


def _move_sequences(connection: Connection, added: list[tuple[Table, list[dict[str, Any]]]]) -> None:
    """PostgreSQL: explicit ids do not advance a serial's sequence; move it past them."""
    for table, rows in added:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not pk[0].autoincrement or pk[0].type.python_type is not int:
            continue
        top = max(int(r[pk[0].key]) for r in rows)
        connection.execute(
            text(
                "SELECT setval(pg_get_serial_sequence(:t, :c), GREATEST(:top, "
                "COALESCE(pg_sequence_last_value(pg_get_serial_sequence(:t, :c)::regclass), 0)))"
            ),
            {"t": table.name, "c": pk[0].name, "top": top},
        )


def replayed(ctx: ServiceContext, name: str, build: Callable[[ServiceContext], T], **params: Hashable) -> T:
    """`build(ctx)`, or a replay of the rows and the result of an identical earlier build.

    `name` and `params` identify what `build` does (it must depend on nothing else than them,
    the context and the database); the result must be a plain value (it is deep-copied)."""
    from tests.support import Clock

    clock = ctx.clock
    if not isinstance(clock, Clock):  # a real clock: builds are not reproducible
        return build(ctx)
    with ctx.db.reading() as session:
        before = read_all(session)
    key: tuple[Hashable, ...] = (
        name,
        tuple(sorted(params.items())),
        ctx.db.dialect,
        _settings_key(ctx),
        repr(ctx.passwords),
        clock.current,
        _digest(before),
    )
    recording = _RECORDINGS.get(key)
    if recording is not None:
        with ctx.db.unit_of_work() as session:
            for table, rows in recording.added:
                session.execute(table.insert(), rows)
            if ctx.db.dialect == "postgresql":
                _move_sequences(session.connection(), recording.added)
        clock.current = recording.clock_after
        stats["replayed"] += 1
        return copy.deepcopy(recording.result)  # type: ignore[return-value]

    result = build(ctx)
    stats["built"] += 1
    if key in _RECORDINGS:  # known not to be replayable
        return result
    with ctx.db.reading() as session:
        after = read_all(session)
    added: list[tuple[Table, list[dict[str, Any]]]] = []
    replayable = True
    for table in _tables():
        old, new = before[table.name], after[table.name]
        if any(k not in new or new[k] != row for k, row in old.items()):
            replayable = False  # the build changed or deleted an existing row
            break
        rows = [row for k, row in new.items() if k not in old]
        if rows:
            added.append((table, rows))
    _RECORDINGS[key] = (
        _Recording(added=added, result=copy.deepcopy(result), clock_after=clock.current)
        if replayable
        else None
    )
    return result
