"""Sign in, sign out, forced password change, second factor."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from allocator.permissions import Permission, public, requires
from allocator.services import auth as auth_service
from allocator.services.errors import DomainError, FieldProblem
from allocator.web import forms
from allocator.web.qr import svg_data_uri
from allocator.web.security import (
    DEVICE_COOKIE,
    SESSION_KEY,
    clear_session,
    client,
    ctx,
    current_user,
    safe_path,
    start_session,
)

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | str:
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""), form=forms.FormState())
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    try:
        outcome = auth_service.login(ctx(), username, password, client())
    except DomainError as exc:
        status = exc.status
        html = render_template(
            "auth/login.html", next=request.form.get("next", ""), form=forms.shown(exc), username=username
        )
        return Response(html, status=status, mimetype="text/html")
    start_session(outcome.session_token)
    response = redirect(safe_path(request.form.get("next"), url_for("main.home")))
    # This browser's later sign-ins are throttled on their own: a lockout caused by others does
    # not keep its user out (issue 15). Path / so that it reaches /login; no arm, no user name in it.
    response.set_cookie(
        DEVICE_COOKIE,
        outcome.device_cookie,
        max_age=180 * 24 * 3600,
        secure=ctx().settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
    return response


@bp.route("/logout", methods=["POST"])
@requires(Permission.ACCOUNT_SELF)
def logout() -> Response:
    token = session.get(SESSION_KEY)
    if isinstance(token, str):
        auth_service.end_session(ctx(), token, "logout", client())
    clear_session()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def change_password() -> Response | str:
    user = current_user()
    form = forms.FormState()
    if request.method == "POST":
        try:
            auth_service.change_password(
                ctx(),
                user.user_id,
                request.form.get("current", ""),
                request.form.get("new", ""),
                request.form.get("confirm", ""),
                client(),
            )
        except DomainError as exc:
            form = forms.shown(exc, _password_labels())
        else:
            return redirect(url_for("main.home"))
    html = render_template("auth/password.html", forced=user.must_change_password, form=form)
    return Response(html, status=422 if form else 200, mimetype="text/html")


def _password_labels() -> dict[str, str]:
    return {
        "current": _("Current (or one-time) password"),
        "new": _("New password"),
        "confirm": _("New password again"),
        "password": _("Your password"),
        "code": _("Code"),
    }


@bp.route("/account/totp", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def totp() -> Response | str:
    """Second step of sign-in for users with an enrolled authenticator."""
    user = current_user()
    if not user.mfa_pending:
        return redirect(url_for("main.home"))
    form = forms.FormState()
    if request.method == "POST" and user.session_id is not None:
        try:
            auth_service.verify_second_factor(
                ctx(), user.user_id, user.session_id, request.form.get("code", ""), client()
            )
        except DomainError as exc:
            form = forms.shown(_on_code(exc), _password_labels())
        else:
            return redirect(url_for("main.home"))
    html = render_template("auth/totp.html", form=form)
    return Response(html, status=422 if form else 200, mimetype="text/html")


def _on_code(exc: DomainError) -> DomainError:
    """An error without a field is about the code (the only field of the form)."""
    if exc.errors:
        return exc
    return type(exc)(exc.detail, errors=[FieldProblem("code", exc.detail)])


_PENDING_TOTP = "pending_totp"  # the sealed ticket of the key being enrolled (issue 13)


@bp.route("/account/totp/enroll", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def totp_enroll() -> Response | str:
    """Enrol an authenticator app: the QR code is shown once; a code confirms it (ACC-04).

    GET changes nothing: the new secret travels sealed in the form's ticket."""
    user = current_user()
    if user.mfa_pending:
        return redirect(url_for("auth.totp"))
    form = forms.FormState()
    if request.method == "POST" and request.form.get("action") == "cancel":
        session.pop(_PENDING_TOTP, None)  # the pending key is forgotten; the next visit shows a new one
        return redirect(url_for("account.profile"), code=303)
    ticket = request.form.get("ticket", "")
    enrollment = None
    if request.method == "GET":
        # Issue 13: a reload showed a new key, so a key already typed into the app stopped working.
        # The pending key (its sealed ticket) is kept in the session until confirmed or cancelled.
        pending = session.get(_PENDING_TOTP)
        if isinstance(pending, str):
            try:
                enrollment = auth_service.enrollment_from_ticket(ctx(), user.user_id, pending)
            except DomainError:
                enrollment = None  # expired (15 minutes) or another account's: a new key
    if request.method == "POST":
        try:
            auth_service.confirm_totp_enrollment(
                ctx(),
                user.user_id,
                user.session_id,
                request.form.get("code", ""),
                client(),
                ticket=ticket,
                current_password=request.form.get("password"),
            )
        except DomainError as exc:
            form = forms.shown(_on_code(exc), _password_labels())
            try:
                enrollment = auth_service.enrollment_from_ticket(ctx(), user.user_id, ticket)
            except DomainError:
                enrollment = None  # expired or forged ticket: offer a new code
        else:
            session.pop(_PENDING_TOTP, None)
            return redirect(url_for("main.home"))
    if enrollment is None:
        enrollment = auth_service.start_totp_enrollment(ctx(), user.user_id)
    session[_PENDING_TOTP] = enrollment.ticket
    secret = enrollment.secret_base32
    html = render_template(
        "auth/totp_enroll.html",
        secret=secret,
        secret_groups=[secret[i : i + 4] for i in range(0, len(secret), 4)],
        ticket=enrollment.ticket,
        qr=svg_data_uri(enrollment.uri),
        form=form,
        required=user.mfa_enrollment_required,
        replacing=user.totp_enrolled,
    )
    return Response(html, status=422 if form else 200, mimetype="text/html")
