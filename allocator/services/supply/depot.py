"""The depot's side of a shipment: choosing its kits, balanced by arm, and preparing it. Used by the
supply manager's shipments (shipments.create_shipment) and by the automatic resupply (resupply)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import ColumnElement, Connection, func, or_, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import CodeBreakSheet, Kit, Shipment, Trial
from allocator.services import arm_access
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialRef
from allocator.services.supply import stock
from allocator.trialdef import TrialDefinition


class SiteRef(Protocol):
    """What a shipment needs of its site: an ORM `Site` is one, and so is a row of (id, code)."""

    @property
    def id(self) -> int: ...

    @property
    def code(self) -> str: ...


def prepare_shipment(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    site: SiteRef,
    count: int,
    usable_until: date,
    now: datetime,
    *,
    automatic: bool = False,
) -> Shipment | None:
    """Prepare a shipment of `count` kits (a multiple of the ratio total) from the depot to `site`,
    in the caller's transaction: the same number of kits of each arm (by ratio), chosen at random
    among the depot's kits of that arm that expire on or after `usable_until` and have their sealed
    code-break sheet (UNB-07) and await no new expiry label (issue 19). The arms are read by an
    audited machine read; nobody sees them, and nothing about the shipment depends on which arm a
    subject received (BLD-04). Returns None, having changed nothing, when the depot lacks such kits
    for one arm; the caller says so without naming the arm (BLD-12)."""
    # Preparations of the trial queue on its row (FOR NO KEY UPDATE: randomizations' inserts that
    # merely refer to the trial are not blocked), so that two at once never count the same
    # shipments for their numbers nor race for the same kits.
    session.execute(select(Trial.id).where(Trial.id == trial.id).with_for_update(key_share=True))
    connection = session.connection()
    conditions = _at_depot(trial.id, usable_until)
    # Only the candidates' ids are read; their arms are opened in a uniformly random order, batch
    # after batch, until every arm has its share (the kit draw's method, stock.draw_usable_kits):
    # the first kits of an arm met in a uniformly random order of the depot's candidates are a
    # uniformly random choice among that arm's, and the cost follows the shipment's size, not the
    # depot's (issue 19: the 10,000-subject bench spent three quarters of its time loading, locking
    # and opening every kit of the depot for each shipment).
    candidates = list(connection.execute(select(Kit.id).where(*conditions)).scalars())
    shares = {arm: count // definition.ratio_total * weight for arm, weight in definition.ratio}
    found = arm_access.kits_by_arm_until(
        session,
        ctx,
        actor,
        trial.code,
        _locked_batches(
            connection, stock._random_order(candidates), conditions, 2 * max(shares.values(), default=1)
        ),
        definition.arm_codes,
        max(shares.values(), default=0),
        "balancing a shipment",
    )
    chosen_ids: list[int] = []
    for arm, wanted in shares.items():
        pool = found.get(arm, [])
        if len(pool) < wanted:
            return None
        chosen_ids.extend(kit.id for kit in pool[:wanted])
    chosen = list(session.execute(select(Kit).where(Kit.id.in_(chosen_ids))).scalars())
    rng = secrets.SystemRandom()
    rng.shuffle(chosen)
    shipped_before = session.execute(
        select(func.count()).select_from(Shipment).where(Shipment.trial_id == trial.id)
    ).scalar_one()
    number = f"SH-{shipped_before + 1:04d}"
    shipment = Shipment(
        trial_id=trial.id,
        site_id=site.id,
        number=number,
        status="prepared",
        kit_count=count,
        created_at=now,
        created_by_name=actor.name,
    )
    session.add(shipment)
    session.flush()
    for kit in chosen:
        kit.shipment_id = shipment.id
    new: dict[str, object] = {"site": site.code, "kits": count}
    if automatic:
        new |= {"automatic": True, "usable_until": usable_until.isoformat()}
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.SHIPMENT_PREPARED,
        object_type="shipment",
        object_id=number,
        site_code=site.code,
        new=new,
        at=now,
    )
    return shipment


def _at_depot(trial_id: int, usable_until: date) -> tuple[ColumnElement[bool], ...]:
    """A kit that can leave the depot in a shipment usable until `usable_until`."""
    return (
        Kit.trial_id == trial_id,
        Kit.status == "at_depot",
        Kit.site_id.is_(None),
        Kit.shipment_id.is_(None),  # not already in a prepared shipment
        Kit.relabel_requested_at.is_(None),  # issue 19: relabelled first, then shipped
        or_(Kit.expiry_date.is_(None), Kit.expiry_date >= usable_until),
        # UNB-07: a kit leaves the depot only once its sealed code-break sheet exists.
        Kit.id.in_(select(CodeBreakSheet.kit_id).where(CodeBreakSheet.trial_id == trial_id)),
    )


def _locked_batches(
    connection: Connection, order: Iterator[int], conditions: tuple[ColumnElement[bool], ...], size: int
) -> Iterator[list[arm_access.SealedKit]]:
    """The kits of the ids of `order` still at the depot and usable, locked (the conditions are
    checked again once the lock is granted), in the batches of `stock.locked_batches`."""
    statement = select(Kit.id, Kit.kit_number, Kit.sealed_arm).with_for_update()
    return stock.locked_batches(
        order, size, lambda batch: connection.execute(statement.where(Kit.id.in_(batch), *conditions))
    )
