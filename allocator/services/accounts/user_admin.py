"""User administration: the user list, role history,
activation, password and TOTP resets, sessions and tokens; every change audited, nothing deleted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import SYSTEM_CHAIN, Action, Actor
from allocator.db import require
from allocator.models import ApiToken, LoginSession, RoleAssignment, RoleRevocation, Site, Trial, User
from allocator.permissions import UNBLINDED_ROLES, active
from allocator.services.accounts.users import one_time_password
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed


@dataclass(frozen=True, slots=True)
class RoleRow:
    """One role assignment with its whole history (BLD-13)."""

    assignment_id: int
    username: str
    full_name: str
    role: str
    trial: str | None
    site: str | None
    starts_at: datetime
    ends_at: datetime | None
    granted_at: datetime
    granted_by: str
    reason: str
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    active: bool

    @property
    def unblinded(self) -> bool:
        return self.role in {r.value for r in UNBLINDED_ROLES}


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    username: str
    full_name: str
    email: str | None
    is_active: bool
    must_change_password: bool
    totp_enrolled: bool
    created_at: datetime
    last_sign_in: datetime | None
    roles: tuple[RoleRow, ...]


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    username: str
    full_name: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


def _role_rows(
    session: Session, now: datetime, *, user_id: int | None = None, trial_id: int | None = None
) -> list[RoleRow]:
    query = (
        select(RoleAssignment, RoleRevocation, User, Trial.code, Site.code)
        .join(User, User.id == RoleAssignment.user_id)
        .outerjoin(RoleRevocation, RoleRevocation.assignment_id == RoleAssignment.id)
        .outerjoin(Trial, Trial.id == RoleAssignment.trial_id)
        .outerjoin(Site, Site.id == RoleAssignment.site_id)
        .order_by(RoleAssignment.id)
    )
    if user_id is not None:
        query = query.where(RoleAssignment.user_id == user_id)
    if trial_id is not None:
        query = query.where(RoleAssignment.trial_id == trial_id)
    rows = []
    for assignment, revocation, user, trial_code, site_code in session.execute(query):
        rows.append(
            RoleRow(
                assignment_id=assignment.id,
                username=user.username,
                full_name=user.full_name,
                role=assignment.role,
                trial=trial_code,
                site=site_code,
                starts_at=assignment.starts_at,
                ends_at=assignment.ends_at,
                granted_at=assignment.granted_at,
                granted_by=assignment.granted_by_name,
                reason=assignment.reason,
                revoked_at=revocation.revoked_at if revocation else None,
                revoked_by=revocation.revoked_by_name if revocation else None,
                revoke_reason=revocation.reason if revocation else None,
                active=active(assignment.starts_at, assignment.ends_at, revocation is not None, now)
                and user.is_active,
            )
        )
    return rows


def _user_rows(session: Session, now: datetime, username: str | None = None) -> list[UserRow]:
    """Every user (or the one named `username`) with their roles and latest sign-in. The sign-in is
    looked up per user in the (user, created_at) index: the sessions table keeps one row per sign-in
    ever made, and grouping it whole on every view grew with the years (issue 21)."""
    last = (
        select(func.max(LoginSession.created_at))
        .where(LoginSession.user_id == User.id)
        .correlate(User)
        .scalar_subquery()
    )
    query = select(User, last).order_by(User.username)
    if username is not None:
        query = query.where(User.username == username)
    found = session.execute(query).all()
    if username is None:
        granted = _role_rows(session, now)
    else:
        granted = _role_rows(session, now, user_id=found[0][0].id) if found else []
    roles: dict[str, list[RoleRow]] = {}
    for role in granted:
        roles.setdefault(role.username, []).append(role)
    return [
        UserRow(
            id=u.id,
            username=u.username,
            full_name=u.full_name,
            email=u.email,
            is_active=u.is_active,
            must_change_password=u.must_change_password,
            totp_enrolled=u.totp_enabled_at is not None,
            created_at=u.created_at,
            last_sign_in=signed_in,
            roles=tuple(roles.get(u.username, ())),
        )
        for u, signed_in in found
    ]


def list_users(ctx: ServiceContext) -> list[UserRow]:
    with ctx.db.reading() as session:
        return _user_rows(session, ctx.now())


def get_user(ctx: ServiceContext, username: str) -> UserRow:
    """One user, read alone (the account page of every user, the admin's user page)."""
    with ctx.db.reading() as session:
        for row in _user_rows(session, ctx.now(), username):
            return row
    raise NotFound(f"no user {username!r}")


def trial_roles(ctx: ServiceContext, trial_code: str) -> list[RoleRow]:
    """Every role ever granted in a trial, with grant and revocation (BLD-13, REP-02)."""
    with ctx.db.reading() as session:
        trial = trial_by_code(session, trial_code)
        return _role_rows(session, ctx.now(), trial_id=trial.id)


def unblinded_role_history(ctx: ServiceContext, trial_code: str) -> list[RoleRow]:
    """Everyone who ever held an unblinded role in the trial, with dates (BLD-13, CONSORT item 19)."""
    unblinded = {r.value for r in UNBLINDED_ROLES}
    return [r for r in trial_roles(ctx, trial_code) if r.role in unblinded]


def trial_by_code(session: Session, code: str) -> Trial:
    trial = session.execute(select(Trial).where(Trial.code == code)).scalar_one_or_none()
    if trial is None:
        raise NotFound(f"no trial {code!r}")
    return trial


def _user(session: Session, username: str) -> User:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", errors=[FieldProblem("username", "unknown user")])
    return user


def required_reason(reason: str) -> str:
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    return reason.strip()


def _end_sessions(session: Session, user_id: int, now: datetime, reason: str) -> int:
    result = session.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def set_active(ctx: ServiceContext, actor: Actor, username: str, active_flag: bool, reason: str) -> None:
    """Deactivate (ending every session at once, BLD-11) or reactivate an account. Audited."""
    reason = required_reason(reason)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = _user(session, username)
        if actor.user_id == user.id and not active_flag:
            raise Conflict("you cannot deactivate your own account")
        if user.is_active == active_flag:
            raise Conflict(f"{username} is already {'active' if active_flag else 'deactivated'}")
        user.is_active = active_flag
        user.deactivated_at = None if active_flag else now
        ended = 0 if active_flag else _end_sessions(session, user.id, now, "deactivated")
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.USER_REACTIVATED if active_flag else Action.USER_DEACTIVATED,
            object_type="user",
            object_id=username,
            new={"active": active_flag, "sessions_ended": ended},
            reason=reason,
            at=now,
        )


def reset_password(ctx: ServiceContext, actor: Actor, username: str, reason: str) -> str:
    """Issue a new one-time password (to be changed at next sign-in); ends the user's sessions."""
    reason = required_reason(reason)
    password = one_time_password()
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = _user(session, username)
        user.password_hash = crypto.hash_password(password, ctx.passwords)
        user.password_changed_at = now
        user.must_change_password = True
        _end_sessions(session, user.id, now, "password reset")
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.PASSWORD_SET,
            object_type="user",
            object_id=username,
            reason=reason,
            at=now,
        )
    return password


def reset_totp(ctx: ServiceContext, actor: Actor, username: str, reason: str) -> None:
    """Remove a user's authenticator (lost phone); they enrol again at next sign-in if required."""
    reason = required_reason(reason)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = _user(session, username)
        if user.totp_enabled_at is None:
            raise Conflict(f"{username} has no authenticator enrolled")
        user.totp_secret_sealed = None
        user.totp_enabled_at = None
        user.totp_last_step = None
        _end_sessions(session, user.id, now, "second factor reset")
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.TOTP_RESET,
            object_type="user",
            object_id=username,
            reason=reason,
            at=now,
        )


def active_sessions(ctx: ServiceContext, user_id: int | None = None) -> list[SessionRow]:
    now = ctx.now()
    with ctx.db.reading() as session:
        query = (
            select(LoginSession, User)
            .join(User, User.id == LoginSession.user_id)
            .where(LoginSession.ended_at.is_(None), LoginSession.expires_at > now)
            .order_by(LoginSession.last_seen_at.desc())
        )
        if user_id is not None:
            query = query.where(LoginSession.user_id == user_id)
        return [
            SessionRow(
                id=s.id,
                username=u.username,
                full_name=u.full_name,
                created_at=s.created_at,
                last_seen_at=s.last_seen_at,
                expires_at=s.expires_at,
                address=s.address,
                user_agent=s.user_agent,
            )
            for s, u in session.execute(query)
            if now - s.last_seen_at <= ctx.settings.session_idle_timeout
        ]


def terminate_session(ctx: ServiceContext, actor: Actor, session_id: int, reason: str) -> None:
    """End another user's web session now (ACC-06). Audited."""
    reason = required_reason(reason)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        row = session.execute(
            select(LoginSession).where(LoginSession.id == session_id).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.ended_at is not None:
            raise NotFound("no such active session")
        row.ended_at = now
        row.end_reason = "terminated"
        user = require(session, User, row.user_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.SESSION_TERMINATED,
            object_type="login_session",
            object_id=session_id,
            new={"user": user.username},
            reason=reason,
            at=now,
        )


def tokens(ctx: ServiceContext, user_id: int | None = None) -> list[TokenRow]:
    with ctx.db.reading() as session:
        query = select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
        if user_id is not None:
            query = query.where(ApiToken.user_id == user_id)
        return [
            TokenRow(
                id=t.id,
                username=u.username,
                name=t.name,
                prefix=t.display_prefix,
                created_at=t.created_at,
                last_used_at=t.last_used_at,
                expires_at=t.expires_at,
                revoked_at=t.revoked_at,
            )
            for t, u in session.execute(query)
        ]


def revoke_token(ctx: ServiceContext, actor: Actor, token_id: int, *, owner_id: int | None = None) -> None:
    """Revoke an API token. With `owner_id`, only that user's own token may be revoked."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        token = session.get(ApiToken, token_id)
        if token is None or (owner_id is not None and token.user_id != owner_id):
            raise NotFound("no such token")
        if token.revoked_at is not None:
            raise Conflict("the token is already revoked")
        token.revoked_at = now
        token.revoked_by_name = actor.name
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.TOKEN_REVOKED,
            object_type="api_token",
            object_id=token_id,
            new={"prefix": token.display_prefix},
            at=now,
        )
