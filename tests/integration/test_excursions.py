"""Temperature excursions (issue 19; LBL-05, ACC-12, BLD-04, BLD-12): a report quarantines every
affected kit at once, of both arms, signed and audited in one transaction; the sponsor's signed
decision releases or destroys them; bad input and refused signatures change nothing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select, text

from allocator.models import AuditEvent, ExcursionKit, Kit, Signature, TemperatureExcursion
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.signatures import SignatureRefused, SignatureRequest
from allocator.services.supply import excursions, kit_lists, shipments
from tests.support import CLI_ACTOR, GOOD_PASSWORD, arm_of, code_break_sheets, load_ifn, person

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = SignatureRequest(password=GOOD_PASSWORD)
CSV = excursions.LoggerFile("logger 2026-12-05.csv", b"time,temperature\n10:00,5.1\n10:30,11.2\n")


def statuses(ctx: ServiceContext, numbers: list[str] | tuple[str, ...]) -> list[str]:
    with ctx.db.reading() as s:
        found = dict(s.execute(select(Kit.kit_number, Kit.status).where(Kit.kit_number.in_(numbers))).all())
    return [found[n] for n in numbers]


def site_of(ctx: ServiceContext, site_code: str) -> Scope:
    from allocator.models import Site

    with ctx.db.reading() as s:
        return Scope(
            all_sites=False,
            site_ids=frozenset({s.execute(select(Site.id).where(Site.code == site_code)).scalar_one()}),
        )


@pytest.fixture
def world(ctx: ServiceContext) -> ServiceContext:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=24, lot_code="LOT-1", expiry=date(2027, 6, 30))
    code_break_sheets(ctx)
    return ctx


def in_transit(ctx: ServiceContext, site: str, count: int) -> shipments.ShipmentView:
    view = shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, site, count)
    shipments.ship(ctx, CLI_ACTOR, TRIAL, view.number)
    return view


def report(ctx: ServiceContext, actor: object, **overrides: object) -> excursions.ExcursionView:
    fields: dict[str, object] = {
        "place": "shipment",
        "shipment_number": "SH-0001",
        "minimum": "4,5",
        "maximum": "11.2",
        "duration_minutes": "95",
        "note": "parcel left on the dock",
        "logger": CSV,
        "scope": ALL,
        "signature": SIGNED,
    }
    fields.update(overrides)
    return excursions.report_excursion(ctx, actor, TRIAL, **fields)  # type: ignore[arg-type]


@pytest.mark.req("LBL-05", "ACC-12", "BLD-04")
def test_a_shipment_excursion_quarantines_both_arms_and_a_signed_release_puts_them_back(
    world: ServiceContext,
) -> None:
    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    manager = person(ctx, "tman", "trial_manager")
    view = in_transit(ctx, "P1", 6)
    done = report(ctx, pharmacist, scope=site_of(ctx, "P1"))
    assert (done.number, done.kit_count, done.minimum, done.maximum) == (
        "EXC-0001",
        6,
        Decimal("4.5"),
        Decimal("11.2"),
    )
    assert statuses(ctx, view.kits) == ["quarantined"] * 6
    assert {arm_of(ctx, n) for n in view.kits} == {"A", "B"}  # both arms, whatever they are
    with ctx.db.reading() as s:
        stored = s.execute(select(TemperatureExcursion)).scalar_one()
        assert stored.logger_content == CSV.content and stored.logger_type == "csv"
        assert s.execute(select(func.count()).select_from(ExcursionKit)).scalar_one() == 6
        signed = s.execute(select(Signature).where(Signature.object_type == "excursion")).scalar_one()
        assert (signed.username, signed.meaning) == ("pharma-p1", "temperature excursion: kit quarantine")
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "excursion.reported")).scalar_one()
        assert entry.object_id == "EXC-0001"
    # The receipt keeps the quarantined kits aside.
    receipt = shipments.receive(ctx, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL)
    assert (receipt.received, len(receipt.held)) == (0, 6)

    with pytest.raises(ValidationFailed):
        excursions.decide_excursion(ctx, manager, TRIAL, "EXC-0001", "release", reason="", signature=SIGNED)
    with pytest.raises(SignatureRefused):
        excursions.decide_excursion(
            ctx,
            manager,
            TRIAL,
            "EXC-0001",
            "release",
            reason="stable 3 days at 25 °C",
            signature=SignatureRequest(password="not my password at all"),
        )
    assert statuses(ctx, view.kits) == ["quarantined"] * 6
    moved = excursions.decide_excursion(
        ctx, manager, TRIAL, "EXC-0001", "release", reason="stable 3 days at 25 °C", signature=SIGNED
    )
    assert moved == 6 and statuses(ctx, view.kits) == ["available"] * 6
    assert excursions.excursion(ctx, TRIAL, "EXC-0001", ALL).status == "released"
    with pytest.raises(Conflict):
        excursions.decide_excursion(ctx, manager, TRIAL, "EXC-0001", "destroy", reason="x", signature=SIGNED)


@pytest.mark.req("LBL-05", "ACC-12")
def test_a_refrigerator_excursion_takes_every_available_kit_of_the_site_and_destroy_makes_them_unusable(
    world: ServiceContext,
) -> None:
    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    manager = person(ctx, "tman", "trial_manager")
    p1 = in_transit(ctx, "P1", 4)
    shipments.receive(ctx, pharmacist, TRIAL, p1.number, list(p1.kits), scope=ALL)
    p2 = in_transit(ctx, "P2", 4)
    shipments.receive(ctx, CLI_ACTOR, TRIAL, p2.number, list(p2.kits), scope=ALL)
    done = report(
        ctx, pharmacist, place="site", site_code="P1", scope=site_of(ctx, "P1"), minimum="-1.5", maximum="6"
    )
    assert done.kit_count == 4 and done.place == "site"
    assert statuses(ctx, p1.kits) == ["quarantined"] * 4
    assert statuses(ctx, p2.kits) == ["available"] * 4  # another site's refrigerator is not touched
    with pytest.raises(NotFound):  # P2 is not within the P1 pharmacist's reach
        report(ctx, pharmacist, place="site", site_code="P2", scope=site_of(ctx, "P1"))
    with pytest.raises(Conflict):  # nothing left to quarantine at P1
        report(ctx, pharmacist, place="site", site_code="P1", scope=site_of(ctx, "P1"))
    excursions.decide_excursion(
        ctx, manager, TRIAL, done.number, "destroy", reason="too warm", signature=SIGNED
    )
    assert statuses(ctx, p1.kits) == ["damaged"] * 4
    # A decided excursion is final, for plain SQL too (a trigger).
    with pytest.raises(Exception, match="not allowed"), ctx.db.unit_of_work() as s:
        s.execute(text("UPDATE temperature_excursion SET status = 'pending'"))


@pytest.mark.req("LBL-05")
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"place": "cellar"}, "place"),
        ({"minimum": "warm"}, "minimum"),
        ({"maximum": "99"}, "maximum"),
        ({"maximum": "\u0661\u0662"}, "maximum"),  # Arabic-Indic 12: int() reads it, \d matched it
        ({"minimum": "9", "maximum": "5"}, "minimum"),
        ({"minimum": "3", "maximum": "7.5"}, "maximum"),  # within 2-8 °C: not an excursion
        ({"duration_minutes": "0"}, "duration_minutes"),
        ({"duration_minutes": "1h"}, "duration_minutes"),
        ({"duration_minutes": "\u00b2"}, "duration_minutes"),  # a digit to str.isdigit(), not to int()
        ({"duration_minutes": "\u0663"}, "duration_minutes"),  # an Arabic-Indic three
        ({"note": "n" * 2001}, "note"),
        ({"logger": None}, "logger"),
        ({"logger": excursions.LoggerFile("log.csv", b"")}, "logger"),
        ({"logger": excursions.LoggerFile("log.exe", b"MZ")}, "logger"),
        ({"logger": excursions.LoggerFile("log.pdf", b"time,temp\n")}, "logger"),
        ({"logger": excursions.LoggerFile("log.csv", b"\xff\xfe\x00t")}, "logger"),
        ({"logger": excursions.LoggerFile("log.csv", b"x" * (2 * 1024 * 1024 + 1))}, "logger"),
        ({"signature": None}, "password"),
        ({"shipment_number": "SH-0404"}, "shipment"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(
    world: ServiceContext, overrides: dict[str, object], field: str
) -> None:
    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    view = in_transit(ctx, "P1", 2)
    with pytest.raises((ValidationFailed, NotFound)) as refused:
        report(ctx, pharmacist, **overrides)
    assert field in {p.field for p in refused.value.errors}
    assert statuses(ctx, view.kits) == ["in_transit"] * 2
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(TemperatureExcursion)).scalar_one() == 0


def test_a_refused_report_signature_is_recorded_and_changes_nothing(world: ServiceContext) -> None:
    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    view = in_transit(ctx, "P1", 2)
    with pytest.raises(SignatureRefused):
        report(ctx, pharmacist, signature=SignatureRequest(password="not my password at all"))
    assert statuses(ctx, view.kits) == ["in_transit"] * 2
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(TemperatureExcursion)).scalar_one() == 0
        assert (
            s.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "signature.failed")
            ).scalar_one()
            == 1
        )


def test_a_release_before_receipt_puts_the_kits_back_in_transit(world: ServiceContext) -> None:
    ctx = world
    depot = person(ctx, "tman", "trial_manager")
    view = in_transit(ctx, "P2", 4)
    report(ctx, depot, shipment_number=view.number)
    excursions.decide_excursion(
        ctx, depot, TRIAL, "EXC-0001", "release", reason="within stability", signature=SIGNED
    )
    assert statuses(ctx, view.kits) == ["in_transit"] * 4
    receipt = shipments.receive(ctx, CLI_ACTOR, TRIAL, view.number, list(view.kits), scope=ALL)
    assert receipt.received == 4


@pytest.mark.req("LBL-05", "ACC-12")
@pytest.mark.parametrize("to", ["available", "damaged", "lost"])
def test_no_one_moves_a_kit_held_by_an_undecided_excursion_by_hand(world: ServiceContext, to: str) -> None:
    """Review of issue 19: a pharmacist released excursion-quarantined kits without the sponsor."""
    from allocator.services.supply import kit_status

    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    manager = person(ctx, "tman", "trial_manager")
    view = in_transit(ctx, "P1", 4)
    shipments.receive(ctx, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL)
    report(ctx, pharmacist, place="site", site_code="P1", scope=site_of(ctx, "P1"))
    kit = view.kits[0]
    with pytest.raises(Conflict, match="EXC-0001") as refused:
        kit_status.change_status(
            ctx, pharmacist, TRIAL, kit, to, reason="looks fine", scope=ALL, depot=False, signature=SIGNED
        )
    assert "kit_number" in {p.field for p in refused.value.errors}
    assert kit in str(refused.value) or kit.replace("-", "") in str(refused.value).replace("-", "")
    assert statuses(ctx, view.kits) == ["quarantined"] * 4
    # Once the sponsor has decided, the kits are ordinary kits again.
    excursions.decide_excursion(ctx, manager, TRIAL, "EXC-0001", "release", reason="stable", signature=SIGNED)
    kit_status.change_status(
        ctx,
        pharmacist,
        TRIAL,
        kit,
        "quarantined",
        reason="dented box",
        scope=ALL,
        depot=False,
        signature=SIGNED,
    )
    kit_status.change_status(
        ctx,
        pharmacist,
        TRIAL,
        kit,
        "available",
        reason="box checked",
        scope=ALL,
        depot=False,
        signature=SIGNED,
    )
    assert statuses(ctx, (kit,)) == ["available"]


@pytest.mark.req("LBL-05")
def test_a_receipt_answering_yes_needs_a_reported_excursion_and_records_it(world: ServiceContext) -> None:
    """Review of issue 19: the receipt recorded a false "no" once the excursion was reported."""
    import json

    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    view = in_transit(ctx, "P1", 4)
    with pytest.raises(ValidationFailed) as refused:
        shipments.receive(
            ctx, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL, logger_excursion=True
        )
    assert [p.field for p in refused.value.errors] == ["logger_excursion"]
    assert statuses(ctx, view.kits) == ["in_transit"] * 4
    report(ctx, pharmacist, shipment_number=view.number)
    assert shipments.shipments(ctx, TRIAL, ALL).shipments[0].excursions == ("EXC-0001",)
    assert shipments.shipment(ctx, TRIAL, view.number, ALL).excursions == ("EXC-0001",)
    shipments.receive(ctx, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL, logger_excursion=True)
    with ctx.db.reading() as s:
        new = s.execute(
            select(AuditEvent.new_values).where(AuditEvent.action == "shipment.received")
        ).scalar_one()
    recorded = json.loads(new or "{}")
    assert (recorded["logger_excursion"], recorded["excursions"]) == (True, ["EXC-0001"])


@pytest.mark.req("LBL-11", "REP-09")
@pytest.mark.parametrize("decision", ["pending", "destroy", "destroy then receipt"])
def test_reconciliation_counts_kits_quarantined_on_the_way_at_the_shipments_site(
    world: ServiceContext, decision: str
) -> None:
    """Review of issue 19: kits quarantined or damaged in transit have no site and are not in
    transit, and were dropped ("site P1: 6 kits shipped but 0 accounted for")."""
    from allocator.services.supply import reconciliation

    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    manager = person(ctx, "tman", "trial_manager")
    view = in_transit(ctx, "P1", 6)
    report(ctx, pharmacist, shipment_number=view.number)
    if decision != "pending":
        excursions.decide_excursion(
            ctx, manager, TRIAL, "EXC-0001", "destroy", reason="too warm", signature=SIGNED
        )
    if decision == "destroy then receipt":
        shipments.receive(ctx, pharmacist, TRIAL, view.number, list(view.kits), scope=ALL)
    found = reconciliation.reconciliation(ctx, TRIAL, ALL, include_depot=True)
    assert found.balanced, found.discrepancies
    (p1,) = [b for b in found.balances if b.site == "P1"]
    where = "on_hand" if decision == "destroy then receipt" else "in_transit"
    assert (p1.shipped, p1.terms[where], p1.accounted) == (6, 6, 6)


@pytest.mark.req("REP-08")
def test_the_excursions_are_paged_newest_first_narrowed_in_sql_without_their_logger_files(
    world: ServiceContext,
) -> None:
    """Issue 21: the list read every excursion of the trial with its logger file (up to 2 MB each),
    and every shipment of the trial to name a few; a site's staff read the other sites' too,
    filtered in Python. It now reads a page, newest first, narrowed by site and status in SQL; a
    cursor of another site's excursion reads as unknown."""
    ctx = world
    pharmacist = person(ctx, "pharma-p1", "pharmacist", "P1")
    other = person(ctx, "pharma-p2", "pharmacist", "P2")
    manager = person(ctx, "tman", "trial_manager")
    sent = in_transit(ctx, "P1", 2)  # SH-0001
    report(ctx, manager)  # EXC-0001, on SH-0001 (P1), pending
    at_p1 = in_transit(ctx, "P1", 2)
    shipments.receive(ctx, pharmacist, TRIAL, at_p1.number, list(at_p1.kits), scope=ALL)
    at_p2 = in_transit(ctx, "P2", 2)
    shipments.receive(ctx, other, TRIAL, at_p2.number, list(at_p2.kits), scope=ALL)
    p1, p2 = site_of(ctx, "P1"), site_of(ctx, "P2")
    report(ctx, pharmacist, place="site", site_code="P1", scope=p1)  # EXC-0002 (P1)
    report(ctx, other, place="site", site_code="P2", scope=p2)  # EXC-0003 (P2)
    excursions.decide_excursion(
        ctx, manager, TRIAL, "EXC-0002", "destroy", reason="too warm", signature=SIGNED
    )

    def numbers(scope: Scope = ALL, **query: object) -> tuple[list[str], str | None]:
        page = excursions.excursions(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        return [e.number for e in page.excursions], page.next_before

    assert numbers() == (["EXC-0003", "EXC-0002", "EXC-0001"], None)
    first = excursions.excursions(ctx, TRIAL, ALL, limit=2)
    assert [(e.number, e.site, e.shipment, e.status, e.kits) for e in first.excursions] == [
        ("EXC-0003", "P2", None, "pending", ()),
        ("EXC-0002", "P1", None, "destroyed", ()),
    ]
    assert first.next_before == "EXC-0002"
    last = excursions.excursions(ctx, TRIAL, ALL, limit=2, before="EXC-0002")
    assert [(e.number, e.shipment, e.kit_count) for e in last.excursions] == [("EXC-0001", sent.number, 2)]
    assert last.next_before is None
    assert numbers(limit=3) == (["EXC-0003", "EXC-0002", "EXC-0001"], None)  # one whole page: no next
    assert numbers(site="P1") == (["EXC-0002", "EXC-0001"], None)
    assert numbers(site="P1", status="pending") == (["EXC-0001"], None)
    assert numbers(status="destroyed") == (["EXC-0002"], None)
    assert numbers(p2) == (["EXC-0003"], None)
    assert numbers(p1, limit=1) == (["EXC-0002"], "EXC-0002")
    for query, scope, field in (
        ({"before": "EXC-0003"}, p1, "before"),  # another site's: unknown, not "not yours"
        ({"before": "EXC-0099"}, ALL, "before"),
        ({"site": "P2"}, p1, "site"),
        ({"status": "quarantined"}, ALL, "status"),
        ({"limit": 0}, ALL, "limit"),
        ({"limit": excursions.MAX_EXCURSION_PAGE + 1}, ALL, "limit"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            excursions.excursions(ctx, TRIAL, scope, **query)  # type: ignore[arg-type]
        assert [p.field for p in refused.value.errors] == [field], query
    # The logger files are not read by the list (deferred), only by the excursion's own page.
    seen: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(ctx.db.read_engine, "before_cursor_execute", note)
    try:
        excursions.excursions(ctx, TRIAL, ALL)
    finally:
        event.remove(ctx.db.read_engine, "before_cursor_execute", note)
    assert seen and not any("logger_content" in statement for statement in seen)
    assert excursions.logger_file(ctx, TRIAL, "EXC-0001", ALL) == ("csv", CSV.content)
