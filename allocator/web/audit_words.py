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
from markupsafe import Markup, escape

from allocator import audit_labels
from allocator.permissions import ROLE_TITLES, Role
from allocator.web import messages


def action_label(code: str) -> str:
    """An action code's label in the page's language (an unknown code is shown as it is)."""
    return audit_labels.action_label(code, gettext)


# A value written as the code writes it (`serious_adverse_event`, `admin.trial_roles`,
# `code_break:check`, `site=P1;admission_cause=septic`): shown as code, on purpose, not as words.
_CODE = re.compile(r"^[\w.:;=/,-]*(?:[a-z0-9]_[a-z0-9]|[a-z]\.[a-z]|[a-z]:[a-z])[\w.:;=/,-]*$")


def key_label(key: str) -> str:
    """A recorded value's key as words in the page's language (audit_labels.KEY_LABELS)."""
    return audit_labels.key_label(key, gettext)


@dataclass(frozen=True, slots=True)
class Line:
    """One recorded value: its key as words, its value, and whether the value is code."""

    key: str
    value: str
    code: bool = False


# A code inside a sentence: `serious_adverse_event`, `admin.trial_roles`, `wrong-kit` is not one.
_CODE_IN_TEXT = re.compile(r"(?<![\w.])[A-Za-z][\w.:-]*(?:[a-z0-9]_[a-z0-9]|[a-z]\.[a-z])[\w.:-]*(?<![.:-])")


def code_marked(text: object) -> Markup:
    """A report cell, escaped, with the codes it holds (recorded values that have no words, a
    stratification factor's code) marked as code, as the audit trail shows them."""
    escaped = str(escape(str(text)))
    return Markup(_CODE_IN_TEXT.sub(lambda m: f"<code>{m.group(0)}</code>", escaped))  # noqa: S704 - escaped above


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
