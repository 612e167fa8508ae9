"""Create users, grant and revoke roles, issue API tokens;
the grants in force for a user."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email import errors, headerregistry, utils

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.audit import SYSTEM_CHAIN, Action, Actor
from allocator.db import require
from allocator.models import ApiToken, RoleAssignment, RoleRevocation, Site, Trial, User
from allocator.permissions import Grant, Role, validate_role_scope
from allocator.services.context import ServiceContext
from allocator.services.errors import AlreadyExists, FieldProblem, Forbidden, NotFound, ValidationFailed
from allocator.services.lookups import current_definition

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")


def single_address(text: str) -> str | None:
    """`text` when it is exactly one plain e-mail address (local@domain), else None.

    Notification e-mails put the address in a `To:` header: a list ("a@x, b@y"), a display name,
    a group, or a line break (which would end the headers early) must never get that far. The
    standard library parses it; anything it reads as more or other than one bare address is refused."""
    if not text or len(text) > 254 or any(c.isspace() or ord(c) < 32 or c in ',;<>()"[]\\' for c in text):
        return None
    try:
        parsed = headerregistry.Address(addr_spec=text)
    except (ValueError, IndexError, errors.HeaderParseError):
        return None
    pairs = utils.getaddresses([text])
    if pairs != [("", text)] or parsed.addr_spec != text or "." not in parsed.domain:
        return None
    return text


_OTP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read aloud over the phone


def one_time_password() -> str:
    """A 16-character one-time password in four groups (about 79 bits from the OS CSPRNG)."""
    chars = "".join(secrets.choice(_OTP_ALPHABET) for _ in range(16))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    full_name: str
    email: str | None = None


@dataclass(frozen=True, slots=True)
class RoleRequest:
    role: str
    trial_code: str | None = None
    site_code: str | None = None
    reason: str = "initial assignment"


@dataclass(frozen=True, slots=True)
class CreatedUser:
    user_id: int
    username: str
    one_time_password: str


def create_user(ctx: ServiceContext, actor: Actor, new: NewUser, role: RoleRequest | None) -> CreatedUser:
    """Create an account with a one-time password that must be changed at first login.

    Effects: the user, optionally a first role grant; both audited. Raises ValidationFailed naming
    the field, AlreadyExists when the username is taken, NotFound for an unknown trial or site."""
    username = new.username.strip().lower()
    problems = []
    if not USERNAME.match(username):
        problems.append(
            FieldProblem("username", "3-64 characters: lower-case letters, digits, '.', '_' or '-'")
        )
    full_name = " ".join(new.full_name.split())
    if not 2 <= len(full_name) <= 200:
        problems.append(FieldProblem("full_name", "is required (the printed name on signatures)"))
    if new.email is not None and single_address(new.email) is None:
        problems.append(FieldProblem("email", "must be one e-mail address, such as name@hospital.fr"))
    if problems:
        raise ValidationFailed("the account cannot be created", errors=problems)
    password = one_time_password()
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        if session.execute(select(User.id).where(User.username == username)).first() is not None:
            raise AlreadyExists(
                f"user {username!r} already exists", errors=[FieldProblem("username", "is taken")]
            )
        user = User(
            username=username,
            full_name=full_name,
            email=new.email,
            password_hash=crypto.hash_password(password, ctx.passwords),
            password_changed_at=now,
            must_change_password=True,
            is_active=True,
            created_at=now,
        )
        session.add(user)
        session.flush()
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.USER_CREATED,
            object_type="user",
            object_id=user.username,
            new={"username": user.username, "full_name": user.full_name, "email": user.email},
            at=now,
        )
        if role is not None:
            _grant(ctx, session, actor, user, role, now, ends_at=None)
        return CreatedUser(user_id=user.id, username=user.username, one_time_password=password)


def grant_role(
    ctx: ServiceContext, actor: Actor, username: str, request: RoleRequest, ends_at: datetime | None = None
) -> int:
    """Grant a role to an existing user. Returns the assignment id. Audited on the trial's chain."""
    with ctx.db.unit_of_work() as session:
        user = _user(session, username)
        return _grant(ctx, session, actor, user, request, ctx.now(), ends_at=ends_at)


def _grant(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    user: User,
    request: RoleRequest,
    now: datetime,
    *,
    ends_at: datetime | None,
) -> int:
    try:
        role = Role(request.role)
    except ValueError:
        raise ValidationFailed(
            f"unknown role {request.role!r}",
            errors=[FieldProblem("role", f"must be one of {', '.join(r.value for r in Role)}")],
        ) from None
    trial = site = None
    if request.trial_code is not None:
        trial = session.execute(select(Trial).where(Trial.code == request.trial_code)).scalar_one_or_none()
        if trial is None:
            raise NotFound(
                f"no trial {request.trial_code!r}", errors=[FieldProblem("trial", "unknown trial")]
            )
    if request.site_code is not None:
        if trial is None:
            raise ValidationFailed("a site needs a trial", errors=[FieldProblem("site", "give --trial too")])
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == request.site_code)
        ).scalar_one_or_none()
        if site is None:
            raise NotFound(
                f"no site {request.site_code!r} in trial {trial.code}",
                errors=[FieldProblem("site", "unknown site")],
            )
    problem = validate_role_scope(role, trial.id if trial else None, site.id if site else None)
    if problem is not None:
        raise ValidationFailed(
            problem, errors=[FieldProblem("site" if "site" in problem else "trial", problem)]
        )
    # Issue 20: the central lab receives an observational study's samples; a randomized trial has
    # none, and its staff must not meet a role that was never meant for it.
    if (
        role is Role.LAB_TECHNICIAN
        and trial is not None
        and not current_definition(session, trial).observational
    ):
        raise ValidationFailed(
            "the lab technician role is for an observational study",
            errors=[FieldProblem("role", "is for an observational study (its central lab)")],
        )
    if not request.reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    if actor.user_id is not None and actor.user_id == user.id:
        # Segregation of duties: nobody grants themselves a role (least of all an unblinded one).
        raise Forbidden("you cannot grant a role to your own account")
    if ends_at is not None and ends_at <= now:
        raise ValidationFailed(
            "the end must be in the future", errors=[FieldProblem("ends_at", "is in the past")]
        )
    assignment = RoleAssignment(
        user_id=user.id,
        role=role.value,
        trial_id=trial.id if trial else None,
        site_id=site.id if site else None,
        starts_at=now,
        ends_at=ends_at,
        granted_at=now,
        granted_by_id=actor.user_id,
        granted_by_name=actor.name,
        reason=request.reason.strip(),
    )
    session.add(assignment)
    session.flush()
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code if trial else SYSTEM_CHAIN,
        action=Action.ROLE_GRANTED,
        object_type="role_assignment",
        object_id=assignment.id,
        site_code=site.code if site else None,
        new={
            "user": user.username,
            "role": role.value,
            "trial": trial.code if trial else None,
            "site": site.code if site else None,
            "ends_at": ends_at.isoformat() if ends_at else None,
        },
        reason=assignment.reason,
        at=now,
    )
    return assignment.id


def revoke_role(
    ctx: ServiceContext, actor: Actor, assignment_id: int, reason: str, *, only_trial: str | None = None
) -> None:
    """End a role assignment now. The assignment row stays; a revocation row records who and why.

    With `only_trial`, the assignment must belong to that trial (a trial manager acting from the
    trial's pages cannot reach another trial's assignments by changing an id)."""
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        assignment = session.get(RoleAssignment, assignment_id)
        trial_of = session.get(Trial, assignment.trial_id) if assignment and assignment.trial_id else None
        if assignment is None or (
            only_trial is not None and (trial_of is None or trial_of.code != only_trial)
        ):
            raise NotFound(f"no role assignment {assignment_id}")
        if session.execute(
            select(RoleRevocation.id).where(RoleRevocation.assignment_id == assignment_id)
        ).first():
            raise AlreadyExists("this role assignment is already revoked")
        session.add(
            RoleRevocation(
                assignment_id=assignment_id,
                revoked_at=now,
                revoked_by_id=actor.user_id,
                revoked_by_name=actor.name,
                reason=reason.strip(),
            )
        )
        trial = session.get(Trial, assignment.trial_id) if assignment.trial_id else None
        site = session.get(Site, assignment.site_id) if assignment.site_id else None
        user = require(session, User, assignment.user_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code if trial else SYSTEM_CHAIN,
            action=Action.ROLE_REVOKED,
            object_type="role_assignment",
            object_id=assignment_id,
            site_code=site.code if site else None,
            old={"user": user.username, "role": assignment.role},
            reason=reason.strip(),
            at=now,
        )


# Built once at import (issue 16): the request guard runs it on every request, and building an ORM
# select and computing its cache key cost more CPU than PostgreSQL spends running it.
def _grants_in_force() -> Select[int, int, str, int | None, int | None]:
    """Every role assignment in force at the bound `now`: started, not ended, not revoked."""
    return (
        select(
            RoleAssignment.user_id,
            RoleAssignment.id,
            RoleAssignment.role,
            RoleAssignment.trial_id,
            RoleAssignment.site_id,
        )
        .outerjoin(RoleRevocation, RoleRevocation.assignment_id == RoleAssignment.id)
        .where(
            RoleRevocation.id.is_(None),
            RoleAssignment.starts_at <= bindparam("now"),
            (RoleAssignment.ends_at.is_(None)) | (RoleAssignment.ends_at > bindparam("now")),
        )
    )


_ACTIVE_GRANTS = (
    _grants_in_force().where(RoleAssignment.user_id == bindparam("user_id")).order_by(RoleAssignment.id)
)
# For statements that read a user and their roles at once (the API's bearer look-up): outer-join
# this on `user_id`, order by `assignment_id`, and give the rows to `grants_from_rows`.
GRANTS_IN_FORCE = _grants_in_force().subquery("grants_in_force")


def grants_from_rows(
    rows: Iterable[tuple[int | None, str | None, int | None, int | None]],
) -> tuple[Grant, ...]:
    """Grants from (assignment id, role, trial id, site id) rows; a row without an assignment (an
    outer join that found none) or with a role retired from the vocabulary grants nothing."""
    grants = []
    for assignment_id, role_name, trial_id, site_id in rows:
        if assignment_id is None or role_name is None:
            continue
        try:
            role = Role(role_name)
        except ValueError:  # a role retired from the vocabulary grants nothing
            continue
        grants.append(Grant(role=role, trial_id=trial_id, site_id=site_id, assignment_id=assignment_id))
    return tuple(grants)


def active_grants(session: Session, user_id: int, now: datetime) -> tuple[Grant, ...]:
    """The user's roles in force at `now`: started, not ended, not revoked."""
    rows = session.connection().execute(_ACTIVE_GRANTS, {"user_id": user_id, "now": now})
    return grants_from_rows((row.id, row.role, row.trial_id, row.site_id) for row in rows)


@dataclass(frozen=True, slots=True)
class CreatedToken:
    token_id: int
    token: str  # shown once, never stored


def create_token(
    ctx: ServiceContext, actor: Actor, username: str, name: str, expires_at: datetime | None = None
) -> CreatedToken:
    """A new API bearer token for `username`. Only its digest is stored; it acts with the
    user's roles at the time of each request, so revoking a role limits the token at once."""
    name = name.strip() or "api"
    if len(name) > 100:
        raise ValidationFailed(
            "the token name is too long", errors=[FieldProblem("name", "at most 100 characters")]
        )
    token = crypto.new_token("alc")
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        user = _user(session, username)
        if not user.is_active:
            raise ValidationFailed(
                f"user {username!r} is deactivated", errors=[FieldProblem("username", "is deactivated")]
            )
        row = ApiToken(
            user_id=user.id,
            name=name,
            token_digest=crypto.token_digest(token),
            display_prefix=token[:10],
            created_at=now,
            created_by_name=actor.name,
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.TOKEN_CREATED,
            object_type="api_token",
            object_id=row.id,
            new={"user": user.username, "name": name, "prefix": row.display_prefix},
            at=now,
        )
        return CreatedToken(token_id=row.id, token=token)


def _user(session: Session, username: str) -> User:
    user = session.execute(select(User).where(User.username == username.strip().lower())).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {username!r}", errors=[FieldProblem("username", "unknown user")])
    return user


LANGUAGES = ("fr", "en")  # the interface languages, French first (the trial's sites are in France)


def set_language(ctx: ServiceContext, actor: Actor, user_id: int, language: str) -> None:
    """Store the interface language a user chose for themselves.

    Effects: the account's language; audited as a user update on the system chain. Raises
    ValidationFailed for a language the interface does not speak."""
    if language not in LANGUAGES:
        raise ValidationFailed(
            "unknown language", errors=[FieldProblem("language", f"one of {', '.join(LANGUAGES)}")]
        )
    with ctx.db.unit_of_work() as session:
        user = require(session, User, user_id)
        if user.language == language:
            return
        old = user.language
        user.language = language
        ctx.audit.record(
            session,
            actor=actor,
            chain=SYSTEM_CHAIN,
            action=Action.USER_UPDATED,
            object_type="user",
            object_id=user.username,
            old={"language": old},
            new={"language": language},
            at=ctx.now(),
        )
