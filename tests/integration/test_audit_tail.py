"""No unsigned tail (issue 15): every appending transaction signs the chain head, and every signed
head is appended to a witness file the database cannot rewrite.

The tamper suite plays someone with write access to the database but not to the audit key, on
both backends, against an entry covered by a checkpoint (57) and one after the last checkpoint
(230): edit, delete, insert, reorder, rewrite-and-rechain, truncate-and-roll-back (with a head
saved from an earlier state, as a backup would give) and a forged append with a correct hash.
With a witness every class is detected and the first bad entry, or the missing range, is named;
without one everything but the removal of the newest entries is detected, and the verification
says which protection is missing (AUD-03, AUD-04)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from allocator import audit, dbguards
from allocator.audit import Action, AuditLog
from allocator.cli import main
from allocator.models import AuditChainHead, AuditEvent
from allocator.services.context import ServiceContext
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, record_user_updates

CHAIN = "TAILCHAIN"
TOTAL = 250  # 25 transactions of 10 entries; checkpoints at 1, 101 and 201
COVERED = 57  # inside a signed checkpoint
TAIL = 230  # after the last checkpoint


def append(ctx: ServiceContext, log: AuditLog, count: int, per_transaction: int = 10) -> None:
    for done in range(0, count, per_transaction):
        with ctx.db.unit_of_work() as session:
            record_user_updates(session, log, CHAIN, min(per_transaction, count - done), ctx.now, first=done)


def verify(ctx: ServiceContext, witness: Path | None) -> audit.VerifyResult:
    with ctx.db.reading() as s:
        return audit.verify_chain(s.connection(), ctx.ring, CHAIN, witness)


def statements(ctx: ServiceContext, *sql: str, **params: Any) -> None:
    with ctx.db.unit_of_work() as session:
        for table in ("audit_event", "audit_checkpoint"):
            for statement in dbguards.unguard(ctx.db.dialect, table, updates=False):
                session.execute(text(statement))
        for statement in sql:
            session.execute(text(statement), {"c": CHAIN, **params})


def entries(ctx: ServiceContext) -> list[AuditEvent]:
    with ctx.db.reading() as s:
        rows = s.execute(select(AuditEvent).where(AuditEvent.chain == CHAIN).order_by(AuditEvent.seq))
        return list(rows.scalars())


def head_row(ctx: ServiceContext) -> dict[str, Any]:
    with ctx.db.reading() as s:
        row = s.execute(select(AuditChainHead).where(AuditChainHead.chain == CHAIN)).scalar_one()
        return {
            c: getattr(row, c)
            for c in ("seq", "hash", "checkpoint_seq", "checkpoint_at", "head_key_id", "head_signature")
        }


def set_head(ctx: ServiceContext, **values: Any) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    statements(ctx, f"UPDATE audit_chain_head SET {assignments} WHERE chain = :c", **values)


def rechain(ctx: ServiceContext, target: int) -> None:
    """Rewrite entry `target` and recompute every hash after it and the head's hash (the head's
    signature cannot be renewed without the audit key)."""
    prev_hash = audit.GENESIS
    updates = []
    for row in entries(ctx):
        if row.seq == target:
            row.reason = "history rewritten"
        row.prev_hash = prev_hash
        row.hash = audit.entry_hash(audit.canonical_fields(row))
        prev_hash = row.hash
        updates.append({"r": row.reason, "p": row.prev_hash, "h": row.hash, "i": row.id})
    with ctx.db.unit_of_work() as session:
        for statement in dbguards.unguard(ctx.db.dialect, "audit_event", updates=False):
            session.execute(text(statement))
        for values in updates:
            session.execute(
                text("UPDATE audit_event SET reason = :r, prev_hash = :p, hash = :h WHERE id = :i"), values
            )
    set_head(ctx, hash=prev_hash)


def forge_entry(ctx: ServiceContext, seq: int, prev_hash: str) -> str:
    """Insert an entry at `seq` with a correct hash linking to `prev_hash`; return its hash."""
    template = entries(ctx)[0]
    forged = AuditEvent(
        **{c.name: getattr(template, c.name) for c in AuditEvent.__table__.columns if c.name != "id"}
    )
    forged.seq, forged.reason, forged.prev_hash = seq, "forged entry", prev_hash
    forged.hash = audit.entry_hash(audit.canonical_fields(forged))
    with ctx.db.unit_of_work() as session:
        session.add(forged)
    return forged.hash


@pytest.fixture
def witness(tmp_path: Path) -> Path:
    return tmp_path / "witness" / "audit-heads.log"


@pytest.fixture
def log(ctx: ServiceContext, witness: Path) -> AuditLog:
    witness.parent.mkdir()
    return AuditLog(ring=ctx.ring, checkpoint_every=100, witness=witness)


WITH_AND_WITHOUT = pytest.mark.parametrize("witnessed", [True, False], ids=["witness", "no-witness"])
BOTH_SIDES = pytest.mark.parametrize("target", [COVERED, TAIL], ids=["checkpointed", "tail"])


@pytest.mark.req("AUD-03", "AUD-04")
@WITH_AND_WITHOUT
def test_an_untouched_chain_verifies_and_says_what_protects_it(
    ctx: ServiceContext, log: AuditLog, witness: Path, witnessed: bool
) -> None:
    append(ctx, log, TOTAL)
    result = verify(ctx, witness if witnessed else None)
    assert result.ok and result.entries == TOTAL and result.unsigned_tail == 49
    assert "head signed" in result.summary()
    if witnessed:
        assert result.witnessed_upto == TOTAL and result.unwitnessed == 0
        assert "seen up to entry 250" in result.summary()
        lines = [json.loads(line) for line in witness.read_text().splitlines()]
        assert len(lines) == 25 and [line["seq"] for line in lines] == list(range(10, 251, 10))
        assert all(len(line["entries"]) == 10 and line["after"] == line["seq"] - 10 for line in lines)
    else:
        assert "no witness given" in result.summary() and "ALLOCATOR_AUDIT_WITNESS" in result.summary()


@pytest.mark.req("AUD-03")
@WITH_AND_WITHOUT
@BOTH_SIDES
@pytest.mark.parametrize("kind", ["edit", "delete", "insert", "reorder"])
def test_edits_deletions_insertions_and_swaps_are_named(
    ctx: ServiceContext, log: AuditLog, witness: Path, witnessed: bool, target: int, kind: str
) -> None:
    append(ctx, log, TOTAL)
    if kind == "edit":
        statements(
            ctx, "UPDATE audit_event SET reason = 'nothing happened' WHERE chain = :c AND seq = :s", s=target
        )
    elif kind == "delete":
        statements(ctx, "DELETE FROM audit_event WHERE chain = :c AND seq = :s", s=target)
    elif kind == "reorder":
        statements(
            ctx,
            "UPDATE audit_event SET seq = -1 WHERE chain = :c AND seq = :s",
            "UPDATE audit_event SET seq = :s WHERE chain = :c AND seq = :s + 1",
            "UPDATE audit_event SET seq = :s + 1 WHERE chain = :c AND seq = -1",
            s=target,
        )
    else:
        previous = entries(ctx)[target - 2].hash
        statements(
            ctx,
            "UPDATE audit_event SET seq = -seq WHERE chain = :c AND seq >= :s",
            "UPDATE audit_event SET seq = 1 - seq WHERE chain = :c AND seq < 0",
            s=target,
        )
        forge_entry(ctx, target, previous)
    result = verify(ctx, witness if witnessed else None)
    if kind == "insert" and target == TAIL and not witnessed:
        # A forged entry with a correct hash, in the unsigned part: nothing vouches for entry 230
        # itself, so the break shows at the next one, which says where it came from.
        assert (result.ok, result.first_bad) == (False, target + 1), result.summary()
        assert f"was entry {target}" in result.problems[0].message
    else:
        assert (result.ok, result.first_bad) == (False, target), result.summary()


@pytest.mark.req("AUD-04")
@WITH_AND_WITHOUT
@BOTH_SIDES
def test_a_rewritten_and_rechained_chain_is_detected(
    ctx: ServiceContext, log: AuditLog, witness: Path, witnessed: bool, target: int
) -> None:
    append(ctx, log, TOTAL)
    rechain(ctx, target)
    result = verify(ctx, witness if witnessed else None)
    assert not result.ok, result.summary()
    if target == COVERED:
        assert result.first_bad == COVERED and "signed checkpoint" in result.problems[0].message
    elif witnessed:
        assert result.first_bad == TAIL and "witness" in result.problems[0].message
    else:
        # The head's signature no longer matches: everything after the last checkpoint is suspect.
        assert result.first_bad == 202 and "not signed by the audit key" in result.problems[0].message


@pytest.mark.req("AUD-04")
@WITH_AND_WITHOUT
@pytest.mark.parametrize("cut", [100, 240], ids=["before-checkpoint", "tail"])
def test_truncation_with_a_saved_head_needs_the_witness(
    ctx: ServiceContext, log: AuditLog, witness: Path, witnessed: bool, cut: int
) -> None:
    """The attacker saved the head row as it was at entry `cut` (a backup gives that), then deletes
    the newer entries and checkpoints and puts the old head back: every signature in the database
    is genuine. Only the witness, outside the database, remembers the newer entries."""
    append(ctx, log, cut)
    saved = head_row(ctx)
    append(ctx, log, TOTAL - cut)
    statements(
        ctx,
        "DELETE FROM audit_event WHERE chain = :c AND seq > :s",
        "DELETE FROM audit_checkpoint WHERE chain = :c AND seq > :s",
        s=cut,
    )
    set_head(ctx, **saved)
    result = verify(ctx, witness if witnessed else None)
    if witnessed:
        assert (result.ok, result.first_bad) == (False, cut + 1), result.summary()
        assert f"entries {cut + 1} to {TOTAL} are missing: the witness saw them" in result.problems[0].message
    else:
        # The one class a database-only verification cannot see: it says so.
        assert result.ok and result.entries == cut
        assert (
            "removing the newest entries and rolling the head back would not be detected" in result.summary()
        )


@pytest.mark.req("AUD-04")
@WITH_AND_WITHOUT
@pytest.mark.parametrize("checkpointed", [False, True], ids=["tail", "after-checkpoint"])
def test_a_forged_append_with_a_correct_hash_is_detected(
    ctx: ServiceContext, log: AuditLog, witness: Path, witnessed: bool, checkpointed: bool
) -> None:
    append(ctx, log, TOTAL)
    if checkpointed:
        with ctx.db.unit_of_work() as session:
            assert log.checkpoint(session, CHAIN, ctx.now()) is not None
    last = entries(ctx)[-1].hash
    forged = forge_entry(ctx, TOTAL + 1, last)
    set_head(ctx, seq=TOTAL + 1, hash=forged)
    result = verify(ctx, witness if witnessed else None)
    assert not result.ok and "not signed by the audit key" in result.problems[0].message
    if witnessed or checkpointed:
        assert result.first_bad == TOTAL + 1, result.summary()
    else:
        # Without a witness, what follows the last checkpoint can no longer be vouched for.
        assert result.first_bad == 202, result.summary()


@pytest.mark.req("AUD-04")
def test_a_forged_head_signature_is_refused(ctx: ServiceContext, log: AuditLog) -> None:
    append(ctx, log, 30)
    set_head(ctx, head_signature=b"\x00" * 64)
    assert not verify(ctx, None).ok
    set_head(ctx, head_signature=None, head_key_id=None)
    result = verify(ctx, None)
    assert not result.ok and "not signed by the audit key" in result.problems[0].message


@pytest.mark.req("AUD-04")
def test_a_damaged_witness_line_is_reported(ctx: ServiceContext, log: AuditLog, witness: Path) -> None:
    append(ctx, log, 30)
    lines = witness.read_text().splitlines()
    record = json.loads(lines[1])
    record["entries"][0] = "f" * 64  # the line now vouches for another entry 11
    lines[1] = json.dumps(record)
    witness.write_text("\n".join(lines) + "\n")
    result = verify(ctx, witness)
    assert not result.ok and "witness line 2 is damaged" not in result.problems[0].message
    assert result.first_bad == 11 and "differs from what the witness saw" in result.problems[0].message
    record["sig"] = record["sig"][:-4] + "AAA="
    lines[1] = json.dumps(record)
    witness.write_text("\n".join(lines) + "\n")
    result = verify(ctx, witness)
    assert not result.ok and "witness line 2 is damaged or not signed" in result.problems[0].message


@pytest.mark.req("AUD-04")
def test_entries_newer_than_the_witness_are_counted_not_failed(
    ctx: ServiceContext, log: AuditLog, witness: Path
) -> None:
    """A commit whose witness line could not be written (the witness volume was full, the process
    died between the two) leaves entries newer than the witness: reported, with the head's
    signature still vouching for them."""
    append(ctx, log, 20)
    append(ctx, AuditLog(ring=ctx.ring, checkpoint_every=100), 5)  # a process without the witness
    result = verify(ctx, witness)
    assert result.ok and (result.witnessed_upto, result.unwitnessed) == (20, 5)
    assert "5 newer entries not yet witnessed" in result.summary()


@pytest.mark.req("AUD-04")
def test_a_rolled_back_savepoint_is_not_witnessed(ctx: ServiceContext, log: AuditLog, witness: Path) -> None:
    with ctx.db.unit_of_work() as session:
        log.record(
            session,
            actor=CLI_ACTOR,
            chain=CHAIN,
            action=Action.USER_UPDATED,
            object_type="x",
            object_id=1,
            at=ctx.now(),
        )
        savepoint = session.begin_nested()
        log.record(
            session,
            actor=CLI_ACTOR,
            chain=CHAIN,
            action=Action.USER_UPDATED,
            object_type="x",
            object_id=2,
            at=ctx.now(),
        )
        savepoint.rollback()
    with pytest.raises(RuntimeError), ctx.db.unit_of_work() as session:
        log.record(
            session,
            actor=CLI_ACTOR,
            chain=CHAIN,
            action=Action.USER_UPDATED,
            object_type="x",
            object_id=3,
            at=ctx.now(),
        )
        raise RuntimeError("the change failed")
    lines = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(line["after"], line["seq"]) for line in lines] == [(0, 1)]
    assert verify(ctx, witness).ok


def test_audit_verify_takes_a_witness_on_the_command_line(
    fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = tmp_path / "heads.log"
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("ALLOCATOR_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("ALLOCATOR_ENV", "test")
    monkeypatch.setenv("ALLOCATOR_AUDIT_WITNESS", str(witness))
    runner = CliRunner()
    assert runner.invoke(main, ["init"], catch_exceptions=False).exit_code == 0
    assert (
        runner.invoke(main, ["create-user", "alice", "--role", "admin"], catch_exceptions=False).exit_code
        == 0
    )
    assert witness.is_file()
    out = runner.invoke(main, ["audit", "verify"], catch_exceptions=False).output
    assert "chain system:" in out and f"witness {witness}: seen up to entry" in out
    monkeypatch.delenv("ALLOCATOR_AUDIT_WITNESS")
    out = runner.invoke(main, ["audit", "verify"], catch_exceptions=False).output
    assert "no witness given" in out
    out = runner.invoke(main, ["audit", "verify", "--witness", str(witness)], catch_exceptions=False).output
    assert "seen up to entry" in out
    result = runner.invoke(main, ["audit", "verify", "--witness", str(tmp_path / "nope.log")])
    assert result.exit_code == 1 and "--witness: no witness file" in result.output


@pytest.mark.req("AUD-04")
def test_a_witness_file_with_broken_bytes_or_no_access_is_reported_not_a_crash(
    ctx: ServiceContext, log: AuditLog, witness: Path
) -> None:
    append(ctx, log, 20)
    witness.write_bytes(witness.read_bytes() + b"\xff\xfe garbage\n")
    result = verify(ctx, witness)
    assert not result.ok and "witness line 3 is damaged" in result.problems[0].message
    assert not verify(ctx, witness.parent).ok  # a folder where the file should be: cannot be read
