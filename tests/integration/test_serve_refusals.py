"""Every error from anywhere in the stack is a problem document (issue 14), including the requests
gunicorn refuses itself before the application sees them: a request line over its 8190-byte limit,
too many or too large header fields, bytes that are not HTTP. Checked against a real
`allocator serve`. The refusals happen before any database work, so SQLite is enough here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from allocator import crypto, migrate
from allocator.web.openapi import document
from tests.support.server import Served, exchange, served

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.req("ACC-13")  # errors say plain words, never the server's own page


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    where = tmp_path_factory.mktemp("serve")
    url = f"sqlite:///{where / 'serve.db'}"
    migrate.upgrade(url)
    crypto.KeyRing.create_missing(where / "keys")
    with served(url, where / "keys", where) as running:
        yield running


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def is_problem(server: Served, raw: bytes, status: int) -> dict[str, object]:
    answer = exchange(server, raw)
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == PROBLEM, answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"
    problem = answer.json()
    schema = {**document()["components"]["schemas"]["Problem"], "$defs": {}}
    Draft202012Validator(schema).validate(problem)
    assert problem["status"] == status and problem["detail"]
    return problem


def test_a_line_the_app_refuses_is_its_own_problem(server: Served) -> None:
    problem = is_problem(server, get("/api/v1/trials/IFNG-PAIS/subjects/" + "P" * 5000), 414)
    assert problem["type"] == "urn:allocator:problem:request-uri-too-long"


def test_a_line_over_gunicorns_limit_is_a_problem_not_an_html_page(server: Served) -> None:
    problem = is_problem(server, get("/api/v1/trials/IFNG-PAIS/subjects/" + "P" * 9000), 414)
    # The same problem type as the application's own 414, and no echo of the client's bytes.
    assert problem["type"] == "urn:allocator:problem:request-uri-too-long"
    assert "PPPP" not in str(problem) and "4096 bytes" in str(problem["detail"])


def test_a_page_line_over_the_limit_is_a_problem_too(server: Served) -> None:
    is_problem(server, get("/login?" + "q" * 9000), 414)


def test_too_many_header_fields_is_a_431_problem(server: Served) -> None:
    headers = [f"X-Filler-{n}: {n}" for n in range(120)]
    problem = is_problem(server, get("/api/v1/openapi.json", *headers), 431)
    assert problem["type"] == "urn:allocator:problem:request-header-fields-too-large"


def test_a_header_field_too_large_is_a_431_problem(server: Served) -> None:
    is_problem(server, get("/api/v1/openapi.json", "X-Big: " + "b" * 9000), 431)


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /login HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
    ],
    ids=["garbage", "version", "header-name"],
)
def test_an_invalid_request_is_a_400_problem(server: Served, raw: bytes) -> None:
    problem = is_problem(server, raw, 400)
    assert problem["type"] == "urn:allocator:problem:bad-request"


def test_the_ordinary_answers_are_untouched(server: Served) -> None:
    answer = exchange(server, get("/login"))
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    assert "server" not in answer.headers
    answer = exchange(server, get("/api/v1/openapi.json"))  # the app's own problem, as before
    assert answer.status == 401 and answer.headers["content-type"] == PROBLEM


def test_the_log_says_why(server: Served) -> None:
    """gunicorn still logs each refusal (its words stay in the log, not in the answer)."""
    exchange(server, get("/x?" + "q" * 9000))
    assert "Invalid request from ip=" in Path(server.log).read_text(errors="replace")
