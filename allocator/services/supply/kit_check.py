"""Each kit's history checked against the kit (LBL-11, issue 21): whole once a day, kept signed, and
on every view of the reconciliation only for the kits that moved since.

A kit's records agree when its events chain up from nothing to its current status (each event
starts where the previous one ended, the last ends at the kit's status) and its `ever_statuses`
holds exactly the statuses its events entered. The whole check (`check_whole`, run by `allocator
integrity-check`, daily from cron) reads every event of the trial; it keeps what it found in
`kit_check` (signed with the audit key, its own domain): up to which event and which kit it
checked, and the kits that did not agree. A view of the reconciliation then checks only the kits
with an event or created after that point, and those kits again: its cost follows what moved since
the daily check, not the size of the trial. Without a kept check that verifies (none yet, or a row
edited by hand), every kit is checked, as before.

What the kept check does not see, by design, as the kept audit verification does not: a kit event
or a kit edited by hand, behind the application, after the daily check without the kit moving
since; the next whole check finds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    and_,
    case,
    exists,
    func,
    or_,
    select,
    text,
    true,
    union,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.db import upsert
from allocator.models import Kit, KitCheck, KitEvent, KitStatus, Trial
from allocator.models.kit import status_bit
from allocator.services.context import ServiceContext

_BITS = case(
    *((KitEvent.to_status == status.value, status_bit(status.value)) for status in KitStatus), else_=0
)


@dataclass(frozen=True, slots=True)
class KeptCheck:
    trial_code: str
    through_event_id: int
    through_kit_id: int
    suspects: tuple[int, ...]
    checked_at: datetime

    def message(self) -> bytes:
        return "|".join(
            (
                "kit-check",
                self.trial_code,
                str(self.through_event_id),
                str(self.through_kit_id),
                ",".join(str(kit_id) for kit_id in self.suspects),
                self.checked_at.astimezone(UTC).isoformat(),
            )
        ).encode()


@dataclass(frozen=True, slots=True)
class WholeCheck:
    trial_code: str
    kits: int
    suspects: tuple[int, ...]
    kept: bool
    audited: bool = False  # a failure written to the trial's audit trail (kit.check_failed)

    @property
    def ok(self) -> bool:
        return not self.suspects


def kept(session: Session, ring: crypto.KeyRing, trial: Trial) -> KeptCheck | None:
    """The kept whole check of `trial`, or None: none yet, or a row that does not verify."""
    row = session.execute(select(KitCheck).where(KitCheck.trial_id == trial.id)).scalar_one_or_none()
    if row is None:
        return None
    try:
        suspects = tuple(int(kit_id) for kit_id in json.loads(row.suspects))
    except (ValueError, TypeError, RecursionError):  # a row written by hand, however deep
        return None
    at = row.checked_at if row.checked_at.tzinfo is not None else row.checked_at.replace(tzinfo=UTC)
    check = KeptCheck(trial.code, int(row.through_event_id), int(row.through_kit_id), suspects, at)
    try:
        valid = crypto.verify_kit_check(ring, row.key_id, check.message(), bytes(row.signature))
    except crypto.KeyMissingError:
        valid = False
    return check if valid else None


# Above this many kits moved since the kept check, a view checks every kit within reach (one
# statement) rather than naming them all (a kept check many days old).
# Each id is sent several times (once per part of the check): 2,000 keeps a statement far below
# SQLite's 32,766 parameters, with a reader's sites beside them.
MOST_NAMED = 2000


def suspects(session: Session, reach: ColumnElement[bool], check: KeptCheck | None) -> list[int]:
    """The kits within `reach` whose records do not agree (see the module), in id order: every kit
    without a kept check; with one, only those that moved or were created after it and those it
    found, checked again whole, read by their ids (index look-ups, not a scan of every kit or
    event). Each check is one statement: one snapshot of the kits and their events."""
    if check is not None:
        moved = set(
            session.execute(
                union(
                    select(KitEvent.kit_id)
                    .join(Kit, Kit.id == KitEvent.kit_id)
                    .where(KitEvent.id > check.through_event_id, reach),
                    select(Kit.id).where(Kit.id > check.through_kit_id, reach),
                )
            ).scalars()
        )
        named = sorted(moved | set(check.suspects))
        if not named:
            return []
        if len(named) <= MOST_NAMED:
            return sorted(set(session.execute(_disagreeing(reach, named)).scalars()))
    return sorted(set(session.execute(_disagreeing(reach)).scalars()))


def _disagreeing(reach: ColumnElement[bool], kit_ids: list[int] | None = None) -> CompoundSelect[int]:
    """The kits within `reach` (and among `kit_ids`, when given) whose records do not agree."""
    events_of: ColumnElement[bool]
    if kit_ids is not None:
        reach = and_(reach, Kit.id.in_(kit_ids))
        events_of = KitEvent.kit_id.in_(kit_ids)  # so that the events are read by their kit's index
    else:
        events_of = true()
    chain = (
        select(
            KitEvent.kit_id,
            KitEvent.from_status,
            KitEvent.to_status,
            Kit.status.label("kit_status"),  # carried, not joined again per event (issue 21)
            func.lag(KitEvent.to_status)
            .over(partition_by=KitEvent.kit_id, order_by=KitEvent.id)
            .label("previous"),
            func.lead(KitEvent.id).over(partition_by=KitEvent.kit_id, order_by=KitEvent.id).label("next"),
        )
        .join(Kit, Kit.id == KitEvent.kit_id)
        .where(reach, events_of)
        .subquery()
    )
    broken = select(chain.c.kit_id).where(
        or_(
            chain.c.from_status.is_distinct_from(chain.c.previous),
            and_(chain.c.next.is_(None), chain.c.to_status.is_distinct_from(chain.c.kit_status)),
        )
    )
    silent = select(Kit.id).where(reach, ~exists().where(KitEvent.kit_id == Kit.id))
    # The sum of the distinct bits of a kit's events is their OR (SQLite has no bit_or).
    entered = (
        select(KitEvent.kit_id, func.sum(_BITS.distinct()).label("bits"))
        .join(Kit, Kit.id == KitEvent.kit_id)
        .where(reach, events_of)
        .group_by(KitEvent.kit_id)
        .subquery()
    )
    misrecorded = (
        select(Kit.id)
        .join(entered, entered.c.kit_id == Kit.id)
        .where(reach, Kit.ever_statuses != entered.c.bits)
    )
    return union(broken, silent, misrecorded)


def check_whole(ctx: ServiceContext, checked_by: Actor, trial_code: str | None = None) -> list[WholeCheck]:
    """Check every kit of each trial (or of `trial_code`) and keep the result (see the module).
    A trial whose kits do not all agree is written to its audit trail by `checked_by`, as a list
    that fails its integrity check is: how many kits, not which (the kit reconciliation names them
    within each reader's reach), never an arm. Best effort for the writes: the verdict stands
    whatever happens to them (the keeping and the entry commit together or not at all)."""
    with ctx.db.reading() as session:
        trials = session.execute(
            select(Trial.id, Trial.code).where(Trial.code == trial_code)
            if trial_code
            else select(Trial.id, Trial.code)
        ).all()
    if not trials:
        return []
    through = _kept_point(ctx)
    return [_check_trial(ctx, checked_by, trial_id, code, through) for trial_id, code in trials]


def _kept_point(ctx: ServiceContext) -> tuple[int, int] | None:
    """Up to where a whole check reaches (the last kit event and kit ids, of every trial): every
    event up to this id must be visible to it. On PostgreSQL an id is drawn before its row commits,
    so a transaction still writing events could commit a lower id after the check read. A SHARE
    lock on kit_event waits for every such writer to finish (new ones wait only for this short
    transaction, once for all trials). One table only, so that no writer holding a kit's row while
    waiting for kit_event can close a cycle with it; with a time limit, after which the check runs
    all the same but is not kept (None). A kit is created with its first event, in one
    transaction: a kit written by a transaction that had not yet reached kit_event gets events
    after this id, and counts as moved. On SQLite one writer at a time (BEGIN IMMEDIATE): a writer
    in progress only ever adds ids above those read here."""
    try:
        with ctx.db.unit_of_work() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SET LOCAL lock_timeout = '5s'"))
                session.execute(text("LOCK TABLE kit_event IN SHARE MODE"))
            return (
                int(session.execute(select(func.coalesce(func.max(KitEvent.id), 0))).scalar_one()),
                int(session.execute(select(func.coalesce(func.max(Kit.id), 0))).scalar_one()),
            )
    except OperationalError:  # the lock not granted in time: checked, not kept
        return None


def _check_trial(
    ctx: ServiceContext, checked_by: Actor, trial_id: int, code: str, through: tuple[int, int] | None
) -> WholeCheck:
    now = ctx.now()
    with ctx.db.reading() as session:
        found = tuple(sorted(set(session.execute(_disagreeing(Kit.trial_id == trial_id)).scalars())))
        kits = session.execute(
            select(func.count()).select_from(Kit).where(Kit.trial_id == trial_id)
        ).scalar_one()
    if through is None and not found:
        return WholeCheck(code, int(kits), found, False)
    try:
        with ctx.db.unit_of_work() as session:
            if through is not None:
                _keep(session, ctx.ring, trial_id, KeptCheck(code, through[0], through[1], found, now))
            if found:
                # The count only: the entry is on the trial's chain, read by monitors of one site
                # too, and the kits are at every site and the depot. The kit reconciliation names
                # them, within each reader's reach.
                ctx.audit.record(
                    session,
                    actor=checked_by,
                    chain=code,
                    action=Action.KIT_CHECK_FAILED,
                    object_type="trial",
                    object_id=code,
                    new={"kit_count": len(found)},
                    at=now,
                )
    except SQLAlchemyError:  # a read-only or busy database: the verdict stands, neither kept nor audited
        return WholeCheck(code, int(kits), found, False)
    return WholeCheck(code, int(kits), found, through is not None, audited=bool(found))


def _keep(session: Session, ring: crypto.KeyRing, trial_id: int, check: KeptCheck) -> None:
    signed = crypto.sign_kit_check(ring, check.message())
    upsert(
        session,
        KitCheck,
        "trial_id",
        {
            "trial_id": trial_id,
            "through_event_id": check.through_event_id,
            "through_kit_id": check.through_kit_id,
            "suspects": json.dumps(list(check.suspects)),
            "checked_at": check.checked_at,
            "key_id": signed.key_id,
            "signature": signed.signature,
        },
    )
