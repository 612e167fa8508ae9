"""Randomizing a subject, correcting without deleting, and the blinded views of subjects.

The allocation is ONE transaction (RND-08): the screening entry, the next unused slot of the
stratum (or the minimization decision), a random usable kit of that arm for every dispensing day
at the site, the subject, its dispensation requests, the pharmacy notification and the audit
entries. Locks are always taken in the same order — site, then stratum (or list), then kits, then
the audit chain head — so concurrent allocations queue instead of deadlocking; on SQLite the write
transaction (BEGIN IMMEDIATE) serialises them. Unique constraints back every rule: one subject per
screening number, one subject per slot, one subject per kit.

Refusals that must leave a trace (an ineligible patient in the screening log) are committed before
the error is raised; every other refusal changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.eligibility import EligibilityInputError, EligibilityResult
from allocator.eligibility import check as check_eligibility
from allocator.models import (
    Administration,
    Dispensation,
    IntegrityCheck,
    Kit,
    KitEvent,
    KitStatus,
    ListMode,
    ListStatus,
    MinimizationDecision,
    Notification,
    PrintedDocument,
    RandomizationList,
    ScreeningEntry,
    Site,
    SiteStatus,
    Slot,
    Stratum,
    Subject,
    SubjectCorrection,
    SubjectWithdrawal,
    Trial,
)
from allocator.permissions import Scope
from allocator.randomization import minimization as minimization_core
from allocator.services import arm_access, kits, lists, lookups, signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    Conflict,
    DomainError,
    FieldProblem,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from allocator.services.lookups import (
    current_definition,
    current_dispensations,
    get_trial,
    subject_in_reach,
    trial_and_definition,
)
from allocator.trialdef import MinimizationRandomization, TrialDefinition, stratum_key


class Ineligible(DomainError):
    status = 422
    slug = "ineligible"
    title = "The patient is not eligible"


class AlreadyRandomized(Conflict):
    slug = "already-randomized"
    title = "This screening number is already randomized"


class KitsUnavailable(Conflict):
    slug = "kits-unavailable"
    title = "Kits of every arm are not available at the site"


class StratumExhausted(Conflict):
    slug = "stratum-exhausted"
    title = "The stratum's randomization list is exhausted"


class NoActiveList(Conflict):
    slug = "no-active-list"
    title = "No randomization list is active"


class SiteNotActive(Forbidden):
    slug = "site-not-active"
    title = "The site is not activated for randomization"


@dataclass(frozen=True, slots=True)
class RandomizationRequest:
    """What the investigator enters. Any other field is refused by the caller (RND-05)."""

    site: str
    screening_number: str
    eligibility: Mapping[str, object]
    strata: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class AllocatedKit:
    kit_number: str
    day: str


@dataclass(frozen=True, slots=True)
class RandomizationResult:
    """Everything the investigator gets back — never the arm (BLD-01)."""

    subject_number: str
    randomization_number: str
    kits: tuple[AllocatedKit, ...]
    randomized_at: datetime
    site: str

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "randomization_number": self.randomization_number,
            "kits": [{"kit_number": k.kit_number, "day": k.day} for k in self.kits],
            "randomized_at": self.randomized_at.isoformat().replace("+00:00", "Z"),
        }


# --- input checks (DIB-06, DIB-08, RND-06) ----------------------------------------------------


def _strata_levels(definition: TrialDefinition, site_code: str, raw: Mapping[str, object]) -> dict[str, str]:
    """The stratum levels: the site's, plus one valid level per entered factor."""
    problems: list[FieldProblem] = []
    levels: dict[str, str] = {}
    entered = {f.code: f for f in definition.stratification if f.source == "entered"}
    for key in raw:
        if key not in entered:
            problems.append(
                FieldProblem(f"strata.{key}", "is not an entered stratification factor of this trial")
            )
    for factor in definition.stratification:
        if factor.source == "site":
            levels[factor.code] = site_code
            continue
        value = raw.get(factor.code)
        codes = [lv.code for lv in factor.levels]
        if not isinstance(value, str) or not value.strip():
            problems.append(FieldProblem(f"strata.{factor.code}", f"is required (one of {', '.join(codes)})"))
        elif value.strip() not in codes:
            problems.append(
                FieldProblem(f"strata.{factor.code}", f"{value!r} is not one of {', '.join(codes)}")
            )
        else:
            levels[factor.code] = value.strip()
    if problems:
        raise ValidationFailed("the stratification data are invalid", errors=problems)
    return levels


def _screening_number(definition: TrialDefinition, raw: str) -> str:
    value = raw.strip().upper()
    if not re.match(definition.screening_number_pattern, value):
        raise ValidationFailed(
            "invalid screening number",
            errors=[
                FieldProblem(
                    "screening_number",
                    f"must look like {definition.screening_number_example} (a pseudonymous number, no name)",
                )
            ],
        )
    return value


@dataclass(frozen=True, slots=True)
class Preview:
    """The confirmation step: what will be used, shown back before anything is allocated."""

    site: str
    screening_number: str
    eligible: bool
    failures: tuple[tuple[str, str], ...]
    strata: dict[str, str]
    strata_labels: dict[str, str] = field(default_factory=dict)


def preview(ctx: ServiceContext, trial_code: str, request: RandomizationRequest, scope: Scope) -> Preview:
    """Validate everything without writing anything (the confirmation screen): the same checks,
    in the same words, as `randomize`, so that nothing is confirmed that would then be refused."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == request.site.strip())
        ).scalar_one_or_none()
    if site is None or not scope.allows_site(site.id):
        raise ValidationFailed(
            f"no site {request.site!r} within your reach", errors=[FieldProblem("site", "unknown site")]
        )
    if site.status != SiteStatus.ACTIVE.value:
        raise SiteNotActive(f"site {site.code} is {site.status}: it cannot randomize (RND-14)")
    screening = _screening_number(definition, request.screening_number)
    levels = _strata_levels(definition, site.code, request.strata)
    result = _eligibility(definition, request.eligibility, ctx.now())
    labels = {}
    for factor in definition.stratification:
        level = next((lv for lv in factor.levels if lv.code == levels[factor.code]), None)
        labels[factor.label.en] = level.label.en if level else levels[factor.code]
    return Preview(
        site.code,
        screening,
        result.eligible,
        tuple((f.criterion, f.message) for f in result.failures),
        levels,
        labels,
    )


def _eligibility(definition: TrialDefinition, raw: Mapping[str, object], now: datetime) -> EligibilityResult:
    try:
        return check_eligibility(definition.eligibility, raw, definition.local_date(now))
    except EligibilityInputError as exc:
        raise ValidationFailed(
            "the eligibility data are invalid",
            errors=[FieldProblem(f"eligibility.{e.field}", e.message) for e in exc.errors],
        ) from None


# --- randomization ----------------------------------------------------------------------------


def randomize(
    ctx: ServiceContext, actor: Actor, trial_code: str, request: RandomizationRequest, scope: Scope
) -> RandomizationResult:
    """Screen and, if eligible, randomize a patient (RND-05..RND-08, RND-14, BLD-04).

    Raises ValidationFailed (invalid input; nothing recorded), Ineligible (recorded in the screening
    log), SiteNotActive, AlreadyRandomized, NoActiveList, KitsUnavailable, StratumExhausted,
    lists.ListIntegrityFailure — each before any slot or kit is used."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial, definition = trial_and_definition(session, trial_code)
        lookups.require_open(trial)  # no new subject once the database is locked
        # Every check of the input comes before the first write: a refusal changes nothing.
        screening = _screening_number(definition, request.screening_number)
        levels = _strata_levels(definition, request.site, request.strata)
        eligibility = _eligibility(definition, request.eligibility, now)
        outcome = _randomize_in(
            ctx,
            session,
            actor,
            trial,
            definition,
            request.site,
            screening,
            levels,
            eligibility,
            scope,
            now,
        )
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


# --- the allocation's statements ----------------------------------------------------------------
# Randomization is the service's hot path (issue 6: throughput under concurrency). Its statements are
# built once, here, and run on the unit of work's connection: building a statement, computing its
# cache key and going through the ORM cost more CPU than the database spends running it. Each lock
# is taken by its own statement, and what the lock protects is read by a later statement: on
# PostgreSQL (READ COMMITTED) a statement that had to wait for a lock still reads every other row
# as of its own start.

_LOCK_SITE = (
    select(Site.id, Site.code, Site.status)
    .where(Site.trial_id == bindparam("trial_id"), Site.code == bindparam("site_code"))
    .with_for_update()
)
# Under the site's lock: whether the screening number is taken (trial-wide; a unique constraint
# backs it) and the number of subjects of the site, for the next subject number.
_SCREENING_TAKEN_AND_SITE_SUBJECTS = select(
    select(Subject.id)
    .where(Subject.trial_id == bindparam("trial_id"), Subject.screening_number == bindparam("screening"))
    .exists(),
    select(func.count())
    .select_from(Subject)
    .where(Subject.trial_id == bindparam("trial_id"), Subject.site_id == bindparam("site_id"))
    .scalar_subquery(),
)
_LAST_INTEGRITY_CHECK = (
    select(IntegrityCheck.ok)
    .where(IntegrityCheck.list_id == RandomizationList.id)
    .order_by(IntegrityCheck.id.desc())
    .limit(1)
    .scalar_subquery()
)
# The active list, whether its last integrity check failed, and the stratum's row, locked: its
# `used` counter orders the allocations of the stratum (RND-05, RND-08).
_LOCK_ACTIVE_STRATUM = (
    select(
        RandomizationList.id,
        RandomizationList.label,
        _LAST_INTEGRITY_CHECK.label("last_check_ok"),
        Stratum.id.label("stratum_id"),
        Stratum.key,
        Stratum.used,
        Stratum.capacity,
        Stratum.alert_remaining,
        Stratum.storage_sha256,
    )
    .join(Stratum, Stratum.list_id == RandomizationList.id)
    .where(
        RandomizationList.trial_id == bindparam("trial_id"),
        RandomizationList.mode == bindparam("mode"),
        RandomizationList.status == ListStatus.ACTIVE.value,
        Stratum.key == bindparam("key"),
    )
    .with_for_update(of=Stratum)
)
_STRATUM_SLOTS = (
    select(Slot.position, Slot.randomization_number, Slot.sealed, Slot.id)
    .where(Slot.stratum_id == bindparam("stratum_id"))
    .order_by(Slot.position)
)
_INSERT_SCREENING_ENTRY = insert(ScreeningEntry).returning(ScreeningEntry.id)
_INSERT_SUBJECT = insert(Subject).returning(Subject.id)
_INSERT_DISPENSATION = insert(Dispensation)
_INSERT_KIT_EVENT = insert(KitEvent)
_INSERT_NOTIFICATION = insert(Notification)
_ALLOCATE_KITS = (
    update(Kit)
    .where(Kit.id.in_(bindparam("kit_ids", expanding=True)))
    .values(status=KitStatus.ALLOCATED.value)
)
_TAKE_SLOT = update(Stratum).where(Stratum.id == bindparam("stratum_id")).values(used=Stratum.used + 1)


@dataclass(frozen=True, slots=True)
class _Target:
    """The active list and the stratum's row, as locked for one allocation."""

    list_id: int
    label: str
    stratum_id: int
    key: str
    used: int
    capacity: int
    alert_remaining: int
    storage_sha256: str


def _randomize_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    definition: TrialDefinition,
    site_code: str,
    screening: str,
    levels: dict[str, str],
    eligibility: EligibilityResult,
    scope: Scope,
    now: datetime,
) -> RandomizationResult | DomainError:
    connection = session.connection()
    site = connection.execute(_LOCK_SITE, {"trial_id": trial.id, "site_code": site_code}).one_or_none()
    if site is None or not scope.allows_site(site.id):
        raise NotFound(
            f"no site {site_code!r} within your reach", errors=[FieldProblem("site", "unknown site")]
        )
    if site.status != SiteStatus.ACTIVE.value:
        raise SiteNotActive(f"site {site.code} is {site.status}: it cannot randomize (RND-14)")
    taken, site_subjects = connection.execute(
        _SCREENING_TAKEN_AND_SITE_SUBJECTS, {"trial_id": trial.id, "screening": screening, "site_id": site.id}
    ).one()
    if taken:
        raise AlreadyRandomized(
            f"screening number {screening} is already randomized (RND-07)",
            errors=[FieldProblem("screening_number", "is already randomized")],
        )
    entry_id = connection.execute(
        _INSERT_SCREENING_ENTRY,
        {
            "trial_id": trial.id,
            "site_id": site.id,
            "screening_number": screening,
            "screened_at": now,
            "screened_by_id": actor.user_id,
            "screened_by_name": actor.name,
            "eligible": eligibility.eligible,
            "answers": eligibility.answers_json(),
            "failures": [{"criterion": f.criterion, "message": f.message} for f in eligibility.failures],
        },
    ).scalar_one()
    if not eligibility.eligible:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SCREENING_FAILED,
            object_type="screening_entry",
            object_id=screening,
            site_code=site.code,
            new={"failures": [f.criterion for f in eligibility.failures]},
            at=now,
        )
        return Ineligible(
            f"{screening} is not eligible: recorded in the screening log, not randomized",
            errors=[FieldProblem(f"eligibility.{f.criterion}", f.message) for f in eligibility.failures],
        )
    key = stratum_key(list(levels.items()))
    target = _lock_target(session, trial, lookups.instance_mode(ctx.settings.env), key)
    schedule = definition.dispensing.schedule
    stock = kits.draw_usable_kits(
        ctx, session, actor, trial, definition, site.id, definition.local_date(now), len(schedule)
    )
    if any(len(stock[arm]) < len(schedule) for arm in definition.arm_codes):
        # Refused before any slot is used, whichever arm the next slot holds, so that the refusal
        # says nothing about the arm (RND-08, BLD-04).
        raise KitsUnavailable(
            f"site {site.code} does not hold {len(schedule)} usable kits of every arm: "
            "ask the supply manager for a shipment"
        )
    if isinstance(target, _NoStratum):
        raise lists.ListIntegrityFailure(f"the active list has no stratum {key}")
    if isinstance(definition.randomization, MinimizationRandomization):
        arm, randomization_number, slot_id, decision_id = _minimize(
            ctx, session, actor, trial, target, levels, definition, now
        )
    else:
        arm, randomization_number, slot_id = _next_slot(ctx, session, actor, trial, target)
        decision_id = None
    chosen = kits.pick(stock[arm], len(schedule))
    # Per-site sequence (the site's row is locked): P1-001, P1-002 ...
    number = f"{site.code}-{site_subjects + 1:03d}"
    subject_id = connection.execute(
        _INSERT_SUBJECT,
        {
            "trial_id": trial.id,
            "site_id": site.id,
            "screening_entry_id": entry_id,
            "screening_number": screening,
            "subject_number": number,
            "list_id": target.list_id,
            "stratum_id": target.stratum_id,
            "slot_id": slot_id,
            "minimization_decision_id": decision_id,
            "randomization_number": randomization_number,
            "strata": levels,
            "randomized_at": now,
            "randomized_by_id": actor.user_id,
            "randomized_by_name": actor.name,
        },
    ).scalar_one()
    days = list(zip(schedule, chosen, strict=True))
    connection.execute(
        _INSERT_DISPENSATION,
        [
            {
                "subject_id": subject_id,
                "day": day.day,
                "replacement_number": 0,
                "kit_id": kit.id,
                "status": "allocated",
                "allocated_at": now,
            }
            for day, kit in days
        ],
    )
    connection.execute(
        _INSERT_KIT_EVENT,
        [
            {
                "kit_id": kit.id,
                "at": now,
                "from_status": KitStatus.AVAILABLE.value,  # the kits were drawn among available ones
                "to_status": KitStatus.ALLOCATED.value,
                "site_id": site.id,
                "actor_id": actor.user_id,
                "actor_name": actor.name,
                "reason": f"allocated to {number} for {day.label}",
            }
            for day, kit in days
        ],
    )
    connection.execute(_ALLOCATE_KITS, {"kit_ids": [kit.id for kit in chosen]})
    connection.execute(_TAKE_SLOT, {"stratum_id": target.stratum_id})
    position = target.used + 1
    allocated = [AllocatedKit(kit.kit_number, day.label) for day, kit in days]
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.SUBJECT_RANDOMIZED,
        object_type="subject",
        object_id=number,
        site_code=site.code,
        new={
            "subject": number,
            "screening_number": screening,
            "randomization_number": randomization_number,
            "strata": levels,
            "kits": [{"kit": k.kit_number, "day": k.day} for k in allocated],
        },
        # AUD-05: the arm and the list position go into the entry sealed, never in clear.
        sealed={"arm": arm, "stratum": key, "position": position, "list": target.label},
        at=now,
    )
    _notify(
        session,
        trial,
        site.id,
        "pharmacist",
        "dispensation_request",
        number,
        f"Dispensation request for {number}",
        f"Subject {number} (randomization number {randomization_number}) was randomized at site {site.code} by "
        f"{actor.name}. Kits to dispense: " + ", ".join(f"{k.day} {k.kit_number}" for k in allocated) + ".",
        now,
    )
    remaining = target.capacity - position
    if remaining <= target.alert_remaining:
        # RND-11: the statistician learns that a stratum runs low; the message names no count of
        # arms and no position, and only the unblinded statistician receives it.
        _notify(
            session,
            trial,
            None,
            "unblinded_statistician",
            "capacity_low",
            None,
            f"Stratum running low: {key}",
            f"The stratum {key} of {target.label} has {remaining} unused slot(s) left. Consider an extension.",
            now,
        )
    return RandomizationResult(number, randomization_number, tuple(allocated), now, site.code)


@dataclass(frozen=True, slots=True)
class _NoStratum:
    """The active list has no row for the stratum (a damaged list): refused after the kit check."""

    list_id: int
    label: str


def _lock_target(session: Session, trial: Trial, mode: ListMode, key: str) -> _Target | _NoStratum:
    """The active list and its stratum `key`, the stratum's row locked. Raises NoActiveList, or
    ListIntegrityFailure while the list's last integrity check failed (RND-10, ACC-15). One
    statement unless something is wrong."""
    row = (
        session.connection()
        .execute(_LOCK_ACTIVE_STRATUM, {"trial_id": trial.id, "mode": mode.value, "key": key})
        .one_or_none()
    )
    if row is not None:
        target: _Target | _NoStratum = _Target(
            row.id,
            row.label,
            row.stratum_id,
            row.key,
            row.used,
            row.capacity,
            row.alert_remaining,
            row.storage_sha256,
        )
        blocked = row.last_check_ok is not None and not row.last_check_ok
    else:
        active = lists.active_list(session, trial.id, mode)
        if active is None:
            raise NoActiveList(f"{trial.code} has no active {mode.value.upper()} randomization list")
        target = _NoStratum(active.id, active.label)
        blocked = lists.list_blocked(session, active.id)
    if blocked:
        raise lists.ListIntegrityFailure(
            f"{target.label} failed its last integrity check: randomization is blocked"
        )
    return target


def _next_slot(
    ctx: ServiceContext, session: Session, actor: Actor, trial: Trial, target: _Target
) -> tuple[str, str, int]:
    """The next unused slot of the stratum (RND-05), after re-checking every stored slot of the
    stratum against the stratum's digest (RND-10): a changed, added or removed slot anywhere in the
    stratum blocks it, not only the slot about to be used. The slot taken is among the rows hashed,
    so one read serves both."""
    if target.used >= target.capacity:
        raise StratumExhausted(
            f"the randomization list of stratum {target.key} is exhausted: nothing was allocated; the unblinded "
            "statistician must extend the list (RND-11)"
        )
    rows = session.connection().execute(_STRATUM_SLOTS, {"stratum_id": target.stratum_id}).all()
    if lists.storage_digest(row[:3] for row in rows) != target.storage_sha256:
        raise lists.ListIntegrityFailure(
            f"the slots of stratum {target.key} differ from their recorded digest: randomization is blocked (RND-10)"
        )
    if len(rows) <= target.used or rows[target.used].position != target.used + 1:
        raise lists.ListIntegrityFailure(
            f"the stratum {target.key} has no slot at position {target.used + 1}: randomization is blocked (RND-10)"
        )
    position, number, sealed, slot_id = rows[target.used]
    record = arm_access.slot_record_in(
        session,
        ctx,
        actor,
        trial.code,
        target.label,
        target.key,
        position=position,
        randomization_number=number,
        sealed=bytes(sealed),
    )
    return record.arm, number, slot_id


def _minimize(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    target: _Target,
    levels: dict[str, str],
    definition: TrialDefinition,
    now: datetime,
) -> tuple[str, str, None, int]:
    """Pocock-Simon allocation from the seed and the order of arrivals; the decision record (arm
    and imbalance figures) is stored sealed for the statistician."""
    locked = session.execute(
        select(RandomizationList).where(RandomizationList.id == target.list_id).with_for_update()
    ).scalar_one()
    total = session.execute(
        select(func.count())
        .select_from(MinimizationDecision)
        .where(MinimizationDecision.list_id == locked.id)
    ).scalar_one()
    design = definition.randomization
    if not isinstance(design, MinimizationRandomization):  # pragma: no cover - the caller checked
        raise NoActiveList("the list is not a minimization list")
    if total >= design.max_subjects or target.used >= target.capacity:
        raise StratumExhausted("the minimization capacity is reached: nothing was allocated (RND-11)")
    factors = tuple(
        minimization_core.Factor(
            code, tuple(lv.code for lv in definition.factor(code).levels), design.weights[code]
        )
        for code in design.factors
    )
    core = minimization_core.MinimizationDesign(
        arms=definition.arm_codes,
        ratio=tuple(w for _, w in definition.ratio),
        factors=factors,
        measure=minimization_core.ImbalanceMeasure(design.imbalance),
        p=design.p_preferred,
    )
    history = arm_access.minimization_history_in(session, ctx, actor, trial.code, locked)
    state = minimization_core.MinimizationState.from_history(core, history)
    seed = arm_access.list_seed_in(session, ctx, actor, trial.code, locked, "minimization allocation")
    decision, _ = minimization_core.allocate(
        seed, state, {f: levels[f] for f in design.factors}, trial_code=trial.code, list_label=locked.label
    )
    numbers = set(
        session.execute(
            select(MinimizationDecision.randomization_number).where(MinimizationDecision.list_id == locked.id)
        ).scalars()
    )
    number = lists.RandomizationNumbers(numbers).next()
    row = MinimizationDecision(
        list_id=locked.id,
        arrival=total + 1,
        stratum_id=target.stratum_id,
        randomization_number=number,
        sealed=crypto.seal_json(
            ctx.ring,
            crypto.Purpose.LISTS,
            {"levels": levels, "decision": decision.as_dict()},
            arm_access.decision_binding(trial.code, locked.label, total + 1),
        ),
        created_at=now,
    )
    session.add(row)
    session.flush()
    return decision.arm, number, None, row.id


def _notify(
    session: Session,
    trial: Trial,
    site_id: int | None,
    audience: str,
    kind: str,
    subject_number: str | None,
    title: str,
    body: str,
    now: datetime,
) -> None:
    session.connection().execute(
        _INSERT_NOTIFICATION,
        {
            "trial_id": trial.id,
            "site_id": site_id,
            "audience": audience,
            "kind": kind,
            "subject_number": subject_number,
            "title": title,
            "body": body,
            "created_at": now,
        },
    )


# --- corrections without deletion (RND-07, RND-09, DIB-03) ------------------------------------

IN_ERROR_MEANING = "randomized in error"


def mark_in_error(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    reason: str,
    scope: Scope,
    signature: signatures.SignatureRequest,
) -> None:
    """Flag a subject as randomized in error: signed and reasoned. The subject, the slot and the
    kits stay as they are and the subject stays in every report (intention to treat)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=IN_ERROR_MEANING,
            object_type="subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        lookups.require_open(trial)  # no new data once the database is locked
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        if session.execute(
            select(SubjectCorrection.id).where(
                SubjectCorrection.subject_id == subject.id,
                SubjectCorrection.kind == "randomized_in_error",
            )
        ).first():
            raise Conflict(f"{number} is already flagged as randomized in error")
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=IN_ERROR_MEANING,
            object_type="subject",
            object_id=number,
            content={"subject": number, "reason": reason.strip()},
            now=now,
        )
        session.add(
            SubjectCorrection(
                subject_id=subject.id,
                kind="randomized_in_error",
                field=None,
                old_value=None,
                new_value=True,
                reason=reason.strip(),
                investigator_agreement_ref=None,
                at=now,
                by_id=actor.user_id,
                by_name=actor.name,
                signature_id=signed.id,
            )
        )
        site = session.get(Site, subject.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_FLAGGED_IN_ERROR,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            new={"randomized_in_error": True, "signature": signed.id},
            reason=reason.strip(),
            at=now,
        )


# --- withdrawals (REP-04) ---------------------------------------------------------------------

WITHDRAWAL_MEANING = "subject withdrawal"
WITHDRAWAL_KINDS = {  # code -> label
    "treatment_discontinued": "treatment discontinued",
    "consent_withdrawn": "consent withdrawn",
    "lost_to_follow_up": "lost to follow-up",
}
WITHDRAWAL_REASON_MAX = 1000


class SubjectWithdrawn(Conflict):
    slug = "subject-withdrawn"
    title = "The subject was withdrawn: no further dose"


def withdrawal_of(session: Session, subject_id: int) -> SubjectWithdrawal | None:
    return session.execute(
        select(SubjectWithdrawal).where(SubjectWithdrawal.subject_id == subject_id)
    ).scalar_one_or_none()


def withdrawn_refusal(session: Session, subject: Subject, field: str) -> SubjectWithdrawn | None:
    """The refusal of any further dose to a withdrawn subject (REP-04), or None. The same words for
    every subject: nothing in it depends on the arm (BLD-01)."""
    withdrawal = withdrawal_of(session, subject.id)
    if withdrawal is None:
        return None
    when = withdrawal.effective_date.isoformat()
    return SubjectWithdrawn(
        f"{subject.subject_number} was withdrawn on {when}: no further dose",
        errors=[FieldProblem(field, f"the subject was withdrawn on {when}")],
    )


def _withdrawal_input(kind: str, effective_date: date | str, reason: str) -> tuple[str, date, str]:
    """Check what can be checked without the database; every problem is named at once."""
    problems: list[FieldProblem] = []
    kind = kind.strip()
    if kind not in WITHDRAWAL_KINDS:
        problems.append(FieldProblem("kind", f"one of {', '.join(WITHDRAWAL_KINDS)}"))
    when: date | None = None
    if isinstance(effective_date, date):
        when = effective_date
    elif not effective_date.strip():
        problems.append(FieldProblem("effective_date", "is required (YYYY-MM-DD)"))
    else:
        try:
            when = date.fromisoformat(effective_date.strip())
        except ValueError:
            problems.append(FieldProblem("effective_date", "is not a date (YYYY-MM-DD)"))
    reason = reason.strip()
    if not reason:
        problems.append(FieldProblem("reason", "is required"))
    elif len(reason) > WITHDRAWAL_REASON_MAX:
        problems.append(FieldProblem("reason", f"is longer than {WITHDRAWAL_REASON_MAX} characters"))
    if problems or when is None:
        raise ValidationFailed("the withdrawal is invalid", errors=problems)
    return kind, when, reason


def withdraw(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    kind: str,
    effective_date: date | str,
    reason: str,
    scope: Scope,
    signature: signatures.SignatureRequest,
) -> None:
    """Record a subject's withdrawal (REP-04): signed and reasoned, at most once per subject.

    `kind` is treatment_discontinued, consent_withdrawn or lost_to_follow_up; `effective_date` is the
    site's calendar date (a date or YYYY-MM-DD), neither before the randomization date nor in the
    future. The subject, its slot and kits stay; it stays in every report (intention to treat), and
    any further dispensing or administration is refused (SubjectWithdrawn).

    Raises ValidationFailed naming the field (nothing written), NotFound (subject out of reach),
    Conflict (already withdrawn), trial_state errors (database locked), SignatureRefused (audited)."""
    kind, when, reason = _withdrawal_input(kind, effective_date, reason)
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=WITHDRAWAL_MEANING,
            object_type="subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial, definition = trial_and_definition(session, trial_code)
        lookups.require_open(trial)  # no new data once the database is locked
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        existing = withdrawal_of(session, subject.id)
        if existing is not None:
            raise Conflict(f"{number} was already withdrawn on {existing.effective_date.isoformat()}")
        randomized_on = definition.local_date(subject.randomized_at)
        if when < randomized_on:
            raise ValidationFailed(
                "the withdrawal date is invalid",
                errors=[
                    FieldProblem(
                        "effective_date", f"is before the randomization ({randomized_on.isoformat()})"
                    )
                ],
            )
        if when > definition.local_date(now):
            raise ValidationFailed(
                "the withdrawal date is invalid",
                errors=[FieldProblem("effective_date", "is in the future")],
            )
        content = {"subject": number, "kind": kind, "effective_date": when.isoformat(), "reason": reason}
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=WITHDRAWAL_MEANING,
            object_type="subject",
            object_id=number,
            content=content,
            now=now,
        )
        session.add(
            SubjectWithdrawal(
                subject_id=subject.id,
                kind=kind,
                effective_date=when,
                reason=reason,
                recorded_at=now,
                recorded_by_id=actor.user_id,
                recorded_by_name=actor.name,
                signature_id=signed.id,
            )
        )
        site = session.get(Site, subject.site_id)
        _notify(  # the pharmacy must stop preparing this subject's doses (no arm in it)
            session,
            trial,
            subject.site_id,
            "pharmacist",
            "subject_withdrawn",
            number,
            f"Withdrawal of {number}",
            f"Subject {number} was withdrawn ({WITHDRAWAL_KINDS[kind]}) on {when.isoformat()}, recorded by "
            f"{actor.name}. Dispense no further kit; the kits allocated to {number} stay assigned to it.",
            now,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_WITHDRAWN,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            new={"kind": kind, "effective_date": when.isoformat(), "signature": signed.id},
            reason=reason,
            at=now,
        )


def correct_stratum(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    *,
    factor: str,
    level: str,
    reason: str,
    scope: Scope,
    agreement_ref: str | None,
    is_investigator: bool,
) -> None:
    """Record the correct value of a stratification factor beside the one used at randomization
    (RND-09; Yelland et al., Stat Med 2023): no re-randomization, no kit swap. A correction made by
    anyone but the site's investigator needs a reference to the investigator's agreement (DIB-03)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if not is_investigator and not (agreement_ref or "").strip():
        raise ValidationFailed(
            "the investigator's agreement is required",
            errors=[FieldProblem("investigator_agreement_ref", "is required (DIB-03)")],
        )
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        lookups.require_open(trial)  # no new data once the database is locked
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope, lock=True)
        entered = {f.code: f for f in definition.stratification if f.source == "entered"}
        if factor not in entered:
            raise ValidationFailed(
                "unknown factor", errors=[FieldProblem("factor", f"{factor!r} is not an entered factor")]
            )
        codes = [lv.code for lv in entered[factor].levels]
        if level not in codes:
            raise ValidationFailed(
                "unknown level", errors=[FieldProblem("level", f"one of {', '.join(codes)}")]
            )
        current = current_strata(session, subject)
        if current.get(factor) == level:
            raise Conflict(f"{factor} is already {level} for {number}")
        session.add(
            SubjectCorrection(
                subject_id=subject.id,
                kind="stratum",
                field=factor,
                old_value=current.get(factor),
                new_value=level,
                reason=reason.strip(),
                investigator_agreement_ref=(agreement_ref or "").strip() or None,
                at=now,
                by_id=actor.user_id,
                by_name=actor.name,
                signature_id=None,
            )
        )
        site = session.get(Site, subject.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SUBJECT_STRATUM_CORRECTED,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            old={factor: current.get(factor)},
            new={factor: level, "agreement": (agreement_ref or "").strip() or None},
            reason=reason.strip(),
            at=now,
        )


def current_strata(session: Session, subject: Subject) -> dict[str, str]:
    """The stratification values as corrected (the values used at randomization stay in
    `subject.strata`)."""
    values = dict(subject.strata)
    for correction in session.execute(
        select(SubjectCorrection)
        .where(SubjectCorrection.subject_id == subject.id, SubjectCorrection.kind == "stratum")
        .order_by(SubjectCorrection.id)
    ).scalars():
        if correction.field:
            values[correction.field] = correction.new_value
    return values


# --- blinded views (BLD-01, BLD-06) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayView:
    day: int
    label: str
    kit_number: str
    status: str  # allocated | dispensed | administered
    dispensed_at: datetime | None
    administered_at: datetime | None
    replacements: int


@dataclass(frozen=True, slots=True)
class CorrectionView:
    kind: str
    field: str | None
    old: Any
    new: Any
    reason: str
    by: str
    at: datetime
    agreement: str | None


@dataclass(frozen=True, slots=True)
class WithdrawalView:
    kind: str
    effective_date: date
    reason: str
    by: str
    at: datetime

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "effective_date": self.effective_date.isoformat()}


@dataclass(frozen=True, slots=True)
class SubjectView:
    """A subject as every role of the trial may see it: no arm, no stratum position (BLD-01)."""

    subject_number: str
    screening_number: str
    randomization_number: str
    site: str
    randomized_at: datetime
    randomized_by: str
    strata_at_randomization: dict[str, str]
    strata_corrected: dict[str, str]
    in_error: bool
    blind_broken: bool
    days: tuple[DayView, ...]
    corrections: tuple[CorrectionView, ...]
    withdrawal: WithdrawalView | None = None  # REP-04

    def as_json(self) -> dict[str, object]:
        return {
            "subject_number": self.subject_number,
            "screening_number": self.screening_number,
            "randomization_number": self.randomization_number,
            "site": self.site,
            "randomized_at": self.randomized_at.isoformat().replace("+00:00", "Z"),
            "strata": self.strata_at_randomization,
            "strata_corrected": self.strata_corrected
            if self.strata_corrected != self.strata_at_randomization
            else None,
            "randomized_in_error": self.in_error,
            "blind_broken": self.blind_broken,
            "withdrawal": self.withdrawal.as_json() if self.withdrawal else None,
            "kits": [
                {
                    "day": d.label,
                    "kit_number": d.kit_number,
                    "status": d.status,
                    "administered_at": d.administered_at.isoformat().replace("+00:00", "Z")
                    if d.administered_at
                    else None,
                }
                for d in self.days
            ],
        }


def _view(
    session: Session, definition: TrialDefinition, subject: Subject, site_codes: Mapping[int, str]
) -> SubjectView:
    labels = {d.day: d.label for d in definition.dispensing.schedule}
    rows = session.execute(
        select(Dispensation, Kit.kit_number)
        .join(Kit, Kit.id == Dispensation.kit_id)
        .where(Dispensation.subject_id == subject.id)
        .order_by(Dispensation.day, Dispensation.replacement_number)
    ).all()
    administered = {
        a.dispensation_id: a.administered_at
        for a in session.execute(
            select(Administration).where(Administration.subject_id == subject.id)
        ).scalars()
    }
    current: dict[int, tuple[Dispensation, str]] = {}
    replacements: dict[int, int] = {}
    for dispensation, kit_number in rows:
        current[dispensation.day] = (dispensation, kit_number)
        replacements[dispensation.day] = dispensation.replacement_number
    days = tuple(
        DayView(
            day=day,
            label=labels.get(day, f"D{day}"),
            kit_number=kit_number,
            status=d.status,
            dispensed_at=d.dispensed_at,
            administered_at=administered.get(d.id),
            replacements=replacements[day],
        )
        for day, (d, kit_number) in sorted(current.items())
    )
    corrections = tuple(
        CorrectionView(
            c.kind, c.field, c.old_value, c.new_value, c.reason, c.by_name, c.at, c.investigator_agreement_ref
        )
        for c in session.execute(
            select(SubjectCorrection)
            .where(SubjectCorrection.subject_id == subject.id)
            .order_by(SubjectCorrection.id)
        ).scalars()
    )
    return SubjectView(
        subject_number=subject.subject_number,
        screening_number=subject.screening_number,
        randomization_number=subject.randomization_number,
        site=site_codes[subject.site_id],
        randomized_at=subject.randomized_at,
        randomized_by=subject.randomized_by_name,
        strata_at_randomization=dict(subject.strata),
        strata_corrected=current_strata(session, subject),
        in_error=any(c.kind == "randomized_in_error" for c in corrections),
        blind_broken=blind_broken(session, subject.id),
        days=days,
        corrections=corrections,
        withdrawal=_withdrawal_view(session, subject.id),
    )


def _withdrawal_view(session: Session, subject_id: int) -> WithdrawalView | None:
    w = withdrawal_of(session, subject_id)
    if w is None:
        return None
    return WithdrawalView(w.kind, w.effective_date, w.reason, w.recorded_by_name, w.recorded_at)


def blind_broken(session: Session, subject_id: int) -> bool:
    """Whether the subject's blind is broken as blinded roles see it: an emergency unblinding
    (online or offline) or an accidental report naming the subject; never a pharmacovigilance
    unblinding (UNB-05, UNB-08)."""
    subject = session.get(Subject, subject_id)
    return subject is not None and subject_id in unblinding.blind_broken_subject_ids(
        session, subject.trial_id
    )


def subjects(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[SubjectView]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        site_codes = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        rows = session.execute(
            select(Subject).where(Subject.trial_id == trial.id).order_by(Subject.id)
        ).scalars()
        return [_view(session, definition, s, site_codes) for s in rows if scope.allows_site(s.site_id)]


def subject(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> SubjectView:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        site_codes = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        return _view(session, definition, subject_in_reach(session, trial, number, scope), site_codes)


@dataclass(frozen=True, slots=True)
class ScreeningView:
    screening_number: str
    site: str
    screened_at: datetime
    screened_by: str
    eligible: bool
    failures: tuple[str, ...]
    subject_number: str | None


def screening_log(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[ScreeningView]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        site_codes = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        subjects_by_entry = {
            row.screening_entry_id: row.subject_number
            for row in session.execute(
                select(Subject.screening_entry_id, Subject.subject_number).where(Subject.trial_id == trial.id)
            )
        }
        return [
            ScreeningView(
                e.screening_number,
                site_codes[e.site_id],
                e.screened_at,
                e.screened_by_name,
                e.eligible,
                tuple(f["message"] for f in e.failures),
                subjects_by_entry.get(e.id),
            )
            for e in session.execute(
                select(ScreeningEntry)
                .where(ScreeningEntry.trial_id == trial.id)
                .order_by(ScreeningEntry.id.desc())
            ).scalars()
            if scope.allows_site(e.site_id)
        ]


def notifications(
    ctx: ServiceContext, trial_code: str, audience: set[str], scope: Scope, limit: int = 50
) -> list[Notification]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(Notification)
            .where(Notification.trial_id == trial.id, Notification.audience.in_(audience))
            .order_by(Notification.id.desc())
            .limit(limit * 4)
        ).scalars()
        return [n for n in rows if n.site_id is None or scope.allows_site(n.site_id)][:limit]


def confirmation_pdf(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope
) -> tuple[str, bytes]:
    """The randomization confirmation of a subject as a PDF (no arm). Every print is recorded; a
    reprint is counted like any document (LBL-12)."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope)
        site = session.get(Site, subject.site_id)
        if site is None:  # pragma: no cover
            raise NotFound("no site")
        labels = {d.day: d.label for d in definition.dispensing.schedule}
        live = current_dispensations(session, subject.id)
        kit_rows = []
        for day, row in sorted(live.items()):
            kit = session.get(Kit, row.kit_id)
            if kit is not None:
                kit_rows.append(kitlib.ConfirmedKit(labels[day], kit.kit_number))
        previous = session.execute(
            select(func.count())
            .select_from(PrintedDocument)
            .where(
                PrintedDocument.subject_id == subject.id, PrintedDocument.kind == "randomization_confirmation"
            )
        ).scalar_one()
        document_id = kits.next_document_id(session, trial, "RAND")
        pdf = kitlib.render_randomization_confirmation(
            kits.label_info(definition, ctx.settings.env),
            kitlib.RandomizationConfirmation(
                site_code=site.code,
                site_name=site.name,
                subject_number=subject.subject_number,
                screening_number=subject.screening_number,
                randomization_number=subject.randomization_number,
                randomized_at=subject.randomized_at,
                randomized_by=subject.randomized_by_name,
                local_zone=definition.timezone,
                kits=tuple(kit_rows),
                document=kitlib.DocumentMeta(
                    document_id=document_id, created_at=now, reprint_number=previous
                ),
            ),
        )
        session.add(
            PrintedDocument(
                trial_id=trial.id,
                kind="randomization_confirmation",
                document_id=document_id,
                subject_id=subject.id,
                items=[k.kit_number for k in kit_rows],
                reprint_number=previous,
                content_sha256=hashlib.sha256(pdf).hexdigest(),
                printed_at=now,
                printed_by_id=actor.user_id,
                printed_by_name=actor.name,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DOCUMENT_PRINTED,
            object_type="printed_document",
            object_id=document_id,
            site_code=site.code,
            new={"kind": "randomization_confirmation", "subject": number, "reprint": previous},
            at=now,
        )
        return document_id, pdf
