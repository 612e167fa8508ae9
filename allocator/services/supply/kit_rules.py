"""Rules every supply use case applies: the kit statuses and their lifecycle (`move_kit`: the one
way a kit changes status, with its history row), the kit binding and its MAC, a scanned kit
number, how long a kit must last."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Actor
from allocator.models import Kit, KitEvent, KitStatus
from allocator.models.kit import status_bit
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem
from allocator.settings import Environment
from allocator.trialdef import NotRandomized, TrialDefinition
from allocator.version import __version__

STATUSES = tuple(status.value for status in KitStatus)
KIT_UNIT = "K"  # the unit in the QR code of a kit's own label (printed before any day is known)

S = KitStatus
K = TypeVar("K")


def kit_binding(trial_code: str, kit_number: str) -> crypto.Binding:
    return crypto.Binding(trial=trial_code, table="kit", row=kit_number, column="sealed_arm")


def mac(ctx: ServiceContext) -> Callable[[bytes], bytes]:
    """The MAC of QR payloads (LBL-08), keyed by the instance's labels key."""
    return lambda message: crypto.label_mac(ctx.ring, message)


def label_info(definition: TrialDefinition, environment: Environment) -> kitlib.TrialLabelInfo:
    """The trial-level particulars of every label and sheet (EU CTR Annex VI; LBL-01, LBL-07)."""
    fr, en = definition.labels.fr, definition.labels.en
    if definition.eu_ct_number is None:  # pragma: no cover - a randomized definition always has one
        raise NotRandomized(definition.code, "EU CT number")
    return kitlib.TrialLabelInfo(
        trial_code=definition.code,
        sponsor_name=definition.sponsor.name,
        sponsor_address=definition.sponsor.address,
        main_contact_name=definition.sponsor.main_contact.name,
        main_contact_phone=definition.sponsor.main_contact.phone,
        emergency_phone=definition.sponsor.emergency_phone,
        eu_ct_number=definition.eu_ct_number,
        protocol_code=definition.sponsor_protocol_code,
        nct_number=definition.nct_number,
        short_title=definition.short_title,
        product_name=kitlib.Bilingual(fr=fr.product_name, en=en.product_name),
        pharmaceutical_form=kitlib.Bilingual(fr=fr.pharmaceutical_form, en=en.pharmaceutical_form),
        route=kitlib.Bilingual(fr=fr.route, en=en.route),
        quantity=kitlib.Bilingual(fr=fr.quantity, en=en.quantity),
        storage=kitlib.Bilingual(fr=fr.storage, en=en.storage),
        directions=kitlib.Bilingual(fr=fr.directions, en=en.directions),
        clinical_trial_use=kitlib.Bilingual(fr=fr.clinical_trial_use_only, en=en.clinical_trial_use_only),
        print_keep_out_of_reach=definition.labels.print_keep_out_of_reach,
        test_mode=environment is not Environment.PRODUCTION,
        software_version=__version__,
        immediate_omits_expiry=definition.labels.omit_expiry_immediate,
        outer_pack_carries_expiry=True,
    )


def needed_until(definition: TrialDefinition, today: date) -> date:
    """A kit allocated today (the site's calendar date) must not expire before the calendar day of
    the last dose plus the margin (LBL-05). A dose `offset_hours` after an allocation made late in
    the evening falls up to ceil(offset_hours / 24) calendar days later."""
    last_offset = max(day.offset_hours for day in definition.dispensing.schedule)
    return today + timedelta(days=-(-last_offset // 24) + definition.dispensing.expiry_margin_days)


def unreadable(exc: kitlib.KitsError) -> str:
    """What is wrong with a scan that is neither a label of this trial nor a kit number, in the plain
    words every scan field shows (issue 13): never the parser's technical message."""
    if isinstance(exc, kitlib.WrongTrialError):
        return "a label of another trial"
    if isinstance(exc, kitlib.WrongKitKindError):
        return "a sample kit's label, not a drug kit's"
    if isinstance(exc, kitlib.BadMacError):
        return "the label's security code is wrong: not printed by this service, or altered"
    if isinstance(exc, kitlib.KitNumberCheckDigitError):
        return "wrong check digit: scan or type the number again"
    return "unreadable: not a kit label or a kit number"


def number_from_scan(raw: str, trial_code: str, ctx: ServiceContext) -> str:
    """A typed kit number, or a scanned kit label (its MAC checked)."""
    text = raw.strip()
    if "/" in text:
        return kitlib.verify_payload(text, trial_code, mac(ctx)).kit_number
    return kitlib.normalize_kit_number(text)


# Manual changes a pharmacist or a supply manager may record; allocation, dispensing and
# administration move kits through their own workflows.
MANUAL_TRANSITIONS: dict[KitStatus, frozenset[KitStatus]] = {
    S.AT_DEPOT: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST, S.EXPIRED, S.DESTROYED}),
    S.IN_TRANSIT: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST}),
    S.AVAILABLE: frozenset({S.QUARANTINED, S.DAMAGED, S.LOST, S.EXPIRED, S.RETURNED, S.DESTROYED}),
    S.QUARANTINED: frozenset({S.AVAILABLE, S.DAMAGED, S.DESTROYED}),
    S.DISPENSED: frozenset({S.RETURNED, S.DAMAGED, S.LOST}),
    S.ADMINISTERED: frozenset({S.RETURNED, S.DESTROYED}),
    S.RETURNED: frozenset({S.DESTROYED}),
    S.DAMAGED: frozenset({S.DESTROYED}),
    S.EXPIRED: frozenset({S.DESTROYED}),
    S.ALLOCATED: frozenset(),  # lost or damaged allocated kits are replaced through the subject
    S.LOST: frozenset(),
    S.DESTROYED: frozenset(),
}
# ACC-12: putting a kit into or out of quarantine is a critical act, signed.
SIGNED_TARGETS = frozenset({S.QUARANTINED})
SIGNED_SOURCES = frozenset({S.QUARANTINED})

# The kit lifecycle: every status change a use case makes, and no other. Each step names the
# statuses a kit may be in when the step moves it. Some steps look at the dispensation or the
# shipment rather than at the kit, so they accept a kit whose status was changed by hand since;
# those edges are listed as they are (this table describes the service, it does not change it).
_CHANGED_AFTER_DISPENSING = frozenset({S.DISPENSED, S.RETURNED, S.DAMAGED, S.LOST, S.DESTROYED})
_IN_A_SHIPPED_SHIPMENT = frozenset(
    {S.IN_TRANSIT, S.QUARANTINED, S.DAMAGED, S.AVAILABLE, S.EXPIRED, S.RETURNED, S.DESTROYED}
)
# Issue 19: kits leaving a site's stock for good, scanned in batches (services/supply/disposal.py).
# A quarantined kit waits for the sponsor's decision; returned kits are destroyed at the depot.
RETURN_SOURCES = frozenset({S.AVAILABLE, S.DISPENSED, S.ADMINISTERED, S.DAMAGED, S.EXPIRED})
DESTRUCTION_SOURCES = frozenset({S.AVAILABLE, S.DISPENSED, S.ADMINISTERED, S.DAMAGED, S.EXPIRED})
KIT_STEPS: tuple[tuple[str, frozenset[KitStatus], frozenset[KitStatus]], ...] = (
    ("shipping", frozenset({S.AT_DEPOT}), frozenset({S.IN_TRANSIT})),
    ("receipt", frozenset({S.IN_TRANSIT}), frozenset({S.AVAILABLE})),
    ("receipt: a kit not scanned", _IN_A_SHIPPED_SHIPMENT, frozenset({S.LOST})),
    ("randomization, replacement kit", frozenset({S.AVAILABLE}), frozenset({S.ALLOCATED})),
    ("dispensing", frozenset({S.ALLOCATED}), frozenset({S.DISPENSED})),
    ("bedside scan", _CHANGED_AFTER_DISPENSING, frozenset({S.ADMINISTERED})),
    (
        "kit replacement",
        frozenset({S.ALLOCATED}) | _CHANGED_AFTER_DISPENSING,
        frozenset({S.LOST, S.DAMAGED, S.EXPIRED}),
    ),
    # issue 19: a kit quarantined in transit by a temperature excursion, released before receipt.
    ("excursion released in transit", frozenset({S.QUARANTINED}), frozenset({S.IN_TRANSIT})),
    *(("manual change", frozenset({source}), targets) for source, targets in MANUAL_TRANSITIONS.items()),
    ("return", RETURN_SOURCES, frozenset({S.RETURNED})),
    ("destruction", DESTRUCTION_SOURCES, frozenset({S.DESTROYED})),
)
LIFECYCLE: dict[KitStatus, frozenset[KitStatus]] = {
    status: frozenset(target for _, sources, targets in KIT_STEPS if status in sources for target in targets)
    for status in KitStatus
}


def move_kit(
    session: Session, kit: Kit, to_status: KitStatus, actor: Actor, reason: str, now: datetime
) -> None:
    """The one way a kit changes status (LBL-11): the change must be in the lifecycle, its
    history row (KitEvent) is written in the caller's transaction, then the status is set.
    Raises Conflict for a change the lifecycle does not hold. The randomization hot path allocates
    its kits with one bulk statement instead (subjects.randomize), a step listed here."""
    current = KitStatus(kit.status)
    if to_status not in LIFECYCLE[current]:
        raise Conflict(f"a {current.value} kit cannot become {to_status.value}")
    session.add(
        KitEvent(
            kit_id=kit.id,
            at=now,
            from_status=kit.status,
            to_status=to_status.value,
            site_id=kit.site_id,
            actor_id=actor.user_id,
            actor_name=actor.name,
            reason=reason,
        )
    )
    kit.status = to_status.value
    kit.ever_statuses = (kit.ever_statuses or 0) | status_bit(to_status.value)


LABEL_YEARS = (2000, 2099)  # the years a kit label prints (kits.model.Expiry)
UNPRINTABLE_EXPIRY = "must be in a year from 2000 to 2099, which the labels can print"


def expiry_problem(expiry: date) -> FieldProblem | None:
    """A batch expiry the labels could not print (a relabelling sheet or a label run would then
    fail), named as the `expiry` field; None when printable."""
    if LABEL_YEARS[0] <= expiry.year <= LABEL_YEARS[1]:
        return None
    return FieldProblem("expiry", UNPRINTABLE_EXPIRY)
