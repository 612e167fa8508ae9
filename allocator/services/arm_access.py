"""The single path to an arm (BLD-08): every function that opens an arm, a kit -> arm entry or a
sealed audit value lives here, and each writes an `arm.read` audit entry — who, when, what, why —
in the same unit of work *before* returning anything. A static test fails if any other module
calls `crypto.open_arm` or opens LISTS-sealed JSON.

Blinded roles never reach these functions: callers hold an unblinded permission, checked by the
route guard, and pass the reader as the audit actor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import AuditEvent
from allocator.services.context import ServiceContext


def open_audit_values(
    ctx: ServiceContext, reader: Actor, chain: str, events: Sequence[AuditEvent]
) -> dict[int, dict[str, Any]]:
    """Open the sealed values of audit entries for an unblinded viewer (AUD-05). One `arm.read`
    entry records which entries were opened."""
    opened: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.sealed_values is None:
            continue
        binding = crypto.Binding(
            trial=chain, table="audit_event", row=f"{chain}:{event.seq}", column="sealed_values"
        )
        value = crypto.open_json(ctx.ring, crypto.Purpose.LISTS, event.sealed_values, binding)
        opened[event.seq] = value if isinstance(value, dict) else {"value": value}
    if opened:
        with ctx.db.unit_of_work() as session:
            ctx.audit.record(
                session,
                actor=reader,
                chain=chain,
                action=Action.ARM_READ,
                object_type="audit_event",
                object_id=",".join(str(seq) for seq in sorted(opened))[:64],
                new={"entries": sorted(opened), "purpose": "unblinded audit-trail view"},
                at=ctx.now(),
            )
    return opened
