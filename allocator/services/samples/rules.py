"""The one way a tube set changes status (issue 20): `move_sample_kit` checks the change against the
lifecycle, writes its history row (SampleKitEvent) in the caller's transaction, then sets the
status. Every use case (assignment, collection, lab shipment, receipt) calls it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from allocator.audit import Actor
from allocator.models import SampleKit, SampleKitEvent, SampleKitStatus
from allocator.services.errors import Conflict

T = SampleKitStatus

# available -> assigned -> collected -> shipped -> received | unusable; missed; damaged.
LIFECYCLE: dict[SampleKitStatus, frozenset[SampleKitStatus]] = {
    T.AVAILABLE: frozenset({T.ASSIGNED, T.DAMAGED}),
    T.ASSIGNED: frozenset({T.COLLECTED, T.MISSED}),
    T.COLLECTED: frozenset({T.SHIPPED, T.UNUSABLE}),
    T.SHIPPED: frozenset({T.RECEIVED, T.UNUSABLE}),
    T.RECEIVED: frozenset({T.UNUSABLE}),
    T.UNUSABLE: frozenset(),
    T.MISSED: frozenset(),
    T.DAMAGED: frozenset(),
}


def move_sample_kit(
    session: Session,
    kit: SampleKit,
    to_status: SampleKitStatus,
    actor: Actor,
    reason: str | None = None,
    at: datetime | None = None,
) -> None:
    """Move `kit` to `to_status` with its history row, in the caller's transaction.

    Raises Conflict for a change the lifecycle does not hold (nothing written)."""
    current = SampleKitStatus(kit.status)
    if to_status not in LIFECYCLE[current]:
        raise Conflict(f"a {current.value} tube set cannot become {to_status.value}")
    if at is None:  # pragma: no cover - every caller passes its clock's time
        raise ValueError("the time of the change is required")
    session.add(
        SampleKitEvent(
            sample_kit_id=kit.id,
            at=at,
            from_status=kit.status,
            to_status=to_status.value,
            actor_id=actor.user_id,
            actor_name=actor.name,
            reason=reason,
        )
    )
    kit.status = to_status.value
