"""Domain errors. The web layer maps them to HTML pages or RFC 9457 problem documents in one place.

Messages never contain an arm, a seed, a slot position or a block size (BLD-01, RND-12): they are
shown to blinded users.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """A problem with one input field, named by its path (e.g. `eligibility.sofa_24h`)."""

    field: str
    message: str


class DomainError(Exception):
    status = 400
    slug = "bad-request"
    title = "The request cannot be processed"

    def __init__(self, detail: str, *, errors: Sequence[FieldProblem] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)

    @property
    def type_uri(self) -> str:
        return f"urn:allocator:problem:{self.slug}"


class ValidationFailed(DomainError):
    status = 422
    slug = "validation-error"
    title = "Some fields are invalid"


class Unauthenticated(DomainError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(DomainError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(DomainError):
    status = 409
    slug = "conflict"
    title = "Conflict with the current state"


class ObservationalStudy(Conflict):
    """Issue 20: a randomization-only action (randomizing, dispensing, unblinding, lists) asked of
    an observational study, which registers its patients and has no arm, list or drug kit."""

    slug = "observational-study"
    title = "This study registers its patients: it does not randomize them"


class TooManyRequests(DomainError):
    status = 429
    slug = "too-many-requests"
    title = "Too many attempts"


class DefinitionLocked(Conflict):
    slug = "definition-locked"
    title = "The trial definition cannot change this way"


class ReprintLimitReached(Conflict):
    slug = "reprint-limit"
    title = "No more reprints of this document"


class AlreadyExists(Conflict):
    slug = "already-exists"
    title = "Already exists"


# Free text typed into a form and kept in a Text column: a generous bound, so that no field can
# carry a document's worth of text into the audit trail (issue 19 review).
FREE_TEXT_MAX = 2000


def check_lengths(**fields: tuple[str, int]) -> None:
    """Refuse, naming every field, free text longer than its column (`field=(text, limit)`); the
    text is measured as it is kept, stripped."""
    problems = [
        FieldProblem(name, f"must be at most {limit} characters long")
        for name, (text, limit) in fields.items()
        if len(text.strip()) > limit
    ]
    if problems:
        raise ValidationFailed("some text is too long", errors=problems)


# C0 controls except tab, line feed and carriage return; DEL and C1 controls; surrogates (only ever
# lone in a Python str); the Unicode non-characters U+FDD0..U+FDEF and U+xFFFE/U+xFFFF.
_NONCHARACTERS = "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
_FORBIDDEN = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef{_NONCHARACTERS}]")


def bad_character(text: str) -> str | None:
    """A description of the first character `text` may not hold, or None when it is clean (a NUL,
    which PostgreSQL refuses in a text parameter, a control character, a lone surrogate)."""
    match = _FORBIDDEN.search(text)
    if match is None:
        return None
    return f"contains a character that is not allowed (U+{ord(match.group()):04X})"
