"""The dates that bound a period in a filter (the audit trail, the reports): typed into a form or a
query string as `YYYY-MM-DD` in ASCII digits, from 2000 to 2999. `date.fromisoformat` alone also
reads `20260101` and week dates (`2026-W01-1`), and year 9999 overflowed when the last day of the
period was turned into the next midnight (a 500 before issue 14's longer fuzz run)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from allocator.services.errors import FieldProblem

FIRST_YEAR, LAST_YEAR = 2000, 2999
DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# The OpenAPI document states the same (allocator/web/openapi.py).
DATE_PATTERN = "^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
OUT_OF_RANGE = "must be a date from 2000-01-01 to 2999-12-31"


def period_date(args: Mapping[str, str], key: str, problems: list[FieldProblem]) -> date | None:
    """`args[key]` as a date (white space around it ignored; empty or absent is None), or None
    with a problem naming `key` appended to `problems`."""
    raw = (args.get(key) or "").strip()
    if not raw:
        return None
    try:
        if not DATE_SHAPE.fullmatch(raw):
            raise ValueError(raw)
        value = date.fromisoformat(raw)
    except ValueError:
        problems.append(FieldProblem(key, "must be a date (YYYY-MM-DD)"))
        return None
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        problems.append(FieldProblem(key, OUT_OF_RANGE))
        return None
    return value
