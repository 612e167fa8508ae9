"""Accounts, role history and tokens (ACC-09, BLD-11, BLD-13)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from allocator import crypto
from allocator.models import ApiToken, AuditEvent, User
from allocator.permissions import Role
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.errors import AlreadyExists, NotFound, ValidationFailed
from tests.support import CLI_ACTOR, Clock, load_ifn, make_user


@pytest.mark.req("ACC-01")
def test_create_user_with_a_one_time_password(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "inv-p1", "investigator", site="P1")
    assert len(created.one_time_password) == 19
    with ctx.db.reading() as s:
        user = s.execute(select(User).where(User.username == "inv-p1")).scalar_one()
        assert user.must_change_password
        assert created.one_time_password not in user.password_hash
        assert crypto.verify_password(user.password_hash, created.one_time_password, ctx.passwords)
        grants = users.active_grants(s, user.id, ctx.now())
        assert [(g.role, g.site_id is not None) for g in grants] == [(Role.INVESTIGATOR, True)]


@pytest.mark.parametrize(
    ("username", "role", "trial", "site", "error", "field"),
    [
        ("Bad Name", "nurse", "IFNG-PAIS", "P1", ValidationFailed, "username"),
        ("nurse1", "surgeon", "IFNG-PAIS", "P1", ValidationFailed, "role"),
        ("nurse1", "nurse", "IFNG-PAIS", None, ValidationFailed, "site"),
        ("nurse1", "nurse", "NOPE", "P1", NotFound, "trial"),
        ("nurse1", "nurse", "IFNG-PAIS", "P9", NotFound, "site"),
        ("mon1", "monitor", None, None, ValidationFailed, "trial"),
    ],
)
def test_invalid_accounts_name_the_field_and_write_nothing(
    ctx: ServiceContext,
    username: str,
    role: str,
    trial: str | None,
    site: str | None,
    error: type,
    field: str,
) -> None:
    load_ifn(ctx)
    with pytest.raises(error) as caught:
        users.create_user(
            ctx,
            CLI_ACTOR,
            users.NewUser(username=username, full_name="Some One"),
            users.RoleRequest(role=role, trial_code=trial, site_code=site),
        )
    assert [e.field for e in caught.value.errors] == [field]
    with ctx.db.reading() as s:
        assert s.execute(select(User).where(User.username == username.lower())).first() is None


@pytest.mark.req("ACC-01")
def test_usernames_are_unique(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    make_user(ctx, "mon1", "monitor")
    with pytest.raises(AlreadyExists):
        make_user(ctx, "MON1", "monitor")


@pytest.mark.req("ACC-02")
@pytest.mark.req("BLD-13")
def test_revocation_and_end_dates_keep_history(ctx: ServiceContext, clock: Clock) -> None:
    load_ifn(ctx)
    make_user(ctx, "stat", "unblinded_statistician")
    extra = users.grant_role(
        ctx,
        CLI_ACTOR,
        "stat",
        users.RoleRequest("monitor", "IFNG-PAIS", reason="cover"),
        ends_at=clock() + timedelta(days=2),
    )
    with ctx.db.reading() as s:
        user_id = s.execute(select(User.id).where(User.username == "stat")).scalar_one()

    def roles() -> set[Role]:
        with ctx.db.reading() as s:
            return {g.role for g in users.active_grants(s, user_id, ctx.now())}

    assert roles() == {Role.UNBLINDED_STATISTICIAN, Role.MONITOR}
    clock.advance(days=3)
    assert roles() == {Role.UNBLINDED_STATISTICIAN}
    with ctx.db.reading() as s:
        first = users.active_grants(s, user_id, ctx.now())[0]
    users.revoke_role(ctx, CLI_ACTOR, first.assignment_id, "left the study")
    assert roles() == set()
    with pytest.raises(AlreadyExists):
        users.revoke_role(ctx, CLI_ACTOR, first.assignment_id, "again")
    with ctx.db.reading() as s:
        actions = (
            s.execute(select(AuditEvent.action).where(AuditEvent.object_type == "role_assignment"))
            .scalars()
            .all()
        )
    assert actions.count("role.granted") == 2 and actions.count("role.revoked") == 1
    assert extra != first.assignment_id


def test_tokens_are_stored_only_as_digests(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    make_user(ctx, "mon1", "monitor")
    created = users.create_token(ctx, CLI_ACTOR, "mon1", "edc")
    assert created.token.startswith("alc_") and len(created.token) > 40
    with ctx.db.reading() as s:
        row = s.execute(select(ApiToken)).scalar_one()
        assert row.token_digest == crypto.token_digest(created.token)
        assert created.token not in (row.token_digest, row.display_prefix)
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "token.created")).scalar_one()
        assert created.token not in (entry.new_values or "")
