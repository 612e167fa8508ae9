"""Issue 16, point 2: an allocation checks the one slot it uses (its MAC and its sealed record,
both bound to the position), at a cost that does not grow with the list; a slot tampered with
before its turn is caught by the full digest check, which then blocks the list (RND-10, ACC-15)."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select, text

from allocator import dbguards
from allocator.models import Slot, Stratum, Subject
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.lists import integrity, storage
from allocator.services.subjects import randomize
from tests.support import CLI_ACTOR, ELIGIBLE, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SEPTIC = "site=P1;admission_cause=septic"


def _request(number: str, cause: str = "septic") -> randomize.RandomizationRequest:
    return randomize.RandomizationRequest(
        site="P1", screening_number=number, eligibility=dict(ELIGIBLE), strata={"admission_cause": cause}
    )


def _unguarded(ctx: ServiceContext, statement: str, **params: object) -> None:
    with ctx.db.unit_of_work() as s:
        for ddl in dbguards.unguard(ctx.db.dialect, "slot", updates=False):
            s.execute(text(ddl))
        s.execute(text(statement), params)


def _slot(ctx: ServiceContext, position: int, key: str = SEPTIC) -> tuple[int, str, bytes, bytes | None]:
    with ctx.db.reading() as s:
        row = s.execute(
            select(Slot.id, Slot.randomization_number, Slot.sealed, Slot.mac)
            .join(Stratum, Stratum.id == Slot.stratum_id)
            .where(Stratum.key == key, Slot.position == position)
        ).one()
        return row.id, row.randomization_number, bytes(row.sealed), row.mac and bytes(row.mac)


def _subjects(ctx: ServiceContext) -> int:
    with ctx.db.reading() as s:
        return s.execute(select(func.count()).select_from(Subject)).scalar_one()


def _tamper_next(ctx: ServiceContext, kind: str) -> None:
    slot_id, number, sealed, mac = _slot(ctx, 1)
    if kind == "number":
        _unguarded(ctx, "UPDATE slot SET randomization_number = 'R-00000000' WHERE id = :i", i=slot_id)
    elif kind == "sealed":
        _unguarded(
            ctx,
            "UPDATE slot SET sealed = :b WHERE id = :i",
            b=sealed[:-1] + bytes([sealed[-1] ^ 1]),
            i=slot_id,
        )
    elif kind == "mac":
        assert mac is not None
        _unguarded(
            ctx, "UPDATE slot SET mac = :m WHERE id = :i", m=mac[:-1] + bytes([mac[-1] ^ 1]), i=slot_id
        )
    elif kind == "swapped":  # slots 1 and 2 exchange number, record and MAC: each bound to its own
        id2, number2, sealed2, mac2 = _slot(ctx, 2)
        swap = "UPDATE slot SET randomization_number = :n, sealed = :b, mac = :m WHERE id = :i"
        _unguarded(ctx, "UPDATE slot SET randomization_number = 'R-TEMP' WHERE id = :i", i=id2)
        _unguarded(ctx, swap, n=number2, b=sealed2, m=mac2, i=slot_id)
        _unguarded(ctx, swap, n=number, b=sealed, m=mac, i=id2)
    elif kind == "removed":
        _unguarded(ctx, "DELETE FROM slot WHERE id = :i", i=slot_id)
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.req("RND-10")
@pytest.mark.parametrize("kind", ["number", "sealed", "mac", "swapped", "removed"])
def test_the_slot_about_to_be_used_is_checked_before_it_is_used(ctx: ServiceContext, kind: str) -> None:
    ready = ready_trial(ctx)
    _tamper_next(ctx, kind)
    with pytest.raises(storage.ListIntegrityFailure):
        randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0001"), ALL)
    assert _subjects(ctx) == 0  # nothing allocated, nothing written
    randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0002", cause="non_septic"), ALL)


@pytest.mark.req("RND-10", "ACC-15")
def test_a_slot_tampered_before_its_turn_is_caught_by_the_full_check_which_blocks_the_list(
    ctx: ServiceContext,
) -> None:
    ready = ready_trial(ctx)
    slot_id = _slot(ctx, 5)[0]
    _unguarded(ctx, "UPDATE slot SET randomization_number = 'R-00000000' WHERE id = :i", i=slot_id)
    # The allocation checks what it uses (slot 1), not the whole stratum: it goes on.
    randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0001"), ALL)
    [result] = integrity.check_integrity(ctx, CLI_ACTOR, TRIAL)  # start-up, daily, or on demand
    assert not result.ok and any(SEPTIC in p for p in result.problems)
    with pytest.raises(storage.ListIntegrityFailure, match="failed its last integrity check"):
        randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0002", cause="non_septic"), ALL)


@pytest.mark.req("RND-10")
def test_a_stratum_stored_without_macs_is_checked_whole_as_before(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    with ctx.db.reading() as s:
        stratum_id = s.execute(select(Stratum.id).where(Stratum.key == SEPTIC)).scalar_one()
    _unguarded(ctx, "UPDATE slot SET mac = NULL WHERE stratum_id = :s", s=stratum_id)  # before 0012
    randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0001"), ALL)
    _unguarded(ctx, "UPDATE slot SET randomization_number = 'R-00000000' WHERE id = :i", i=_slot(ctx, 5)[0])
    with pytest.raises(storage.ListIntegrityFailure, match="recorded digest"):
        randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0002"), ALL)


def test_an_allocation_reads_one_slot_whatever_the_size_of_the_stratum(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    statements: list[str] = []
    engine = ctx.db.write_engine

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        randomize.randomize(ctx, ready.investigator, TRIAL, _request("P1-0001"), ALL)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    slot_reads = [s for s in statements if "FROM slot" in s]
    assert len(slot_reads) == 1 and "slot.position =" in slot_reads[0], slot_reads
