"""Manual kit status changes (quarantine, damage, loss,
...) and batch expiry updates; the batch list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import Batch, ExcursionKit, Kit, KitStatus, Site, TemperatureExcursion
from allocator.permissions import Scope
from allocator.services import signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, lock_site
from allocator.services.supply import resupply
from allocator.services.supply.kit_rules import (
    MANUAL_TRANSITIONS,
    SIGNED_SOURCES,
    SIGNED_TARGETS,
    S,
    expiry_problem,
    move_kit,
    number_from_scan,
    unreadable,
)

# Kits whose printed label must show a batch's new expiry: those not yet dispensed (issue 19).
RELABEL_STATUSES = frozenset(
    {S.AT_DEPOT.value, S.IN_TRANSIT.value, S.AVAILABLE.value, S.ALLOCATED.value, S.QUARANTINED.value}
)

# --- status changes --------------------------------------------------------------------------


_WITH_A_PATIENT = frozenset(s.value for s in (S.ALLOCATED, S.DISPENSED, S.ADMINISTERED))


def change_status(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    kit_number: str,
    to: str,
    *,
    reason: str,
    scope: Scope,
    depot: bool,
    signature: signatures.SignatureRequest | None = None,
) -> None:
    """Record a kit's new status with a reason (quarantine after a temperature excursion, damage,
    loss, return, destruction, expiry). Quarantine and release from it are signed (ACC-12).
    `scope` limits the sites; `depot` allows depot kits (supply managers)."""
    try:
        target = KitStatus(to)
    except ValueError:
        raise ValidationFailed(
            "unknown status", errors=[FieldProblem("status", f"{to!r} is not a kit status")]
        ) from None
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    try:
        number = number_from_scan(kit_number, trial_code, ctx)  # typed, or the scanned label (LBL-09)
    except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
        raise ValidationFailed(
            "invalid kit number", errors=[FieldProblem("kit_number", unreadable(exc))]
        ) from None
    now = ctx.now()
    # The meaning states what is signed (21 CFR 11.50): a release only when the kit becomes usable.
    if target is S.QUARANTINED:
        meaning = "kit quarantine"
    elif target is S.AVAILABLE:
        meaning = "kit release from quarantine"
    else:
        meaning = f"kit {target.value} from quarantine"
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="kit", object_id=number
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        # A kit of the site's stock: its site before the kit, the order of a randomization, a
        # return and an excursion report (the site, then its kits); locked the other way round, the
        # kit was held while its event's reference to the site (key share) waited for a report
        # holding the site and waiting for the kit. A kit with a patient (allocated, dispensed,
        # administered) is locked first, as a dispensing and a bedside administration lock it; a
        # return or destruction of such a kit takes the site first, so that pair can still
        # deadlock (one refused with a 503): a known exception (README).
        placed = session.execute(
            select(Kit.site_id, Kit.status).where(Kit.trial_id == trial.id, Kit.kit_number == number)
        ).one_or_none()
        if (
            placed is not None
            and placed.site_id is not None
            and placed.status not in _WITH_A_PATIENT
            and scope.allows_site(placed.site_id)
        ):
            lock_site(session, placed.site_id)
        kit = session.execute(
            select(Kit).where(Kit.trial_id == trial.id, Kit.kit_number == number).with_for_update()
        ).scalar_one_or_none()
        if (
            kit is None
            or (kit.site_id is None and not depot)
            or (kit.site_id is not None and not scope.allows_site(kit.site_id))
        ):
            raise NotFound(f"no kit {kitlib.format_kit_number(number)} within your reach")
        current = KitStatus(kit.status)
        # A kit quarantined by an excursion awaits the sponsor's signed decision (issue 19): no one
        # releases, damages or otherwise moves it by hand meanwhile.
        holding = session.execute(
            select(TemperatureExcursion.number)
            .join(ExcursionKit, ExcursionKit.excursion_id == TemperatureExcursion.id)
            .where(ExcursionKit.kit_id == kit.id, TemperatureExcursion.status == "pending")
            .limit(1)
        ).scalar_one_or_none()
        if holding is not None and current is S.QUARANTINED:
            shown = kitlib.format_kit_number(number)
            raise Conflict(
                f"kit {shown} is held by excursion {holding} until the sponsor's decision",
                errors=[FieldProblem("kit_number", f"awaits the sponsor's decision on {holding}")],
            )
        if target not in MANUAL_TRANSITIONS[current]:
            raise Conflict(f"a {current.value} kit cannot become {target.value}")
        needs_signature = target in SIGNED_TARGETS or current in SIGNED_SOURCES
        signature_id = None
        if needs_signature:
            if signature is None:
                raise ValidationFailed(
                    "this change is signed", errors=[FieldProblem("password", "is required")]
                )
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=meaning,
                object_type="kit",
                object_id=number,
                content={
                    "kit": number,
                    "from": current.value,
                    "to": target.value,
                    "reason": reason.strip(),
                },
                now=now,
            )
            signature_id = signed.id
        site = session.get(Site, kit.site_id) if kit.site_id else None
        move_kit(session, kit, target, actor, reason.strip(), now)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.KIT_STATUS_CHANGED,
            object_type="kit",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": current.value},
            new={"status": target.value, "signature": signature_id},
            reason=reason.strip(),
            at=now,
        )
        if site is not None:  # issue 19: a kit leaving or rejoining a site's usable stock
            session.flush()
            resupply.after_stock_change(
                ctx, session, actor, trial, current_definition(session, trial), site, now
            )


def update_batch_expiry(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    lot_code: str,
    expiry: date,
    *,
    reason: str,
    signature: signatures.SignatureRequest,
) -> int:
    """Change a batch's expiry (re-test, shortened shelf life): every kit of the batch follows.
    Signed and reasoned (LBL-05, ACC-12). Every kit of the batch not yet dispensed (at the depot,
    in transit, at a site, allocated or quarantined) then awaits a new expiry label (issue 19,
    `relabelling`): it is neither drawn nor dispensed until its relabelling is confirmed by scan.
    Returns the number of kits updated."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if (unprintable := expiry_problem(expiry)) is not None:
        raise ValidationFailed("invalid expiry", errors=[unprintable])
    now = ctx.now()
    meaning = "expiry change"
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="batch", object_id=lot_code
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        batch = session.execute(
            select(Batch).where(Batch.trial_id == trial.id, Batch.lot_code == lot_code).with_for_update()
        ).scalar_one_or_none()
        if batch is None:
            raise NotFound(f"no batch {lot_code}", errors=[FieldProblem("lot_code", "unknown batch")])
        old = batch.expiry_date
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=meaning,
            object_type="batch",
            object_id=lot_code,
            content={
                "batch": lot_code,
                "from": old.isoformat(),
                "to": expiry.isoformat(),
                "reason": reason.strip(),
            },
            now=now,
        )
        batch.expiry_date = expiry
        kits = list(session.execute(select(Kit).where(Kit.batch_id == batch.id)).scalars())
        relabel = 0
        for kit in kits:
            kit.expiry_date = expiry
            if kit.status in RELABEL_STATUSES:
                kit.relabel_requested_at = now
                relabel += 1
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.BATCH_EXPIRY_CHANGED,
            object_type="batch",
            object_id=lot_code,
            old={"expiry": old.isoformat()},
            new={"expiry": expiry.isoformat(), "kits": len(kits), "relabel": relabel, "signature": signed.id},
            reason=reason.strip(),
            at=now,
        )
        session.flush()  # issue 19: a shorter expiry may take courses from every site
        resupply.check_sites_in(ctx, session, actor, trial, current_definition(session, trial), now)
        return len(kits)


@dataclass(frozen=True, slots=True)
class BatchView:
    lot_code: str
    expiry: date
    kits: int


def batches(ctx: ServiceContext, trial_code: str) -> list[BatchView]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        counts = {
            row[0]: row[1]
            for row in session.execute(
                select(Kit.batch_id, func.count()).where(Kit.trial_id == trial.id).group_by(Kit.batch_id)
            )
        }
        return [
            BatchView(b.lot_code, b.expiry_date, counts.get(b.id, 0))
            for b in session.execute(
                select(Batch).where(Batch.trial_id == trial.id).order_by(Batch.lot_code)
            ).scalars()
        ]
