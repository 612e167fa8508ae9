"""Lists, reports, exports and the audit trail cost a number of SQL statements that does not grow
with the subjects (issue 21): every page is read in a world of 20 subjects and again once the same
trial holds 200, and the statements each request sent are counted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator.db import Database
from allocator.services import auth, exports
from allocator.services.accounts import users
from allocator.services.closeout import releases, state
from allocator.services.context import ServiceContext
from allocator.services.reports import catalogue
from allocator.services.reports.audit_review import REVIEW_KINDS
from allocator.services.reports.catalogue import COHORT_REPORTS, REPORTS
from allocator.services.reports.filters import ReportFilter
from allocator.services.subjects import participants
from tests.support import ALL_SITES, CLI_ACTOR, COHORT, GOOD_PASSWORD, HERE, Clock, make_user, person
from tests.support.cohort_reports import grow_cohort, two_site_cohort
from tests.support.crowd import SIGNED, crowded_trial, grow, statements
from tests.web.conftest import sign_in

T = "/trials/IFNG-PAIS"
SMALL, LARGE = 20, 200

MONITOR_PATHS = [
    f"{T}/subjects",
    f"{T}/screening",
    f"{T}/shipments",
    f"{T}/returns",
    f"{T}/excursions",
    f"{T}/reconciliation",
    *(f"{T}/reports/{name}{suffix}" for name in REPORTS for suffix in ("", "/csv", "/pdf")),
    *(f"{T}/reports/review/{name}{suffix}" for name in REVIEW_KINDS for suffix in ("", "/csv", "/pdf")),
    f"{T}/audit",
]
PHARMACIST_PATHS = [f"{T}/pharmacy"]
INVESTIGATOR_PATHS = [f"{T}/unblind"]  # the form lists every subject within reach (chosen, never typed)
API_PATHS = ["/api/v1/trials/IFNG-PAIS/subjects", "/api/v1/trials/IFNG-PAIS/audit"]


def _counts(app: Flask, db: Database, clients: dict[str, FlaskClient], token: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for who, paths in (
        ("monitor", MONITOR_PATHS),
        ("pharmacist", PHARMACIST_PATHS),
        ("investigator", INVESTIGATOR_PATHS),
    ):
        for path in paths:
            if path.endswith("/audit"):
                # The first view after entries were appended keeps its verification (a row written
                # or updated): measure a view in the same state at both sizes.
                clients[who].get(path)
            with statements(db) as seen:
                response = clients[who].get(path)
                # A streamed CSV is written as it is read: read it whole (its statements count too)
                # and close it, or its generator is left open (PytestUnraisableExceptionWarning).
                body = response.get_data()
                response.close()
            assert response.status_code == 200, (who, path, body[:300])
            out[path] = seen.count
    api = app.test_client()
    api.environ_base["wsgi.url_scheme"] = "https"
    for path in API_PATHS:
        with statements(db) as seen:
            response = api.get(path, headers={"Authorization": f"Bearer {token}"})
            answer = response.get_data(as_text=True)
            response.close()
        assert response.status_code == 200, (path, answer[:300])
        out[f"api {path}"] = seen.count
    return out


def _signed_in(app: Flask, username: str, password: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    sign_in(client, username, password)
    return client


@pytest.mark.req("REP-08")
def test_pages_cost_the_same_statements_with_ten_times_the_subjects(
    app: Flask, ctx: ServiceContext, db: Database
) -> None:
    crowd = crowded_trial(ctx, subjects=SMALL, capacity=LARGE)
    person(ctx, "mon-all", "monitor")
    token = users.create_token(ctx, CLI_ACTOR, "mon-all", "scale test").token

    def clients() -> dict[str, FlaskClient]:
        return {
            "monitor": _signed_in(app, "mon-all", GOOD_PASSWORD),
            "pharmacist": _signed_in(app, crowd.ready.pharmacist.username, GOOD_PASSWORD),
            "investigator": _signed_in(app, crowd.ready.investigator.username, GOOD_PASSWORD),
        }

    small = _counts(app, db, clients(), token)
    grow(ctx, crowd, to=LARGE)
    large = _counts(app, db, clients(), token)
    grew = {path: (small[path], large[path]) for path in small if large[path] > small[path]}
    assert not grew, f"statements per request grew with the subjects (at {SMALL}, at {LARGE}): {grew}"


# --- the observational cohort's reports and participant list (issue 20) ----------------------------

C = f"/trials/{COHORT}"
COHORT_PATHS = [
    f"{C}/reports",
    *(f"{C}/reports/{name}{suffix}" for name in COHORT_REPORTS for suffix in ("", "/csv", "/pdf")),
    f"{C}/sample-accountability",
    f"{C}/sample-accountability.csv",
]


@pytest.mark.req("REP-08")
def test_cohort_reports_cost_the_same_statements_with_ten_times_the_participants(
    app: Flask, ctx: ServiceContext, db: Database, clock: Clock
) -> None:
    two_site_cohort(ctx)
    grow_cohort(ctx, clock, to=SMALL)
    created = make_user(ctx, "mon-cohort", "monitor", trial=COHORT)
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    token = users.create_token(ctx, CLI_ACTOR, "mon-cohort", "scale test").token

    def counts() -> dict[str, int]:
        client = _signed_in(app, "mon-cohort", GOOD_PASSWORD)
        out: dict[str, int] = {}
        for path in COHORT_PATHS:
            with statements(db) as seen:
                response = client.get(path)
                assert response.status_code == 200 and response.get_data(), path
            out[path] = seen.count
        api = app.test_client()
        api.environ_base["wsgi.url_scheme"] = "https"
        for path in (f"/api/v1{C}/subjects", f"/api/v1{C}/subjects/L1-001"):
            with statements(db) as seen:
                response = api.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
            out[f"api {path}"] = seen.count
        return out

    small = counts()
    grow_cohort(ctx, clock, start=SMALL, to=LARGE)
    assert len(participants.participants_page(ctx, COHORT, ALL_SITES, limit=1000).participants) == LARGE
    large = counts()
    grew = {path: (small[path], large[path]) for path in small if large[path] > small[path]}
    assert not grew, f"statements per request grew with the participants (at {SMALL}, at {LARGE}): {grew}"


# --- the unblinded statistician's reads, after the final unblinding (issue 21) ----------------------


@pytest.mark.req("REP-08", "BLD-08")
def test_the_unblinded_reads_do_not_read_arms_subject_by_subject(ctx: ServiceContext, db: Database) -> None:
    """A trial cannot be unblinded twice at two sizes: in a world of 200 subjects, the restricted
    reports, the final listing and the unblinded export each send fewer statements than half the
    subjects (reading each subject's arm on its own cost three per subject; measured, the same
    counts at 20 subjects as at 200)."""
    crowd = crowded_trial(ctx, subjects=LARGE)
    stat = crowd.ready.statistician
    state.lock(ctx, stat, "IFNG-PAIS", reason="last patient out", signature=SIGNED)
    state.unblind_trial(ctx, stat, "IFNG-PAIS", reason="final analysis", signature=SIGNED)
    calls: dict[str, Callable[[], object]] = {
        f"restricted {name}": (
            lambda name=name: catalogue.build(
                ctx, stat, "IFNG-PAIS", name, ReportFilter(), ALL_SITES, version="restricted"
            )
        )
        for name, report in REPORTS.items()
        if report.restricted
    }
    calls["final listing"] = lambda: releases.unblinded_listing(ctx, stat, "IFNG-PAIS", signature=SIGNED)
    calls["unblinded export"] = lambda: exports.export_trial(
        ctx, stat, "IFNG-PAIS", "csv", name="x.csv", unblinded=True, signature=SIGNED
    )
    sent = {}
    for label, call in calls.items():
        with statements(db) as seen:
            call()
        sent[label] = seen.count
    assert "restricted participant-flow" in sent
    assert all(n < LARGE // 2 for n in sent.values()), sent
