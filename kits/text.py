"""Checks that label and sheet texts can be printed with the standard PDF fonts.

The PDFs use only the standard Type-1 Helvetica family, which is not embedded and is encoded with
WinAnsiEncoding (Windows-1252). A character outside that code page would be printed as a wrong glyph, a
box or nothing at all, silently changing a mandatory label particular (LBL-01/LBL-04). So every input
text is checked and a character that cannot be printed is an error that names the field and the
character, and suggests a printable spelling where there is a common one.
"""

from __future__ import annotations

import unicodedata

from kits.errors import LabelDataError, UnrenderableTextError

# Frequent non-Windows-1252 characters in pharmaceutical texts, with a printable spelling to suggest.
_SUGGESTIONS = {
    "\u2070": "^0",
    "\u2074": "^4",
    "\u2075": "^5",
    "\u2076": "^6 (e.g. '2 x 10^6 UI' or '2 000 000 UI')",
    "\u2077": "^7",
    "\u2078": "^8",
    "\u2079": "^9",
    "\u2212": "'-' (hyphen-minus)",
    "\u2264": "'<='",
    "\u2265": "'>='",
    "\u2009": "an ordinary space",
    "\u202f": "an ordinary or non-breaking space",
    "\u2011": "'-' (hyphen-minus)",
    "\u03b3": "'gamma'",
    "\u03bc": "'\u00b5' (micro sign) or 'micro'",
}


def check_printable(value: str, field: str) -> str:
    """Return `value` unchanged if every character can be printed, else raise `UnrenderableTextError`."""
    if not isinstance(value, str):
        raise LabelDataError(f"{field} must be text, not {type(value).__name__}")
    for position, char in enumerate(value, start=1):
        category = unicodedata.category(char)
        # Control and format characters (line breaks, tabs, zero-width or bidi marks, soft hyphens)
        # would be drawn as boxes or not at all; layout is the renderer's job, not the data's.
        if category in {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}:
            name = unicodedata.name(char, "control character")
            raise UnrenderableTextError(
                f"{field}: character U+{ord(char):04X} ({name}) at position {position} cannot be printed; "
                "remove it"
            )
        try:
            char.encode("cp1252")
        except UnicodeEncodeError:
            name = unicodedata.name(char, "unnamed character")
            if unicodedata.combining(char):
                advice = "; the text is not NFC-normalised: normalise it (unicodedata.normalize('NFC', ...))"
            elif char in _SUGGESTIONS:
                advice = f"; write {_SUGGESTIONS[char]} instead"
            else:
                advice = ""
            raise UnrenderableTextError(
                f"{field}: character {char!r} (U+{ord(char):04X} {name}) at position {position} is not "
                f"in Windows-1252 and cannot be printed with the standard PDF fonts{advice}"
            ) from None
    return value


def check_required(value: str, field: str, max_length: int = 500) -> str:
    """A printable, non-blank text of at most `max_length` characters."""
    check_printable(value, field)
    if not value.strip():
        raise LabelDataError(f"{field} is required and must not be blank")
    if value != value.strip():
        raise LabelDataError(f"{field} must not start or end with spaces")
    if len(value) > max_length:
        raise LabelDataError(f"{field} is {len(value)} characters long; at most {max_length} are allowed")
    return value


def check_optional(value: str | None, field: str, max_length: int = 500) -> str | None:
    """Like `check_required`, but `None` is allowed (the field is printed as a blank line to fill in)."""
    return None if value is None else check_required(value, field, max_length)
