"""The catalogue of reports and `build`: a report as a
`ReportView` the page, the CSV and the PDF all show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from allocator.audit import Actor
from allocator.models import Site
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound
from allocator.services.lookups import get_trial
from allocator.services.reports.accountability import Accountability, accountability
from allocator.services.reports.allocation_history import AllocationHistory, allocation_history
from allocator.services.reports.audit_review import REVIEW_KINDS, AuditReviewReport, audit_review
from allocator.services.reports.balance import Balance, balance
from allocator.services.reports.deviations import Deviations, deviations
from allocator.services.reports.dispensing import DispensingCompleteness, dispensing_completeness
from allocator.services.reports.drills import DrillLog, drill_log
from allocator.services.reports.enrolment import Enrolment, enrolment
from allocator.services.reports.filters import ReportFilter
from allocator.services.reports.participant_flow import (
    ParticipantFlow,
    RestrictedFlow,
    participant_flow,
    participant_flow_by_arm,
)
from allocator.services.reports.sequence import SequenceReport, sequence_report
from allocator.services.reports.unblindings import UnblindingReport, unblinding_report
from allocator.settings import Environment
from allocator.version import __version__
from kits.pdf import utc_text

# --- the report catalogue, views and exports ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportSpec:
    name: str
    title: str
    summary: str
    requirements: str
    restricted: bool  # has a restricted (unblinded) version
    period: bool = True  # the period filter applies


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "allocation-history",
            "Allocation history",
            "Who randomized whom and when, strata as entered and corrected, kits per day with replacements, "
            "randomizations in error and blind-break events.",
            "REP-05, BLD-07",
            False,
        ),
        ReportSpec(
            "enrolment",
            "Recruitment and enrolment",
            "First and last randomization per site, accrual per week, cumulative enrolment chart.",
            "REP-05, REP-08",
            False,
        ),
        ReportSpec(
            "balance", "Blinded balance", "Subjects per stratum and site (totals only).", "REP-08", False
        ),
        ReportSpec(
            "dispensing",
            "Dispensing completeness",
            "Kits dispensed and administered per subject and day; complete treatments per site.",
            "REP-08",
            False,
        ),
        ReportSpec(
            "accountability",
            "Kit accountability",
            "Kits per site and batch by status, labels printed, discrepancies.",
            "REP-09",
            False,
            period=False,
        ),
        ReportSpec(
            "unblinding",
            "Unblinding report",
            "Every emergency unblinding (online and offline) and accidental report, with reason, role and "
            "signature; how the blind is kept.",
            "REP-03, UNB-05, UNB-09",
            True,
        ),
        ReportSpec(
            "drill-log",
            "Unblinding drill log",
            "Every emergency-unblinding drill (online and with a drill code-break sheet) on the drill subjects, "
            "which are in no other report, count or export.",
            "UNB-11",
            False,
        ),
        ReportSpec(
            "deviations",
            "Protocol-deviation listings",
            "Mis-stratifications, randomizations in error, refused scans and dispensing, blocked kits, "
            "replacements, late entries.",
            "REP-07",
            False,
        ),
        ReportSpec(
            "participant-flow",
            "Participant flow (CONSORT)",
            "Screened, ineligible with reasons, randomized, in error, doses received; per site and stratum.",
            "REP-04",
            True,
        ),
        ReportSpec(
            "sequence",
            "Sequence generation and allocation concealment",
            "Who generated the list, method, software, seed custodian, strata, concealment, who enrolled and "
            "who assigned, everyone who ever held an unblinded role.",
            "REP-01, REP-02, BLD-13",
            True,
            period=False,
        ),
    )
}
VERSIONS = ("blinded", "restricted", "safety", "review")
_NOTICES = {
    "restricted": "RESTRICTED - unblinded version for the unblinded statistician (BLD-09): do not pass to "
    "blinded trial staff.",
    "safety": "RESTRICTED - pharmacovigilance version: includes pharmacovigilance unblindings (UNB-08).",
}


Report = (
    AllocationHistory
    | Enrolment
    | Balance
    | DispensingCompleteness
    | Accountability
    | UnblindingReport
    | DrillLog
    | Deviations
    | ParticipantFlow
    | RestrictedFlow
    | SequenceReport
    | AuditReviewReport
)


@dataclass(frozen=True, slots=True)
class ReportView:
    """A report as the page, the CSV and the PDF show it."""

    name: str
    title: str
    version: str
    trial: str
    generated_at: datetime
    generated_by: str
    filter: ReportFilter
    uses_period: bool
    site_choices: tuple[str, ...]
    data: Report
    facts: tuple[tuple[str, str], ...]
    tables: tuple[monitoring_reports.Table, ...]
    notice: str | None = None
    test_mode: bool = field(default=True)

    @property
    def chart(self) -> monitoring_reports.StepChart | None:
        return self.data.chart if isinstance(self.data, Enrolment) else None

    @property
    def svg(self) -> str | None:
        """The chart as inline SVG (no script, no style attribute: fine under the CSP)."""
        chart = self.chart
        return monitoring_reports.render_step_chart_svg(chart) if chart is not None else None

    @property
    def review(self) -> AuditReviewReport | None:
        return self.data if isinstance(self.data, AuditReviewReport) else None

    @property
    def rows(self) -> int:
        return sum(len(t.rows) for t in self.tables)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        version = {
            "blinded": "blinded",
            "restricted": "restricted (unblinded statistician)",
            "safety": "restricted (pharmacovigilance)",
            "review": "audit-trail review (blinded)",
        }[self.version]
        return (
            ("Trial", self.trial),
            ("Report", self.title),
            ("Version", version),
            ("Generated at", utc_text(self.generated_at)),
            ("Generated by", self.generated_by),
            ("Filters", self.filter.describe() if self.uses_period else self.filter.describe().split(";")[0]),
            ("Software", f"allocator {__version__}"),
        )

    def document(self) -> monitoring_reports.ReportDocument:
        return monitoring_reports.ReportDocument(
            title=self.title,
            document_id=f"{self.trial}/{self.name}",
            created_at=self.generated_at,
            software_version=__version__,
            test_mode=self.test_mode,
            metadata=self.metadata(),
            facts=self.facts,
            tables=self.tables,
            chart=self.chart,
            notice=self.notice,
            footer=f"{self.title} | {self.trial} | generated {utc_text(self.generated_at)} by "
            f"{self.generated_by} | allocator {__version__}",
        )

    @property
    def file_stem(self) -> str:
        """<report>[-version]-<trial>-<date>: never anything about an arm."""
        suffix = "" if self.version in ("blinded", "review") else f"-{self.version}"
        prefix = "audit-review-" if self.version == "review" else ""
        return f"{prefix}{self.name}{suffix}-{self.trial}-{self.generated_at.astimezone(UTC):%Y-%m-%d}"


def _site_choices(ctx: ServiceContext, trial_code: str, scope: Scope) -> tuple[str, ...]:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        return tuple(
            sorted(
                code
                for sid, code in session.execute(
                    select(Site.id, Site.code).where(Site.trial_id == trial.id)
                ).all()
                if scope.allows_site(sid)
            )
        )


def _unknown(name: str, version: str) -> NotFound:
    known = (
        REVIEW_KINDS
        if version == "review"
        else [r.name for r in REPORTS.values() if version == "blinded" or r.restricted]
    )
    if version == "safety":
        known = ["unblinding"]
    return NotFound(
        f"no {version} report {name!r}", errors=[FieldProblem("report", f"one of {', '.join(known)}")]
    )


def build(
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    *,
    version: str = "blinded",
) -> ReportView:
    """One report for the reader, within `scope`. `version` is "blinded" (every report), "restricted"
    (unblinding, participant-flow, sequence: for REPORT_VIEW_UNBLINDED), "safety" (the unblinding
    report with pharmacovigilance unblindings, for pharmacovigilance) or "review" (AUD-09 review
    reports). Raises NotFound for an unknown report, ValidationFailed for a bad filter, and
    trial_state.NotUnblinded (409) for the per-arm participant flow before the final unblinding."""
    if version not in VERSIONS:
        raise NotFound(
            f"no report version {version!r}", errors=[FieldProblem("version", ", ".join(VERSIONS))]
        )
    data: Report
    if version == "review":
        data = audit_review(ctx, trial_code, name, scope, flt)
        title, uses_period = f"Audit-trail review: {data.kind.title}", True
    else:
        spec = REPORTS.get(name)
        allowed = spec is not None and (
            version == "blinded" or (version == "restricted" and spec.restricted) or name == "unblinding"
        )
        if spec is None or not allowed:
            raise _unknown(name, version)
        data = _compute(ctx, reader, trial_code, name, flt, scope, version)
        title = spec.title + (" (restricted)" if version != "blinded" else "")
        uses_period = spec.period
    return ReportView(
        name=name,
        title=title,
        version=version,
        trial=trial_code,
        generated_at=ctx.now(),
        generated_by=f"{reader.name} ({reader.role})",
        filter=flt,
        uses_period=uses_period,
        site_choices=_site_choices(ctx, trial_code, scope),
        data=data,
        facts=data.facts(),
        tables=data.tables(),
        notice=_NOTICES.get(version),
        test_mode=ctx.settings.env is not Environment.PRODUCTION,
    )


def _compute(
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    version: str,
) -> Report:
    unblinded = version != "blinded"
    if name == "allocation-history":
        return allocation_history(ctx, trial_code, scope, flt)
    if name == "enrolment":
        return enrolment(ctx, trial_code, scope, flt)
    if name == "balance":
        return balance(ctx, trial_code, scope, flt)
    if name == "dispensing":
        return dispensing_completeness(ctx, trial_code, scope, flt)
    if name == "accountability":
        return accountability(ctx, trial_code, scope, flt)
    if name == "unblinding":
        return unblinding_report(ctx, trial_code, scope, flt, include_pharmacovigilance=unblinded)
    if name == "drill-log":
        return drill_log(ctx, trial_code, scope, flt)
    if name == "deviations":
        return deviations(ctx, trial_code, scope, flt)
    if name == "participant-flow":
        if unblinded:
            per_arm = participant_flow_by_arm(ctx, reader, trial_code, scope, flt)
            return RestrictedFlow(participant_flow(ctx, trial_code, scope, flt), per_arm)
        return participant_flow(ctx, trial_code, scope, flt)
    return sequence_report(ctx, trial_code, restricted=unblinded)
