"""Shipments to sites: create, ship, receive (with the
receipt scan) and list them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import Kit, Shipment, Site, TemperatureExcursion, Trial
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ObservationalStudy, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, newest_first, page_size, site_filter
from allocator.services.supply import depot, resupply
from allocator.services.supply.kit_rules import S, move_kit, needed_until, number_from_scan, unreadable

# --- shipments (BLD-04) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipmentView:
    number: str
    site: str
    status: str
    kit_count: int
    created_at: datetime
    created_by: str
    shipped_at: datetime | None
    received_at: datetime | None
    received_by: str | None
    kits: tuple[str, ...] = field(default=())  # in order; empty in a page of the list (`shipments`)
    excursions: tuple[str, ...] = field(default=())  # the excursions reported for it (issue 19)


def create_shipment(
    ctx: ServiceContext, actor: Actor, trial_code: str, site_code: str, count: int
) -> ShipmentView:
    """Prepare a shipment of `count` kits from the depot to an active or pending site: the same
    number of kits of each arm (by ratio), chosen at random among the depot's usable kits of that
    arm (an audited machine read of the depot's arms; nobody sees them). Only kits that have their
    sealed code-break sheet are eligible (UNB-07). The kits are chosen by `depot.prepare_shipment`,
    as for an automatic resupply."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        if definition.observational:  # no arm to balance the kits by (a division by zero)
            raise ObservationalStudy(
                f"{trial.code} is an observational study: it has no arms, lists or drug kits"
            )
        site = _site(session, trial, site_code)
        total = definition.ratio_total
        if not 1 <= count <= 10_000 or count % total:
            raise ValidationFailed(
                "invalid count", errors=[FieldProblem("count", f"a multiple of {total}, at most 10000")]
            )
        shipment = depot.prepare_shipment(
            ctx,
            session,
            actor,
            trial,
            definition,
            site,
            count,
            needed_until(definition, definition.local_date(now)),
            now,
        )
        if shipment is None:
            # The message says only that the depot lacks balanced stock, never which arm (BLD-12).
            raise Conflict(
                "the depot does not hold enough usable kits for a balanced shipment of that size "
                "(a kit is shipped only once its code-break sheet exists)"
            )
        return _shipment_view(session, shipment, site.code)


def ship(ctx: ServiceContext, actor: Actor, trial_code: str, number: str) -> tuple[str, ...]:
    """Dispatch a prepared shipment: its kits go in transit. A kit that left the depot's stock since
    the preparation (damaged, destroyed, quarantined...) is taken out of the shipment and stays where
    it is; the kit numbers taken out are returned and recorded in the audit entry."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number)
        if shipment.status != "prepared":
            raise Conflict(f"shipment {number} is {shipment.status}")
        taken_out: list[str] = []
        for kit in _shipment_kits(session, shipment):
            if kit.status != S.AT_DEPOT.value:
                kit.shipment_id = None
                taken_out.append(kit.kit_number)
                continue
            move_kit(session, kit, S.IN_TRANSIT, actor, f"shipped in {number}", now)
        if taken_out and len(taken_out) == shipment.kit_count:
            raise Conflict(f"no kit of shipment {number} can still be shipped")
        shipment.kit_count -= len(taken_out)
        shipment.status = "shipped"
        shipment.shipped_at = now
        shipment.shipped_by_name = actor.name
        site = session.get(Site, shipment.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SHIPMENT_SHIPPED,
            object_type="shipment",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": "prepared"},
            new={"status": "shipped", "kits": shipment.kit_count, "taken_out": sorted(taken_out)},
            at=now,
        )
        return tuple(sorted(taken_out))


@dataclass(frozen=True, slots=True)
class Receipt:
    received: int
    missing: tuple[str, ...]
    # Scanned kits that were not in transit (quarantined or lost on the way): they keep their status,
    # since releasing a quarantined kit needs its own signed decision (ACC-12, LBL-05).
    held: tuple[str, ...] = ()


def check_received_kit(
    ctx: ServiceContext, trial_code: str, number: str, raw: str, *, scope: Scope
) -> tuple[str, str | None]:
    """One kit scanned at the receipt of shipment `number`, checked as it arrives (issue 13):
    (its kit number, a note when it will be kept aside, e.g. quarantined on the way). Records
    nothing. Raises ValidationFailed (unreadable, another trial's label, not in this shipment),
    NotFound (no such shipment within reach) or Conflict (the shipment is not in transit), each
    naming the field `kits` in plain words."""
    try:
        kit_number = number_from_scan(raw, trial_code, ctx)
    except kitlib.KitsError as exc:
        raise ValidationFailed(
            "the kit cannot be read", errors=[FieldProblem("kits", unreadable(exc))]
        ) from None
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number)
        if not scope.allows_site(shipment.site_id):
            raise NotFound(f"no shipment {number}")
        if shipment.status != "shipped":
            raise Conflict(
                f"shipment {number} is {shipment.status}, not shipped",
                errors=[FieldProblem("kits", f"the shipment is {shipment.status}, not in transit")],
            )
        kit = next((k for k in _shipment_kits(session, shipment) if k.kit_number == kit_number), None)
        if kit is None:
            raise ValidationFailed(
                "kit not in this shipment", errors=[FieldProblem("kits", "not in this shipment")]
            )
        if kit.status != S.IN_TRANSIT.value:
            return kit_number, f"{kit.status}: keep it aside, it will not be made available"
        return kit_number, None


def receive(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    scanned: Sequence[str],
    *,
    scope: Scope,
    missing_reason: str = "",
    logger_excursion: bool | None = None,
) -> Receipt:
    """Receive a shipment at the site: every kit is scanned or typed (check digit verified, LBL-09).
    A kit that does not belong to the shipment refuses the whole receipt; kits of the shipment not
    scanned are recorded lost, which needs a reason. `logger_excursion` is the receiver's answer
    to "does the parcel's temperature logger show an excursion?", recorded when given: a yes is
    reported first (`excursions.report_excursion`), and is refused until it is; the receipt then
    records the excursions reported for the shipment beside the yes."""
    now = ctx.now()
    problems = []
    numbers: list[str] = []
    for index, raw in enumerate(scanned):
        if not raw.strip():
            continue
        try:
            numbers.append(number_from_scan(raw, trial_code, ctx))
        except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
            problems.append(FieldProblem(f"kits[{index}]", unreadable(exc)))
    if problems:
        raise ValidationFailed("some kit numbers are not valid", errors=problems)
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number)
        if not scope.allows_site(shipment.site_id):
            raise NotFound(f"no shipment {number}")
        if shipment.status != "shipped":
            raise Conflict(f"shipment {number} is {shipment.status}, not shipped")
        kits = {k.kit_number: k for k in _shipment_kits(session, shipment)}
        foreign = sorted(set(numbers) - set(kits))
        if foreign:
            raise ValidationFailed(
                "kits not in this shipment",
                errors=[
                    FieldProblem("kits", f"{kitlib.format_kit_number(n)} is not in shipment {number}")
                    for n in foreign
                ],
            )
        missing = sorted(set(kits) - set(numbers))
        if missing and not missing_reason.strip():
            raise ValidationFailed(
                f"{len(missing)} kit(s) of the shipment were not scanned",
                errors=[FieldProblem("missing_reason", "give a reason: unscanned kits are recorded as lost")],
            )
        reported = _reported_excursions(session, shipment)
        if logger_excursion and not reported:
            raise ValidationFailed(
                "report the excursion first",
                errors=[FieldProblem("logger_excursion", "no excursion is reported for this shipment")],
            )
        site = _site_by_id(session, shipment.site_id)
        held: list[str] = []
        for kit_number, kit in kits.items():
            kit.site_id = shipment.site_id
            if kit.status == S.LOST.value:
                if kit_number not in missing:
                    held.append(kit_number)
            elif kit_number in missing:
                move_kit(
                    session,
                    kit,
                    S.LOST,
                    actor,
                    f"missing at receipt of {number}: {missing_reason.strip()}",
                    now,
                )
            elif kit.status == S.IN_TRANSIT.value:
                move_kit(session, kit, S.AVAILABLE, actor, f"received in {number}", now)
            else:
                held.append(kit_number)
        shipment.status = "received"
        shipment.received_at = now
        shipment.received_by_name = actor.name
        session.flush()
        resupply.after_stock_change(ctx, session, actor, trial, current_definition(session, trial), site, now)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SHIPMENT_RECEIVED,
            object_type="shipment",
            object_id=number,
            site_code=site.code,
            old={"status": "shipped"},
            new={
                "status": "received",
                "received": len(kits) - len(missing) - len(held),
                "missing": missing,
                "held": sorted(held),
                **({} if logger_excursion is None else {"logger_excursion": logger_excursion}),
                **({"excursions": list(reported)} if reported else {}),
            },
            reason=missing_reason.strip() or None,
            at=now,
        )
        return Receipt(
            received=len(kits) - len(missing) - len(held), missing=tuple(missing), held=tuple(sorted(held))
        )


SHIPMENT_PAGE = 50  # shipments per page of the list (issue 21: a trial ships for years)
MAX_SHIPMENT_PAGE = 1000
SHIPMENT_STATUSES = ("prepared", "shipped", "received")


@dataclass(frozen=True, slots=True)
class ShipmentPage:
    shipments: tuple[ShipmentView, ...]
    next_before: str | None  # the shipment number to pass as `before` for older ones; None: the last page


def shipments(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    before: str | None = None,
    limit: int = SHIPMENT_PAGE,
    site: str | None = None,
    status: str | None = None,
) -> ShipmentPage:
    """One page of the shipments within `scope` (to `site`, in `status`, when given), newest first,
    older than the shipment numbered `before`: a few statements and `limit` shipments, however long
    the trial has shipped (issue 21). The views carry no kit numbers (`ShipmentView.kits` is
    empty): the list shows none, and reading them made the page grow with every kit shipped.
    Raises ValidationFailed naming `before`, `site`, `status` or `limit`."""
    page_size(limit, MAX_SHIPMENT_PAGE)
    if status is not None and status not in SHIPMENT_STATUSES:
        raise ValidationFailed("invalid status", errors=[FieldProblem("status", "unknown status")])
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        query = select(Shipment)
        if site:
            query = query.where(Shipment.site_id == site_filter(sites, site, scope, trial.code))
        if status:
            query = query.where(Shipment.status == status)
        found, more = newest_first(
            session,
            query,
            Shipment,
            trial,
            scope,
            limit=limit,
            before=before,
            unknown=f"no shipment {before!r} within your reach",
        )
        rows = [shipment for (shipment,) in found]
        reported: dict[int, tuple[str, ...]] = {}
        if rows:
            for shipment_id, excursion in session.execute(
                select(TemperatureExcursion.shipment_id, TemperatureExcursion.number)
                .where(
                    TemperatureExcursion.trial_id == trial.id,
                    TemperatureExcursion.shipment_id.in_([s.id for s in rows]),
                )
                .order_by(TemperatureExcursion.number)
            ):
                if shipment_id is not None:
                    reported[shipment_id] = (*reported.get(shipment_id, ()), excursion)
        return ShipmentPage(
            tuple(_shipment_view(session, s, sites[s.site_id], reported.get(s.id, ()), ()) for s in rows),
            rows[-1].number if more and rows else None,
        )


def shipment(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> ShipmentView:
    """One shipment within `scope`, with its kit numbers in order: what the depot packs, and what
    the site should find in the parcel (blinded: numbers only). NotFound for a shipment of
    another site, as for one that does not exist."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        found = session.execute(
            select(Shipment).where(Shipment.trial_id == trial.id, Shipment.number == number)
        ).scalar_one_or_none()
        if found is None or not scope.allows_site(found.site_id):
            raise NotFound(f"no shipment {number!r} within your reach")
        site = _site_by_id(session, found.site_id)
        return _shipment_view(session, found, site.code, _reported_excursions(session, found))


def _reported_excursions(session: Session, shipment: Shipment) -> tuple[str, ...]:
    return tuple(
        session.execute(
            select(TemperatureExcursion.number)
            .where(TemperatureExcursion.shipment_id == shipment.id)
            .order_by(TemperatureExcursion.number)
        ).scalars()
    )


def _shipment_view(
    session: Session,
    shipment: Shipment,
    site_code: str,
    excursions: tuple[str, ...] = (),
    kit_numbers: tuple[str, ...] | None = None,
) -> ShipmentView:
    """`kit_numbers`, in order, when the caller read them (a list of shipments); else read here."""
    kits = (
        kit_numbers
        if kit_numbers is not None
        else tuple(sorted(k.kit_number for k in _shipment_kits(session, shipment)))
    )
    return ShipmentView(
        number=shipment.number,
        site=site_code,
        status=shipment.status,
        kit_count=shipment.kit_count,
        created_at=shipment.created_at,
        created_by=shipment.created_by_name,
        shipped_at=shipment.shipped_at,
        received_at=shipment.received_at,
        received_by=shipment.received_by_name,
        kits=kits,
        excursions=excursions,
    )


def _shipment(session: Session, trial: Trial, number: str) -> Shipment:
    shipment = session.execute(
        select(Shipment).where(Shipment.trial_id == trial.id, Shipment.number == number).with_for_update()
    ).scalar_one_or_none()
    if shipment is None:
        raise NotFound(f"no shipment {number}")
    return shipment


def _shipment_kits(session: Session, shipment: Shipment) -> list[Kit]:
    return list(
        session.execute(select(Kit).where(Kit.shipment_id == shipment.id).order_by(Kit.kit_number)).scalars()
    )


def _site(session: Session, trial: Trial, code: str) -> Site:
    site = session.execute(
        select(Site).where(Site.trial_id == trial.id, Site.code == code)
    ).scalar_one_or_none()
    if site is None:
        raise NotFound(f"no site {code!r} in {trial.code}", errors=[FieldProblem("site", "unknown site")])
    return site


def _site_by_id(session: Session, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None:  # pragma: no cover - a foreign key guarantees it
        raise NotFound("no such site")
    return site
