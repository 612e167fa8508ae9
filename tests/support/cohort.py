"""Collected samples of the cohort for the lab-shipment tests (issue 20).

`collected_samples` stocks the site with tube sets (the real generation service), registers
participants through the real registration service (which assigns each planned sample its tube
set), then records each set as collected at a chosen time through `move_sample_kit` — not through
the bedside scan, whose window check ties the collection to the planned day: lab-shipment tests
choose the collection time to set the pre-analytical delay."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

import kits
from allocator import crypto, sampling
from allocator.audit import Actor
from allocator.models import PlannedSample, Registration, SampleKit, SampleKitStatus, Site
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.samples.rules import move_sample_kit
from allocator.services.subjects import register
from allocator.trialdef import load_definition
from tests.support import ALL_SITES, COHORT, COHORT_ELIGIBLE, COHORT_TRIAL, stock_tube_sets

_serial = iter(range(1, 10_000))


def live_answers() -> dict[str, object]:
    """Eligibility for a registration on the real clock: an onset (today or up to two days back,
    in the trial's time zone) whose D3/D4 window holds a lab working day. Today's date alone fails
    every Wednesday and next to holidays, when the window falls on no lab working day."""
    plan = load_definition(COHORT_TRIAL)[0].sampling
    assert plan is not None
    today = datetime.now(ZoneInfo("Europe/Paris")).date()
    for back in range(3):
        onset = today.fromordinal(today.toordinal() - back)
        if all(p.planned is not None for p in sampling.plan(plan, onset)):
            day = onset.isoformat()
            return {**COHORT_ELIGIBLE, "icu_admission_date": day, "septic_shock_onset_date": day}
    raise AssertionError("no onset date with a lab working day in its window")  # pragma: no cover


def collected_samples(
    ctx: ServiceContext,
    investigator: Actor,
    n: int,
    site: str = "L1",
    *,
    collected_at: datetime | None = None,
    scope: Scope = ALL_SITES,
    eligibility: dict[str, object] | None = None,
) -> list[str]:
    """Register `n` eligible participants at `site` (stocking it with tube sets first if it holds
    too few) and record each planned sample's tube set as collected; returns the tube sets' kit
    numbers, in registration order."""
    at = collected_at or ctx.now() - timedelta(hours=2)
    with ctx.db.reading() as session:
        available = session.execute(
            select(func.count())
            .select_from(SampleKit)
            .join(Site, Site.id == SampleKit.site_id)
            .where(Site.code == site, SampleKit.status == SampleKitStatus.AVAILABLE.value)
        ).scalar_one()
    if available < n:
        stock_tube_sets(ctx, n - available, site=site)
    numbers: list[str] = []
    for _ in range(n):
        screening = f"{site}-{5000 + next(_serial)}"  # clear of the numbers tests type by hand
        result = register.register(
            ctx,
            investigator,
            COHORT,
            register.RegistrationRequest(
                site=site, screening_number=screening, eligibility=eligibility or COHORT_ELIGIBLE
            ),
            scope,
        )
        with ctx.db.unit_of_work() as session:
            assigned = session.execute(
                select(SampleKit)
                .join(PlannedSample, PlannedSample.id == SampleKit.planned_sample_id)
                .join(Registration, Registration.id == PlannedSample.registration_id)
                .where(Registration.subject_number == result.subject_number)
                .order_by(PlannedSample.id)
            ).scalars()
            for kit in assigned:
                move_sample_kit(session, kit, SampleKitStatus.COLLECTED, investigator, "collected", at)
                kit.collected_at = at
                kit.collected_by_id = investigator.user_id
                kit.collected_by_name = investigator.name
                kit.collection_recorded_at = at
                numbers.append(kit.kit_number)
    return numbers


def tube_set_label(ctx: ServiceContext, kit_number: str, trial: str = COHORT) -> str:
    """The QR payload of a tube set's own label (unit S-00), as printed."""
    return kits.build_payload(trial, kit_number, kits.sample_unit(0), lambda m: crypto.label_mac(ctx.ring, m))


def manifest_payload(ctx: ServiceContext, number: str, trial: str = COHORT) -> str:
    """The QR payload of a lab shipment's manifest, as printed."""
    return kits.build_shipment_payload(trial, number, lambda m: crypto.label_mac(ctx.ring, m))


def second_site(ctx: ServiceContext) -> Actor:
    """Site L2 added to the cohort (a new definition version) and activated; its investigator."""
    from datetime import date

    from allocator.services import auth, sites, trials
    from tests.support import CLI_ACTOR, COHORT_TRIAL, GOOD_PASSWORD, HERE, make_user

    text = COHORT_TRIAL.read_text(encoding="utf-8").replace(
        "# --- What the public record does not give",
        '[[sites]]\ncode = "L2"\nname = "Lyon site 2"\ncity = "Lyon"\nprincipal_investigator = "Dr Two"\n\n'
        "# --- What the public record does not give",
        1,
    )
    trials.load_trial(ctx, CLI_ACTOR, text, source_name="immunosepsis-4-l2.toml")
    sites.activate_site(
        ctx,
        CLI_ACTOR,
        COHORT,
        "L2",
        approval_date=date(2026, 1, 5),
        delegation_log_date=date(2026, 2, 1),
        code_break_evidence="",
        scope=ALL_SITES,
        reason="approved",
    )
    created = make_user(ctx, "inv-l2", "investigator", trial=COHORT, site="L2")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    return Actor(
        user_id=created.user_id,
        username="inv-l2",
        name="Inv-L2",
        role="investigator",
        site_code="L2",
        request_id="test",
    )


def lab_technician(ctx: ServiceContext, username: str = "lab-tech") -> Actor:
    """The cohort's lab technician (a trial-wide role), password GOOD_PASSWORD."""
    from allocator.services import auth
    from tests.support import GOOD_PASSWORD, HERE, make_user

    created = make_user(ctx, username, "lab_technician", trial=COHORT)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    return Actor(
        user_id=created.user_id,
        username=username,
        name="Lucie Labo",
        role="lab_technician",
        site_code=None,
        request_id="test",
    )
