"""Collected samples of the cohort for the lab-shipment tests (issue 20, labship).

Until the collect helper's tube sets and bedside collection scan land, `collected_samples` registers
participants through the real registration service and then inserts, for each planned sample, a
tube set already collected (with its SampleKitEvent history through `move_sample_kit`). It is the
ONE place to swap for the real services (stock the tube sets, assign at registration, collection
scan) at merge."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

import kits
from allocator import crypto
from allocator.audit import Actor
from allocator.models import PlannedSample, Registration, SampleKit, SampleKitStatus
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.samples.rules import move_sample_kit
from allocator.services.subjects import register
from tests.support import ALL_SITES, COHORT, COHORT_ELIGIBLE

_serial = iter(range(1, 10_000))


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
    """Register `n` eligible participants at `site` and give each planned sample a collected tube
    set; returns the tube sets' kit numbers, in registration order."""
    at = collected_at or ctx.now() - timedelta(hours=2)
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
            planned = session.execute(
                select(PlannedSample, Registration.site_id, Registration.trial_id)
                .join(Registration, Registration.id == PlannedSample.registration_id)
                .where(Registration.subject_number == result.subject_number)
            ).all()
            in_use = set(session.execute(select(SampleKit.kit_number)).scalars())
            for sample, site_id, trial_id in planned:
                number = kits.generate_kit_numbers(1, in_use)[0]
                in_use.add(number)
                kit = SampleKit(
                    trial_id=trial_id,
                    kit_number=number,
                    kit_type=sample.kit_type,
                    site_id=site_id,
                    status=SampleKitStatus.AVAILABLE.value,
                    created_at=at - timedelta(days=10),
                    created_by_name="test",
                )
                session.add(kit)
                session.flush()
                move_sample_kit(
                    session,
                    kit,
                    SampleKitStatus.ASSIGNED,
                    investigator,
                    "registration",
                    at - timedelta(days=1),
                )
                kit.planned_sample_id = sample.id
                kit.assigned_at = at - timedelta(days=1)
                move_sample_kit(session, kit, SampleKitStatus.COLLECTED, investigator, "collected", at)
                kit.collected_at = at
                kit.collected_by_id = investigator.user_id
                kit.collected_by_name = investigator.name
                kit.collection_recorded_at = at
                numbers.append(number)
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
