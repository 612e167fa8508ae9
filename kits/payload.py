"""QR payloads of kit labels (LBL-08, LBL-09).

Format, version 1::

    AL1/<trial code>/<kit number>/<unit>/<tag>
    AL1/APHP220672/12345678/D1/K4ZQ7M2V3XW5PA6B

* ``AL1``: format tag and version. A label printed by a later version is recognised as such instead of
  being misread.
* trial code: 2-20 characters ``A-Z 0-9 -`` (20 is also the limit of GS1 AI 7240 "protocol ID"), so a
  label of another trial is refused with a clear message, not as a "bad signature".
* kit number: the 8-digit canonical form (check digit included), never the display form.
* unit: what the label is stuck on, and so which kind of kit it belongs to:

  - a drug kit: 1-4 characters ``A-Z 0-9``, the injection day of the unit (``D1``, ``D2``, ``D3``) - a
    property of the schedule, identical for both arms - or the kit's own label;
  - a sample kit (the pre-labelled tube set of an observational cohort, issue 20): ``S-`` and two
    digits, ``S-00`` for the set's own label and ``S-01`` ... ``S-99`` for its tubes.

  The hyphen can never be in a drug unit, so a sample kit's label can never be taken for a drug kit's
  (nor the reverse) even where both kinds share a trial code: `verify_payload` is told which kind the
  scan expects and refuses the other with `WrongKitKindError`.
* tag: the first 80 bits of a MAC over everything before it, in RFC 4648 base32 without padding
  (exactly 16 characters).

Why this shape:

* Every character belongs to the QR alphanumeric set (0-9, A-Z, space, $ % * + - . / :), so the encoder
  uses alphanumeric mode (5.5 bits per character instead of 8): 43 characters fit a version-3 symbol
  (29 x 29 modules) at error-correction level Q. Base32 (A-Z, 2-7) is used for the tag because base64 and
  hex-lowercase are not in that set.
* BLD-01/BLD-03/LBL-08: the payload has no arm, no personal data and no randomisation slot; every field
  has a fixed length within a trial, so the payloads of all kits of a trial have the same length and
  structure and give QR symbols of the same version.
* The tag makes forged or altered labels detectable at the bedside. 80 bits are ample for an online check
  (an attacker gets one try per scan). This library never holds a key: the MAC function is passed in,
  e.g. an HMAC-SHA256 from the application's crypto module. The MAC input starts with a fixed context
  string, so a key shared with another purpose cannot be used to mint label tags.
* Parsing forgives what scanners do to text (surrounding whitespace, CR/LF, lower case from a keyboard
  wedge with caps lock) but nothing else.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from kits.errors import (
    BadMacError,
    KitNumberError,
    MalformedPayloadError,
    PayloadCheckDigitError,
    UnknownPayloadVersionError,
    WrongKitKindError,
    WrongTrialError,
)
from kits.numbers import KIT_NUMBER_LENGTH, format_digits, normalize_kit_number

MacFunction = Callable[[bytes], bytes]
"""Computes a MAC (e.g. HMAC-SHA256 under a trial key held by the application) over the given bytes."""

PAYLOAD_PREFIX = "AL"
PAYLOAD_VERSION = 1
MAC_BITS = 80
_MAC_BYTES = MAC_BITS // 8
TAG_LENGTH = 16  # base32 of 10 bytes, no padding needed
MAX_PAYLOAD_LENGTH = 60

# Domain separation: what the application's MAC key signs here is a kit-label body, nothing else.
MAC_CONTEXT = b"allocator/kit-label-qr/v1\x00"

QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")

TRIAL_CODE_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{0,18}[A-Z0-9]")
UNIT_PATTERN = re.compile(r"[A-Z0-9]{1,4}")
"""A drug kit's unit."""
SAMPLE_UNIT_PATTERN = re.compile(r"S-[0-9]{2}")
"""A sample kit's unit: ``S-00`` for the tube set's own label, ``S-01`` ... for its tubes."""
MAX_SAMPLE_TUBES = 99
_TAG_PATTERN = re.compile(r"[A-Z2-7]{16}")
_VERSION_PATTERN = re.compile(r"AL([0-9]{1,3})/")
PAYLOAD_PATTERN = re.compile(
    r"AL1/(?P<trial>[A-Z0-9][A-Z0-9-]{0,18}[A-Z0-9])/(?P<kit>[0-9]{8})/(?P<unit>[A-Z0-9]{1,4}|S-[0-9]{2})/"
    r"(?P<tag>[A-Z2-7]{16})"
)
"""Strict pattern of a version-1 payload as generated (LBL-08 tests match decoded codes against it)."""


class KitKind(Enum):
    """Which kind of kit a label belongs to, told by its unit field."""

    DRUG = "drug"
    SAMPLE = "sample"


def kind_of_unit(unit: str) -> KitKind:
    """The kind of kit whose label carries `unit` (a unit `validate_unit` accepts)."""
    return KitKind.SAMPLE if SAMPLE_UNIT_PATTERN.fullmatch(unit) else KitKind.DRUG


def sample_unit(tube: int) -> str:
    """The unit of a sample kit's label: 0 for the tube set's own label, 1 ... 99 for its tubes."""
    if isinstance(tube, bool) or not isinstance(tube, int) or not 0 <= tube <= MAX_SAMPLE_TUBES:
        raise ValueError(
            f"tube {tube!r} is not allowed in a label payload: 0 (the set) to {MAX_SAMPLE_TUBES}"
        )
    return f"S-{tube:02d}"


@dataclass(frozen=True)
class KitPayload:
    """The fields of a parsed payload. `tag` is only trustworthy after `verify_payload`."""

    trial_code: str
    kit_number: str
    unit: str
    tag: str

    @property
    def kind(self) -> KitKind:
        return kind_of_unit(self.unit)

    @property
    def body(self) -> str:
        """The part of the payload that the tag authenticates."""
        return f"{PAYLOAD_PREFIX}{PAYLOAD_VERSION}/{self.trial_code}/{self.kit_number}/{self.unit}"

    @property
    def text(self) -> str:
        """The full payload text, as encoded in the QR code."""
        return f"{self.body}/{self.tag}"


def validate_trial_code(trial_code: str) -> str:
    """Return `trial_code` if it can go into a payload, else raise `ValueError` saying why."""
    if not isinstance(trial_code, str) or not TRIAL_CODE_PATTERN.fullmatch(trial_code):
        raise ValueError(
            f"trial code {trial_code!r} is not allowed in a label payload: 2-20 characters A-Z, 0-9 "
            "and inner hyphens"
        )
    return trial_code


def validate_unit(unit: str) -> str:
    """Return `unit` if it can go into a payload, else raise `ValueError` saying why."""
    if not isinstance(unit, str) or not (UNIT_PATTERN.fullmatch(unit) or SAMPLE_UNIT_PATTERN.fullmatch(unit)):
        raise ValueError(
            f"unit {unit!r} is not allowed in a label payload: 1-4 characters A-Z and 0-9 (a drug kit), "
            "or S- and two digits (a sample kit)"
        )
    return unit


def _tag(mac: MacFunction, body: str) -> str:
    digest = mac(MAC_CONTEXT + body.encode("ascii"))
    if not isinstance(digest, bytes | bytearray) or len(digest) < _MAC_BYTES:
        raise ValueError(f"the MAC function must return at least {_MAC_BYTES} bytes")
    return base64.b32encode(bytes(digest[:_MAC_BYTES])).decode("ascii")


def build_payload(trial_code: str, kit_number: str, unit: str, mac: MacFunction) -> str:
    """The QR payload text of one unit of one kit.

    `kit_number` may be in display form; it is validated (check digit included) and stored canonical.
    """
    payload = KitPayload(
        trial_code=validate_trial_code(trial_code),
        kit_number=normalize_kit_number(kit_number),
        unit=validate_unit(unit),
        tag="",
    )
    return f"{payload.body}/{_tag(mac, payload.body)}"


def parse_payload(text: str) -> KitPayload:
    """Split a scanned payload into its fields, checking structure, version and kit check digit.

    Does not check the tag (see `verify_payload`). Raises `MalformedPayloadError`,
    `UnknownPayloadVersionError` or `PayloadCheckDigitError`.
    """
    if not isinstance(text, str):
        raise MalformedPayloadError("the scanned code is not text")
    cleaned = text.strip().upper()
    if len(cleaned) > MAX_PAYLOAD_LENGTH:
        raise MalformedPayloadError("the scanned code is too long to be a kit label of this service")
    version = _VERSION_PATTERN.match(cleaned)
    if version is None:
        raise MalformedPayloadError("the scanned code is not a kit label of this service")
    if int(version.group(1)) != PAYLOAD_VERSION:
        raise UnknownPayloadVersionError(
            f"the label uses payload format version {int(version.group(1))}; this software reads "
            f"version {PAYLOAD_VERSION} only"
        )
    fields = cleaned.split("/")
    if len(fields) != 5:
        raise MalformedPayloadError(f"the kit label has {len(fields)} fields separated by '/', expected 5")
    prefix, trial_code, kit_number, unit, tag = fields
    if prefix != f"{PAYLOAD_PREFIX}{PAYLOAD_VERSION}":
        raise MalformedPayloadError(f"the kit label must start with {PAYLOAD_PREFIX}{PAYLOAD_VERSION}/")
    if not TRIAL_CODE_PATTERN.fullmatch(trial_code):
        raise MalformedPayloadError("the trial-code field of the kit label is malformed")
    if len(kit_number) != KIT_NUMBER_LENGTH or not kit_number.isascii() or not kit_number.isdigit():
        raise MalformedPayloadError(f"the kit-number field must have {KIT_NUMBER_LENGTH} digits")
    if not (UNIT_PATTERN.fullmatch(unit) or SAMPLE_UNIT_PATTERN.fullmatch(unit)):
        raise MalformedPayloadError("the unit field of the kit label is malformed")
    if not _TAG_PATTERN.fullmatch(tag):
        raise MalformedPayloadError(f"the authentication field must be {TAG_LENGTH} base32 characters")
    try:
        normalize_kit_number(kit_number)
    except KitNumberError as exc:
        raise PayloadCheckDigitError(
            f"the kit number {format_digits(kit_number)} in the label has a wrong check digit"
        ) from exc
    return KitPayload(trial_code=trial_code, kit_number=kit_number, unit=unit, tag=tag)


def verify_payload(
    text: str, expected_trial: str, mac: MacFunction, kind: KitKind = KitKind.DRUG
) -> KitPayload:
    """Parse a scanned payload and check that it belongs to `expected_trial`, is the label of a kit of
    the expected `kind` (a drug kit unless told otherwise) and carries a valid tag.

    Raises, in this order of checks: `MalformedPayloadError`, `UnknownPayloadVersionError`,
    `PayloadCheckDigitError`, `WrongTrialError`, `WrongKitKindError`, `BadMacError`.
    """
    payload = parse_payload(text)
    if payload.trial_code != expected_trial:
        raise WrongTrialError(
            f"this label belongs to trial {payload.trial_code}, not to trial {expected_trial}"
        )
    if payload.kind is not kind:
        raise WrongKitKindError(f"this is the label of a {payload.kind.value} kit, not of a {kind.value} kit")
    expected_tag = _tag(mac, payload.body)
    # Constant-time comparison: the time taken must not tell how many leading characters were right.
    if not hmac.compare_digest(expected_tag.encode("ascii"), payload.tag.encode("ascii")):
        raise BadMacError(
            "the label's authentication code is wrong: it was not printed by this service or was altered"
        )
    return payload


def looks_like_scan(text: str) -> bool:
    """True for a kit label's payload, a lab shipment manifest's payload or a kit number (check
    digit right): what a keyboard-wedge scanner types. A password field given one of these received
    a scan, not a password (issue 13); a kit number is 8 digits, shorter than any acceptable password."""
    cleaned = text.strip().upper()
    if PAYLOAD_PATTERN.fullmatch(cleaned) or SHIPMENT_PAYLOAD_PATTERN.fullmatch(cleaned):
        return True
    try:
        normalize_kit_number(cleaned)
    except KitNumberError:
        return False
    return True


# --- the manifest of a lab shipment (issue 20) -------------------------------------------------
#
# Format, version 1::
#
#     LS1/<trial code>/<shipment number>/<tag>
#     LS1/IMMUNOSEPSIS-4/LS-0001/K4ZQ7M2V3XW5PA6B
#
# A shipment of samples to the central lab carries one QR on its printed manifest, scanned at the
# lab to open the receipt. Its prefix `LS` differs from a kit label's `AL`, and its MAC context from
# the kit labels' one, so a manifest can never be taken for a kit label (nor the reverse), and a tag
# minted for one can never authenticate the other, even under the same labels key. The shipment
# number is `LS-` and 4 to 6 digits; everything is in the QR alphanumeric set.

SHIPMENT_PAYLOAD_PREFIX = "LS"
SHIPMENT_PAYLOAD_VERSION = 1
SHIPMENT_MAC_CONTEXT = b"allocator/lab-shipment-manifest-qr/v1\x00"
SHIPMENT_NUMBER_PATTERN = re.compile(r"LS-[0-9]{4,6}")
SHIPMENT_PAYLOAD_PATTERN = re.compile(
    r"LS1/(?P<trial>[A-Z0-9][A-Z0-9-]{0,18}[A-Z0-9])/(?P<number>LS-[0-9]{4,6})/(?P<tag>[A-Z2-7]{16})"
)
_SHIPMENT_VERSION_PATTERN = re.compile(r"LS([0-9]{1,3})/")


@dataclass(frozen=True)
class ShipmentPayload:
    """The fields of a parsed manifest payload. `tag` is only trustworthy after verification."""

    trial_code: str
    number: str
    tag: str

    @property
    def body(self) -> str:
        return f"{SHIPMENT_PAYLOAD_PREFIX}{SHIPMENT_PAYLOAD_VERSION}/{self.trial_code}/{self.number}"

    @property
    def text(self) -> str:
        return f"{self.body}/{self.tag}"


def validate_shipment_number(number: str) -> str:
    """Return `number` (``LS-0001``) if it can go into a manifest payload, else raise `ValueError`."""
    if not isinstance(number, str) or not SHIPMENT_NUMBER_PATTERN.fullmatch(number):
        raise ValueError(f"shipment number {number!r} is not LS- and 4 to 6 digits")
    return number


def _shipment_tag(mac: MacFunction, body: str) -> str:
    digest = mac(SHIPMENT_MAC_CONTEXT + body.encode("ascii"))
    if not isinstance(digest, bytes | bytearray) or len(digest) < _MAC_BYTES:
        raise ValueError(f"the MAC function must return at least {_MAC_BYTES} bytes")
    return base64.b32encode(bytes(digest[:_MAC_BYTES])).decode("ascii")


def build_shipment_payload(trial_code: str, number: str, mac: MacFunction) -> str:
    """The QR payload of the manifest of lab shipment `number` of `trial_code`."""
    payload = ShipmentPayload(validate_trial_code(trial_code), validate_shipment_number(number), "")
    return f"{payload.body}/{_shipment_tag(mac, payload.body)}"


def parse_shipment_payload(text: str) -> ShipmentPayload:
    """Split a scanned manifest payload into its fields (the tag is not checked).

    Raises `MalformedPayloadError` (a kit label is named as such) or `UnknownPayloadVersionError`."""
    if not isinstance(text, str):
        raise MalformedPayloadError("the scanned code is not text")
    cleaned = text.strip().upper()
    if len(cleaned) > MAX_PAYLOAD_LENGTH:
        raise MalformedPayloadError("the scanned code is too long to be a shipment manifest of this service")
    if _VERSION_PATTERN.match(cleaned):
        raise MalformedPayloadError("this is a kit label, not a shipment manifest")
    version = _SHIPMENT_VERSION_PATTERN.match(cleaned)
    if version is None:
        raise MalformedPayloadError("the scanned code is not a shipment manifest of this service")
    if int(version.group(1)) != SHIPMENT_PAYLOAD_VERSION:
        raise UnknownPayloadVersionError(
            f"the manifest uses payload format version {int(version.group(1))}; this software reads "
            f"version {SHIPMENT_PAYLOAD_VERSION} only"
        )
    match = SHIPMENT_PAYLOAD_PATTERN.fullmatch(cleaned)
    if match is None:
        raise MalformedPayloadError("the shipment manifest's code is malformed")
    return ShipmentPayload(match["trial"], match["number"], match["tag"])


def verify_shipment_payload(text: str, expected_trial: str, mac: MacFunction) -> ShipmentPayload:
    """Parse a scanned manifest payload and check its trial and tag.

    Raises `MalformedPayloadError`, `UnknownPayloadVersionError`, `WrongTrialError`, `BadMacError`."""
    payload = parse_shipment_payload(text)
    if payload.trial_code != expected_trial:
        raise WrongTrialError(
            f"this manifest belongs to trial {payload.trial_code}, not to trial {expected_trial}"
        )
    expected_tag = _shipment_tag(mac, payload.body)
    if not hmac.compare_digest(expected_tag.encode("ascii"), payload.tag.encode("ascii")):
        raise BadMacError(
            "the manifest's authentication code is wrong: it was not printed by this service or was altered"
        )
    return payload
