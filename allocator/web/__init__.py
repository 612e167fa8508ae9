"""Blueprints. Thin handlers: parse the request, call one service, render."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, g

from allocator.permissions import Permission, Role, public
from allocator.services.context import ServiceContext
from allocator.settings import Environment
from allocator.version import __version__
from allocator.web import api, auth, errors, main, security


def register(app: Flask, ctx: ServiceContext) -> None:
    security.install(app)
    errors.install(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(api.bp)
    security.csrf.exempt(api.bp)
    # Static files (CSS) are on the short public list: the login page needs them.
    public(app.view_functions["static"])

    @app.context_processor
    def _globals() -> dict[str, object]:
        auth_info = g.get("auth")
        return {
            "software_version": __version__,
            "environment": ctx.settings.env.value,
            "test_instance": ctx.settings.env is not Environment.PRODUCTION,
            "current_user": auth_info,
            "Permission": Permission,
            "Role": Role,
        }

    @app.template_filter("utc")
    def _utc(value: datetime | None) -> str:
        if value is None:
            return ""
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    @app.template_filter("local")
    def _local(value: datetime | None, zone: str = "Europe/Paris") -> str:
        if value is None:
            return ""
        return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
