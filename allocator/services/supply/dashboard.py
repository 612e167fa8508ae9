"""The supply dashboard (issue 19): per site, the treatment courses on hand, the days of supply at the
recent enrolment rate, the shipments on the way, the kits expiring soon and the quarantined kits.
Counts only, never split by arm (BLD-12): the same page serves blinded and unblinded roles."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select

from allocator.models import Kit, Shipment, Site, Subject
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.supply.kit_rules import S, needed_until
from allocator.services.supply.resupply import course_kits

DEFAULT_WINDOW_DAYS = 60  # the enrolment rate's window when the trial has no [supply]


@dataclass(frozen=True, slots=True)
class SiteSupplyRow:
    site: str
    status: str  # the site's: pending, active, closed
    courses: int  # usable kits on hand // kits of a course
    usable_kits: int
    recent_subjects: int  # randomized within the window
    days_of_supply: int | None  # courses at the recent rate; None: nobody randomized in the window
    open_shipments: int  # prepared or shipped
    kits_on_the_way: int
    expiring_soon: int  # available kits that expire within `within_days`
    quarantined: int
    awaiting_relabel: int  # available kits held until their new expiry label is scanned (not usable)
    trigger: int | None  # the [supply] trigger level, if any


@dataclass(frozen=True, slots=True)
class SupplyDashboard:
    rows: tuple[SiteSupplyRow, ...]
    within_days: int
    window_days: int
    automatic: bool  # the trial resupplies its sites ([supply])
    today: date


def dashboard(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, within_days: int = 30
) -> SupplyDashboard:
    """The dashboard of the sites within `scope`. Raises ValidationFailed (field `within`) unless
    1 <= within_days <= 365."""
    if not 1 <= within_days <= 365:
        raise ValidationFailed(
            "invalid number of days", errors=[FieldProblem("within", "a whole number of days from 1 to 365")]
        )
    now = ctx.now()
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        supply = definition.supply
        window = supply.enrolment_window_days if supply else DEFAULT_WINDOW_DAYS
        today = definition.local_date(now)
        usable_from = needed_until(definition, today)
        soon = today + timedelta(days=within_days)
        sites = [
            site
            for site in session.execute(
                select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
            ).scalars()
            if scope.allows_site(site.id)
        ]
        usable: Counter[int] = Counter()
        expiring: Counter[int] = Counter()
        quarantined: Counter[int] = Counter()
        relabel: Counter[int] = Counter()
        awaits = Kit.relabel_requested_at.is_not(None)
        kit_rows = session.execute(
            select(Kit.site_id, Kit.status, Kit.expiry_date, awaits, func.count())
            .where(Kit.trial_id == trial.id, Kit.site_id.is_not(None))
            .group_by(Kit.site_id, Kit.status, Kit.expiry_date, awaits)
        ).all()
        for site_id, status, expiry, awaiting, count in kit_rows:
            if site_id is None:  # pragma: no cover - the query keeps site kits only
                continue
            if status == S.AVAILABLE.value and awaiting:
                # Neither drawn nor dispensed until relabelled (issue 19): not usable, shown apart.
                relabel[site_id] += count
            elif status == S.AVAILABLE.value and expiry is not None and expiry >= usable_from:
                usable[site_id] += count
            if status == S.AVAILABLE.value and expiry is not None and expiry <= soon:
                expiring[site_id] += count
            if status == S.QUARANTINED.value:
                quarantined[site_id] += count
        on_the_way = {
            site_id: (shipments, kits)
            for site_id, shipments, kits in session.execute(
                select(Shipment.site_id, func.count(), func.coalesce(func.sum(Shipment.kit_count), 0))
                .where(Shipment.trial_id == trial.id, Shipment.status.in_(("prepared", "shipped")))
                .group_by(Shipment.site_id)
            ).all()
        }
        recent = dict(
            session.execute(
                select(Subject.site_id, func.count())
                .where(Subject.trial_id == trial.id, Subject.randomized_at >= now - timedelta(days=window))
                .group_by(Subject.site_id)
            ).all()
        )
        per_course = course_kits(definition)
        rows = []
        for site in sites:
            courses = usable[site.id] // per_course
            subjects = int(recent.get(site.id, 0))
            shipments, kits = on_the_way.get(site.id, (0, 0))
            rows.append(
                SiteSupplyRow(
                    site=site.code,
                    status=site.status,
                    courses=courses,
                    usable_kits=usable[site.id],
                    recent_subjects=subjects,
                    days_of_supply=courses * window // subjects if subjects else None,
                    open_shipments=int(shipments),
                    kits_on_the_way=int(kits),
                    expiring_soon=expiring[site.id],
                    quarantined=quarantined[site.id],
                    awaiting_relabel=relabel[site.id],
                    trigger=supply.for_site(site.code).trigger_courses if supply else None,
                )
            )
        return SupplyDashboard(tuple(rows), within_days, window, supply is not None, today)
