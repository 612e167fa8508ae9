"""Automatic resupply of the sites (issue 19): when a site's treatment courses fall below its
trigger level, a shipment request is prepared at once from the depot and the depot's staff told.

Configured by the trial definition's `[supply]` (docs/trial-definition.md); without it nothing here
runs and shipments are made by hand only. The check runs inside the transaction of every change to a
site's stock (randomization, kit replacement, dispensing, a kit's status change, a batch's expiry,
receipt) and at activation (the initial shipment); `check_sites` runs it for every active site, for
a daily job, so that kits passing their usable date between two events are noticed too.

How many courses a site holds (blinded, BLD-04, BLD-12): its available kits still usable for a
course allocated the day after a shipment requested now would arrive (today + lead time + 1: the
shipment comes in at some hour of its arrival day, so the kits must cover that whole day), plus the kits of
its prepared or shipped shipments (less those quarantined on the way after a temperature
excursion), divided by the kits of one course (one per dispensing day). The
count never looks at an arm, so whether and when a shipment is requested does not depend on the arm
of any subject; the shipment itself is balanced by arm (`depot.prepare_shipment`). Because the count
is blind, the trigger level must cover the difference between the arms a site's stock can reach
(up to the largest block per stratum of the site once kits leave the shelf other than by
allocation, and whatever a batch's expiry takes unevenly from the arms: docs/trial-definition.md,
"Choosing the levels") besides the most courses used during the lead time.

On the randomization hot path this costs one statement (two in predictive mode) when the site is
above its trigger, and nothing when the trial has no `[supply]` (issue 16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from math import ceil, prod

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import Kit, Notification, Shipment, Site, SiteStatus, Subject
from allocator.services.context import ServiceContext
from allocator.services.lookups import TrialRef, current_definition, get_trial, lock_site
from allocator.services.supply.depot import SiteRef, prepare_shipment
from allocator.services.supply.kit_rules import S, needed_until
from allocator.trialdef import BlockRandomization, SiteSupply, Supply, TrialDefinition

# The depot's staff are the holders of shipment:manage (the trial manager); a site that cannot be
# resupplied is also the unblinded statistician's concern (who can have kits made).
DEPOT_AUDIENCE = "trial_manager"
ALERT_AUDIENCES = ("trial_manager", "unblinded_statistician")
ALERT_EVERY = timedelta(days=1)  # one "cannot be resupplied" alert per site and day, not one per event

AUTOMATIC = Actor(
    user_id=None, username="system:resupply", name="automatic resupply", role="system", request_id="-"
)

# A site's usable kits and its kits on the way, in one statement (the index on site_id, status).
_ON_HAND_AND_ON_ORDER = select(
    select(func.count())
    .select_from(Kit)
    .where(
        Kit.site_id == bindparam("site_id"),
        Kit.status == S.AVAILABLE.value,
        Kit.expiry_date >= bindparam("horizon"),
        # A kit awaiting its new expiry label is neither drawn nor dispensed (issue 19): the site
        # cannot randomize with it, so it does not hold the site above its trigger either.
        Kit.relabel_requested_at.is_(None),
    )
    .scalar_subquery(),
    select(func.coalesce(func.sum(Shipment.kit_count), 0))
    .where(Shipment.site_id == bindparam("site_id"), Shipment.status.in_(("prepared", "shipped")))
    .scalar_subquery(),
    # Kits of those shipments quarantined on the way (a temperature excursion): not on order any
    # more. The index on (shipment_id, status) bounds this by the site's open shipments.
    select(func.count())
    .select_from(Kit)
    .join(Shipment, Shipment.id == Kit.shipment_id)
    .where(
        Shipment.site_id == bindparam("site_id"),
        Shipment.status.in_(("prepared", "shipped")),
        Kit.status == S.QUARANTINED.value,
        Kit.site_id.is_(None),
    )
    .scalar_subquery(),
)
_RECENT_SUBJECTS = (
    select(func.count())
    .select_from(Subject)
    .where(Subject.site_id == bindparam("site_id"), Subject.randomized_at >= bindparam("since"))
)


@dataclass(frozen=True, slots=True)
class ResupplyCheck:
    """What one check found at a site (courses include those on the way)."""

    site: str
    courses: int
    trigger: int
    shipment: str | None = None  # the shipment requested, if any
    impossible: bool = False  # below the trigger and the depot cannot supply it


@dataclass(frozen=True, slots=True)
class LowTrigger:
    """A trigger level that does not cover the drift between the arms that a site's stock can reach
    through allocations alone (docs/trial-definition.md, "Choosing the levels")."""

    site: str | None  # None: `[supply]`'s own level; else a `[[supply.sites]]` entry's
    trigger: int
    drift: int  # courses


def arm_drift_courses(definition: TrialDefinition) -> int | None:
    """The courses by which the arms' stock at one site can come apart through allocations once
    kits have left the shelf otherwise: the largest block in each stratum of the site (the site is
    always a factor). None when the design bounds no such drift (minimization)."""
    spec = definition.randomization_spec
    if not isinstance(spec, BlockRandomization):
        return None
    strata = prod(len(f.levels) for f in definition.stratification if f.source != "site")
    return max(spec.block_sizes) * strata


def low_triggers(definition: TrialDefinition) -> tuple[LowTrigger, ...]:
    """The trigger levels of `[supply]` at or below `arm_drift_courses`, for the person loading the
    definition (who reads its block sizes in the file anyway; never shown on a page, where blinded
    readers would learn the largest block from it). The courses used during the lead time come on
    top, and only the trial's own enrolment tells them."""
    supply, drift = definition.supply, arm_drift_courses(definition)
    if supply is None or drift is None:
        return ()
    found = []
    if supply.levels.trigger_courses <= drift:
        found.append(LowTrigger(None, supply.levels.trigger_courses, drift))
    for code, levels in supply.overrides:
        if levels.trigger_courses != supply.levels.trigger_courses and levels.trigger_courses <= drift:
            found.append(LowTrigger(code, levels.trigger_courses, drift))
    return tuple(found)


def course_kits(definition: TrialDefinition) -> int:
    """The kits of one treatment course: one per dispensing day."""
    return len(definition.dispensing.schedule)


def shelf_life_needed(definition: TrialDefinition, supply: Supply, levels: SiteSupply, today: date) -> date:
    """The earliest expiry a kit shipped today may have: a course allocated on its arrival must be
    covered (LBL-05), plus the do-not-ship buffer, so that it does not expire on the shelf at once."""
    arrival = today + timedelta(days=levels.lead_time_days)
    return needed_until(definition, arrival) + timedelta(days=supply.do_not_ship_days)


def after_stock_change(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    site: SiteRef,
    now: datetime,
) -> ResupplyCheck | None:
    """Check `site` after a change to its stock, in the caller's transaction; request a shipment when
    it is below its trigger level. None when the trial has no automatic resupply. `actor` is the
    person whose action prompted the check (named in the audit's request id only)."""
    supply = definition.supply
    if supply is None:
        return None
    levels = supply.for_site(site.code)
    trigger = _trigger(session, supply, levels, site, now)
    # In predictive mode the resupply level rises with the trigger, keeping its distance.
    up_to = trigger + levels.resupply_courses - levels.trigger_courses
    return _ensure(ctx, session, actor, trial, definition, supply, site, now, trigger, up_to)


def at_activation(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    site: SiteRef,
    now: datetime,
) -> ResupplyCheck | None:
    """The initial shipment of a site being activated: up to its initial courses."""
    supply = definition.supply
    if supply is None:
        return None
    initial = supply.for_site(site.code).initial_courses
    return _ensure(ctx, session, actor, trial, definition, supply, site, now, initial, initial)


def check_sites(ctx: ServiceContext, actor: Actor, trial_code: str) -> list[ResupplyCheck]:
    """Check every active site of the trial (a daily job: `allocator resupply`), in one unit of
    work. Empty when the trial has no automatic resupply."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        return check_sites_in(ctx, session, actor, trial, current_definition(session, trial), now)


def check_sites_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    now: datetime,
) -> list[ResupplyCheck]:
    """`after_stock_change` for every active site, in the caller's transaction (a change that
    touches every site's stock, such as a batch's new expiry)."""
    if definition.supply is None:
        return []
    sites = session.execute(
        select(Site.id, Site.code)
        .where(Site.trial_id == trial.id, Site.status == SiteStatus.ACTIVE.value)
        .order_by(Site.code)
    ).all()
    out = []
    for site in sites:
        found = after_stock_change(ctx, session, actor, trial, definition, site, now)
        if found is not None:
            out.append(found)
    return out


def _trigger(session: Session, supply: Supply, levels: SiteSupply, site: SiteRef, now: datetime) -> int:
    """The site's trigger level; in predictive mode at least the courses its recent enrolment rate
    would use during the lead time (a blinded count of subjects, whatever their arm)."""
    if not supply.predictive:
        return levels.trigger_courses
    window = supply.enrolment_window_days
    recent = (
        session.connection()
        .execute(_RECENT_SUBJECTS, {"site_id": site.id, "since": now - timedelta(days=window)})
        .scalar_one()
    )
    return max(levels.trigger_courses, ceil(recent * levels.lead_time_days / window))


def _courses(
    session: Session, definition: TrialDefinition, levels: SiteSupply, site: SiteRef, now: datetime
) -> int:
    # A shipment requested today arrives at some hour of the day `lead_time_days` later: the kits
    # counted must still serve a course allocated on the next day, or kits expiring the night of
    # the arrival leave the site short until the shipment comes in (the 2,000-subject bench's
    # stock-out: a batch no longer usable from midnight, the resupply arriving that morning).
    horizon = needed_until(definition, definition.local_date(now) + timedelta(days=levels.lead_time_days + 1))
    on_hand, on_order, held_on_the_way = (
        session.connection().execute(_ON_HAND_AND_ON_ORDER, {"site_id": site.id, "horizon": horizon}).one()
    )
    return (int(on_hand) + int(on_order) - int(held_on_the_way)) // course_kits(definition)


def _ensure(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    definition: TrialDefinition,
    supply: Supply,
    site: SiteRef,
    now: datetime,
    below: int,
    up_to: int,
) -> ResupplyCheck:
    """If the site holds fewer than `below` courses, prepare a shipment bringing it to `up_to`."""
    levels = supply.for_site(site.code)
    courses = _courses(session, definition, levels, site, now)
    if courses >= below:
        return ResupplyCheck(site.code, courses, below)
    # Below: take the site's row lock and count again, so that two changes at the site at once
    # request one shipment, not two (the randomization already holds this lock).
    lock_site(session, site.id)
    courses = _courses(session, definition, levels, site, now)
    if courses >= below:
        return ResupplyCheck(site.code, courses, below)
    # Whole courses of every arm, so that the shipment is balanced by arm (BLD-04).
    unit = course_kits(definition) * definition.ratio_total
    count = ceil(max(up_to - courses, 1) * course_kits(definition) / unit) * unit
    system = dataclasses.replace(AUTOMATIC, request_id=actor.request_id)
    today = definition.local_date(now)
    shipment = prepare_shipment(
        ctx,
        session,
        system,
        trial,
        definition,
        site,
        count,
        shelf_life_needed(definition, supply, levels, today),
        now,
        automatic=True,
    )
    if shipment is None:
        _cannot_resupply(ctx, session, system, trial, site, courses, below, count, now)
        return ResupplyCheck(site.code, courses, below, impossible=True)
    session.add(
        Notification(
            trial_id=trial.id,
            site_id=None,  # the depot serves every site
            audience=DEPOT_AUDIENCE,
            kind="resupply_request",
            subject_number=None,
            title=f"Resupply {shipment.number} for site {site.code}",
            body=f"Shipment {shipment.number} of {count} kits for site {site.code} was prepared "
            f"automatically: the site holds {courses} treatment course(s), below its level of {below}. "
            "Ship it from the depot.",
            created_at=now,
        )
    )
    return ResupplyCheck(site.code, courses, below, shipment=shipment.number)


def _cannot_resupply(
    ctx: ServiceContext,
    session: Session,
    system: Actor,
    trial: TrialRef,
    site: SiteRef,
    courses: int,
    below: int,
    count: int,
    now: datetime,
) -> None:
    """Alert the trial manager and the unblinded statistician (once a day per site) and audit it.
    The message names no arm: only that the depot lacks usable kits for a balanced shipment."""
    recent = session.execute(
        select(func.count())
        .select_from(Notification)
        .where(
            Notification.trial_id == trial.id,
            Notification.site_id == site.id,
            Notification.kind == "resupply_impossible",
            Notification.created_at > now - ALERT_EVERY,
        )
    ).scalar_one()
    if recent:
        return
    for audience in ALERT_AUDIENCES:
        session.add(
            Notification(
                trial_id=trial.id,
                site_id=site.id,
                audience=audience,
                kind="resupply_impossible",
                subject_number=None,
                title=f"Site {site.code} cannot be resupplied",
                body=f"Site {site.code} holds {courses} treatment course(s), below its level of {below}, "
                f"and the depot does not hold enough usable kits for a balanced shipment of {count} "
                "kits. Add kits to the depot, with their code-break sheets.",
                created_at=now,
            )
        )
    ctx.audit.record(
        session,
        actor=system,
        chain=trial.code,
        action=Action.RESUPPLY_IMPOSSIBLE,
        object_type="site",
        object_id=site.code,
        site_code=site.code,
        new={"courses": courses, "level": below, "kits_wanted": count},
        at=now,
    )
