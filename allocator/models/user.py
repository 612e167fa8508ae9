"""Accounts, role assignments (history kept), API tokens, server-side sessions, login throttling."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class User(Base):
    # "user" is reserved in PostgreSQL.
    __tablename__ = "app_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))  # printed name on e-signatures (ACC-12)
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    password_changed_at: Mapped[datetime]
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # replay protection (RFC 6238 §5.2)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The interface language the user chose ("fr" or "en"); None: the browser's Accept-Language.
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]


class RoleAssignment(Base):
    """A role granted to a user for a trial (and a site, for site roles). Append-only: ending a
    role early is a RoleRevocation row, so the full history stays readable (BLD-13)."""

    __tablename__ = "role_assignment"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    granted_at: Mapped[datetime]
    granted_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    granted_by_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class RoleRevocation(Base):
    __tablename__ = "role_revocation"

    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("role_assignment.id"), unique=True)
    revoked_at: Mapped[datetime]
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    revoked_by_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    """A bearer token for the JSON API. Only its digest is stored; it acts with its user's roles."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by_name: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_by_name: Mapped[str | None] = mapped_column(String(200))


class LoginSession(Base):
    """A server-side web session: the cookie holds a random id whose digest is stored here, so a
    logout, an admin termination or a deactivation ends the session everywhere (ACC-06, BLD-11)."""

    __tablename__ = "login_session"
    # A user's sessions, and their latest sign-in in one index look-up (the user pages; issue 21:
    # one row per sign-in ever made).
    __table_args__ = (Index("ix_login_session_user_id_created_at", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(300))
    mfa_verified: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginThrottle(Base):
    """Failed-login counters per account and per client address, shared by every server process."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]
