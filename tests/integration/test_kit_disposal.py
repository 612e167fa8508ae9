"""Kit returns and destructions (issue 19): recorded by scan in batches (label MAC checked, another
trial's label refused), one transaction each with its kits' history, its document and its audit
entry; a destruction signed by re-authentication with a certificate that names no arm; refusals
change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

import kits as kitlib
from allocator.models import AuditEvent, KitDisposal, KitDisposalItem, KitEvent, PrintedDocument, Signature
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.signatures import SignatureRefused
from allocator.services.supply import disposal, kit_rules, reconciliation, shipments
from allocator.wording import Words
from tests.integration import test_kits
from tests.integration.test_kits import (
    ALL,
    ARM_WORDS,
    SIGNED,
    TRIAL,
    WRONG,
    Supply,
    audit,
    events_of,
    kit,
    messages,
)
from tests.unit.kits.kits_testdata import all_text, flat

s = test_kits.s  # the supply world of the kit tests (fixture)


def counts(ctx: ServiceContext) -> dict[str, int]:
    with ctx.db.reading() as session:
        return {
            model.__tablename__: session.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (KitDisposal, KitDisposalItem, KitEvent, PrintedDocument, Signature, AuditEvent)
        }


@pytest.mark.req("LBL-11", "ACC-12", "BLD-01")
def test_a_destruction_is_signed_scanned_and_certified_without_an_arm(s: Supply) -> None:
    ctx = s.ctx
    s.generate(40)
    delivered = s.deliver("P1", 8)
    s.change(delivered[1], "damaged")
    s.change(delivered[2], "expired")
    tag = kit_rules.mac(ctx)
    scans = [
        kitlib.build_payload(TRIAL, delivered[0], "K", tag),  # the label scanned
        kitlib.format_kit_number(delivered[1]),  # typed
        delivered[2],
        "",
    ]

    def destroy(lines: list[str], **kwargs: object) -> str:
        options: dict[str, object] = {"method": "incineration", "witness": "Dr Witness", "signature": SIGNED}
        options.update(kwargs)
        return disposal.record(
            ctx,
            s.pharmacist,
            TRIAL,
            "destruction",
            lines,
            scope=s.p1,
            **options,  # type: ignore[arg-type]
        )

    before = counts(ctx)
    forged = kitlib.build_payload(TRIAL, delivered[3], "K", lambda _m: bytes(32))
    other_trial = kitlib.build_payload("OTHER", delivered[3], "K", tag)
    refusals: list[tuple[type[Exception], list[str], dict[str, object], str]] = [
        (ValidationFailed, [*scans, forged], {}, "kits[4]"),
        (ValidationFailed, [*scans, other_trial], {}, "kits[4]"),
        (ValidationFailed, [*scans, delivered[0]], {}, "kits[4]"),  # scanned twice
        (ValidationFailed, [], {}, "kits"),
        (ValidationFailed, scans, {"method": " "}, "method"),
        (ValidationFailed, scans, {"signature": None}, "password"),
        (SignatureRefused, scans, {"signature": WRONG}, "password"),
    ]
    for error, lines, options, field in refusals:
        with pytest.raises(error) as refused:
            destroy(lines, **options)
        assert field in [e.field for e in refused.value.errors], messages(refused.value)
    with pytest.raises(ValidationFailed) as elsewhere:  # P2's pharmacist cannot reach P1's kits
        disposal.record(
            ctx, s.other_pharmacist, TRIAL, "destruction", scans, method="x", scope=s.p2, signature=SIGNED
        )
    assert [e.field for e in elsewhere.value.errors] == ["kits[0]", "kits[1]", "kits[2]"]
    after_refusals = counts(ctx)
    assert {k: after_refusals[k] - before[k] for k in before} == {
        "kit_disposal": 0,
        "kit_disposal_item": 0,
        "kit_event": 0,
        "printed_document": 0,
        "signature": 0,
        "audit_event": after_refusals["audit_event"] - before["audit_event"],  # the failed signature
    }
    assert {kit(ctx, n).status for n in delivered[:3]} == {"available", "damaged", "expired"}

    number = destroy(scans)
    assert number == "DES-P1-0001"
    assert [kit(ctx, n).status for n in delivered[:3]] == ["destroyed"] * 3
    assert events_of(ctx, delivered[1])[-1].reason == "DES-P1-0001 (damaged)"
    (entry,) = audit(ctx, "supply.kits_destroyed")
    assert entry.object_id == number and entry.site_code == "P1"
    rows = disposal.disposals(ctx, TRIAL, s.p1).records
    assert [(r.number, r.kind, r.site, r.kit_count, r.witness, r.signed) for r in rows] == [
        (number, "destruction", "P1", 3, "Dr Witness", True)
    ]
    assert disposal.disposals(ctx, TRIAL, s.p2) == disposal.DisposalPage(records=(), next_before=None)
    document_id, pdf = disposal.document(ctx, TRIAL, number, s.p1)
    assert disposal.document(ctx, TRIAL, number, s.p1) == (document_id, pdf)  # served again, unchanged
    with pytest.raises(NotFound):
        disposal.document(ctx, TRIAL, number, s.p2)
    text = flat(all_text(pdf))
    for expected in (
        "Certificat de destruction de kits",
        "Kit destruction certificate",
        "P1",
        number,
        "incineration",
        "Dr Witness",
        "Signed electronically by",
        "Signé électroniquement par",
        "kit destruction",
        *(kitlib.format_kit_number(n) for n in delivered[:3]),
        "damaged",
        "expired",
        "unused",
    ):
        assert expected in text, expected
    assert not ARM_WORDS.search(text.replace("Kit destruction", "")), text
    # A destroyed kit is destroyed once.
    with pytest.raises(ValidationFailed) as again:
        destroy([delivered[0]])
    assert "has already left the site's stock" in messages(again.value)


@pytest.mark.req("LBL-11")
def test_a_return_records_used_and_unused_kits_with_a_return_form(s: Supply) -> None:
    ctx = s.ctx
    s.generate(40)
    p1 = s.deliver("P1", 4)
    p2 = s.deliver("P2", 4)
    with pytest.raises(Conflict):  # one site per record
        disposal.record(ctx, s.manager, TRIAL, "return", [p1[0], p2[0]], method="courier", scope=ALL)
    s.change(p1[1], "quarantined", signed=True)
    with pytest.raises(ValidationFailed) as quarantined:  # waits for the sponsor's decision
        disposal.record(ctx, s.pharmacist, TRIAL, "return", [p1[1]], method="courier", scope=s.p1)
    assert "in quarantine" in messages(quarantined.value)
    number = disposal.record(
        ctx, s.pharmacist, TRIAL, "return", [p1[0], p1[2]], method="courier, box 3", scope=s.p1
    )
    assert number == "RET-P1-0001"
    assert (  # numbered per site
        disposal.record(ctx, s.other_pharmacist, TRIAL, "return", p2[:1], method="courier", scope=s.p2)
        == "RET-P2-0001"
    )
    assert {kit(ctx, n).status for n in (p1[0], p1[2])} == {"returned"}
    entry, _ = audit(ctx, "supply.kits_returned")
    assert entry.object_id == number
    _, pdf = disposal.document(ctx, TRIAL, number, s.p1)
    text = flat(all_text(pdf))
    for expected in (
        "Bordereau de retour de kits",
        "Kit return form",
        "courier, box 3",
        "Receipt at the depot",
    ):
        assert expected in text, expected
    assert "Signed electronically" not in text
    assert reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True).balanced


@pytest.mark.req("LBL-11", "REP-09", "BLD-12")
def test_reconciliation_closes_every_kits_life_per_site(s: Supply) -> None:
    """shipped = dispensed + returned + destroyed + lost + on hand + in transit, per site, counted
    from the shipments on one side and the kits on the other; a kit that went missing from the
    records is a discrepancy."""
    ctx = s.ctx
    s.generate(40)
    p1 = s.deliver("P1", 8)
    on_the_way = s.prepare("P2", 4)
    shipments.ship(ctx, s.manager, TRIAL, on_the_way.number)
    s.change(p1[0], "damaged")
    disposal.record(ctx, s.pharmacist, TRIAL, "return", p1[1:3], method="courier", scope=s.p1)
    disposal.record(
        ctx, s.pharmacist, TRIAL, "destruction", p1[:1], method="incineration", scope=s.p1, signature=SIGNED
    )
    s.change(p1[3], "lost")
    report = reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True)
    assert report.balanced, report.discrepancies
    assert [(b.site, b.shipped, b.terms, b.open) for b in report.balances] == [
        (
            "P1",
            8,
            {"dispensed": 0, "returned": 2, "destroyed": 1, "lost": 1, "on_hand": 4, "in_transit": 0},
            4,
        ),
        (
            "P2",
            4,
            {"dispensed": 0, "returned": 0, "destroyed": 0, "lost": 0, "on_hand": 0, "in_transit": 4},
            4,
        ),
    ]
    assert [
        b.site for b in reconciliation.reconciliation(ctx, TRIAL, s.p2, include_depot=False).balances
    ] == ["P2"]
    assert not ARM_WORDS.search(repr(report.balances))
    # A returned kit taken off the site's records behind the service's back is unaccounted for.
    with ctx.db.unit_of_work() as session:
        session.execute(text("UPDATE kit SET site_id = NULL WHERE kit_number = :n"), {"n": p1[1]})
    tampered = reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True)
    assert "site P1: 8 kits shipped but 7 accounted for" in tampered.discrepancies
    assert Words.of("fr").message("site P1: 8 kits shipped but 7 accounted for") != (
        "site P1: 8 kits shipped but 7 accounted for"
    )


@pytest.mark.req("LBL-11")
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"method": "incineration", "witness": "W" * 201}, "witness"),  # witness_name is String(200)
        ({"method": "m" * 2001, "witness": "Dr Witness"}, "method"),
    ],
)
def test_text_longer_than_its_column_is_refused_naming_the_field(
    s: Supply, options: dict[str, str], field: str
) -> None:
    """Review of issue 19: a witness longer than its column was a database error (a 500)."""
    ctx = s.ctx
    s.generate(12)
    p1 = s.deliver("P1", 2)
    before = counts(ctx)
    with pytest.raises(ValidationFailed) as refused:
        disposal.record(
            ctx, s.pharmacist, TRIAL, "destruction", p1[:1], scope=s.p1, signature=SIGNED, **options
        )
    assert [p.field for p in refused.value.errors] == [field]
    assert "must be at most" in refused.value.errors[0].message
    assert counts(ctx) == before and kit(ctx, p1[0]).status == "available"


@pytest.mark.req("REP-09")
def test_the_records_are_paged_newest_first_and_narrowed_in_sql(s: Supply) -> None:
    """Issue 21: the returns page reads a page of records, not every record the trial has made; a
    site's staff page through their own site's records only, and a cursor of another site's record
    reads as unknown."""
    ctx = s.ctx
    s.generate(40)
    p1 = s.deliver("P1", 6)
    p2 = s.deliver("P2", 2)
    made = [
        disposal.record(ctx, s.pharmacist, TRIAL, "return", [p1[i]], method="courier", scope=s.p1)
        for i in range(4)
    ]
    made.append(
        disposal.record(
            ctx,
            s.pharmacist,
            TRIAL,
            "destruction",
            [p1[4]],
            method="incineration",
            signature=SIGNED,
            scope=s.p1,
        )
    )
    theirs = disposal.record(ctx, s.other_pharmacist, TRIAL, "return", [p2[0]], method="courier", scope=s.p2)
    assert made == ["RET-P1-0001", "RET-P1-0002", "RET-P1-0003", "RET-P1-0004", "DES-P1-0001"]

    def numbers(scope: object = ALL, **query: object) -> tuple[list[str], str | None]:
        page = disposal.disposals(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        return [r.number for r in page.records], page.next_before

    assert numbers(limit=4) == ([theirs, "DES-P1-0001", "RET-P1-0004", "RET-P1-0003"], "RET-P1-0003")
    assert numbers(limit=4, before="RET-P1-0003") == (["RET-P1-0002", "RET-P1-0001"], None)
    assert numbers(limit=6) == ([theirs, *reversed(made)], None)  # exactly one page: no next
    assert numbers(site="P1", kind="return", limit=2) == (["RET-P1-0004", "RET-P1-0003"], "RET-P1-0003")
    assert numbers(site="P1", kind="return", limit=2, before="RET-P1-0003") == (
        ["RET-P1-0002", "RET-P1-0001"],
        None,
    )
    assert numbers(kind="destruction") == (["DES-P1-0001"], None)
    assert numbers(s.p2) == ([theirs], None)
    assert numbers(s.p1, limit=1) == (["DES-P1-0001"], "DES-P1-0001")
    refusals = [
        ({"before": theirs}, s.p1, "before"),  # another site's record: unknown, not "not yours"
        ({"before": "RET-P1-9999"}, ALL, "before"),
        ({"site": "P2"}, s.p1, "site"),
        ({"kind": "lost"}, ALL, "kind"),
        ({"limit": 0}, ALL, "limit"),
        ({"limit": disposal.MAX_DISPOSAL_PAGE + 1}, ALL, "limit"),
    ]
    for query, scope, field in refusals:
        with pytest.raises(ValidationFailed) as refused:
            disposal.disposals(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        assert [problem.field for problem in refused.value.errors] == [field], query
    with pytest.raises(ValidationFailed) as unknown:
        disposal.disposals(ctx, TRIAL, s.p1, before=theirs)
    # The same words as for a record that does not exist.
    assert messages(unknown.value) == f"unknown cursor before: no record {theirs!r} within your reach"
