"""The full-trial simulation of VAL-02: the 170 subjects of IFNG-PAIS arrive in random order over
both sites and both causes (the four strata), through the services. Along the way: a kit
replacement, an emergency unblinding and a randomization in error. At the end every subject holds
the next free slot of its stratum in order of arrival (the master list, read back from the sealed
slots and checked against its regeneration from the seed), every kit given matches its slot's arm and
is given once, the supply reconciliation balances, and the participant flow counts what was done."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from sqlalchemy import select

from allocator import crypto
from allocator.models import RandomizationList, Slot, Stratum, Subject
from allocator.permissions import Scope
from allocator.services import dispensing, signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.lists import integrity
from allocator.services.lists.storage import slot_binding
from allocator.services.reports import filters, participant_flow
from allocator.services.subjects import corrections, randomize
from allocator.services.supply import reconciliation
from tests.support import ELIGIBLE, GOOD_PASSWORD, Clock, arm_of, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
STRATA = {("P1", "septic"): 43, ("P1", "non_septic"): 43, ("P2", "septic"): 42, ("P2", "non_septic"): 42}


def slot_arms(ctx: ServiceContext, label: str) -> dict[int, tuple[str, int, str]]:
    """slot id -> (stratum key, position, arm), opened from the sealed slots for the test's eyes."""
    out = {}
    with ctx.db.reading() as s:
        rows = s.execute(select(Slot, Stratum.key).join(Stratum, Stratum.id == Slot.stratum_id)).all()
    for slot, key in rows:
        record = crypto.open_json(
            ctx.ring, crypto.Purpose.LISTS, slot.sealed, slot_binding(TRIAL, label, key, slot.position)
        )
        assert isinstance(record, dict)
        out[slot.id] = (key, slot.position, str(record["arm"]))
    return out


@pytest.mark.req("VAL-02", "RND-05", "RND-08", "BLD-04")
def test_a_whole_trial_of_170_subjects_follows_the_master_list(ctx: ServiceContext, clock: Clock) -> None:
    ready = ready_trial(ctx, kits_per_site=300)
    rng = random.Random(20261205)
    arrivals = [stratum for stratum, count in STRATA.items() for _ in range(count)]
    rng.shuffle(arrivals)
    order: dict[str, list[str]] = defaultdict(list)  # stratum key -> subject numbers in arrival order
    given: dict[str, list[str]] = {}  # subject number -> kit numbers
    for k, (site, cause) in enumerate(arrivals, start=1):
        investigator = ready.investigator if site == "P1" else ready.investigator_p2
        request = randomize.RandomizationRequest(
            site=site,
            screening_number=f"{site}-{k:04d}",
            eligibility=dict(ELIGIBLE),
            strata={"admission_cause": cause},
        )
        result = randomize.randomize(ctx, investigator, TRIAL, request, ALL)
        order[f"site={site};admission_cause={cause}"].append(result.subject_number)
        given[result.subject_number] = [kit.kit_number for kit in result.kits]
        if k % 40 == 0:
            clock.advance(hours=7)

    in_error = order["site=P1;admission_cause=septic"][0]
    corrections.mark_in_error(
        ctx,
        ready.investigator,
        TRIAL,
        in_error,
        reason="consent withdrawn before",
        scope=ALL,
        signature=SIGNED,
    )
    unblinded = order["site=P1;admission_cause=non_septic"][0]
    unblinding.emergency_unblind(
        ctx,
        ready.investigator,
        TRIAL,
        unblinded,
        reason_category="serious_adverse_event",
        reason="severe reaction needing a specific treatment",
        confirmed=True,
        signature=SIGNED,
        scope=ALL,
    )
    replaced = order["site=P1;admission_cause=septic"][1]
    _, new_kit = dispensing.replace_kit(
        ctx, ready.pharmacist, TRIAL, replaced, "D2", cause="damaged", reason="vial dropped", scope=ALL
    )
    given[replaced].append(new_kit)

    with ctx.db.reading() as s:
        subjects = {row.subject_number: row.slot_id for row in s.execute(select(Subject)).scalars()}
        label = s.execute(
            select(RandomizationList.label).where(RandomizationList.id == ready.list_id)
        ).scalar_one()
    assert len(subjects) == 170
    slots = slot_arms(ctx, label)
    for key, numbers in order.items():
        # RND-05: the n-th arrival of a stratum holds its n-th slot.
        assert [slots[subjects[n]][:2] for n in numbers] == [(key, p) for p in range(1, len(numbers) + 1)]
    all_kits = [kit for kits in given.values() for kit in kits]
    assert len(all_kits) == len(set(all_kits))  # no kit given twice, the replacement included
    for number, kits in given.items():
        assert {arm_of(ctx, kit) for kit in kits} == {slots[subjects[number]][2]}, number  # BLD-04
    # The stored list is still the one its seed regenerates, slot for slot.
    assert all(r.ok for r in integrity.verify_lists(ctx, ready.statistician, TRIAL))
    report = reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True)
    assert report.balanced and report.discrepancies == ()
    # The CONSORT flow counts every subject, the one randomized in error included (ITT).
    flow = participant_flow.participant_flow(ctx, TRIAL, ALL, filters.ReportFilter())
    assert (flow.counts[0].randomized, flow.counts[0].in_error) == (170, 1)
    assert [c.randomized for c in flow.counts[1:]] == [86, 84]
    by_stratum = {(site, stratum): c.randomized for site, stratum, c in flow.by_stratum}
    assert sorted(by_stratum.values()) == sorted(STRATA.values()), by_stratum
