"""Rules every supply use case applies: the kit statuses, the
kit binding and its MAC, a scanned kit number, the kit history row, how long a kit must last."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import TypeVar

from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Actor
from allocator.models import Kit, KitEvent, KitStatus
from allocator.services.context import ServiceContext
from allocator.settings import Environment
from allocator.trialdef import TrialDefinition
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


def kit_event(
    session: Session,
    kit: Kit,
    to_status: KitStatus,
    actor: Actor,
    reason: str,
    now: datetime,
    *,
    from_status: str | None,
) -> None:
    session.add(
        KitEvent(
            kit_id=kit.id,
            at=now,
            from_status=from_status,
            to_status=to_status.value,
            site_id=kit.site_id,
            actor_id=actor.user_id,
            actor_name=actor.name,
            reason=reason,
        )
    )
    kit.status = to_status.value


def needed_until(definition: TrialDefinition, today: date) -> date:
    """A kit allocated today (the site's calendar date) must not expire before the calendar day of
    the last dose plus the margin (LBL-05). A dose `offset_hours` after an allocation made late in
    the evening falls up to ceil(offset_hours / 24) calendar days later."""
    last_offset = max(day.offset_hours for day in definition.dispensing.schedule)
    return today + timedelta(days=-(-last_offset // 24) + definition.dispensing.expiry_margin_days)


def number_from_scan(raw: str, trial_code: str, ctx: ServiceContext) -> str:
    """A typed kit number, or a scanned kit label (its MAC checked)."""
    text = raw.strip()
    if "/" in text:
        return kitlib.verify_payload(text, trial_code, mac(ctx)).kit_number
    return kitlib.normalize_kit_number(text)
