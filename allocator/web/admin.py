"""Administration pages: users, roles with history, sessions, tokens, sites and their activation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from allocator.permissions import ROLE_TITLES, Permission, Role, requires
from allocator.services import audit_trail, codebreak, sites
from allocator.services.accounts import user_admin
from allocator.services.accounts import users as accounts_users
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.web import forms
from allocator.web.security import actor, ctx, safe_path, scope

bp = Blueprint("admin", __name__)


_form = forms.text


def _perform(action: Callable[[], object], success: str, target: str, form_id: str | None = None) -> Response:
    """Run one service call for a form: its outcome in plain words, then a redirect (PRG)."""
    return forms.perform(action, success, target, form_id, _labels())


def _labels() -> dict[str, str]:
    """The administration forms' fields as their labels name them."""
    return {
        "username": _("User name"),
        "full_name": _("Printed name (shown on signatures)"),
        "email": _("E-mail (optional)"),
        "role": _("Role"),
        "trial": _("Trial code"),
        "site": _("Site"),
        "ends_on": _("Ends on (optional)"),
        "reason": _("Reason"),
        "approval_date": _("Approval date"),
        "delegation_log_date": _("Delegation log date"),
        "code_break_evidence": _("Code-break material"),
    }


def _date_field(name: str, *, required: bool) -> date | None:
    raw = _form(name)
    if not raw:
        if required:
            raise ValidationFailed(f"{name} is required", errors=[FieldProblem(name, "is required")])
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            f"{name} is not a date", errors=[FieldProblem(name, "must be a date (YYYY-MM-DD)")]
        ) from None


def _required_date(name: str) -> date:
    value = _date_field(name, required=True)
    if value is None:  # pragma: no cover - _date_field(required=True) raises instead
        raise ValidationFailed(f"{name} is required", errors=[FieldProblem(name, "is required")])
    return value


def _end_of(day: date | None) -> datetime | None:
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC) if day else None


def _role_choices(trial_level: bool) -> list[tuple[str, str]]:
    return [(r.value, ROLE_TITLES[r]) for r in Role if trial_level != (r is Role.ADMIN)]


# --- users ------------------------------------------------------------------------------------


@bp.route("/admin/users")
@requires(Permission.USER_MANAGE)
def users() -> str:
    return render_template(
        "admin/users.html",
        users=user_admin.list_users(ctx()),
        roles=_role_choices(False) + _role_choices(True),
        form=forms.recall_for(request.path, "new-user"),
    )


@bp.route("/admin/users", methods=["POST"])
@requires(Permission.USER_MANAGE)
def create_user() -> Response | str:
    role = _form("role")
    try:
        created = accounts_users.create_user(
            ctx(),
            actor(Permission.USER_MANAGE),
            accounts_users.NewUser(
                username=_form("username"), full_name=_form("full_name"), email=_form("email") or None
            ),
            accounts_users.RoleRequest(
                role=role,
                trial_code=_form("trial") or None,
                site_code=_form("site") or None,
                reason=_form("reason") or "initial assignment",
            )
            if role
            else None,
        )
    except DomainError as exc:
        forms.remember(f"{url_for('admin.users')}#new-user", forms.shown(exc, _labels()))
        return redirect(f"{url_for('admin.users')}#new-user", code=303)
    # The one-time password is shown once, in this response only (never in a cookie or a log).
    return render_template(
        "admin/password_issued.html", username=created.username, password=created.one_time_password
    )


@bp.route("/admin/users/<username>")
@requires(Permission.USER_MANAGE)
def user(username: str) -> str:
    row = user_admin.get_user(ctx(), username)
    return render_template(
        "admin/user.html",
        user=row,
        sessions=user_admin.active_sessions(ctx(), row.id),
        tokens=user_admin.tokens(ctx(), row.id),
        roles=_role_choices(trial_level=False) + _role_choices(trial_level=True),
        form=forms.recall_for(request.path, "grant"),
    )


@bp.route("/admin/users/<username>/roles", methods=["POST"])
@requires(Permission.USER_MANAGE)
def grant(username: str) -> Response:
    return _perform(
        lambda: accounts_users.grant_role(
            ctx(),
            actor(Permission.USER_MANAGE),
            username,
            accounts_users.RoleRequest(
                role=_form("role"),
                trial_code=_form("trial") or None,
                site_code=_form("site") or None,
                reason=_form("reason"),
            ),
            ends_at=_end_of(_date_field("ends_on", required=False)),
        ),
        _("Role granted to %(username)s.", username=username),
        url_for("admin.user", username=username),
        "grant",
    )


@bp.route("/admin/users/<username>/roles/<int:assignment_id>/revoke", methods=["POST"])
@requires(Permission.USER_MANAGE)
def revoke(username: str, assignment_id: int) -> Response:
    return _perform(
        lambda: accounts_users.revoke_role(
            ctx(), actor(Permission.USER_MANAGE), assignment_id, _form("reason")
        ),
        _("Role revoked. It stops at the user's next request."),
        url_for("admin.user", username=username),
    )


@bp.route("/admin/users/<username>/<any(deactivate, reactivate):change>", methods=["POST"])
@requires(Permission.USER_MANAGE)
def set_active(username: str, change: str) -> Response:
    reactivate = change == "reactivate"
    return _perform(
        lambda: user_admin.set_active(
            ctx(), actor(Permission.USER_MANAGE), username, reactivate, _form("reason")
        ),
        (
            _("%(username)s reactivated.", username=username)
            if reactivate
            else _("%(username)s deactivated; every session ended.", username=username)
        ),
        url_for("admin.user", username=username),
    )


@bp.route("/admin/users/<username>/reset-password", methods=["POST"])
@requires(Permission.USER_MANAGE)
def reset_password(username: str) -> Response | str:
    try:
        password = user_admin.reset_password(ctx(), actor(Permission.USER_MANAGE), username, _form("reason"))
    except DomainError as exc:
        forms.flash_error(exc, _labels())
        return redirect(url_for("admin.user", username=username), code=303)
    return render_template("admin/password_issued.html", username=username, password=password)


@bp.route("/admin/users/<username>/reset-totp", methods=["POST"])
@requires(Permission.USER_MANAGE)
def reset_totp(username: str) -> Response:
    return _perform(
        lambda: user_admin.reset_totp(ctx(), actor(Permission.USER_MANAGE), username, _form("reason")),
        _("The authenticator of %(username)s was removed.", username=username),
        url_for("admin.user", username=username),
    )


@bp.route("/admin/tokens/<int:token_id>/revoke", methods=["POST"])
@requires(Permission.USER_MANAGE)
def revoke_token(token_id: int) -> Response:
    return _perform(
        lambda: user_admin.revoke_token(ctx(), actor(Permission.USER_MANAGE), token_id),
        _("Token revoked."),
        safe_path(request.form.get("back"), url_for("admin.users")),
    )


# --- sessions ---------------------------------------------------------------------------------


@bp.route("/admin/sessions")
@requires(Permission.SESSION_MANAGE)
def sessions() -> str:
    return render_template(
        "admin/sessions.html",
        sessions=user_admin.active_sessions(ctx()),
        events=audit_trail.security_events(ctx()),
    )


@bp.route("/admin/sessions/<int:session_id>/terminate", methods=["POST"])
@requires(Permission.SESSION_MANAGE)
def terminate(session_id: int) -> Response:
    return _perform(
        lambda: user_admin.terminate_session(
            ctx(), actor(Permission.SESSION_MANAGE), session_id, _form("reason")
        ),
        _("Session ended."),
        safe_path(request.form.get("back"), url_for("admin.sessions")),
    )


# --- roles and sites of one trial --------------------------------------------------------------


@bp.route("/trials/<trial>/roles")
@requires(Permission.ROLE_MANAGE)
def trial_roles(trial: str) -> str:
    return render_template(
        "admin/trial_roles.html",
        trial=trial,
        rows=user_admin.trial_roles(ctx(), trial),
        sites=sites.sites(ctx(), trial),
        # labship (issue 20): the lab technician is offered only where there are samples.
        roles=[
            choice
            for choice in _role_choices(trial_level=True)
            if choice[0] != Role.LAB_TECHNICIAN.value or trial_definition(ctx(), trial).observational
        ],
        form=forms.recall_for(request.path, "grant"),
    )


@bp.route("/trials/<trial>/roles", methods=["POST"])
@requires(Permission.ROLE_MANAGE)
def trial_grant(trial: str) -> Response:
    return _perform(
        lambda: accounts_users.grant_role(
            ctx(),
            actor(Permission.ROLE_MANAGE),
            _form("username"),
            accounts_users.RoleRequest(
                role=_form("role"), trial_code=trial, site_code=_form("site") or None, reason=_form("reason")
            ),
            ends_at=_end_of(_date_field("ends_on", required=False)),
        ),
        _("Role granted."),
        url_for("admin.trial_roles", trial=trial),
        "grant",
    )


@bp.route("/trials/<trial>/roles/<int:assignment_id>/revoke", methods=["POST"])
@requires(Permission.ROLE_MANAGE)
def trial_revoke(trial: str, assignment_id: int) -> Response:
    return _perform(
        lambda: accounts_users.revoke_role(
            ctx(), actor(Permission.ROLE_MANAGE), assignment_id, _form("reason"), only_trial=trial
        ),
        _("Role revoked. It stops at the user's next request."),
        url_for("admin.trial_roles", trial=trial),
    )


@bp.route("/trials/<trial>/unblinded-roles")
@requires(Permission.REPORT_VIEW)
def unblinded_roles(trial: str) -> str:
    """Everyone who ever held an unblinded role (BLD-13; CONSORT 2025 item 19)."""
    return render_template(
        "admin/unblinded_roles.html", trial=trial, rows=user_admin.unblinded_role_history(ctx(), trial)
    )


@bp.route("/trials/<trial>/sites")
@requires(Permission.SITE_MANAGE)
def trial_sites(trial: str) -> str:
    visible = scope(Permission.SITE_MANAGE)
    rows = [s for s in sites.sites(ctx(), trial) if visible.allows_site(s.id)]
    return render_template(
        "admin/trial_sites.html",
        trial=trial,
        sites=rows,
        today=ctx().now().date(),
        form_states={s.code: forms.recall_for(request.path, f"site-{s.code}") for s in rows},
        kits_without_sheet=codebreak.missing_sheets(ctx(), trial),  # UNB-07 checklist
        cohort=trial_definition(ctx(), trial).observational,  # issue 20: no code-break material
    )


@bp.route("/trials/<trial>/sites/<site>/<any(activate, close):change>", methods=["POST"])
@requires(Permission.SITE_MANAGE)
def site_change(trial: str, site: str, change: str) -> Response:
    who = actor(Permission.SITE_MANAGE)
    sites_scope = scope(Permission.SITE_MANAGE)

    def act() -> None:
        if change == "activate":
            sites.activate_site(
                ctx(),
                who,
                trial,
                site,
                approval_date=_required_date("approval_date"),
                delegation_log_date=_required_date("delegation_log_date"),
                code_break_evidence=_form("code_break_evidence"),
                scope=sites_scope,
                reason=_form("reason"),
            )
        else:
            sites.close_site(ctx(), who, trial, site, scope=sites_scope, reason=_form("reason"))

    return _perform(
        act,
        (
            _("Site %(site)s activated.", site=site)
            if change == "activate"
            else _("Site %(site)s closed.", site=site)
        ),
        url_for("admin.trial_sites", trial=trial),
        f"site-{site}",
    )
