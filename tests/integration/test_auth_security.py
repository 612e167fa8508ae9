"""Login security (ACC-03..ACC-06, BLD-11): throttling and lockout in the database, second factor,
session timeouts, immediate effect of role changes and deactivation — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from allocator import crypto
from allocator.models import AuditEvent, LoginSession, User
from allocator.permissions import Role
from allocator.services import auth
from allocator.services.accounts import user_admin, users
from allocator.services.context import ServiceContext
from allocator.services.errors import TooManyRequests, Unauthenticated, ValidationFailed
from tests.support import CLI_ACTOR, GOOD_PASSWORD, Clock, enroll_totp, load_ifn, make_user

HERE = auth.Client(address="192.0.2.10", user_agent="pytest", request_id="req")
ELSEWHERE = auth.Client(address="198.51.100.7", user_agent="pytest", request_id="req")


def ready_user(
    ctx: ServiceContext, username: str = "inv", role: str = "investigator", site: str | None = "P1"
) -> int:
    """A user who has chosen their own password."""
    if not _loaded(ctx):
        load_ifn(ctx)
    created = make_user(ctx, username, role, site=site)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    return created.user_id


def _loaded(ctx: ServiceContext) -> bool:
    from allocator.models import Trial

    with ctx.db.reading() as s:
        return s.execute(select(Trial.id)).first() is not None


def count(ctx: ServiceContext, action: str) -> int:
    with ctx.db.reading() as s:
        return s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        ).scalar_one()


@pytest.mark.req("AUD-06")
@pytest.mark.req("ACC-05")
def test_repeated_bad_passwords_lock_the_account_even_for_the_right_password(
    ctx: ServiceContext, clock: Clock
) -> None:
    ready_user(ctx)
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(Unauthenticated):
            auth.login(ctx, "inv", "wrong password!", HERE)
    assert count(ctx, "auth.locked_out") == 1
    with pytest.raises(TooManyRequests, match="too many failed attempts"):
        auth.login(ctx, "inv", GOOD_PASSWORD, ELSEWHERE)  # another address: the account is locked
    assert count(ctx, "auth.login_failed") == ctx.settings.login_max_failures_per_account + 1
    clock.advance(minutes=16)
    assert auth.login(ctx, "inv", GOOD_PASSWORD, HERE).session_token


@pytest.mark.req("ACC-05")
def test_an_address_trying_many_accounts_is_locked(ctx: ServiceContext) -> None:
    ready_user(ctx)
    for i in range(ctx.settings.login_max_failures_per_address):
        with pytest.raises(Unauthenticated):
            auth.login(ctx, f"guess{i}", "wrong password!", HERE)
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv", GOOD_PASSWORD, HERE)
    assert auth.login(ctx, "inv", GOOD_PASSWORD, ELSEWHERE).session_token  # the account itself is fine


def test_failures_outside_the_window_do_not_add_up(ctx: ServiceContext, clock: Clock) -> None:
    ready_user(ctx)
    for _ in range(ctx.settings.login_max_failures_per_account - 1):
        with pytest.raises(Unauthenticated):
            auth.login(ctx, "inv", "wrong password!", HERE)
    clock.advance(minutes=20)
    with pytest.raises(Unauthenticated):
        auth.login(ctx, "inv", "wrong password!", HERE)
    assert auth.login(ctx, "inv", GOOD_PASSWORD, HERE).session_token


def test_deactivated_accounts_cannot_sign_in_and_the_message_is_generic(ctx: ServiceContext) -> None:
    ready_user(ctx)
    user_admin.set_active(ctx, CLI_ACTOR, "inv", False, "left")
    with pytest.raises(Unauthenticated, match="the user name or the password is wrong"):
        auth.login(ctx, "inv", GOOD_PASSWORD, HERE)


@pytest.mark.req("ACC-06")
def test_idle_and_absolute_session_timeouts(ctx: ServiceContext, clock: Clock) -> None:
    ready_user(ctx)
    token = auth.login(ctx, "inv", GOOD_PASSWORD, HERE).session_token
    clock.advance(minutes=29)
    assert auth.resolve_session(ctx, token) is not None
    clock.advance(minutes=31)
    assert auth.resolve_session(ctx, token) is None  # idle
    with ctx.db.reading() as s:
        assert s.execute(select(LoginSession.end_reason)).scalar_one() == "idle"
    token = auth.login(ctx, "inv", GOOD_PASSWORD, HERE).session_token
    signed_in_at = clock()
    while auth.resolve_session(ctx, token) is not None:  # active every 20 minutes
        clock.advance(minutes=20)
    # Ended by the absolute lifetime (12 h), never by idleness.
    assert timedelta(hours=12) <= clock() - signed_in_at < timedelta(hours=12, minutes=20)
    assert count(ctx, "auth.session_expired") == 2


@pytest.mark.req("BLD-11")
def test_role_changes_and_deactivation_take_effect_on_the_next_request(ctx: ServiceContext) -> None:
    user_id = ready_user(ctx)
    token = auth.login(ctx, "inv", GOOD_PASSWORD, HERE).session_token
    first = auth.resolve_session(ctx, token)
    assert first is not None and first.access.roles() == {Role.INVESTIGATOR}
    with ctx.db.reading() as s:
        grant = users.active_grants(s, user_id, ctx.now())[0]
    users.revoke_role(ctx, CLI_ACTOR, grant.assignment_id, "moved to another unit")
    after = auth.resolve_session(ctx, token)
    assert after is not None and after.access.roles() == set()
    user_admin.set_active(ctx, CLI_ACTOR, "inv", False, "left the hospital")
    assert auth.resolve_session(ctx, token) is None
    with ctx.db.reading() as s:
        assert s.execute(select(LoginSession.end_reason)).scalar_one() == "deactivated"


@pytest.mark.req("ACC-04")
def test_totp_enrolment_and_sign_in(ctx: ServiceContext, clock: Clock) -> None:
    user_id = ready_user(ctx, "stat", "unblinded_statistician", site=None)
    outcome = auth.login(ctx, "stat", GOOD_PASSWORD, HERE)
    assert outcome.needs_totp_enrollment and not outcome.needs_totp
    me = auth.resolve_session(ctx, outcome.session_token)
    assert me is not None and me.mfa_enrollment_required
    enrollment = auth.start_totp_enrollment(ctx, user_id)
    secret = _secret(enrollment.secret_base32)
    with pytest.raises(ValidationFailed, match="does not match"):
        auth.confirm_totp_enrollment(ctx, user_id, me.session_id, "000000", HERE, ticket=enrollment.ticket)
    with pytest.raises(ValidationFailed, match="expired"):
        auth.confirm_totp_enrollment(
            ctx,
            user_id,
            me.session_id,
            crypto.totp_now(secret, clock()),
            HERE,
            ticket=enrollment.ticket[:-8] + "AAAAAAA=",
        )
    auth.confirm_totp_enrollment(
        ctx, user_id, me.session_id, crypto.totp_now(secret, clock()), HERE, ticket=enrollment.ticket
    )
    me = auth.resolve_session(ctx, outcome.session_token)
    assert me is not None and not me.mfa_enrollment_required and not me.mfa_pending
    # Next sign-in: the code is required, and a used code cannot be replayed.
    clock.advance(seconds=40)
    outcome = auth.login(ctx, "stat", GOOD_PASSWORD, HERE)
    pending = auth.resolve_session(ctx, outcome.session_token)
    assert outcome.needs_totp and pending is not None and pending.mfa_pending
    code = crypto.totp_now(secret, clock())
    auth.verify_second_factor(ctx, user_id, pending.session_id or 0, code, HERE)
    assert not auth.resolve_session(ctx, outcome.session_token).mfa_pending  # type: ignore[union-attr]
    other = auth.login(ctx, "stat", GOOD_PASSWORD, HERE)
    other_session = auth.resolve_session(ctx, other.session_token)
    with pytest.raises(ValidationFailed, match="the code is wrong"):
        auth.verify_second_factor(ctx, user_id, other_session.session_id or 0, code, HERE)  # type: ignore[union-attr]
    with ctx.db.reading() as s:
        user = s.get(User, user_id)
        assert (
            user is not None and user.totp_secret_sealed is not None and secret not in user.totp_secret_sealed
        )


@pytest.mark.req("ACC-05")
def test_wrong_second_factor_codes_lock_the_account(ctx: ServiceContext, clock: Clock) -> None:
    user_id = ready_user(ctx, "stat", "unblinded_statistician", site=None)
    first = auth.login(ctx, "stat", GOOD_PASSWORD, HERE)
    session_id = auth.resolve_session(ctx, first.session_token).session_id  # type: ignore[union-attr]
    enrollment = auth.start_totp_enrollment(ctx, user_id)
    secret = _secret(enrollment.secret_base32)
    auth.confirm_totp_enrollment(
        ctx, user_id, session_id, crypto.totp_now(secret, clock()), HERE, ticket=enrollment.ticket
    )
    clock.advance(seconds=60)
    outcome = auth.login(ctx, "stat", GOOD_PASSWORD, HERE)
    sid = auth.resolve_session(ctx, outcome.session_token).session_id  # type: ignore[union-attr]
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(ValidationFailed):
            auth.verify_second_factor(ctx, user_id, sid or 0, "123456", HERE)
    with pytest.raises(TooManyRequests):
        auth.verify_second_factor(ctx, user_id, sid or 0, crypto.totp_now(secret, clock()), HERE)


def test_revoked_and_expired_tokens_stop_working(ctx: ServiceContext, clock: Clock) -> None:
    ready_user(ctx, "mon", "monitor", site=None)
    created = users.create_token(ctx, CLI_ACTOR, "mon", "edc")
    assert auth.resolve_bearer(ctx, created.token) is not None
    user_admin.revoke_token(ctx, CLI_ACTOR, created.token_id)
    assert auth.resolve_bearer(ctx, created.token) is None
    short = users.create_token(ctx, CLI_ACTOR, "mon", "short", expires_at=clock() + timedelta(days=1))
    assert auth.resolve_bearer(ctx, short.token) is not None
    clock.advance(days=2)
    assert auth.resolve_bearer(ctx, short.token) is None


@pytest.mark.req("ACC-03")
def test_password_change_needs_the_current_password_and_a_good_new_one(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "nurse1", "nurse", site="P1", full_name="Nadia Urse")
    cases = [
        ("wrong", GOOD_PASSWORD, GOOD_PASSWORD, "current"),
        (created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD + "x", "confirm"),
        (created.one_time_password, "password1234", "password1234", "new"),
        (created.one_time_password, "nadia on the night shift", "nadia on the night shift", "new"),
    ]
    for current, new, confirm, field in cases:
        with pytest.raises(ValidationFailed) as caught:
            auth.change_password(ctx, created.user_id, current, new, confirm, HERE)
        assert caught.value.errors[0].field == field
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    assert count(ctx, "user.password_changed") == 1


def _secret(base32: str) -> bytes:
    import base64

    return base64.b32decode(base32 + "=" * (-len(base32) % 8))


@pytest.mark.req("ACC-04")
def test_replacing_an_authenticator_needs_the_password(ctx: ServiceContext, clock: Clock) -> None:
    user_id = ready_user(ctx, "stat", "unblinded_statistician", site=None)
    enroll_totp(ctx, user_id, clock)
    clock.advance(seconds=60)
    enrollment = auth.start_totp_enrollment(ctx, user_id)
    second = _secret(enrollment.secret_base32)
    with pytest.raises(ValidationFailed) as caught:
        auth.confirm_totp_enrollment(
            ctx, user_id, None, crypto.totp_now(second, clock()), HERE, ticket=enrollment.ticket
        )
    assert caught.value.errors[0].field == "password"
    auth.confirm_totp_enrollment(
        ctx,
        user_id,
        None,
        crypto.totp_now(second, clock()),
        HERE,
        ticket=enrollment.ticket,
        current_password=GOOD_PASSWORD,
    )
    clock.advance(minutes=16)
    late = auth.start_totp_enrollment(ctx, user_id)
    clock.advance(minutes=16)
    with pytest.raises(ValidationFailed, match="expired"):
        auth.confirm_totp_enrollment(
            ctx,
            user_id,
            None,
            crypto.totp_now(_secret(late.secret_base32), clock()),
            HERE,
            ticket=late.ticket,
            current_password=GOOD_PASSWORD,
        )
    with ctx.db.reading() as s:
        assert (
            s.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "user.totp_enrolled")
            ).scalar_one()
            == 2
        )
