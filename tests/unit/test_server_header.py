"""`allocator serve` never announces its server software (issue 15, point 6): gunicorn's own
`Server: gunicorn` line is removed from the responses it writes. The wheel check (.ci/wheel-check)
also reads the header from a real `allocator serve`."""

from __future__ import annotations

import io
from types import SimpleNamespace

from gunicorn.config import Config
from gunicorn.http import wsgi

from allocator import cli


def head_lines() -> list[str]:
    request = SimpleNamespace(version=(1, 1), method="GET", headers=[], should_close=lambda: False)
    response = wsgi.Response(request, io.BytesIO(), Config())
    response.status, response.status_code = "200 OK", 200
    return response.default_headers()


def test_gunicorn_announces_itself_until_told_not_to(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # undone after the test
    assert any(line.startswith("Server: gunicorn") for line in head_lines())
    cli.hide_server_header()
    cli.hide_server_header()  # idempotent: one subclass, not a tower of them
    lines = head_lines()
    assert not any(line.lower().startswith("server:") for line in lines)
    assert lines[0] == "HTTP/1.1 200 OK\r\n" and any(line.startswith("Date: ") for line in lines)
    assert not getattr(wsgi.Response.__bases__[0], "allocator_quiet", False)
