"""Monitoring and publication reports: one page per report with its filters, and its CSV and PDF
(REP-01..09, AUD-05, AUD-09). Blinded by default; the restricted versions are separate routes with
their own permission, and nothing about an arm ever appears in a URL or a file name (BLD-14)."""

from __future__ import annotations

import threading
from datetime import date
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext
from markupsafe import Markup
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import signatures
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.services.lookups import trial_definition
from allocator.services.reports import audit_review, catalogue, export, filters
from allocator.services.reports import jobs as report_jobs
from allocator.web import forms, hygiene, i18n
from allocator.web.security import actor, ctx, current_trial, definition_of, scope

bp = Blueprint("reports", __name__)
FORMATS = "any(csv, pdf)"


def _page(name: str, version: str, permission: Permission) -> str:
    args = hygiene.single_args()
    view = catalogue.build(
        ctx(),
        actor(permission),
        current_trial().code,
        name,
        filters.ReportFilter.parse(args),
        scope(permission),
        version=version,
        words=i18n.words(),
        window=filters.Window.parse(args),  # a page shows a window of each long table (issue 21)
    )
    return render_template(
        "reports/report.html",
        trial=current_trial().code,
        view=view,
        svg=Markup(view.svg) if view.svg else None,  # noqa: S704 - built server-side, every text escaped
        endpoints=_ENDPOINTS[version],
    )


def _download(name: str, fmt: str, version: str, permission: Permission) -> Response | WerkzeugResponse:
    flt = filters.ReportFilter.parse(hygiene.single_args())
    words = i18n.words()
    view = None
    if fmt == "pdf" and version in _JOB_ENDPOINTS:
        # Issue 21: a PDF whose row count says it would take more than a few seconds is built by a
        # job in a background thread; the asker is sent to its page (progress, then the file).
        view = catalogue.build(
            ctx(),
            actor(permission),
            current_trial().code,
            name,
            flt,
            scope(permission),
            version=version,
            words=words,
        )
        if view.rows > current_app.config.get("REPORT_JOB_ROWS", report_jobs.JOB_ROWS):
            job_id, run = report_jobs.start(
                ctx(), actor(permission), current_trial().code, name, flt, view=view, language=words.language
            )
            if current_app.config.get("REPORT_JOBS_INLINE"):
                run()  # the tests: the job runs before the redirect
            else:
                threading.Thread(target=run, name=f"report-job-{job_id}", daemon=True).start()
            return redirect(
                url_for(_JOB_ENDPOINTS[version][0], trial=current_trial().code, job=job_id), code=303
            )
    exported = export.export(
        ctx(),
        actor(permission),
        current_trial().code,
        name,
        flt,
        scope(permission),
        fmt,
        version=version,
        words=words,
        view=view,
    )
    response = Response(
        stream_with_context(exported.chunks()),  # a CSV is sent from its spooled file, in pieces (issue 21)
        mimetype=exported.mimetype,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )
    response.call_on_close(exported.close)
    return response


# The job page and file endpoints of the versions whose PDFs may be built by a job, and the versions
# each gives (the restricted versions' jobs only to the restricted routes' permission).
_JOB_ENDPOINTS = {
    "blinded": ("reports.job", "reports.job_file"),
    "review": ("reports.job", "reports.job_file"),
    "restricted": ("reports.restricted_job", "reports.restricted_job_file"),
}
_JOB_VERSIONS = {"reports.job": ("blinded", "review"), "reports.restricted_job": ("restricted",)}


def _job_page(job_id: int, permission: Permission, endpoints: tuple[str, str]) -> str:
    versions = _JOB_VERSIONS[endpoints[0]]
    job = report_jobs.job_view(ctx(), actor(permission), current_trial().code, job_id, versions)
    again = {"blinded": "reports.download", "review": "reports.review_download"}.get(
        job.version, "reports.restricted_download"
    )
    return render_template(
        "reports/job.html",
        trial=current_trial().code,
        job=job,
        # The study's own catalogue: a cohort's reports are not in the randomized trial's (issue 20).
        title=(
            audit_review.REVIEW_KINDS
            if job.version == "review"
            else catalogue.reports_for(definition_of(current_trial().code))
        )[job.report].title,
        file_endpoint=endpoints[1],
        again=url_for(again, trial=current_trial().code, name=job.report, fmt="pdf")
        + (f"?{urlencode(job.query)}" if job.query else ""),
    )


def _job_file(job_id: int, permission: Permission, versions: tuple[str, ...]) -> Response:
    filename, content = report_jobs.fetch(ctx(), actor(permission), current_trial().code, job_id, versions)
    return Response(
        content,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# Page and download endpoints of each version, for the template's links.
_ENDPOINTS = {
    "blinded": ("reports.page", "reports.download"),
    "restricted": ("reports.restricted_page", "reports.restricted_download"),
    "safety": ("reports.safety_page", "reports.safety_download"),
    "review": ("reports.review_page", "reports.review_download"),
}


@bp.route("/trials/<trial>/reports")
@requires(Permission.REPORT_VIEW)
def index(trial: str) -> str:
    # An observational study lists its own reports (issue 20): no randomization, arm or kit report.
    definition = trial_definition(ctx(), trial)
    return render_template(
        "reports/index.html",
        trial=trial,
        cohort=definition.observational,
        reports=catalogue.reports_for(definition),
        review_kinds={
            name: audit_review.REVIEW_KINDS[name] for name in audit_review.review_kinds_for(definition)
        },
    )


@bp.route("/trials/<trial>/reports/<name>")
@requires(Permission.REPORT_VIEW)
def page(trial: str, name: str) -> str:
    return _page(name, "blinded", Permission.REPORT_VIEW)


@bp.route(f"/trials/<trial>/reports/<name>/<{FORMATS}:fmt>")
@requires(Permission.REPORT_VIEW)
def download(trial: str, name: str, fmt: str) -> Response | WerkzeugResponse:
    return _download(name, fmt, "blinded", Permission.REPORT_VIEW)


@bp.route("/trials/<trial>/reports/restricted/<name>")
@requires(Permission.REPORT_VIEW_UNBLINDED)
def restricted_page(trial: str, name: str) -> str:
    """Restricted versions (BLD-09): PV unblindings, block sizes, the per-arm participant flow."""
    return _page(name, "restricted", Permission.REPORT_VIEW_UNBLINDED)


@bp.route(f"/trials/<trial>/reports/restricted/<name>/<{FORMATS}:fmt>")
@requires(Permission.REPORT_VIEW_UNBLINDED)
def restricted_download(trial: str, name: str, fmt: str) -> Response | WerkzeugResponse:
    return _download(name, fmt, "restricted", Permission.REPORT_VIEW_UNBLINDED)


@bp.route("/trials/<trial>/reports/safety/unblinding")
@requires(Permission.UNBLINDING_PV)
def safety_page(trial: str) -> str:
    """The unblinding report with pharmacovigilance unblindings, for pharmacovigilance (UNB-08)."""
    return _page("unblinding", "safety", Permission.UNBLINDING_PV)


@bp.route(f"/trials/<trial>/reports/safety/unblinding/<{FORMATS}:fmt>")
@requires(Permission.UNBLINDING_PV)
def safety_download(trial: str, fmt: str) -> Response | WerkzeugResponse:
    return _download("unblinding", fmt, "safety", Permission.UNBLINDING_PV)


@bp.route("/trials/<trial>/reports/review/<name>")
@requires(Permission.REPORT_VIEW)
def review_page(trial: str, name: str) -> str:
    """An audit-trail review report (AUD-09), its signed reviews and the sign-off form."""
    return _page(name, "review", Permission.REPORT_VIEW)


@bp.route(f"/trials/<trial>/reports/review/<name>/<{FORMATS}:fmt>")
@requires(Permission.REPORT_VIEW)
def review_download(trial: str, name: str, fmt: str) -> Response | WerkzeugResponse:
    return _download(name, fmt, "review", Permission.REPORT_VIEW)


def _form_date(field: str) -> date | None:
    raw = (request.form.get(field) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationFailed(
            "invalid date", errors=[FieldProblem(field, "must be a date (YYYY-MM-DD)")]
        ) from None


@bp.route("/trials/<trial>/reports/review/<name>/sign", methods=["POST"])
@requires(Permission.AUDIT_REVIEW)
def sign(trial: str, name: str) -> WerkzeugResponse:
    """Sign off the review of one review report for one period (AUD-09), with an e-signature."""
    hours = filters.ReportFilter.parse({k: request.form.get(k, "") for k in ("hours_from", "hours_to")})
    try:
        done = audit_review.sign_review(
            ctx(),
            actor(Permission.AUDIT_REVIEW),
            current_trial().code,
            name,
            _form_date("since"),
            _form_date("until"),
            request.form.get("comment", ""),
            signatures.SignatureRequest(
                password=request.form.get("password", ""), totp=request.form.get("otp") or None
            ),
            scope=scope(Permission.AUDIT_REVIEW),
            hours=(hours.hours_from, hours.hours_to),
        )
    except DomainError as exc:
        forms.flash_error(exc)
        args = {k: request.form.get(k, "") for k in ("since", "until", "hours_from", "hours_to")}
    else:
        flash(
            gettext(
                "Review of %(start)s to %(end)s signed: %(entries)s entries, SHA-256 %(sha)s…",
                start=i18n.day(done.period_start),
                end=i18n.day(done.period_end),
                entries=i18n.number(done.entries),
                sha=done.content_sha256[:16],
            ),
            "ok",
        )
        args = {"since": done.period_start.isoformat(), "until": done.period_end.isoformat()}
    query = urlencode({k: v for k, v in args.items() if v})
    target = url_for("reports.review_page", trial=trial, name=name)
    return redirect(f"{target}?{query}" if query else target, code=303)


@bp.route("/trials/<trial>/reports/jobs/<int:job>")
@requires(Permission.REPORT_VIEW)
def job(trial: str, job: int) -> str:
    """A report job the reader asked (issue 21): its progress, then its file."""
    return _job_page(job, Permission.REPORT_VIEW, _JOB_ENDPOINTS["blinded"])


@bp.route("/trials/<trial>/reports/jobs/<int:job>/file")
@requires(Permission.REPORT_VIEW)
def job_file(trial: str, job: int) -> Response:
    return _job_file(job, Permission.REPORT_VIEW, _JOB_VERSIONS["reports.job"])


@bp.route("/trials/<trial>/reports/restricted/jobs/<int:job>")
@requires(Permission.REPORT_VIEW_UNBLINDED)
def restricted_job(trial: str, job: int) -> str:
    return _job_page(job, Permission.REPORT_VIEW_UNBLINDED, _JOB_ENDPOINTS["restricted"])


@bp.route("/trials/<trial>/reports/restricted/jobs/<int:job>/file")
@requires(Permission.REPORT_VIEW_UNBLINDED)
def restricted_job_file(trial: str, job: int) -> Response:
    return _job_file(job, Permission.REPORT_VIEW_UNBLINDED, _JOB_VERSIONS["reports.restricted_job"])
