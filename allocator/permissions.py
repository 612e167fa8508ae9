"""The permission vocabulary, the role -> permission map and the route decorator.

Deny by default (architecture.md): every endpoint declares `@requires(Permission.X)` right under
its route, or `@public` if it is on the short public list; an endpoint with neither is refused at
run time and fails a test that walks `app.url_map`. An empty permission set denies.

Roles are granted per trial and, for site roles, per site. Whether a role is blinded is a property
of the role, declared here once (BLD-06, BLD-13).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class Role(enum.StrEnum):
    INVESTIGATOR = "investigator"
    PHARMACIST = "pharmacist"
    UNBLINDED_PHARMACIST = "unblinded_pharmacist"
    NURSE = "nurse"
    MONITOR = "monitor"
    AUDITOR = "auditor"
    TRIAL_MANAGER = "trial_manager"
    ADMIN = "admin"
    UNBLINDED_STATISTICIAN = "unblinded_statistician"
    PHARMACOVIGILANCE = "pharmacovigilance"
    # Issue 20: receives the samples of an observational study at the central lab, from every site
    # (granted for a trial, never for a site). Blinded; holds nothing of any other trial.
    LAB_TECHNICIAN = "lab_technician"

    @property
    def display_name(self) -> str:
        return ROLE_TITLES[self]


ROLE_TITLES = {
    Role.INVESTIGATOR: "Investigator",
    Role.PHARMACIST: "Pharmacist",
    Role.UNBLINDED_PHARMACIST: "Unblinded pharmacist",
    Role.NURSE: "Nurse",
    Role.MONITOR: "Monitor",
    Role.AUDITOR: "Auditor",
    Role.TRIAL_MANAGER: "Trial manager",
    Role.ADMIN: "Administrator",
    Role.UNBLINDED_STATISTICIAN: "Unblinded statistician",
    Role.PHARMACOVIGILANCE: "Pharmacovigilance",
    Role.LAB_TECHNICIAN: "Lab technician",
}

# Roles that may see an arm (each read audited, BLD-08). Every other role is blinded.
UNBLINDED_ROLES = frozenset({Role.UNBLINDED_PHARMACIST, Role.UNBLINDED_STATISTICIAN, Role.PHARMACOVIGILANCE})
# Roles that act at one site and must be granted with a site.
SITE_ROLES = frozenset({Role.INVESTIGATOR, Role.PHARMACIST, Role.UNBLINDED_PHARMACIST, Role.NURSE})
# Roles that may optionally be limited to one site.
OPTIONAL_SITE_ROLES = frozenset({Role.MONITOR})
# Roles that may be granted without a trial (instance-wide).
INSTANCE_ROLES = frozenset({Role.ADMIN})
# ACC-04 / tension 8 in requirements.md: a second factor is mandatory for these.
MFA_REQUIRED_ROLES = frozenset({Role.ADMIN}) | UNBLINDED_ROLES


class Permission(enum.StrEnum):
    """`resource:action`. The only names a route may require."""

    ACCOUNT_SELF = "account:self"  # own profile, password, second factor, own tokens
    API_DOCS = "api:docs"
    TRIAL_VIEW = "trial:view"
    SUBJECT_VIEW = "subject:view"
    SUBJECT_RANDOMIZE = "subject:randomize"
    SUBJECT_CORRECT = "subject:correct"
    SUBJECT_UNBLIND = "subject:unblind"  # emergency unblinding by the site investigator
    SCREENING_VIEW = "screening:view"
    DISPENSATION_VIEW = "dispensation:view"
    DISPENSATION_DISPENSE = "dispensation:dispense"
    DISPENSATION_PREPARE = "dispensation:prepare"  # unblinded preparation instruction
    ADMINISTRATION_RECORD = "administration:record"
    KIT_VIEW = "kit:view"
    KIT_MANAGE = "kit:manage"
    SHIPMENT_MANAGE = "shipment:manage"
    LIST_VIEW = "list:view"  # blinded: counts per stratum only
    LIST_MANAGE = "list:manage"  # generate, approve, activate, extend, download sealed
    QUALITY_VIEW = "quality:view"
    AUDIT_VIEW = "audit:view"
    AUDIT_VIEW_UNBLINDED = "audit:view_unblinded"
    REPORT_VIEW = "report:view"
    REPORT_VIEW_UNBLINDED = "report:view_unblinded"
    UNBLINDING_PV = "unblinding:pv"
    UNBLINDING_REPORT = "unblinding:report"  # report an accidental unblinding (UNB-09)
    CODE_BREAK_GENERATE = "code_break:generate"  # offline code-break sheets (UNB-06)
    CODE_BREAK_CHECK = "code_break:check"  # record a sheet found intact, opened or missing
    AUDIT_REVIEW = "audit:review"  # sign off an audit-trail review period (AUD-09)
    TRIAL_LOCK = "trial:lock"
    TRIAL_UNBLIND = "trial:unblind"
    EXPORT_BLINDED = "export:blinded"  # CDISC ODM, FHIR, REDCap, CSV without any arm (DIB-07)
    EXPORT_UNBLINDED = "export:unblinded"  # the same with the arm, after the final unblinding, signed
    SITE_MANAGE = "site:manage"
    USER_MANAGE = "user:manage"
    ROLE_MANAGE = "role:manage"
    SESSION_MANAGE = "session:manage"
    # Issue 20, the samples of an observational study: see the stock and the samples; generate,
    # print and mark damaged tube sets (the trial manager); the bedside collection scan (site
    # staff); a sample recorded as missed (the investigator or the trial manager, not the nurse who
    # scans); shipments of collected samples to the central lab and their receipt there.
    SAMPLE_VIEW = "sample:view"
    SAMPLE_MANAGE = "sample:manage"
    SAMPLE_COLLECT = "sample:collect"
    SAMPLE_MISS = "sample:miss"
    LAB_SHIPMENT_PREPARE = "lab_shipment:prepare"
    SAMPLE_RECEIVE = "sample:receive"


P = Permission
_COMMON = frozenset({P.ACCOUNT_SELF, P.API_DOCS, P.TRIAL_VIEW, P.LIST_VIEW})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.INVESTIGATOR: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.SUBJECT_RANDOMIZE,
        P.SUBJECT_CORRECT,
        P.SUBJECT_UNBLIND,
        P.SCREENING_VIEW,
        P.ADMINISTRATION_RECORD,
        P.DISPENSATION_VIEW,
        P.UNBLINDING_REPORT,
        P.LAB_SHIPMENT_PREPARE,
        P.SAMPLE_VIEW,
        P.SAMPLE_COLLECT,
        P.SAMPLE_MISS,
    },
    Role.PHARMACIST: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.DISPENSATION_VIEW,
        P.DISPENSATION_DISPENSE,
        P.ADMINISTRATION_RECORD,
        P.KIT_VIEW,
        P.KIT_MANAGE,
        P.UNBLINDING_REPORT,
        P.CODE_BREAK_CHECK,
    },
    Role.UNBLINDED_PHARMACIST: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.DISPENSATION_VIEW,
        P.DISPENSATION_DISPENSE,
        P.DISPENSATION_PREPARE,
        P.KIT_VIEW,
        P.KIT_MANAGE,
        P.UNBLINDING_REPORT,
        P.CODE_BREAK_GENERATE,
        P.CODE_BREAK_CHECK,
    },
    Role.NURSE: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.ADMINISTRATION_RECORD,
        P.UNBLINDING_REPORT,
        P.LAB_SHIPMENT_PREPARE,
        P.SAMPLE_VIEW,
        P.SAMPLE_COLLECT,
    },
    Role.MONITOR: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.SCREENING_VIEW,
        P.DISPENSATION_VIEW,
        P.KIT_VIEW,
        P.AUDIT_VIEW,
        P.REPORT_VIEW,
        P.UNBLINDING_REPORT,
        P.CODE_BREAK_CHECK,
        P.AUDIT_REVIEW,
        P.EXPORT_BLINDED,
        P.SAMPLE_VIEW,
    },
    Role.AUDITOR: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.SCREENING_VIEW,
        P.DISPENSATION_VIEW,
        P.KIT_VIEW,
        P.AUDIT_VIEW,
        P.REPORT_VIEW,
        P.EXPORT_BLINDED,
        P.SAMPLE_VIEW,
    },
    Role.TRIAL_MANAGER: _COMMON
    | {
        P.SUBJECT_VIEW,
        P.SCREENING_VIEW,
        P.DISPENSATION_VIEW,
        P.KIT_VIEW,
        P.SHIPMENT_MANAGE,
        P.AUDIT_VIEW,
        P.REPORT_VIEW,
        P.TRIAL_LOCK,
        P.SITE_MANAGE,
        P.ROLE_MANAGE,
        P.SUBJECT_CORRECT,  # help-desk corrections, with the investigator's agreement (DIB-03)
        P.UNBLINDING_REPORT,
        P.CODE_BREAK_CHECK,
        P.AUDIT_REVIEW,
        P.EXPORT_BLINDED,
        P.SAMPLE_VIEW,
        P.LAB_SHIPMENT_PREPARE,
        P.SAMPLE_MANAGE,
        P.SAMPLE_MISS,
    },
    Role.ADMIN: frozenset(
        {
            P.ACCOUNT_SELF,
            P.API_DOCS,
            P.TRIAL_VIEW,
            P.LIST_VIEW,
            P.SITE_MANAGE,
            P.USER_MANAGE,
            P.ROLE_MANAGE,
            P.SESSION_MANAGE,
            P.AUDIT_VIEW,
        }
    ),
    Role.UNBLINDED_STATISTICIAN: _COMMON
    | {
        P.LIST_MANAGE,
        P.QUALITY_VIEW,
        P.REPORT_VIEW,
        P.REPORT_VIEW_UNBLINDED,
        P.AUDIT_VIEW,
        P.AUDIT_VIEW_UNBLINDED,
        P.TRIAL_UNBLIND,
        P.UNBLINDING_REPORT,
        P.CODE_BREAK_GENERATE,
        P.EXPORT_BLINDED,
        P.EXPORT_UNBLINDED,
    },
    Role.PHARMACOVIGILANCE: _COMMON | {P.SUBJECT_VIEW, P.UNBLINDING_PV, P.UNBLINDING_REPORT},
    # Issue 20: the central lab receives every site's samples and sees their accountability.
    Role.LAB_TECHNICIAN: _COMMON | {P.SAMPLE_VIEW, P.SAMPLE_RECEIVE},
}

# Permissions that never need a trial context (checked against any active grant).
INSTANCE_PERMISSIONS = frozenset({P.ACCOUNT_SELF, P.API_DOCS, P.USER_MANAGE, P.SESSION_MANAGE})


@dataclass(frozen=True, slots=True)
class Grant:
    """One active role assignment, as the permission check sees it."""

    role: Role
    trial_id: int | None  # None: every trial (admin)
    site_id: int | None  # None: every site of the trial
    assignment_id: int = 0


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a permission applies within one trial: all sites, or only `site_ids`."""

    all_sites: bool
    site_ids: frozenset[int]

    def allows_site(self, site_id: int) -> bool:
        return self.all_sites or site_id in self.site_ids

    @property
    def empty(self) -> bool:
        return not self.all_sites and not self.site_ids


NO_SCOPE = Scope(all_sites=False, site_ids=frozenset())


@dataclass(frozen=True, slots=True)
class Access:
    """The current user's active grants, read from the database on every request (BLD-11)."""

    grants: tuple[Grant, ...]

    def roles(self, trial_id: int | None = None) -> set[Role]:
        return {g.role for g in self.grants if trial_id is None or g.trial_id in (None, trial_id)}

    def has(self, permission: Permission, trial_id: int | None = None) -> bool:
        if permission in INSTANCE_PERMISSIONS:
            return any(permission in ROLE_PERMISSIONS[g.role] for g in self.grants)
        if trial_id is None:
            return any(permission in ROLE_PERMISSIONS[g.role] for g in self.grants)
        return not self.scope(permission, trial_id).empty

    def scope(self, permission: Permission, trial_id: int) -> Scope:
        """Sites of `trial_id` where `permission` holds (site scoping enforced by services)."""
        sites: set[int] = set()
        for g in self.grants:
            if permission not in ROLE_PERMISSIONS[g.role] or g.trial_id not in (None, trial_id):
                continue
            if g.site_id is None:
                return Scope(all_sites=True, site_ids=frozenset())
            sites.add(g.site_id)
        return Scope(all_sites=False, site_ids=frozenset(sites))

    def is_unblinded(self, trial_id: int) -> bool:
        return any(g.role in UNBLINDED_ROLES for g in self.grants if g.trial_id == trial_id)

    def needs_mfa(self) -> bool:
        return any(g.role in MFA_REQUIRED_ROLES for g in self.grants)

    def acting_role(self, permission: Permission, trial_id: int | None) -> Role | None:
        """The role under which an action is recorded in the audit trail."""
        for g in self.grants:
            if permission in ROLE_PERMISSIONS[g.role] and (
                trial_id is None or g.trial_id in (None, trial_id)
            ):
                return g.role
        return None

    def site_for(self, permission: Permission, trial_id: int) -> int | None:
        """The single site where a site-scoped user holds `permission` (None if several or all)."""
        scope = self.scope(permission, trial_id)
        if scope.all_sites or len(scope.site_ids) != 1:
            return None
        return next(iter(scope.site_ids))


def active(starts_at: datetime, ends_at: datetime | None, revoked: bool, now: datetime) -> bool:
    return not revoked and starts_at <= now and (ends_at is None or now < ends_at)


# --- route declarations ----------------------------------------------------------------------

REQUIRED_ATTR = "_allocator_permission"
PUBLIC_ATTR = "_allocator_public"


def requires(permission: Permission) -> Callable[[F], F]:
    """Declare the permission a view needs. Put it directly under `@bp.route(...)`."""

    def mark(view: F) -> F:
        setattr(view, REQUIRED_ATTR, permission)
        return view

    return mark


def public(view: F) -> F:
    """Put a view on the short public list (login, static files, health check)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def declared_permission(view: object) -> Permission | None:
    return getattr(view, REQUIRED_ATTR, None)


def is_public(view: object) -> bool:
    return bool(getattr(view, PUBLIC_ATTR, False))


def validate_role_scope(role: Role, trial_id: int | None, site_id: int | None) -> str | None:
    """Why a (role, trial, site) combination cannot be granted, or None if it can."""
    if trial_id is None and role not in INSTANCE_ROLES:
        return f"the {role.value} role must be granted for a trial"
    if trial_id is not None and role in INSTANCE_ROLES:
        return f"the {role.value} role is instance-wide and cannot be granted for one trial"
    if role in SITE_ROLES and site_id is None:
        return f"the {role.value} role must be granted for a site"
    if site_id is not None and role not in SITE_ROLES | OPTIONAL_SITE_ROLES:
        return f"the {role.value} role cannot be limited to a site"
    return None


def roles_with(permission: Permission) -> Iterable[Role]:
    return (role for role, perms in ROLE_PERMISSIONS.items() if permission in perms)
