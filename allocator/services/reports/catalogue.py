"""The catalogue of reports and `build`: a report as a
`ReportView` the page, the CSV and the PDF all show."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from allocator import collector
from allocator.audit import Actor
from allocator.models import Site
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound
from allocator.services.lookups import get_trial, trial_definition
from allocator.services.reports.accountability import Accountability, accountability
from allocator.services.reports.allocation_history import AllocationHistory, allocation_history
from allocator.services.reports.audit_review import (
    AuditReviewReport,
    audit_review,
    review_kinds_for,
)
from allocator.services.reports.balance import Balance, balance
from allocator.services.reports.cohort_flow import StrobeFlow, strobe_flow
from allocator.services.reports.cohort_recruitment import Recruitment, recruitment
from allocator.services.reports.cohort_samples import SampleCompleteness, sample_completeness
from allocator.services.reports.cohort_screening import CohortScreening, cohort_screening
from allocator.services.reports.deviations import Deviations, deviations
from allocator.services.reports.dispensing import DispensingCompleteness, dispensing_completeness
from allocator.services.reports.drills import DrillLog, drill_log
from allocator.services.reports.enrolment import Enrolment, enrolment
from allocator.services.reports.filters import ReportFilter, Window
from allocator.services.reports.participant_flow import (
    ParticipantFlow,
    RestrictedFlow,
    participant_flow,
    participant_flow_by_arm,
)
from allocator.services.reports.sequence import SequenceReport, sequence_report
from allocator.services.reports.unblindings import UnblindingReport, unblinding_report
from allocator.settings import Environment
from allocator.trialdef import TrialDefinition
from allocator.version import __version__
from allocator.wording import ENGLISH, Words

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
            N_("Allocation history"),
            N_(
                "Who randomized whom and when, strata as entered and corrected, kits per day with replacements, "
                "randomizations in error and blind-break events."
            ),
            "REP-05, BLD-07",
            False,
        ),
        ReportSpec(
            "enrolment",
            N_("Recruitment and enrolment"),
            N_("First and last randomization per site, accrual per week, cumulative enrolment chart."),
            "REP-05, REP-08",
            False,
        ),
        ReportSpec(
            "balance",
            N_("Blinded balance"),
            N_("Subjects per stratum and site (totals only)."),
            "REP-08",
            False,
        ),
        ReportSpec(
            "dispensing",
            N_("Dispensing completeness"),
            N_("Kits dispensed and administered per subject and day; complete treatments per site."),
            "REP-08",
            False,
        ),
        ReportSpec(
            "accountability",
            N_("Kit accountability"),
            N_("Kits per site and batch by status, labels printed, discrepancies."),
            "REP-09",
            False,
            period=False,
        ),
        ReportSpec(
            "unblinding",
            N_("Unblinding report"),
            N_(
                "Every emergency unblinding (online and offline) and accidental report, with reason, role and "
                "signature; how the blind is kept."
            ),
            "REP-03, UNB-05, UNB-09",
            True,
        ),
        ReportSpec(
            "drill-log",
            N_("Unblinding drill log"),
            N_(
                "Every emergency-unblinding drill (online and with a drill code-break sheet) on the drill "
                "subjects, which are in no other report, count or export."
            ),
            "UNB-11",
            False,
        ),
        ReportSpec(
            "deviations",
            N_("Protocol-deviation listings"),
            N_(
                "Mis-stratifications, randomizations in error, refused scans and dispensing, blocked kits, "
                "replacements, late entries."
            ),
            "REP-07",
            False,
        ),
        ReportSpec(
            "participant-flow",
            N_("Participant flow (CONSORT)"),
            N_(
                "Screened, ineligible with reasons, randomized, in error, doses received; per site and stratum."
            ),
            "REP-04",
            True,
        ),
        ReportSpec(
            "sequence",
            N_("Sequence generation and allocation concealment"),
            N_(
                "Who generated the list, method, software, seed custodian, strata, concealment, who enrolled and "
                "who assigned, everyone who ever held an unblinded role."
            ),
            "REP-01, REP-02, BLD-13",
            True,
            period=False,
        ),
    )
}
# An observational study's reports (issue 20): its own catalogue, nothing of a randomization, arm,
# balance, unblinding, dispensing or kit in it; the randomized trial's catalogue is unchanged.
COHORT_REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "recruitment",
            N_("Recruitment"),
            N_(
                "Registrations per site and per month, cumulative against the target sample size, first and "
                "last registration per site."
            ),
            "REP-05, REP-08",
            False,
        ),
        ReportSpec(
            "screening-log",
            N_("Screening log with failure reasons"),
            N_(
                "Patients screened, eligible, registered and not eligible, with the patients per failed criterion."
            ),
            "REP-04",
            False,
        ),
        ReportSpec(
            "sample-completeness",
            N_("Sample completeness"),
            N_(
                "Samples planned, collected (on the planned date, within or outside the window), missed with "
                "reasons, received at the lab, unusable, pending; pre-analytical delays."
            ),
            "REP-08",
            False,
        ),
        ReportSpec(
            "strobe-flow",
            N_("Participant flow (STROBE)"),
            N_(
                "Screened, not eligible with reasons, eligible, registered, samples planned, collected or "
                "missed, received at the lab or unusable, analysable."
            ),
            "REP-04",
            False,
        ),
    )
}


def reports_for(definition: TrialDefinition) -> dict[str, ReportSpec]:
    """The catalogue of a study: the cohort's reports for an observational study (issue 20)."""
    return COHORT_REPORTS if definition.observational else REPORTS


VERSIONS = ("blinded", "restricted", "safety", "review")
_NOTICES = {
    "restricted": N_(
        "RESTRICTED - unblinded version for the unblinded statistician: do not pass to blinded trial staff."
    ),
    "safety": N_("RESTRICTED - pharmacovigilance version: includes pharmacovigilance unblindings."),
}
_VERSION_NAMES = {
    "blinded": N_("blinded"),
    "restricted": N_("restricted (unblinded statistician)"),
    "safety": N_("restricted (pharmacovigilance)"),
    "review": N_("audit-trail review (blinded)"),
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
    | Recruitment
    | CohortScreening
    | SampleCompleteness
    | StrobeFlow
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
    words: Words = field(default=ENGLISH, compare=False)
    window: Window | None = None  # a page's window of its long tables (issue 21); None: every row

    @property
    def chart(self) -> monitoring_reports.StepChart | None:
        return self.data.chart_in(self.words) if isinstance(self.data, Enrolment | Recruitment) else None

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
        _ = self.words
        # An observational study's report has no versions: nothing in it is blinded (issue 20).
        version = () if self.name in COHORT_REPORTS else ((_("Version"), _(_VERSION_NAMES[self.version])),)
        return (
            (_("Trial"), self.trial),
            (_("Report"), self.title),
            *version,
            (_("Generated at"), _.utc(self.generated_at)),
            (_("Generated by"), self.generated_by),
            (_("Filters"), self.filter.describe(_, with_period=self.uses_period)),
            (_("Software"), f"allocator {__version__}"),
        )

    def document(self) -> monitoring_reports.ReportDocument:
        _ = self.words
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
            footer=_(
                "%(title)s | %(trial)s | generated %(at)s by %(by)s | allocator %(version)s",
                title=self.title,
                trial=self.trial,
                at=_.utc(self.generated_at),
                by=self.generated_by,
                version=__version__,
            ),
            labels=monitoring_reports.Labels(
                summary=_("Summary"),
                columns=_("Columns: %(columns)s."),
                no_entries=_("No entries."),
                page=_("Page %(page)s of %(total)s"),
            ),
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


def _unknown(name: str, version: str, definition: TrialDefinition) -> NotFound:
    catalogue = reports_for(definition)
    known = (
        list(review_kinds_for(definition))
        if version == "review"
        else [r.name for r in catalogue.values() if version == "blinded" or r.restricted]
    )
    if version == "safety":
        known = [] if definition.observational else ["unblinding"]
    return NotFound(
        f"no {version} report {name!r}",
        errors=[FieldProblem("report", f"one of {', '.join(known)}" if known else "none for this study")],
    )


@collector.pausing  # thousands of rows, no cycles (issue 21)
def build(
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    *,
    version: str = "blinded",
    words: Words = ENGLISH,
    window: Window | None = None,
) -> ReportView:
    """One report for the reader, within `scope`. `version` is "blinded" (every report), "restricted"
    (unblinding, participant-flow, sequence: for REPORT_VIEW_UNBLINDED), "safety" (the unblinding
    report with pharmacovigilance unblindings, for pharmacovigilance) or "review" (AUD-09 review
    reports). Raises NotFound for an unknown report, ValidationFailed for a bad filter, and
    trial_state.NotUnblinded (409) for the per-arm participant flow before the final unblinding.
    Its titles, headings, labels and notes are in the language of `words` (the data are not).
    With a `window` (a page), each long table holds only the window's rows (issue 21): the
    allocation history and dispensing completeness read only those subjects, the other reports are
    cut once built; the summary counts every row."""
    if version not in VERSIONS:
        raise NotFound(
            f"no report version {version!r}", errors=[FieldProblem("version", ", ".join(VERSIONS))]
        )
    definition = trial_definition(ctx, trial_code)
    _ = words.with_trial(definition)
    data: Report
    if version == "review":
        if name not in review_kinds_for(definition):
            raise _unknown(name, version, definition)
        data = audit_review(ctx, trial_code, name, scope, flt, window)
        title, uses_period = _("Audit-trail review: %(report)s", report=_(data.kind.title)), True
    else:
        spec = reports_for(definition).get(name)
        allowed = spec is not None and (
            version == "blinded" or (version == "restricted" and spec.restricted) or name == "unblinding"
        )
        if spec is None or not allowed:
            raise _unknown(name, version, definition)
        data = _compute(ctx, reader, trial_code, name, flt, scope, version, window)
        title = _(spec.title) if version == "blinded" else _("%(report)s (restricted)", report=_(spec.title))
        uses_period = spec.period
    return ReportView(
        name=name,
        title=title,
        version=version,
        trial=trial_code,
        generated_at=ctx.now(),
        generated_by=f"{reader.name} ({_.role(reader.role)})",
        filter=flt,
        uses_period=uses_period,
        site_choices=_site_choices(ctx, trial_code, scope),
        data=data,
        facts=data.facts(_),
        tables=tuple(window.cut(t) for t in data.tables(_)) if window is not None else data.tables(_),
        notice=_(_NOTICES[version]) if version in _NOTICES else None,
        test_mode=ctx.settings.env is not Environment.PRODUCTION,
        words=_,
        window=window,
    )


def _compute(
    ctx: ServiceContext,
    reader: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    version: str,
    window: Window | None = None,
) -> Report:
    unblinded = version != "blinded"
    if name == "recruitment":
        return recruitment(ctx, trial_code, scope, flt)
    if name == "screening-log":
        return cohort_screening(ctx, trial_code, scope, flt)
    if name == "sample-completeness":
        return sample_completeness(ctx, trial_code, scope, flt)
    if name == "strobe-flow":
        return strobe_flow(ctx, trial_code, scope, flt)
    if name == "allocation-history":
        return allocation_history(ctx, trial_code, scope, flt, window)
    if name == "enrolment":
        return enrolment(ctx, trial_code, scope, flt)
    if name == "balance":
        return balance(ctx, trial_code, scope, flt)
    if name == "dispensing":
        return dispensing_completeness(ctx, trial_code, scope, flt, window)
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
