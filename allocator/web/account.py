"""The signed-in user's own account: profile, roles, sessions, API tokens."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from allocator.permissions import Permission, requires
from allocator.services.accounts import user_admin, users
from allocator.services.errors import DomainError
from allocator.web import forms
from allocator.web.security import actor, ctx, current_user

bp = Blueprint("account", __name__)


@bp.route("/account")
@requires(Permission.ACCOUNT_SELF)
def profile() -> str:
    me = current_user()
    return render_template(
        "account/profile.html",
        user=user_admin.get_user(ctx(), me.username),
        sessions=user_admin.active_sessions(ctx(), me.user_id),
        tokens=user_admin.tokens(ctx(), me.user_id),
    )


@bp.route("/account/tokens", methods=["POST"])
@requires(Permission.ACCOUNT_SELF)
def create_token() -> Response | str:
    me = current_user()
    try:
        created = users.create_token(
            ctx(), actor(Permission.ACCOUNT_SELF), me.username, request.form.get("name", "")
        )
    except DomainError as exc:
        forms.flash_error(exc, {"name": _("New token for")})
        return redirect(url_for("account.profile"), code=303)
    # Shown once, in this response only; only a digest is stored.
    return render_template("account/token_issued.html", token=created.token)


@bp.route("/account/tokens/<int:token_id>/revoke", methods=["POST"])
@requires(Permission.ACCOUNT_SELF)
def revoke_token(token_id: int) -> Response:
    me = current_user()
    try:
        user_admin.revoke_token(ctx(), actor(Permission.ACCOUNT_SELF), token_id, owner_id=me.user_id)
    except DomainError as exc:
        forms.flash_error(exc, {"name": _("New token for")})
    else:
        flash(_("Token revoked."), "ok")
    return redirect(url_for("account.profile"), code=303)
