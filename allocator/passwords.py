"""Password policy (ACC-03, OWASP ASVS 5.0 V6.2): length and a common-password check, no
composition rules and no forced rotation (requirements.md, tension 1).

Pure: takes the candidate and the user's identifiers, returns the problems found.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources
from itertools import pairwise

MIN_LENGTH = 12
MAX_LENGTH = 128
# Words an attacker tries first against this service in particular.
_CONTEXT_WORDS = (
    "allocator",
    "allocation",
    "randomisation",
    "randomization",
    "interferon",
    "placebo",
    "imukin",
    "aphp",
    "ap-hp",
    "hopital",
    "hospital",
    "reanimation",
    "pharmacie",
    "pharmacy",
    "clinical",
    "essai",
)
_SEQUENCES = (
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "azertyuiop",
    "qwertyuiop",
    "qsdfghjklm",
    "asdfghjkl",
)


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("allocator").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def normalise(password: str) -> str:
    """NFKC, as ASVS asks, so that visually identical passwords compare equal."""
    return unicodedata.normalize("NFKC", password)


def problems(password: str, *, username: str, full_name: str) -> list[str]:
    """Every reason `password` is refused (an empty list means it is acceptable)."""
    pw = normalise(password)
    out: list[str] = []
    if len(pw) < MIN_LENGTH:
        out.append(f"must be at least {MIN_LENGTH} characters long")
    if len(pw) > MAX_LENGTH:
        out.append(f"must be at most {MAX_LENGTH} characters long")
    lowered = pw.lower()
    core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", lowered)
    common = common_passwords()
    if lowered in common or (core and core in common and len(core) >= len(lowered) - 6):
        out.append("is a commonly used password")
    if len(set(lowered)) <= 2:
        out.append("repeats the same characters")
    elif any(lowered in seq * 2 or lowered in (seq * 2)[::-1] for seq in _SEQUENCES) or _is_run(lowered):
        out.append("is a simple sequence")
    names = [username.lower(), *(part.lower() for part in re.split(r"[\s.'-]+", full_name) if len(part) >= 4)]
    if any(name and name in lowered for name in names):
        out.append("must not contain your user name or your name")
    if any(word in lowered for word in _CONTEXT_WORDS) and len(pw) < 20:
        out.append(
            "must not be built on the name of this service or trial (unless it is at least 20 characters)"
        )
    return out


def _is_run(text: str) -> bool:
    """True for text that climbs or falls by one code point throughout, e.g. 'mnopqrstuvwx'."""
    steps = {ord(b) - ord(a) for a, b in pairwise(text)}
    return len(text) > 3 and steps in ({1}, {-1})
