"""The pharmacy's dispensation queue (issue 21): a page of subjects with kits still to dispense,
newest randomization first, narrowed by site in SQL; a site's pharmacist pages through their own
site only, and a cursor or a site beyond their reach reads as unknown (BLD-01: no arm anywhere)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allocator.models import Site
from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import ValidationFailed
from allocator.services.subjects import randomize, withdrawal
from tests.support import ELIGIBLE, GOOD_PASSWORD, Clock, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)


def _scope(ctx: ServiceContext, code: str) -> Scope:
    with ctx.db.reading() as session:
        site_id = session.execute(select(Site.id).where(Site.code == code)).scalar_one()
    return Scope(all_sites=False, site_ids=frozenset({site_id}))


@pytest.mark.req("BLD-01", "REP-04")
def test_the_queue_is_paged_newest_first_and_narrowed_in_sql(ctx: ServiceContext, clock: Clock) -> None:
    ready = ready_trial(ctx)
    made: list[randomize.RandomizationResult] = []
    for i, site in enumerate(("P1", "P2", "P1", "P1", "P2", "P1")):
        investigator = ready.investigator if site == "P1" else ready.investigator_p2
        made.append(
            randomize.randomize(
                ctx,
                investigator,
                TRIAL,
                randomize.RandomizationRequest(
                    site=site,
                    screening_number=f"{site}-{i + 1:04d}",
                    eligibility=ELIGIBLE,
                    strata={"admission_cause": "septic"},
                ),
                ALL,
            )
        )
        clock.advance(minutes=5)
    number = [r.subject_number for r in made]
    # Leaves the queue: every kit dispensed (made[2]), or withdrawn (made[3]). made[0] keeps the
    # two days not yet dispensed.
    dispensing.dispense(
        ctx,
        ready.pharmacist,
        TRIAL,
        number[2],
        {k.day: k.kit_number for k in made[2].kits},
        scope=ALL,
        signature=SIGNED,
    )
    dispensing.dispense(
        ctx,
        ready.pharmacist,
        TRIAL,
        number[0],
        {"D1": made[0].kits[0].kit_number},
        scope=ALL,
        signature=SIGNED,
    )
    withdrawal.withdraw(
        ctx,
        ready.investigator,
        TRIAL,
        number[3],
        kind="consent_withdrawn",
        effective_date=ctx.now().date(),
        reason="the patient withdrew consent",
        scope=ALL,
        signature=SIGNED,
        agreement_ref=None,
        is_investigator=True,
    )
    p1, p2 = _scope(ctx, "P1"), _scope(ctx, "P2")

    def page(scope: Scope = ALL, **query: object) -> tuple[list[str], str | None]:
        found = dispensing.queue(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        return [item.subject_number for item in found.items], found.next_before

    assert page() == ([number[5], number[4], number[1], number[0]], None)
    assert page(limit=2) == ([number[5], number[4]], number[4])
    assert page(limit=2, before=number[4]) == ([number[1], number[0]], None)
    assert page(limit=3, before=number[5]) == ([number[4], number[1], number[0]], None)  # exactly one page
    assert page(site="P2") == ([number[4], number[1]], None)
    assert page(site="P1", limit=1) == ([number[5]], number[5])
    assert page(site="P1", limit=1, before=number[5]) == ([number[0]], None)
    assert page(p1) == ([number[5], number[0]], None)
    assert page(p2, limit=1) == ([number[4]], number[4])
    # The cursor is looked for within the reader's sites, whatever the site filter.
    assert page(site="P1", before=number[4]) == ([number[0]], None)
    # A cursor that has left the queue still places the page (the cursor is a subject, not an entry).
    assert page(before=number[3]) == ([number[1], number[0]], None)

    first = dispensing.queue(ctx, TRIAL, ALL, before=number[1]).items[0]
    assert first.site == "P1" and first.randomization_number == made[0].randomization_number
    assert first.pending == tuple((k.day, k.kit_number) for k in made[0].kits[1:])  # D1 dispensed
    whole = dispensing.queue(ctx, TRIAL, ALL).items[0]
    assert whole.pending == tuple((k.day, k.kit_number) for k in made[5].kits)

    refusals = [
        ({"before": number[4]}, p1, "before"),  # another site's subject: unknown, not "not yours"
        ({"before": "P1-999"}, ALL, "before"),
        ({"site": "P2"}, p1, "site"),
        ({"site": "XX"}, ALL, "site"),
        ({"limit": 0}, ALL, "limit"),
        ({"limit": dispensing.MAX_QUEUE_PAGE + 1}, ALL, "limit"),
    ]
    for query, scope, field in refusals:
        with pytest.raises(ValidationFailed) as refused:
            dispensing.queue(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        assert [problem.field for problem in refused.value.errors] == [field], query
    with pytest.raises(ValidationFailed) as theirs:
        dispensing.queue(ctx, TRIAL, p1, before=number[4])
    with pytest.raises(ValidationFailed) as nobody:
        dispensing.queue(ctx, TRIAL, p1, before="P1-999")
    # The same words as for a subject that does not exist.
    assert theirs.value.errors[0].message.replace(number[4], "N") == nobody.value.errors[0].message.replace(
        "P1-999", "N"
    )
