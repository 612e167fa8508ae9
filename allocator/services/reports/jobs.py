"""Report jobs (issue 21): a report PDF whose row count says it would take more than a few seconds
is built in a background thread of the worker instead of during the request. The asker's page
shows its progress (rows laid out of the total) and offers the file when it is ready; the file is
given to its asker only, and each download writes the same `report.exported` audit entry as a
direct download. A job whose worker stopped (no sign of life for `STALE`) is shown as failed and can
be asked again. No new infrastructure: a row per job, its file kept in the row."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from allocator.audit import Actor
from allocator.models import ReportJob
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import get_trial
from allocator.services.reports.catalogue import ReportView
from allocator.services.reports.export import record_export
from allocator.services.reports.filters import ReportFilter

log = logging.getLogger(__name__)

# A PDF of more rows than this is built by a job (about two seconds of CPU on the development
# machine, more under load; the off-hours review of 20,000 rows takes about seven).
JOB_ROWS = 5_000
STALE = timedelta(minutes=2)  # a running job silent for longer has lost its worker
_PROGRESS_EVERY = 0.5  # seconds between two progress writes


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    report: str
    version: str
    status: str  # running | done | failed
    rows_done: int
    rows_total: int
    requested_at: datetime
    finished_at: datetime | None
    filename: str | None
    stopped: bool  # failed because its worker stopped (no sign of life)
    query: dict[str, str]  # the download's filters, to ask again

    @property
    def percent(self) -> int:
        return 100 if self.status == "done" else int(100 * self.rows_done / max(self.rows_total, 1))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def start(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    *,
    view: ReportView,
    language: str,
) -> tuple[int, Callable[[], None]]:
    """Record a job for the PDF of `view` (the report already built for this reader and filter) and
    return its id and the function that builds the file (run it in a background thread)."""
    now = ctx.now()
    if actor.user_id is None:
        raise ValidationFailed(
            "no user", errors=[FieldProblem("user", "a report job is asked by a signed-in user")]
        )
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        job = ReportJob(
            trial_id=trial.id,
            report=name,
            version=view.version,
            fmt="pdf",
            language=language,
            filters=json.dumps(flt.query_args(), sort_keys=True),
            site_code=flt.site,
            requested_by_id=actor.user_id,
            requested_by_name=actor.name,
            requested_at=now,
            status="running",
            rows_total=view.rows,
            rows_done=0,
            heartbeat_at=now,
        )
        session.add(job)
        session.flush()
        job_id = job.id
    document = view.document()
    filename = f"{view.file_stem}.pdf"

    def run() -> None:
        last = [time.monotonic()]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] < _PROGRESS_EVERY:
                return
            last[0] = time.monotonic()
            _set(ctx, job_id, rows_done=min(done, view.rows), heartbeat_at=ctx.now())

        try:
            pdf = monitoring_reports.render_report_pdf(document, progress)
        except Exception as exc:
            log.exception("report job %s failed", job_id)
            _set(ctx, job_id, status="failed", error=type(exc).__name__, finished_at=ctx.now())
            return
        _set(
            ctx,
            job_id,
            status="done",
            rows_done=view.rows,
            content=pdf,
            content_sha256=hashlib.sha256(pdf).hexdigest(),
            filename=filename,
            finished_at=ctx.now(),
            heartbeat_at=ctx.now(),
        )

    return job_id, run


def _set(ctx: ServiceContext, job_id: int, **values: object) -> None:
    with ctx.db.unit_of_work() as session:
        session.execute(update(ReportJob).where(ReportJob.id == job_id).values(**values))


def _own(session: Session, trial_code: str, job_id: int, actor: Actor, versions: Collection[str]) -> int:
    """The job's id, if `actor` asked it in this trial and it is of a version this route gives;
    otherwise NotFound (the same answer whether or not it exists)."""
    trial = get_trial(session, trial_code)
    job = session.execute(
        select(ReportJob.trial_id, ReportJob.requested_by_id, ReportJob.version).where(ReportJob.id == job_id)
    ).one_or_none()
    if (
        job is None
        or job.trial_id != trial.id
        or job.requested_by_id != actor.user_id
        or job.version not in versions
    ):
        raise NotFound("no such report job", errors=[FieldProblem("job", "not a report job of yours")])
    return job_id


def job_view(
    ctx: ServiceContext, actor: Actor, trial_code: str, job_id: int, versions: Collection[str]
) -> JobView:
    with ctx.db.reading() as session:
        row = session.execute(
            select(
                ReportJob.id,
                ReportJob.report,
                ReportJob.version,
                ReportJob.status,
                ReportJob.rows_done,
                ReportJob.rows_total,
                ReportJob.requested_at,
                ReportJob.finished_at,
                ReportJob.filename,
                ReportJob.heartbeat_at,
                ReportJob.filters,
            ).where(ReportJob.id == _own(session, trial_code, job_id, actor, versions))
        ).one()
    stopped = row.status == "running" and ctx.now() - _aware(row.heartbeat_at) > STALE
    return JobView(
        row.id,
        row.report,
        row.version,
        "failed" if stopped else row.status,
        row.rows_done,
        row.rows_total,
        _aware(row.requested_at),
        _aware(row.finished_at) if row.finished_at else None,
        row.filename,
        stopped,
        json.loads(row.filters),
    )


def fetch(
    ctx: ServiceContext, actor: Actor, trial_code: str, job_id: int, versions: Collection[str]
) -> tuple[str, bytes]:
    """The finished file of the asker's job, and its `report.exported` audit entry (the same as a
    direct download's)."""
    with ctx.db.reading() as session:
        job = session.get_one(ReportJob, _own(session, trial_code, job_id, actor, versions))
        if job.status != "done" or job.content is None or job.filename is None:
            raise NotFound("the report is not ready", errors=[FieldProblem("job", "not finished")])
        found = (
            job.report,
            job.version,
            job.fmt,
            job.language,
            json.loads(job.filters),
            job.site_code,
            job.rows_total,
            job.content_sha256 or "",
        )
        filename, content = job.filename, job.content
    record_export(ctx, actor, trial_code, *found)
    return filename, content
