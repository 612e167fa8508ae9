"""The application factory. Everything the application needs is built here from explicit settings
and passed down; nothing is read from globals later."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Flask, Response, request

from allocator import crypto, logs, migrate, resources
from allocator.db import Database
from allocator.services import notifications
from allocator.services.context import ServiceContext, utcnow
from allocator.services.lists import overview
from allocator.settings import Environment, Settings
from allocator.web import register


class StartupError(RuntimeError):
    """The application refuses to start; the message says why and what to do."""


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    ring: crypto.KeyRing | None = None,
    clock: Callable[[], datetime] | None = None,
    passwords: crypto.PasswordHashing | None = None,
) -> Flask:
    """Build the Flask application.

    In production the key directory must hold every key with safe permissions (0700/0600), and
    the database must be at the latest schema; otherwise StartupError (ACC-13)."""
    settings = settings or Settings.from_env()
    logs.configure()
    try:
        ring = ring or crypto.KeyRing.load(settings.key_dir, strict_modes=settings.is_production)
    except crypto.KeyError_ as exc:
        raise StartupError(f"{exc}") from None
    if settings.is_production and db is None:
        current = migrate.current_revision(settings.database_url)
        if current != migrate.head_revision():
            raise StartupError(
                f"the database schema is at {current or 'nothing'}, not {migrate.head_revision()}: run `allocator init`"
            )
    db = db or Database.connect(settings.database_url, limits=settings.db_limits())
    ctx = ServiceContext.build(settings, db, ring, clock=clock or utcnow, passwords=passwords)
    mixed = overview.foreign_lists(ctx)
    if mixed:
        # RND-13: a production instance never holds a TEST list, and the reverse.
        raise StartupError(
            f"this {settings.env.value} instance holds lists of the other mode ({', '.join(mixed)}): refusing to start"
        )

    app = Flask(
        "allocator", template_folder=str(resources.templates()), static_folder=str(resources.static())
    )
    app.config.update(
        SECRET_KEY=crypto.session_secret(ring),
        DEBUG=False,  # ACC-13: never the Werkzeug debugger, in any environment
        PROPAGATE_EXCEPTIONS=False,
        SESSION_COOKIE_NAME="__Host-allocator" if settings.secure_cookies else "allocator",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=settings.session_absolute_lifetime,
        # The cookie is sent only when the session changes: a request that changes nothing (a scan
        # check answering late) must not put back the session as it was before a POST that left
        # its outcome there for the next GET. Its expiry stays login + the absolute lifetime.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (server-side) session
        WTF_CSRF_SSL_STRICT=settings.env is not Environment.DEVELOPMENT,
        MAX_CONTENT_LENGTH=5 * 1024 * 1024,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.jinja_env.autoescape = True
    app.extensions["allocator"] = ctx
    register(app, ctx)
    if settings.smtp_host:
        _send_mail_after_changes(app, notifications.Outbox(ctx))
    return app


def _send_mail_after_changes(app: Flask, outbox: notifications.Outbox) -> None:
    """Deliver the e-mail outbox in the background after every successful change (BLD-10); the
    request never waits for the SMTP relay."""
    app.extensions["allocator.outbox"] = outbox

    @app.after_request
    def wake_outbox(response: Response) -> Response:
        if request.method == "POST" and response.status_code < 400:
            outbox.wake()
        return response
