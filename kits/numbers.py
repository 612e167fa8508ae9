"""Kit numbers: random, unique, fixed-length, check-digit protected.

A kit number is 7 random decimal digits followed by one Damm check digit, 8 digits in all, kept as a
string (leading zeros are allowed). It is shown as ``1234-5678`` and accepted on input with or without
the hyphen and spaces.

Why this design:

* BLD-03: the number must carry no information about the arm. This module never sees an arm: the
  functions take no arm argument, the digits come from the operating system's CSPRNG (`secrets`), and
  every number is drawn independently of the others, so no prefix, range, parity, check digit or issue
  order can depend on the arm. The kit -> arm link is made elsewhere, after the numbers exist.
* LBL-09: the Damm check digit (quasigroup of order 10) detects every single-digit substitution and every
  transposition of two adjacent digits. Two valid kit numbers therefore always differ in at least two
  positions, so one mistyped digit can never turn a kit number into another kit's number.
* Guessing: only 1 random 8-digit string in 10 passes the check digit, and the trial uses a tiny share of
  the 10^7 bodies, so a made-up number almost never names a real kit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from stdnum import damm

from kits.errors import (
    KitNumberCharacterError,
    KitNumberCheckDigitError,
    KitNumberLengthError,
    KitNumberSpaceExhaustedError,
)

RANDOM_DIGITS = 7
KIT_NUMBER_LENGTH = RANDOM_DIGITS + 1
_BODY_SPACE = 10**RANDOM_DIGITS

# BLD-03 / LBL-09: rejection sampling stays fast and the guessing argument above holds only while the
# trial uses a small share of the space; 10 % (one million kits) is far beyond any single trial.
MAX_KITS_PER_TRIAL = _BODY_SPACE // 10
_MAX_DRAWS_PER_NUMBER = 1000

# Characters people and scanners put between digit groups; removed before validation.
_SEPARATORS = frozenset(" \t-\u00a0\u202f\u2010\u2011\u2012\u2013")
_ASCII_DIGITS = frozenset("0123456789")


def check_digit(body: str) -> str:
    """The Damm check digit of `body` (a string of ASCII digits)."""
    if not body or not set(body) <= _ASCII_DIGITS:
        raise KitNumberCharacterError(f"cannot compute a check digit of {body!r}: digits 0-9 only")
    return str(damm.calc_check_digit(body))


def _draw_number() -> str:
    # BLD-03: uniform over all 10^7 bodies, from the OS CSPRNG; nothing else goes into the number.
    body = f"{secrets.randbelow(_BODY_SPACE):0{RANDOM_DIGITS}d}"
    return body + check_digit(body)


def _canonical_set(in_use: Iterable[str]) -> set[str]:
    # Numbers in use may come in display form; compare canonical forms so "1234-5678" blocks "12345678".
    return {normalize_kit_number(number) for number in in_use}


def generate_kit_number(in_use: Iterable[str] = ()) -> str:
    """Draw one new kit number that is not in `in_use` (the numbers the trial already uses)."""
    return generate_kit_numbers(1, in_use)[0]


def generate_kit_numbers(count: int, in_use: Iterable[str] = ()) -> list[str]:
    """Draw `count` new, distinct kit numbers, none of them in `in_use`.

    The result is in draw order, which is random; callers must not sort it in a way that follows the arm.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    taken = _canonical_set(in_use)
    if len(taken) + count > MAX_KITS_PER_TRIAL:
        raise KitNumberSpaceExhaustedError(
            f"a trial may use at most {MAX_KITS_PER_TRIAL} kit numbers; {len(taken)} are in use and "
            f"{count} more were requested"
        )
    numbers: list[str] = []
    for _ in range(count):
        for _attempt in range(_MAX_DRAWS_PER_NUMBER):
            number = _draw_number()
            if number not in taken:
                break
        else:  # pragma: no cover - needs ~1000 consecutive collisions at <= 10 % occupancy
            raise KitNumberSpaceExhaustedError("could not draw an unused kit number")
        taken.add(number)
        numbers.append(number)
    return numbers


def normalize_kit_number(text: str) -> str:
    """Turn typed or scanned input into the canonical 8-digit form, or raise a `KitNumberError`.

    Spaces and hyphens are ignored (``1234-5678`` and ``1234 5678`` are accepted). The error says whether
    the problem is a wrong character, a wrong number of digits or a wrong check digit (LBL-09).
    """
    if not isinstance(text, str):
        raise KitNumberCharacterError(f"a kit number must be text, not {type(text).__name__}")
    digits = []
    for position, char in enumerate(text.strip(), start=1):
        if char in _SEPARATORS:
            continue
        # str.isdigit() accepts other scripts' digits and superscripts; only ASCII digits are valid here.
        if char not in _ASCII_DIGITS:
            raise KitNumberCharacterError(
                f"kit number contains {char!r} at position {position}: only digits 0-9 are allowed"
            )
        digits.append(char)
    number = "".join(digits)
    if len(number) != KIT_NUMBER_LENGTH:
        found = "no digits" if not number else f"{len(number)} digit{'s' if len(number) > 1 else ''}"
        raise KitNumberLengthError(f"kit number has {found}, expected {KIT_NUMBER_LENGTH}")
    if damm.checksum(number) != 0:
        raise KitNumberCheckDigitError(
            f"kit number {format_digits(number)} has a wrong check digit: it was probably mistyped"
        )
    return number


def is_valid_kit_number(text: str) -> bool:
    """True if `text` normalises to a valid kit number."""
    try:
        normalize_kit_number(text)
    except (KitNumberCharacterError, KitNumberLengthError, KitNumberCheckDigitError):
        return False
    return True


def format_digits(number: str) -> str:
    """``12345678`` -> ``1234-5678`` without validation (used in messages about invalid numbers)."""
    half = len(number) // 2
    return f"{number[:half]}-{number[half:]}" if len(number) == KIT_NUMBER_LENGTH else number


def format_kit_number(number: str) -> str:
    """Display form ``1234-5678`` of a valid kit number (raises `KitNumberError` if it is not valid)."""
    return format_digits(normalize_kit_number(number))
