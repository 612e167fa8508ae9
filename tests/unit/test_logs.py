"""The last line of defence of the structured logs: a field whose name suggests a secret is dropped,
whatever its case, every time (the judgement of a name is kept per process, issue 16)."""

from __future__ import annotations

import json
import logging

import pytest

from allocator import logs


@pytest.mark.req("RND-12")
def test_fields_named_like_secrets_never_reach_a_log_line() -> None:
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(logs.JsonFormatter().format(record))

    logger = logging.getLogger(logs.LOGGER_NAME)
    handler = Keep()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        for _ in range(2):  # the second time from the kept judgements
            logs.log_event(
                "request",
                password="hunter2",
                API_Token="t0k3n",
                SeedValue="5eed",
                arm="A",
                totp_code="123456",
                user_id=3,
                path="/trials/X",
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    for line in seen:
        payload = json.loads(line)
        assert {k: payload[k] for k in ("event", "user_id", "path")} == {
            "event": "request",
            "user_id": 3,
            "path": "/trials/X",
        }
        assert not {"password", "API_Token", "SeedValue", "arm", "totp_code"} & set(payload)
        assert "hunter2" not in line and "t0k3n" not in line and "5eed" not in line
    assert len(seen) == 2
