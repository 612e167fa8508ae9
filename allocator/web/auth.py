"""Sign in, sign out, forced password change, second factor."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from allocator.permissions import Permission, public, requires
from allocator.services import auth as auth_service
from allocator.services.errors import DomainError, FieldProblem
from allocator.web.qr import svg_data_uri
from allocator.web.security import SESSION_KEY, client, ctx, current_user, start_session

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: an open redirect would make phishing links look genuine."""
    if not target:
        return url_for("main.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("main.home")
    return target


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Response | str:
    if request.method == "GET":
        return render_template("auth/login.html", next=request.args.get("next", ""), error=None)
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    try:
        outcome = auth_service.login(ctx(), username, password, client())
    except DomainError as exc:
        status = exc.status
        html = render_template(
            "auth/login.html", next=request.form.get("next", ""), error=exc.detail, username=username
        )
        return Response(html, status=status, mimetype="text/html")
    start_session(outcome.session_token)
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
@requires(Permission.ACCOUNT_SELF)
def logout() -> Response:
    token = session.get(SESSION_KEY)
    if isinstance(token, str):
        auth_service.end_session(ctx(), token, "logout", client())
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def change_password() -> Response | str:
    user = current_user()
    errors: list[FieldProblem] = []
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
            errors = list(exc.errors)
        else:
            return redirect(url_for("main.home"))
    html = render_template("auth/password.html", forced=user.must_change_password, errors=errors)
    return Response(html, status=422 if errors else 200, mimetype="text/html")


@bp.route("/account/totp", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def totp() -> Response | str:
    """Second step of sign-in for users with an enrolled authenticator."""
    user = current_user()
    if not user.mfa_pending:
        return redirect(url_for("main.home"))
    errors: list[FieldProblem] = []
    if request.method == "POST" and user.session_id is not None:
        try:
            auth_service.verify_second_factor(
                ctx(), user.user_id, user.session_id, request.form.get("code", ""), client()
            )
        except DomainError as exc:
            errors = list(exc.errors) or [FieldProblem("code", exc.detail)]
        else:
            return redirect(url_for("main.home"))
    html = render_template("auth/totp.html", errors=errors)
    return Response(html, status=422 if errors else 200, mimetype="text/html")


@bp.route("/account/totp/enroll", methods=["GET", "POST"])
@requires(Permission.ACCOUNT_SELF)
def totp_enroll() -> Response | str:
    """Enrol an authenticator app: the QR code is shown once; a code confirms it (ACC-05)."""
    user = current_user()
    if user.mfa_pending:
        return redirect(url_for("auth.totp"))
    errors: list[FieldProblem] = []
    if request.method == "POST" and request.form.get("code") is not None:
        try:
            auth_service.confirm_totp_enrollment(
                ctx(), user.user_id, user.session_id, request.form["code"], client()
            )
        except DomainError as exc:
            errors = list(exc.errors)
        else:
            return redirect(url_for("main.home"))
    enrollment = auth_service.pending_totp_enrollment(ctx(), user.user_id) if errors else None
    if enrollment is None:
        enrollment = auth_service.start_totp_enrollment(ctx(), user.user_id)
    html = render_template(
        "auth/totp_enroll.html",
        secret=enrollment.secret_base32,
        qr=svg_data_uri(enrollment.uri),
        errors=errors,
        required=user.mfa_enrollment_required,
    )
    return Response(html, status=422 if errors else 200, mimetype="text/html")
