"""A trial's drug supply run on a simulated clock (issue 19): subjects arrive at random times, are
randomized and dosed on the trial's schedule, the depot ships what the automatic resupply requests
and the sites receive it after the lead time, batches arrive at the depot and expire, and the site
pharmacists put aside the kits that can no longer serve a course. Everything goes through the
services, as the people would; only what a person would see on a box or a shelf (kit numbers in a
shipment, expiry dates on the shelf) is read straight from the database.

Used by tests/integration/test_supply_simulation.py (170 subjects, 2 sites) and by
bench/supply_simulation.py (10,000 subjects, 50 sites)."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Protocol

from sqlalchemy import func, select

from allocator.models import Batch, Kit, Notification, Shipment, Site
from allocator.services import codebreak, dispensing, signatures, sites, trials
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.lists import approval, generation
from allocator.services.lookups import current_definition, get_trial
from allocator.services.subjects import randomize
from allocator.services.subjects.randomize import KitsUnavailable
from allocator.services.supply import disposal, kit_lists, kit_status, reconciliation, resupply, shipments
from allocator.services.supply.kit_rules import needed_until
from tests.support import (
    ALL_SITES,
    CLI_ACTOR,
    CODE_BREAK_EVIDENCE,
    GOOD_PASSWORD,
    TRIAL,
    eligible_on,
    make_actor,
)

CAUSES = ("septic", "non_septic")
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
MORNING = time(7, 0)  # UTC: the depot ships, the sites receive and check their shelves


class SettableClock(Protocol):
    current: datetime


@dataclass(frozen=True, slots=True)
class BatchPlan:
    lot_code: str
    kits: int  # a multiple of twice the ratio total (whole balanced blocks)
    arrives_day: int  # at the depot, days after the start
    expires_day: int  # days after the start


@dataclass
class Outcome:
    randomized: int = 0
    refused_for_kits: int = 0  # stock-outs: randomizations refused for lack of kits
    dispensed: int = 0
    dispensed_past_usable: int = 0
    dispensing_refused: int = 0
    wasted_at_sites: int = 0  # kits put aside at a site because they expired before they could serve
    wasted_at_depot: int = 0  # kits that expired at the depot, never shipped
    shipments: int = 0
    resupply_alerts: int = 0
    discrepancies: tuple[str, ...] = ()
    wasted_by_lot: Counter[str] = field(default_factory=Counter)
    returned: int = 0  # at the close-out: used kits sent back to the depot
    destroyed: int = 0  # at the close-out: leftover kits destroyed on site (signed)
    left_open: int = 0  # kits still on hand or in transit at a site after the close-out
    stockouts: list[str] = field(default_factory=list)  # when and where a randomization was refused

    def summary(self) -> str:
        return (
            f"randomized {self.randomized}, refused for lack of kits {self.refused_for_kits}, "
            f"kits dispensed {self.dispensed} (past their usable date: {self.dispensed_past_usable}, "
            f"refused: {self.dispensing_refused}), shipments {self.shipments}, "
            f"resupply alerts {self.resupply_alerts}, kits wasted to expiry: {self.wasted_at_sites} at "
            f"the sites, {self.wasted_at_depot} at the depot (by batch: {dict(sorted(self.wasted_by_lot.items()))}), "
            f"close-out: {self.returned} used kits returned, {self.destroyed} leftover kits destroyed, "
            f"{self.left_open} left open; reconciliation discrepancies {len(self.discrepancies)}"
        )


def with_supply(definition_text: str, supply_toml: str) -> str:
    """The definition with a `[supply]` section added (at the end: TOML allows tables in any order)."""
    return definition_text.rstrip() + "\n\n" + supply_toml.strip() + "\n"


class SupplySimulation:
    def __init__(
        self,
        ctx: ServiceContext,
        clock: SettableClock,
        *,
        definition_text: str,
        site_codes: list[str],
        subjects: int,
        days: int,
        batches: list[BatchPlan],
        seed: int,
        ready_days: int = 7,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.clock = clock
        self.definition_text = definition_text
        self.site_codes = site_codes
        self.subjects = subjects
        self.days = days
        self.batches = batches
        self.rng = random.Random(seed)
        self.ready_days = ready_days  # between activation and the first subject (initial shipment)
        self.progress = progress or (lambda _: None)
        self.start = clock.current
        self.outcome = Outcome()

    # --- set-up ----------------------------------------------------------------------------------

    def _set_up(self) -> None:
        ctx = self.ctx
        trials.load_trial(ctx, CLI_ACTOR, self.definition_text, source_name="supply-simulation.toml")
        self.stat = make_actor(ctx, "sim-stat", "unblinded_statistician")
        self.pharmacists = {
            c: make_actor(ctx, f"pharm-{c.lower()}", "pharmacist", site=c) for c in self.site_codes
        }
        self.investigators = {
            c: make_actor(ctx, f"inv-{c.lower()}", "investigator", site=c) for c in self.site_codes
        }
        generated = generation.generate_lists(ctx, CLI_ACTOR, TRIAL, "test")
        approval.approve_list(ctx, self.stat, TRIAL, generated.list_id, SIGNED)
        approval.activate_list(ctx, self.stat, TRIAL, generated.list_id, SIGNED)
        with ctx.db.reading() as session:
            self.definition = current_definition(session, get_trial(session, TRIAL))
        self._batches_of_day(0)
        for code in self.site_codes:  # the initial shipments are requested here
            sites.activate_site(
                ctx,
                CLI_ACTOR,
                TRIAL,
                code,
                approval_date=self.start.date() - timedelta(days=30),
                delegation_log_date=self.start.date() - timedelta(days=10),
                code_break_evidence=CODE_BREAK_EVIDENCE,
                scope=ALL_SITES,
                reason="simulation",
            )

    def _batches_of_day(self, day: int) -> None:
        arriving = [b for b in self.batches if b.arrives_day == day]
        for batch in arriving:
            kit_lists.generate_kit_list(
                self.ctx,
                CLI_ACTOR,
                TRIAL,
                count=batch.kits,
                lot_code=batch.lot_code,
                expiry=self.start.date() + timedelta(days=batch.expires_day),
            )
        if arriving:  # UNB-07: a kit is shipped only with its sealed code-break sheet
            codebreak.generate_sheets(self.ctx, self.stat, TRIAL, signature=SIGNED)

    # --- the run -----------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._set_up()
        events: list[tuple[datetime, int, str, tuple[object, ...]]] = []
        sequence = 0

        def push(at: datetime, kind: str, *args: object) -> None:
            nonlocal sequence
            sequence += 1
            heapq.heappush(events, (at, sequence, kind, args))

        first = datetime.combine(self.start.date(), MORNING, self.start.tzinfo)
        for day in range(1, self.days + self.ready_days + 1):
            push(first + timedelta(days=day), "morning", day)
        enrolment = timedelta(days=self.days).total_seconds()
        for k in range(1, self.subjects + 1):
            at = first + timedelta(days=self.ready_days, seconds=self.rng.uniform(0, enrolment))
            push(at, "arrival", k, self.rng.choice(self.site_codes), self.rng.choice(CAUSES))
        while events:
            at, _, kind, args = heapq.heappop(events)
            self.clock.current = at
            if kind == "morning":
                self._morning(int(str(args[0])))
            elif kind == "arrival":
                result = self._arrival(*args)
                if result is not None:
                    for day in self.definition.dispensing.schedule:
                        kit = next(k for k in result.kits if k.day == day.label)
                        push(
                            at + timedelta(hours=day.offset_hours, minutes=30),
                            "dose",
                            result.site,
                            result.subject_number,
                            day.label,
                            kit.kit_number,
                        )
            else:
                self._dose(*args)
        self._finish()
        return self.outcome

    def _arrival(self, *args: object) -> randomize.RandomizationResult | None:
        k, site, cause = args
        today = self.definition.local_date(self.clock.current)
        request = randomize.RandomizationRequest(
            site=str(site),
            screening_number=f"{site}-{k:05d}",
            eligibility=eligible_on(today),
            strata={"admission_cause": str(cause)},
        )
        try:
            result = randomize.randomize(self.ctx, self.investigators[str(site)], TRIAL, request, ALL_SITES)
        except KitsUnavailable:
            self.outcome.refused_for_kits += 1
            day = (self.clock.current - self.start).days
            self.outcome.stockouts.append(f"day {day} {self.clock.current:%H:%M} UTC at {site}")
            return None
        self.outcome.randomized += 1
        return result

    def _dose(self, *args: object) -> None:
        site, number, label, kit_number = (str(a) for a in args)
        today = self.definition.local_date(self.clock.current)
        with self.ctx.db.reading() as session:
            expiry = session.execute(select(Kit.expiry_date).where(Kit.kit_number == kit_number)).scalar_one()
        try:
            dispensing.dispense(
                self.ctx,
                self.pharmacists[site],
                TRIAL,
                number,
                {label: kit_number},
                scope=ALL_SITES,
                signature=SIGNED,
            )
        except DomainError:
            self.outcome.dispensing_refused += 1
            return
        self.outcome.dispensed += 1
        if expiry is None or expiry < today:
            self.outcome.dispensed_past_usable += 1

    def _morning(self, day: int) -> None:
        ctx = self.ctx
        today = self.definition.local_date(self.clock.current)
        self._batches_of_day(day)
        with ctx.db.reading() as session:
            open_shipments = session.execute(
                select(Shipment.number, Shipment.status, Shipment.created_at, Site.code)
                .join(Site, Site.id == Shipment.site_id)
                .where(Shipment.status.in_(("prepared", "shipped")))
                .order_by(Shipment.id)
            ).all()
        for number, status, created_at, site in open_shipments:
            lead = self.definition.supply.for_site(site).lead_time_days if self.definition.supply else 1
            prepared_on = self.definition.local_date(created_at)
            shipped = status == "shipped"
            if not shipped and prepared_on < today:  # the depot ships the next morning
                shipments.ship(ctx, CLI_ACTOR, TRIAL, number)
                shipped = True
            if shipped and (today - prepared_on).days >= lead:
                with ctx.db.reading() as session:
                    kits = list(
                        session.execute(
                            select(Kit.kit_number)
                            .join(Shipment, Shipment.id == Kit.shipment_id)
                            .where(Shipment.number == number)
                        ).scalars()
                    )
                shipments.receive(ctx, self.pharmacists[site], TRIAL, number, kits, scope=ALL_SITES)
        # The site pharmacists put aside the kits that can no longer serve a course (LBL-05).
        usable_from = needed_until(self.definition, today)
        with ctx.db.reading() as session:
            stale = session.execute(
                select(Kit.kit_number, Site.code)
                .join(Site, Site.id == Kit.site_id)
                .where(Kit.status == "available", Kit.expiry_date < usable_from)
                .order_by(Kit.kit_number)
            ).all()
        for kit_number, site_code in stale:
            kit_status.change_status(
                ctx,
                self.pharmacists[site_code],
                TRIAL,
                kit_number,
                "expired",
                reason="expires before a full course",
                scope=ALL_SITES,
                depot=False,
            )
        resupply.check_sites(ctx, CLI_ACTOR, TRIAL)  # the nightly check
        if day % 30 == 0:
            self.progress(f"day {day}: {self.outcome.randomized} randomized")

    def _finish(self) -> None:
        ctx = self.ctx
        end = self.definition.local_date(self.clock.current)
        with ctx.db.reading() as session:
            expired = session.execute(
                select(Kit.kit_number, Kit.site_id, Kit.status, Kit.expiry_date, Kit.batch_id).where(
                    Kit.status.in_(("expired", "at_depot"))
                )
            ).all()
            lot_codes = dict(session.execute(select(Batch.id, Batch.lot_code)).all())
            self.outcome.shipments = session.execute(select(func.count()).select_from(Shipment)).scalar_one()
            self.outcome.resupply_alerts = session.execute(
                select(func.count())
                .select_from(Notification)
                .where(Notification.kind == "resupply_impossible")
            ).scalar_one()
        for _, site_id, status, expiry, batch_id in expired:
            if status == "expired" and site_id is not None:
                self.outcome.wasted_at_sites += 1
                self.outcome.wasted_by_lot[lot_codes[batch_id]] += 1
            elif status == "at_depot" and expiry is not None and expiry < end:
                self.outcome.wasted_at_depot += 1
                self.outcome.wasted_by_lot[lot_codes[batch_id]] += 1
        self._close_out()
        report = reconciliation.reconciliation(ctx, TRIAL, ALL_SITES, include_depot=True)
        self.outcome.discrepancies = report.discrepancies
        self.outcome.left_open = sum(b.open for b in report.balances)

    def _close_out(self) -> None:
        """The end of the trial at the sites (issue 19): shipments still on the way are received,
        then each site's pharmacist returns the used kits to the depot and destroys the leftovers
        (unused, damaged, expired) on site, each site in one record of each kind."""
        ctx = self.ctx
        with ctx.db.reading() as session:
            on_the_way = session.execute(
                select(Shipment.number, Site.code)
                .join(Site, Site.id == Shipment.site_id)
                .where(Shipment.status == "shipped")
                .order_by(Shipment.id)
            ).all()
        for number, site in on_the_way:
            with ctx.db.reading() as session:
                kits = list(
                    session.execute(
                        select(Kit.kit_number)
                        .join(Shipment, Shipment.id == Kit.shipment_id)
                        .where(Shipment.number == number)
                    ).scalars()
                )
            shipments.receive(ctx, self.pharmacists[site], TRIAL, number, kits, scope=ALL_SITES)
        for kind, statuses in (
            ("return", ("dispensed", "administered")),
            ("destruction", ("available", "damaged", "expired")),
        ):
            with ctx.db.reading() as session:
                rows = session.execute(
                    select(Kit.kit_number, Site.code)
                    .join(Site, Site.id == Kit.site_id)
                    .where(Kit.status.in_(statuses))
                    .order_by(Kit.kit_number)
                ).all()
            by_site: dict[str, list[str]] = {}
            for kit_number, site_code in rows:
                by_site.setdefault(site_code, []).append(kit_number)
            for site_code, numbers in sorted(by_site.items()):
                disposal.record(
                    ctx,
                    self.pharmacists[site_code],
                    TRIAL,
                    kind,
                    numbers,
                    method="courier to the depot" if kind == "return" else "incineration by the pharmacy",
                    scope=ALL_SITES,
                    signature=SIGNED if kind == "destruction" else None,
                )
                if kind == "return":
                    self.outcome.returned += len(numbers)
                else:
                    self.outcome.destroyed += len(numbers)
