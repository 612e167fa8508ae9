"""The request guard: authentication, forced account steps, permission checks, security headers.

Deny by default: the guard runs before every view; a view that is neither `@public` nor declares
a permission with `@requires` is refused (and a test fails on it). Handlers never repeat access
checks: they ask `scope()` for the sites where the permission holds and hand it to the service.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import ColumnElement, Integer, Row, and_, any_, bindparam, cast, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as BaseResponse

from allocator.audit import SYSTEM_CHAIN, Action, Actor
from allocator.db import Direct
from allocator.logs import log_event
from allocator.models import Site, Trial, TrialDefinitionVersion
from allocator.models.base import IntegerArrayText
from allocator.permissions import Permission, Scope, declared_permission, is_public
from allocator.services import auth as auth_service
from allocator.services import lookups
from allocator.services.auth import Authenticated, Client
from allocator.services.context import ServiceContext
from allocator.services.errors import Forbidden, NotFound, Unauthenticated
from allocator.trialdef import TrialDefinition

csrf = CSRFProtect()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
SESSION_KEY = "sid"

# Endpoints a user may reach while a forced step (password change, second factor) is pending.
_FORCED_STEP_ENDPOINTS = {
    "auth.logout",
    "auth.change_password",
    "auth.totp",
    "auth.totp_enroll",
    "static",
}


@dataclass(frozen=True, slots=True)
class TrialContext:
    id: int
    code: str
    # Codes of the trial's sites named in the user's grants (read with the trial, for `actor`).
    site_codes: Mapping[int, str] = field(default_factory=dict)
    # The definition in force as the guard read it (version and digest): `definition_of` finds it
    # among the parsed definitions without another read.
    definition_version: int = 0
    definition_sha256: str = ""


def ctx() -> ServiceContext:
    service_context: ServiceContext = current_app.extensions["allocator"]
    return service_context


def definition_of(trial_code: str) -> TrialDefinition:
    """The definition in force of the request's trial: the one the guard saw, when it is already
    parsed (no read at all), else read. Issue 16: the API's randomization asked the database again
    whether its trial registers or randomizes, about 1.2 ms of a randomization's CPU."""
    seen: TrialContext | None = g.get("trial")
    if seen is not None and seen.code == trial_code:
        parsed = lookups.parsed_definition(seen.code, seen.definition_version, seen.definition_sha256)
        if parsed is not None:
            return parsed
    return lookups.trial_definition(ctx(), trial_code)


DEVICE_COOKIE = "allocator_device"


def client() -> Client:
    return Client(
        address=request.remote_addr or "-",
        user_agent=(request.user_agent.string or "-")[:300],
        request_id=g.get("request_id", "-"),
        device=request.cookies.get(DEVICE_COOKIE),
    )


def current_user() -> Authenticated:
    auth: Authenticated | None = g.get("auth")
    if auth is None:
        raise Unauthenticated("sign in first")
    return auth


def current_trial() -> TrialContext:
    trial: TrialContext | None = g.get("trial")
    if trial is None:
        raise NotFound("no trial in this request")
    return trial


def holds_any(*permissions: Permission) -> bool:
    """Whether the current user holds one of `permissions` in the current trial."""
    user, trial = current_user(), current_trial()
    return any(user.access.has(p, trial.id) for p in permissions)


def scope(permission: Permission) -> Scope:
    """Sites of the current trial where the current user holds `permission`."""
    return current_user().access.scope(permission, current_trial().id)


def actor(permission: Permission) -> Actor:
    """The audit actor for an action done under `permission` in the current request."""
    auth = current_user()
    trial = g.get("trial")
    trial_id = trial.id if trial else None
    role = auth.access.acting_role(permission, trial_id)
    site_code = None
    if trial is not None:
        site_id = auth.access.site_for(permission, trial.id)
        if site_id is not None:
            site_code = trial.site_codes.get(site_id)
            if site_code is None:  # pragma: no cover - the guard read every granted site of the trial
                with ctx().db.reading() as s:
                    site = s.get(Site, site_id)
                    site_code = site.code if site else None
    c = client()
    return Actor(
        user_id=auth.user_id,
        username=auth.username,
        name=auth.full_name,
        role=role.value if role else "user",
        site_code=site_code,
        request_id=c.request_id,
        address=c.address,
    )


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def _authenticate(
    service: ServiceContext, db_session: Session, later: list[Callable[[], None]]
) -> Authenticated | None:
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer ") or not is_api_request():
            return None
        g.auth_method = "bearer"
        return auth_service.resolve_bearer(service, header.removeprefix("Bearer ").strip(), db_session, later)
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        return None
    g.auth_method = "session"
    auth = auth_service.resolve_session(service, token, db_session, later)
    if auth is None:
        clear_session()
    return auth


# The trial of the URL, the digest of its definition in force and the codes of its sites that the
# user's grants name, in one statement.
def _trial_and_granted_sites(granted: ColumnElement[bool]) -> Direct:
    return Direct(
        select(
            Trial.id,
            Trial.code,
            Site.id.label("site_id"),
            Site.code.label("site_code"),
            Trial.definition_version,
            TrialDefinitionVersion.sha256,
        )
        .join(
            TrialDefinitionVersion,
            and_(
                TrialDefinitionVersion.trial_id == Trial.id,
                TrialDefinitionVersion.version == Trial.definition_version,
            ),
        )
        .outerjoin(Site, and_(Site.trial_id == Trial.id, granted))
        .where(Trial.code == bindparam("code"))
    )


# PostgreSQL: the granted site ids as one array parameter, so that the statement is the same for
# any number of sites (an expanding IN list is rendered again for every execution, and cannot go
# to the driver directly, see `Direct`); SQLite expands the IN list.
_TRIAL_AND_GRANTED_SITES = {
    "sqlite": _trial_and_granted_sites(Site.id.in_(bindparam("site_ids", expanding=True))),
    "postgresql": _trial_and_granted_sites(
        Site.id == any_(cast(bindparam("site_ids", type_=IntegerArrayText()), postgresql.ARRAY(Integer)))
    ),
}


def _guard() -> BaseResponse | None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if _REQUEST_ID.match(supplied) else secrets.token_hex(8)
    if request.endpoint is None:
        return None  # 404 / 405, answered by the error handlers
    view = current_app.view_functions.get(request.endpoint)
    if view is None or is_public(view):
        return None
    permission = declared_permission(view)
    if permission is None:
        log_event("endpoint without a declared permission refused", endpoint=request.endpoint)
        raise Forbidden("this page is not available")
    service = ctx()
    trial_code = (request.view_args or {}).get("trial")
    # One read for the user, their roles as of now (BLD-11) and the trial: two statements.
    later: list[Callable[[], None]] = []  # writes (session expiry, last use) run after the read

    def read(
        db_session: Session,
    ) -> tuple[Authenticated | None, Sequence[Row[int, str, int, str, int, str]]]:
        later.clear()  # a read retried after a dropped connection starts afresh
        auth = _authenticate(service, db_session, later)
        rows: Sequence[Row[int, str, int, str, int, str]] = ()
        if auth is not None and trial_code is not None:
            granted = sorted({grant.site_id for grant in auth.access.grants if grant.site_id is not None})
            # Through the session's connection (Core): the columns need no ORM loading, and the
            # ORM's execution layer cost about as much as the statement (issue 16).
            connection = db_session.connection()
            rows = _TRIAL_AND_GRANTED_SITES[connection.dialect.name].rows(
                connection, {"code": trial_code, "site_ids": granted}
            )
        return auth, rows

    # Autocommit: the guard's two statements without BEGIN and COMMIT on PostgreSQL (issue 16).
    auth, rows = service.db.read(read, autocommit=True)
    for write in later:
        write()
    if auth is None:
        if is_api_request():
            raise Unauthenticated("a valid bearer token or session is required")
        return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
    g.auth = auth
    unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
    if g.get("auth_method") == "session" and is_api_request() and unsafe:
        # Pages are covered by CSRFProtect itself; the API blueprint is exempt from it because
        # bearer requests carry no cookie, so a cookie-authenticated API call is checked here.
        csrf.protect()
    trial_id = None
    if trial_code is not None:
        if not rows:
            raise NotFound(f"no trial {trial_code!r}")
        g.trial = TrialContext(
            id=rows[0].id,
            code=rows[0].code,
            site_codes={row.site_id: row.site_code for row in rows if row.site_id is not None},
            definition_version=rows[0].definition_version,
            definition_sha256=rows[0].sha256,
        )
        trial_id = rows[0].id
    if not auth.access.has(permission, trial_id):
        _record_denial(service, auth, permission, trial_code)
        raise Forbidden("your roles do not allow this")
    if g.get("auth_method") == "session":
        step = _forced_step(auth)
        if step is not None and request.endpoint not in _FORCED_STEP_ENDPOINTS:
            if is_api_request():
                raise Forbidden("finish signing in first (password change or second factor)")
            return redirect(url_for(step))
    return None


def _forced_step(auth: Authenticated) -> str | None:
    if auth.mfa_pending:
        return "auth.totp"
    if auth.must_change_password:
        return "auth.change_password"
    if auth.mfa_enrollment_required:
        return "auth.totp_enroll"
    return None


def _record_denial(
    service: ServiceContext, auth: Authenticated, permission: Permission, trial_code: str | None
) -> None:
    """ACC/AUD: permission refusals are audited (on the trial's chain when there is one)."""
    c = client()
    with service.db.unit_of_work() as s:
        service.audit.record(
            s,
            actor=Actor(
                user_id=auth.user_id,
                username=auth.username,
                name=auth.full_name,
                role="user",
                request_id=c.request_id,
                address=c.address,
            ),
            chain=trial_code or SYSTEM_CHAIN,
            action=Action.PERMISSION_DENIED,
            object_type="endpoint",
            object_id=request.endpoint or request.path,
            new={"permission": permission.value, "method": request.method, "path": request.path[:200]},
            at=service.now(),
        )


_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)


def _headers(response: Response) -> Response:
    """ACC-09 security headers on every response; no caching of anything dynamic (BLD-14)."""
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(self), microphone=(), geolocation=(), payment=()"
    if ctx().settings.secure_cookies:
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    response.headers["X-Request-ID"] = g.get("request_id", "-")
    # Never announce the server software.
    response.headers.pop("Server", None)
    return response


def _log_request(response: Response) -> Response:
    auth: Authenticated | None = g.get("auth")
    log_event(
        "request",
        method=request.method,
        path=request.path,
        endpoint=request.endpoint,
        status=response.status_code,
        request_id=g.get("request_id", "-"),
        user_id=auth.user_id if auth else None,
    )
    return response


def install(app: Flask) -> None:
    csrf.init_app(app)
    app.before_request(_guard)
    app.after_request(_headers)
    app.after_request(_log_request)


def start_session(token: str) -> None:
    """Begin a fresh browser session holding only the server-side session id (new id at login)
    and the interface language chosen before signing in, if any."""
    clear_session()
    session[SESSION_KEY] = token
    session.permanent = True


def clear_session() -> None:
    """Forget everything in the session cookie but the interface language the visitor chose."""
    chosen = session.get("lang")
    session.clear()
    if isinstance(chosen, str):
        session["lang"] = chosen


def safe_path(target: str | None, default: str) -> str:
    """Only same-site relative paths: an open redirect would make phishing links look genuine."""
    if not target:
        return default
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return default
    return target
