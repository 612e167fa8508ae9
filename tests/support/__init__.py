"""The suite's shared helpers: a controllable clock, factories of users and worlds, and the test's
own looks behind the application's back (a kit's arm, audit entries, tampering with guarded rows).

Expensive worlds are built once per process and replayed: see tests/support/worlds.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from allocator import crypto, dbguards
from allocator.audit import Action, Actor, AuditLog
from allocator.db import Database, connect_once
from allocator.models import AuditEvent, Kit
from allocator.permissions import Scope
from allocator.services import auth, sites, trials
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.samples import kits as sample_kits
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.supply import kit_lists, shipments
from allocator.settings import Environment, Settings
from allocator.uat import eligible_on as eligible_on  # the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
IFN_TRIAL = ROOT / "trials" / "ifn-gamma-pais.toml"
GOOD_PASSWORD = "correct horse battery staple 42"
TRIAL = "IFNG-PAIS"
ALL_SITES = Scope(all_sites=True, site_ids=frozenset())
HERE = auth.Client("192.0.2.1", "pytest", "req")


@dataclass
class Clock:
    """A clock the test moves by hand. Starts at a fixed instant so runs are reproducible."""

    current: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 30, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> datetime:
        self.current += timedelta(**kwargs)
        return self.current


CLI_ACTOR = Actor(
    user_id=None, username="cli:test", name="test runner (command line)", role="system", request_id="test"
)


def load_ifn(ctx: ServiceContext) -> trials.LoadResult:
    return trials.load_trial(
        ctx, CLI_ACTOR, IFN_TRIAL.read_text(encoding="utf-8"), source_name="trials/ifn-gamma-pais.toml"
    )


def make_user(
    ctx: ServiceContext,
    username: str,
    role: str,
    *,
    trial: str | None = "IFNG-PAIS",
    site: str | None = None,
    full_name: str | None = None,
    email: str | None = None,
) -> users.CreatedUser:
    return users.create_user(
        ctx,
        CLI_ACTOR,
        users.NewUser(
            username=username, full_name=full_name or username.replace("-", " ").title(), email=email
        ),
        users.RoleRequest(role=role, trial_code=trial if role != "admin" else None, site_code=site),
    )


def make_actor(
    ctx: ServiceContext, username: str, role: str, *, site: str | None = None, email: str | None = None
) -> Actor:
    """A user of IFNG-PAIS with `role` (at `site`), whose password is GOOD_PASSWORD, as an Actor."""
    from allocator.services import auth

    created = make_user(ctx, username, role, site=site, email=email)
    auth.change_password(
        ctx,
        created.user_id,
        created.one_time_password,
        GOOD_PASSWORD,
        GOOD_PASSWORD,
        auth.Client("192.0.2.1", "test", "setup"),
    )
    return Actor(
        user_id=created.user_id,
        username=username,
        name=username.title(),
        role=role,
        site_code=site,
        request_id="test",
    )


def enroll_totp(ctx: ServiceContext, user_id: int, clock: Clock) -> bytes:
    """Enrol an authenticator for `user_id` through the service; returns the secret."""
    import base64

    from allocator import crypto
    from allocator.services import auth

    enrollment = auth.start_totp_enrollment(ctx, user_id)
    secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
    auth.confirm_totp_enrollment(
        ctx,
        user_id,
        None,
        crypto.totp_now(secret, clock()),
        auth.Client("192.0.2.1", "test", "enrol"),
        ticket=enrollment.ticket,
    )
    return secret


CODE_BREAK_EVIDENCE = "sealed code-break sheets of every kit held by the on-call unblinded pharmacist"
CODE_BREAK_SIGNER = "codebreak-stat"


def code_break_sheets(ctx: ServiceContext, signer: Actor | None = None, trial: str = "IFNG-PAIS") -> int:
    """Generate, signed, the code-break sheets of every kit that has none yet: UNB-07 ships kits and
    activates sites only then. Without `signer`, an unblinded statistician (CODE_BREAK_SIGNER,
    password GOOD_PASSWORD) is created on first use. Returns the number of sheets generated."""
    from sqlalchemy import select

    from allocator.models import User
    from allocator.services import auth, codebreak, signatures

    if not codebreak.missing_sheets(ctx, trial):
        return 0
    if signer is None:
        with ctx.db.reading() as session:
            user_id = session.execute(select(User.id).where(User.username == CODE_BREAK_SIGNER)).scalar()
        if user_id is None:
            created = make_user(ctx, CODE_BREAK_SIGNER, "unblinded_statistician", trial=trial)
            auth.change_password(
                ctx,
                created.user_id,
                created.one_time_password,
                GOOD_PASSWORD,
                GOOD_PASSWORD,
                auth.Client("192.0.2.1", "test", "setup"),
            )
            user_id = created.user_id
        signer = Actor(
            user_id=user_id,
            username=CODE_BREAK_SIGNER,
            name="Codebreak Stat",
            role="unblinded_statistician",
            request_id="test",
        )
    request = signatures.SignatureRequest(password=GOOD_PASSWORD)
    return codebreak.generate_sheets(ctx, signer, trial, signature=request).sheets


ELIGIBLE = {
    "age": 64,
    "icu_admission_date": "2026-02-24",
    "sofa_24h": 9,
    "invasive_ventilation": "yes",
    "mhladr": 5400,
    "mhladr_date": "2026-03-01",
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
"""Answers of an eligible patient for the clock's default date (2 March 2026)."""


@dataclass
class ReadyTrial:
    """A trial ready to randomize: sites active, list active, kits at both sites, and signed-in
    capable actors (their password is GOOD_PASSWORD)."""

    investigator: Actor
    investigator_p2: Actor
    pharmacist: Actor
    nurse: Actor
    statistician: Actor
    list_id: int


def ready_trial(ctx: ServiceContext, *, kits_per_site: int = 24, slots_text: str | None = None) -> ReadyTrial:
    """Load IFNG-PAIS (or `slots_text`), create the actors, generate, approve and activate the
    list, generate `kits_per_site` kits per site with their code-break sheets, activate both
    sites and ship and receive the kits. Built once per process, then replayed (tests.support.worlds)."""
    from tests.support.worlds import replayed

    return replayed(
        ctx,
        "ready_trial",
        lambda c: build_ready_trial(c, kits_per_site=kits_per_site, slots_text=slots_text),
        kits_per_site=kits_per_site,
        slots_text=slots_text,
    )


def build_ready_trial(ctx: ServiceContext, *, kits_per_site: int, slots_text: str | None) -> ReadyTrial:
    from datetime import timedelta

    from allocator.permissions import Scope
    from allocator.services import auth, signatures
    from allocator.services.lists import approval, generation

    text = slots_text if slots_text is not None else IFN_TRIAL.read_text(encoding="utf-8")
    trials.load_trial(ctx, CLI_ACTOR, text, source_name="trials/ifn-gamma-pais.toml")
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    today = ctx.now().date()
    actors = {}
    for username, role, site in (
        ("inv-p1", "investigator", "P1"),
        ("inv-p2", "investigator", "P2"),
        ("pharm-p1", "pharmacist", "P1"),
        ("nurse-p1", "nurse", "P1"),
        ("stat", "unblinded_statistician", None),
    ):
        created = make_user(ctx, username, role, site=site)
        auth.change_password(
            ctx,
            created.user_id,
            created.one_time_password,
            GOOD_PASSWORD,
            GOOD_PASSWORD,
            auth.Client("192.0.2.1", "test", "setup"),
        )
        actors[username] = Actor(
            user_id=created.user_id,
            username=username,
            name=username.title(),
            role=role,
            site_code=site,
            request_id="test",
        )
    generated = generation.generate_lists(ctx, CLI_ACTOR, "IFNG-PAIS", "test")
    signed = signatures.SignatureRequest(password=GOOD_PASSWORD)
    approval.approve_list(ctx, actors["stat"], "IFNG-PAIS", generated.list_id, signed)
    approval.activate_list(ctx, actors["stat"], "IFNG-PAIS", generated.list_id, signed)
    if kits_per_site:
        kit_lists.generate_kit_list(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            count=2 * kits_per_site + 8,
            lot_code="LOT-1",
            expiry=today + timedelta(days=365),
        )
        code_break_sheets(ctx, actors["stat"])  # UNB-07: before any activation or shipment
    for site in ("P1", "P2"):
        sites.activate_site(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            site,
            approval_date=date(2026, 1, 5),
            delegation_log_date=date(2026, 2, 1),
            code_break_evidence=CODE_BREAK_EVIDENCE,
            scope=everywhere,
            reason="approved",
        )
    if kits_per_site:
        for site in ("P1", "P2"):
            shipment = shipments.create_shipment(ctx, CLI_ACTOR, "IFNG-PAIS", site, kits_per_site)
            shipments.ship(ctx, CLI_ACTOR, "IFNG-PAIS", shipment.number)
            shipments.receive(ctx, CLI_ACTOR, "IFNG-PAIS", shipment.number, shipment.kits, scope=everywhere)
    return ReadyTrial(
        actors["inv-p1"],
        actors["inv-p2"],
        actors["pharm-p1"],
        actors["nurse-p1"],
        actors["stat"],
        generated.list_id,
    )


# --- the test's own looks and hands, behind the application's back --------------------------------


def arm_of(ctx: ServiceContext, kit: Kit | str, trial: str = TRIAL) -> str:
    """The arm of a kit (a row, or its number), opened from its sealed column — for the test's eyes
    only (the application reads arms through arm_access alone)."""
    if isinstance(kit, str):
        with ctx.db.reading() as s:
            kit = s.execute(select(Kit).where(Kit.kit_number == kit)).scalar_one()
    binding = crypto.Binding(trial=trial, table="kit", row=kit.kit_number, column="sealed_arm")
    return crypto.open_arm(ctx.ring, kit.sealed_arm, binding)


def events(ctx: ServiceContext, action: str, *, chain: str | None = None) -> list[AuditEvent]:
    """The audit entries of `action` (in `chain` only, if given), in order."""
    query = select(AuditEvent).where(AuditEvent.action == action)
    if chain is not None:
        query = query.where(AuditEvent.chain == chain)
    with ctx.db.reading() as s:
        return list(s.execute(query.order_by(AuditEvent.seq)).scalars())


def record_user_updates(
    session: Session, log: AuditLog, chain: str, count: int, at: Callable[[], datetime], *, first: int = 0
) -> None:
    """`count` audit entries on `chain` in `session`, numbered from `first`: a user updated (object
    u<n>, n -> n + 1, reason "entry <n + 1>"), each at `at()`. The chains that the audit tests
    verify, tamper with and append to while verifying."""
    for n in range(first, first + count):
        log.record(
            session,
            actor=CLI_ACTOR,
            chain=chain,
            action=Action.USER_UPDATED,
            object_type="user",
            object_id=f"u{n}",
            old={"n": n},
            new={"n": n + 1},
            reason=f"entry {n + 1}",
            at=at(),
        )


def tamper(db: Database | str, table: str, *statements: str, **params: object) -> None:
    """Change `table` with plain SQL as an insider could: its guard triggers are dropped first, in
    the same transaction. `db` is the test's Database, or the URL of a database of its own (the
    change is then committed)."""
    if isinstance(db, str):
        engine = connect_once(db)
        try:
            with engine.begin() as conn:
                for ddl in dbguards.unguard(conn.dialect.name, table, updates=False):
                    conn.execute(text(ddl))
                for statement in statements:
                    conn.execute(text(statement), params)
        finally:
            engine.dispose()
        return
    with db.unit_of_work() as session:
        for ddl in dbguards.unguard(db.dialect, table, updates=False):
            session.execute(text(ddl))
        for statement in statements:
            session.execute(text(statement), params)


# --- people and subjects ---------------------------------------------------------------------------


def person(
    ctx: ServiceContext,
    username: str,
    role: str,
    site: str | None = None,
    *,
    full_name: str | None = None,
    client: auth.Client = HERE,
) -> Actor:
    """A user of IFNG-PAIS with `role` (at `site`) whose password is GOOD_PASSWORD (so that they
    can sign), as a service actor named `full_name` (by default from the username)."""
    name = full_name or username.replace("-", " ").title()
    created = make_user(ctx, username, role, site=site, full_name=name)
    auth.change_password(
        ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, client
    )
    return Actor(user_id=created.user_id, username=username, name=name, role=role, request_id="test")


def randomization(
    ctx: ServiceContext, investigator: Actor, screening_number: str, site: str = "P1"
) -> subjects_randomize.RandomizationResult:
    """Randomize an eligible septic patient at `site` through the service."""
    request = subjects_randomize.RandomizationRequest(
        site=site,
        screening_number=screening_number,
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    return subjects_randomize.randomize(ctx, investigator, TRIAL, request, ALL_SITES)


def randomize(ctx: ServiceContext, ready: ReadyTrial, screening_number: str, site: str = "P1") -> str:
    """Randomize an eligible septic patient at `site` (P1 or P2) in a ready trial; its subject number."""
    investigator = ready.investigator if site == "P1" else ready.investigator_p2
    return randomization(ctx, investigator, screening_number, site).subject_number


# --- the observational cohort IMMUNOSEPSIS-4 (issue 20) ----------------------------------------------

COHORT_TRIAL = ROOT / "trials" / "immunosepsis-4.toml"
COHORT = "IMMUNOSEPSIS-4"

COHORT_ELIGIBLE = {
    "age": 58,
    "icu_admission_date": "2026-02-28",
    "septic_shock_onset_date": "2026-03-01",  # a Sunday: D3 is Wednesday 4 March
    "septic_shock_under_48h": "yes",
    "infection": "yes",
    "vasopressors": "yes",
    "lactate": "3.4",
    "fluid_resuscitation": "yes",
    "d3_d4_sample_possible": "yes",
    "non_opposition": "yes",
    "pregnancy_breastfeeding": "no",
    "no_social_security_or_protection": "no",
    "language_barrier": "no",
    "interfering_interventional_study": "no",
}
"""Answers of a patient eligible for the cohort on the clock's default date (2 March 2026)."""


def load_cohort(ctx: ServiceContext) -> trials.LoadResult:
    return trials.load_trial(
        ctx, CLI_ACTOR, COHORT_TRIAL.read_text(encoding="utf-8"), source_name="trials/immunosepsis-4.toml"
    )


def stock_tube_sets(ctx: ServiceContext, count: int = 10, site: str = "L1") -> list[str]:
    """`count` BIOMARKER tube sets available at `site` of IMMUNOSEPSIS-4; their numbers."""
    return sample_kits.generate(
        ctx, CLI_ACTOR, COHORT, site=site, kit_type="BIOMARKER", count=count, scope=ALL_SITES
    )


def ready_cohort(ctx: ServiceContext, tube_sets: int = 10) -> Actor:
    """IMMUNOSEPSIS-4 loaded with its site L1 active and `tube_sets` BIOMARKER tube sets in its
    stock; returns its investigator at L1 (password GOOD_PASSWORD)."""
    load_cohort(ctx)
    sites.activate_site(
        ctx,
        CLI_ACTOR,
        COHORT,
        "L1",
        approval_date=date(2026, 1, 5),
        delegation_log_date=date(2026, 2, 1),
        code_break_evidence="",  # an observational study has no code-break sheets (issue 20)
        scope=ALL_SITES,
        reason="approved",
    )
    if tube_sets:
        stock_tube_sets(ctx, tube_sets)
    created = make_user(ctx, "inv-l1", "investigator", trial=COHORT, site="L1")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    return Actor(
        user_id=created.user_id,
        username="inv-l1",
        name="Inv-L1",
        role="investigator",
        site_code="L1",
        request_id="test",
    )


def randomized_now(
    ctx: ServiceContext, ready: ReadyTrial, screening_number: str = "P1-0001", site: str = "P1"
) -> subjects_randomize.RandomizationResult:
    """A septic patient of `site` randomized by its investigator, eligible on today's real date:
    for the committed contexts of the concurrency tests, whose services run on the real clock."""
    return subjects_randomize.randomize(
        ctx,
        ready.investigator if site == "P1" else ready.investigator_p2,
        TRIAL,
        subjects_randomize.RandomizationRequest(
            site=site,
            screening_number=screening_number,
            eligibility=eligible_on(datetime.now(UTC).date()),
            strata={"admission_cause": "septic"},
        ),
        ALL_SITES,
    )


def waiting_for_a_row_lock(ctx: ServiceContext, seconds: float = 15.0) -> bool:
    """Whether another connection of the test's PostgreSQL database waits for a row lock, polled
    for up to `seconds`: a test checks what a use case holds while it waits, not before it has got
    there (a fixed sleep passes on a loaded machine without proving anything)."""
    deadline = time.monotonic() + seconds
    with ctx.db.write_engine.connect() as probe:
        while time.monotonic() < deadline:
            waits = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            probe.rollback()
            if waits:
                return True
            time.sleep(0.05)
    return False


@contextmanager
def committed_context(url: str, key_dir: Path, pool_size: int | None = None) -> Iterator[ServiceContext]:
    """A service context on a freshly migrated database `url` whose units of work really commit
    (the usual `ctx` rolls everything back at the end of a test): for tests that run use cases in
    several threads or hold locks from another connection."""
    settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
    db = Database.connect(url) if pool_size is None else Database.connect(url, pool_size=pool_size)
    try:
        yield ServiceContext.build(
            settings, db, crypto.KeyRing.load(key_dir), passwords=crypto.FAST_PASSWORD_HASHING
        )
    finally:
        db.dispose()
