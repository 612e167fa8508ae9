"""H2: the authorization matrix (BLD-06, ACC-07). Every (principal, endpoint) pair has an expected
answer, written out here by hand — not derived from permissions.py — so that a change to the role
map that opens an endpoint to a new role fails this test. A second test fails when an endpoint
exists that the matrix does not cover."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import Cookie

from allocator import crypto
from allocator.permissions import MFA_REQUIRED_ROLES, Role
from allocator.services import auth, trials
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from tests.support import (
    CLI_ACTOR,
    GOOD_PASSWORD,
    IFN_TRIAL,
    Clock,
    enroll_totp,
    load_cohort,
    load_ifn,
    make_user,
)
from tests.support.worlds import replayed
from tests.web.conftest import csrf_token, https_client

ALL = frozenset(
    {
        "investigator",
        "pharmacist",
        "unblinded_pharmacist",
        "nurse",
        "monitor",
        "auditor",
        "trial_manager",
        "admin",
        "unblinded_statistician",
        "pharmacovigilance",
        "investigator_p2",
        "monitor_other_trial",
        "cohort_investigator",
        "cohort_monitor",
        "cohort_trial_manager",
        "lab_technician",
        "cohort_nurse",
    }
)
# Users of the observational cohort IMMUNOSEPSIS-4 only (issue 20): nothing of IFNG-PAIS is theirs.
COHORT_USERS = frozenset({"cohort_investigator", "cohort_monitor", "cohort_trial_manager"})
COHORT_READERS = frozenset({"cohort_monitor", "cohort_trial_manager"})  # REPORT_VIEW in the cohort
# labship: the cohort's central-lab technician (the role exists for observational studies only).
COHORT_LAB = frozenset({"lab_technician"})
# Issue 20, the tube sets: the cohort's nurse at L1 (collects) and trial manager (generates, prints).
COHORT_STAFF = frozenset({"cohort_nurse", "cohort_trial_manager"})
COHORT_ALL = COHORT_USERS | COHORT_STAFF | COHORT_LAB
SAMPLE_COLLECTORS = frozenset({"cohort_investigator", "cohort_nurse"})
IN_TRIAL = ALL - {"monitor_other_trial"} - COHORT_ALL
NONE: frozenset[str] = frozenset()
INV = frozenset({"investigator", "investigator_p2"})
PHARM = frozenset({"pharmacist", "unblinded_pharmacist"})
SUBJECT_VIEWERS = (
    INV | PHARM | frozenset({"nurse", "monitor", "auditor", "trial_manager", "pharmacovigilance"})
)
CORRECTORS = INV | frozenset({"trial_manager"})
ADMINISTERS = INV | frozenset({"pharmacist", "nurse"})
REPORTS_ACCIDENTS = IN_TRIAL - frozenset({"auditor", "admin"})
READERS = frozenset({"monitor", "auditor", "trial_manager", "unblinded_statistician"})


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    allowed: frozenset[str]
    endpoint: str


# Principals: one user per role at site P1 (or trial-wide) of IFNG-PAIS; an investigator of site P2;
# a monitor of another trial; and the anonymous visitor (checked separately).
MATRIX = [
    Row("home", "GET", "/", ALL, "main.home"),
    Row("own account", "GET", "/account", ALL, "account.profile"),
    Row("create own token", "POST", "/account/tokens", ALL, "account.create_token"),
    Row("revoke own token", "POST", "/account/tokens/999999/revoke", ALL, "account.revoke_token"),
    Row("password page", "GET", "/account/password", ALL, "auth.change_password"),
    Row("password change", "POST", "/account/password", ALL, "auth.change_password"),
    Row("authenticator enrolment", "GET", "/account/totp/enroll", ALL, "auth.totp_enroll"),
    Row("second factor page", "GET", "/account/totp", ALL, "auth.totp"),
    Row("second factor", "POST", "/account/totp", ALL, "auth.totp"),
    Row("authenticator confirmation", "POST", "/account/totp/enroll", ALL, "auth.totp_enroll"),
    Row("trial page", "GET", "/trials/IFNG-PAIS", IN_TRIAL, "main.trial"),
    Row(
        "other trial's page",
        "GET",
        "/trials/OTHER",
        frozenset({"admin", "monitor_other_trial"}),
        "main.trial",
    ),
    # The observational cohort (issue 20): its own users, and the administrator's trial page.
    Row("cohort trial page", "GET", "/trials/IMMUNOSEPSIS-4", COHORT_ALL | {"admin"}, "main.trial"),
    Row(
        "cohort register form",
        "GET",
        "/trials/IMMUNOSEPSIS-4/register",
        frozenset({"cohort_investigator"}),
        "subjects.register_form",
    ),
    Row(
        "cohort register",
        "POST",
        "/trials/IMMUNOSEPSIS-4/register",
        frozenset({"cohort_investigator"}),
        "subjects.register",
    ),
    # The lab technician reads samples, not participants (no SUBJECT_VIEW).
    Row(
        "cohort subjects",
        "GET",
        "/trials/IMMUNOSEPSIS-4/subjects",
        COHORT_ALL - COHORT_LAB,
        "subjects.subject_list",
    ),
    Row(
        "cohort subject",
        "GET",
        "/trials/IMMUNOSEPSIS-4/subjects/L1-001",
        COHORT_ALL - COHORT_LAB,
        "subjects.subject_page",
    ),
    Row(
        "cohort screening log",
        "GET",
        "/trials/IMMUNOSEPSIS-4/screening",
        COHORT_USERS | {"cohort_trial_manager"},
        "subjects.screening",
    ),
    Row(
        "cohort lab calendar",
        "GET",
        "/trials/IMMUNOSEPSIS-4/lab-calendar",
        COHORT_ALL | {"admin"},
        "subjects.lab_calendar",
    ),
    Row(
        "cohort lab closure",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-calendar/closures",
        frozenset({"admin", "cohort_trial_manager"}),
        "subjects.add_lab_closure",
    ),
    Row(
        "cohort lab closure withdrawn",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-calendar/withdrawals",
        frozenset({"admin", "cohort_trial_manager"}),
        "subjects.withdraw_lab_closure",
    ),
    # Issue 20, the tube sets: the stock for the cohort's readers; generation, labels and damage for
    # its trial manager; the bedside collection scan for its investigator and nurse; a missed sample
    # for its investigator and trial manager (not the nurse).
    Row("cohort tube sets", "GET", "/trials/IMMUNOSEPSIS-4/tube-sets", COHORT_ALL, "samples.tube_sets"),
    Row(
        "cohort tube-set generation",
        "POST",
        "/trials/IMMUNOSEPSIS-4/tube-sets",
        frozenset({"cohort_trial_manager"}),
        "samples.generate",
    ),
    Row(
        "cohort tube-set labels",
        "POST",
        "/trials/IMMUNOSEPSIS-4/tube-sets/labels",
        frozenset({"cohort_trial_manager"}),
        "samples.labels",
    ),
    Row(
        "cohort damaged tube set",
        "POST",
        "/trials/IMMUNOSEPSIS-4/tube-sets/damaged",
        frozenset({"cohort_trial_manager"}),
        "samples.damaged",
    ),
    Row(
        "cohort collection page",
        "GET",
        "/trials/IMMUNOSEPSIS-4/samples/collect",
        SAMPLE_COLLECTORS,
        "samples.collect",
    ),
    Row(
        "cohort collection",
        "POST",
        "/trials/IMMUNOSEPSIS-4/samples/collect",
        SAMPLE_COLLECTORS,
        "samples.collect_record",
    ),
    Row(
        "cohort collection check",
        "POST",
        "/trials/IMMUNOSEPSIS-4/samples/collect/check",
        SAMPLE_COLLECTORS,
        "samples.collect_check",
    ),
    Row(
        "cohort missed sample",
        "POST",
        "/trials/IMMUNOSEPSIS-4/subjects/L1-001/samples/D3/missed",
        frozenset({"cohort_investigator", "cohort_trial_manager"}),
        "samples.missed",
    ),
    Row(
        "cohort missed record withdrawn",
        "POST",
        "/trials/IMMUNOSEPSIS-4/subjects/L1-001/samples/D3/missed/withdraw",
        frozenset({"cohort_investigator", "cohort_trial_manager"}),
        "samples.withdraw_missed",
    ),
    Row(
        "cohort API register",
        "POST",
        "/api/v1/trials/IMMUNOSEPSIS-4/subjects",
        frozenset({"cohort_investigator"}),
        "api.randomize",
    ),
    Row(
        "cohort API summary",
        "GET",
        "/api/v1/trials/IMMUNOSEPSIS-4",
        COHORT_ALL | {"admin"},
        "api.trial",
    ),
    # The cohort's reports and the API's participant list (issue 20): the cohort's monitor and trial
    # manager read the reports; nobody of IFNG-PAIS does, and they read nothing of IFNG-PAIS.
    Row("cohort reports", "GET", "/trials/IMMUNOSEPSIS-4/reports", COHORT_READERS, "reports.index"),
    Row(
        "cohort report",
        "GET",
        "/trials/IMMUNOSEPSIS-4/reports/sample-completeness",
        COHORT_READERS,
        "reports.page",
    ),
    Row(
        "cohort report CSV",
        "GET",
        "/trials/IMMUNOSEPSIS-4/reports/strobe-flow/csv",
        COHORT_READERS,
        "reports.download",
    ),
    Row(
        "cohort report PDF",
        "GET",
        "/trials/IMMUNOSEPSIS-4/reports/recruitment/pdf",
        COHORT_READERS,
        "reports.download",
    ),
    Row(
        "cohort review report",
        "GET",
        "/trials/IMMUNOSEPSIS-4/reports/review/off-hours",
        COHORT_READERS,
        "reports.review_page",
    ),
    Row(
        "cohort API subjects",
        "GET",
        "/api/v1/trials/IMMUNOSEPSIS-4/subjects",
        COHORT_USERS | {"cohort_nurse"},
        "api.subject_list",
    ),
    Row(
        "cohort API subject",
        "GET",
        "/api/v1/trials/IMMUNOSEPSIS-4/subjects/L1-001",
        COHORT_USERS | {"cohort_nurse"},
        "api.subject_detail",
    ),
    # labship (issue 20): lab shipments by the site, receipt by the lab, accountability for both sides' overseers.
    Row(
        "cohort lab shipments",
        "GET",
        "/trials/IMMUNOSEPSIS-4/lab-shipments",
        frozenset({"cohort_investigator", "cohort_nurse", "cohort_trial_manager"}),
        "lab.shipments",
    ),
    Row(
        "cohort prepare lab shipment",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-shipments",
        frozenset({"cohort_investigator", "cohort_nurse", "cohort_trial_manager"}),
        "lab.prepare",
    ),
    Row(
        "cohort ship lab shipment",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-shipments/LS-0001/ship",
        frozenset({"cohort_investigator", "cohort_nurse", "cohort_trial_manager"}),
        "lab.ship",
    ),
    Row(
        "cohort print manifest",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-shipments/LS-0001/manifests",
        frozenset({"cohort_investigator", "cohort_nurse", "cohort_trial_manager"}),
        "lab.print_manifest",
    ),
    Row(
        "cohort manifest",
        "GET",
        "/trials/IMMUNOSEPSIS-4/lab-shipments/LS-0001/manifests/LM-IMMUNOSEPSIS-4-000001.pdf",
        frozenset({"cohort_investigator", "cohort_nurse", "cohort_trial_manager"}),
        "lab.manifest",
    ),
    Row("cohort receipt", "GET", "/trials/IMMUNOSEPSIS-4/lab-receipt", COHORT_LAB, "lab.receipt_start"),
    Row("cohort open receipt", "POST", "/trials/IMMUNOSEPSIS-4/lab-receipt", COHORT_LAB, "lab.open_receipt"),
    Row(
        "cohort receipt of a shipment",
        "GET",
        "/trials/IMMUNOSEPSIS-4/lab-receipt/LS-0001",
        COHORT_LAB,
        "lab.receipt",
    ),
    Row(
        "cohort receive a sample",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-receipt/LS-0001/samples",
        COHORT_LAB,
        "lab.receive_sample",
    ),
    Row(
        "cohort close a receipt",
        "POST",
        "/trials/IMMUNOSEPSIS-4/lab-receipt/LS-0001/close",
        COHORT_LAB,
        "lab.close_receipt",
    ),
    Row(
        "cohort sample accountability",
        "GET",
        "/trials/IMMUNOSEPSIS-4/sample-accountability",
        COHORT_LAB | {"cohort_monitor", "cohort_trial_manager", "cohort_investigator", "cohort_nurse"},
        "lab.accountability",
    ),
    Row(
        "cohort sample accountability CSV",
        "GET",
        "/trials/IMMUNOSEPSIS-4/sample-accountability.csv",
        COHORT_LAB | {"cohort_monitor", "cohort_trial_manager", "cohort_investigator", "cohort_nurse"},
        "lab.accountability_csv",
    ),
    Row("users", "GET", "/admin/users", frozenset({"admin"}), "admin.users"),
    Row("create user", "POST", "/admin/users", frozenset({"admin"}), "admin.create_user"),
    Row("user detail", "GET", "/admin/users/monitor", frozenset({"admin"}), "admin.user"),
    Row("grant (admin page)", "POST", "/admin/users/monitor/roles", frozenset({"admin"}), "admin.grant"),
    Row(
        "revoke (admin page)",
        "POST",
        "/admin/users/monitor/roles/999999/revoke",
        frozenset({"admin"}),
        "admin.revoke",
    ),
    Row("deactivate", "POST", "/admin/users/monitor/deactivate", frozenset({"admin"}), "admin.set_active"),
    Row(
        "reset password",
        "POST",
        "/admin/users/monitor/reset-password",
        frozenset({"admin"}),
        "admin.reset_password",
    ),
    Row(
        "reset authenticator",
        "POST",
        "/admin/users/monitor/reset-totp",
        frozenset({"admin"}),
        "admin.reset_totp",
    ),
    Row(
        "revoke any token", "POST", "/admin/tokens/999999/revoke", frozenset({"admin"}), "admin.revoke_token"
    ),
    Row("sessions", "GET", "/admin/sessions", frozenset({"admin"}), "admin.sessions"),
    Row("end a session", "POST", "/admin/sessions/999999/terminate", frozenset({"admin"}), "admin.terminate"),
    Row("instance audit trail", "GET", "/admin/audit", frozenset({"admin"}), "audit.system_trail"),
    Row(
        "trial roles",
        "GET",
        "/trials/IFNG-PAIS/roles",
        frozenset({"admin", "trial_manager"}),
        "admin.trial_roles",
    ),
    Row(
        "grant in trial",
        "POST",
        "/trials/IFNG-PAIS/roles",
        frozenset({"admin", "trial_manager"}),
        "admin.trial_grant",
    ),
    Row(
        "revoke in trial",
        "POST",
        "/trials/IFNG-PAIS/roles/999999/revoke",
        frozenset({"admin", "trial_manager"}),
        "admin.trial_revoke",
    ),
    Row("other trial's roles", "GET", "/trials/OTHER/roles", frozenset({"admin"}), "admin.trial_roles"),
    Row(
        "unblinded role holders",
        "GET",
        "/trials/IFNG-PAIS/unblinded-roles",
        frozenset({"monitor", "auditor", "trial_manager", "unblinded_statistician"}),
        "admin.unblinded_roles",
    ),
    Row(
        "sites", "GET", "/trials/IFNG-PAIS/sites", frozenset({"admin", "trial_manager"}), "admin.trial_sites"
    ),
    Row(
        "activate a site",
        "POST",
        "/trials/IFNG-PAIS/sites/P1/activate",
        frozenset({"admin", "trial_manager"}),
        "admin.site_change",
    ),
    Row(
        "audit trail",
        "GET",
        "/trials/IFNG-PAIS/audit",
        frozenset({"monitor", "auditor", "trial_manager", "admin", "unblinded_statistician"}),
        "audit.trail",
    ),
    Row(
        "audit CSV",
        "GET",
        "/trials/IFNG-PAIS/audit.csv",
        frozenset({"monitor", "auditor", "trial_manager", "admin", "unblinded_statistician"}),
        "audit.trail_csv",
    ),
    Row(
        "unblinded audit trail",
        "GET",
        "/trials/IFNG-PAIS/audit/unblinded",
        frozenset({"unblinded_statistician"}),
        "audit.trail_unblinded",
    ),
    Row(
        "sign an audit review",
        "POST",
        "/trials/IFNG-PAIS/audit/review",
        frozenset({"monitor", "auditor", "trial_manager", "admin", "unblinded_statistician"}),
        "audit.review",
    ),
    Row(
        "other trial's audit",
        "GET",
        "/trials/OTHER/audit",
        frozenset({"admin", "monitor_other_trial"}),
        "audit.trail",
    ),
    Row("strata (blinded counts)", "GET", "/trials/IFNG-PAIS/strata", IN_TRIAL, "lists.strata"),
    Row(
        "other trial's strata",
        "GET",
        "/trials/OTHER/strata",
        frozenset({"admin", "monitor_other_trial"}),
        "lists.strata",
    ),
    Row("lists", "GET", "/trials/IFNG-PAIS/lists", frozenset({"unblinded_statistician"}), "lists.manage"),
    Row(
        "generate a list",
        "POST",
        "/trials/IFNG-PAIS/lists",
        frozenset({"unblinded_statistician"}),
        "lists.generate",
    ),
    Row(
        "review a list",
        "GET",
        "/trials/IFNG-PAIS/lists/999999/review",
        frozenset({"unblinded_statistician"}),
        "lists.review",
    ),
    Row(
        "approve a list",
        "POST",
        "/trials/IFNG-PAIS/lists/999999/approve",
        frozenset({"unblinded_statistician"}),
        "lists.sign_step",
    ),
    Row(
        "check lists",
        "POST",
        "/trials/IFNG-PAIS/lists/check",
        frozenset({"unblinded_statistician"}),
        "lists.check",
    ),
    Row(
        "verify lists",
        "POST",
        "/trials/IFNG-PAIS/lists/verify",
        frozenset({"unblinded_statistician"}),
        "lists.verify",
    ),
    Row(
        "extend a list",
        "POST",
        "/trials/IFNG-PAIS/lists/999999/extend",
        frozenset({"unblinded_statistician"}),
        "lists.extend",
    ),
    Row(
        "approve a list extension",
        "POST",
        "/trials/IFNG-PAIS/lists/999999/extension/approve",
        frozenset({"unblinded_statistician"}),
        "lists.approve_extension",
    ),
    Row(
        "decline a list extension",
        "POST",
        "/trials/IFNG-PAIS/lists/999999/extension/decline",
        frozenset({"unblinded_statistician"}),
        "lists.decline_extension",
    ),
    Row(
        "export a list",
        "POST",
        "/trials/IFNG-PAIS/lists/999999/export",
        frozenset({"unblinded_statistician"}),
        "lists.export",
    ),
    Row(
        "quality report",
        "GET",
        "/trials/IFNG-PAIS/quality",
        frozenset({"unblinded_statistician"}),
        "lists.quality",
    ),
    Row(
        "quality report PDF",
        "GET",
        "/trials/IFNG-PAIS/quality.pdf",
        frozenset({"unblinded_statistician"}),
        "lists.quality_pdf",
    ),
    Row("other trial's lists", "GET", "/trials/OTHER/lists", NONE, "lists.manage"),
    Row("randomize form", "GET", "/trials/IFNG-PAIS/randomize", INV, "subjects.randomize_form"),
    Row("randomize", "POST", "/trials/IFNG-PAIS/randomize", INV, "subjects.randomize"),
    Row(
        "randomization result",
        "GET",
        "/trials/IFNG-PAIS/subjects/P1-001/randomized",
        INV,
        "subjects.randomized",
    ),
    Row("subjects", "GET", "/trials/IFNG-PAIS/subjects", SUBJECT_VIEWERS, "subjects.subject_list"),
    Row("subject", "GET", "/trials/IFNG-PAIS/subjects/P1-001", SUBJECT_VIEWERS, "subjects.subject_page"),
    Row(
        "print the confirmation",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/confirmations",
        SUBJECT_VIEWERS,
        "subjects.print_confirmation",
    ),
    Row(
        "printed confirmation PDF",
        "GET",
        "/trials/IFNG-PAIS/subjects/P1-001/confirmations/RAND-IFNG-PAIS-000001.pdf",
        SUBJECT_VIEWERS,
        "subjects.confirmation",
    ),
    Row(
        "flag in error", "POST", "/trials/IFNG-PAIS/subjects/P1-001/in-error", CORRECTORS, "subjects.in_error"
    ),
    Row(
        "record a withdrawal",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/withdrawal",
        CORRECTORS,
        "subjects.withdrawal",
    ),
    Row(
        "correct a stratum",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/stratum",
        CORRECTORS,
        "subjects.stratum",
    ),
    Row(
        "screening log",
        "GET",
        "/trials/IFNG-PAIS/screening",
        INV | frozenset({"monitor", "auditor", "trial_manager"}),
        "subjects.screening",
    ),
    Row(
        "pharmacy queue",
        "GET",
        "/trials/IFNG-PAIS/pharmacy",
        INV | PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "subjects.pharmacy",
    ),
    Row("dispense", "POST", "/trials/IFNG-PAIS/subjects/P1-001/dispense", PHARM, "subjects.dispense"),
    Row(
        "dispensing scan check",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/dispense/check",
        PHARM,
        "subjects.dispense_check",
    ),
    Row(
        "print a dispensation sheet",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/dispensation-sheets",
        PHARM,
        "subjects.print_sheet",
    ),
    Row(
        "printed dispensation sheet",
        "GET",
        "/trials/IFNG-PAIS/subjects/P1-001/dispensation-sheets/DISP-IFNG-PAIS-000001.pdf",
        PHARM,
        "subjects.sheet",
    ),
    Row("replace a kit", "POST", "/trials/IFNG-PAIS/subjects/P1-001/replace", PHARM, "subjects.replace"),
    Row(
        "preparation",
        "GET",
        "/trials/IFNG-PAIS/subjects/P1-001/preparation/D1",
        frozenset({"unblinded_pharmacist"}),
        "subjects.preparation",
    ),
    Row("bedside page", "GET", "/trials/IFNG-PAIS/bedside", ADMINISTERS, "subjects.bedside"),
    Row("bedside scan", "POST", "/trials/IFNG-PAIS/bedside", ADMINISTERS, "subjects.bedside_record"),
    Row(
        "bedside scan check", "POST", "/trials/IFNG-PAIS/bedside/check", ADMINISTERS, "subjects.bedside_check"
    ),
    Row(
        "stock",
        "GET",
        "/trials/IFNG-PAIS/stock",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.stock",
    ),
    Row(
        "supply dashboard",
        "GET",
        "/trials/IFNG-PAIS/supply",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.dashboard",
    ),
    Row("kit status", "POST", "/trials/IFNG-PAIS/kits/status", PHARM, "supply.kit_status"),
    Row(
        "depot kit status",
        "POST",
        "/trials/IFNG-PAIS/depot/kits/status",
        frozenset({"trial_manager"}),
        "supply.depot_kit_status",
    ),
    Row("kit labels", "POST", "/trials/IFNG-PAIS/kits/labels", PHARM, "supply.labels"),
    Row(
        "shipments",
        "GET",
        "/trials/IFNG-PAIS/shipments",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.shipments",
    ),
    Row(
        "a shipment's kits",
        "GET",
        "/trials/IFNG-PAIS/shipments/SH-9999",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.shipment",
    ),
    Row(
        "prepare a shipment",
        "POST",
        "/trials/IFNG-PAIS/shipments",
        frozenset({"trial_manager"}),
        "supply.create_shipment",
    ),
    Row(
        "ship",
        "POST",
        "/trials/IFNG-PAIS/shipments/SH-9999/ship",
        frozenset({"trial_manager"}),
        "supply.ship",
    ),
    Row("receive", "POST", "/trials/IFNG-PAIS/shipments/SH-9999/receive", PHARM, "supply.receive"),
    Row(
        "receipt scan check",
        "POST",
        "/trials/IFNG-PAIS/shipments/SH-9999/receive/check",
        PHARM,
        "supply.receive_check",
    ),
    Row(
        "reconciliation",
        "GET",
        "/trials/IFNG-PAIS/reconciliation",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.reconciliation",
    ),
    Row(
        "reconciliation CSV",
        "GET",
        "/trials/IFNG-PAIS/reconciliation.csv",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.reconciliation_csv",
    ),
    Row(
        "returns and destruction",
        "GET",
        "/trials/IFNG-PAIS/returns",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.returns",
    ),
    Row("record a return", "POST", "/trials/IFNG-PAIS/returns", PHARM, "supply.record_return"),
    Row("record a destruction", "POST", "/trials/IFNG-PAIS/destructions", PHARM, "supply.record_destruction"),
    Row(
        "return or destruction document",
        "GET",
        "/trials/IFNG-PAIS/returns/DES-P1-9999.pdf",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "supply.disposal_document",
    ),
    Row(
        "batch expiry",
        "POST",
        "/trials/IFNG-PAIS/batches/LOT-1/expiry",
        frozenset({"trial_manager"}),
        "supply.batch_expiry",
    ),
    # Temperature excursions (issue 19): reported by site pharmacists and the depot, decided by the
    # sponsor (shipment:manage), read by every holder of kit:view.
    Row(
        "excursions",
        "GET",
        "/trials/IFNG-PAIS/excursions",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "excursions.excursions",
    ),
    Row("report an excursion", "POST", "/trials/IFNG-PAIS/excursions", PHARM, "excursions.report"),
    Row(
        "depot excursion report",
        "POST",
        "/trials/IFNG-PAIS/depot/excursions",
        frozenset({"trial_manager"}),
        "excursions.depot_report",
    ),
    Row(
        "excursion",
        "GET",
        "/trials/IFNG-PAIS/excursions/EXC-9999",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "excursions.excursion",
    ),
    Row(
        "excursion logger file",
        "GET",
        "/trials/IFNG-PAIS/excursions/EXC-9999/logger",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "excursions.logger",
    ),
    Row(
        "excursion decision",
        "POST",
        "/trials/IFNG-PAIS/excursions/EXC-9999/decision",
        frozenset({"trial_manager"}),
        "excursions.decide",
    ),
    # Relabelling after an expiry change (issue 19): sheets and scans by site pharmacists for their
    # site and by the depot for its kits; the list for every holder of kit:view.
    Row(
        "relabelling",
        "GET",
        "/trials/IFNG-PAIS/relabelling",
        PHARM | frozenset({"monitor", "auditor", "trial_manager"}),
        "relabelling.page",
    ),
    Row("relabelling sheet", "POST", "/trials/IFNG-PAIS/relabelling/sheet", PHARM, "relabelling.sheet"),
    Row(
        "depot relabelling sheet",
        "POST",
        "/trials/IFNG-PAIS/depot/relabelling/sheet",
        frozenset({"trial_manager"}),
        "relabelling.depot_sheet",
    ),
    Row("relabel scan", "POST", "/trials/IFNG-PAIS/relabelling/confirm", PHARM, "relabelling.confirm"),
    Row(
        "depot relabel scan",
        "POST",
        "/trials/IFNG-PAIS/depot/relabelling/confirm",
        frozenset({"trial_manager"}),
        "relabelling.depot_confirm",
    ),
    Row(
        "generate kits",
        "POST",
        "/trials/IFNG-PAIS/kit-lists",
        frozenset({"unblinded_statistician"}),
        "supply.generate_kit_list",
    ),
    Row(
        "import kits",
        "POST",
        "/trials/IFNG-PAIS/kit-lists/import",
        frozenset({"unblinded_statistician"}),
        "supply.import_kit_list",
    ),
    # Offline code-break sheets (UNB-06): checks by blinded site and monitoring roles; generation,
    # reprints and replacements by the unblinded statistician and the unblinded pharmacist only.
    Row(
        "code-break sheets",
        "GET",
        "/trials/IFNG-PAIS/code-break",
        PHARM | frozenset({"monitor", "trial_manager"}),
        "codebreak.overview",
    ),
    Row(
        "code-break reconciliation CSV",
        "GET",
        "/trials/IFNG-PAIS/code-break.csv",
        PHARM | frozenset({"monitor", "trial_manager"}),
        "codebreak.overview_csv",
    ),
    Row(
        "code-break check",
        "POST",
        "/trials/IFNG-PAIS/code-break/checks",
        PHARM | frozenset({"monitor", "trial_manager"}),
        "codebreak.check",
    ),
    Row(
        "code-break check scan",
        "POST",
        "/trials/IFNG-PAIS/code-break/sheet-check",
        PHARM | frozenset({"monitor", "trial_manager"}),
        "codebreak.sheet_check",
    ),
    Row(
        "code-break generation page",
        "GET",
        "/trials/IFNG-PAIS/code-break/sheets",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "codebreak.sheets",
    ),
    Row(
        "generate code-break sheets",
        "POST",
        "/trials/IFNG-PAIS/code-break/sheets",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "codebreak.generate",
    ),
    Row(
        "reprint code-break sheets",
        "POST",
        "/trials/IFNG-PAIS/code-break/documents/CBDOC-IFNG-PAIS-999999/reprint",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "codebreak.reprint",
    ),
    Row(
        "replace a code-break sheet",
        "POST",
        "/trials/IFNG-PAIS/code-break/replacements",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "codebreak.replace",
    ),
    Row(
        "code-break replacement scan",
        "POST",
        "/trials/IFNG-PAIS/code-break/replacements/check",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "codebreak.replacement_check",
    ),
    # Unblinding drills (UNB-11): drill subjects by the trial manager and the administrator (site
    # management); drill sheets by the roles that generate code-break sheets.
    Row(
        "drill subjects",
        "GET",
        "/trials/IFNG-PAIS/drills",
        frozenset({"admin", "trial_manager"}),
        "drills.index",
    ),
    Row(
        "create a drill subject",
        "POST",
        "/trials/IFNG-PAIS/drills",
        frozenset({"admin", "trial_manager"}),
        "drills.create",
    ),
    Row(
        "drill sheets page",
        "GET",
        "/trials/IFNG-PAIS/drills/sheets",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "drills.sheets",
    ),
    Row(
        "print a drill sheet",
        "POST",
        "/trials/IFNG-PAIS/drills/sheets",
        frozenset({"unblinded_statistician", "unblinded_pharmacist"}),
        "drills.generate_sheet",
    ),
    Row("API randomize", "POST", "/api/v1/trials/IFNG-PAIS/subjects", INV, "api.randomize"),
    Row("API subjects", "GET", "/api/v1/trials/IFNG-PAIS/subjects", SUBJECT_VIEWERS, "api.subject_list"),
    Row(
        "API subject",
        "GET",
        "/api/v1/trials/IFNG-PAIS/subjects/P1-001",
        SUBJECT_VIEWERS,
        "api.subject_detail",
    ),
    Row(
        "API print a sheet",
        "POST",
        "/api/v1/trials/IFNG-PAIS/subjects/P1-001/dispensation-sheets",
        PHARM,
        "api.print_dispensation_sheet",
    ),
    Row(
        "API printed sheet",
        "GET",
        "/api/v1/trials/IFNG-PAIS/subjects/P1-001/dispensation-sheets/DISP-IFNG-PAIS-000001.pdf",
        PHARM,
        "api.dispensation_sheet",
    ),
    Row(
        "API print the confirmation",
        "POST",
        "/api/v1/trials/IFNG-PAIS/subjects/P1-001/confirmations",
        SUBJECT_VIEWERS,
        "api.print_confirmation",
    ),
    Row(
        "API printed confirmation",
        "GET",
        "/api/v1/trials/IFNG-PAIS/subjects/P1-001/confirmations/RAND-IFNG-PAIS-000001.pdf",
        SUBJECT_VIEWERS,
        "api.confirmation",
    ),
    Row("API scan", "POST", "/api/v1/trials/IFNG-PAIS/scans", ADMINISTERS, "api.scan"),
    Row("API document", "GET", "/api/v1/openapi.json", ALL, "api.openapi"),
    Row("API trial", "GET", "/api/v1/trials/IFNG-PAIS", IN_TRIAL, "api.trial"),
    Row(
        "API other trial",
        "GET",
        "/api/v1/trials/OTHER",
        frozenset({"admin", "monitor_other_trial"}),
        "api.trial",
    ),
    Row(
        "API audit",
        "GET",
        "/api/v1/trials/IFNG-PAIS/audit",
        frozenset({"monitor", "auditor", "trial_manager", "admin", "unblinded_statistician"}),
        "api.audit",
    ),
    Row(
        "API audit verify",
        "GET",
        "/api/v1/trials/IFNG-PAIS/audit/verify",
        frozenset({"monitor", "auditor", "trial_manager", "admin", "unblinded_statistician"}),
        "api.audit_verify",
    ),
    # Unblinding (UNB-01..10): emergency by the site's investigators, PV by pharmacovigilance only,
    # accidental reports by every role at work in the trial but the auditor and the administrator.
    Row("emergency unblinding form", "GET", "/trials/IFNG-PAIS/unblind", INV, "unblinding.emergency"),
    Row("emergency unblinding", "POST", "/trials/IFNG-PAIS/unblind", INV, "unblinding.emergency"),
    Row(
        "emergency unblinding result",
        "GET",
        "/trials/IFNG-PAIS/unblind/1",
        INV,
        "unblinding.emergency_result",
    ),
    Row(
        "unblinding drill result", "GET", "/trials/IFNG-PAIS/unblind/drill/1", INV, "unblinding.drill_result"
    ),
    Row(
        "PV unblinding result",
        "GET",
        "/trials/IFNG-PAIS/pv-unblind/1",
        frozenset({"pharmacovigilance"}),
        "unblinding.pharmacovigilance_result",
    ),
    Row(
        "PV unblinding form",
        "GET",
        "/trials/IFNG-PAIS/pv-unblind",
        frozenset({"pharmacovigilance"}),
        "unblinding.pharmacovigilance",
    ),
    Row(
        "PV unblinding",
        "POST",
        "/trials/IFNG-PAIS/pv-unblind",
        frozenset({"pharmacovigilance"}),
        "unblinding.pharmacovigilance",
    ),
    Row("offline unblinding form", "GET", "/trials/IFNG-PAIS/unblind/offline", INV, "unblinding.offline"),
    Row("offline unblinding", "POST", "/trials/IFNG-PAIS/unblind/offline", INV, "unblinding.offline"),
    Row(
        "offline sheet scan check",
        "POST",
        "/trials/IFNG-PAIS/unblind/offline/check",
        INV,
        "unblinding.offline_check",
    ),
    Row(
        "accidental unblinding form",
        "GET",
        "/trials/IFNG-PAIS/unblinding/accidental",
        REPORTS_ACCIDENTS,
        "unblinding.accidental",
    ),
    Row(
        "accidental unblinding",
        "POST",
        "/trials/IFNG-PAIS/unblinding/accidental",
        REPORTS_ACCIDENTS,
        "unblinding.accidental",
    ),
    Row("closeout", "GET", "/trials/IFNG-PAIS/closeout", IN_TRIAL, "unblinding.closeout"),
    Row("database lock", "POST", "/trials/IFNG-PAIS/lock", frozenset({"trial_manager"}), "unblinding.lock"),
    Row(
        "final unblinding",
        "POST",
        "/trials/IFNG-PAIS/final-unblinding",
        frozenset({"unblinded_statistician"}),
        "unblinding.final_unblinding",
    ),
    Row(
        "unblinded listing page",
        "GET",
        "/trials/IFNG-PAIS/unblinded-listing",
        frozenset({"unblinded_statistician"}),
        "unblinding.listing",
    ),
    Row(
        "unblinded listing release",
        "POST",
        "/trials/IFNG-PAIS/unblinded-listing",
        frozenset({"unblinded_statistician"}),
        "unblinding.listing",
    ),
    Row(
        "interim packages page",
        "GET",
        "/trials/IFNG-PAIS/interim-packages",
        frozenset({"unblinded_statistician"}),
        "unblinding.interim",
    ),
    Row(
        "interim package release",
        "POST",
        "/trials/IFNG-PAIS/interim-packages",
        frozenset({"unblinded_statistician"}),
        "unblinding.interim",
    ),
    Row(
        "treatment after final unblinding",
        "POST",
        "/trials/IFNG-PAIS/subjects/P1-001/treatment",
        INV,
        "unblinding.treatment",
    ),
    Row("API unblind", "POST", "/api/v1/trials/IFNG-PAIS/subjects/P1-001/unblind", INV, "api.unblind"),
    # Reports (REP-01..09, AUD-09): blinded for monitors, auditors, trial managers and the unblinded
    # statistician; restricted versions for the statistician; the PV version for pharmacovigilance;
    # review sign-off for monitors and trial managers.
    Row("reports", "GET", "/trials/IFNG-PAIS/reports", READERS, "reports.index"),
    *(
        Row(f"report {name}", "GET", f"/trials/IFNG-PAIS/reports/{name}", READERS, "reports.page")
        for name in (
            "allocation-history",
            "enrolment",
            "balance",
            "dispensing",
            "accountability",
            "unblinding",
            "deviations",
            "participant-flow",
            "sequence",
        )
    ),
    Row("report CSV", "GET", "/trials/IFNG-PAIS/reports/allocation-history/csv", READERS, "reports.download"),
    Row("report PDF", "GET", "/trials/IFNG-PAIS/reports/unblinding/pdf", READERS, "reports.download"),
    Row(
        "other trial's report",
        "GET",
        "/trials/OTHER/reports/balance",
        frozenset({"monitor_other_trial"}),
        "reports.page",
    ),
    Row(
        "restricted report",
        "GET",
        "/trials/IFNG-PAIS/reports/restricted/sequence",
        frozenset({"unblinded_statistician"}),
        "reports.restricted_page",
    ),
    Row(
        "restricted flow (409 before unblinding)",
        "GET",
        "/trials/IFNG-PAIS/reports/restricted/participant-flow",
        frozenset({"unblinded_statistician"}),
        "reports.restricted_page",
    ),
    Row(
        "restricted report PDF",
        "GET",
        "/trials/IFNG-PAIS/reports/restricted/unblinding/pdf",
        frozenset({"unblinded_statistician"}),
        "reports.restricted_download",
    ),
    Row(
        "PV unblinding report",
        "GET",
        "/trials/IFNG-PAIS/reports/safety/unblinding",
        frozenset({"pharmacovigilance"}),
        "reports.safety_page",
    ),
    Row(
        "PV unblinding report CSV",
        "GET",
        "/trials/IFNG-PAIS/reports/safety/unblinding/csv",
        frozenset({"pharmacovigilance"}),
        "reports.safety_download",
    ),
    Row("review report", "GET", "/trials/IFNG-PAIS/reports/review/arm-reads", READERS, "reports.review_page"),
    Row(
        "review report CSV",
        "GET",
        "/trials/IFNG-PAIS/reports/review/off-hours/csv",
        READERS,
        "reports.review_download",
    ),
    # Report jobs (issue 21): a reader's own jobs only (another's is 404); restricted jobs by the
    # restricted route alone.
    Row("report job", "GET", "/trials/IFNG-PAIS/reports/jobs/1", READERS, "reports.job"),
    Row("report job file", "GET", "/trials/IFNG-PAIS/reports/jobs/1/file", READERS, "reports.job_file"),
    Row(
        "restricted report job",
        "GET",
        "/trials/IFNG-PAIS/reports/restricted/jobs/1",
        frozenset({"unblinded_statistician"}),
        "reports.restricted_job",
    ),
    Row(
        "restricted report job file",
        "GET",
        "/trials/IFNG-PAIS/reports/restricted/jobs/1/file",
        frozenset({"unblinded_statistician"}),
        "reports.restricted_job_file",
    ),
    Row(
        "sign a review report",
        "POST",
        "/trials/IFNG-PAIS/reports/review/corrections/sign",
        frozenset({"monitor", "trial_manager"}),
        "reports.sign",
    ),
    # Data exports (DIB-07): blinded for the readers, unblinded for the unblinded statistician alone.
    Row("exports", "GET", "/trials/IFNG-PAIS/exports", READERS, "exports.index"),
    Row("ODM export", "GET", "/trials/IFNG-PAIS/exports/odm", READERS, "exports.download"),
    Row("CSV export", "GET", "/trials/IFNG-PAIS/exports/csv", READERS, "exports.download"),
    Row(
        "unblinded export",
        "POST",
        "/trials/IFNG-PAIS/exports/unblinded",
        frozenset({"unblinded_statistician"}),
        "exports.unblinded",
    ),
    Row("API ODM export", "GET", "/api/v1/trials/IFNG-PAIS/exports/odm", READERS, "api.export_odm"),
    Row("sign out", "POST", "/logout", ALL, "auth.logout"),
]
PUBLIC = {
    ("auth.login", "GET"),
    ("auth.login", "POST"),
    ("language.choose", "POST"),  # the language switch, on the sign-in page too
    ("main.health", "GET"),
    ("static", "GET"),
}


def _secret(base32: str) -> bytes:
    return base64.b32decode(base32 + "=" * (-len(base32) % 8))


def _specs() -> dict[str, tuple[str, str | None, str]]:
    """principal name: (role, site, trial)."""
    specs = {
        role.value: (
            role.value,
            "P1" if role.value in {"investigator", "pharmacist", "unblinded_pharmacist", "nurse"} else None,
            "IFNG-PAIS",
        )
        for role in Role
    }
    specs["investigator_p2"] = ("investigator", "P2", "IFNG-PAIS")
    specs["monitor_other_trial"] = ("monitor", None, "OTHER")
    specs["cohort_investigator"] = ("investigator", "L1", "IMMUNOSEPSIS-4")
    specs["cohort_monitor"] = ("monitor", None, "IMMUNOSEPSIS-4")
    specs["cohort_trial_manager"] = ("trial_manager", None, "IMMUNOSEPSIS-4")
    specs["lab_technician"] = ("lab_technician", None, "IMMUNOSEPSIS-4")  # an observational study's role
    specs["cohort_nurse"] = ("nurse", "L1", "IMMUNOSEPSIS-4")
    return specs


def _accounts(ctx: ServiceContext) -> dict[str, bytes]:
    """Both trials and an account per principal; the authenticator secrets of those enrolled."""
    load_ifn(ctx)
    trials.load_trial(
        ctx,
        CLI_ACTOR,
        IFN_TRIAL.read_text().replace('code = "IFNG-PAIS"', 'code = "OTHER"'),
        source_name="other.toml",
    )
    load_cohort(ctx)
    secrets: dict[str, bytes] = {}
    for name, (role, site, trial) in _specs().items():
        username = name.replace("_", "-")
        created = make_user(ctx, username, role, site=site, trial=trial)
        auth.change_password(
            ctx,
            created.user_id,
            created.one_time_password,
            GOOD_PASSWORD,
            GOOD_PASSWORD,
            auth.Client("192.0.2.1", "t", "r"),
        )
        if Role(role) in MFA_REQUIRED_ROLES:
            secrets[name] = enroll_totp(ctx, created.user_id, ctx.clock)  # type: ignore[arg-type]
    return secrets


def _signed_in(app: Flask, ctx: ServiceContext, clock: Clock) -> dict[str, list[Cookie]]:
    """The accounts (`_accounts`), then every principal signed in through the pages (second factor
    completed where the role requires it): the cookies of each principal's browser."""
    secrets = _accounts(ctx)
    clock.advance(seconds=31)  # a fresh TOTP step for the sign-ins below
    cookies: dict[str, list[Cookie]] = {}
    for name in _specs():
        client = https_client(app)
        token = csrf_token(client)
        response = client.post(
            "/login",
            data={"username": name.replace("_", "-"), "password": GOOD_PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 302
        if name in secrets:
            code = crypto.totp_now(secrets[name], clock())
            done = client.post(
                "/account/totp", data={"code": code, "csrf_token": csrf_token(client, "/account/totp")}
            )
            assert done.status_code == 302 and done.headers["Location"] == "/", done.get_data(as_text=True)[
                :300
            ]
        cookies[name] = list(client._cookies.values())
    return cookies


@pytest.fixture
def principals(app: Flask, ctx: ServiceContext, clock: Clock) -> dict[str, FlaskClient]:
    """A signed-in client per principal. The accounts and the sign-ins are real the first time in
    a process, and replayed after that (tests.support.worlds): the rows the sign-ins wrote, and each
    browser's cookies. Signing 17 principals in through the pages for each of the matrix's rows was
    most of the suite's time (about 0.5 s per row and backend)."""
    assert ctx.clock is clock
    signed_in = replayed(ctx, "authorization-matrix-signed-in", lambda c: _signed_in(app, c, clock))
    clients: dict[str, FlaskClient] = {}
    for name, cookies in signed_in.items():
        client = https_client(app)
        for cookie in cookies:
            client.set_cookie(
                cookie.key,
                cookie.value,
                domain=cookie.domain,
                origin_only=cookie.origin_only,
                path=cookie.path,
            )
        clients[name] = client
    users.create_token(ctx, CLI_ACTOR, "monitor", "x")  # something for token pages to list
    return clients


def _call(client: FlaskClient, row: Row) -> tuple[int, str]:
    """The status of the row's request by this client, and where it redirects to (if it does)."""
    if row.method == "GET":
        response = client.get(row.path)
    else:
        token = csrf_token(client, "/account")
        response = client.open(row.path, method=row.method, data={"csrf_token": token})
    return response.status_code, response.headers.get("Location", "")


@pytest.mark.req("ACC-02", "ACC-10")
@pytest.mark.req("BLD-06")
@pytest.mark.parametrize("row", MATRIX, ids=lambda r: r.name)
def test_matrix(row: Row, principals: dict[str, FlaskClient]) -> None:
    mismatches = []
    for name, client in sorted(principals.items()):
        status, location = _call(client, row)
        allowed = name in row.allowed
        # Access means an answer: not a refusal, not a crash, not a trip back to the sign-in page
        # (a replayed sign-in that no longer holds would otherwise pass every allowed row).
        signed_out = "/login" in location and row.endpoint != "auth.logout"  # its answer is the sign-in page
        if allowed and (status in (401, 403) or status >= 500 or signed_out):
            mismatches.append(f"{name}: expected access, got {status} {location}".rstrip())
        if not allowed and status != 403:
            mismatches.append(f"{name}: expected 403, got {status}")
    assert mismatches == []


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: r.name)
def test_anonymous_visitors_get_nothing(row: Row, app: Flask, ctx: ServiceContext) -> None:
    load_ifn(ctx)
    client = https_client(app)
    if row.method == "GET":
        response = client.get(row.path)
    else:
        response = client.open(row.path, method=row.method, data={"csrf_token": csrf_token(client)})
    expected = 401 if row.path.startswith("/api/") else 302
    assert response.status_code == expected
    if expected == 302:
        assert "/login" in response.headers["Location"]


def test_the_matrix_covers_every_endpoint(app: Flask) -> None:
    covered = {(r.endpoint, r.method) for r in MATRIX}
    missing = []
    for rule in app.url_map.iter_rules():
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            key = (rule.endpoint, method)
            if key not in covered and key not in PUBLIC:
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert missing == [], "add these endpoints to MATRIX"


def test_forced_steps_lock_everything_else(
    app: Flask, ctx: ServiceContext, signed_in: Callable[..., FlaskClient]
) -> None:
    """An administrator who has not enrolled a second factor reaches only the enrolment page."""
    load_ifn(ctx)
    created = make_user(ctx, "adm", "admin")
    client = signed_in("adm", created.one_time_password)
    for path in ("/", "/admin/users", "/trials/IFNG-PAIS", "/account"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith(
            "/account/totp/enroll"
        ), path
    assert client.get("/api/v1/trials/IFNG-PAIS").status_code == 403
