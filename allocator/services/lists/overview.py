"""What readers see of the lists: the list overview (unblinded roles), the blinded stratum
overview, the review counts, the lists of another environment."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator.audit import Actor
from allocator.models import (
    IntegrityCheck,
    ListExtensionProposal,
    ListMode,
    ListStatus,
    ListVersion,
    RandomizationList,
    Signature,
    Stratum,
)
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.lists.storage import ListIntegrityFailure, list_by_id
from allocator.services.lookups import get_trial, instance_mode


def foreign_lists(ctx: ServiceContext) -> list[str]:
    """Labels of non-retired lists whose mode is not this instance's (start-up refuses them)."""
    expected = instance_mode(ctx.settings.env).value
    with ctx.db.reading() as session:
        return list(
            session.execute(
                select(RandomizationList.label).where(
                    RandomizationList.mode != expected, RandomizationList.status != ListStatus.RETIRED.value
                )
            ).scalars()
        )


# --- overviews --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StratumState:
    key: str
    used: int
    requested: int
    capacity: int
    alert_remaining: int

    @property
    def remaining(self) -> int:
        return self.capacity - self.used

    @property
    def state(self) -> str:
        """ok / low / exhausted — the only capacity information blinded roles get (RND-11, RND-12)."""
        if self.remaining <= 0:
            return "exhausted"
        return "low" if self.remaining <= self.alert_remaining else "ok"


@dataclass(frozen=True, slots=True)
class ListOverview:
    id: int
    label: str
    mode: str
    status: str
    method: str
    algorithm: str
    algorithm_version: str
    seed_id: str
    version: int
    slot_count: int
    content_sha256: str
    storage_sha256: str
    generated_at: datetime
    generated_by: str
    approved: signatures.Manifestation | None
    activated: signatures.Manifestation | None
    last_check: IntegrityCheck | None
    strata: tuple[StratumState, ...]
    versions: tuple[ListVersion, ...]
    parameters: dict[str, object]
    proposals: tuple[ListExtensionProposal, ...] = ()  # extension proposals, newest first (RND-10)

    @property
    def blocked(self) -> bool:
        return self.last_check is not None and not self.last_check.ok

    @property
    def pending(self) -> ListExtensionProposal | None:
        return next((p for p in self.proposals if p.status == "pending"), None)


def _states(session: Session, list_id: int) -> tuple[StratumState, ...]:
    rows = session.execute(
        select(Stratum).where(Stratum.list_id == list_id).order_by(Stratum.ordinal)
    ).scalars()
    return tuple(StratumState(s.key, s.used, s.requested, s.capacity, s.alert_remaining) for s in rows)


def _manifestation(session: Session, signature_id: int | None) -> signatures.Manifestation | None:
    if signature_id is None:
        return None
    signature = session.get(Signature, signature_id)
    return signatures.manifestation(signature) if signature else None


def lists(ctx: ServiceContext, trial_code: str) -> list[ListOverview]:
    """Every list of the trial, newest first, for the unblinded statistician (no arm here)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        out = []
        for row in session.execute(
            select(RandomizationList)
            .where(RandomizationList.trial_id == trial.id)
            .order_by(RandomizationList.id.desc())
        ).scalars():
            versions = tuple(
                session.execute(
                    select(ListVersion).where(ListVersion.list_id == row.id).order_by(ListVersion.version)
                ).scalars()
            )
            last = session.execute(
                select(IntegrityCheck)
                .where(IntegrityCheck.list_id == row.id)
                .order_by(IntegrityCheck.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            out.append(
                ListOverview(
                    id=row.id,
                    label=row.label,
                    mode=row.mode,
                    status=row.status,
                    method=row.method,
                    algorithm=row.algorithm,
                    algorithm_version=row.algorithm_version,
                    seed_id=row.seed_id,
                    version=row.current_version,
                    slot_count=versions[-1].slot_count,
                    content_sha256=versions[-1].content_sha256,
                    storage_sha256=versions[-1].storage_sha256,
                    generated_at=row.generated_at,
                    generated_by=row.generated_by_name,
                    approved=_manifestation(session, row.approved_signature_id),
                    activated=_manifestation(session, row.activated_signature_id),
                    last_check=last,
                    strata=_states(session, row.id),
                    versions=versions,
                    parameters=json.loads(row.parameters_json),
                    proposals=tuple(
                        session.execute(
                            select(ListExtensionProposal)
                            .where(ListExtensionProposal.list_id == row.id)
                            .order_by(ListExtensionProposal.id.desc())
                        ).scalars()
                    ),
                )
            )
        return out


def active_list(session: Session, trial_id: int, mode: ListMode) -> RandomizationList | None:
    return session.execute(
        select(RandomizationList).where(
            RandomizationList.trial_id == trial_id,
            RandomizationList.mode == mode.value,
            RandomizationList.status == ListStatus.ACTIVE.value,
        )
    ).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class BlindedStratum:
    """What every role of the trial may see of the list: no capacity figure, no position, no arm,
    no block (RND-12)."""

    key: str
    levels: dict[str, str]
    randomized: int
    state: str


def stratum_overview(ctx: ServiceContext, trial_code: str) -> list[BlindedStratum]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        row = active_list(session, trial.id, instance_mode(ctx.settings.env))
        if row is None:
            return []
        return [
            BlindedStratum(s.key, dict(part.split("=", 1) for part in s.key.split(";")), s.used, s.state)
            for s in _states(session, row.id)
        ]


def review_counts(
    ctx: ServiceContext, reader: Actor, trial_code: str, list_id: int
) -> dict[str, dict[str, int]]:
    """Slots per stratum and arm, for the statistician's QC review before approval (RND-02).
    Opening the list is an audited read of every arm (BLD-08)."""
    row = list_by_id(ctx, trial_code, list_id)
    counts: dict[str, dict[str, int]] = {}
    opened = arm_access.open_list_slots(ctx, reader, trial_code, row.id, row.label, "QC review of the list")
    if opened.unreadable:
        raise ListIntegrityFailure(
            f"{len(opened.unreadable)} slot(s) do not open (altered?): run the integrity check"
        )
    for slot in opened.slots:
        counts.setdefault(slot.stratum, {}).setdefault(slot.arm, 0)
        counts[slot.stratum][slot.arm] += 1
    return counts
