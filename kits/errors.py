"""Exception types of the `kits` library.

Every error is a `ValueError` (callers usually map them to HTTP 400) and carries a message that names the
problem in words a pharmacist or a nurse can act on, because these messages end up on screens at the
pharmacy counter and at the bedside (LBL-09).
"""

from __future__ import annotations


class KitsError(ValueError):
    """Base class of every error raised by the `kits` library."""


# --- kit numbers (LBL-09) -----------------------------------------------------------------------------


class KitNumberError(KitsError):
    """A typed or scanned kit number is not a valid kit number."""


class KitNumberLengthError(KitNumberError):
    """The kit number does not have the expected number of digits."""


class KitNumberCharacterError(KitNumberError):
    """The kit number contains something other than digits, spaces and hyphens."""


class KitNumberCheckDigitError(KitNumberError):
    """The check digit does not match: the number was mistyped or misread."""


class KitNumberSpaceExhaustedError(KitsError):
    """No unused kit number could be drawn: the trial uses too large a share of the number space."""


# --- QR payloads (LBL-08) -----------------------------------------------------------------------------


class PayloadError(KitsError):
    """A scanned QR payload was rejected."""


class MalformedPayloadError(PayloadError):
    """The text is not a kit-label payload of a known structure."""


class UnknownPayloadVersionError(PayloadError):
    """The payload announces a format version this software does not understand."""


class WrongTrialError(PayloadError):
    """The label belongs to another trial."""


class WrongKitKindError(PayloadError):
    """The label is of another kind of kit: a sample kit's tube set scanned where a drug kit is expected,
    or the reverse."""


class PayloadCheckDigitError(PayloadError, KitNumberCheckDigitError):
    """The kit number inside the payload has a wrong check digit."""


class BadMacError(PayloadError):
    """The authentication code does not match: the label was not issued by this service, or was altered."""


# --- label and sheet data ------------------------------------------------------------------------------


class LabelDataError(KitsError):
    """Label or sheet input data is missing, malformed or inconsistent."""


class UnrenderableTextError(LabelDataError):
    """A text contains a character that the standard PDF fonts cannot print."""


class LabelLayoutError(LabelDataError):
    """A text does not fit in the space the layout gives it (it would otherwise be cut off)."""
