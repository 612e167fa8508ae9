"""UAT scenario fixtures (VAL-05): `allocator uat reset TRIAL --scenario NAME` puts a TEST or
development instance into a known state, so that a sponsor runs its own UAT scripts repeatably.

A reset rebuilds the instance's database from nothing (every table dropped by the migrations, then
recreated at head) and builds the scenario through the services, as a user would; the key directory
is kept. It is refused on a production instance, before anything is touched: there, nothing is ever
deleted. The scenarios are built for the shipped IFN-gamma trial (its eligibility answers and
strata); another trial is refused with a message.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from allocator import migrate, resources
from allocator.audit import Actor
from allocator.db import connect_once
from allocator.models import Kit, KitStatus, Site, Trial, User
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.services import codebreak, dispensing, signatures, sites, trials, unblinding
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.lookups import current_definition
from allocator.services.subjects import randomize
from allocator.services.supply import kit_lists, shipments
from allocator.settings import Settings

UAT_TRIAL = "ifn-gamma-pais"  # the shipped definition the scenarios are written for
# Beside the demo's users (one per role): an investigator at the second site.
EXTRA_USERS: tuple[tuple[str, str, str, str | None], ...] = (
    ("investigator-p2", "Dr Pierre Deux", "investigator", "P2"),
    ("pharmacist-p2", "Pauline Deux", "pharmacist", "P2"),
)

SCENARIOS = {  # what each builds, in the operator's language at the command (allocator/cli.py)
    "empty": N_("the trial loaded, one user per role, the TEST list active, kits at both sites, no subject"),
    "mid-recruitment": N_(
        "as empty, then 24 subjects randomized at 2 sites (12 each, both causes) and one "
        "emergency unblinding (the first subject of P1)"
    ),
    "close-out-ready": N_(
        "as empty, then 12 subjects randomized at 2 sites (6 each), every kit of every "
        "subject dispensed, both sites closed to recruitment: ready for the database lock"
    ),
}
CLOSE_OUT_SUBJECTS = 12
SITES = ("P1", "P2")  # the shipped trial's sites, where the scenarios recruit alternately


class UatRefused(Exception):
    """The reset is not allowed here, or the scenario or trial is unknown; nothing was changed.
    `message` is a catalogue message and `values` its values, for the operator's language."""

    def __init__(self, message: str, **values: object) -> None:
        super().__init__(message % values if values else message)
        self.message = message
        self.values = values


@dataclass(frozen=True)
class UatResult:
    trial_code: str
    scenario: str
    users: tuple[tuple[str, str, str, str], ...]  # (username, role, site, one-time password)
    subjects: tuple[str, ...]


def check_allowed(settings: Settings, trial: str, scenario: str) -> None:
    """Refuse production, an unknown scenario and a trial the scenarios are not written for."""
    if settings.is_production:
        raise UatRefused(
            N_(
                "refused: this is a production instance (ALLOCATOR_ENV=production); "
                "UAT resets run on TEST or development instances only"
            )
        )
    if scenario not in SCENARIOS:
        raise UatRefused(
            N_("--scenario: unknown scenario %(scenario)s; known: %(known)s"),
            scenario=repr(scenario),
            known=", ".join(SCENARIOS),
        )
    definition = resources.shipped_trial(UAT_TRIAL)
    if definition is None:
        raise UatRefused(
            N_("the %(trial)s definition is not installed: reinstall allocator"), trial=UAT_TRIAL
        )
    code = str(tomllib.loads(definition.read_text(encoding="utf-8")).get("trial", {}).get("code", ""))
    if code != trial:
        raise UatRefused(
            N_("the UAT scenarios are written for %(code)s, not %(trial)s"), code=code, trial=repr(trial)
        )


def rebuild_database(url: str) -> None:
    """Every table dropped and the schema recreated at head by the migrations. SQLite: the database
    file (and its WAL files) removed; PostgreSQL: every table of the current schema dropped."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        for extra in ("", "-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
    else:
        engine = connect_once(url)
        try:
            with engine.begin() as conn:
                names = conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                ).scalars()
                for name in list(names):
                    conn.execute(text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
        finally:
            engine.dispose()
    migrate.upgrade(url)


def eligible_on(today: date) -> dict[str, object]:
    """The answers of an eligible patient of the shipped trial: admitted to the ICU 7 days and the
    mHLA-DR measured 1 day before `today` (the scenarios, the tests and the benchmarks use them)."""
    return {
        "age": 64,
        "icu_admission_date": (today - timedelta(days=7)).isoformat(),
        "sofa_24h": 9,
        "invasive_ventilation": "yes",
        "mhladr": 5400,
        "mhladr_date": (today - timedelta(days=1)).isoformat(),
        "social_security": "yes",
        "consent": "yes",
        "short_icu_stay": "no",
        "preexisting_immunosuppression": "no",
        "prolonged_ventilation_expected": "no",
        "pregnancy_breastfeeding": "no",
        "imukin_contraindication": "no",
        "immunosuppressive_therapy": "no",
        "severe_hepatic_renal_failure": "no",
        "other_interventional_trial": "no",
        "legal_protection": "no",
    }


def _user_actor(ctx: ServiceContext, username: str, role: str, site: str | None, request_id: str) -> Actor:
    with ctx.db.reading() as session:
        user = session.execute(select(User).where(User.username == username)).scalar_one()
    return Actor(
        user_id=user.id,
        username=user.username,
        name=user.full_name,
        role=role,
        site_code=site,
        request_id=request_id,
    )


def build(
    ctx: ServiceContext,
    actor: Actor,
    scenario: str,
    *,
    demo_users: tuple[tuple[str, str, str, str | None], ...],
    prepare: Callable[[ServiceContext, Actor, str, dict[str, str]], None],
) -> UatResult:
    """Build `scenario` in an empty, migrated database: the users of `demo_users`, the trial made
    ready by `prepare` (the demo's preparation), then the scenario's own steps."""
    definition = resources.shipped_trial(UAT_TRIAL)
    if definition is None:  # checked by check_allowed
        raise UatRefused(
            N_("the %(trial)s definition is not installed: reinstall allocator"), trial=UAT_TRIAL
        )
    loaded = trials.load_trial(
        ctx,
        actor,
        definition.read_text(encoding="utf-8"),
        source_name=resources.shipped_source_name(definition),
    )
    code = loaded.trial_code
    created = []
    for username, name, role, site in (*demo_users, *EXTRA_USERS):
        made = users.create_user(
            ctx,
            actor,
            users.NewUser(username=username, full_name=name),
            users.RoleRequest(
                role=role,
                trial_code=None if role == "admin" else code,
                site_code=site,
                reason=f"UAT scenario {scenario}",
            ),
        )
        created.append((username, role, site or "-", made.one_time_password))
    passwords = {row[0]: row[3] for row in created}
    prepare(ctx, actor, code, passwords)
    subjects: list[str] = []
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    if scenario == "mid-recruitment":
        results = _recruit(ctx, actor, code, 24, passwords)
        subjects = [r.subject_number for r in results]
        unblinding.emergency_unblind(
            ctx,
            _user_actor(ctx, "investigator", "investigator", "P1", actor.request_id),
            code,
            subjects[0],
            reason_category="serious_adverse_event",
            reason="UAT scenario: emergency unblinding of the first subject",
            confirmed=True,
            signature=signatures.SignatureRequest(password=passwords["investigator"]),
            scope=everywhere,
        )
    elif scenario == "close-out-ready":
        results = _recruit(ctx, actor, code, CLOSE_OUT_SUBJECTS, passwords)
        subjects = [r.subject_number for r in results]
        pharmacists = {
            "P1": (_user_actor(ctx, "pharmacist", "pharmacist", "P1", actor.request_id), "pharmacist"),
            "P2": (_user_actor(ctx, "pharmacist-p2", "pharmacist", "P2", actor.request_id), "pharmacist-p2"),
        }
        for k, result in enumerate(results):  # every day of every subject, by its site's pharmacist
            pharmacist, username = pharmacists["P1" if k % 2 == 0 else "P2"]
            dispensing.dispense(
                ctx,
                pharmacist,
                code,
                result.subject_number,
                {kit.day: kit.kit_number for kit in result.kits},
                scope=everywhere,
                signature=signatures.SignatureRequest(password=passwords[username]),
            )
        for site in ("P1", "P2"):
            sites.close_site(
                ctx, actor, code, site, scope=everywhere, reason="UAT scenario: recruitment complete"
            )
    return UatResult(code, scenario, tuple(created), tuple(subjects))


def _stock_for(
    ctx: ServiceContext, actor: Actor, code: str, per_site: int, passwords: dict[str, str]
) -> None:
    """Make each site hold enough kits of every arm for `per_site` subjects, whatever the list
    gives them. The list is drawn afresh at every reset, and a site may meet a run of one arm (up to
    every subject of a stratum); a randomization is refused unless the site holds a whole schedule of
    every arm (RND-08). So each site gets, per arm, a schedule for each of its subjects plus one: more
    kits are generated, with their sealed code-break sheets (signed by the demo's statistician), and
    the depot's kits are shipped and received."""
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    with ctx.db.reading() as session:
        trial = session.execute(select(Trial).where(Trial.code == code)).scalar_one()
        definition = current_definition(session, trial)
        held = dict(
            session.execute(
                select(Site.code, func.count(Kit.id))
                .join(Kit, Kit.site_id == Site.id)
                .where(Site.trial_id == trial.id, Site.code.in_(SITES))
                .group_by(Site.code)
            ).all()
        )
        at_depot = session.execute(
            select(func.count(Kit.id)).where(Kit.trial_id == trial.id, Kit.status == KitStatus.AT_DEPOT.value)
        ).scalar_one()
    arms = len(definition.arm_codes)
    needed = {site: len(definition.dispensing.schedule) * (per_site + 1) * arms for site in SITES}
    to_ship = {site: max(0, needed[site] - held.get(site, 0)) for site in SITES}
    block = 2 * definition.ratio_total
    missing = sum(to_ship.values()) - at_depot
    if missing > 0:
        kit_lists.generate_kit_list(
            ctx,
            actor,
            code,
            count=-(-missing // block) * block,
            lot_code="UAT-LOT-2",
            expiry=ctx.now().date() + timedelta(days=365),
        )
        codebreak.generate_sheets(
            ctx,
            _user_actor(ctx, "statistician", "unblinded_statistician", None, actor.request_id),
            code,
            signature=signatures.SignatureRequest(password=passwords["statistician"]),
        )
    for site in SITES:
        if to_ship[site]:
            shipment = shipments.create_shipment(ctx, actor, code, site, to_ship[site])
            shipments.ship(ctx, actor, code, shipment.number)
            shipments.receive(ctx, actor, code, shipment.number, shipment.kits, scope=everywhere)


def _recruit(
    ctx: ServiceContext, actor: Actor, code: str, count: int, passwords: dict[str, str]
) -> list[randomize.RandomizationResult]:
    """Stock at both sites for their share of `count` subjects (`_stock_for`), then `count`
    subjects randomized, alternately at P1 and P2, both admission causes."""
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    investigators = {
        "P1": _user_actor(ctx, "investigator", "investigator", "P1", actor.request_id),
        "P2": _user_actor(ctx, "investigator-p2", "investigator", "P2", actor.request_id),
    }
    _stock_for(ctx, actor, code, -(-count // len(SITES)), passwords)
    results = []
    for k in range(count):
        site = "P1" if k % 2 == 0 else "P2"
        cause = "septic" if k % 4 < 2 else "non_septic"
        request = randomize.RandomizationRequest(
            site=site,
            screening_number=f"{site}-{k // 2 + 1:04d}",
            eligibility=eligible_on(ctx.now().date()),
            strata={"admission_cause": cause},
        )
        results.append(randomize.randomize(ctx, investigators[site], code, request, everywhere))
    return results
