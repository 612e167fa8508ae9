"""Authentication: password login with throttling, second factor, server-side sessions, API tokens.

Sessions live in the database (LoginSession): the browser holds a random id whose digest is
stored, so logout, expiry, an administrator's termination or a deactivation end it for every
server process at once (ACC-06, BLD-11). Roles are re-read on every request, never cached in the
session (BLD-11).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.orm import Session

from allocator import crypto, passwords
from allocator.audit import SYSTEM_CHAIN, Action, Actor
from allocator.db import Direct, insert_if_absent, require
from allocator.models import ApiToken, LoginSession, LoginThrottle, User
from allocator.permissions import Access, Grant
from allocator.services.accounts.users import GRANTS_IN_FORCE, active_grants, grants_from_rows
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    DomainError,
    FieldProblem,
    TooManyRequests,
    Unauthenticated,
    ValidationFailed,
)

_TOUCH_EVERY = timedelta(seconds=60)
_DUMMY_HASH: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request comes from (for throttling and the audit trail)."""

    address: str
    user_agent: str
    request_id: str
    device: str | None = None  # the device cookie sent with a sign-in, if any


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    session_token: str
    user_id: int
    must_change_password: bool
    needs_totp: bool  # enrolled: the code must be entered before anything else
    needs_totp_enrollment: bool  # required by a role but not yet enrolled
    device_cookie: str = ""  # to keep in the browser: its sign-ins no longer share the account's lockout


def anonymous(client: Client, username: str = "-") -> Actor:
    return Actor(
        user_id=None,
        username=username[:64],
        name="(not signed in)",
        role="anonymous",
        request_id=client.request_id,
        address=client.address,
    )


def user_actor(user: User, role: str, client: Client, site_code: str | None = None) -> Actor:
    return Actor(
        user_id=user.id,
        username=user.username,
        name=user.full_name,
        role=role,
        site_code=site_code,
        request_id=client.request_id,
        address=client.address,
    )


def login(ctx: ServiceContext, username: str, password: str, client: Client) -> LoginOutcome:
    """Check a username and password and open a session.

    Raises Unauthenticated with one generic message for an unknown user, a wrong password or a
    deactivated account (no enumeration), and TooManyRequests while the account or the address is
    locked out (ACC-05) — even for the right password. Failures and lockouts are audited: they are
    committed first, and the error is raised after the unit of work.

    Lockout without a denial of service (issue 15): a browser in which the user has signed in before
    carries a device cookie, and its attempts count against that device alone; only attempts
    without one share the account's counter. So five wrong passwords sent from anywhere lock the
    account for unknown browsers, while its owner still signs in from their own; a stolen cookie
    gives five guesses per lockout period, like before."""
    username = username.strip().lower()[:64]
    with ctx.db.unit_of_work() as session:
        outcome = _attempt_login(ctx, session, username, password, client)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def _attempt_login(
    ctx: ServiceContext, session: Session, username: str, password: str, client: Client
) -> LoginOutcome | DomainError:
    now = ctx.now()
    device = crypto.device_nonce(ctx.ring, username, client.device)
    first = f"device:{device}" if device is not None else f"account:{username}"
    throttles = [throttle_row(session, key, now, ctx) for key in (first, f"address:{client.address}")]
    locked = [t.locked_until for t in throttles if t.locked_until is not None and t.locked_until > now]
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()

    def failed(cause: str) -> None:
        ctx.audit.record(
            session,
            actor=anonymous(client, username),
            chain=SYSTEM_CHAIN,
            action=Action.LOGIN_FAILED,
            object_type="user",
            object_id=username,
            new={"cause": cause},
            at=now,
        )

    if locked:
        failed("locked out")
        return TooManyRequests(
            f"too many failed attempts: try again after {max(locked).strftime('%H:%M')} UTC, or ask an administrator"
        )
    valid = _check_password(ctx, user, password)
    if user is None or not valid or not user.is_active:
        failed("unknown user" if user is None else ("deactivated" if valid else "wrong password"))
        for throttle, limit in zip(throttles, _limits(ctx), strict=True):
            count_failed_attempt(ctx, session, throttle, limit, now, client, username)
        return Unauthenticated("the user name or the password is wrong")
    throttles[0].failures = 0
    throttles[0].locked_until = None
    if crypto.password_needs_rehash(user.password_hash, ctx.passwords):
        user.password_hash = crypto.hash_password(passwords.normalise(password), ctx.passwords)
    token = crypto.new_token("s")
    row = LoginSession(
        user_id=user.id,
        token_digest=crypto.token_digest(token),
        created_at=now,
        last_seen_at=now,
        expires_at=now + ctx.settings.session_absolute_lifetime,
        address=client.address[:64],
        user_agent=client.user_agent[:300],
        mfa_verified=False,
    )
    session.add(row)
    session.flush()
    ctx.audit.record(
        session,
        actor=user_actor(user, "user", client),
        chain=SYSTEM_CHAIN,
        action=Action.LOGIN,
        object_type="login_session",
        object_id=row.id,
        at=now,
    )
    enrolled = user.totp_enabled_at is not None
    return LoginOutcome(
        session_token=token,
        user_id=user.id,
        must_change_password=user.must_change_password,
        needs_totp=enrolled,
        needs_totp_enrollment=not enrolled and Access(active_grants(session, user.id, now)).needs_mfa(),
        device_cookie=crypto.device_cookie(ctx.ring, username, device),
    )


def _limits(ctx: ServiceContext) -> tuple[int, int]:
    return (ctx.settings.login_max_failures_per_account, ctx.settings.login_max_failures_per_address)


def _check_password(ctx: ServiceContext, user: User | None, password: str) -> bool:
    if user is None:
        # Spend the same time as for a real account so that timing does not reveal usernames.
        if "hash" not in _DUMMY_HASH:
            _DUMMY_HASH["hash"] = crypto.hash_password("not-a-real-password-0", ctx.passwords)
        crypto.verify_password(_DUMMY_HASH["hash"], password, ctx.passwords)
        return False
    return crypto.verify_password(user.password_hash, passwords.normalise(password), ctx.passwords)


def throttle_row(session: Session, key: str, now: datetime, ctx: ServiceContext) -> LoginThrottle:
    insert_if_absent(
        session,
        LoginThrottle,
        {"key": key[:200], "failures": 0, "window_started_at": now, "locked_until": None},
    )
    throttle = session.execute(
        select(LoginThrottle).where(LoginThrottle.key == key[:200]).with_for_update()
    ).scalar_one()
    session.refresh(throttle)
    if now - throttle.window_started_at > ctx.settings.login_failure_window and (
        throttle.locked_until is None or throttle.locked_until <= now
    ):
        throttle.failures = 0
        throttle.window_started_at = now
        throttle.locked_until = None
    return throttle


def count_failed_attempt(
    ctx: ServiceContext,
    session: Session,
    throttle: LoginThrottle,
    limit: int,
    now: datetime,
    client: Client,
    username: str,
) -> None:
    throttle.failures += 1
    if throttle.failures >= limit and (throttle.locked_until is None or throttle.locked_until <= now):
        throttle.locked_until = now + ctx.settings.login_lockout
        ctx.audit.record(
            session,
            actor=anonymous(client, username),
            chain=SYSTEM_CHAIN,
            action=Action.LOCKED_OUT,
            object_type="login_throttle",
            object_id=throttle.key,
            new={"failures": throttle.failures, "locked_until": throttle.locked_until.isoformat()},
            at=now,
        )


# --- per-request resolution ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The user behind a request, with roles read now (BLD-11)."""

    user_id: int
    username: str
    full_name: str
    access: Access
    session_id: int | None  # None for bearer tokens
    must_change_password: bool
    mfa_pending: bool  # enrolled, code not yet entered in this session
    mfa_enrollment_required: bool
    totp_enrolled: bool
    language: str | None = None  # the interface language chosen on the account, if any


def _credential_look_up(credential: type[LoginSession] | type[ApiToken], *columns: Any) -> Direct:
    """The credential whose digest is bound as `digest` (its `columns`), its user and the user's
    roles in force at the bound `now`, in one Core statement: one row per role, or one row without
    a role (give the rows to `grants_from_rows`)."""
    return Direct(
        select(
            *columns,
            User.id.label("user_id"),
            User.username,
            User.full_name,
            User.is_active,
            User.must_change_password,
            User.totp_enabled_at,
            User.language,
            GRANTS_IN_FORCE.c.id.label("assignment_id"),
            GRANTS_IN_FORCE.c.role,
            GRANTS_IN_FORCE.c.trial_id,
            GRANTS_IN_FORCE.c.site_id,
        )
        .join(User, User.id == credential.user_id)
        .outerjoin(GRANTS_IN_FORCE, GRANTS_IN_FORCE.c.user_id == User.id)
        .where(credential.token_digest == bindparam("digest"))
        .order_by(GRANTS_IN_FORCE.c.id)
    )


# A web session (every page runs it, through the request guard). The ORM's select, get and the
# separate roles' read cost about 0.6 ms of CPU a page in process (README, issue 16's twelfth
# look), as they did for the API before the bearer look-up below (issue 16).
_SESSION = _credential_look_up(
    LoginSession,
    LoginSession.id,
    LoginSession.ended_at,
    LoginSession.last_seen_at,
    LoginSession.expires_at,
    LoginSession.mfa_verified,
)


def resolve_session(
    ctx: ServiceContext,
    token: str,
    session: Session | None = None,
    later: list[Callable[[], None]] | None = None,
) -> Authenticated | None:
    """The user of a web session id, or None if the session is unknown, ended, expired (idle or
    absolute) or the account is deactivated. Expiry ends the session row and is audited.

    Reads in `session` when given (the request guard's read transaction), else in its own. The
    writes it needs (ending the session, noting activity) never run inside a read transaction:
    they are appended to `later` for the caller to run once its read is over, or run here after
    the own read has closed."""
    if session is None:
        writes: list[Callable[[], None]] = []
        with ctx.db.reading() as own:
            result = resolve_session(ctx, token, own, writes)
        for write in writes:
            write()
        return result
    pending = later if later is not None else []
    now = ctx.now()
    rows = _SESSION.rows(session.connection(), {"digest": crypto.token_digest(token), "now": now})
    row = rows[0] if rows else None
    if row is None or row.ended_at is not None:
        return None
    idle = now - row.last_seen_at > ctx.settings.session_idle_timeout
    expired = now >= row.expires_at
    if idle or expired or not row.is_active:
        reason = "idle" if idle else ("expired" if expired else "deactivated")
        pending.append(lambda: end_session(ctx, token, reason, None))
        return None
    result = _authenticated(
        row.user_id,
        row.username,
        row.full_name,
        totp_enrolled=row.totp_enabled_at is not None,
        must_change_password=row.must_change_password,
        grants=grants_from_rows((r.assignment_id, r.role, r.trial_id, r.site_id) for r in rows),
        session_id=row.id,
        mfa_verified=row.mfa_verified,
        language=row.language,
    )
    if now - row.last_seen_at > _TOUCH_EVERY:
        session_id = row.id
        pending.append(
            lambda: _touch(ctx, update(LoginSession).where(LoginSession.id == session_id), last_seen_at=now)
        )
    return result


def _touch(ctx: ServiceContext, statement: Update, **values: datetime) -> None:
    with ctx.db.unit_of_work() as writing:
        writing.execute(statement.values(**values))


def _authenticated(
    user_id: int,
    username: str,
    full_name: str,
    *,
    totp_enrolled: bool,
    must_change_password: bool,
    grants: tuple[Grant, ...],
    session_id: int | None,
    mfa_verified: bool,
    language: str | None = None,
) -> Authenticated:
    access = Access(grants)
    return Authenticated(
        user_id=user_id,
        username=username,
        full_name=full_name,
        access=access,
        session_id=session_id,
        must_change_password=must_change_password,
        mfa_pending=totp_enrolled and not mfa_verified and session_id is not None,
        mfa_enrollment_required=not totp_enrolled and access.needs_mfa(),
        totp_enrolled=totp_enrolled,
        language=language,
    )


# An API token (every API request runs it).
_BEARER = _credential_look_up(
    ApiToken, ApiToken.id, ApiToken.revoked_at, ApiToken.expires_at, ApiToken.last_used_at
)


def resolve_bearer(
    ctx: ServiceContext,
    token: str,
    session: Session | None = None,
    later: list[Callable[[], None]] | None = None,
) -> Authenticated | None:
    """The user of an API bearer token, or None (unknown, revoked, expired, user deactivated).

    Only the token's SHA-256 digest is stored and looked up. A token acts with its user's roles at
    the time of the request (BLD-11): they are read on every call, never remembered. Reads in
    `session` when given (the request guard's read transaction), else in its own; the write that
    notes the token's use goes to `later` as in `resolve_session`."""
    if session is None:
        writes: list[Callable[[], None]] = []
        with ctx.db.reading() as own:
            result = resolve_bearer(ctx, token, own, writes)
        for write in writes:
            write()
        return result
    pending = later if later is not None else []
    now = ctx.now()
    rows = _BEARER.rows(session.connection(), {"digest": crypto.token_digest(token), "now": now})
    row = rows[0] if rows else None
    if (
        row is None
        or row.revoked_at is not None
        or (row.expires_at is not None and row.expires_at <= now)
        or not row.is_active
        or row.must_change_password
    ):
        return None
    result = _authenticated(
        row.user_id,
        row.username,
        row.full_name,
        totp_enrolled=row.totp_enabled_at is not None,
        must_change_password=row.must_change_password,
        grants=grants_from_rows((r.assignment_id, r.role, r.trial_id, r.site_id) for r in rows),
        session_id=None,
        mfa_verified=True,
    )
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        token_id = row.id
        pending.append(lambda: _touch(ctx, update(ApiToken).where(ApiToken.id == token_id), last_used_at=now))
    return result


def end_session(ctx: ServiceContext, token: str, reason: str, client: Client | None) -> None:
    """End a web session (logout, expiry). Idempotent. Audited."""
    now = ctx.now()
    digest = crypto.token_digest(token)
    with ctx.db.unit_of_work() as session:
        row = session.execute(
            select(LoginSession).where(LoginSession.token_digest == digest).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.ended_at is not None:
            return
        row.ended_at = now
        row.end_reason = reason
        user = require(session, User, row.user_id)
        actor = (
            user_actor(user, "user", client)
            if client is not None
            else Actor(user_id=user.id, username=user.username, name=user.full_name, role="user")
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.LOGOUT if reason == "logout" else Action.SESSION_EXPIRED,
            object_type="login_session",
            object_id=row.id,
            new={"reason": reason},
            at=now,
        )


def change_password(
    ctx: ServiceContext, user_id: int, current: str, new: str, confirm: str, client: Client
) -> None:
    """Change one's own password (re-entering the current one). Raises ValidationFailed naming the
    field. Clears the must-change flag. Audited."""
    if new != confirm:
        raise ValidationFailed(
            "the passwords differ", errors=[FieldProblem("confirm", "does not match the new password")]
        )
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = require(session, User, user_id)
        if not crypto.verify_password(user.password_hash, passwords.normalise(current), ctx.passwords):
            raise ValidationFailed(
                "the current password is wrong", errors=[FieldProblem("current", "is wrong")]
            )
        problems = passwords.problems(new, username=user.username, full_name=user.full_name)
        if passwords.normalise(new) == passwords.normalise(current):
            problems.append("must differ from the current password")
        if problems:
            raise ValidationFailed(
                "the new password is not acceptable", errors=[FieldProblem("new", p) for p in problems]
            )
        user.password_hash = crypto.hash_password(passwords.normalise(new), ctx.passwords)
        user.password_changed_at = now
        user.must_change_password = False
        ctx.audit.record(
            session,
            actor=user_actor(user, "user", client),
            chain=SYSTEM_CHAIN,
            action=Action.PASSWORD_CHANGED,
            object_type="user",
            object_id=user.username,
            at=now,
        )


# --- second factor (TOTP, RFC 6238; ACC-04) --------------------------------------------------

TOTP_ISSUER = "allocator"


def _totp_binding(username: str, column: str) -> crypto.Binding:
    return crypto.Binding(trial="-", table="app_user", row=username, column=column)


ENROLLMENT_VALIDITY = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class TotpEnrollment:
    secret_base32: str  # for typing into an authenticator by hand
    uri: str  # otpauth:// URI, shown once as a QR code
    ticket: str  # the secret sealed for this user, carried by the confirmation form


def start_totp_enrollment(ctx: ServiceContext, user_id: int) -> TotpEnrollment:
    """A new secret to enrol. Nothing is written (no state change on GET, ASVS): the secret travels
    to the confirmation form sealed (AES-GCM, bound to the user, valid 15 minutes) as a ticket."""
    secret = crypto.new_totp_secret()
    with ctx.db.reading() as session:
        user = require(session, User, user_id)
        issued = ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ").encode("ascii")
        sealed = crypto.seal(
            ctx.ring,
            crypto.Purpose.ACCOUNTS,
            issued + b"|" + secret,
            _totp_binding(user.username, "totp_enrollment"),
        )
        return _enrollment(secret, user.username, base64.urlsafe_b64encode(sealed).decode("ascii"))


def enrollment_from_ticket(ctx: ServiceContext, user_id: int, ticket: str) -> TotpEnrollment:
    """The enrolment a form ticket carries (to show it again after a mistyped code)."""
    with ctx.db.reading() as session:
        user = require(session, User, user_id)
        secret = _open_ticket(ctx, user, ticket)
        return _enrollment(secret, user.username, ticket)


def _open_ticket(ctx: ServiceContext, user: User, ticket: str) -> bytes:
    expired = ValidationFailed(
        "the enrolment expired; scan the new code", errors=[FieldProblem("code", "start again")]
    )
    try:
        raw = crypto.open_sealed(
            ctx.ring,
            crypto.Purpose.ACCOUNTS,
            base64.urlsafe_b64decode(ticket.encode("ascii")),
            _totp_binding(user.username, "totp_enrollment"),
        )
    except (ValueError, crypto.SealError, crypto.KeyMissingError):
        raise expired from None
    issued_raw, _, secret = raw.partition(b"|")
    issued = datetime.strptime(issued_raw.decode("ascii"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if not timedelta(0) <= ctx.now() - issued <= ENROLLMENT_VALIDITY:
        raise expired
    return secret


def _enrollment(secret: bytes, username: str, ticket: str) -> TotpEnrollment:
    return TotpEnrollment(
        secret_base32=base64.b32encode(secret).decode("ascii").rstrip("="),
        uri=crypto.totp_uri(secret, username, TOTP_ISSUER),
        ticket=ticket,
    )


def confirm_totp_enrollment(
    ctx: ServiceContext,
    user_id: int,
    session_id: int | None,
    code: str,
    client: Client,
    *,
    ticket: str,
    current_password: str | None = None,
) -> None:
    """Activate the ticket's secret if `code` matches it; the current session counts as verified.

    Replacing an authenticator that is already enrolled also needs the current password, so that
    a borrowed open session cannot swap the second factor."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = require(session, User, user_id)
        if user.totp_enabled_at is not None and not crypto.verify_password(
            user.password_hash, passwords.normalise(current_password or ""), ctx.passwords
        ):
            raise ValidationFailed(
                "replacing the authenticator needs your password",
                errors=[FieldProblem("password", "is wrong")],
            )
        secret = _open_ticket(ctx, user, ticket)
        step = crypto.totp_verify(secret, code, now, last_step=None)
        if step is None:
            raise ValidationFailed(
                "the code does not match",
                errors=[FieldProblem("code", "does not match; check the time on your phone")],
            )
        user.totp_secret_sealed = crypto.seal(
            ctx.ring, crypto.Purpose.ACCOUNTS, secret, _totp_binding(user.username, "totp_secret")
        )
        user.totp_enabled_at = now
        user.totp_last_step = step
        if session_id is not None:
            session.execute(
                update(LoginSession).where(LoginSession.id == session_id).values(mfa_verified=True)
            )
        ctx.audit.record(
            session,
            actor=user_actor(user, "user", client),
            chain=SYSTEM_CHAIN,
            action=Action.TOTP_ENROLLED,
            object_type="user",
            object_id=user.username,
            at=now,
        )


def check_totp(ctx: ServiceContext, session: Session, user: User, code: str, now: datetime) -> bool:
    """Check a code against the user's enrolled secret, refusing replays. Updates the last step."""
    if user.totp_secret_sealed is None:
        return False
    secret = crypto.open_sealed(
        ctx.ring,
        crypto.Purpose.ACCOUNTS,
        user.totp_secret_sealed,
        _totp_binding(user.username, "totp_secret"),
    )
    step = crypto.totp_verify(secret, code, now, last_step=user.totp_last_step)
    if step is None:
        return False
    user.totp_last_step = step
    return True


def verify_second_factor(
    ctx: ServiceContext, user_id: int, session_id: int, code: str, client: Client
) -> None:
    """Complete a sign-in with the second factor. Wrong codes count toward the account lockout
    (committed before the error is raised)."""
    with ctx.db.unit_of_work() as session:
        failure = _attempt_second_factor(ctx, session, user_id, session_id, code, client)
    if failure is not None:
        raise failure


def _attempt_second_factor(
    ctx: ServiceContext, session: Session, user_id: int, session_id: int, code: str, client: Client
) -> DomainError | None:
    now = ctx.now()
    user = require(session, User, user_id)
    throttle = throttle_row(session, f"account:{user.username}", now, ctx)
    if throttle.locked_until is not None and throttle.locked_until > now:
        return TooManyRequests("too many failed attempts: try again later, or ask an administrator")
    actor = user_actor(user, "user", client)
    if check_totp(ctx, session, user, code, now):
        throttle.failures = 0
        session.execute(update(LoginSession).where(LoginSession.id == session_id).values(mfa_verified=True))
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.LOGIN,
            object_type="login_session",
            object_id=session_id,
            new={"factor": "totp"},
            at=now,
        )
        return None
    ctx.audit.record(
        session,
        actor=actor,
        chain=SYSTEM_CHAIN,
        action=Action.LOGIN_FAILED,
        object_type="user",
        object_id=user.username,
        new={"cause": "wrong second factor"},
        at=now,
    )
    count_failed_attempt(
        ctx, session, throttle, ctx.settings.login_max_failures_per_account, now, client, user.username
    )
    return ValidationFailed("the code is wrong", errors=[FieldProblem("code", "is wrong or already used")])
