"""The depot's side of a shipment: choosing its kits, balanced by arm, and preparing it. Used by the
supply manager's shipments (shipments.create_shipment) and by the automatic resupply (resupply)."""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import CodeBreakSheet, Kit, Shipment
from allocator.services import arm_access
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialRef
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
    depot = [
        kit
        for kit in session.execute(
            select(Kit)
            .where(
                Kit.trial_id == trial.id,
                Kit.status == "at_depot",
                Kit.site_id.is_(None),
                Kit.shipment_id.is_(None),  # not already in a prepared shipment
                Kit.relabel_requested_at.is_(None),  # issue 19: relabelled first, then shipped
                # UNB-07: a kit leaves the depot only once its sealed code-break sheet exists.
                Kit.id.in_(select(CodeBreakSheet.kit_id).where(CodeBreakSheet.trial_id == trial.id)),
            )
            .with_for_update()
        ).scalars()
        if kit.expiry_date is None or kit.expiry_date >= usable_until
    ]
    arms = arm_access.kit_arms_in(session, ctx, actor, trial.code, depot, "balancing a shipment")
    by_arm: dict[str, list[Kit]] = {}
    for kit in depot:
        by_arm.setdefault(arms[kit.id], []).append(kit)
    chosen: list[Kit] = []
    rng = secrets.SystemRandom()
    for arm, weight in definition.ratio:
        wanted = count // definition.ratio_total * weight
        pool = by_arm.get(arm, [])
        if len(pool) < wanted:
            return None
        chosen.extend(rng.sample(pool, wanted))
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
