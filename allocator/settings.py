"""Frozen, typed settings read from the environment.

Only three variables are part of the contract (`ALLOCATOR_DATABASE_URL`, `ALLOCATOR_KEY_DIR`,
`ALLOCATOR_ENV`); the others tune behaviour and all have safe defaults. There are no secret
defaults: every secret lives in a key file under the key directory (ACC-13, BLD-05).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allocator.db import Limits


class Environment(enum.StrEnum):
    """Where the instance runs. Decides which lists may exist in it (RND-13)."""

    PRODUCTION = "production"
    TEST = "test"  # UAT and training: same software, TEST lists only, watermarked artefacts
    DEVELOPMENT = "development"


class SettingsError(ValueError):
    """A variable of the environment is invalid; the message names it."""


DEFAULT_DATABASE_URL = "sqlite:///instance/allocator.db"
DEFAULT_KEY_DIR = "instance/keys"
SERVE_THREADS = 4  # threads per worker of `allocator serve` (gunicorn gthread)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the application reads from its environment, validated once at start-up."""

    env: Environment = Environment.DEVELOPMENT
    database_url: str = DEFAULT_DATABASE_URL
    key_dir: Path = Path(DEFAULT_KEY_DIR)
    # ACC-06: idle timeout and absolute lifetime of a web session.
    session_idle_timeout: timedelta = timedelta(minutes=30)
    session_absolute_lifetime: timedelta = timedelta(hours=12)
    # ACC-05: throttling of failed logins, per account and per client address.
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_failure_window: timedelta = timedelta(minutes=15)
    login_lockout: timedelta = timedelta(minutes=15)
    # AUD-04: an audit checkpoint is signed at least every N entries of a chain.
    audit_checkpoint_every: int = 100
    # Issue 15: every signed chain head is also appended to this file, which the database cannot
    # rewrite (another volume or host); `audit verify` then detects truncated chains too.
    audit_witness: Path | None = None
    # Outgoing e-mail for blinded notifications (BLD-10); none is sent when unset.
    smtp_host: str | None = None
    smtp_port: int = 25
    # Hospital relays want TLS and a login (issue 15): "starttls" (default), "tls" (implicit TLS,
    # usually port 465) or "none" (a relay on the same host only). The password is read from a file
    # (like the keys), never from the environment, and never logged.
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password_file: Path | None = None
    smtp_ca_file: Path | None = None  # the relay's CA when it is not in the system's trust store
    mail_from: str = "allocator@localhost"
    # Trust X-Forwarded-For / -Proto from exactly this many proxies (0: do not trust them).
    proxy_count: int = 0
    # Issue 14, bounded waits (PostgreSQL): a lock wait and a statement time out (the request then
    # answers 503 with Retry-After, nothing written); a request waits at most this long for a
    # pooled connection. The pool holds one connection per server thread plus as many overflow
    # ones (a request may hold a read and a write session at once) unless set explicitly.
    db_lock_timeout_ms: int = 10_000
    db_statement_timeout_ms: int = 30_000
    db_pool_timeout_s: int = 10
    db_pool_size: int | None = None

    def db_limits(self, threads: int = SERVE_THREADS) -> Limits:
        """The connection bounds of one process serving requests on `threads` threads."""
        from allocator.db import Limits  # noqa: PLC0415 - settings stay importable without SQLAlchemy

        pool = self.db_pool_size or threads
        return Limits(
            pool_size=pool,
            max_overflow=pool,
            pool_timeout_s=float(self.db_pool_timeout_s),
            lock_timeout_ms=self.db_lock_timeout_ms,
            statement_timeout_ms=self.db_statement_timeout_ms,
        )

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def secure_cookies(self) -> bool:
        # ACC-07: cookies are Secure everywhere but on a developer's loopback.
        return self.env is not Environment.DEVELOPMENT

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: `os.environ`). Raises SettingsError naming the variable."""
        env = os.environ if environ is None else environ
        raw_env = env.get("ALLOCATOR_ENV", Environment.DEVELOPMENT.value).strip().lower()
        try:
            environment = Environment(raw_env)
        except ValueError:
            allowed = ", ".join(e.value for e in Environment)
            raise SettingsError(f"ALLOCATOR_ENV: {raw_env!r} is not one of {allowed}") from None
        url = env.get("ALLOCATOR_DATABASE_URL", DEFAULT_DATABASE_URL).strip()
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise SettingsError(
                "ALLOCATOR_DATABASE_URL: only sqlite:/// and postgresql+psycopg:// URLs are supported"
            )
        if url.startswith("postgresql:"):
            # psycopg 3 is the only PostgreSQL driver we install and test.
            url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
        key_dir = Path(env.get("ALLOCATOR_KEY_DIR", DEFAULT_KEY_DIR))
        return cls(
            env=environment,
            database_url=url,
            key_dir=key_dir,
            session_idle_timeout=timedelta(
                minutes=_int(env, "ALLOCATOR_SESSION_IDLE_MINUTES", 30, 1, 24 * 60)
            ),
            session_absolute_lifetime=timedelta(
                hours=_int(env, "ALLOCATOR_SESSION_LIFETIME_HOURS", 12, 1, 24 * 7)
            ),
            audit_checkpoint_every=_int(env, "ALLOCATOR_AUDIT_CHECKPOINT_EVERY", 100, 1, 1_000_000),
            audit_witness=Path(env["ALLOCATOR_AUDIT_WITNESS"])
            if env.get("ALLOCATOR_AUDIT_WITNESS")
            else None,
            smtp_host=env.get("ALLOCATOR_SMTP_HOST") or None,
            smtp_port=_int(env, "ALLOCATOR_SMTP_PORT", 25, 1, 65535),
            smtp_security=_choice(env, "ALLOCATOR_SMTP_SECURITY", "starttls", SMTP_SECURITY),
            smtp_user=env.get("ALLOCATOR_SMTP_USER") or None,
            smtp_password_file=_path(env, "ALLOCATOR_SMTP_PASSWORD_FILE"),
            smtp_ca_file=_path(env, "ALLOCATOR_SMTP_CA_FILE"),
            mail_from=env.get("ALLOCATOR_MAIL_FROM", "allocator@localhost"),
            proxy_count=_int(env, "ALLOCATOR_PROXY_COUNT", 0, 0, 5),
            db_lock_timeout_ms=_int(env, "ALLOCATOR_DB_LOCK_TIMEOUT_MS", 10_000, 100, 600_000),
            db_statement_timeout_ms=_int(env, "ALLOCATOR_DB_STATEMENT_TIMEOUT_MS", 30_000, 1_000, 3_600_000),
            db_pool_timeout_s=_int(env, "ALLOCATOR_DB_POOL_TIMEOUT_S", 10, 1, 300),
            db_pool_size=_int(env, "ALLOCATOR_DB_POOL_SIZE", 0, 0, 1000) or None,
        )


SMTP_SECURITY = ("starttls", "tls", "none")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}: {value} is outside {low}..{high}")
    return value
