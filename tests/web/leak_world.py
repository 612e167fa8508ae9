"""The world the leak crawler walks (H1, BLD-01/02): a trial with subjects of BOTH arms in every
state a blinded user can meet, built through the services on the test clock.

Subjects are randomized at site P1 (stratum "septic") until every *state* below has one subject of
arm A and one of arm B — a twin pair. Both twins of a pair then go through exactly the same steps,
so that every page about one must equal the page about the other once identifiers are masked:

* allocated      randomized only
* corrected      dispensed; stratum corrected (septic → non-septic) by the investigator
* administered   dispensed; D1 given; refused scans (another patient's label, the D2 label as D1,
                 D1 again, an unreadable label)
* pv_unblinded   the same, then a pharmacovigilance unblinding (*) — which blinded roles must not
                 be able to tell from `administered` (UNB-08)
* in_error       dispensed; flagged as randomized in error (signed); accidental unblinding report (*)
* replaced       dispensed; D3 kit replaced as damaged
* emergency      dispensed; emergency unblinding by the investigator (*)
* withdrawn      dispensed; D1 given; withdrawn (consent withdrawn, signed); the D2 scan refused

Further: one subject at site P2, an ineligible patient in the screening log, a quarantined kit, a
shipment in transit with a temperature excursion awaiting the sponsor's decision, a batch at the
depot awaiting relabelling after an expiry change, a prepared (not shipped) shipment, a signed audit
review, a spare user (target of the admin forms the crawler submits), and one user per role with an
e-mail address (the crawler's principals).

Beside it, the observational cohort IMMUNOSEPSIS-4 (issue 20), with a registered participant and an
ineligible patient at its site L1, and its investigator as one more principal
(`cohort_investigator`), who has no role in IFNG-PAIS: every principal crawls both studies.

(*) The unblinding steps use allocator.services.unblinding; they are the only conditional part of
the world (`World.unblinding` says whether they ran), for the time the service is being written.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from types import ModuleType

from sqlalchemy import select

import kits as kitlib
from allocator.audit import Actor
from allocator.models import (
    ApiToken,
    Batch,
    CodeBreakSheet,
    Dispensation,
    Kit,
    KitDisposal,
    LabShipment,
    LoginSession,
    PrintedDocument,
    RandomizationList,
    ReportJob,
    RoleAssignment,
    Shipment,
    TemperatureExcursion,
    Trial,
    Unblinding,
    UnblindingDrill,
    User,
)
from allocator.models import Subject as SubjectRow
from allocator.permissions import MFA_REQUIRED_ROLES, SITE_ROLES, UNBLINDED_ROLES, Role, Scope
from allocator.services import (
    audit_trail,
    auth,
    bedside,
    dispensing,
    notifications,
    signatures,
    sites,
    unblinding_drills,
)
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.lookups import trial_definition
from allocator.services.samples import kits as sample_kits
from allocator.services.subjects import confirmation, corrections, randomize, register, withdrawal
from allocator.services.supply import disposal, excursions, kit_lists, kit_rules, kit_status, shipments
from allocator.trialdef import TrialDefinition
from tests.masking import Subject
from tests.support import (
    CLI_ACTOR,
    COHORT_ELIGIBLE,
    ELIGIBLE,
    GOOD_PASSWORD,
    Clock,
    ReadyTrial,
    arm_of,
    enroll_totp,
    load_cohort,
    make_user,
    ready_trial,
)

TRIAL = "IFNG-PAIS"
COHORT = "IMMUNOSEPSIS-4"
COHORT_PRINCIPAL = "cohort_investigator"
COHORT_MONITOR = "cohort_monitor"  # reads the cohort's reports (issue 20); no role in IFNG-PAIS
ARMS = ("A", "B")
DAYS = ("D1", "D2", "D3")
STATES = (
    "allocated",
    "corrected",
    "administered",
    "pv_unblinded",
    "in_error",
    "replaced",
    "emergency",
    "withdrawn",
)
# 8 twins of one arm plus the block imbalance (at most 3 with blocks of 6): 11 subjects, 33 kits and a
# replacement of that arm at P1, and randomization needs 3 kits of every arm left: 84 kits per site
# hold 42 of each arm.
KITS_PER_SITE = 84
EVERYWHERE = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
CLIENT = auth.Client("192.0.2.10", "leak-crawler", "world")
SPARE = "spare-monitor"


@dataclass
class Principal:
    """A user the crawler signs in as: one per role (site roles at P1)."""

    role: str
    username: str
    email: str
    user_id: int
    blinded: bool
    totp_secret: bytes | None = None
    token: str = ""


@dataclass
class WorldSubject:
    subject: Subject  # identifiers (for masking) and the arm (for the test's eyes only)
    state: str
    site: str = "P1"


@dataclass
class World:
    ctx: ServiceContext
    clock: Clock
    definition: TrialDefinition
    ready: ReadyTrial
    principals: dict[str, Principal]
    subjects: list[WorldSubject]
    twins: dict[str, tuple[Subject, Subject]]  # state -> (arm A subject, arm B subject)
    values: dict[str, list[str]]  # what route parameters can be filled with, by kind
    unblinding: bool  # whether the (conditional) unblinding steps ran
    mail: list[EmailMessage] = field(default_factory=list)
    # Within one trial, its own values of a kind where they differ (the cohort's subjects and site)
    trial_values: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)

    def subject(self, number: str) -> WorldSubject | None:
        return next((s for s in self.subjects if s.subject.subject_number == number), None)


def _optional(name: str, wanted: tuple[str, ...]) -> ModuleType | None:
    """The module `name` if it exists and offers everything `wanted`."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if all(hasattr(module, attribute) for attribute in wanted) else None


def unblinding_service() -> ModuleType | None:
    """allocator.services.unblinding when it offers the emergency and pharmacovigilance paths."""
    return _optional(
        "allocator.services.unblinding",
        ("emergency_unblind", "pharmacovigilance_unblind", "report_accidental", "AccidentalReport"),
    )


def codebreak_service() -> ModuleType | None:
    """allocator.services.codebreak when it generates sealed code-break sheets (UNB-06)."""
    return _optional("allocator.services.codebreak", ("generate_sheets", "record_check"))


def capture_mail(ctx: ServiceContext) -> list[EmailMessage]:
    """Run the e-mail outbox with a transport that keeps the messages (BLD-10)."""
    sent: list[EmailMessage] = []
    notifications.send_pending(ctx, transport=sent.append)
    return sent


def _actor(principal: Principal, site: str | None) -> Actor:
    return Actor(
        user_id=principal.user_id,
        username=principal.username,
        name=principal.username.replace("-", " ").title(),
        role=principal.role,
        site_code=site,
        request_id="leak-world",
    )


def _principals(ctx: ServiceContext) -> dict[str, Principal]:
    made: dict[str, Principal] = {}
    for role in Role:
        if role is Role.LAB_TECHNICIAN:
            continue  # an observational study's role (labship): the cohort's principal, in _cohort
        username = f"crawl-{role.value.replace('_', '-')}"
        email = f"{username}@hospital.example"
        created = make_user(ctx, username, role.value, site="P1" if role in SITE_ROLES else None, email=email)
        auth.change_password(
            ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT
        )
        made[role.value] = Principal(
            role.value, username, email, created.user_id, role not in UNBLINDED_ROLES
        )
    return made


def _identifiers(ctx: ServiceContext, number: str) -> Subject:
    """A subject's identifiers, read back: current kit per day, replaced kits, payloads."""
    mac = kit_rules.mac(ctx)
    with ctx.db.reading() as s:
        row = s.execute(select(SubjectRow).where(SubjectRow.subject_number == number)).scalar_one()
        dispensations = s.execute(
            select(Dispensation.day, Dispensation.replacement_number, Kit.kit_number)
            .join(Kit, Kit.id == Dispensation.kit_id)
            .where(Dispensation.subject_id == row.id)
            .order_by(Dispensation.day, Dispensation.replacement_number)
        ).all()
        screening = row.screening_number
        randomization = row.randomization_number
    current: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for day, replacement, kit_number in dispensations:
        label = DAYS[day - 1]
        if label in current:  # the previous kit of that day was replaced
            old = current[label]
            extra += [
                (kitlib.build_payload(TRIAL, old, label, mac), f"<OLD-PAYLOAD-{label}-{replacement}>"),
                (
                    kitlib.build_payload(TRIAL, old, kit_rules.KIT_UNIT, mac),
                    f"<OLD-KITLABEL-{label}-{replacement}>",
                ),
                (kitlib.format_kit_number(old), f"<OLD-KIT-{label}-{replacement}>"),
                (old, f"<OLD-KIT-{label}-{replacement}>"),
            ]
        current[label] = kit_number
    arms = {arm_of(ctx, n, TRIAL) for n in current.values()}
    assert len(arms) == 1, f"{number}: a subject's kits are of one arm"
    return Subject(
        screening_number=screening,
        subject_number=number,
        randomization_number=randomization,
        arm=arms.pop(),
        kits=current,
        kit_labels={d: kitlib.build_payload(TRIAL, n, kit_rules.KIT_UNIT, mac) for d, n in current.items()},
        payloads={d: kitlib.build_payload(TRIAL, n, d, mac) for d, n in current.items()},
        extra=extra,
    )


def build_world(
    ctx: ServiceContext, clock: Clock, *, states: tuple[str, ...] = STATES, extras: bool = True
) -> World:
    """Everything above, in order; the e-mails of the outbox are captured at the end. A smaller
    world (the injected-leak tests): fewer `states`, and no `extras` (site P2, screening log,
    supply, audit review, spare user)."""
    ready = ready_trial(ctx, kits_per_site=KITS_PER_SITE)
    definition = trial_definition(ctx, TRIAL)
    principals = _principals(ctx)
    steps: list[str] = []
    by_state, surplus = _randomize_twins(ctx, clock, ready, states, steps)
    _apply_states(ctx, clock, ready, principals, by_state, steps)
    service = unblinding_service()
    if service is not None:
        _unblind(ctx, clock, service, ready, principals, by_state, steps)
    world_subjects = [
        WorldSubject(_identifiers(ctx, number), state)
        for state, arms in by_state.items()
        for number in arms.values()
    ]
    world_subjects += [WorldSubject(_identifiers(ctx, n), "allocated") for n in surplus]
    cohort_subjects: list[str] = []
    if extras:
        p2 = _extras(ctx, clock, ready, principals, steps)
        world_subjects.append(WorldSubject(_identifiers(ctx, p2), "allocated", "P2"))

    # Second factors (after the world's signatures, which used the password alone) and tokens.
    for principal in principals.values():
        if Role(principal.role) in MFA_REQUIRED_ROLES:
            principal.totp_secret = enroll_totp(ctx, principal.user_id, clock)
        principal.token = users.create_token(ctx, CLI_ACTOR, principal.username, "crawler").token
    if extras:
        cohort_principals, cohort_subjects = _cohort(ctx, clock, steps)
        principals.update(cohort_principals)
        principals[Role.LAB_TECHNICIAN.value] = _cohort_lab(
            ctx, clock, cohort_principals[COHORT_PRINCIPAL], steps
        )
    clock.advance(seconds=31)  # a fresh TOTP step for the sign-ins

    found = {s.subject.subject_number: s.subject for s in world_subjects}
    world = World(
        ctx=ctx,
        clock=clock,
        definition=definition,
        ready=ready,
        principals=principals,
        subjects=world_subjects,
        twins={state: (found[arms[ARMS[0]]], found[arms[ARMS[1]]]) for state, arms in by_state.items()},
        values=_values(ctx, world_subjects, definition, cohort_subjects),
        trial_values={COHORT: _cohort_values(cohort_subjects)} if cohort_subjects else {},
        unblinding=service is not None,
        steps=steps,
    )
    world.mail = capture_mail(ctx)
    return world


def _step(clock: Clock, steps: list[str], what: str, action: Callable[[], object]) -> None:
    clock.advance(minutes=1)
    action()
    steps.append(what)


def _each(
    clock: Clock,
    steps: list[str],
    by_state: dict[str, dict[str, str]],
    state: str,
    what: str,
    action: Callable[[str, str], object],
) -> None:
    """`action(subject number, arm)` for both twins of `state` (if the world has that state)."""
    for arm, number in sorted(by_state.get(state, {}).items()):
        _step(clock, steps, f"{state}: {what} {number}", lambda number=number, arm=arm: action(number, arm))


def _randomize_twins(
    ctx: ServiceContext, clock: Clock, ready: ReadyTrial, states: tuple[str, ...], steps: list[str]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Randomize at P1 until every state has a twin of each arm: (state -> arm -> subject, surplus)."""
    by_state: dict[str, dict[str, str]] = {state: {} for state in states}
    surplus: list[str] = []
    screening = 0
    while any(len(arms) < len(ARMS) for arms in by_state.values()):
        screening += 1
        assert screening <= 40, "no twin pair in every state after 40 randomizations"
        clock.advance(minutes=1)
        result = randomize.randomize(
            ctx,
            ready.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                "P1", f"P1-{screening:04d}", ELIGIBLE, {"admission_cause": "septic"}
            ),
            EVERYWHERE,
        )
        # Printed once (a POST), so that the crawler views a printed confirmation of every subject.
        confirmation.print_confirmation(ctx, ready.investigator, TRIAL, result.subject_number, EVERYWHERE)
        arm = arm_of(ctx, result.kits[0].kit_number, TRIAL)
        state = next((s for s in states if arm not in by_state[s]), None)
        if state is None:
            surplus.append(result.subject_number)
        else:
            by_state[state][arm] = result.subject_number
    steps.append(f"randomized {screening} subjects at P1")
    return by_state, surplus


def _apply_states(
    ctx: ServiceContext,
    clock: Clock,
    ready: ReadyTrial,
    principals: dict[str, Principal],
    by_state: dict[str, dict[str, str]],
    steps: list[str],
) -> None:
    """The same steps for both twins of each state (module docstring)."""
    inv, pharm, nurse = ready.investigator, ready.pharmacist, ready.nurse
    mac = kit_rules.mac(ctx)

    def each(state: str, what: str, action: Callable[[str, str], object]) -> None:
        _each(clock, steps, by_state, state, what, action)

    def dispense(number: str, _arm: str) -> object:
        scans = {day: kitlib.format_kit_number(n) for day, n in _identifiers(ctx, number).kits.items()}
        done = dispensing.dispense(ctx, pharm, TRIAL, number, scans, scope=EVERYWHERE, signature=SIGNED)
        # Printed once (a POST since issue 15, point 5), so that the crawler views a printed sheet.
        dispensing.dispensation_sheet(ctx, pharm, TRIAL, number, EVERYWHERE)
        return done

    def scan(number: str, payload: str, day: str) -> object:
        return bedside.record_scan(
            ctx, nurse, TRIAL, payload=payload, subject_number=number, day=day, scope=EVERYWHERE
        )

    def payload_of(number: str, day: str) -> str:
        return kitlib.build_payload(TRIAL, _identifiers(ctx, number).kits[day], day, mac)

    def refused(action: Callable[[], object]) -> None:
        try:
            action()
        except DomainError:
            return
        raise AssertionError("the scan should have been refused")

    def administer(state: str) -> Callable[[str, str], None]:
        def run(number: str, arm: str) -> None:
            partner = by_state[state][ARMS[1 - ARMS.index(arm)]]
            refused(lambda: scan(number, payload_of(partner, "D1"), "D1"))  # another patient's label
            refused(lambda: scan(number, payload_of(number, "D2"), "D1"))  # the wrong day
            refused(lambda: scan(number, f"AL1/{TRIAL}/00000000/D1/AAAAAAAAAAAAAAAA", "D1"))  # unreadable
            scan(number, payload_of(number, "D1"), "D1")
            refused(lambda: scan(number, payload_of(number, "D1"), "D1"))  # given twice

        return run

    for state in STATES[1:]:
        each(state, "dispense", dispense)
    each(
        "corrected",
        "correct the stratum of",
        lambda n, _a: corrections.correct_stratum(
            ctx,
            inv,
            TRIAL,
            n,
            factor="admission_cause",
            level="non_septic",
            reason="the cause of admission was misread",
            scope=EVERYWHERE,
            agreement_ref=None,
            is_investigator=True,
        ),
    )
    for state in ("administered", "pv_unblinded", "withdrawn"):
        each(state, "refused scans and D1 given for", administer(state))
    each(
        "withdrawn",
        "withdraw, then refuse the D2 scan of",
        lambda n, _a: (
            withdrawal.withdraw(
                ctx,
                inv,
                TRIAL,
                n,
                kind="consent_withdrawn",
                effective_date=ctx.now().date(),
                reason="the patient withdrew consent",
                scope=EVERYWHERE,
                signature=SIGNED,
                agreement_ref=None,
                is_investigator=True,
            ),
            refused(lambda: scan(n, payload_of(n, "D2"), "D2")),
        ),
    )
    each(
        "in_error",
        "flag in error",
        lambda n, _a: corrections.mark_in_error(
            ctx, inv, TRIAL, n, reason="consent withdrawn before dosing", scope=EVERYWHERE, signature=SIGNED
        ),
    )
    each(
        "replaced",
        "replace D3 of",
        lambda n, _a: dispensing.replace_kit(
            ctx, pharm, TRIAL, n, "D3", cause="damaged", reason="vial dropped on the ward", scope=EVERYWHERE
        ),
    )


def _unblind(
    ctx: ServiceContext,
    clock: Clock,
    service: ModuleType,
    ready: ReadyTrial,
    principals: dict[str, Principal],
    by_state: dict[str, dict[str, str]],
    steps: list[str],
) -> None:
    """The conditional part: emergency, pharmacovigilance and accidental unblindings."""
    pv = _actor(principals[Role.PHARMACOVIGILANCE.value], None)
    monitor = _actor(principals[Role.MONITOR.value], None)

    def each(state: str, what: str, action: Callable[[str, str], object]) -> None:
        _each(clock, steps, by_state, state, what, action)

    each(
        "emergency",
        "emergency unblinding of",
        lambda n, _a: service.emergency_unblind(
            ctx,
            ready.investigator,
            TRIAL,
            n,
            reason_category="serious_adverse_event",
            reason="anaphylactic shock after the first injection",
            confirmed=True,
            signature=SIGNED,
            scope=EVERYWHERE,
        ),
    )
    each(
        "pv_unblinded",
        "pharmacovigilance unblinding of",
        lambda n, _a: service.pharmacovigilance_unblind(
            ctx,
            pv,
            TRIAL,
            n,
            reason_category="susar",
            reason="expedited report of a suspected reaction",
            confirmed=True,
            signature=SIGNED,
            scope=EVERYWHERE,
        ),
    )
    each(
        "in_error",
        "accidental unblinding report for",
        lambda n, _a: service.report_accidental(
            ctx,
            monitor,
            TRIAL,
            service.AccidentalReport(
                subject_number=n,
                site=None,
                occurred_at=clock() - timedelta(hours=1),
                persons_unblinded="one ward nurse",
                how="the pharmacy delivery note was left in the patient's room",
                impact="the nurse no longer gives this patient's injections",
                actions="delivery notes are now kept in the pharmacy",
            ),
            scope=EVERYWHERE,
        ),
    )


def _extras(
    ctx: ServiceContext, clock: Clock, ready: ReadyTrial, principals: dict[str, Principal], steps: list[str]
) -> str:
    """Site P2, the screening log, a code-break check, supply, an audit review, the spare user.
    Returns the P2 subject's number."""
    monitor = _actor(principals[Role.MONITOR.value], None)
    clock.advance(minutes=1)
    p2 = randomize.randomize(
        ctx,
        ready.investigator_p2,
        TRIAL,
        randomize.RandomizationRequest("P2", "P2-0001", ELIGIBLE, {"admission_cause": "non_septic"}),
        EVERYWHERE,
    ).subject_number
    steps.append(f"randomized {p2} at P2")
    try:
        randomize.randomize(
            ctx,
            ready.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                "P1", "P1-0900", {**ELIGIBLE, "sofa_24h": 3}, {"admission_cause": "septic"}
            ),
            EVERYWHERE,
        )
    except randomize.Ineligible:
        steps.append("an ineligible patient in the screening log")
    codebreak = codebreak_service()
    if codebreak is not None:  # ready_trial generated the sealed sheets of every kit (UNB-07)
        with ctx.db.reading() as s:
            sheet = s.execute(
                select(CodeBreakSheet.sheet_number).order_by(CodeBreakSheet.id).limit(1)
            ).scalar_one()
        _step(
            clock,
            steps,
            "a code-break sheet checked intact",
            lambda: codebreak.record_check(ctx, monitor, TRIAL, sheet, "intact", "", EVERYWHERE),
        )
    # UNB-11: a drill subject at P1 and an online drill on it, so that the drill pages, the drill
    # log, the DRILL notifications and the emergency form's drill option are crawled too.
    manager = _actor(principals[Role.TRIAL_MANAGER.value], None)
    drill: list[str] = []
    _step(
        clock,
        steps,
        "a drill subject at P1",
        lambda: drill.append(
            unblinding_drills.create_drill_subject(
                ctx, manager, TRIAL, "P1", "yearly drill", scope=EVERYWHERE
            )
        ),
    )
    _step(
        clock,
        steps,
        "an online unblinding drill",
        lambda: unblinding_drills.drill_unblind(
            ctx,
            ready.investigator,
            TRIAL,
            drill[0],
            reason_category="other_medical_emergency",
            reason="yearly drill of the night shift",
            confirmed=True,
            signature=SIGNED,
            scope=EVERYWHERE,
        ),
    )
    with ctx.db.reading() as s:
        kit = s.execute(
            select(Kit.kit_number).where(Kit.status == "available").order_by(Kit.kit_number).limit(1)
        ).scalar_one()
    _step(
        clock,
        steps,
        "quarantine a kit",
        lambda: kit_status.change_status(
            ctx,
            ready.pharmacist,
            TRIAL,
            kit,
            "quarantined",
            reason="temperature excursion in the fridge",
            scope=EVERYWHERE,
            depot=False,
            signature=SIGNED,
        ),
    )
    # Issue 19: a shipment to P2 whose logger showed an excursion, reported by the depot and waiting
    # for the sponsor's decision: its kits (both arms) are quarantined.
    in_transit: list[str] = []
    _step(
        clock,
        steps,
        "ship a shipment to P2",
        lambda: in_transit.append(_shipped(ctx, "P2", 4)),
    )
    _step(
        clock,
        steps,
        "a temperature excursion reported for it",
        lambda: excursions.report_excursion(
            ctx,
            manager,
            TRIAL,
            place="shipment",
            shipment_number=in_transit[0],
            minimum="3.5",
            maximum="14.0",
            duration_minutes="120",
            note="parcel held at customs",
            logger=excursions.LoggerFile("logger.csv", b"time,temperature\n10:00,14.0\n"),
            scope=EVERYWHERE,
            signature=SIGNED,
        ),
    )
    # Issue 19: a small batch at the depot whose expiry was changed (signed): its kits await their
    # new labels on the relabelling page.
    _step(
        clock,
        steps,
        "a second batch at the depot",
        lambda: kit_lists.generate_kit_list(
            ctx, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-RL", expiry=ctx.now().date() + timedelta(days=400)
        ),
    )
    _step(
        clock,
        steps,
        "its expiry shortened (signed): its kits await relabelling",
        lambda: kit_status.update_batch_expiry(
            ctx,
            manager,
            TRIAL,
            "LOT-RL",
            ctx.now().date() + timedelta(days=300),
            reason="stability data revised",
            signature=SIGNED,
        ),
    )
    # Issue 19: a kit destroyed on site (signed, with its certificate) and one returned to the depot
    # (with its return form), so that the returns page and both documents are crawled.
    with ctx.db.reading() as s:
        spare = list(
            s.execute(
                select(Kit.kit_number).where(Kit.status == "available").order_by(Kit.kit_number).limit(2)
            ).scalars()
        )
    _step(
        clock,
        steps,
        "destroy a kit on site",
        lambda: disposal.record(
            ctx,
            ready.pharmacist,
            TRIAL,
            "destruction",
            spare[:1],
            method="incineration",
            witness="hospital pharmacist",
            scope=EVERYWHERE,
            signature=SIGNED,
        ),
    )
    _step(
        clock,
        steps,
        "return a kit to the depot",
        lambda: disposal.record(
            ctx, ready.pharmacist, TRIAL, "return", spare[1:], method="courier", scope=EVERYWHERE
        ),
    )
    _step(
        clock,
        steps,
        "prepare a shipment for P2",
        lambda: shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, "P2", 4),
    )
    head = audit_trail.verify(ctx, TRIAL).entries
    _step(
        clock,
        steps,
        "sign an audit review",
        lambda: audit_trail.sign_review(
            ctx,
            monitor,
            TRIAL,
            up_to_seq=head,
            comment="weekly review",
            request=SIGNED,
            trial_id=_trial_id(ctx),
        ),
    )
    # Report jobs (issue 21): a finished job of the monitor (a blinded PDF) and one of the unblinded
    # statistician (a restricted PDF): each page and file is its asker's alone.
    jobs = _optional("allocator.services.reports.jobs", ("start",))
    catalogue = _optional("allocator.services.reports.catalogue", ("build",))
    if jobs is not None and catalogue is not None:
        from allocator.services.reports.filters import ReportFilter

        statistician = _actor(principals[Role.UNBLINDED_STATISTICIAN.value], None)
        for reader, name, version in (
            (monitor, "allocation-history", "blinded"),
            (statistician, "sequence", "restricted"),
        ):
            flt = ReportFilter.parse({})
            view = catalogue.build(ctx, reader, TRIAL, name, flt, EVERYWHERE, version=version)
            _, run = jobs.start(ctx, reader, TRIAL, name, flt, view=view, language="en")
            run()
            steps.append(f"a {version} report job of {reader.username}")
    # A spare user: the target of the administration forms the crawler submits, with a session
    # and a token of its own.
    spare = make_user(ctx, SPARE, "monitor", email=f"{SPARE}@hospital.example")
    auth.change_password(ctx, spare.user_id, spare.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT)
    auth.login(ctx, SPARE, GOOD_PASSWORD, CLIENT)
    users.create_token(ctx, CLI_ACTOR, SPARE, "spare")
    steps.append("a spare user with a session and a token")
    return p2


def _shipped(ctx: ServiceContext, site: str, count: int) -> str:
    number = shipments.create_shipment(ctx, CLI_ACTOR, TRIAL, site, count).number
    shipments.ship(ctx, CLI_ACTOR, TRIAL, number)
    return number


def _cohort_values(subjects: list[str]) -> dict[str, list[str]]:
    """The cohort's own values of a kind: its participants, its site, and its reports (issue 20: a
    cohort has its own catalogue; the randomized trial's names are its error paths)."""
    catalogue = _optional("allocator.services.reports.catalogue", ("COHORT_REPORTS",))
    audit_review = _optional("allocator.services.reports.audit_review", ("COHORT_REVIEW_KINDS",))
    return {
        "subject": subjects,
        "site": ["L1"],
        "sample_label": ["D3"],  # issue 20: a participant's planned sample
        **({"report": sorted(catalogue.COHORT_REPORTS)} if catalogue else {}),
        **({"review": list(audit_review.COHORT_REVIEW_KINDS)} if audit_review else {}),
    }


def _cohort(ctx: ServiceContext, clock: Clock, steps: list[str]) -> tuple[dict[str, Principal], list[str]]:
    """IMMUNOSEPSIS-4 at site L1: a registered participant, an ineligible patient in its screening
    log, and its investigator and its monitor (no role in IFNG-PAIS) as principals. Returns the
    principals and the participants' numbers."""
    load_cohort(ctx)
    sites.activate_site(
        ctx,
        CLI_ACTOR,
        COHORT,
        "L1",
        approval_date=date(2026, 1, 5),
        delegation_log_date=date(2026, 2, 1),
        code_break_evidence="not applicable: an observational study has no code-break sheets",
        scope=EVERYWHERE,
        reason="approved",
    )
    username = "crawl-cohort-investigator"
    email = f"{username}@hospital.example"
    created = make_user(ctx, username, "investigator", trial=COHORT, site="L1", email=email)
    auth.change_password(
        ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT
    )
    actor = Actor(
        user_id=created.user_id,
        username=username,
        name="Crawl Cohort Investigator",
        role="investigator",
        site_code="L1",
        request_id="leak-world",
    )
    # Issue 20: a registration takes a tube set per planned sample from the site's stock.
    sample_kits.generate(ctx, CLI_ACTOR, COHORT, site="L1", kit_type="BIOMARKER", count=3, scope=EVERYWHERE)
    steps.append(f"3 tube sets at L1 of {COHORT}")
    clock.advance(minutes=1)
    number = register.register(
        ctx, actor, COHORT, register.RegistrationRequest("L1", "L1-0001", COHORT_ELIGIBLE), EVERYWHERE
    ).subject_number
    steps.append(f"registered {number} in {COHORT}")
    try:
        register.register(
            ctx,
            actor,
            COHORT,
            register.RegistrationRequest("L1", "L1-0900", {**COHORT_ELIGIBLE, "age": 17}),
            EVERYWHERE,
        )
    except randomize.Ineligible:
        steps.append(f"an ineligible patient in the screening log of {COHORT}")
    principals = {
        COHORT_PRINCIPAL: Principal(
            COHORT_PRINCIPAL,
            username,
            email,
            created.user_id,
            blinded=True,
            token=users.create_token(ctx, CLI_ACTOR, username, "crawler").token,
        )
    }
    monitor = "crawl-cohort-monitor"
    made = make_user(ctx, monitor, "monitor", trial=COHORT, email=f"{monitor}@hospital.example")
    auth.change_password(ctx, made.user_id, made.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, CLIENT)
    principals[COHORT_MONITOR] = Principal(
        COHORT_MONITOR,
        monitor,
        f"{monitor}@hospital.example",
        made.user_id,
        blinded=True,
        token=users.create_token(ctx, CLI_ACTOR, monitor, "crawler").token,
    )
    return principals, [number]


def _cohort_lab(ctx: ServiceContext, clock: Clock, investigator: Principal, steps: list[str]) -> Principal:
    """labship (issue 20): collected samples of the cohort shipped to the central lab - LS-0001
    shipped with its manifest printed and one tube set received, LS-0002 prepared - and the lab
    technician (a role of the cohort only) as a principal."""
    from allocator.services.samples import lab_shipments
    from tests.support.cohort import collected_samples, lab_technician

    site_actor = Actor(
        user_id=investigator.user_id,
        username=investigator.username,
        name="Crawl Cohort Investigator",
        role="investigator",
        site_code="L1",
        request_id="leak-world",
    )
    clock.advance(minutes=1)
    tubes = collected_samples(ctx, site_actor, 3, scope=EVERYWHERE)
    first = lab_shipments.prepare(ctx, site_actor, COHORT, "L1", tubes[:2], EVERYWHERE).number
    lab_shipments.print_manifest(ctx, site_actor, COHORT, first, EVERYWHERE)
    lab_shipments.ship(ctx, site_actor, COHORT, first, EVERYWHERE)
    lab_shipments.prepare(ctx, site_actor, COHORT, "L1", tubes[2:], EVERYWHERE)
    lab_actor = lab_technician(ctx, "crawl-lab-technician")
    clock.advance(hours=3)
    lab_shipments.receive_sample(
        ctx, lab_actor, COHORT, first, lab_shipments.SampleOutcome(tubes[0]), EVERYWHERE
    )
    steps.append(f"{COHORT}: {first} shipped (one tube set received), another prepared")
    with ctx.db.unit_of_work() as s:
        user = s.execute(select(User).where(User.id == lab_actor.user_id)).scalar_one()
        user.email = "crawl-lab-technician@hospital.example"
    return Principal(
        Role.LAB_TECHNICIAN.value,
        "crawl-lab-technician",
        "crawl-lab-technician@hospital.example",
        lab_actor.user_id or 0,
        blinded=True,
        token=users.create_token(ctx, CLI_ACTOR, "crawl-lab-technician", "crawler").token,
    )


def _trial_id(ctx: ServiceContext) -> int:
    with ctx.db.reading() as s:
        return s.execute(select(Trial.id).where(Trial.code == TRIAL)).scalar_one()


def _values(
    ctx: ServiceContext,
    world_subjects: list[WorldSubject],
    definition: TrialDefinition,
    cohort_subjects: list[str],
) -> dict[str, list[str]]:
    """Real values for route parameters, by kind; the crawler's resolver picks from them."""
    catalogue = _optional("allocator.services.reports.catalogue", ("REPORTS",))
    audit_review = _optional("allocator.services.reports.audit_review", ("REVIEW_KINDS",))
    with ctx.db.reading() as s:
        spare_id = s.execute(select(User.id).where(User.username == SPARE)).scalar()

        def ids(model: type[ApiToken] | type[LoginSession] | type[RoleAssignment]) -> list[str]:
            return [str(i) for i in s.execute(select(model.id).where(model.user_id == spare_id)).scalars()]

        return {
            "trial": [TRIAL, COHORT] if cohort_subjects else [TRIAL],
            "subject": [w.subject.subject_number for w in world_subjects],
            "site": [site.code for site in definition.sites],
            "shipment": list(s.execute(select(Shipment.number).order_by(Shipment.id)).scalars()),
            "excursion": list(
                s.execute(select(TemperatureExcursion.number).order_by(TemperatureExcursion.id)).scalars()
            ),
            "kit_disposal": list(s.execute(select(KitDisposal.number).order_by(KitDisposal.id)).scalars()),
            "list_id": [str(i) for i in s.execute(select(RandomizationList.id)).scalars()],
            "lot": list(s.execute(select(Batch.lot_code)).scalars()),
            "day": [d.label for d in definition.dispensing.schedule],
            "sample_label": ["D3"] if cohort_subjects else [],  # issue 20: the cohort's sample
            "report": sorted(catalogue.REPORTS) if catalogue else [],
            "review": sorted(audit_review.REVIEW_KINDS) if audit_review else [],
            "report_job": [str(i) for i in s.execute(select(ReportJob.id).order_by(ReportJob.id)).scalars()],
            "dispensation_sheet": list(
                s.execute(
                    select(PrintedDocument.document_id)
                    .where(PrintedDocument.kind == "dispensation_sheet")
                    .order_by(PrintedDocument.id)
                ).scalars()
            ),
            "confirmation": list(
                s.execute(
                    select(PrintedDocument.document_id)
                    .where(PrintedDocument.kind == "randomization_confirmation")
                    .order_by(PrintedDocument.id)
                ).scalars()
            ),
            # labship (issue 20): the cohort's lab shipments and their printed manifests
            "lab_shipment": list(s.execute(select(LabShipment.number).order_by(LabShipment.id)).scalars()),
            "lab_manifest": list(
                s.execute(
                    select(PrintedDocument.document_id)
                    .where(PrintedDocument.kind == "lab_manifest")
                    .order_by(PrintedDocument.id)
                ).scalars()
            ),
            # document=subject, so that the crawler pairs each twin's own sheet (or confirmation)
            # with the other's.
            "dispensation_sheet_owner": [
                f"{document}={number}"
                for document, number in s.execute(
                    select(PrintedDocument.document_id, SubjectRow.subject_number)
                    .join(SubjectRow, SubjectRow.id == PrintedDocument.subject_id)
                    .where(PrintedDocument.kind.in_(("dispensation_sheet", "randomization_confirmation")))
                )
            ],
            "code_break_document": list(
                s.execute(
                    select(PrintedDocument.document_id)
                    .where(PrintedDocument.kind == "code_break_sheets")
                    .order_by(PrintedDocument.id)
                ).scalars()
            ),
            # The world's unblindings: their result pages are for the person who unblinded only
            # (a service actor, not a crawled principal), so every role must get nothing there.
            "unblinding_id": [
                str(i) for i in s.execute(select(Unblinding.id).order_by(Unblinding.id)).scalars()
            ],
            # The world's drill (UNB-11): its result page, like an unblinding's, is for the
            # investigator who ran it only (a service actor), so every crawled role gets nothing.
            "drill_id": [
                str(i) for i in s.execute(select(UnblindingDrill.id).order_by(UnblindingDrill.id)).scalars()
            ],
            # Objects of the spare user only: the crawler submits forms that act on them.
            "username": [SPARE] if spare_id is not None else [],
            "token_id": ids(ApiToken),
            "session_id": ids(LoginSession),
            "assignment_id": ids(RoleAssignment),
        }
