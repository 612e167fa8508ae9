"""Administration services: account lifecycle, sessions, tokens, sites (RND-14), role history."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import AuditEvent, Site
from allocator.permissions import NO_SCOPE, Scope
from allocator.services import auth, sites
from allocator.services.accounts import user_admin, users
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.support import CLI_ACTOR, CODE_BREAK_EVIDENCE, GOOD_PASSWORD, IFN_TRIAL, Clock, load_ifn, make_user

ALL = Scope(all_sites=True, site_ids=frozenset())
HERE = auth.Client("192.0.2.1", "pytest", "req")


def test_reset_password_issues_a_new_one_time_password_and_ends_sessions(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    token = auth.login(ctx, "mon", GOOD_PASSWORD, HERE).session_token
    new = user_admin.reset_password(ctx, CLI_ACTOR, "mon", "forgot it")
    assert auth.resolve_session(ctx, token) is None
    outcome = auth.login(ctx, "mon", new, HERE)
    assert outcome.must_change_password
    with pytest.raises(ValidationFailed):
        user_admin.reset_password(ctx, CLI_ACTOR, "mon", " ")


def test_sessions_can_be_listed_and_terminated(ctx: ServiceContext, clock: Clock) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "mon", "monitor")
    token = auth.login(ctx, "mon", created.one_time_password, HERE).session_token
    rows = user_admin.active_sessions(ctx)
    assert [r.username for r in rows] == ["mon"]
    user_admin.terminate_session(ctx, CLI_ACTOR, rows[0].id, "suspicious location")
    assert auth.resolve_session(ctx, token) is None
    assert user_admin.active_sessions(ctx) == []
    with pytest.raises(NotFound):
        user_admin.terminate_session(ctx, CLI_ACTOR, rows[0].id, "again")


def test_users_revoke_only_their_own_tokens(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    a = make_user(ctx, "mon-a", "monitor")
    b = make_user(ctx, "mon-b", "monitor")
    token_b = users.create_token(ctx, CLI_ACTOR, "mon-b", "b")
    with pytest.raises(NotFound):
        user_admin.revoke_token(ctx, CLI_ACTOR, token_b.token_id, owner_id=a.user_id)
    user_admin.revoke_token(ctx, CLI_ACTOR, token_b.token_id, owner_id=b.user_id)
    with pytest.raises(Conflict):
        user_admin.revoke_token(ctx, CLI_ACTOR, token_b.token_id)


@pytest.mark.req("RND-14")
def test_site_activation_needs_approval_and_delegation_dates(ctx: ServiceContext, clock: Clock) -> None:
    load_ifn(ctx)
    today = clock().date()
    with pytest.raises(ValidationFailed) as caught:
        sites.activate_site(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            "P1",
            approval_date=today + timedelta(days=1),
            delegation_log_date=today,
            code_break_evidence=CODE_BREAK_EVIDENCE,
            scope=ALL,
            reason="approved",
        )
    assert [e.field for e in caught.value.errors] == ["approval_date"]
    with pytest.raises(NotFound):
        sites.activate_site(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            "P1",
            approval_date=today,
            delegation_log_date=today,
            code_break_evidence=CODE_BREAK_EVIDENCE,
            scope=NO_SCOPE,
            reason="outside my sites",
        )
    sites.activate_site(
        ctx,
        CLI_ACTOR,
        "IFNG-PAIS",
        "P1",
        approval_date=date(2026, 1, 5),
        delegation_log_date=date(2026, 2, 1),
        code_break_evidence=CODE_BREAK_EVIDENCE,
        scope=ALL,
        reason="CPP approval received",
    )
    with pytest.raises(Conflict, match="not pending"):
        sites.activate_site(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            "P1",
            approval_date=today,
            delegation_log_date=today,
            code_break_evidence=CODE_BREAK_EVIDENCE,
            scope=ALL,
            reason="twice",
        )
    with ctx.db.reading() as s:
        site = s.execute(select(Site).where(Site.code == "P1")).scalar_one()
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "site.activated")).scalar_one()
    assert site.status == "active" and site.approval_date == date(2026, 1, 5)
    assert entry.site_code == "P1" and entry.reason == "CPP approval received"
    sites.close_site(ctx, CLI_ACTOR, "IFNG-PAIS", "P1", scope=ALL, reason="recruitment over")
    assert [s.status for s in sites.sites(ctx, "IFNG-PAIS")] == ["closed", "pending"]


@pytest.mark.req("BLD-13")
def test_everyone_who_ever_held_an_unblinded_role_is_listed(ctx: ServiceContext, clock: Clock) -> None:
    load_ifn(ctx)
    make_user(ctx, "stat", "unblinded_statistician")
    make_user(ctx, "pv1", "pharmacovigilance")
    make_user(ctx, "mon", "monitor")
    stat_grant = user_admin.trial_roles(ctx, "IFNG-PAIS")[0]
    clock.advance(days=30)
    users.revoke_role(ctx, CLI_ACTOR, stat_grant.assignment_id, "replaced")
    rows = user_admin.unblinded_role_history(ctx, "IFNG-PAIS")
    assert [(r.username, r.role, r.revoked_at is not None) for r in rows] == [
        ("stat", "unblinded_statistician", True),
        ("pv1", "pharmacovigilance", False),
    ]


def test_nobody_grants_a_role_to_themselves(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    manager = make_user(ctx, "tman", "trial_manager")
    me = Actor(user_id=manager.user_id, username="tman", name="Tm", role="trial_manager")
    with pytest.raises(Forbidden, match="your own account"):
        users.grant_role(
            ctx, me, "tman", users.RoleRequest("unblinded_statistician", "IFNG-PAIS", reason="x")
        )
    make_user(ctx, "mon", "monitor")
    users.grant_role(ctx, me, "mon", users.RoleRequest("auditor", "IFNG-PAIS", reason="cover"))


def test_revoking_from_a_trial_page_cannot_reach_another_trial(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    from allocator.services import trials

    trials.load_trial(
        ctx, CLI_ACTOR, IFN_TRIAL.read_text().replace('code = "IFNG-PAIS"', 'code = "OTHER"'), source_name="o"
    )
    make_user(ctx, "mon", "monitor", trial="OTHER")
    other_assignment = user_admin.trial_roles(ctx, "OTHER")[0].assignment_id
    with pytest.raises(NotFound):
        users.revoke_role(ctx, CLI_ACTOR, other_assignment, "x", only_trial="IFNG-PAIS")
    users.revoke_role(ctx, CLI_ACTOR, other_assignment, "x", only_trial="OTHER")


def test_admin_is_instance_wide_only(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    make_user(ctx, "xyz", "monitor")
    with pytest.raises(ValidationFailed, match="instance-wide"):
        users.grant_role(ctx, CLI_ACTOR, "xyz", users.RoleRequest("admin", "IFNG-PAIS", reason="x"))


def test_cannot_deactivate_oneself(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "adm", "admin")
    me = Actor(user_id=created.user_id, username="adm", name="Adm", role="admin")
    with pytest.raises(Conflict):
        user_admin.set_active(ctx, me, "adm", False, "oops")


@pytest.mark.req("ACC-06")
def test_a_users_page_reads_that_user_alone_with_their_latest_sign_in(
    ctx: ServiceContext, clock: Clock
) -> None:
    """Issue 21: `get_user` (the account page of every user, the admin's user page) read every
    user, every role and grouped the whole sign-in table, one row per sign-in ever made. It now
    reads the one user, their roles and their latest sign-in (an index look-up); the list reads
    every user's latest sign-in the same way. Sign-ins interleaved between two users must not mix."""
    load_ifn(ctx)
    a = make_user(ctx, "mon-a", "monitor")
    b = make_user(ctx, "mon-b", "monitor")
    make_user(ctx, "never", "monitor")
    signed: dict[str, list[object]] = {"mon-a": [], "mon-b": []}
    for username, password in (("mon-a", a.one_time_password), ("mon-b", b.one_time_password)) * 3:
        clock.advance(minutes=7)
        auth.login(ctx, username, password, HERE)
        signed[username].append(clock())
    clock.advance(minutes=1)
    auth.login(ctx, "mon-a", a.one_time_password, HERE)  # the latest of all: mon-a's
    signed["mon-a"].append(clock())

    one = user_admin.get_user(ctx, "mon-b")
    assert (one.username, one.last_sign_in) == ("mon-b", signed["mon-b"][-1])
    assert [(r.username, r.role, r.site) for r in one.roles] == [("mon-b", "monitor", None)]
    listed = {row.username: row for row in user_admin.list_users(ctx)}
    assert listed["mon-b"] == one
    assert listed["mon-a"] == user_admin.get_user(ctx, "mon-a")
    assert listed["mon-a"].last_sign_in == signed["mon-a"][-1]
    assert [r.username for r in listed["mon-a"].roles] == ["mon-a"]
    assert listed["never"].last_sign_in is None and listed["never"].roles[0].role == "monitor"
    with pytest.raises(NotFound, match="no user 'nobody'"):
        user_admin.get_user(ctx, "nobody")
