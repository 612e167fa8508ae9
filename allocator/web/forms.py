"""What every blueprint does with a form: read its fields, read a signature, and show what was
wrong in plain words beside each field, in the reader's language (issue 12 point 2, issue 13).

A refused form either renders again at once (the page keeps what was typed) or, when it was posted
from another page, goes back there through a redirect (Post/Redirect/Get): `remember` keeps the
errors and the typed values (never a password or a code) in the session for that one next view of
the page, where `recall` takes them back.

The services speak the code's language (`eligibility.sofa_24h: must be a whole number (RND-07)`),
which the audit trail and the logs keep; `plain` turns it into the words of the screen: the field is
named as the form labels it, requirement ids and lists of internal codes are dropped, and the
message is translated (allocator/web/messages.py holds the known service messages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response as JsonResponse
from flask import flash, jsonify, redirect, request, session, url_for
from flask_babel import gettext
from werkzeug.wrappers import Response

from allocator.services import signatures
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed, bad_character
from allocator.web import hygiene, messages

# Never carried across a redirect, never shown back.
SECRET_FIELDS = frozenset({"password", "otp", "current", "new", "confirm", "csrf_token", "code"})
_REQUIREMENT_ID = re.compile(r"\s*\((?:[A-Z]{2,4}-\d{2,3})(?:[,;/ ]+[A-Z]{2,4}-\d{2,3})*\)")
_INLINE_REQUIREMENT = re.compile(r"\s*\b[A-Z]{2,4}-\d{2,3}\b:?")
_CODE_LIST = re.compile(r"\s*\((?:one of|YYYY-MM-DD)[^)]*\)")
_CODE_FIELD = re.compile(r"\b[a-z_]+\.[a-z0-9_]+\b: ?")
_FORM_KEY = "forms"


def text(name: str) -> str:
    """A text field, trimmed ("" when absent)."""
    return (request.form.get(name) or "").strip()


def local_moment(name: str, zone: str) -> datetime | None:
    """A date-and-time field typed in the ward's local time (`zone`), as UTC; None when empty.
    Raises ValidationFailed naming the field for anything that is not a moment of this era (a year
    0001 overflowed the conversion to UTC: a 500, found by the review of the cohort), and for a time
    in the hour skipped when the clocks go forward. A time of the hour repeated when they go back is
    the first of the two (summer time), as the ward's clocks showed it first."""
    raw = text(name)
    if not raw:
        return None
    try:
        local = datetime.fromisoformat(raw)
        if not 2000 <= local.year <= 2999:
            raise ValueError(raw)
        if local.tzinfo is None:
            typed = local
            local = local.replace(tzinfo=ZoneInfo(zone))  # the form's time is the ward's local time
            if local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None) != typed:
                # In the hour skipped when the clocks go forward: no clock on the ward showed it.
                raise ValidationFailed(
                    "time skipped by the change to summer time",
                    errors=[FieldProblem(name, "this time did not exist that day: the clocks went forward")],
                )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed("invalid time", errors=[FieldProblem(name, "date and time")]) from None


def signature() -> signatures.SignatureRequest:
    """The e-signature fields of the form (password and, for roles that need it, the code). An
    empty password is passed on: the service refuses it with a message naming the field."""
    return signatures.SignatureRequest(
        password=request.form.get("password") or "", totp=request.form.get("otp") or None
    )


def optional_signature() -> signatures.SignatureRequest | None:
    """The e-signature when the form was signed, else None: for the actions that a signature
    upgrades but does not require (the service decides whether one is needed)."""
    return signature() if request.form.get("password") else None


@dataclass(frozen=True, slots=True)
class ShownError:
    """One error as the screen shows it: the field's id, its label and the message."""

    field: str
    label: str
    message: str

    @property
    def line(self) -> str:
        separator = gettext(": ")  # French sets the colon apart: "Motif : obligatoire"
        return f"{self.label}{separator}{self.message}" if self.label else self.message


@dataclass(frozen=True, slots=True)
class FormState:
    """A form's errors and typed values, for rendering it again."""

    summary: str = ""
    errors: tuple[ShownError, ...] = ()
    values: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.summary or self.errors)

    def error(self, name: str) -> str:
        """The message beside field `name` ("" when it is right)."""
        return " ".join(e.message for e in self.errors if e.field == name)

    def value(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(e.field for e in self.errors)


def plain(message: str, names: Mapping[str, str] | None = None) -> str:
    """A service message in the words of the screen and the reader's language."""
    cleaned = _CODE_LIST.sub("", _REQUIREMENT_ID.sub("", message)).strip()
    cleaned = _INLINE_REQUIREMENT.sub("", cleaned).strip()
    translated = messages.translate(cleaned, names or {})
    if translated is None:
        translated = _CODE_FIELD.sub("", cleaned)
    return translated  # the style sheet capitalises the first letter; the text stays the service's


def shown(
    exc: DomainError, labels: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None
) -> FormState:
    """The errors of `exc` as a form shows them; `labels` maps field names to their labels on the
    form (a field without a label is named by nothing rather than by its code name)."""
    labels = labels or {}
    errors = tuple(
        ShownError(problem.field, str(labels.get(problem.field, "")), plain(problem.message, names))
        for problem in exc.errors
    )
    return FormState(summary=plain(exc.detail, names), errors=errors, values=typed_values())


def typed_values() -> dict[str, str]:
    return {key: value for key, value in request.form.items() if key not in SECRET_FIELDS}


def problems(state: FormState) -> Iterable[FieldProblem]:
    return (FieldProblem(e.field, e.message) for e in state.errors)


def remember(form_id: str, state: FormState) -> None:
    """Keep a refused form's errors and values for the next view of the page (PRG)."""
    stored = dict(session.get(_FORM_KEY) or {})
    stored[form_id] = {
        "summary": state.summary,
        "errors": [[e.field, e.label, e.message] for e in state.errors],
        "values": dict(state.values),
    }
    session[_FORM_KEY] = stored


def recall(form_id: str) -> FormState:
    """The errors and values that `remember` kept for `form_id`, once; empty if none."""
    stored = dict(session.get(_FORM_KEY) or {})
    kept = stored.pop(form_id, None)
    if kept is None:
        return FormState()
    session[_FORM_KEY] = stored
    return FormState(
        summary=str(kept.get("summary", "")),
        errors=tuple(ShownError(str(f), str(label), str(m)) for f, label, m in kept.get("errors", [])),
        values={str(k): str(v) for k, v in (kept.get("values") or {}).items()},
    )


def flash_error(exc: DomainError, labels: Mapping[str, str] | None = None) -> None:
    """For actions whose page has no form to mark: the error as one flash message, in plain words.

    Without `labels` (the supply pages, whose scan fields are being reworked) each field is still
    named by its code name, as those pages showed it so far."""
    state = shown(exc, labels if labels is not None else {p.field: p.field for p in exc.errors})
    details = "; ".join(e.line for e in state.errors[:10])
    flash(f"{state.summary} ({details})" if details else state.summary, "error")


def back_to_list(endpoint: str, trial: str, kept: Mapping[str, Callable[[str], bool]]) -> str:
    """The page of a paged list an action was taken from (issue 21): the list's filters and cursor
    ride along with the action's form as hidden fields, so that after the action the reader is
    back on the page they were working through, not on the newest unfiltered one. A value that
    fails its check in `kept` (one the list would refuse) is left out: an action that succeeded
    never lands on a refusal."""
    values: dict[str, Any] = {}
    for name, acceptable in kept.items():
        value = (request.form.get(name) or "").strip()
        if value and not bad_character(value) and acceptable(value):
            values[name] = value
    return url_for(endpoint, trial=trial, **values, _anchor="list")


def page_links(
    endpoint: str,
    trial: str,
    *,
    next_before: str | None,
    before: str | None,
    kept: Mapping[str, str | None],
    anchor: str = "list",
) -> dict[str, str | None]:
    """The links of a list paged newest first (issue 21), for its template: `older`, the next page
    (None on the last), and `newest`, back to the first (None when on it); both keep the list's
    filters (`kept`, the values given)."""
    shown: dict[str, Any] = {name: value for name, value in kept.items() if value}
    return {
        "older": url_for(endpoint, trial=trial, before=next_before, **shown, _anchor=anchor)
        if next_before
        else None,
        "newest": url_for(endpoint, trial=trial, **shown, _anchor=anchor) if before else None,
    }


def perform(
    action: Callable[[], object],
    success: str,
    target: str,
    form_id: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Response:
    """Run one service call for a form, then go to `target` (Post/Redirect/Get): on success with
    the message `success`; on a refusal with the errors beside the fields of form `form_id` on that
    page and what was typed kept (flashed at the top, in plain words, when there is no such form or
    the refusal is about no field)."""
    try:
        action()
    except DomainError as exc:
        if form_id is None or not exc.errors:
            flash_error(exc, labels)
        else:
            remember(f"{target.split('#', maxsplit=1)[0]}#{form_id}", shown(exc, labels))
            return redirect(f"{target.split('#', maxsplit=1)[0]}#{form_id}", code=303)
    else:
        flash(success, "ok")
    return redirect(target, code=303)


def recall_for(path: str, form_id: str) -> FormState:
    """What `perform` kept for form `form_id` of the page at `path`."""
    return recall(f"{path}#{form_id}")


def scanned(name: str) -> str:
    """A scan sent to a check endpoint (issue 13): a JSON body or a form field, trimmed. A body that
    is not a small JSON object, or a value holding a character no label holds (a NUL, a lone
    surrogate, which the database driver cannot encode: a server error), is no scan ("")."""
    body = hygiene.small_json_object() if request.is_json else None
    value = body.get(name) if body is not None else request.form.get(name)
    if not isinstance(value, str) or bad_character(value):
        return ""
    return value.strip()


def scan_verdict(
    field_id: str,
    check: Callable[[], object],
    labels: Mapping[str, str] | None = None,
    ok_message: str = "",
    notes: Callable[[object], list[str]] | None = None,
) -> JsonResponse:
    """The answer of a scan-check endpoint (issue 13), as JSON for the page's script (static/scan.js):
    `ok`, and `message`, what is wrong with the scan of field `field_id` in plain words and the
    reader's language (the service's words: never an arm). `notes` (for a right scan) are
    warnings to show beside it. The service records the refusals it audits; nothing else."""
    try:
        outcome = check()
    except DomainError as exc:
        state = shown(exc, labels)
        message = state.error(field_id) or "; ".join(e.line for e in state.errors) or state.summary
        return jsonify(ok=False, field=field_id, message=message)
    return jsonify(ok=True, field=field_id, message=ok_message, notes=notes(outcome) if notes else [])
