"""Extend an active list with more blocks under change control (RND-10): one unblinded
statistician proposes (signed), another approves (signed), which appends the blocks as a new
version in the approval's transaction; or the proposal is declined (or withdrawn by its author)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import (
    ListExtensionProposal,
    ListStatus,
    ListVersion,
    Notification,
    RandomizationList,
    Signature,
    Slot,
    Stratum,
    Trial,
)
from allocator.randomization import BlockDesign, generate_stratum
from allocator.randomization.blocks import ListRow, canonical_line
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from allocator.services.lists.storage import (
    RandomizationNumbers,
    insert_slots,
    list_signing,
    list_storage_digest,
    locked_list,
    require_intact,
    signed_content,
    slot_binding,
    slot_record,
    stratum_storage_digest,
)

EXTENSION_MEANING = "randomization list extension"


# --- extension under change control (RND-10, RND-11) ------------------------------------------

PROPOSAL_MEANING = "randomization list extension proposal"
PROPOSAL_STATUSES = ("pending", "applied", "declined")


class SecondSignerRequired(Conflict):
    slug = "second-signer-required"
    title = "A second person must approve the list extension"


def _require_extendable(row: RandomizationList) -> None:
    if row.status != ListStatus.ACTIVE.value or row.method != "permuted_blocks":
        raise Conflict(f"only an active permuted-block list can be extended ({row.label} is {row.status})")


def _pending(session: Session, row: RandomizationList) -> ListExtensionProposal | None:
    return session.execute(
        select(ListExtensionProposal).where(
            ListExtensionProposal.list_id == row.id, ListExtensionProposal.status == "pending"
        )
    ).scalar_one_or_none()


def _the_pending(session: Session, row: RandomizationList, proposal_id: int) -> ListExtensionProposal:
    """The list's pending proposal, which must be the one the signer saw (`proposal_id`): a proposal
    declined and proposed again under the approver's eyes has a new id, and the old one is refused."""
    pending = _pending(session, row)
    if pending is None:
        raise Conflict(
            f"{row.label} has no pending extension proposal",
            errors=[FieldProblem("proposal", "no pending proposal")],
        )
    if pending.id != proposal_id:
        raise Conflict(
            f"the pending extension proposal of {row.label} is #{pending.id}, not #{proposal_id}: reload the page",
            errors=[FieldProblem("proposal", f"the pending proposal is #{pending.id}")],
        )
    return pending


def propose_extension(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    list_id: int,
    *,
    additional: int,
    strata: Iterable[str] | None,
    reason: str,
    request: signatures.SignatureRequest,
) -> int:
    """Propose appending at least `additional` slots (whole blocks) to the given strata (all when
    None) of an ACTIVE list: the first of two signatures of the change control (RND-10). Nothing
    changes in the list until another person approves it (`approve_extension`). At most one
    proposal is pending per list. Signed, reasoned, audited (the size sealed: it hints at block
    sizes); the trial's unblinded statisticians are notified. Returns the proposal's id."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if not 1 <= additional <= 100_000:
        raise ValidationFailed("invalid size", errors=[FieldProblem("additional", "must be 1 to 100000")])
    wanted = sorted(set(strata)) if strata is not None else None
    result: list[int] = []

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = locked_list(session, trial_code, list_id)
            _require_extendable(row)
            pending = _pending(session, row)
            if pending is not None:
                raise Conflict(
                    f"extension proposal #{pending.id} of {row.label} is pending: approve or decline it first"
                )
            require_intact(ctx, session, row, version)
            known = set(session.execute(select(Stratum.key).where(Stratum.list_id == row.id)).scalars())
            unknown = sorted(set(wanted or ()) - known)
            if unknown:
                raise ValidationFailed(
                    "unknown stratum", errors=[FieldProblem("strata", f"no stratum {k}") for k in unknown]
                )
            content = {
                "label": row.label,
                "from_version": version.version,
                "additional": additional,
                "strata": wanted if wanted else "all",
                "reason": reason.strip(),
            }
            signature = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=request,
                meaning=PROPOSAL_MEANING,
                object_type="randomization_list",
                object_id=row.label,
                content=content,
                now=now,
            )
            proposal = ListExtensionProposal(
                list_id=row.id,
                from_version=version.version,
                additional=additional,
                strata=wanted,
                reason=reason.strip(),
                status="pending",
                proposed_at=now,
                proposed_by_id=actor.user_id,
                proposed_by_name=actor.name,
                proposal_signature_id=signature.id,
            )
            session.add(proposal)
            session.flush()
            session.add(
                Notification(
                    trial_id=trial.id,
                    site_id=None,
                    audience="unblinded_statistician",
                    kind="list_extension_proposed",
                    subject_number=None,
                    title=f"Extension of {row.label} to approve",
                    body=f"{actor.name} proposed extension #{proposal.id} of {row.label}: {reason.strip()}. "
                    "Another unblinded statistician must approve it (second signature) or decline it.",
                    created_at=now,
                )
            )
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.LIST_EXTENSION_PROPOSED,
                object_type="randomization_list",
                object_id=row.label,
                new={"proposal": proposal.id, "from_version": version.version, "signature": signature.id},
                sealed={"additional": additional, "strata": wanted if wanted else "all"},
                reason=reason.strip(),
                at=now,
            )
            result.append(proposal.id)

    list_signing(ctx, actor, trial_code, PROPOSAL_MEANING, str(list_id), work)
    return result[0]


def approve_extension(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    list_id: int,
    proposal_id: int,
    request: signatures.SignatureRequest,
) -> int:
    """The second signature of a list extension (RND-10), by anyone but its proposer: appends the
    proposed blocks as a new version, in this transaction. Used slots are never touched (the
    generator is prefix-stable). The approval's signed content names the proposal and the hash of
    its signature, so the second signature is bound to the first. Returns the new version number.

    Raises SecondSignerRequired when the proposer approves (the attempt is audited and committed),
    Conflict for a proposal that is not the pending one (declined, re-proposed, stale), a list
    changed since the proposal, ListIntegrityFailure, SignatureRefused (audited)."""
    result: list[int] = []
    refused: list[DomainError] = []

    def work() -> None:
        now = ctx.now()
        with ctx.db.unit_of_work() as session:
            trial, row, version = locked_list(session, trial_code, list_id)
            proposal = _the_pending(session, row, proposal_id)
            if actor.user_id is None or actor.user_id == proposal.proposed_by_id:
                ctx.audit.record(  # committed with this unit of work, then raised (below)
                    session,
                    actor=actor,
                    chain=trial.code,
                    action=Action.LIST_EXTENSION_REFUSED,
                    object_type="randomization_list",
                    object_id=row.label,
                    new={"proposal": proposal.id, "cause": SecondSignerRequired.slug},
                    at=now,
                )
                refused.append(
                    SecondSignerRequired(
                        f"you proposed extension #{proposal.id}: another unblinded statistician must approve it",
                        errors=[FieldProblem("proposal", "proposed by you")],
                    )
                )
                return
            _require_extendable(row)
            if version.version != proposal.from_version:
                raise Conflict(
                    f"{row.label} is at version {version.version}, the proposal extends version "
                    f"{proposal.from_version}: decline it and propose again"
                )
            require_intact(ctx, session, row, version)
            first = session.get(Signature, proposal.proposal_signature_id)
            if first is None:  # pragma: no cover - a foreign key guarantees it
                raise NotFound("no proposal signature")
            new_version = _append_blocks(
                ctx, session, actor, trial, row, version, proposal, first, request, now
            )
            proposal.status = "applied"
            proposal.decided_at = now
            proposal.decided_by_id = actor.user_id
            proposal.decided_by_name = actor.name
            proposal.applied_version = new_version
            result.append(new_version)

    list_signing(ctx, actor, trial_code, EXTENSION_MEANING, str(list_id), work)
    if refused:
        raise refused[0]
    return result[0]


def decline_extension(
    ctx: ServiceContext, actor: Actor, trial_code: str, list_id: int, proposal_id: int, *, reason: str
) -> None:
    """Decline (or, by its proposer, withdraw) the pending extension proposal of a list: reasoned
    and audited; the list does not change."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial, row, _ = locked_list(session, trial_code, list_id)
        proposal = _the_pending(session, row, proposal_id)
        proposal.status = "declined"
        proposal.decided_at = now
        proposal.decided_by_id = actor.user_id
        proposal.decided_by_name = actor.name
        proposal.decision_reason = reason.strip()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LIST_EXTENSION_DECLINED,
            object_type="randomization_list",
            object_id=row.label,
            old={"proposal": proposal.id, "status": "pending"},
            new={"proposal": proposal.id, "status": "declined"},
            reason=reason.strip(),
            at=now,
        )


def _append_blocks(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    row: RandomizationList,
    version: ListVersion,
    proposal: ListExtensionProposal,
    proposal_signature: Signature,
    request: signatures.SignatureRequest,
    now: datetime,
) -> int:
    """Append at least `proposal.additional` slots (whole blocks) to the proposal's strata (all
    when none) as a new version of the locked list, signed by the approver. Returns the version."""
    additional, reason = proposal.additional, proposal.reason
    wanted = set(proposal.strata or ()) or None
    parameters = json.loads(row.parameters_json)
    design = BlockDesign(
        arms=tuple(parameters["arms"]),
        ratio=tuple(parameters["ratio"]),
        block_sizes=tuple(parameters["randomization"]["block_sizes"]),
    )
    # Code-point order (docs/randomization.md §7), never the database's collation.
    all_strata = sorted(
        session.execute(select(Stratum).where(Stratum.list_id == row.id).with_for_update()).scalars(),
        key=lambda stratum: stratum.key,
    )
    # In this transaction: a second write transaction would wait for this one on SQLite.
    seed = arm_access.list_seed_in(session, ctx, actor, trial.code, row, "list extension")
    sealer = crypto.BulkSealer(ctx.ring, crypto.Purpose.LISTS)
    macer = crypto.SlotMacer(ctx.ring)
    numbers = RandomizationNumbers(
        session.execute(select(Slot.randomization_number).where(Slot.list_id == row.id)).scalars()
    )
    new_version = row.current_version + 1
    content = hashlib.sha256()
    added_total = 0
    for stratum in all_strata:
        target = (
            stratum.capacity + additional if wanted is None or stratum.key in wanted else stratum.capacity
        )
        sequence = list(
            generate_stratum(
                seed,
                design,
                trial_code=trial.code,
                list_label=row.label,
                stratum=stratum.key,
                min_slots=target,
            ).slots()
        )
        for slot in sequence:
            content.update(
                canonical_line(
                    ListRow(stratum.key, slot.position, slot.block, slot.block_size, slot.arm)
                ).encode()
            )
        fresh = [slot for slot in sequence if slot.position > stratum.capacity]
        rows = []
        for slot in fresh:
            sealed = sealer.seal_text(
                slot_record(slot.arm, slot.block, slot.block_size),
                slot_binding(trial.code, row.label, stratum.key, slot.position),
            )
            number = numbers.next()
            mac = macer.mac(trial.code, row.label, stratum.key, slot.position, number, sealed)
            rows.append((row.id, stratum.id, slot.position, new_version, number, sealed, mac))
        if rows:
            insert_slots(session, rows)
            stratum.capacity = len(sequence)
            stratum.storage_sha256 = stratum_storage_digest(session, stratum.id)
        added_total += len(fresh)
    storage = list_storage_digest((s.key, s.storage_sha256) for s in all_strata)
    slot_count = version.slot_count + added_total
    new = ListVersion(
        list_id=row.id,
        version=new_version,
        content_sha256=content.hexdigest(),
        storage_sha256=storage,
        slot_count=slot_count,
        reason=reason.strip(),
        created_at=now,
        created_by_id=actor.user_id,
        created_by_name=actor.name,
    )
    signature = signatures.sign(
        ctx,
        session,
        actor=actor,
        chain=trial.code,
        trial_id=trial.id,
        request=request,
        meaning=EXTENSION_MEANING,
        object_type="randomization_list",
        object_id=row.label,
        # The second signature names the first: the proposal and the hash of what its author signed.
        content={
            **signed_content(row, new),
            "added": added_total,
            "proposal": proposal.id,
            "proposal_signature_sha256": proposal_signature.content_sha256,
        },
        now=now,
    )
    new.signature_id = signature.id
    session.add(new)
    row.current_version = new_version
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.LIST_EXTENDED,
        object_type="randomization_list",
        object_id=row.label,
        old={"version": version.version},
        new={
            "version": new_version,
            "signature": signature.id,
            "storage_sha256": storage,
            "proposal": proposal.id,
            "proposed_by": proposal.proposed_by_name,
        },
        sealed={"added_slots": added_total, "strata": sorted(wanted) if wanted else "all"},
        reason=reason.strip(),
        at=now,
    )
    return new_version
