"""Blueprints. Thin handlers: parse the request, call one service, render."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from flask import Flask, g

from allocator.permissions import Permission, Role, public
from allocator.services.context import ServiceContext
from allocator.settings import Environment
from allocator.version import __version__
from allocator.web import (
    account,
    admin,
    api,
    audit,
    auth,
    errors,
    hygiene,
    i18n,
    lists,
    main,
    security,
    subjects,
    supply,
)
from allocator.web import codebreak as codebreak_pages
from allocator.web import drills as drill_pages
from allocator.web import excursions as excursion_pages
from allocator.web import exports as export_pages
from allocator.web import lab as lab_pages  # issue 20: lab shipments, receipt, sample accountability
from allocator.web import relabelling as relabelling_pages
from allocator.web import reports as report_pages
from allocator.web import samples as sample_pages
from allocator.web import unblinding as unblinding_pages


def register(app: Flask, ctx: ServiceContext) -> None:
    hygiene.install(app)  # first: nothing below may meet a NUL or a lone surrogate (issue 14)
    security.install(app)
    hygiene.install_form_check(app)  # after the guard and the CSRF check: a refusal has its request id
    i18n.install(app)
    errors.install(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(lists.bp)
    app.register_blueprint(supply.bp)
    app.register_blueprint(excursion_pages.bp)
    app.register_blueprint(relabelling_pages.bp)
    app.register_blueprint(subjects.bp)
    app.register_blueprint(lab_pages.bp)
    app.register_blueprint(sample_pages.bp)  # issue 20: tube sets and their collection
    app.register_blueprint(unblinding_pages.bp)
    app.register_blueprint(codebreak_pages.bp)
    app.register_blueprint(drill_pages.bp)
    app.register_blueprint(report_pages.bp)
    app.register_blueprint(export_pages.bp)
    app.register_blueprint(api.bp)
    security.csrf.exempt(api.bp)
    # Static files (CSS) are on the short public list: the login page needs them.
    public(app.view_functions["static"])

    @app.context_processor
    def _globals() -> dict[str, object]:
        auth_info = g.get("auth")
        trial = g.get("trial")

        def can(permission: Permission) -> bool:
            """Whether the current user holds `permission` here (for showing links only: the
            guard checks every request on the server)."""
            return bool(auth_info and auth_info.access.has(permission, trial.id if trial else None))

        return {
            "can": can,
            "software_version": __version__,
            "environment": ctx.settings.env.value,
            "test_instance": ctx.settings.env is not Environment.PRODUCTION,
            "current_user": auth_info,
            "Permission": Permission,
            "instanceof": isinstance,
            "Role": Role,
        }

    @app.template_filter("utc")
    def _utc(value: datetime | None) -> str:
        if value is None:
            return ""
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    @app.template_filter("paris")
    def _paris(value: str) -> str:
        """An audit time (ISO UTC text) shown in the trials' time zone (AUD-07)."""
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return moment.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d %H:%M:%S %Z")

    @app.template_filter("local")
    def _local(value: datetime | None, zone: str = "Europe/Paris") -> str:
        if value is None:
            return ""
        return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")
