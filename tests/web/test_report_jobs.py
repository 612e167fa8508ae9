"""Long report PDFs built by a background job (issue 21): the download of a report whose row count
says it would take more than a few seconds starts a job; its page shows the progress, then offers
the file to its asker only, audited as a direct download is; a small report is still downloaded
directly; a restricted report's job stays as restricted as the report."""

from __future__ import annotations

import json
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import AuditEvent, User
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.reports import catalogue, filters
from allocator.services.reports import jobs as report_jobs
from tests.reporting import Truth, build, pdf_text
from tests.support import Clock, enroll_totp
from tests.web.test_report_pages import BASE, login, new_user, text_of


@pytest.fixture
def truth(ctx: ServiceContext, clock: Clock) -> Truth:
    return build(ctx, clock)


@pytest.fixture
def monitor(app: Flask, ctx: ServiceContext, clock: Clock, truth: Truth) -> FlaskClient:
    return login(app, ctx, clock, "mon-all", new_user(ctx, "mon-all", "monitor"), mfa=False)


@pytest.fixture
def statistician(app: Flask, ctx: ServiceContext, clock: Clock, truth: Truth) -> FlaskClient:
    user_id = truth.ready.statistician.user_id
    assert user_id is not None
    return login(app, ctx, clock, "stat", user_id, mfa=True, secret=enroll_totp(ctx, user_id, clock))


JOB = re.compile(r"/trials/IFNG-PAIS/reports/(restricted/)?jobs/(\d+)$")


def exported(ctx: ServiceContext) -> list[dict[str, object]]:
    with ctx.db.reading() as session:
        return [
            json.loads(new or "{}")
            for new in session.execute(
                select(AuditEvent.new_values)
                .where(AuditEvent.action == "report.exported")
                .order_by(AuditEvent.id)
            ).scalars()
        ]


@pytest.fixture
def jobs_inline(app: Flask) -> Flask:
    """Every PDF of a row or more is built by a job, run before the redirect."""
    app.config.update(REPORT_JOB_ROWS=0, REPORT_JOBS_INLINE=True)
    return app


@pytest.mark.req("REP-05", "AUD-05")
def test_a_long_pdf_is_built_by_a_job_whose_file_is_audited_like_a_direct_download(
    jobs_inline: Flask, monitor: FlaskClient, ctx: ServiceContext
) -> None:
    asked = monitor.get(f"{BASE}/review/off-hours/pdf?hours_from=9&hours_to=17")
    assert asked.status_code == 303
    job_path = JOB.search(asked.headers["Location"])
    assert job_path is not None and job_path.group(1) is None
    page = monitor.get(asked.headers["Location"])
    shown = text_of(page.get_data(as_text=True))
    assert (
        page.status_code == 200
        and "The file is ready" in shown
        and 'http-equiv="refresh"' not in page.get_data(as_text=True)
    )
    before = exported(ctx)
    assert not [e for e in before if e.get("report") == "off-hours"]  # no file given yet
    done = monitor.get(f"{asked.headers['Location']}/file")
    assert done.status_code == 200 and done.mimetype == "application/pdf"
    assert re.search(
        r'filename="audit-review-off-hours-IFNG-PAIS-\d{4}-\d{2}-\d{2}\.pdf"',
        done.headers["Content-Disposition"],
    )
    assert pdf_text(done.get_data()).strip()
    (entry,) = [e for e in exported(ctx) if e.get("report") == "off-hours"]
    # The same entry as a direct download of the same report and filters.
    jobs_inline.config.update(REPORT_JOB_ROWS=10**9)
    direct = monitor.get(f"{BASE}/review/off-hours/pdf?hours_from=9&hours_to=17")
    assert direct.status_code == 200 and direct.mimetype == "application/pdf"
    direct_entry = [e for e in exported(ctx) if e.get("report") == "off-hours"][-1]
    assert {k: v for k, v in entry.items() if k != "sha256"} == {
        k: v for k, v in direct_entry.items() if k != "sha256"
    }
    assert entry["filters"] == {"hours_from": "9", "hours_to": "17"} and entry["format"] == "pdf"
    assert entry["sha256"] != "" and entry["rows"] == direct_entry["rows"]


@pytest.mark.req("REP-05")
def test_a_running_job_shows_its_progress_and_a_stopped_one_can_be_asked_again(
    monitor: FlaskClient, ctx: ServiceContext, clock: Clock
) -> None:
    with ctx.db.reading() as session:
        user_id = session.execute(select(User.id).where(User.username == "mon-all")).scalar_one()
    asker = Actor(user_id=user_id, username="mon-all", name="mon-all", role="monitor")
    flt = filters.ReportFilter.parse({})
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    view = catalogue.build(ctx, asker, "IFNG-PAIS", "allocation-history", flt, everywhere)
    job_id, run = report_jobs.start(
        ctx, asker, "IFNG-PAIS", "allocation-history", flt, view=view, language="en"
    )
    page = monitor.get(f"{BASE}/jobs/{job_id}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and 'http-equiv="refresh"' in body
    assert f"0 of {view.rows} rows laid out" in text_of(body)
    assert monitor.get(f"{BASE}/jobs/{job_id}/file").status_code == 404  # not ready
    clock.advance(minutes=3)  # its worker gave no sign of life: shown as failed, to be asked again
    stopped = text_of(monitor.get(f"{BASE}/jobs/{job_id}").get_data(as_text=True))
    assert "The server stopped before the file was finished" in stopped and "Ask again" in stopped
    run()
    assert "The file is ready" in text_of(monitor.get(f"{BASE}/jobs/{job_id}").get_data(as_text=True))


@pytest.mark.req("REP-05", "BLD-09")
def test_a_job_is_given_to_its_asker_only_and_a_restricted_one_only_by_the_restricted_route(
    jobs_inline: Flask,
    monitor: FlaskClient,
    statistician: FlaskClient,
    ctx: ServiceContext,
    clock: Clock,
) -> None:
    asked = monitor.get(f"{BASE}/allocation-history/pdf")
    assert asked.status_code == 303
    location = asked.headers["Location"]
    other = login(jobs_inline, ctx, clock, "mon-two", new_user(ctx, "mon-two", "monitor"), mfa=False)
    assert other.get(location).status_code == 404
    assert other.get(f"{location}/file").status_code == 404
    assert statistician.get(location).status_code == 404  # another reader with the same permission
    restricted = statistician.get(f"{BASE}/restricted/unblinding/pdf")
    assert restricted.status_code == 303 and "/restricted/jobs/" in restricted.headers["Location"]
    job_id = JOB.search(restricted.headers["Location"]).group(2)  # type: ignore[union-attr]
    assert statistician.get(f"{BASE}/jobs/{job_id}").status_code == 404  # not by the blinded route
    assert statistician.get(f"{BASE}/jobs/{job_id}/file").status_code == 404
    assert monitor.get(f"{BASE}/restricted/jobs/{job_id}").status_code == 403
    assert statistician.get(f"{BASE}/restricted/jobs/{job_id}/file").status_code == 200


@pytest.mark.req("REP-05")
def test_a_small_report_is_still_downloaded_directly(monitor: FlaskClient) -> None:
    direct = monitor.get(f"{BASE}/allocation-history/pdf")
    assert direct.status_code == 200 and direct.mimetype == "application/pdf"
