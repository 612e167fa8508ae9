"""The web shell: deny by default, sign-in, forced password change, headers, CSRF, API basics."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator.models import AuditEvent
from allocator.permissions import declared_permission, is_public
from allocator.services import auth, trials
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.web.openapi import document
from tests.support import CLI_ACTOR, GOOD_PASSWORD, IFN_TRIAL, load_ifn, make_user
from tests.web.conftest import csrf_token, https_client, sign_in

PUBLIC_ENDPOINTS = {"auth.login", "language.choose", "main.health", "static"}


def test_every_endpoint_declares_a_permission_or_is_on_the_public_list(app: Flask) -> None:
    """Deny by default (architecture.md): walk app.url_map."""
    seen = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        seen.add(rule.endpoint)
        if is_public(view):
            assert rule.endpoint in PUBLIC_ENDPOINTS, f"{rule.endpoint} is public but not on the short list"
        else:
            assert declared_permission(view) is not None, (
                f"{rule.endpoint} ({rule.rule}) declares no permission"
            )
    assert len(seen) > 5  # a walk over nothing proves nothing


def test_an_undeclared_endpoint_is_refused_at_run_time(app: Flask, ctx: ServiceContext) -> None:
    app.add_url_rule("/sneaky", "sneaky", lambda: "secret")
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = https_client(app)
    sign_in(client, "mon", created.one_time_password)
    response = client.get("/sneaky")
    assert response.status_code == 403 and b"secret" not in response.data


def test_anonymous_pages_redirect_to_login_and_api_answers_401(client: FlaskClient) -> None:
    response = client.get("/trials/IFNG-PAIS")
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    api = client.get("/api/v1/trials/IFNG-PAIS")
    assert api.status_code == 401 and api.mimetype == "application/problem+json"
    assert api.json["type"] == "urn:allocator:problem:unauthenticated"  # type: ignore[index]


@pytest.mark.req("ACC-09")
def test_security_headers(client: FlaskClient) -> None:
    response = client.get("/login")
    h = response.headers
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert (
        "script-src 'self'" in h["Content-Security-Policy"]
        and "unsafe-inline" not in h["Content-Security-Policy"]
    )
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["Cache-Control"] == "no-store"
    assert h["Strict-Transport-Security"].startswith("max-age=")
    assert re.fullmatch(r"[0-9a-f]{16}", h["X-Request-ID"])


@pytest.mark.req("ACC-08")
def test_login_without_csrf_token_is_refused(client: FlaskClient, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    response = client.post("/login", data={"username": "mon", "password": created.one_time_password})
    assert response.status_code == 400
    assert b"form expired" in response.data


@pytest.mark.req("ACC-07")
def test_first_sign_in_forces_a_password_change_then_shows_the_users_trials(
    client: FlaskClient, ctx: ServiceContext
) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "inv", "investigator", site="P1")
    token = csrf_token(client)
    response = client.post(
        "/login", data={"username": "inv", "password": created.one_time_password, "csrf_token": token}
    )
    assert response.status_code == 302
    cookies = response.headers.getlist("Set-Cookie")
    cookie = next(c for c in cookies if c.startswith("__Host-allocator="))
    device = next(c for c in cookies if c.startswith("allocator_device="))  # issue 15: lockout per device
    assert "Secure" in device and "HttpOnly" in device and "SameSite=Lax" in device
    assert (
        cookie.startswith("__Host-allocator=")
        and "Secure" in cookie
        and "HttpOnly" in cookie
        and "SameSite=Lax" in cookie
    )
    assert client.get("/").headers["Location"].endswith("/account/password")
    assert client.get("/trials/IFNG-PAIS").headers["Location"].endswith("/account/password")
    weak = client.post(
        "/account/password",
        data={
            "current": created.one_time_password,
            "new": "password1234",
            "confirm": "password1234",
            "csrf_token": csrf_token(client, "/account/password"),
        },
    )
    assert weak.status_code == 422 and b"commonly used" in weak.data
    ok = client.post(
        "/account/password",
        data={
            "current": created.one_time_password,
            "new": GOOD_PASSWORD,
            "confirm": GOOD_PASSWORD,
            "csrf_token": csrf_token(client, "/account/password"),
        },
    )
    assert ok.status_code == 302
    home = client.get("/")
    assert home.status_code == 200 and b"IFN-gamma PAIS" in home.data and b"Investigator" in home.data
    page = client.get("/trials/IFNG-PAIS")
    assert page.status_code == 200 and b"2023-506725-11-00" in page.data
    assert (
        b"P1 \xe2\x80\x93 Paris site 1" in page.data and b"P2 \xe2\x80\x93" not in page.data
    )  # own site only


def test_wrong_password_gets_one_generic_message(client: FlaskClient, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    make_user(ctx, "mon", "monitor")
    for username in ("mon", "nobody"):
        response = client.post(
            "/login",
            data={"username": username, "password": "wrong wrong wrong", "csrf_token": csrf_token(client)},
        )
        assert response.status_code == 401
        assert b"the user name or the password is wrong" in response.data


@pytest.mark.req("ACC-06")
def test_logout_ends_the_server_side_session(client: FlaskClient, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    sign_in(client, "mon", created.one_time_password)
    stolen = client.get_cookie("__Host-allocator")
    assert stolen is not None and client.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert client.get("/").status_code == 302
    # Replaying the old cookie does not bring the session back.
    client.set_cookie("__Host-allocator", stolen.value, domain="localhost", secure=True)
    assert client.get("/").status_code == 302


@pytest.mark.req("ACC-10", "AUD-06")
def test_other_trials_are_not_found_and_other_roles_are_refused_and_audited(
    client: FlaskClient, ctx: ServiceContext
) -> None:
    load_ifn(ctx)
    other_text = IFN_TRIAL.read_text(encoding="utf-8").replace('code = "IFNG-PAIS"', 'code = "OTHER-TRIAL"')
    trials.load_trial(ctx, CLI_ACTOR, other_text, source_name="other.toml")
    created = make_user(ctx, "mon", "monitor", trial="OTHER-TRIAL")
    sign_in(client, "mon", created.one_time_password)
    assert client.get("/trials/NOPE").status_code == 404
    assert client.get("/trials/OTHER-TRIAL").status_code == 200
    response = client.get("/trials/IFNG-PAIS")
    assert response.status_code == 403
    assert client.get("/api/v1/trials/IFNG-PAIS").status_code == 403
    with ctx.db.reading() as s:
        denials = (
            s.execute(select(AuditEvent).where(AuditEvent.action == "auth.permission_denied")).scalars().all()
        )
    assert [(d.actor_username, d.object_id, d.chain) for d in denials] == [
        ("mon", "main.trial", "IFNG-PAIS"),
        ("mon", "api.trial", "IFNG-PAIS"),
    ]


def test_a_user_without_any_role_can_do_nothing(client: FlaskClient, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "gone", "monitor")
    with ctx.db.reading() as s:
        from allocator.models import RoleAssignment

        assignment = s.execute(select(RoleAssignment.id)).scalar_one()
    users.revoke_role(ctx, CLI_ACTOR, assignment, "left the study")
    token = csrf_token(client)
    client.post(
        "/login", data={"username": "gone", "password": created.one_time_password, "csrf_token": token}
    )
    assert client.get("/").status_code == 403  # an empty permission set denies
    assert client.get("/account/password").status_code == 403


@pytest.mark.req("BLD-11")
def test_api_with_bearer_token(client: FlaskClient, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    token = users.create_token(ctx, CLI_ACTOR, "mon", "edc").token
    headers = {"Authorization": f"Bearer {token}"}
    # A user who never replaced the one-time password cannot use the API yet.
    assert client.get("/api/v1/trials/IFNG-PAIS", headers=headers).status_code == 401
    auth.change_password(
        ctx,
        created.user_id,
        created.one_time_password,
        GOOD_PASSWORD,
        GOOD_PASSWORD,
        auth.Client("192.0.2.1", "test", "req-1"),
    )
    response = client.get("/api/v1/trials/IFNG-PAIS", headers=headers)
    assert response.status_code == 200
    body = response.json
    assert body is not None and body["code"] == "IFNG-PAIS" and "arms" not in body
    assert (
        client.get("/api/v1/trials/IFNG-PAIS", headers={"Authorization": "Bearer alc_forged"}).status_code
        == 401
    )
    # A bearer token is for the API only, never for pages.
    assert client.get("/trials/IFNG-PAIS", headers=headers).status_code == 302


def test_openapi_lists_exactly_the_api_routes(
    app: Flask, signed_in: Callable[[str, str], FlaskClient], ctx: ServiceContext
) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = signed_in("mon", created.one_time_password)
    served = client.get("/api/v1/openapi.json").json
    assert served is not None and served["openapi"] == "3.1.0"
    documented = set()
    for path, operations in document()["paths"].items():
        flask_path = re.sub(r"\{(\w+)\}", r"<\1>", "/api/v1" + path)
        documented |= {(flask_path, method.upper()) for method in operations}
    routes = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert documented == routes


def test_generic_error_page_has_a_reference_and_no_traceback(app: Flask, ctx: ServiceContext) -> None:
    from allocator.permissions import Permission, requires

    @requires(Permission.ACCOUNT_SELF)
    def boom() -> str:
        raise RuntimeError("SELECT secret FROM keys")

    app.add_url_rule("/boom", "boom", boom)
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    client = https_client(app)
    sign_in(client, "mon", created.one_time_password)
    response = client.get("/boom")
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "SELECT secret" not in text
    assert response.headers["X-Request-ID"] in text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/trials/X", "/trials/X"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil", "/"),
        ("", "/"),
        (None, "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_redirect_targets_stay_on_site(target: str | None, expected: str) -> None:
    from allocator.web.security import safe_path

    assert safe_path(target, "/") == expected


@pytest.mark.req("RND-13")
def test_an_instance_refuses_to_start_with_lists_of_the_other_mode(
    ctx: ServiceContext, settings, db, ring
) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from allocator import crypto
    from allocator.app import StartupError, create_app
    from allocator.services.lists import generation
    from allocator.settings import Environment

    load_ifn(ctx)
    generation.generate_lists(ctx, CLI_ACTOR, "IFNG-PAIS", "test")
    create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)  # a test instance: fine
    with pytest.raises(StartupError, match="IFNG-PAIS/TEST/1"):
        create_app(replace(settings, env=Environment.PRODUCTION), db=db, ring=ring)
