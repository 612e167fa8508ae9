"""Integrity of the stored lists: storage and signature checks, and the independent
re-generation from the seeds (verify) (RND-10, ACC-15, RND-03)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import IntegrityCheck, ListStatus, ListVersion, RandomizationList, Trial
from allocator.randomization import BlockDesign
from allocator.services import arm_access
from allocator.services.context import ServiceContext
from allocator.services.lists.overview import lists
from allocator.services.lists.storage import content_digest, iter_slots_for, list_by_id, storage_problems


@dataclass(frozen=True, slots=True)
class IntegrityResult:
    label: str
    ok: bool
    problems: tuple[str, ...]


def check_integrity(
    ctx: ServiceContext, checked_by: Actor, trial_code: str | None = None
) -> list[IntegrityResult]:
    """Recompute the storage digests of every non-retired list (at start-up, daily from cron, on
    demand). Each result is recorded; a failure is audited and blocks randomization from the list
    until a later check passes (RND-10, ACC-15). Needs no key and opens no arm."""
    now = ctx.now()
    results = []
    with ctx.db.unit_of_work() as session:
        query = (
            select(RandomizationList, Trial.code)
            .join(Trial, Trial.id == RandomizationList.trial_id)
            .where(RandomizationList.status != ListStatus.RETIRED.value)
        )
        if trial_code is not None:
            query = query.where(Trial.code == trial_code)
        for row, code in session.execute(query).all():
            version = session.execute(
                select(ListVersion).where(
                    ListVersion.list_id == row.id, ListVersion.version == row.current_version
                )
            ).scalar_one()
            problems = storage_problems(session, row, version)
            session.add(
                IntegrityCheck(
                    list_id=row.id,
                    at=now,
                    ok=not problems,
                    detail="; ".join(problems) or "intact",
                    checked_by=checked_by.name,
                )
            )
            if problems:
                ctx.audit.record(
                    session,
                    actor=checked_by,
                    chain=code,
                    action=Action.LIST_INTEGRITY_FAILED,
                    object_type="randomization_list",
                    object_id=row.label,
                    # Counts of slots are design information (RND-12): the details are sealed.
                    new={"problem_count": len(problems)},
                    sealed={"problems": problems[:20]},
                    at=now,
                )
            results.append(IntegrityResult(row.label, not problems, tuple(problems)))
    return results


def list_blocked(session: Session, list_id: int) -> bool:
    last = session.execute(
        select(IntegrityCheck.ok)
        .where(IntegrityCheck.list_id == list_id)
        .order_by(IntegrityCheck.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return last is False


# --- verification by regeneration (RND-03) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    label: str
    ok: bool
    slots: int
    problems: tuple[str, ...]


def verify_lists(ctx: ServiceContext, reader: Actor, trial_code: str) -> list[VerifyResult]:
    """Regenerate every list of the trial from its seed and parameters and compare it, slot by slot,
    with what is stored, and with the content digest of every version. Opening the seed and the
    slots is an audited read. Minimization lists have no slots; their decisions are replayed when
    subjects exist."""
    results = []
    for overview in lists(ctx, trial_code):
        row = list_by_id(ctx, trial_code, overview.id)
        if row.method != "permuted_blocks":
            results.append(VerifyResult(row.label, True, 0, ()))
            continue
        seed = arm_access.open_list_seed(ctx, reader, trial_code, row.label, row.seed_sealed, "verify-list")
        opened = arm_access.open_list_slots(ctx, reader, trial_code, row.id, row.label, "verify-list")
        stored = opened.slots
        design = BlockDesign(
            arms=tuple(overview.parameters["arms"]),  # type: ignore[arg-type]
            ratio=tuple(overview.parameters["ratio"]),  # type: ignore[arg-type]
            block_sizes=tuple(overview.parameters["randomization"]["block_sizes"]),  # type: ignore[index]
        )
        problems: list[str] = [
            f"slot {where}: does not open (altered or moved)" for where in opened.unreadable
        ]
        by_stratum: dict[str, list[arm_access.OpenedSlot]] = {}
        for slot in stored:
            by_stratum.setdefault(slot.stratum, []).append(slot)
        for state in overview.strata:
            expected = list(
                islice(iter_slots_for(seed, design, trial_code, row.label, state.key), state.capacity)
            )
            actual = by_stratum.get(state.key, [])
            for want, have in zip(expected, actual, strict=False):
                if (want.position, want.arm, want.block, want.block_size) != (
                    have.position,
                    have.arm,
                    have.block,
                    have.block_size,
                ):
                    problems.append(
                        f"stratum {state.key}, position {have.position}: stored slot differs from the "
                        "regenerated list"
                    )
                    break
            if len(actual) != len(expected):
                problems.append(
                    f"stratum {state.key}: {len(actual)} slots stored, {len(expected)} regenerated"
                )
        for version in overview.versions:
            content = content_digest(seed, design, trial_code, row.label, stored, version.version)
            if content != version.content_sha256:
                problems.append(f"version {version.version}: content digest differs from the recorded one")
        with ctx.db.unit_of_work() as session:
            ctx.audit.record(
                session,
                actor=reader,
                chain=trial_code,
                action=Action.LIST_VERIFIED,
                object_type="randomization_list",
                object_id=row.label,
                # RND-12: list lengths and positions are design information: sealed.
                new={"ok": not problems, "problem_count": len(problems)},
                sealed={"slots": len(stored), "problems": problems[:20]},
                at=ctx.now(),
            )
        results.append(VerifyResult(row.label, not problems, len(stored), tuple(problems)))
    return results
