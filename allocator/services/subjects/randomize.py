"""Randomize a subject: the hot path.

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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, and_, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.db import Direct
from allocator.eligibility import EligibilityInputError, EligibilityResult
from allocator.eligibility import check as check_eligibility
from allocator.models import (
    Dispensation,
    IntegrityCheck,
    Kit,
    KitEvent,
    KitStatus,
    ListMode,
    ListStatus,
    MinimizationDecision,
    Notification,
    RandomizationList,
    ScreeningEntry,
    Site,
    SiteStatus,
    Slot,
    Stratum,
    Subject,
    Trial,
    TrialDefinitionVersion,
)
from allocator.models.base import IntegerArrayText, UTCDateTime
from allocator.models.kit import status_bit
from allocator.permissions import Scope
from allocator.randomization import minimization as minimization_core
from allocator.services import arm_access, lookups
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    Conflict,
    DomainError,
    FieldProblem,
    Forbidden,
    NotFound,
    ObservationalStudy,
    ValidationFailed,
)
from allocator.services.lists import integrity, overview, storage
from allocator.services.lookups import (
    TrialRef,
    TrialRow,
    current_definition,
    get_trial,
    trial_row_and_definition,
)
from allocator.services.supply import resupply
from allocator.services.supply import stock as supply_stock
from allocator.trialdef import DispensingDay, MinimizationRandomization, TrialDefinition, stratum_key


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


def _require_randomized(definition: TrialDefinition) -> None:
    """Issue 20: an observational study has no list, arm or kit to randomize with."""
    if definition.observational:
        raise ObservationalStudy(f"{definition.code} is an observational study: register the patient instead")


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
    json_numbers: bool = False
    """The JSON API's contract: a number criterion's answer is a JSON number, never text."""


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


def normalized_screening_number(definition: TrialDefinition, raw: str) -> str:
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
    return _preview(ctx, trial_code, request, scope)[0]


def check(
    ctx: ServiceContext, actor: Actor, trial_code: str, request: RandomizationRequest, scope: Scope
) -> Preview:
    """The confirmation screen, as `preview`, except that an eligibility check that fails is
    recorded in the screening log at once (issue 13): the participant flow counts it even if the
    investigator walks away. Corrected answers checked again are recorded again, as history; the
    same answers checked twice (a reload, then "Record in the screening log") are recorded once. An
    eligible check records nothing until the randomization itself."""
    shown, eligibility = _preview(ctx, trial_code, request, scope)
    if shown.eligible:
        return shown
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        lookups.require_open(trial, session)
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == shown.site).with_for_update()
        ).scalar_one()
        record_ineligible(
            ctx, session, actor, trial, site.id, site.code, shown.screening_number, eligibility, now
        )
    return shown


def record_ineligible(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
    site_id: int,
    site_code: str,
    screening: str,
    eligibility: EligibilityResult,
    now: datetime,
) -> None:
    """One screening-log entry and its audit entry for a failed eligibility check, unless the last
    entry of this screening number already holds these answers, or the number is randomized."""
    taken = session.execute(
        select(Subject.id).where(Subject.trial_id == trial.id, Subject.screening_number == screening)
    ).first()
    if taken is not None:
        return
    answers = eligibility.answers_json()
    last = session.execute(
        select(ScreeningEntry)
        .where(
            ScreeningEntry.trial_id == trial.id,
            ScreeningEntry.site_id == site_id,
            ScreeningEntry.screening_number == screening,
        )
        .order_by(ScreeningEntry.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if last is not None and not last.eligible and last.answers == answers:
        return
    session.execute(
        _INSERT_SCREENING_ENTRY,
        {
            "trial_id": trial.id,
            "site_id": site_id,
            "screening_number": screening,
            "screened_at": now,
            "screened_by_id": actor.user_id,
            "screened_by_name": actor.name,
            "eligible": False,
            "answers": answers,
            "failures": [{"criterion": f.criterion, "message": f.message} for f in eligibility.failures],
        },
    )
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.SCREENING_FAILED,
        object_type="screening_entry",
        object_id=screening,
        site_code=site_code,
        new={"failures": [f.criterion for f in eligibility.failures]},
        at=now,
    )


def _preview(
    ctx: ServiceContext, trial_code: str, request: RandomizationRequest, scope: Scope
) -> tuple[Preview, EligibilityResult]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        _require_randomized(definition)
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == request.site.strip())
        ).scalar_one_or_none()
    if site is None or not scope.allows_site(site.id):
        raise ValidationFailed(
            f"no site {request.site!r} within your reach", errors=[FieldProblem("site", "unknown site")]
        )
    if site.status != SiteStatus.ACTIVE.value:
        raise SiteNotActive(f"site {site.code} is {site.status}: it cannot randomize (RND-14)")
    screening = normalized_screening_number(definition, request.screening_number)
    levels = _strata_levels(definition, site.code, request.strata)
    result = checked_eligibility(
        definition, request.eligibility, ctx.now(), json_numbers=request.json_numbers
    )
    labels = {}
    for factor in definition.stratification:
        level = next((lv for lv in factor.levels if lv.code == levels[factor.code]), None)
        labels[factor.label.en] = level.label.en if level else levels[factor.code]
    return (
        Preview(
            site.code,
            screening,
            result.eligible,
            tuple((f.criterion, f.message) for f in result.failures),
            levels,
            labels,
        ),
        result,
    )


def checked_eligibility(
    definition: TrialDefinition, raw: Mapping[str, object], now: datetime, *, json_numbers: bool = False
) -> EligibilityResult:
    try:
        return check_eligibility(
            definition.eligibility, raw, definition.local_date(now), json_numbers=json_numbers
        )
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
    # Only what can be a site code goes to the database with the trial's read (a NUL byte, which
    # PostgreSQL refuses, or any other text is an unknown site, named after the inputs are checked).
    site_code = request.site if isinstance(request.site, str) and _SITE_CODE.fullmatch(request.site) else ""
    with ctx.db.unit_of_work() as session:
        trial, definition, site = _trial_and_locked_site(session, trial_code, site_code)
        _require_randomized(definition)
        lookups.require_open(trial)  # no new subject once the database is locked
        # Every check of the input comes before the first write: a refusal changes nothing.
        screening = normalized_screening_number(definition, request.screening_number)
        levels = _strata_levels(definition, request.site, request.strata)
        eligibility = checked_eligibility(
            definition, request.eligibility, now, json_numbers=request.json_numbers
        )
        outcome = _randomize_in(
            ctx,
            session,
            actor,
            trial,
            definition,
            request.site,
            site,
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

_SITE_CODE = re.compile(r"[A-Za-z0-9-]{1,32}")  # wider than any site code the definitions allow

# The trial (its status and the definition in force, as `lookups.trial_row_and_definition` reads
# them) and the site of the request, its row locked: one statement (issue 16), the first of the
# allocation. The site's lock orders the allocations of the site; the trial's row is read as of the
# statement's start (its status is read again under the site's lock, by the next statement). No
# row: an unknown trial or site, told apart by `trial_row_and_definition` (NotFound for the trial).
_TRIAL_AND_LOCKED_SITE = Direct(
    select(
        Trial.id,
        Trial.code,
        Trial.status,
        TrialDefinitionVersion.version,
        TrialDefinitionVersion.sha256,
        Site.id.label("site_id"),
        Site.code.label("site_code"),
        Site.status.label("site_status"),
    )
    .join(TrialDefinitionVersion, TrialDefinitionVersion.trial_id == Trial.id)
    .join(Site, and_(Site.trial_id == Trial.id, Site.code == bindparam("site_code")))
    .where(Trial.code == bindparam("code"))
    .order_by(TrialDefinitionVersion.version.desc())
    .limit(1)
    .with_for_update(of=Site)
)


@dataclass(frozen=True, slots=True)
class _LockedSite:
    id: int
    code: str
    status: str


def _trial_and_locked_site(
    session: Session, trial_code: str, site_code: str
) -> tuple[TrialRow, TrialDefinition, _LockedSite | None]:
    """The trial and its definition (NotFound for an unknown trial), and the request's site, locked
    (None: not a site of the trial)."""
    row = _TRIAL_AND_LOCKED_SITE.one_or_none(
        session.connection(), {"code": trial_code, "site_code": site_code}
    )
    if row is None:
        trial, definition = trial_row_and_definition(session, trial_code)
        return trial, definition, None
    trial = TrialRow(row.id, row.code, row.status)
    return (
        trial,
        lookups.definition_of(session, trial, row.version, row.sha256),
        _LockedSite(row.site_id, row.site_code, row.site_status),
    )


# Under the site's lock: the trial's status again, its row locked FOR KEY SHARE until the commit
# (the first statement read it as of its start, before any wait for the site; a database lock or
# unblinding, `closeout.state`, takes the row FOR UPDATE: it waits for the randomizations that hold
# this lock, and one that asks for it meanwhile waits for the change to end and reads its status;
# the key-share lock is the one the allocation's inserts take anyway, so nothing else waits for
# it), whether the screening number is taken (trial-wide; a unique constraint backs it), the number
# of subjects of the site, for the next subject number, and the id range of the site's available
# kits, for the kit draw (`stock.draw_usable_kits`; a statement less).
_SCREENING_TAKEN_AND_SITE_SUBJECTS = Direct(
    select(
        select(Trial.status)
        .where(Trial.id == bindparam("trial_id"))
        .with_for_update(read=True, key_share=True)
        .scalar_subquery(),
        select(Subject.id)
        .where(Subject.trial_id == bindparam("trial_id"), Subject.screening_number == bindparam("screening"))
        .exists(),
        select(func.count())
        .select_from(Subject)
        .where(Subject.trial_id == bindparam("trial_id"), Subject.site_id == bindparam("site_id"))
        .scalar_subquery(),
        *supply_stock.AVAILABLE_ID_RANGE_COLUMNS,
    )
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
_LOCK_ACTIVE_STRATUM = Direct(
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
_SLOT_AT = Direct(
    select(Slot.position, Slot.randomization_number, Slot.sealed, Slot.id, Slot.mac).where(
        Slot.stratum_id == bindparam("stratum_id"), Slot.position == bindparam("position")
    )
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
    .values(
        status=KitStatus.ALLOCATED.value,
        ever_statuses=Kit.ever_statuses.op("|")(status_bit(KitStatus.ALLOCATED.value)),
    )
)
_TAKE_SLOT = update(Stratum).where(Stratum.id == bindparam("stratum_id")).values(used=Stratum.used + 1)


# PostgreSQL: the whole allocation's write in one statement (issue 16: each statement costs a
# round trip and, in the application, more CPU than the database spends running it). Data-modifying
# CTEs run on one snapshot, against rows this transaction already holds locked (the site, the
# stratum and the kits); foreign keys to rows inserted by a sibling CTE are checked at the end of
# the statement. The rows written are exactly those of the statement-by-statement path (SQLite).
_WRITE_ALLOCATION = Direct(
    text(
        """
WITH entry AS (
    INSERT INTO screening_entry (trial_id, site_id, screening_number, screened_at, screened_by_id,
                                 screened_by_name, eligible, answers, failures)
    VALUES (:trial_id, :site_id, :screening_number, :now, :actor_id, :actor_name, TRUE,
            CAST(:answers AS JSON), CAST(:failures AS JSON))
    RETURNING id
), new_subject AS (
    INSERT INTO subject (trial_id, site_id, screening_entry_id, screening_number, subject_number,
                         list_id, stratum_id, slot_id, minimization_decision_id, randomization_number,
                         strata, randomized_at, randomized_by_id, randomized_by_name)
    SELECT :trial_id, :site_id, entry.id, :screening_number, :subject_number, :list_id, :stratum_id,
           :slot_id, :decision_id, :randomization_number, CAST(:strata AS JSON), :now, :actor_id,
           :actor_name
    FROM entry
    RETURNING id
), dispensations AS (
    INSERT INTO dispensation (subject_id, day, replacement_number, kit_id, status, allocated_at)
    SELECT new_subject.id, kits.day, 0, kits.kit_id, :allocated, :now
    FROM new_subject, unnest(CAST(:days AS INTEGER[]), CAST(:kit_ids AS INTEGER[])) AS kits(day, kit_id)
), kit_events AS (
    INSERT INTO kit_event (kit_id, at, from_status, to_status, site_id, actor_id, actor_name, reason)
    SELECT kits.kit_id, :now, :available, :allocated, :site_id, :actor_id, :actor_name, kits.reason
    FROM unnest(CAST(:kit_ids AS INTEGER[]), CAST(:reasons AS TEXT[])) AS kits(kit_id, reason)
), allocated_kits AS (
    UPDATE kit SET status = :allocated, ever_statuses = kit.ever_statuses | {allocated_bit}
    WHERE kit.id = ANY(CAST(:kit_ids AS INTEGER[]))
), slot_taken AS (
    UPDATE stratum SET used = stratum.used + 1 WHERE stratum.id = :stratum_id
), note AS (
    INSERT INTO notification (trial_id, site_id, audience, kind, subject_number, title, body, created_at)
    VALUES (:trial_id, :note_site_id, :audience, :kind, :note_subject, :title, :body, :now)
)
SELECT id FROM new_subject
""".replace("{allocated_bit}", str(status_bit(KitStatus.ALLOCATED.value)))  # a constant of the code
    ).bindparams(
        bindparam("answers", type_=JSON),
        bindparam("failures", type_=JSON),
        bindparam("strata", type_=JSON),
        bindparam("now", type_=UTCDateTime()),
        bindparam("days", type_=IntegerArrayText()),
        bindparam("kit_ids", type_=IntegerArrayText()),
    )
)


def _write_allocation_in_one_statement(
    connection: Connection,
    entry: Mapping[str, object],
    subject: Mapping[str, object],
    days: list[tuple[DispensingDay, arm_access.SealedKit]],
    kit_events: list[dict[str, object]],
    stratum_id: int,
    note: Mapping[str, object],
    now: datetime,
) -> None:
    """The PostgreSQL form of the allocation's write: screening entry, subject, dispensations, kit
    events, kit statuses, the stratum's counter and the pharmacists' notification."""
    _WRITE_ALLOCATION.one(
        connection,
        {
            "trial_id": subject["trial_id"],
            "site_id": subject["site_id"],
            "screening_number": subject["screening_number"],
            "now": now,
            "actor_id": subject["randomized_by_id"],
            "actor_name": subject["randomized_by_name"],
            "answers": entry["answers"],
            "failures": entry["failures"],
            "subject_number": subject["subject_number"],
            "list_id": subject["list_id"],
            "stratum_id": stratum_id,
            "slot_id": subject["slot_id"],
            "decision_id": subject["minimization_decision_id"],
            "randomization_number": subject["randomization_number"],
            "strata": subject["strata"],
            "days": [day.day for day, _ in days],
            "kit_ids": [kit.id for _, kit in days],
            "reasons": [event["reason"] for event in kit_events],
            "available": KitStatus.AVAILABLE.value,
            "allocated": KitStatus.ALLOCATED.value,
            "note_site_id": note["site_id"],
            "audience": note["audience"],
            "kind": note["kind"],
            "note_subject": note["subject_number"],
            "title": note["title"],
            "body": note["body"],
        },
    )


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
    trial: TrialRef,
    definition: TrialDefinition,
    site_code: str,
    site: _LockedSite | None,
    screening: str,
    levels: dict[str, str],
    eligibility: EligibilityResult,
    scope: Scope,
    now: datetime,
) -> RandomizationResult | DomainError:
    connection = session.connection()
    if site is None or not scope.allows_site(site.id):
        raise NotFound(
            f"no site {site_code!r} within your reach", errors=[FieldProblem("site", "unknown site")]
        )
    if site.status != SiteStatus.ACTIVE.value:
        raise SiteNotActive(f"site {site.code} is {site.status}: it cannot randomize (RND-14)")
    status, taken, site_subjects, kit_id_lo, kit_id_hi = _SCREENING_TAKEN_AND_SITE_SUBJECTS.one(
        connection, {"trial_id": trial.id, "screening": screening, "site_id": site.id}
    )
    if status != trial.status:  # changed while this randomization waited for its site (UNB-10)
        lookups.require_open(TrialRow(trial.id, trial.code, status))
    if taken:
        raise AlreadyRandomized(
            f"screening number {screening} is already randomized (RND-07)",
            errors=[FieldProblem("screening_number", "is already randomized")],
        )
    if not eligibility.eligible:
        record_ineligible(ctx, session, actor, trial, site.id, site.code, screening, eligibility, now)
        return Ineligible(
            f"{screening} is not eligible: recorded in the screening log, not randomized",
            errors=[FieldProblem(f"eligibility.{f.criterion}", f.message) for f in eligibility.failures],
        )
    one_statement = connection.dialect.name == "postgresql"
    entry = {
        "trial_id": trial.id,
        "site_id": site.id,
        "screening_number": screening,
        "screened_at": now,
        "screened_by_id": actor.user_id,
        "screened_by_name": actor.name,
        "eligible": True,
        "answers": eligibility.answers_json(),
        "failures": [],
    }
    # On PostgreSQL the screening entry is written with the rest of the allocation, in one
    # statement (below); elsewhere now. Either way it commits or rolls back with the allocation.
    entry_id = None if one_statement else connection.execute(_INSERT_SCREENING_ENTRY, entry).scalar_one()
    key = stratum_key(list(levels.items()))
    target = _lock_target(session, trial, lookups.instance_mode(ctx.settings.env), key)
    schedule = definition.dispensing.schedule
    stock = supply_stock.draw_usable_kits(
        ctx,
        session,
        actor,
        trial,
        definition,
        site.id,
        definition.local_date(now),
        len(schedule),
        id_range=(kit_id_lo, kit_id_hi),
    )
    if any(len(stock[arm]) < len(schedule) for arm in definition.arm_codes):
        # Refused before any slot is used, whichever arm the next slot holds, so that the refusal
        # says nothing about the arm (RND-08, BLD-04).
        raise KitsUnavailable(
            f"site {site.code} does not hold {len(schedule)} usable kits of every arm: "
            "ask the supply manager for a shipment"
        )
    if isinstance(target, _NoStratum):
        raise storage.ListIntegrityFailure(f"the active list has no stratum {key}")
    if isinstance(definition.randomization, MinimizationRandomization):
        arm, randomization_number, slot_id, decision_id = _minimize(
            ctx, session, actor, trial, target, levels, definition, now
        )
    else:
        arm, randomization_number, slot_id = _next_slot(ctx, session, actor, trial, target)
        decision_id = None
    chosen = supply_stock.pick(stock[arm], len(schedule))
    # Per-site sequence (the site's row is locked): P1-001, P1-002 ...
    number = f"{site.code}-{site_subjects + 1:03d}"
    days = list(zip(schedule, chosen, strict=True))
    # The site's pharmacists learn which kits to dispense (no arm: the kit numbers are blind).
    pharmacy_note: dict[str, Any] = {
        "site_id": site.id,
        "audience": "pharmacist",
        "kind": "dispensation_request",
        "subject_number": number,
        "title": f"Dispensation request for {number}",
        "body": f"Subject {number} (randomization number {randomization_number}) was randomized at site "
        f"{site.code} by {actor.name}. Kits to dispense: "
        # printed as on the label, with its dash (issue 13 point 9)
        + ", ".join(f"{day.label} {kitlib.format_kit_number(kit.kit_number)}" for day, kit in days)
        + ".",
    }
    subject = {
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
    }
    kit_events: list[dict[str, object]] = [
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
    ]
    if one_statement:
        _write_allocation_in_one_statement(
            connection, entry, subject, days, kit_events, target.stratum_id, pharmacy_note, now
        )
    else:
        subject_id = connection.execute(_INSERT_SUBJECT, subject).scalar_one()
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
        connection.execute(_INSERT_KIT_EVENT, kit_events)
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
    if not one_statement:
        notify_unblinded_roles(session, trial, **pharmacy_note, now=now)
    remaining = target.capacity - position
    if remaining <= target.alert_remaining:
        # RND-11: the statistician learns that a stratum runs low; the message names no count of
        # arms and no position, and only the unblinded statistician receives it.
        notify_unblinded_roles(
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
    # Issue 19: the site's stock fell; one blind count (none without [supply]) decides a resupply.
    resupply.after_stock_change(ctx, session, actor, trial, definition, site, now)
    return RandomizationResult(number, randomization_number, tuple(allocated), now, site.code)


@dataclass(frozen=True, slots=True)
class _NoStratum:
    """The active list has no row for the stratum (a damaged list): refused after the kit check."""

    list_id: int
    label: str


def _lock_target(session: Session, trial: TrialRef, mode: ListMode, key: str) -> _Target | _NoStratum:
    """The active list and its stratum `key`, the stratum's row locked. Raises NoActiveList, or
    ListIntegrityFailure while the list's last integrity check failed (RND-10, ACC-15). One
    statement unless something is wrong."""
    row = _LOCK_ACTIVE_STRATUM.one_or_none(
        session.connection(), {"trial_id": trial.id, "mode": mode.value, "key": key}
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
        active = overview.active_list(session, trial.id, mode)
        if active is None:
            raise NoActiveList(f"{trial.code} has no active {mode.value.upper()} randomization list")
        target = _NoStratum(active.id, active.label)
        blocked = integrity.list_blocked(session, active.id)
    if blocked:
        raise storage.ListIntegrityFailure(
            f"{target.label} failed its last integrity check: randomization is blocked"
        )
    return target


def _next_slot(
    ctx: ServiceContext, session: Session, actor: Actor, trial: TrialRef, target: _Target
) -> tuple[str, str, int]:
    """The next unused slot of the stratum (RND-05), checked before it is used (RND-10): its MAC
    must match its position, randomization number and sealed record, and its sealed record must
    open for this very position (AES-GCM, bound to trial, list, stratum and position). So a
    changed, replaced or removed slot is caught when its turn comes, at a cost that does not grow
    with the list (issue 16); a slot tampered with before its turn is caught by the full digest
    check of `integrity-check` (at start-up and daily), which then blocks the list. A slot stored
    before slot MACs existed (no MAC) has its whole stratum re-checked against the digest, as
    before."""
    if target.used >= target.capacity:
        raise StratumExhausted(
            f"the randomization list of stratum {target.key} is exhausted: nothing was allocated; the unblinded "
            "statistician must extend the list (RND-11)"
        )
    position = target.used + 1
    rows = _SLOT_AT.rows(session.connection(), {"stratum_id": target.stratum_id, "position": position})
    if len(rows) != 1:
        raise storage.ListIntegrityFailure(
            f"the stratum {target.key} has no slot at position {position}: randomization is blocked (RND-10)"
        )
    _, number, sealed, slot_id, mac = rows[0]
    if mac is None:
        _check_whole_stratum(session, target)
    elif not crypto.SlotMacer(ctx.ring).verify(
        bytes(mac), trial.code, target.label, target.key, position, number, bytes(sealed)
    ):
        raise storage.ListIntegrityFailure(
            f"the slot at position {position} of stratum {target.key} differs from what was generated: "
            "randomization is blocked (RND-10)"
        )
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


def _check_whole_stratum(session: Session, target: _Target) -> None:
    """The check of a stratum stored without slot MACs: every slot against the stratum's digest."""
    rows = session.connection().execute(_STRATUM_SLOTS, {"stratum_id": target.stratum_id}).all()
    if storage.storage_digest(row[:3] for row in rows) != target.storage_sha256:
        raise storage.ListIntegrityFailure(
            f"the slots of stratum {target.key} differ from their recorded digest: randomization is blocked (RND-10)"
        )


def _minimize(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: TrialRef,
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
    number = storage.RandomizationNumbers(numbers).next()
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


def notify_unblinded_roles(
    session: Session,
    trial: TrialRef,
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
