"""The permission vocabulary and scopes (BLD-06, BLD-13)."""

from __future__ import annotations

import pytest

from allocator.permissions import (
    MFA_REQUIRED_ROLES,
    ROLE_PERMISSIONS,
    UNBLINDED_ROLES,
    Access,
    Grant,
    Permission,
    Role,
    validate_role_scope,
)

ARM_READING = {
    Permission.LIST_MANAGE,
    Permission.QUALITY_VIEW,
    Permission.AUDIT_VIEW_UNBLINDED,
    Permission.REPORT_VIEW_UNBLINDED,
    Permission.UNBLINDING_PV,
    Permission.DISPENSATION_PREPARE,
    Permission.TRIAL_UNBLIND,
}


@pytest.mark.req("BLD-06")
@pytest.mark.parametrize("role", [r for r in Role if r not in UNBLINDED_ROLES], ids=str)
def test_blinded_roles_hold_no_arm_reading_permission(role: Role) -> None:
    assert ROLE_PERMISSIONS[role] & ARM_READING == set()


def test_every_role_is_mapped_and_every_permission_is_used() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    used = set().union(*ROLE_PERMISSIONS.values())
    assert used == set(Permission)


@pytest.mark.req("ACC-04")
def test_mfa_is_required_for_admin_and_every_unblinded_role() -> None:
    assert {Role.ADMIN} | UNBLINDED_ROLES == MFA_REQUIRED_ROLES


@pytest.mark.req("BLD-06")
def test_scopes_follow_trial_and_site() -> None:
    access = Access(
        (
            Grant(Role.INVESTIGATOR, trial_id=1, site_id=10),
            Grant(Role.INVESTIGATOR, trial_id=1, site_id=11),
            Grant(Role.MONITOR, trial_id=2, site_id=None),
        )
    )
    scope = access.scope(Permission.SUBJECT_RANDOMIZE, 1)
    assert not scope.all_sites and scope.site_ids == {10, 11}
    assert scope.allows_site(10) and not scope.allows_site(12)
    assert access.scope(Permission.SUBJECT_RANDOMIZE, 2).empty
    assert access.scope(Permission.AUDIT_VIEW, 2).all_sites
    assert not access.has(Permission.AUDIT_VIEW, 1)
    assert access.has(Permission.AUDIT_VIEW, 2)
    assert access.site_for(Permission.SUBJECT_RANDOMIZE, 1) is None  # two sites: ambiguous
    assert not Access(()).has(Permission.ACCOUNT_SELF)  # an empty permission set denies


def test_grant_validation() -> None:
    assert (
        validate_role_scope(Role.INVESTIGATOR, 1, None) == "the investigator role must be granted for a site"
    )
    assert validate_role_scope(Role.MONITOR, None, None) == "the monitor role must be granted for a trial"
    assert validate_role_scope(Role.AUDITOR, 1, 3) == "the auditor role cannot be limited to a site"
    assert validate_role_scope(Role.ADMIN, None, None) is None
    assert validate_role_scope(Role.MONITOR, 1, 3) is None
