"""The audit trail: appended in the caller's transaction, hash-chained, checkpointed with a key
outside the database; any altered, deleted, inserted or reordered entry is found and named
(AUD-03, AUD-04) — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DataError, IntegrityError

from allocator import audit, dbguards
from allocator.audit import Action, AuditLog
from allocator.models import AuditCheckpoint, AuditEvent
from allocator.services.context import ServiceContext
from tests.support import CLI_ACTOR, record_user_updates, tamper

CHAIN = "TESTCHAIN"


def fill(ctx: ServiceContext, count: int, log: AuditLog | None = None) -> None:
    log = log or AuditLog(ring=ctx.ring, checkpoint_every=100)
    with ctx.db.unit_of_work() as session:
        record_user_updates(session, log, CHAIN, count, ctx.now)


def verify(ctx: ServiceContext) -> audit.VerifyResult:
    with ctx.db.reading() as session:
        return audit.verify_chain(session.connection(), ctx.ring, CHAIN)


def unguard(ctx: ServiceContext, session) -> None:  # type: ignore[no-untyped-def]
    for statement in dbguards.unguard(ctx.db.dialect, "audit_event", updates=False):
        session.execute(text(statement))


@pytest.mark.req("AUD-03")
def test_entries_chain_and_verify(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    result = verify(ctx)
    assert result.ok and result.entries == 250 and result.first_bad is None
    # Checkpoints: the first append (no checkpoint yet), then every 100 entries.
    with ctx.db.reading() as s:
        seqs = s.execute(select(AuditCheckpoint.seq).where(AuditCheckpoint.chain == CHAIN)).scalars().all()
        first = s.execute(
            select(AuditEvent).where(AuditEvent.chain == CHAIN, AuditEvent.seq == 1)
        ).scalar_one()
    assert seqs == [1, 101, 201]
    assert result.unsigned_tail == 49
    assert first.prev_hash == audit.GENESIS and len(first.hash) == 64
    assert first.software_version and first.at.endswith("Z")


@pytest.mark.req("AUD-03")
def test_an_altered_entry_is_named(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    tamper(
        ctx.db,
        "audit_event",
        "UPDATE audit_event SET reason = 'nothing happened' WHERE chain = :c AND seq = 57",
        c=CHAIN,
    )
    result = verify(ctx)
    assert not result.ok and result.first_bad == 57
    assert "altered" in result.problems[0].message


@pytest.mark.req("AUD-03")
def test_a_deleted_entry_is_named(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    tamper(ctx.db, "audit_event", "DELETE FROM audit_event WHERE chain = :c AND seq = 57", c=CHAIN)
    result = verify(ctx)
    assert (result.ok, result.first_bad) == (False, 57)
    assert "missing" in result.problems[0].message


@pytest.mark.req("AUD-03")
def test_a_deleted_last_entry_is_named(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    tamper(ctx.db, "audit_event", "DELETE FROM audit_event WHERE chain = :c AND seq = 250", c=CHAIN)
    result = verify(ctx)
    assert (result.ok, result.first_bad) == (False, 250)


@pytest.mark.req("AUD-03")
def test_reordered_entries_are_named(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    tamper(
        ctx.db,
        "audit_event",
        "UPDATE audit_event SET seq = -1 WHERE chain = :c AND seq = 57",
        "UPDATE audit_event SET seq = 57 WHERE chain = :c AND seq = 58",
        "UPDATE audit_event SET seq = 58 WHERE chain = :c AND seq = -1",
        c=CHAIN,
    )
    result = verify(ctx)
    assert (result.ok, result.first_bad) == (False, 57)
    assert "reordered" in result.problems[0].message


@pytest.mark.req("AUD-03")
def test_an_inserted_entry_is_named_even_with_a_valid_hash(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    with ctx.db.reading() as s:
        prev = s.execute(
            select(AuditEvent).where(AuditEvent.chain == CHAIN, AuditEvent.seq == 56)
        ).scalar_one()
        template = s.execute(
            select(AuditEvent).where(AuditEvent.chain == CHAIN, AuditEvent.seq == 57)
        ).scalar_one()
    forged = AuditEvent(
        **{c.name: getattr(template, c.name) for c in AuditEvent.__table__.columns if c.name != "id"}
    )
    forged.reason = "forged entry"
    forged.prev_hash = prev.hash
    forged.hash = audit.entry_hash(audit.canonical_fields(forged))
    tamper(
        ctx.db,
        "audit_event",
        "UPDATE audit_event SET seq = -seq WHERE chain = :c AND seq >= 57",
        "UPDATE audit_event SET seq = 1 - seq WHERE chain = :c AND seq < 0",
        c=CHAIN,
    )
    with ctx.db.unit_of_work() as session:
        session.add(forged)
    result = verify(ctx)
    assert (result.ok, result.first_bad) == (False, 57)


@pytest.mark.req("AUD-04")
def test_a_fully_rewritten_chain_is_caught_by_the_signed_checkpoint(ctx: ServiceContext) -> None:
    """Someone with write access to the database, but not to the audit key, rewrites entry 57 and
    recomputes every following hash and the chain head: the chain is self-consistent, yet the
    Ed25519 checkpoint names entry 57."""
    fill(ctx, 250)
    with ctx.db.reading() as s:
        rows = (
            s.execute(select(AuditEvent).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq))
            .scalars()
            .all()
        )
        rewritten = []
        prev_hash = audit.GENESIS
        for row in rows:
            copy = AuditEvent(**{c.name: getattr(row, c.name) for c in AuditEvent.__table__.columns})
            if copy.seq == 57:
                copy.reason = "history rewritten"
            copy.prev_hash = prev_hash
            copy.hash = audit.entry_hash(audit.canonical_fields(copy))
            prev_hash = copy.hash
            rewritten.append(copy)
    with ctx.db.unit_of_work() as session:
        unguard(ctx, session)
        for copy in rewritten:
            session.execute(
                text("UPDATE audit_event SET reason = :r, prev_hash = :p, hash = :h WHERE id = :i"),
                {"r": copy.reason, "p": copy.prev_hash, "h": copy.hash, "i": copy.id},
            )
        session.execute(
            text("UPDATE audit_chain_head SET hash = :h WHERE chain = :c"), {"h": prev_hash, "c": CHAIN}
        )
    result = verify(ctx)
    assert (result.ok, result.first_bad) == (False, 57)
    assert "signed checkpoint" in result.problems[0].message


@pytest.mark.req("AUD-04")
def test_a_forged_checkpoint_signature_is_refused(ctx: ServiceContext) -> None:
    fill(ctx, 120)
    with ctx.db.unit_of_work() as session:
        for statement in dbguards.unguard(ctx.db.dialect, "audit_checkpoint", updates=False):
            session.execute(text(statement))
        session.execute(
            text("UPDATE audit_checkpoint SET signature = :s WHERE chain = :c AND seq = 101"),
            {"s": b"\x00" * 64, "c": CHAIN},
        )
    result = verify(ctx)
    assert not result.ok and "invalid signature" in result.problems[0].message


@pytest.mark.req("AUD-05")
def test_sealed_values_are_stored_encrypted(ctx: ServiceContext) -> None:
    with ctx.db.unit_of_work() as session:
        event = ctx.audit.record(
            session,
            actor=CLI_ACTOR,
            chain=CHAIN,
            action=Action.USER_UPDATED,
            object_type="subject",
            object_id="01-001",
            sealed={"arm": "A"},
            at=ctx.now(),
        )
    # The entry is written (and its values sealed) when the unit of work commits.
    with ctx.db.reading() as s:
        stored = s.execute(select(AuditEvent.sealed_values).where(AuditEvent.chain == CHAIN)).scalar_one()
    assert stored is not None and b'"arm"' not in stored and stored == event.sealed_values
    assert verify(ctx).ok


@pytest.mark.req("AUD-04")
def test_the_audit_row_rolls_back_with_the_change(ctx: ServiceContext) -> None:
    with pytest.raises(RuntimeError), ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=CLI_ACTOR,
            chain=CHAIN,
            action=Action.USER_UPDATED,
            object_type="x",
            object_id="1",
            at=ctx.now(),
        )
        raise RuntimeError("the change failed")
    with ctx.db.reading() as s:
        assert s.execute(select(AuditEvent).where(AuditEvent.chain == CHAIN)).first() is None


def test_explicit_checkpoint_signs_the_tail(ctx: ServiceContext) -> None:
    fill(ctx, 130)
    assert verify(ctx).unsigned_tail == 29
    with ctx.db.unit_of_work() as session:
        checkpoint = ctx.audit.checkpoint(session, CHAIN, ctx.now())
        assert checkpoint is not None and checkpoint.seq == 130
    with ctx.db.unit_of_work() as session:
        assert ctx.audit.checkpoint(session, CHAIN, ctx.now()) is None
    assert verify(ctx).unsigned_tail == 0


# --- entries are queued and written just before the commit (issue 6) ----------------------------


def _record(log: AuditLog, session, chain: str, i: int, at=None) -> None:  # type: ignore[no-untyped-def]
    log.record(
        session,
        actor=CLI_ACTOR,
        chain=chain,
        action=Action.USER_UPDATED,
        object_type="user",
        object_id=f"{chain}-{i}",
        new={"i": i},
        sealed={"secret": i} if i % 7 == 0 else None,
        at=at,
    )


@pytest.mark.req("AUD-03")
def test_many_entries_of_one_transaction_keep_their_order_on_each_chain(ctx: ServiceContext) -> None:
    log = AuditLog(ring=ctx.ring, checkpoint_every=100)
    other = "OTHERCHAIN"
    with ctx.db.unit_of_work() as session:
        for i in range(1, 251):
            _record(log, session, CHAIN if i % 3 else other, i, ctx.now())
        # Nothing is written before the commit ...
        assert session.info.get("allocator.audit.queue") is not None
    # ... and then everything, in the order recorded, each chain numbered from 1 without a gap.
    with ctx.db.reading() as s:
        for chain, expected in (
            (CHAIN, [i for i in range(1, 251) if i % 3]),
            (other, [i for i in range(1, 251) if not i % 3]),
        ):
            rows = s.execute(
                select(AuditEvent.seq, AuditEvent.object_id)
                .where(AuditEvent.chain == chain)
                .order_by(AuditEvent.seq)
            ).all()
            assert [seq for seq, _ in rows] == list(range(1, len(expected) + 1))
            assert [object_id for _, object_id in rows] == [f"{chain}-{i}" for i in expected]
            checkpoints = s.execute(
                select(AuditCheckpoint.seq)
                .where(AuditCheckpoint.chain == chain)
                .order_by(AuditCheckpoint.seq)
            ).scalars()
            # As when entries were written one by one: the first entry, then every 100.
            assert list(checkpoints) == [s for s in (1, 101) if s <= len(expected)]
        assert audit.verify_chain(s.connection(), ctx.ring, CHAIN).ok
        assert audit.verify_chain(s.connection(), ctx.ring, other).ok


@pytest.mark.req("AUD-04")
def test_a_failed_transaction_leaves_no_entry_and_no_gap(ctx: ServiceContext) -> None:
    log = AuditLog(ring=ctx.ring)
    with pytest.raises(RuntimeError), ctx.db.unit_of_work() as session:
        for i in range(1, 4):
            _record(log, session, CHAIN, i, ctx.now())
        raise RuntimeError("the change failed")
    with ctx.db.unit_of_work() as session:
        _record(log, session, CHAIN, 4, ctx.now())
    with ctx.db.reading() as s:
        rows = s.execute(select(AuditEvent.seq, AuditEvent.object_id).where(AuditEvent.chain == CHAIN)).all()
    assert [tuple(r) for r in rows] == [(1, f"{CHAIN}-4")]
    assert verify(ctx).ok


@pytest.mark.req("AUD-04")
def test_a_failing_audit_write_rolls_the_change_back(ctx: ServiceContext) -> None:
    from allocator.models import LoginThrottle

    fill(ctx, 3)
    # Something already holds the next sequence number: the entry cannot be written.
    with ctx.db.unit_of_work() as session:
        session.execute(
            text(
                "INSERT INTO audit_event (chain, seq, at, actor_username, actor_name, actor_role, action, "
                "object_type, object_id, request_id, software_version, prev_hash, hash) VALUES "
                "(:c, 4, '2026-01-01T00:00:00.000000Z', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', :h, :h)"
            ),
            {"c": CHAIN, "h": "0" * 64},
        )
    with pytest.raises(IntegrityError), ctx.db.unit_of_work() as session:
        session.add(LoginThrottle(key="business-change", failures=0, window_started_at=ctx.now()))
        session.flush()
        _record(AuditLog(ring=ctx.ring), session, CHAIN, 99, ctx.now())
    with ctx.db.reading() as s:
        assert s.execute(select(LoginThrottle).where(LoginThrottle.key == "business-change")).first() is None
        assert s.execute(select(AuditEvent).where(AuditEvent.object_id == f"{CHAIN}-99")).first() is None


def test_entries_read_back_in_the_same_transaction_are_there(ctx: ServiceContext) -> None:
    log = AuditLog(ring=ctx.ring)
    with ctx.db.unit_of_work() as session:
        _record(log, session, CHAIN, 1, ctx.now())
        _record(log, session, CHAIN, 2, ctx.now())
        seen = session.execute(
            select(AuditEvent.object_id).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq)
        ).scalars()
        assert list(seen) == [f"{CHAIN}-1", f"{CHAIN}-2"]
        _record(log, session, CHAIN, 3, ctx.now())
    with ctx.db.reading() as s:
        assert s.execute(select(func.max(AuditEvent.seq)).where(AuditEvent.chain == CHAIN)).scalar() == 3
    assert verify(ctx).ok


def test_an_entry_recorded_in_a_rolled_back_savepoint_is_gone(ctx: ServiceContext) -> None:
    log = AuditLog(ring=ctx.ring)
    with ctx.db.unit_of_work() as session:
        _record(log, session, CHAIN, 1, ctx.now())
        savepoint = session.begin_nested()
        _record(log, session, CHAIN, 2, ctx.now())
        savepoint.rollback()
        _record(log, session, CHAIN, 3, ctx.now())
    with ctx.db.reading() as s:
        kept = s.execute(
            select(AuditEvent.object_id).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq)
        )
        assert list(kept.scalars()) == [f"{CHAIN}-1", f"{CHAIN}-3"]
    assert verify(ctx).ok


# --- the entries reach the database unchanged (issue 16) -----------------------------------------

# Texts that a transport could alter: escapes of JSON and of SQL, controls, line and paragraph
# separators, characters beyond the BMP, a NUL and a lone surrogate (made storable by `record`),
# text that looks like JSON, hex or an escape.
HOSTILE = [
    "quote \" backslash \\ slash / \\u0041 \\x00 %(seq)s $1 '",
    "tab\tnew\nline\rcr \x01\x1f\x7f\x85\x9f",
    "\u2028\u2029 é ß 漢字 \U0001f600 \ufeff",
    "nul \x00 surrogate \ud800 end",
    '{"a":1}',
    "\\x414243",
    "",
    " trailing spaces  ",
]


@pytest.mark.req("AUD-03")
def test_every_value_of_an_entry_is_stored_as_given(ctx: ServiceContext) -> None:
    """Several entries of one transaction (one statement on PostgreSQL) with hostile texts, sealed
    values and none: every stored column equals the entry's, so the stored rows hash as written."""
    log = AuditLog(ring=ctx.ring, checkpoint_every=1000)
    actor = audit.Actor(
        user_id=None,
        username="u\x1b[31m\\",
        name=HOSTILE[2],
        role="system",
        site_code="S\\1",
        request_id=HOSTILE[0][:64],
    )
    entries = []
    with ctx.db.unit_of_work() as session:
        for i, value in enumerate(HOSTILE):
            entries.append(
                log.record(
                    session,
                    actor=actor,
                    chain=CHAIN,
                    action=Action.USER_UPDATED,
                    object_type=audit.storable(value)[:64],
                    object_id=value,
                    old={value: value, "n": -(2**62)} if i % 2 else None,
                    new={"v": [value, i, 1.5, None, True]},
                    sealed={"secret": value} if i % 3 else None,
                    reason=value if i != 6 else None,
                    site_code=audit.storable(value)[:10] if i % 2 else None,
                    at=ctx.now(),
                )
            )
    columns = [c for c in AuditEvent.__table__.columns if c.key != "id"]
    with ctx.db.reading() as s:
        stored = s.execute(select(*columns).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq)).all()
        assert audit.verify_chain(s.connection(), ctx.ring, CHAIN).ok
    assert len(stored) == len(HOSTILE)
    for entry, row in zip(entries, stored, strict=True):
        assert {c.key: getattr(entry, c.key) for c in columns} == row._asdict()
    assert any(row.sealed_values is not None for row in stored)
    assert any(row.sealed_values is None for row in stored)
    assert "\\x00" in stored[3].object_id and "\\ud800" in stored[3].object_id


def test_a_text_longer_than_its_column_is_refused_not_cut(ctx: ServiceContext) -> None:
    """PostgreSQL checks the length of a VARCHAR column (SQLite does not): an entry whose object
    type is too long makes the transaction fail; it is never stored cut short."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    log = AuditLog(ring=ctx.ring)
    with pytest.raises(DataError), ctx.db.unit_of_work() as session:
        for object_type in ("user", "x" * 65):
            log.record(
                session,
                actor=CLI_ACTOR,
                chain=CHAIN,
                action=Action.USER_UPDATED,
                object_type=object_type,
                object_id="1",
                at=ctx.now(),
            )
    with ctx.db.reading() as s:
        assert s.execute(select(AuditEvent).where(AuditEvent.chain == CHAIN)).first() is None


def test_an_entry_holds_exactly_the_columns_of_its_row() -> None:
    """`record` builds a plain `audit.Entry`, not an ORM object: its fields must stay the columns
    of `audit_event` (all but the id), or a column would be inserted empty or an entry not hashed
    as stored."""
    columns = {c.key for c in AuditEvent.__table__.columns} - {"id"}
    assert {f.name for f in dataclasses.fields(audit.Entry)} == columns
    assert set(audit._INSERTED_COLUMNS) == columns
