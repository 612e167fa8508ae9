"""Structured logs: one JSON object per line with named fields.

Never a password, token, seed, key or arm in a log line (architecture.md, RND-12): callers pass
named fields, and `log_event` drops any field whose name suggests a secret as a last line of
defence.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FORBIDDEN_FIELDS = ("password", "token", "seed", "secret", "key", "arm", "otp", "totp", "block")
LOGGER_NAME = "allocator"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            payload["exception"] = record.exc_info[0].__name__
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    """Whether a field's name suggests a secret. Field names are the code's own (keyword arguments),
    a few dozen: each is judged once per process, not lowered nine times per line (issue 16: 250
    `str.lower` calls per randomization)."""
    lowered = name.lower()
    return any(word in lowered for word in _FORBIDDEN_FIELDS)


def safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if not _secret_name(k)}


def log_event(event: str, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    logging.getLogger(LOGGER_NAME).log(level, event, extra={"fields": safe_fields(fields)}, exc_info=exc_info)
