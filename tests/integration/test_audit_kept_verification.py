"""The audit pages verify only what was appended since the last verification that found the chain
intact (issue 21); the kept verification is signed, and the full verification is unchanged."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from allocator import audit
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


@pytest.mark.req("AUD-03")
def test_a_broken_chain_is_not_kept_as_verified(ctx: ServiceContext) -> None:
    fill(ctx, 150)
    alter(ctx, 120)
    assert audit_trail.verify_since(ctx, CHAIN).result.first_bad == 120
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification)).first() is None


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
def test_a_whole_verification_found_intact_is_kept_for_the_pages(ctx: ServiceContext) -> None:
    # `allocator audit verify` and the self-check verify the whole chain (run daily): the pages
    # then start from the last checkpoint it verified, so the first view after a year of entries
    # does not read them all again (issue 21).
    fill(ctx, 250)
    whole = verify(ctx)
    assert whole.ok and whole.resume is not None and whole.resume[0] == 201
    audit_trail.keep_whole(ctx, [whole])
    with ctx.db.reading() as s:
        kept = s.execute(select(AuditVerification).where(AuditVerification.chain == CHAIN)).scalar_one()
    assert (kept.verified_seq, kept.resume_seq, kept.checkpoints) == (250, 201, 3)
    assert kept.resume_hash == whole.resume[1]

    alter(ctx, 57)  # behind the kept point: the page does not read it again
    fill(ctx, 30)
    view = audit_trail.verify_since(ctx, CHAIN)
    assert view.earlier is not None and view.earlier.verified_seq == 250
    assert view.result.ok and view.result.entries == 280 and view.result.checkpoints == 3
    assert verify(ctx).first_bad == 57  # the next whole verification names it, and is not kept
    audit_trail.keep_whole(ctx, [verify(ctx)])
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification.verified_seq)).scalar_one() == 280  # the view's


@pytest.mark.req("AUD-03")
def test_a_broken_or_empty_whole_chain_is_not_kept(ctx: ServiceContext) -> None:
    assert audit.kept_whole(verify(ctx), ctx.now()) is None  # no entries yet
    fill(ctx, 150)
    alter(ctx, 120)
    broken = verify(ctx)
    assert not broken.ok and broken.resume is None
    audit_trail.keep_whole(ctx, [broken])
    with ctx.db.reading() as s:
        assert s.execute(select(AuditVerification)).first() is None


@pytest.mark.req("AUD-03")
def test_after_a_whole_verification_the_unsigned_tail_is_read_again(ctx: ServiceContext) -> None:
    # The kept point is the last signed checkpoint (201), not the last entry verified (250): the
    # entries after it are covered by the head's signature alone, so every view reads them again.
    fill(ctx, 250)
    audit_trail.keep_whole(ctx, [verify(ctx)])
    alter(ctx, 230)
    found = audit_trail.verify_since(ctx, CHAIN)
    assert found.earlier is not None and found.earlier.verified_seq == 250
    assert found.result.first_bad == 230 and "altered" in found.result.problems[0].message
