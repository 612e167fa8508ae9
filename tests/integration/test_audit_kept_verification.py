"""The audit pages verify only what was appended since the last verification that found the chain
intact (issue 21); the kept verification is signed, and the full verification is unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from allocator import audit
from allocator.audit import AuditLog
from allocator.models import AuditEvent, AuditVerification
from allocator.services import audit_trail
from allocator.services.context import ServiceContext
from tests.integration.test_audit import CHAIN, fill, verify
from tests.support import tamper


def alter(ctx: ServiceContext, seq: int) -> None:
    tamper(
        ctx.db,
        "audit_event",
        "UPDATE audit_event SET reason = 'nothing happened' WHERE chain = :c AND seq = :s",
        c=CHAIN,
        s=seq,
    )


@pytest.mark.req("AUD-03")
def test_a_view_verifies_the_chain_and_keeps_the_result(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    first = audit_trail.verify_since(ctx, CHAIN)
    assert first.result.ok and first.result.entries == 250 and first.earlier is None
    assert first.result.checkpoints == 3 and first.result.unsigned_tail == 49
    with ctx.db.reading() as s:
        kept = s.execute(select(AuditVerification).where(AuditVerification.chain == CHAIN)).scalar_one()
    assert (kept.verified_seq, kept.resume_seq, kept.checkpoints) == (250, 201, 3)

    fill(ctx, 120)  # entries 251..370, one more checkpoint at 301
    second = audit_trail.verify_since(ctx, CHAIN)
    assert second.result.ok and second.result.entries == 370 and second.result.checkpoints == 4
    assert second.earlier is not None and second.earlier.verified_seq == 250
    assert second.result == verify(ctx)  # the same answer as the full verification
    third = audit_trail.verify_since(ctx, CHAIN)  # the second view's verification was kept
    assert third.earlier is not None and third.earlier.verified_seq == 370


@pytest.mark.req("AUD-03")
def test_entries_behind_the_kept_point_are_not_read_again_but_new_ones_are(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    alter(ctx, 57)  # behind the last checkpoint verified (201): a page view does not re-read it
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    full = verify(ctx)  # `allocator audit verify` still reads everything
    assert not full.ok and full.first_bad == 57

    alter(ctx, 230)  # after it: found by the next view
    found = audit_trail.verify_since(ctx, CHAIN).result
    assert not found.ok and found.first_bad == 230 and "altered" in found.problems[0].message
    # ... which resets the kept verification: no verification that started before can replace it.
    assert reset(ctx)


@pytest.mark.req("AUD-03")
def test_a_broken_chain_is_not_kept_as_verified(ctx: ServiceContext) -> None:
    fill(ctx, 150)
    alter(ctx, 120)
    assert audit_trail.verify_since(ctx, CHAIN).result.first_bad == 120
    assert reset(ctx)  # a row saying nothing was verified, nothing kept as verified


@pytest.mark.req("AUD-03")
def test_a_kept_verification_edited_by_hand_is_ignored(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    alter(ctx, 220)
    # An insider moves the kept point past the altered entry: its signature no longer matches,
    # so the next view verifies the whole chain and names the entry.
    with ctx.db.unit_of_work() as s:
        head = s.execute(
            select(AuditEvent.hash).where(AuditEvent.chain == CHAIN, AuditEvent.seq == 250)
        ).scalar_one()
        s.execute(
            text("UPDATE audit_verification SET resume_seq = 250, verified_seq = 250, resume_hash = :h"),
            {"h": head},
        )
    with ctx.db.reading() as s:
        assert audit.kept_verification(s.connection(), ctx.ring, CHAIN) is None
    result = audit_trail.verify_since(ctx, CHAIN)
    assert result.earlier is None and result.result.first_bad == 220


@pytest.mark.req("AUD-03")
def test_a_kept_verification_edited_by_hand_is_replaced_by_the_next_one(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    with ctx.db.unit_of_work() as s:  # moved past the end of the chain: its signature fails
        s.execute(text("UPDATE audit_verification SET verified_seq = 9999"))
    ignored = audit_trail.verify_since(ctx, CHAIN)  # verified whole, and kept again, signed
    assert ignored.earlier is None and ignored.result.ok
    fill(ctx, 10)
    again = audit_trail.verify_since(ctx, CHAIN)
    assert again.earlier is not None and again.earlier.verified_seq == 250 and again.result.entries == 260


@pytest.mark.req("AUD-03")
def test_a_whole_verification_found_intact_is_kept_for_the_pages(ctx: ServiceContext) -> None:
    # `allocator audit verify` and the self-check verify the whole chain (run daily): the pages
    # then start from the last checkpoint it verified, so the first view after a year of entries
    # does not read them all again (issue 21).
    fill(ctx, 250)
    checked, marks = whole(ctx)
    assert checked.ok and checked.resume is not None and checked.resume[0] == 201
    audit_trail.keep_whole(ctx, [checked], marks)
    with ctx.db.reading() as s:
        kept = s.execute(select(AuditVerification).where(AuditVerification.chain == CHAIN)).scalar_one()
    assert (kept.verified_seq, kept.resume_seq, kept.checkpoints) == (250, 201, 3)
    assert kept.resume_hash == checked.resume[1]

    alter(ctx, 57)  # behind the kept point: the page does not read it again
    fill(ctx, 30)
    view = audit_trail.verify_since(ctx, CHAIN)
    assert view.earlier is not None and view.earlier.verified_seq == 250
    assert view.result.ok and view.result.entries == 280 and view.result.checkpoints == 3
    assert verify(ctx).first_bad == 57  # the next whole verification names it (see below)


@pytest.mark.req("AUD-03")
def test_a_broken_or_empty_whole_chain_is_not_kept(ctx: ServiceContext) -> None:
    assert audit.kept_whole(verify(ctx), ctx.now()) is None  # no entries yet
    fill(ctx, 150)
    alter(ctx, 120)
    broken, marks = whole(ctx)
    assert not broken.ok and broken.resume is None
    audit_trail.keep_whole(ctx, [broken], marks)
    assert reset(ctx)  # nothing kept as verified


@pytest.mark.req("AUD-03")
def test_after_a_whole_verification_the_unsigned_tail_is_read_again(ctx: ServiceContext) -> None:
    # The kept point is the last signed checkpoint (201), not the last entry verified (250): the
    # entries after it are covered by the head's signature alone, so every view reads them again.
    fill(ctx, 250)
    checked, marks = whole(ctx)
    audit_trail.keep_whole(ctx, [checked], marks)
    alter(ctx, 230)
    found = audit_trail.verify_since(ctx, CHAIN)
    assert found.earlier is not None and found.earlier.verified_seq == 250
    assert found.result.first_bad == 230 and "altered" in found.result.problems[0].message


def whole(
    ctx: ServiceContext, witness: Path | None = None
) -> tuple[audit.VerifyResult, dict[str, bytes | None]]:
    """`allocator audit verify` of the chain: what is kept before it starts, then the verification."""
    marks = audit_trail.verification_marks(ctx, [CHAIN])
    with ctx.db.reading() as session:
        return audit.verify_chain(session.connection(), ctx.ring, CHAIN, witness), marks


def reset(ctx: ServiceContext) -> bool:
    """Whether the kept verification says nothing was verified (reset after a break was found)."""
    with ctx.db.reading() as session:
        kept = audit.kept_verification(session.connection(), ctx.ring, CHAIN)
    return kept is not None and kept.verified_seq == 0


def _witnessed(ctx: ServiceContext, witness: Path) -> tuple[ServiceContext, AuditLog]:
    """The context of a server whose ALLOCATOR_AUDIT_WITNESS is `witness`, and its audit log."""
    witness.parent.mkdir()
    witnessed = replace(ctx, settings=replace(ctx.settings, audit_witness=witness))
    return witnessed, AuditLog(ring=ctx.ring, checkpoint_every=100, witness=witness)


def _unwitness_line(witness: Path, line: int) -> None:
    """Someone who can write the witness file changes what it says it saw in one line."""
    lines = witness.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[line])
    record["entries"][0] = "f" * 64
    lines[line] = json.dumps(record)
    witness.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.req("AUD-03", "AUD-04")
def test_a_whole_verification_made_without_the_pages_witness_is_not_used_by_them(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    # The server compares the entries with its witness (ALLOCATOR_AUDIT_WITNESS); a cron job run
    # without it finds the chain intact. Used by the pages, its verification would stop them
    # comparing the entries behind it with what their witness saw.
    witness = tmp_path / "witness" / "heads.log"
    server, log = _witnessed(ctx, witness)
    for _ in range(3):  # three transactions: three lines in the witness
        fill(server, 10, log)
    _unwitness_line(witness, 1)
    assert audit_trail.verify_since(server, CHAIN).result.first_bad is not None
    cron, marks = whole(ctx)  # `allocator audit verify` in an environment without the witness
    assert cron.ok and cron.witness is None and ctx.settings.audit_witness is None
    audit_trail.keep_whole(ctx, [cron], marks)
    with ctx.db.reading() as s:  # kept, for readers without a witness
        assert audit.kept_verification(s.connection(), ctx.ring, CHAIN) is not None
    found = audit_trail.verify_since(server, CHAIN)
    assert found.earlier is None and not found.result.ok and "witness" in found.result.problems[0].message


@pytest.mark.req("AUD-03", "AUD-04")
def test_a_whole_verification_with_the_pages_witness_is_kept(ctx: ServiceContext, tmp_path: Path) -> None:
    witness = tmp_path / "witness" / "heads.log"
    witnessed, log = _witnessed(ctx, witness)
    fill(witnessed, 150, log)
    checked, marks = whole(ctx, witness.parent / ".." / "witness" / "heads.log")
    assert checked.ok and checked.witness is not None  # the same file, named another way
    audit_trail.keep_whole(witnessed, [checked], marks)
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification.verified_seq)).scalar_one() == 150
    fill(witnessed, 5, log)
    page = audit_trail.verify_since(witnessed, CHAIN)  # the pages use it
    assert page.earlier is not None and page.earlier.verified_seq == 150 and page.result.ok


@pytest.mark.req("AUD-03")
def test_a_whole_verification_that_finds_a_break_makes_the_pages_verify_whole_again(
    ctx: ServiceContext,
) -> None:
    fill(ctx, 250)
    assert audit_trail.verify_since(ctx, CHAIN).result.ok  # kept
    alter(ctx, 57)  # behind the kept point: a page alone does not see it
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    broken, marks = whole(ctx)  # the daily `allocator audit verify` does
    assert broken.first_bad == 57
    audit_trail.keep_whole(ctx, [broken], marks)
    page = audit_trail.verify_since(ctx, CHAIN)
    assert page.earlier is None and page.result.first_bad == 57  # and now the pages say so too


@pytest.mark.req("AUD-03")
def test_a_database_that_refuses_the_write_leaves_the_verdict_standing(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(ctx, 120)
    checked, marks = whole(ctx)

    def refused(*_args: object) -> None:
        raise OperationalError("UPDATE audit_verification", {}, Exception("read-only transaction"))

    monkeypatch.setattr(audit, "keep_verification", refused)
    monkeypatch.setattr(audit, "forget_verification", refused)
    audit_trail.keep_whole(ctx, [checked, replace(checked, ok=False, first_bad=3)], marks)  # no exception
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification)).first() is None


@pytest.mark.req("AUD-03")
def test_a_page_never_puts_back_a_verification_let_go_while_it_verified(ctx: ServiceContext) -> None:
    fill(ctx, 250)
    assert audit_trail.verify_since(ctx, CHAIN).result.ok
    fill(ctx, 30)
    with ctx.db.reading() as s:
        before = audit.verification_mark(s.connection(), CHAIN)
        read = audit.kept_verification(s.connection(), ctx.ring, CHAIN)
        assert read is not None
        _result, keep = audit.verify_chain_since(s.connection(), ctx.ring, CHAIN, read, ctx.now())
    assert keep is not None and keep.verified_seq == 280
    # Meanwhile a whole verification found a break behind the kept point and reset it: the page,
    # which never looked behind it, must not keep its own in its place.
    with ctx.db.unit_of_work() as s:
        audit.forget_verification(s.connection(), ctx.ring, CHAIN, ctx.now(), None)
    with ctx.db.unit_of_work() as s:
        audit.keep_verification(s.connection(), ctx.ring, keep, before)
    assert reset(ctx)
    assert audit_trail.verify_since(ctx, CHAIN).earlier is None  # the next page verifies it whole


@pytest.mark.req("AUD-03")
def test_a_whole_verification_never_puts_back_one_reset_while_it_verified(ctx: ServiceContext) -> None:
    # Cron's verification A reads the chain intact; then an entry is altered, and verification B
    # (the self-check, or a second run) finds the break and resets the kept one. A ends after B:
    # kept, it would tell the pages that the altered entry was verified.
    fill(ctx, 250)
    first, marks = whole(ctx)
    assert first.ok
    alter(ctx, 120)
    second, second_marks = whole(ctx)
    assert second.first_bad == 120
    audit_trail.keep_whole(ctx, [second], second_marks)
    audit_trail.keep_whole(ctx, [first], marks)
    assert reset(ctx)
    page = audit_trail.verify_since(ctx, CHAIN)
    assert page.earlier is None and page.result.first_bad == 120


@pytest.mark.req("AUD-03")
def test_a_whole_verification_that_found_nothing_kept_never_takes_the_place_of_a_reset(
    ctx: ServiceContext,
) -> None:
    fill(ctx, 250)
    first, marks = whole(ctx)  # nothing kept before it started
    assert first.ok and marks == {CHAIN: None}
    alter(ctx, 120)
    second, second_marks = whole(ctx)
    audit_trail.keep_whole(ctx, [second], second_marks)  # the break found: a reset row
    audit_trail.keep_whole(ctx, [first], marks)  # ends last: there is a row now, not none
    assert reset(ctx)


@pytest.mark.req("AUD-03", "AUD-04")
def test_a_verification_against_a_missing_witness_file_is_not_kept(
    ctx: ServiceContext, tmp_path: Path
) -> None:
    # The witness's volume not mounted where the self-check (or a page) runs: the entries were
    # compared with nothing. Kept under the witness's name, it would let the pages skip its lines.
    absent = tmp_path / "not-mounted" / "heads.log"
    server = replace(ctx, settings=replace(ctx.settings, audit_witness=absent))
    fill(ctx, 150)
    checked, marks = whole(ctx, absent)
    assert checked.ok and checked.witness == absent and checked.witnessed_upto == 0
    audit_trail.keep_whole(server, [checked], marks)
    assert audit_trail.verify_since(server, CHAIN).result.ok  # a page: verified, not kept either
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification)).first() is None
    # A file there that saw none of the chain's entries (a stand-in, or another chain's witness)
    # compared nothing either.
    absent.parent.mkdir()
    absent.write_text("", encoding="utf-8")
    checked, marks = whole(ctx, absent)
    assert checked.ok and checked.witnessed_upto == 0
    audit_trail.keep_whole(server, [checked], marks)
    assert audit_trail.verify_since(server, CHAIN).result.ok
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification)).first() is None
