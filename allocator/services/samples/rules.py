"""Rules every sample-kit use case applies (issue 20): the tube-set lifecycle and `move_sample_kit`,
the one way a tube set changes status, with its history row; a scanned tube-set label.

A tube set moves: available -> assigned (registration) -> collected (bedside scan) -> shipped ->
received at the central lab; an assigned one may be missed (its sample not taken in its window), and
a missed one assigned again when that was a mistake (the record withdrawn, with a reason); an
available one damaged at the site, a collected, shipped or received one found unusable."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Actor
from allocator.models import SampleKit, SampleKitEvent, SampleKitStatus
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict
from allocator.services.supply.kit_rules import mac  # the drug labels' key: the unit tells the kinds apart

S = SampleKitStatus
SET_UNIT = kitlib.sample_unit(0)  # the tube set's own label (S-00); its tubes are S-01 ...

# Every status change a use case makes, and no other.
LIFECYCLE: dict[SampleKitStatus, frozenset[SampleKitStatus]] = {
    S.AVAILABLE: frozenset({S.ASSIGNED, S.DAMAGED}),
    S.ASSIGNED: frozenset({S.COLLECTED, S.MISSED}),
    S.COLLECTED: frozenset({S.SHIPPED, S.UNUSABLE}),
    S.SHIPPED: frozenset({S.RECEIVED, S.UNUSABLE}),
    S.RECEIVED: frozenset({S.UNUSABLE}),
    S.UNUSABLE: frozenset(),
    S.MISSED: frozenset({S.ASSIGNED}),  # recorded missed by mistake: withdrawn, with a reason
    S.DAMAGED: frozenset(),
}


def move_sample_kit(
    session: Session,
    kit: SampleKit,
    to_status: SampleKitStatus,
    actor: Actor,
    reason: str | None = None,
    at: datetime | None = None,
) -> None:
    """The one way a tube set changes status: the change must be in the lifecycle; its history row
    (SampleKitEvent) is added to the caller's session, in the caller's transaction, then the status
    is set. `at` is the caller's clock's time (required: the default only keeps the shared signature).
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


def unreadable(exc: kitlib.KitsError) -> str:
    """What is wrong with a scan that is not a tube-set label of this study, in plain words."""
    if isinstance(exc, kitlib.WrongTrialError):
        return "a label of another trial"
    if isinstance(exc, kitlib.WrongKitKindError):
        return "a drug kit's label, not a tube set's"
    if isinstance(exc, kitlib.BadMacError):
        return "the label's security code is wrong: not printed by this service, or altered"
    if isinstance(exc, kitlib.KitNumberCheckDigitError):
        return "wrong check digit: scan or type the number again"
    return "unreadable: not a tube set's label or number"


def number_from_scan(raw: str, trial_code: str, ctx: ServiceContext) -> str:
    """A typed tube-set number, or a scanned label of the set or of any of its tubes (MAC checked;
    a drug kit's label is refused with WrongKitKindError)."""
    text = raw.strip()
    if "/" in text:
        return kitlib.verify_payload(text, trial_code, mac(ctx), kind=kitlib.KitKind.SAMPLE).kit_number
    return kitlib.normalize_kit_number(text)
