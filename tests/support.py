"""Small test helpers: a controllable clock and factories (fixtures use them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from allocator.audit import Actor
from allocator.services import accounts, trials
from allocator.services.context import ServiceContext

ROOT = Path(__file__).resolve().parent.parent
IFN_TRIAL = ROOT / "trials" / "ifn-gamma-pais.toml"
GOOD_PASSWORD = "correct horse battery staple 42"


@dataclass
class Clock:
    """A clock the test moves by hand. Starts at a fixed instant so runs are reproducible."""

    current: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 30, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> datetime:
        self.current += timedelta(**kwargs)
        return self.current


CLI_ACTOR = Actor(
    user_id=None, username="cli:test", name="test runner (command line)", role="system", request_id="test"
)


def load_ifn(ctx: ServiceContext) -> trials.LoadResult:
    return trials.load_trial(
        ctx, CLI_ACTOR, IFN_TRIAL.read_text(encoding="utf-8"), source_name="trials/ifn-gamma-pais.toml"
    )


def make_user(
    ctx: ServiceContext,
    username: str,
    role: str,
    *,
    trial: str | None = "IFNG-PAIS",
    site: str | None = None,
    full_name: str | None = None,
) -> accounts.CreatedUser:
    return accounts.create_user(
        ctx,
        CLI_ACTOR,
        accounts.NewUser(username=username, full_name=full_name or username.replace("-", " ").title()),
        accounts.RoleRequest(role=role, trial_code=trial if role != "admin" else None, site_code=site),
    )


def enroll_totp(ctx: ServiceContext, user_id: int, clock: Clock) -> bytes:
    """Enrol an authenticator for `user_id` through the service; returns the secret."""
    import base64

    from allocator import crypto
    from allocator.services import auth

    enrollment = auth.start_totp_enrollment(ctx, user_id)
    secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
    auth.confirm_totp_enrollment(
        ctx,
        user_id,
        None,
        crypto.totp_now(secret, clock()),
        auth.Client("192.0.2.1", "test", "enrol"),
        ticket=enrollment.ticket,
    )
    return secret
