"""The audit trail in plain words (issue 13 point 9): each action code as a label in the reader's
language (the code stays beside it, smaller, for whoever searches the logs), and the recorded
values as "key: value" lines instead of JSON.

The audit rows themselves keep their codes and JSON; only the screens read them through here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask_babel import gettext

from allocator.audit import Action
from allocator.permissions import ROLE_TITLES, Role
from allocator.web import messages
from allocator.web.messages import N_

ACTION_LABELS: Mapping[Action, str] = {
    Action.USER_CREATED: N_("Account created"),
    Action.USER_UPDATED: N_("Account changed"),
    Action.USER_DEACTIVATED: N_("Account deactivated"),
    Action.USER_REACTIVATED: N_("Account reactivated"),
    Action.PASSWORD_SET: N_("One-time password issued"),
    Action.PASSWORD_CHANGED: N_("Password changed"),
    Action.TOTP_ENROLLED: N_("Authenticator enrolled"),
    Action.TOTP_RESET: N_("Authenticator removed"),
    Action.LOGIN: N_("Signed in"),
    Action.LOGIN_FAILED: N_("Sign-in refused"),
    Action.LOCKED_OUT: N_("Account locked after failed attempts"),
    Action.LOGOUT: N_("Signed out"),
    Action.SESSION_EXPIRED: N_("Session expired"),
    Action.SESSION_TERMINATED: N_("Session ended by an administrator"),
    Action.PERMISSION_DENIED: N_("Access refused"),
    Action.ROLE_GRANTED: N_("Role granted"),
    Action.ROLE_REVOKED: N_("Role revoked"),
    Action.TOKEN_CREATED: N_("API token created"),
    Action.TOKEN_REVOKED: N_("API token revoked"),
    Action.SIGNATURE_APPLIED: N_("Electronic signature"),
    Action.SIGNATURE_FAILED: N_("Electronic signature refused"),
    Action.TRIAL_CREATED: N_("Trial created"),
    Action.DEFINITION_LOADED: N_("Trial definition loaded"),
    Action.SITE_CREATED: N_("Site created"),
    Action.SITE_UPDATED: N_("Site changed"),
    Action.SITE_ACTIVATED: N_("Site activated"),
    Action.SITE_CLOSED: N_("Site closed"),
    Action.LIST_GENERATED: N_("Randomization list generated"),
    Action.LIST_APPROVED: N_("Randomization list approved"),
    Action.LIST_ACTIVATED: N_("Randomization list activated"),
    Action.LIST_EXTENSION_PROPOSED: N_("List extension proposed"),
    Action.LIST_EXTENSION_DECLINED: N_("List extension declined"),
    Action.LIST_EXTENSION_REFUSED: N_("List extension refused"),
    Action.LIST_EXTENDED: N_("Randomization list extended"),
    Action.LIST_RETIRED: N_("Randomization list retired"),
    Action.LIST_VERIFIED: N_("Randomization list verified"),
    Action.LIST_EXPORTED: N_("Randomization list exported"),
    Action.LIST_INTEGRITY_FAILED: N_("Randomization list integrity check failed"),
    Action.TRIAL_STATUS_CHANGED: N_("Trial status changed"),
    Action.KIT_LIST_CREATED: N_("Kit list created"),
    Action.SHIPMENT_PREPARED: N_("Shipment prepared"),
    Action.SHIPMENT_SHIPPED: N_("Shipment sent"),
    Action.SHIPMENT_RECEIVED: N_("Shipment received"),
    Action.KIT_STATUS_CHANGED: N_("Kit status changed"),
    Action.BATCH_EXPIRY_CHANGED: N_("Batch expiry changed"),
    Action.RESUPPLY_IMPOSSIBLE: N_("Site cannot be resupplied"),
    Action.DOCUMENT_PRINTED: N_("Document printed"),
    Action.SCREENING_FAILED: N_("Screening: not eligible"),
    Action.SUBJECT_RANDOMIZED: N_("Subject randomized"),
    Action.SUBJECT_FLAGGED_IN_ERROR: N_("Subject flagged as randomized in error"),
    Action.SUBJECT_STRATUM_CORRECTED: N_("Stratum corrected"),
    Action.SUBJECT_WITHDRAWN: N_("Subject withdrawn"),
    Action.KIT_REPLACED: N_("Kit replaced"),
    Action.KITS_DISPENSED: N_("Kits dispensed"),
    Action.DISPENSING_REFUSED: N_("Dispensing refused"),
    Action.PREPARATION_READ: N_("Preparation instruction read"),
    Action.ADMINISTRATION_RECORDED: N_("Dose given"),
    Action.SCAN_REFUSED: N_("Bedside scan refused"),
    Action.UNBLINDING_EMERGENCY: N_("Emergency unblinding"),
    Action.UNBLINDING_PV: N_("Pharmacovigilance unblinding"),
    Action.UNBLINDING_RESULT_SHOWN: N_("Unblinding result shown"),
    Action.UNBLINDING_OFFLINE: N_("Offline unblinding registered"),
    Action.UNBLINDING_REFUSED: N_("Unblinding refused"),
    Action.UNBLINDING_RATE_ALERT: N_("Alert: many unblindings"),
    Action.UNBLINDING_ACCIDENTAL: N_("Accidental unblinding reported"),
    Action.CODE_BREAK_GENERATED: N_("Code-break sheets generated"),
    Action.CODE_BREAK_CHECKED: N_("Code-break sheet checked"),
    Action.INTERIM_PACKAGE_RELEASED: N_("Interim analysis package released"),
    Action.UNBLINDED_LISTING_RELEASED: N_("Unblinded listing released"),
    Action.REPORT_EXPORTED: N_("Report exported"),
    Action.AUDIT_CHECKPOINT: N_("Audit checkpoint signed"),
    Action.AUDIT_EXPORTED: N_("Audit trail exported"),
    Action.ARM_READ: N_("Allocation read"),
    Action.AUDIT_REVIEWED: N_("Audit trail review signed"),
    Action.TRIAL_EXPORTED: N_("Trial data exported"),
    Action.TRIAL_ARCHIVED: N_("Trial archived"),
    Action.RESTORE_DRILL: N_("Restore drill"),
}


def action_label(code: str) -> str:
    """An action code's label in the page's language (an unknown code is shown as it is)."""
    try:
        return gettext(ACTION_LABELS[Action(code)])
    except (ValueError, KeyError):
        return code


# A value written as the code writes it (`serious_adverse_event`, `admin.trial_roles`,
# `code_break:check`, `site=P1;admission_cause=septic`): shown as code, on purpose, not as words.
_CODE = re.compile(r"^[\w.:;=/,-]*(?:[a-z0-9]_[a-z0-9]|[a-z]\.[a-z]|[a-z]:[a-z])[\w.:;=/,-]*$")


def key_label(key: str) -> str:
    """A recorded value's key as words: `screening_number` -> `screening number`."""
    return key.replace("_", " ").replace(".", " · ").strip()


@dataclass(frozen=True, slots=True)
class Line:
    """One recorded value: its key as words, its value, and whether the value is code."""

    key: str
    value: str
    code: bool = False


def looks_like_code(value: object) -> bool:
    return isinstance(value, str) and bool(_CODE.match(value))


def _word(value: str) -> str | None:
    """A recorded code or English text in the reader's words, None when it has none."""
    try:
        return gettext(ROLE_TITLES[Role(value)])
    except ValueError:
        pass
    shown = messages.word(value)
    if shown != value:
        return shown
    translated = messages.translate(value, {})
    if translated is not None:
        return translated
    translated = gettext(value)  # a sentence of the catalogue (a signature's meaning, a purpose)
    return translated if translated != value else None


def _value(value: Any) -> tuple[str, bool]:
    if value is None:
        return "—", False
    if isinstance(value, bool):
        return (gettext("yes") if value else gettext("no")), False
    if isinstance(value, list | tuple):
        items = [_value(item) for item in value]
        return ", ".join(p for p, _ in items) or "—", any(code for _, code in items)
    if isinstance(value, dict):
        pairs = [(key_label(str(k)), _value(v)) for k, v in value.items()]
        text = "; ".join(f"{k}{gettext(': ')}{v}" for k, (v, _) in pairs)
        return text or "—", any(code for _, (_, code) in pairs)
    text = str(value)
    word = _word(text)
    if word is not None:
        return word, False
    return text, looks_like_code(text)


def detail_lines(values: Mapping[str, Any] | None) -> list[Line]:
    """The recorded values as key: value lines, nested values flattened into readable text, with
    no JSON and no escaped characters; a value that is code is marked so."""
    if not values:
        return []
    return [Line(key_label(str(key)), *_value(value)) for key, value in values.items()]
