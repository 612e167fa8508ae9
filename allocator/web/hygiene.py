"""Input hygiene for the JSON API (issue 14, findings D2-D6): whatever arrives, the answer is a 4xx
problem document naming the field, and nothing reaches a service or the database that it cannot
handle.

- Path values containing a character no identifier holds (NUL, a lone surrogate, a control
  character, a Unicode non-character) are a 404 naming the parameter: no such object can exist.
- A page's form field, field name or uploaded file's name holding a character no database stores
  (a NUL, a lone surrogate) is a 422, after the guard and the CSRF check and before the view (a
  NUL typed in the sign-in form's user name was a server error on PostgreSQL, for anyone). Other
  control characters stay: pasted text brings vertical tabs, form feeds and U+0085.
- A whole number in a path beyond the 32-bit row ids (`MAX_ROW_ID`) names nothing: 404.
- Query values with such a character are a 422 naming the parameter.
- A body is at most `MAX_BODY_BYTES` (413) and `MAX_DEPTH` levels deep (422, checked on the raw
  text before parsing, so that the parser cannot recurse without bound); every key and string in
  it is checked as above (422 naming the field by its path, e.g. `strata.admission_cause`).
- Numbers in a query string are ASCII digits within a documented range (`query_int`).
- Times are range-checked on their own fields before any arithmetic (`parse_time`).
- The whole request line (path and query) is at most `MAX_URL_BYTES` (414).

PostgreSQL refuses NUL in text, where SQLite stores it; neither driver can encode a lone surrogate
(psycopg and sqlite3 both fail, a server error). The checks here make both backends answer the same.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from flask import Flask, request
from werkzeug.exceptions import NotFound as PageNotFound
from werkzeug.exceptions import RequestEntityTooLarge, RequestURITooLarge

from allocator.services.errors import FieldProblem, NotFound, ValidationFailed, bad_character
from allocator.web.security import is_api_request

MAX_BODY_BYTES = 64 * 1024
MAX_DEPTH = 8  # {"eligibility": {"criterion": value}} needs 2; a list of objects a few more
MAX_URL_BYTES = 4096
MAX_SEQUENCE = 2**63 - 1  # audit sequence numbers are 64-bit signed integers
MAX_ROW_ID = 2**31 - 1  # row ids are 32-bit (INTEGER): a cursor past it overflowed on PostgreSQL
EARLIEST_YEAR, LATEST_YEAR = 2000, 9998  # local years; keeps every zone conversion in range

_ASCII_DIGITS = re.compile(r"[0-9]+")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _check_request() -> None:
    """Before every request, the path values: one holding a character no name holds (a NUL, a
    control character) names nothing, 404, before any look-up (PostgreSQL refuses a NUL in a text
    parameter: a page's look-up was a server error). Before every API request, also the request
    line and the query values."""
    api = is_api_request()
    for name, value in (request.view_args or {}).items():
        if (isinstance(value, str) and bad_character(value)) or (
            isinstance(value, int) and value > MAX_ROW_ID  # past a 32-bit id: a 500 on PostgreSQL
        ):
            if not api:
                raise PageNotFound()  # the page's own 404, in the reader's language
            raise NotFound(f"no {name} with that name", errors=[FieldProblem(name, "unknown")])
    if not api:
        return
    line = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    if len(line) > MAX_URL_BYTES:
        raise RequestURITooLarge(f"the path and query may be at most {MAX_URL_BYTES} bytes")
    problems = []
    for key in request.args:
        if bad_character(key):
            problems.append(
                FieldProblem("query", "a parameter name contains a character that is not allowed")
            )
            continue
        for value in request.args.getlist(key):
            message = bad_character(value)
            if message:
                problems.append(FieldProblem(key, message))
                break
    if problems:
        raise ValidationFailed("invalid query", errors=problems)


def _unstorable(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    return None if found is None else f"contains a character that is not allowed (U+{ord(found.group()):04X})"


def _check_form() -> None:
    """A page's POST: every form field name and value and every uploaded file's name free of what
    no database stores (a NUL, which PostgreSQL refuses in text; a lone surrogate, which neither
    driver encodes), else ValidationFailed naming each field once. Registered after the guard and
    the CSRF check (`install_form_check`), so that a refusal has its request id and a cross-site
    post is refused as such."""
    if request.method != "POST" or is_api_request():
        return
    problems: list[FieldProblem] = []
    named: set[str] = set()
    fields = list(request.form.items(multi=True))
    fields += [(key, upload.filename or "") for key, upload in request.files.items(multi=True)]
    for key, value in fields:
        message: str | None
        if _unstorable(key):
            field, message = "", "a field name contains a character that is not allowed"
        else:
            field, message = key, _unstorable(value)
        if message and field not in named:
            named.add(field)
            problems.append(FieldProblem(field, message))
    if problems:
        raise ValidationFailed(
            "a field of the form holds a character that no keyboard types: type it again", errors=problems
        )


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects deeper than `limit` (strings are skipped)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _clean(value: object, path: str, problems: list[FieldProblem]) -> None:
    """Name the first forbidden character in every key and string of `value` (iteratively)."""
    stack: list[tuple[str, object]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            message = bad_character(item)
            if message:
                problems.append(FieldProblem(where, message))
        elif isinstance(item, dict):
            for key, inner in item.items():
                if bad_character(key):
                    problems.append(FieldProblem(where, "a key contains a character that is not allowed"))
                    continue
                stack.append((f"{where}.{key}" if where else key, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in enumerate(item))


def small_json_object() -> dict[str, Any] | None:
    """The body of a page's JSON request (the scan checks) when it is a JSON object of at most
    MAX_BODY_BYTES and MAX_DEPTH levels; else None. Parsed only then: `get_json(silent=True)` lets
    the RecursionError of a body nested 50,000 deep through (a server error)."""
    if not request.is_json or (request.content_length or 0) > MAX_BODY_BYTES:
        return None
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES or _depth_exceeds(raw, MAX_DEPTH):
        return None
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def json_body() -> dict[str, object]:
    """The request body as a JSON object, or a problem: 413 when too large, 422 (field `body`) when
    not JSON, not an object, nested too deep or holding NaN/Infinity, 422 naming the field when a key
    or string holds a forbidden character."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
    if _depth_exceeds(raw, MAX_DEPTH):
        raise ValidationFailed(
            "the body is nested too deeply",
            errors=[FieldProblem("body", f"at most {MAX_DEPTH} levels of arrays and objects")],
        )
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        body = None
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the body must be a JSON object", errors=[FieldProblem("body", "expected a JSON object")]
        )
    problems: list[FieldProblem] = []
    _clean(body, "", problems)
    if problems:
        raise ValidationFailed("some fields hold characters that are not allowed", errors=problems)
    return body


def query_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    """A query parameter given at most once, as ASCII digits, within [minimum, maximum] (D5:
    `str.isdigit` accepts "²" and other scripts' digits, which `int` then refuses or reads)."""
    values = request.args.getlist(name)
    if not values or values == [""]:
        return default
    message = f"a whole number from {minimum} to {maximum}, in ASCII digits"
    if len(values) > 1:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, "give it once")])
    raw = values[0]
    # The length bound keeps int() away from huge texts (and from sys.int_info limits).
    if not _ASCII_DIGITS.fullmatch(raw) or len(raw) > len(str(maximum)):
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, message)])
    number = int(raw)
    if not minimum <= number <= maximum:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, message)])
    return number


def single_args() -> dict[str, str]:
    """The query string, one value per name. A name given more than once is refused, named: the
    reports' and the audit trail's filters and a long table's `offset` were read at their first
    value."""
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise ValidationFailed(
            f"a query parameter is given more than once: {', '.join(repeated)}",
            errors=[FieldProblem(name, "give it once") for name in repeated],
        )
    return request.args.to_dict()


def whole_number(raw: str, field: str, summary: str, message: str, *, maximum: int = MAX_SEQUENCE) -> int:
    """A number typed in a form or a query string (already trimmed), in ASCII digits and at most
    `maximum`; else ValidationFailed naming `field` with `message`. D5: `str.isdigit` admits "²",
    which int() refuses (a server error), and other scripts' digits, which int() reads; a number
    past a 64-bit column's range fails in the database."""
    if not _ASCII_DIGITS.fullmatch(raw) or len(raw) > len(str(maximum)) or int(raw) > maximum:
        raise ValidationFailed(summary, errors=[FieldProblem(field, message)])
    return int(raw)


def query_text(name: str, *, max_length: int) -> str | None:
    """A query parameter given at most once, of at most `max_length` characters; None when absent
    or empty."""
    values = request.args.getlist(name)
    if not values or values == [""]:
        return None
    if len(values) > 1:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, "give it once")])
    if len(values[0]) > max_length or bad_character(values[0]):
        raise ValidationFailed(
            f"invalid {name}", errors=[FieldProblem(name, f"at most {max_length} printable characters")]
        )
    return values[0]


def parse_time(name: str, value: object) -> datetime:
    """An ISO 8601 time with a zone, its local year within [EARLIEST_YEAR, LATEST_YEAR], checked
    before any conversion (D6: year 1 at +14:00 overflowed in the trial's local-date arithmetic)."""
    message = "must be an ISO 8601 time with a zone"
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, message)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, message)]) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, "no time zone")])
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        raise ValidationFailed(
            f"invalid {name}",
            errors=[FieldProblem(name, f"the year must be from {EARLIEST_YEAR} to {LATEST_YEAR}")],
        )
    return parsed


def install_form_check(app: Flask) -> None:
    """`_check_form`, after `security.install` (the guard and the CSRF check) and before any view."""
    app.before_request(_check_form)


def install(app: Flask) -> None:
    app.before_request(_check_request)
