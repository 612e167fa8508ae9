"""Expiry changes and relabelling (issue 19; LBL-05, LBL-09, LBL-12, ACC-12): a signed expiry change
puts every kit of the batch not yet dispensed on the relabelling list; such a kit is neither drawn
nor dispensed until its new label, printed on the relabelling sheet with the usual QR content, is
confirmed by scan."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

import kits as kitlib
from allocator.models import AuditEvent, Kit, PrintedDocument
from allocator.permissions import Scope
from allocator.services import dispensing
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.signatures import SignatureRequest
from allocator.services.subjects.randomize import KitsUnavailable
from allocator.services.supply import kit_rules, kit_status, relabelling
from tests.support import GOOD_PASSWORD, person, randomization, ready_trial
from tests.unit.kits.kits_testdata import decode_qr_codes, page_count

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = SignatureRequest(password=GOOD_PASSWORD)


def pending_at(ctx: ServiceContext, place: str) -> list[str]:
    places = {p.place: p for p in relabelling.pending(ctx, TRIAL, ALL, include_depot=True)}
    return [k.number for k in places[place].kits] if place in places else []


@pytest.mark.req("LBL-05", "LBL-09", "LBL-12", "ACC-12")
def test_a_changed_expiry_holds_every_kit_until_its_new_label_is_scanned(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx, kits_per_site=36)
    manager = person(ctx, "tman", "trial_manager")
    first = randomization(ctx, ready.investigator, "P1-0001")
    allocated = {k.day: k.kit_number for k in first.kits}
    new_expiry = ctx.now().date() + timedelta(days=300)
    kit_status.update_batch_expiry(
        ctx, manager, TRIAL, "LOT-1", new_expiry, reason="re-test extended the shelf life", signature=SIGNED
    )
    with ctx.db.reading() as s:
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "batch.expiry_changed")).scalar_one()
        assert (
            json.loads(entry.new_values or "{}")["relabel"] == 36 + 36 + 8
        )  # P1 (3 allocated), P2 and the depot
    p1 = pending_at(ctx, "P1")
    assert len(p1) == 36 and set(allocated.values()) <= set(p1)
    assert len(pending_at(ctx, "P2")) == 36 and len(pending_at(ctx, "depot")) == 8

    # Nothing awaiting relabelling is drawn or dispensed.
    with pytest.raises(KitsUnavailable):
        randomization(ctx, ready.investigator, "P1-0002")
    scans = {day: kitlib.format_kit_number(number) for day, number in allocated.items()}
    with pytest.raises(Conflict) as refused:
        dispensing.dispense(
            ctx, ready.pharmacist, TRIAL, first.subject_number, scans, scope=ALL, signature=SIGNED
        )
    assert {p.message for p in refused.value.errors} == {"awaits its new expiry label: relabel it first"}

    # A scan before the sheet is printed is refused; the sheet carries the usual QR content.
    tag = kit_rules.mac(ctx)
    with pytest.raises(Conflict, match="print the relabelling sheet first"):
        relabelling.confirm(ctx, ready.pharmacist, TRIAL, p1[0], scope=ALL, depot=False)
    document_id, pdf = relabelling.print_sheet(ctx, ready.pharmacist, TRIAL, "P1", scope=ALL, depot=False)
    assert document_id.startswith("RLB-")
    decoded = {placed.text for page in range(page_count(pdf)) for placed in decode_qr_codes(pdf, page)}
    assert decoded == {kitlib.build_payload(TRIAL, n, kit_rules.KIT_UNIT, tag) for n in p1}
    again_id, _ = relabelling.print_sheet(ctx, ready.pharmacist, TRIAL, "P1", scope=ALL, depot=False)
    with ctx.db.reading() as s:
        reprints = dict(
            s.execute(
                select(PrintedDocument.document_id, PrintedDocument.reprint_number).where(
                    PrintedDocument.kind == "kit_relabels"
                )
            ).all()
        )
    assert reprints == {document_id: 0, again_id: 1}  # the second print is a DUPLICATA

    # Scanning each new label releases the kit; P1 randomizes and dispenses again.
    for number in p1:
        relabelling.confirm(
            ctx,
            ready.pharmacist,
            TRIAL,
            kitlib.build_payload(TRIAL, number, "K", tag),
            scope=ALL,
            depot=False,
        )
    assert pending_at(ctx, "P1") == []
    with pytest.raises(Conflict, match="awaits no relabelling"):
        relabelling.confirm(ctx, ready.pharmacist, TRIAL, p1[0], scope=ALL, depot=False)
    randomization(ctx, ready.investigator, "P1-0002")
    done = dispensing.dispense(
        ctx, ready.pharmacist, TRIAL, first.subject_number, scans, scope=ALL, signature=SIGNED
    )
    assert done is not None
    with ctx.db.reading() as s:
        assert (
            s.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "kit.relabelled")
            ).scalar_one()
            == 36
        )
        assert set(s.execute(select(Kit.expiry_date).where(Kit.kit_number.in_(p1))).scalars()) == {new_expiry}


def test_relabelling_is_scoped_and_refuses_bad_scans(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx, kits_per_site=36)
    manager = person(ctx, "tman", "trial_manager")
    kit_status.update_batch_expiry(
        ctx,
        manager,
        TRIAL,
        "LOT-1",
        ctx.now().date() + timedelta(days=200),
        reason="shorter",
        signature=SIGNED,
    )
    with ctx.db.reading() as s:
        from allocator.models import Site

        p1 = s.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    only_p1 = Scope(all_sites=False, site_ids=frozenset({p1}))
    assert [p.place for p in relabelling.pending(ctx, TRIAL, only_p1, include_depot=False)] == ["P1"]
    with pytest.raises(NotFound):
        relabelling.print_sheet(ctx, ready.pharmacist, TRIAL, "P2", scope=only_p1, depot=False)
    with pytest.raises(NotFound):
        relabelling.print_sheet(ctx, ready.pharmacist, TRIAL, "depot", scope=only_p1, depot=False)
    with pytest.raises(ValidationFailed) as unreadable:
        relabelling.confirm(ctx, ready.pharmacist, TRIAL, "1234-5678", scope=only_p1, depot=False)
    assert [p.field for p in unreadable.value.errors] == ["kit"]
    p2_kit = pending_at(ctx, "P2")[0]
    with pytest.raises(NotFound):
        relabelling.confirm(ctx, ready.pharmacist, TRIAL, p2_kit, scope=only_p1, depot=False)
    # The depot prints and confirms its own kits.
    relabelling.print_sheet(ctx, manager, TRIAL, "depot", scope=ALL, depot=True)
    depot_kit = pending_at(ctx, "depot")[0]
    relabelling.confirm(ctx, manager, TRIAL, depot_kit, scope=ALL, depot=True)
    assert depot_kit not in pending_at(ctx, "depot")


@pytest.mark.req("LBL-05")
@pytest.mark.parametrize("decision", ["release", "destroy"])
def test_a_refrigerator_excursion_holds_the_kits_already_allocated_there(
    ctx: ServiceContext, decision: str
) -> None:
    """A review of issue 19: a refrigerator excursion quarantined the site's available kits but left
    the kits already allocated to a patient (in the same refrigerator) dispensable. They stay
    allocated (no lifecycle step leads from allocated to quarantined) but are refused at dispensing
    until the sponsor releases the excursion; after a decision to destroy they stay refused (the
    pharmacist replaces them through the subject)."""
    from allocator.services.supply import excursions

    ready = ready_trial(ctx, kits_per_site=36)
    manager = person(ctx, "tman", "trial_manager")
    first = randomization(ctx, ready.investigator, "P1-0001")
    scans = {k.day: kitlib.format_kit_number(k.kit_number) for k in first.kits}
    report = excursions.report_excursion(
        ctx,
        ready.pharmacist,
        TRIAL,
        place="site",
        site_code="P1",
        minimum="1",
        maximum="12",
        duration_minutes="90",
        note="door left open",
        logger=excursions.LoggerFile("fridge.csv", b"time,temperature\n10:00,12.0\n"),
        scope=ALL,
        signature=SIGNED,
    )
    with pytest.raises(Conflict) as refused:
        dispensing.dispense(
            ctx, ready.pharmacist, TRIAL, first.subject_number, scans, scope=ALL, signature=SIGNED
        )
    assert {p.message for p in refused.value.errors} == {
        "held by a temperature excursion: wait for the decision or replace it"
    }
    excursions.decide_excursion(
        ctx, manager, TRIAL, report.number, decision, reason="logger read", signature=SIGNED
    )
    if decision == "destroy":
        with pytest.raises(Conflict):
            dispensing.dispense(
                ctx, ready.pharmacist, TRIAL, first.subject_number, scans, scope=ALL, signature=SIGNED
            )
    else:
        assert dispensing.dispense(
            ctx, ready.pharmacist, TRIAL, first.subject_number, scans, scope=ALL, signature=SIGNED
        )
