"""Monitoring and publication reports for monitors, auditors and trial managers (REP-01..09,
BLD-07, BLD-09, BLD-13, AUD-05, AUD-09, DIB-04).

One function per report returns typed rows; `build` turns a report into a `ReportView` (metadata,
facts, tables of text cells, an optional chart) that the web page, the CSV and the PDF all show, so
the three never disagree; `export` renders it and writes a `report.exported` audit entry.

Blinding (BLD-07, UNB-08): the blinded reports hold no arm and nothing computed from one. Their
inputs are blinded already — subject views, kit statuses, unblinding *events*, the clear values of
audit entries (never a sealed value) — and pharmacovigilance unblindings are left out of them. The
restricted versions (REPORT_VIEW_UNBLINDED) add what only unblinded roles may see: PV unblindings,
block sizes and list lengths, and the participant flow per arm, which exists only once the trial is
UNBLINDED (409 before) and reads each subject's arm through `arm_access` (one audited read each).

Scope: every report is limited to the sites where the reader holds the permission (a monitor of
one site sees that site only), narrowed further by the `site` filter. Periods are UTC dates,
inclusive.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

import kits as kitlib
from allocator.audit import SYSTEM_CHAIN, Action, Actor
from allocator.models import (
    AccidentalUnblinding,
    Administration,
    AuditEvent,
    AuditReview,
    Batch,
    Dispensation,
    Kit,
    KitEvent,
    KitStatus,
    RoleAssignment,
    ScreeningEntry,
    Signature,
    Site,
    Subject,
    TrialStatus,
    Unblinding,
    User,
)
from allocator.permissions import Role, Scope
from allocator.services import (
    admin,
    arm_access,
    audit_trail,
    kits,
    lists,
    lookups,
    signatures,
    subjects,
    unblinding,
)
from allocator.services.administration import LATE_AFTER
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, instance_mode
from allocator.settings import Environment
from allocator.trialdef import TrialDefinition
from allocator.version import __version__
from kits import report as kitreport
from kits.pdf import utc_text

WORKDAY = (8, 20)  # default working hours, site local time (AUD-09 "outside working hours")
_SITE = re.compile(r"^[A-Za-z0-9-]{1,10}$")
_FIRST_YEAR, _LAST_YEAR = 2000, 2999


def _t(moment: datetime | None) -> str:
    return utc_text(moment) if moment is not None else ""


def _audit_time(at: str) -> datetime:
    """An audit entry's time (ISO 8601 UTC text, AUD-07) as an aware datetime."""
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _kit(number: str) -> str:
    return kitlib.format_kit_number(number)


# --- filters --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Site and period (UTC dates, inclusive) of a report, and the working hours of the off-hours
    review."""

    site: str | None = None
    since: date | None = None
    until: date | None = None
    hours_from: int = WORKDAY[0]
    hours_to: int = WORKDAY[1]

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> ReportFilter:
        """From query-string values; raises ValidationFailed naming every bad field."""
        problems: list[FieldProblem] = []
        dates: dict[str, date | None] = {}
        for key in ("since", "until"):
            raw = (args.get(key) or "").strip()
            dates[key] = None
            if not raw:
                continue
            try:
                value = date.fromisoformat(raw)
            except ValueError:
                problems.append(FieldProblem(key, "must be a date (YYYY-MM-DD)"))
                continue
            if not _FIRST_YEAR <= value.year <= _LAST_YEAR:
                problems.append(FieldProblem(key, f"must be between {_FIRST_YEAR} and {_LAST_YEAR}"))
                continue
            dates[key] = value
        since, until = dates["since"], dates["until"]
        if since is not None and until is not None and until < since:
            problems.append(FieldProblem("until", "is before the start of the period"))
        site = (args.get("site") or "").strip() or None
        if site is not None and not _SITE.fullmatch(site):
            problems.append(FieldProblem("site", "is not a site code"))
        hours: dict[str, int] = {}
        for key, default in (("hours_from", WORKDAY[0]), ("hours_to", WORKDAY[1])):
            raw = (args.get(key) or "").strip()
            if not raw:
                hours[key] = default
            elif raw.isdigit() and 0 <= int(raw) <= 24:
                hours[key] = int(raw)
            else:
                problems.append(FieldProblem(key, "must be an hour from 0 to 24"))
                hours[key] = default
        if hours["hours_from"] >= hours["hours_to"]:
            problems.append(FieldProblem("hours_to", "must be later than hours_from"))
        if problems:
            raise ValidationFailed("invalid report filter", errors=problems)
        return cls(site, since, until, hours["hours_from"], hours["hours_to"])

    @property
    def start(self) -> datetime | None:
        return datetime.combine(self.since, time(), UTC) if self.since else None

    @property
    def end(self) -> datetime | None:
        """The exclusive end of the period."""
        return datetime.combine(self.until + timedelta(days=1), time(), UTC) if self.until else None

    @property
    def whole(self) -> bool:
        return self.since is None and self.until is None

    def in_period(self, moment: datetime | None) -> bool:
        """Whether `moment` falls in the period; everything does when there is no period."""
        if self.whole:
            return True
        if moment is None:
            return False
        start, end = self.start, self.end
        return (start is None or moment >= start) and (end is None or moment < end)

    def query_args(self) -> dict[str, str]:
        out = {
            "site": self.site,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "hours_from": str(self.hours_from) if self.hours_from != WORKDAY[0] else None,
            "hours_to": str(self.hours_to) if self.hours_to != WORKDAY[1] else None,
        }
        return {k: v for k, v in out.items() if v}

    def describe(self) -> str:
        site = f"site {self.site}" if self.site else "every site within the reader's reach"
        if self.since or self.until:
            period = f"{self.since or 'start'} to {self.until or 'today'} (UTC dates, inclusive)"
        else:
            period = "whole trial"
        return f"{site}; {period}"


@dataclass(frozen=True, slots=True)
class _Frame:
    """What every report needs: the trial, its definition, its sites and the reader's scope
    narrowed to the filter's site."""

    trial_id: int
    code: str
    definition: TrialDefinition
    sites: dict[int, str]
    scope: Scope
    flt: ReportFilter

    def visible(self, site_id: int | None) -> bool:
        """A site-less row (the depot, a trial-level report) only for readers of every site."""
        if site_id is None:
            return self.scope.all_sites
        return self.scope.allows_site(site_id)

    @property
    def site_codes(self) -> list[str]:
        return sorted(code for sid, code in self.sites.items() if self.scope.allows_site(sid))

    @property
    def day_labels(self) -> tuple[str, ...]:
        return tuple(d.label for d in sorted(self.definition.dispensing.schedule, key=lambda d: d.day))


def _frame(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> _Frame:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        narrowed = scope
        if flt.site is not None:
            found = [sid for sid, code in sites.items() if code == flt.site]
            if not found or not scope.allows_site(found[0]):
                raise ValidationFailed(
                    "unknown site",
                    errors=[
                        FieldProblem("site", f"{flt.site!r} is not a site of {trial.code} within your reach")
                    ],
                )
            narrowed = Scope(all_sites=False, site_ids=frozenset(found))
        return _Frame(trial.id, trial.code, definition, sites, narrowed, flt)


def _strata_text(values: Mapping[str, object]) -> str:
    """Stratification values without the site (it has its own column)."""
    return "; ".join(f"{k}={v}" for k, v in values.items() if k != "site")


def _views(ctx: ServiceContext, frame: _Frame) -> list[subjects.SubjectView]:
    """The blinded subject views within reach, randomized in the period."""
    return [
        v for v in subjects.subjects(ctx, frame.code, frame.scope) if frame.flt.in_period(v.randomized_at)
    ]


# --- allocation history (REP-05, BLD-07, RND-07, RND-09) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplacedKit:
    kit_number: str
    replaced_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class KitDay:
    day: str
    kit_number: str
    status: str
    replaced: tuple[ReplacedKit, ...]

    def cell(self) -> str:
        text = f"{_kit(self.kit_number)} ({self.status})"
        for old in self.replaced:
            text += f"; replaces {_kit(old.kit_number)} ({old.reason}, {_t(old.replaced_at)})"
        return text


@dataclass(frozen=True, slots=True)
class BlindBreak:
    """A blind-break event as blinded roles see it: emergency (online or offline) or an accidental
    report naming the subject. Never a pharmacovigilance unblinding (UNB-08), never an arm."""

    at: datetime
    kind: str  # emergency | accidental
    channel: str  # online | offline | reported
    by: str
    role: str

    def cell(self) -> str:
        return f"{self.kind} ({self.channel}) {_t(self.at)} by {self.by} ({self.role})"


@dataclass(frozen=True, slots=True)
class AllocationRow:
    subject_number: str
    site: str
    strata_at_randomization: dict[str, str]
    strata_corrected: dict[str, str] | None  # None when never corrected
    randomization_number: str
    randomized_at: datetime
    randomized_by: str
    kits: tuple[KitDay, ...]
    in_error: bool
    in_error_reason: str | None
    corrections: tuple[subjects.CorrectionView, ...]  # stratum corrections
    blind_breaks: tuple[BlindBreak, ...]
    withdrawal: subjects.WithdrawalView | None = None  # REP-04


@dataclass(frozen=True, slots=True)
class AllocationHistory:
    day_labels: tuple[str, ...]
    rows: tuple[AllocationRow, ...]

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Subjects randomized", str(len(self.rows))),
            ("Randomized in error (kept, intention to treat)", str(sum(r.in_error for r in self.rows))),
            ("With a stratum correction", str(sum(bool(r.corrections) for r in self.rows))),
            ("With a blind-break event", str(sum(bool(r.blind_breaks) for r in self.rows))),
            ("Withdrawn (kept, intention to treat)", str(sum(r.withdrawal is not None for r in self.rows))),
            ("Kit replacements", str(sum(len(k.replaced) for r in self.rows for k in r.kits))),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        columns = (
            "Subject",
            "Site",
            "Stratum at randomization",
            "Stratum corrected",
            "Randomization number",
            "Randomized at (UTC)",
            "Randomized by",
            *(f"{label} kit" for label in self.day_labels),
            "Randomized in error",
            "Stratum corrections",
            "Blind-break events",
            "Withdrawal",
        )
        rows = []
        for r in self.rows:
            by_day = {k.day: k.cell() for k in r.kits}
            rows.append(
                (
                    r.subject_number,
                    r.site,
                    _strata_text(r.strata_at_randomization),
                    _strata_text(r.strata_corrected) if r.strata_corrected is not None else "",
                    r.randomization_number,
                    _t(r.randomized_at),
                    r.randomized_by,
                    *(by_day.get(label, "") for label in self.day_labels),
                    f"yes: {r.in_error_reason}" if r.in_error else "no",
                    " | ".join(
                        f"{c.field}: {c.old} -> {c.new} ({c.reason}; {c.by}, {_t(c.at)})"
                        for c in r.corrections
                    ),
                    " | ".join(b.cell() for b in r.blind_breaks),
                    _withdrawal_cell(r.withdrawal),
                )
            )
        return (
            kitreport.Table(
                "Allocation history",
                columns,
                tuple(rows),
                "Who randomized whom, when, and which kits; corrections are shown beside the values used "
                "at randomization, which never change (RND-09).",
            ),
        )


def _withdrawal_cell(w: subjects.WithdrawalView | None) -> str:
    if w is None:
        return ""
    kind = subjects.WITHDRAWAL_KINDS.get(w.kind, w.kind)
    return f"{kind} on {w.effective_date.isoformat()}: {w.reason} ({w.by}, {_t(w.at)})"


def _replaced_kits(ctx: ServiceContext, frame: _Frame) -> dict[tuple[str, int], list[ReplacedKit]]:
    with ctx.db.reading() as session:
        rows = session.execute(
            select(Dispensation, Kit.kit_number, Subject.subject_number)
            .join(Kit, Kit.id == Dispensation.kit_id)
            .join(Subject, Subject.id == Dispensation.subject_id)
            .where(Subject.trial_id == frame.trial_id, Dispensation.status == "replaced")
            .order_by(Dispensation.id)
        ).all()
    out: dict[tuple[str, int], list[ReplacedKit]] = {}
    for row, kit_number, number in rows:
        out.setdefault((number, row.day), []).append(
            ReplacedKit(kit_number, row.replaced_at, row.replacement_reason or "")
        )
    return out


def _blind_breaks(ctx: ServiceContext, frame: _Frame) -> dict[str, list[BlindBreak]]:
    out: dict[str, list[BlindBreak]] = {}
    for event in unblinding.unblindings(ctx, frame.code, frame.scope, include_pharmacovigilance=False):
        out.setdefault(event.subject_number, []).append(
            BlindBreak(
                event.unblinded_at, event.kind, event.channel, event.unblinded_by, event.unblinded_by_role
            )
        )
    for report in _accidental(ctx, frame):
        if report.subject_number is not None:
            out.setdefault(report.subject_number, []).append(
                BlindBreak(
                    report.occurred_at, "accidental", "reported", report.reported_by, report.reported_by_role
                )
            )
    for events in out.values():
        events.sort(key=lambda b: b.at)
    return out


def allocation_history(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> AllocationHistory:
    """Per subject randomized in the period: site, strata as entered and corrected, randomization
    number, time and author, the kit of each day with its replacements, the in-error flag, the
    blind-break events and the withdrawal. Never an arm (BLD-07)."""
    frame = _frame(ctx, trial_code, scope, flt)
    views = _views(ctx, frame)
    replaced = _replaced_kits(ctx, frame)
    breaks = _blind_breaks(ctx, frame)
    rows = []
    for view in views:
        rows.append(
            AllocationRow(
                subject_number=view.subject_number,
                site=view.site,
                strata_at_randomization=view.strata_at_randomization,
                strata_corrected=view.strata_corrected
                if view.strata_corrected != view.strata_at_randomization
                else None,
                randomization_number=view.randomization_number,
                randomized_at=view.randomized_at,
                randomized_by=view.randomized_by,
                kits=tuple(
                    KitDay(
                        d.label, d.kit_number, d.status, tuple(replaced.get((view.subject_number, d.day), ()))
                    )
                    for d in view.days
                ),
                in_error=view.in_error,
                in_error_reason=next(
                    (c.reason for c in view.corrections if c.kind == "randomized_in_error"), None
                ),
                corrections=tuple(c for c in view.corrections if c.kind == "stratum"),
                blind_breaks=tuple(breaks.get(view.subject_number, ())),
                withdrawal=view.withdrawal,
            )
        )
    return AllocationHistory(frame.day_labels, tuple(rows))


# --- recruitment and enrolment (REP-05, REP-08) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteAccrual:
    site: str
    randomized: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True, slots=True)
class WeekAccrual:
    week_start: date  # the Monday, trial local time
    site: str
    randomized: int
    cumulative: int


@dataclass(frozen=True, slots=True)
class Enrolment:
    timezone: str
    sites: tuple[SiteAccrual, ...]
    overall: SiteAccrual
    weeks: tuple[WeekAccrual, ...]
    chart: kitreport.StepChart | None

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Subjects randomized", str(self.overall.randomized)),
            ("First randomization (UTC)", _t(self.overall.first)),
            ("Last randomization (UTC)", _t(self.overall.last)),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        per_site = tuple(
            (s.site, str(s.randomized), _t(s.first), _t(s.last)) for s in (*self.sites, self.overall)
        )
        weeks = tuple(
            (w.week_start.isoformat(), w.site, str(w.randomized), str(w.cumulative)) for w in self.weeks
        )
        return (
            kitreport.Table(
                "Recruitment dates per site",
                ("Site", "Randomized", "First randomization (UTC)", "Last randomization (UTC)"),
                per_site,
            ),
            kitreport.Table(
                "Accrual per week and site",
                ("Week starting", "Site", "Randomized", "Cumulative"),
                weeks,
                f"Weeks start on Monday, dates in the trial's time zone ({self.timezone}).",
            ),
        )


def enrolment(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Enrolment:
    """First and last randomization per site and overall, accrual per week and site, and the
    cumulative enrolment chart (every subject counts, randomized in error included: ITT)."""
    frame = _frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        rows = [
            (site_id, at)
            for site_id, at in session.execute(
                select(Subject.site_id, Subject.randomized_at)
                .where(Subject.trial_id == frame.trial_id)
                .order_by(Subject.randomized_at, Subject.id)
            ).all()
            if frame.visible(site_id) and frame.flt.in_period(at)
        ]
    codes = frame.site_codes
    by_site: dict[str, list[datetime]] = {code: [] for code in codes}
    for site_id, at in rows:
        by_site.setdefault(frame.sites[site_id], []).append(at)
    everything = [at for _, at in rows]
    sites = tuple(
        SiteAccrual(code, len(times), min(times, default=None), max(times, default=None))
        for code, times in sorted(by_site.items())
    )
    overall = SiteAccrual(
        "All sites", len(everything), min(everything, default=None), max(everything, default=None)
    )
    local = frame.definition.local_date
    weeks: list[WeekAccrual] = []
    if everything:
        first = local(min(everything))
        monday = first - timedelta(days=first.weekday())
        last = local(max(everything))
        for code, times in sorted(by_site.items()):
            counts = Counter(local(at) - timedelta(days=local(at).weekday()) for at in times)
            cumulative, week = 0, monday
            while week <= last:
                cumulative += counts.get(week, 0)
                weeks.append(WeekAccrual(week, code, counts.get(week, 0), cumulative))
                week += timedelta(days=7)
    chart = None
    if everything:
        series = [_cumulative(code, [local(at) for at in times]) for code, times in sorted(by_site.items())]
        if len(by_site) > 1:
            series.append(_cumulative("All sites", [local(at) for at in everything]))
        chart = kitreport.StepChart("Cumulative enrolment per site", "Subjects randomized", tuple(series))
    weeks.sort(key=lambda w: (w.week_start, w.site))
    return Enrolment(frame.definition.timezone, sites, overall, tuple(weeks), chart)


def _cumulative(label: str, days: Iterable[date]) -> kitreport.Series:
    counts = Counter(days)
    points, total = [], 0
    for day in sorted(counts):
        total += counts[day]
        points.append((day, total))
    return kitreport.Series(label, tuple(points))


# --- blinded balance (REP-08) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StratumCount:
    site: str
    stratum: str
    randomized: int  # in this stratum at randomization (the stratum used for the allocation)
    after_correction: int  # in this stratum once corrections are applied
    in_error: int


@dataclass(frozen=True, slots=True)
class Balance:
    strata: tuple[StratumCount, ...]
    sites: tuple[tuple[str, int], ...]

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Subjects randomized", str(sum(n for _, n in self.sites))),
            (
                "Note",
                "Totals only: the balance between arms is not shown to blinded roles (BLD-01); "
                "list capacities and block structure stay with the unblinded statistician (RND-12).",
            ),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        return (
            kitreport.Table(
                "Subjects per stratum",
                ("Site", "Stratum", "Randomized (stratum used)", "After corrections", "Randomized in error"),
                tuple(
                    (s.site, s.stratum, str(s.randomized), str(s.after_correction), str(s.in_error))
                    for s in self.strata
                ),
            ),
            kitreport.Table(
                "Subjects per site",
                ("Site", "Randomized"),
                (
                    *((site, str(n)) for site, n in self.sites),
                    ("All sites", str(sum(n for _, n in self.sites))),
                ),
            ),
        )


def balance(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Balance:
    """Subjects per stratum (as used at randomization and as corrected) and per site: totals only."""
    frame = _frame(ctx, trial_code, scope, flt)
    views = _views(ctx, frame)
    used: Counter[tuple[str, str]] = Counter()
    corrected: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    for view in views:
        key = (view.site, _strata_text(view.strata_at_randomization))
        used[key] += 1
        errors[key] += view.in_error
        corrected[(view.site, _strata_text(view.strata_corrected))] += 1
    keys = []
    for combo in frame.definition.strata():
        values = dict(combo)
        if "site" not in values or values["site"] in frame.site_codes:
            keys.append((values.get("site", ""), _strata_text(values)))
    keys += sorted(k for k in set(used) | set(corrected) if k not in keys)
    strata = tuple(
        StratumCount(site, text, used[(site, text)], corrected[(site, text)], errors[(site, text)])
        for site, text in keys
    )
    per_site = Counter(v.site for v in views)
    return Balance(strata, tuple((code, per_site[code]) for code in frame.site_codes))


# --- dispensing completeness (REP-08, REP-04) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dose:
    day: str
    dispensed: bool
    administered: bool
    administered_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubjectDoses:
    subject_number: str
    site: str
    strata: str
    in_error: bool
    doses: tuple[Dose, ...]
    withdrawn: bool = False  # REP-04

    @property
    def given(self) -> int:
        return sum(d.administered for d in self.doses)

    @property
    def complete(self) -> bool:
        return bool(self.doses) and all(d.administered for d in self.doses)


@dataclass(frozen=True, slots=True)
class SiteDoses:
    site: str
    subjects: int
    dispensed: tuple[int, ...]  # per day
    administered: tuple[int, ...]  # per day
    complete: int


@dataclass(frozen=True, slots=True)
class DispensingCompleteness:
    day_labels: tuple[str, ...]
    subjects: tuple[SubjectDoses, ...]
    sites: tuple[SiteDoses, ...]  # each site, then "All sites"

    def facts(self) -> tuple[tuple[str, str], ...]:
        total = self.sites[-1]
        share = f"{100 * total.complete / total.subjects:.0f} %" if total.subjects else "-"
        return (
            ("Subjects", str(total.subjects)),
            (f"All {len(self.day_labels)} doses administered", f"{total.complete} ({share})"),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        def dose(d: Dose) -> str:
            if d.administered:
                return f"administered {_t(d.administered_at)}"
            return "dispensed" if d.dispensed else "not dispensed"

        n = len(self.day_labels)
        return (
            kitreport.Table(
                "Doses per site",
                (
                    "Site",
                    "Subjects",
                    *(f"{label} dispensed" for label in self.day_labels),
                    *(f"{label} administered" for label in self.day_labels),
                    f"{n}/{n} administered",
                ),
                tuple(
                    (
                        s.site,
                        str(s.subjects),
                        *(str(x) for x in s.dispensed),
                        *(str(x) for x in s.administered),
                        str(s.complete),
                    )
                    for s in self.sites
                ),
            ),
            kitreport.Table(
                "Doses per subject",
                ("Subject", "Site", "Randomized in error", *self.day_labels, "Administered", "Complete"),
                tuple(
                    (
                        s.subject_number,
                        s.site,
                        _yes(s.in_error),
                        *(dose(d) for d in s.doses),
                        f"{s.given}/{len(s.doses)}",
                        _yes(s.complete),
                    )
                    for s in self.subjects
                ),
            ),
        )


def _doses(frame: _Frame, views: Sequence[subjects.SubjectView]) -> list[SubjectDoses]:
    out = []
    for view in views:
        days = {d.label: d for d in view.days}
        doses = []
        for label in frame.day_labels:
            d = days.get(label)
            doses.append(
                Dose(
                    label,
                    d is not None and d.status in ("dispensed", "administered"),
                    d is not None and d.status == "administered",
                    d.administered_at if d is not None else None,
                )
            )
        out.append(
            SubjectDoses(
                view.subject_number,
                view.site,
                _strata_text(view.strata_at_randomization),
                view.in_error,
                tuple(doses),
                view.withdrawal is not None,
            )
        )
    return out


def _site_doses(site: str, rows: Sequence[SubjectDoses], days: int) -> SiteDoses:
    return SiteDoses(
        site,
        len(rows),
        tuple(sum(r.doses[i].dispensed for r in rows) for i in range(days)),
        tuple(sum(r.doses[i].administered for r in rows) for i in range(days)),
        sum(r.complete for r in rows),
    )


def dispensing_completeness(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> DispensingCompleteness:
    """Per subject randomized in the period, whether each day's kit was dispensed and administered,
    and per site the totals and the number of complete (3/3) treatments."""
    frame = _frame(ctx, trial_code, scope, flt)
    rows = _doses(frame, _views(ctx, frame))
    n = len(frame.day_labels)
    sites = [_site_doses(code, [r for r in rows if r.site == code], n) for code in frame.site_codes]
    sites.append(_site_doses("All sites", rows, n))
    return DispensingCompleteness(frame.day_labels, tuple(rows), tuple(sites))


# --- kit accountability (REP-09, LBL-11) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accountability:
    reconciliation: kits.Reconciliation

    def facts(self) -> tuple[tuple[str, str], ...]:
        rows = self.reconciliation.rows
        return (
            ("Kits", str(sum(r.total for r in rows))),
            ("Records balance", _yes(self.reconciliation.balanced)),
            ("Note", "Kit statuses as of now; the period filter does not apply."),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        rows = self.reconciliation.rows
        flow = [s.value for s in kits.FLOW_STATUSES]
        return (
            kitreport.Table(
                "Kits per site and batch, by current status",
                (
                    "Site",
                    "Batch",
                    "Total",
                    *(_words(s) for s in kits.STATUSES),
                    "Labels printed",
                    "Labels reprinted",
                ),
                tuple(
                    (
                        r.site,
                        r.batch,
                        str(r.total),
                        *(str(r.current.get(s, 0)) for s in kits.STATUSES),
                        str(r.labels_printed),
                        str(r.labels_reprinted),
                    )
                    for r in rows
                ),
            ),
            kitreport.Table(
                "Kits that were ever in each status",
                ("Site", "Batch", *(f"ever {_words(s)}" for s in flow)),
                tuple((r.site, r.batch, *(str(r.ever.get(s, 0)) for s in flow)) for r in rows),
            ),
            kitreport.Table(
                "Discrepancies",
                ("Discrepancy",),
                tuple((problem,) for problem in self.reconciliation.discrepancies),
            ),
        )


def _words(status: str) -> str:
    """A status as column words: "in_transit" -> "in transit"."""
    return status.replace("_", " ")


def accountability(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Accountability:
    """Kit accountability per site and batch: `kits.reconciliation`, blinded; the depot for readers
    of every site."""
    frame = _frame(ctx, trial_code, scope, flt)
    return Accountability(
        kits.reconciliation(ctx, frame.code, frame.scope, include_depot=frame.scope.all_sites)
    )


# --- unblinding report (REP-03, UNB-05, UNB-08, UNB-09) ------------------------------------------


@dataclass(frozen=True, slots=True)
class UnblindingEvent:
    unblinded_at: datetime
    recorded_at: datetime
    site: str
    subject_number: str
    kind: str  # emergency | pharmacovigilance
    channel: str  # online | offline
    unblinded_by: str
    role: str
    reason_category: str
    reason: str
    recorded_by: str
    sheet_number: str | None
    signature: str


@dataclass(frozen=True, slots=True)
class AccidentalEvent:
    occurred_at: datetime
    reported_at: datetime
    site: str | None
    subject_number: str | None
    persons_unblinded: str
    how: str
    impact: str
    actions: str
    reported_by: str
    reported_by_role: str


_BLINDING_STATEMENT = (
    ("Blinded", "Investigators, pharmacists, nurses, monitors, auditors, trial managers and administrators."),
    (
        "Unblinded",
        "The unblinded statistician, pharmacovigilance (per subject), an unblinded pharmacist where the "
        "preparation model needs one; see the sequence-generation report for every holder of these roles.",
    ),
    (
        "How the blind is kept",
        "Identical kits and labels for every arm, random opaque kit and randomization "
        "numbers, random kit choice at the site, arms stored only encrypted, blinded notifications and reports.",
    ),
)


@dataclass(frozen=True, slots=True)
class UnblindingReport:
    events: tuple[UnblindingEvent, ...]
    accidental: tuple[AccidentalEvent, ...]
    includes_pharmacovigilance: bool

    def facts(self) -> tuple[tuple[str, str], ...]:
        kinds = Counter((e.kind, e.channel) for e in self.events)
        out = [
            ("Emergency unblindings online", str(kinds[("emergency", "online")])),
            ("Emergency unblindings offline (code-break sheet)", str(kinds[("emergency", "offline")])),
            ("Accidental unblinding reports", str(len(self.accidental))),
        ]
        if self.includes_pharmacovigilance:
            out.append(
                (
                    "Pharmacovigilance unblindings",
                    str(sum(n for (k, _), n in kinds.items() if k == "pharmacovigilance")),
                )
            )
        else:
            out.append(("Pharmacovigilance unblindings", "not shown to trial staff (UNB-08)"))
        return (*out, *_BLINDING_STATEMENT)

    def tables(self) -> tuple[kitreport.Table, ...]:
        return (
            kitreport.Table(
                "Unblinding events",
                (
                    "Unblinded at (UTC)",
                    "Site",
                    "Subject",
                    "Kind",
                    "Channel",
                    "Unblinded by",
                    "Role",
                    "Reason category",
                    "Reason",
                    "Code-break sheet",
                    "Recorded at (UTC)",
                    "Recorded by",
                    "Electronic signature",
                ),
                tuple(
                    (
                        _t(e.unblinded_at),
                        e.site,
                        e.subject_number,
                        e.kind,
                        e.channel,
                        e.unblinded_by,
                        e.role,
                        e.reason_category,
                        e.reason,
                        e.sheet_number or "",
                        _t(e.recorded_at),
                        e.recorded_by,
                        e.signature,
                    )
                    for e in self.events
                ),
                "Every unblinding is recorded and cannot be hidden (UNB-05); the arm is never part of this report.",
            ),
            kitreport.Table(
                "Accidental or unplanned unblinding reports",
                (
                    "Occurred at (UTC)",
                    "Site",
                    "Subject",
                    "Persons unblinded",
                    "How",
                    "Impact",
                    "Actions taken",
                    "Reported at (UTC)",
                    "Reported by",
                    "Role",
                ),
                tuple(
                    (
                        _t(a.occurred_at),
                        a.site or "",
                        a.subject_number or "",
                        a.persons_unblinded,
                        a.how,
                        a.impact,
                        a.actions,
                        _t(a.reported_at),
                        a.reported_by,
                        a.reported_by_role,
                    )
                    for a in self.accidental
                ),
            ),
        )


def _accidental(ctx: ServiceContext, frame: _Frame) -> list[AccidentalEvent]:
    with ctx.db.reading() as session:
        rows = session.execute(
            select(AccidentalUnblinding, Subject.subject_number)
            .outerjoin(Subject, Subject.id == AccidentalUnblinding.subject_id)
            .where(AccidentalUnblinding.trial_id == frame.trial_id)
            .order_by(AccidentalUnblinding.occurred_at, AccidentalUnblinding.id)
        ).all()
    return [
        AccidentalEvent(
            row.occurred_at,
            row.reported_at,
            frame.sites.get(row.site_id) if row.site_id is not None else None,
            number,
            row.persons_unblinded,
            row.how,
            row.impact,
            row.actions,
            row.reported_by_name,
            row.reported_by_role,
        )
        for row, number in rows
        if frame.visible(row.site_id)
    ]


def unblinding_report(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter, *, include_pharmacovigilance: bool
) -> UnblindingReport:
    """Every emergency unblinding (online and offline) and every accidental report in the period,
    with date, site, subject, role, reason and signature. Pharmacovigilance unblindings only when
    `include_pharmacovigilance` (restricted and safety versions, UNB-08). Never an arm."""
    frame = _frame(ctx, trial_code, scope, flt)
    recorded = [
        e
        for e in unblinding.unblindings(
            ctx, frame.code, frame.scope, include_pharmacovigilance=include_pharmacovigilance
        )
        if frame.flt.in_period(e.unblinded_at)
    ]
    with ctx.db.reading() as session:
        signed = {
            unblinding_id: signatures.manifestation(signature).line()
            for unblinding_id, signature in session.execute(
                select(Unblinding.id, Signature)
                .join(Signature, Signature.id == Unblinding.signature_id)
                .where(Unblinding.id.in_([e.unblinding_id for e in recorded]))
            ).all()
        }
    reasons = {**unblinding.EMERGENCY_REASONS, **unblinding.PV_REASONS}
    events = tuple(
        UnblindingEvent(
            e.unblinded_at,
            e.recorded_at,
            e.site,
            e.subject_number,
            e.kind,
            e.channel,
            e.unblinded_by,
            e.unblinded_by_role,
            reasons.get(e.reason_category, e.reason_category),
            e.reason,
            e.recorded_by,
            e.sheet_number,
            signed.get(e.unblinding_id, ""),
        )
        for e in sorted(recorded, key=lambda e: (e.unblinded_at, e.unblinding_id))
    )
    accidental = tuple(a for a in _accidental(ctx, frame) if frame.flt.in_period(a.occurred_at))
    return UnblindingReport(events, accidental, include_pharmacovigilance)


# --- protocol-deviation listings (REP-07) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MisStratification:
    subject_number: str
    site: str
    factor: str
    at_randomization: str
    corrected: str
    reason: str
    agreement: str | None
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RandomizedInError:
    subject_number: str
    site: str
    reason: str
    by: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RefusedAttempt:
    """A refused bedside scan or dispensing attempt, from the clear values of its audit entry."""

    at: datetime
    kind: str  # scan | dispensing
    site: str
    subject_number: str
    day: str
    cause: str
    detail: str
    by: str
    role: str


@dataclass(frozen=True, slots=True)
class BlockedKit:
    at: datetime
    kit_number: str
    site: str
    batch: str
    status: str  # expired | quarantined
    from_status: str
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class Replacement:
    at: datetime | None
    subject_number: str
    site: str
    day: str
    old_kit: str
    new_kit: str
    reason: str


@dataclass(frozen=True, slots=True)
class LateEntry:
    subject_number: str
    site: str
    day: str
    administered_at: datetime
    recorded_at: datetime
    reason: str
    by: str

    @property
    def delay(self) -> timedelta:
        return self.recorded_at - self.administered_at


@dataclass(frozen=True, slots=True)
class Deviations:
    mis_stratifications: tuple[MisStratification, ...]
    in_error: tuple[RandomizedInError, ...]
    refused: tuple[RefusedAttempt, ...]
    blocked_kits: tuple[BlockedKit, ...]
    replacements: tuple[Replacement, ...]
    late_entries: tuple[LateEntry, ...]

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Mis-stratifications", str(len(self.mis_stratifications))),
            ("Randomizations in error", str(len(self.in_error))),
            ("Refused scans", str(sum(r.kind == "scan" for r in self.refused))),
            ("Refused dispensing attempts", str(sum(r.kind == "dispensing" for r in self.refused))),
            ("Kits blocked (expired or quarantined)", str(len(self.blocked_kits))),
            ("Kit replacements", str(len(self.replacements))),
            (
                f"Late entries (recorded more than {_hours(LATE_AFTER)} after the administration)",
                str(len(self.late_entries)),
            ),
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        return (
            kitreport.Table(
                "Mis-stratifications",
                (
                    "Subject",
                    "Site",
                    "Factor",
                    "At randomization",
                    "Corrected",
                    "Reason",
                    "Investigator agreement",
                    "Corrected by",
                    "Corrected at (UTC)",
                ),
                tuple(
                    (
                        m.subject_number,
                        m.site,
                        m.factor,
                        m.at_randomization,
                        m.corrected,
                        m.reason,
                        m.agreement or "",
                        m.by,
                        _t(m.at),
                    )
                    for m in self.mis_stratifications
                ),
                "The allocation and the kits were kept: a correction never re-randomizes (RND-09).",
            ),
            kitreport.Table(
                "Randomizations in error",
                ("Subject", "Site", "Reason", "Flagged by", "Flagged at (UTC)"),
                tuple((r.subject_number, r.site, r.reason, r.by, _t(r.at)) for r in self.in_error),
                "These subjects stay in every report (intention to treat, RND-07).",
            ),
            kitreport.Table(
                "Refused scans and dispensing attempts",
                ("At (UTC)", "Kind", "Site", "Subject", "Day", "Cause", "Detail", "By", "Role"),
                tuple(
                    (_t(r.at), r.kind, r.site, r.subject_number, r.day, r.cause, r.detail, r.by, r.role)
                    for r in self.refused
                ),
            ),
            kitreport.Table(
                "Expired or quarantined kits blocked",
                ("At (UTC)", "Kit", "Site", "Batch", "Blocked as", "Previous status", "Reason", "By"),
                tuple(
                    (_t(b.at), _kit(b.kit_number), b.site, b.batch, b.status, b.from_status, b.reason, b.by)
                    for b in self.blocked_kits
                ),
            ),
            kitreport.Table(
                "Kit replacements",
                ("Replaced at (UTC)", "Subject", "Site", "Day", "Replaced kit", "New kit", "Reason"),
                tuple(
                    (
                        _t(r.at),
                        r.subject_number,
                        r.site,
                        r.day,
                        _kit(r.old_kit),
                        _kit(r.new_kit) if r.new_kit else "",
                        r.reason,
                    )
                    for r in self.replacements
                ),
            ),
            kitreport.Table(
                "Late entries",
                (
                    "Subject",
                    "Site",
                    "Day",
                    "Administered at (UTC)",
                    "Recorded at (UTC)",
                    "Delay",
                    "Reason given",
                    "Recorded by",
                ),
                tuple(
                    (
                        e.subject_number,
                        e.site,
                        e.day,
                        _t(e.administered_at),
                        _t(e.recorded_at),
                        _duration(e.delay),
                        e.reason,
                        e.by,
                    )
                    for e in self.late_entries
                ),
            ),
        )


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    return (f"{days} d " if days else "") + f"{rest // 60} h {rest % 60:02d} min"


def _refused(ctx: ServiceContext, frame: _Frame) -> list[RefusedAttempt]:
    """From the audit entries administration.scan_refused and dispensation.refused: their clear
    values only (`EntryView` never carries a sealed value)."""
    out = []
    for entry in audit_trail.entries(
        ctx,
        frame.code,
        actions=(Action.SCAN_REFUSED.value, Action.DISPENSING_REFUSED.value),
        since=frame.flt.start,
        until=frame.flt.end,
        scope=frame.scope,
    ):
        if frame.flt.site is not None and entry.site_code != frame.flt.site:
            continue
        new = entry.new or {}
        scan = entry.action == Action.SCAN_REFUSED.value
        out.append(
            RefusedAttempt(
                at=_audit_time(entry.at),
                kind="scan" if scan else "dispensing",
                site=entry.site_code or "",
                subject_number=entry.object_id,
                day=str(new.get("day", "")),
                cause=str(new.get("cause", "")),
                detail=str(new.get("detail", "")) if scan else f"scanned kit {new.get('scanned', '')}",
                by=entry.actor_name,
                role=entry.actor_role,
            )
        )
    return out


def deviations(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Deviations:
    """Protocol-deviation support listings for the period: mis-stratifications, randomizations in
    error, refused scans and dispensing attempts, expired or quarantined kits blocked, kit
    replacements, late entries."""
    frame = _frame(ctx, trial_code, scope, flt)
    every = subjects.subjects(ctx, frame.code, frame.scope)
    mis, errors = [], []
    for view in every:
        for c in view.corrections:
            if not frame.flt.in_period(c.at):
                continue
            if c.kind == "stratum":
                mis.append(
                    MisStratification(
                        view.subject_number,
                        view.site,
                        c.field or "",
                        str(view.strata_at_randomization.get(c.field or "", c.old)),
                        str(c.new),
                        c.reason,
                        c.agreement,
                        c.by,
                        c.at,
                    )
                )
            elif c.kind == "randomized_in_error":
                errors.append(RandomizedInError(view.subject_number, view.site, c.reason, c.by, c.at))
    with ctx.db.reading() as session:
        lots = {
            b.id: b.lot_code
            for b in session.execute(select(Batch).where(Batch.trial_id == frame.trial_id)).scalars()
        }
        blocked = [
            BlockedKit(
                event.at,
                kit.kit_number,
                frame.sites.get(event.site_id or kit.site_id or -1, "depot"),
                lots.get(kit.batch_id or -1, ""),
                event.to_status,
                event.from_status or "",
                event.reason,
                event.actor_name,
            )
            for event, kit in session.execute(
                select(KitEvent, Kit)
                .join(Kit, Kit.id == KitEvent.kit_id)
                .where(
                    Kit.trial_id == frame.trial_id,
                    KitEvent.to_status.in_([KitStatus.EXPIRED.value, KitStatus.QUARANTINED.value]),
                )
                .order_by(KitEvent.at, KitEvent.id)
            ).all()
            if frame.visible(event.site_id if event.site_id is not None else kit.site_id)
            and (frame.flt.in_period(event.at))
        ]
        numbers = {
            s.id: (s.subject_number, s.site_id)
            for s in session.execute(select(Subject).where(Subject.trial_id == frame.trial_id)).scalars()
        }
        dispensations = session.execute(
            select(Dispensation, Kit.kit_number)
            .join(Kit, Kit.id == Dispensation.kit_id)
            .join(Subject, Subject.id == Dispensation.subject_id)
            .where(Subject.trial_id == frame.trial_id)
            .order_by(Dispensation.id)
        ).all()
        administrations = list(
            session.execute(
                select(Administration)
                .join(Subject, Subject.id == Administration.subject_id)
                .where(Subject.trial_id == frame.trial_id)
                .order_by(Administration.id)
            ).scalars()
        )
    labels = {d.day: d.label for d in frame.definition.dispensing.schedule}
    kit_of = {(d.subject_id, d.day, d.replacement_number): number for d, number in dispensations}
    replacements = [
        Replacement(
            d.replaced_at,
            numbers[d.subject_id][0],
            frame.sites[numbers[d.subject_id][1]],
            labels.get(d.day, str(d.day)),
            number,
            kit_of.get((d.subject_id, d.day, d.replacement_number + 1), ""),
            d.replacement_reason or "",
        )
        for d, number in dispensations
        if d.status == "replaced"
        and frame.visible(numbers[d.subject_id][1])
        and (frame.flt.in_period(d.replaced_at))
    ]
    late = [
        LateEntry(
            numbers[a.subject_id][0],
            frame.sites[numbers[a.subject_id][1]],
            labels.get(a.day, str(a.day)),
            a.administered_at,
            a.recorded_at,
            a.late_entry_reason or "",
            a.recorded_by_name,
        )
        for a in administrations
        if a.recorded_at - a.administered_at > LATE_AFTER
        and frame.visible(numbers[a.subject_id][1])
        and (frame.flt.in_period(a.recorded_at))
    ]
    return Deviations(
        tuple(sorted(mis, key=lambda m: m.at)),
        tuple(sorted(errors, key=lambda e: e.at)),
        tuple(_refused(ctx, frame)),
        tuple(blocked),
        tuple(replacements),
        tuple(late),
    )


# --- CONSORT-style participant flow (REP-04) ------------------------------------------------------


ALL_STRATA = "all strata"  # the site-total rows of the per-arm flow


@dataclass(frozen=True, slots=True)
class FlowCounts:
    screened: int | None  # None where screening does not apply (strata, arms)
    ineligible: int | None
    randomized: int
    in_error: int
    withdrawn: int  # REP-04: withdrawals recorded in this service, whatever their kind
    dispensed: tuple[int, ...]  # per day
    administered: tuple[int, ...]  # per day
    complete: int


@dataclass(frozen=True, slots=True)
class ParticipantFlow:
    day_labels: tuple[str, ...]
    columns: tuple[str, ...]  # "All sites", then each site (or arm)
    counts: tuple[FlowCounts, ...]  # one per column
    by_stratum: tuple[tuple[str, str, FlowCounts], ...]  # site, stratum, counts
    ineligible_reasons: tuple[tuple[str, int], ...]
    per_arm: bool = False
    # per arm only: (site, stratum or ALL_STRATA, arm column, counts) for each site and stratum (REP-04)
    by_arm_and_stratum: tuple[tuple[str, str, str, FlowCounts], ...] = ()

    def facts(self) -> tuple[tuple[str, str], ...]:
        total = self.counts[0]
        out = [
            ("Randomized", str(total.randomized)),
            ("Randomized in error (kept in every count, intention to treat)", str(total.in_error)),
            ("Withdrawn (kept in every count, intention to treat)", str(total.withdrawn)),
            (f"Received all {len(self.day_labels)} doses", str(total.complete)),
        ]
        if total.screened is not None:
            out[:0] = [("Screened", str(total.screened)), ("Ineligible", str(total.ineligible))]
        return tuple(out)

    def _measures(self, counts: Sequence[FlowCounts]) -> tuple[tuple[str, ...], ...]:
        rows: list[tuple[str, ...]] = []
        if not self.per_arm:
            rows.append(("Screened", *(str(c.screened) for c in counts)))
            rows.append(("Ineligible", *(str(c.ineligible) for c in counts)))
        rows.append(("Randomized", *(str(c.randomized) for c in counts)))
        rows.append(("Randomized in error", *(str(c.in_error) for c in counts)))
        rows.append(("Withdrawn", *(str(c.withdrawn) for c in counts)))
        for i, label in enumerate(self.day_labels):
            rows.append((f"{label} dispensed", *(str(c.dispensed[i]) for c in counts)))
            rows.append((f"{label} administered", *(str(c.administered[i]) for c in counts)))
        n = len(self.day_labels)
        rows.append((f"{n}/{n} doses administered", *(str(c.complete) for c in counts)))
        return tuple(rows)

    def arm_strata_table(self) -> kitreport.Table:
        """The per-arm counts of each site and stratum (restricted, REP-04)."""
        n = len(self.day_labels)
        return kitreport.Table(
            "Participant flow per arm, site and stratum",
            (
                "Site",
                "Stratum",
                "Arm",
                "Randomized",
                "Randomized in error",
                "Withdrawn",
                *(f"{d} administered" for d in self.day_labels),
                f"{n}/{n}",
            ),
            tuple(
                (
                    site,
                    stratum,
                    arm,
                    str(c.randomized),
                    str(c.in_error),
                    str(c.withdrawn),
                    *(str(x) for x in c.administered),
                    str(c.complete),
                )
                for site, stratum, arm, c in self.by_arm_and_stratum
            ),
            "Strata as used at randomization.",
        )

    def tables(self) -> tuple[kitreport.Table, ...]:
        n = len(self.day_labels)
        return (
            kitreport.Table(
                "Participant flow per arm" if self.per_arm else "Participant flow",
                ("Measure", *self.columns),
                self._measures(self.counts),
                "Every randomized subject is counted where randomized, including those randomized in error.",
            ),
            kitreport.Table(
                "Per stratum",
                (
                    "Site",
                    "Stratum",
                    "Randomized",
                    "Randomized in error",
                    "Withdrawn",
                    *(f"{d} administered" for d in self.day_labels),
                    f"{n}/{n}",
                ),
                tuple(
                    (
                        site,
                        stratum,
                        str(c.randomized),
                        str(c.in_error),
                        str(c.withdrawn),
                        *(str(x) for x in c.administered),
                        str(c.complete),
                    )
                    for site, stratum, c in self.by_stratum
                ),
            ),
            kitreport.Table(
                "Ineligible: failed criteria",
                ("Criterion", "Patients"),
                tuple((label, str(n)) for label, n in self.ineligible_reasons),
                "Patients may fail several criteria.",
            ),
        )


def _flow(
    screening: Sequence[tuple[bool, list[str]]] | None, rows: Sequence[SubjectDoses], days: int
) -> FlowCounts:
    return FlowCounts(
        screened=len(screening) if screening is not None else None,
        ineligible=sum(not eligible for eligible, _ in screening) if screening is not None else None,
        randomized=len(rows),
        in_error=sum(r.in_error for r in rows),
        withdrawn=sum(r.withdrawn for r in rows),
        dispensed=tuple(sum(r.doses[i].dispensed for r in rows) for i in range(days)),
        administered=tuple(sum(r.doses[i].administered for r in rows) for i in range(days)),
        complete=sum(r.complete for r in rows),
    )


def _screening(ctx: ServiceContext, frame: _Frame) -> list[tuple[str, bool, list[str]]]:
    """(site, eligible, failed criterion ids) of each screening in reach and period."""
    with ctx.db.reading() as session:
        return [
            (frame.sites[e.site_id], e.eligible, [str(f.get("criterion", "")) for f in e.failures])
            for e in session.execute(
                select(ScreeningEntry)
                .where(ScreeningEntry.trial_id == frame.trial_id)
                .order_by(ScreeningEntry.id)
            ).scalars()
            if frame.visible(e.site_id) and (frame.flt.in_period(e.screened_at))
        ]


def participant_flow(
    ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """CONSORT-style numbers, blinded: screened, ineligible (with the failed criteria), randomized,
    randomized in error, withdrawn, kits dispensed and administered per day, complete treatments; in
    total, per site and per stratum."""
    frame = _frame(ctx, trial_code, scope, flt)
    rows = _doses(frame, _views(ctx, frame))
    screening = _screening(ctx, frame)
    n = len(frame.day_labels)
    columns = ("All sites", *frame.site_codes)
    counts = [_flow([(e, f) for _, e, f in screening], rows, n)]
    for code in frame.site_codes:
        counts.append(
            _flow([(e, f) for s, e, f in screening if s == code], [r for r in rows if r.site == code], n)
        )
    return ParticipantFlow(
        frame.day_labels,
        columns,
        tuple(counts),
        _by_stratum(frame, rows),
        _reasons(frame, screening),
    )


def _by_stratum(frame: _Frame, rows: Sequence[SubjectDoses]) -> tuple[tuple[str, str, FlowCounts], ...]:
    keys = sorted({(r.site, r.strata) for r in rows})
    n = len(frame.day_labels)
    return tuple(
        (site, stratum, _flow(None, [r for r in rows if (r.site, r.strata) == (site, stratum)], n))
        for site, stratum in keys
    )


def _reasons(frame: _Frame, screening: Sequence[tuple[str, bool, list[str]]]) -> tuple[tuple[str, int], ...]:
    failed = Counter(c for _, eligible, criteria in screening if not eligible for c in set(criteria))
    labels = {c.id: c.label.en for c in frame.definition.eligibility}
    return tuple(
        (labels.get(c, c), n) for c, n in sorted(failed.items(), key=lambda item: (-item[1], item[0]))
    )


def participant_flow_by_arm(
    ctx: ServiceContext, reader: Actor, trial_code: str, scope: Scope, flt: ReportFilter
) -> ParticipantFlow:
    """The participant flow per arm (REP-04, unblinded): only once the trial is UNBLINDED
    (trial_state.NotUnblinded, 409, before). Each subject's arm is read through `arm_access`, one
    audited read per subject, in one unit of work."""
    frame = _frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        lookups.require_unblinded(get_trial(session, frame.code))
    rows = _doses(frame, _views(ctx, frame))
    wanted = {r.subject_number for r in rows}
    arms: dict[str, str] = {}
    with ctx.db.unit_of_work() as session:
        lookups.require_unblinded(get_trial(session, frame.code))  # again, where the arms are read
        for subject in session.execute(
            select(Subject).where(Subject.trial_id == frame.trial_id).order_by(Subject.id)
        ).scalars():
            if subject.subject_number in wanted:
                arms[subject.subject_number] = arm_access.subject_arm_in(
                    session, ctx, reader, frame.code, subject, "participant flow per arm (REP-04)"
                )
    n = len(frame.day_labels)
    labels = [(a.code, a.label) for a in frame.definition.arms]
    counts = [_flow(None, rows, n)] + [
        _flow(None, [r for r in rows if arms.get(r.subject_number) == code], n) for code, _ in labels
    ]
    by_arm: list[tuple[str, str, str, FlowCounts]] = []
    for site in sorted({r.site for r in rows}):
        at_site = [r for r in rows if r.site == site]
        for stratum in (*sorted({r.strata for r in at_site}), ALL_STRATA):
            group = [r for r in at_site if stratum in (ALL_STRATA, r.strata)]
            for code, label in labels:
                chosen = [r for r in group if arms.get(r.subject_number) == code]
                by_arm.append((site, stratum, f"{code}: {label}", _flow(None, chosen, n)))
    return ParticipantFlow(
        frame.day_labels,
        ("All arms", *(f"{code}: {label}" for code, label in labels)),
        tuple(counts),
        _by_stratum(frame, rows),
        (),
        per_arm=True,
        by_arm_and_stratum=tuple(by_arm),
    )


# --- sequence generation and allocation concealment (REP-01, REP-02, BLD-13) ----------------------


@dataclass(frozen=True, slots=True)
class ListRecord:
    label: str
    mode: str
    status: str
    method: str
    algorithm: str
    algorithm_version: str
    software_version: str
    generated_at: datetime
    generated_by: str
    approved: str  # the signature's manifestation, or ""
    approved_by: str  # the signer's printed name, or ""
    activated: str
    seed_id: str
    ratio: str
    versions: tuple[tuple[int, datetime, str, str], ...]  # version, created at, by, reason
    block_sizes: tuple[int, ...] | None  # restricted, or after the final unblinding
    slot_count: int | None  # the list length (RND-12): same rule


_CONCEALMENT = (
    (
        "Mechanism",
        "Central web system (allocator): the next unused slot of the subject's stratum is taken "
        "in one database transaction with the subject and the kits; nobody can choose or see a slot.",
    ),
    (
        "Sequence",
        "Sequential allocation within strata from a list generated in advance from a secret "
        "256-bit seed (HMAC-SHA256 in counter mode, documented in docs/randomization.md).",
    ),
    (
        "Kits",
        "Coded kit numbers: random, check-digit protected, identical labels for every arm; the kit of "
        "each day is drawn at random among the usable kits of the arm at the site.",
    ),
    (
        "Storage",
        "Arms, block structure and seed are stored only encrypted at rest (AES-256-GCM bound to "
        "each row); every read of an arm is audited (BLD-08).",
    ),
    ("Who enrolled", "The site investigators listed below (screening, eligibility, randomization request)."),
    ("Who assigned", "The system, automatically: no person assigns an arm."),
)


@dataclass(frozen=True, slots=True)
class SequenceReport:
    restricted: bool
    # code, label, levels; None (withheld) in the blinded version before the final unblinding (REP-01)
    factors: tuple[tuple[str, str, str], ...] | None
    lists: tuple[ListRecord, ...]
    enrolled_by: tuple[admin.RoleRow, ...]  # investigators, ever
    unblinded_holders: tuple[admin.RoleRow, ...]  # BLD-13: everyone who ever held an unblinded role

    def facts(self) -> tuple[tuple[str, str], ...]:
        main = self.lists[0] if self.lists else None
        out: list[tuple[str, str]] = []
        if main is not None:
            out += [
                ("Method", _method_text(main.method)),
                ("Allocation ratio", main.ratio),
                ("Generated by", f"{main.generated_by}, {_t(main.generated_at)}"),
                (
                    "Software",
                    f"allocator {main.software_version}, {main.algorithm} version {main.algorithm_version}",
                ),
                ("Seed custodian", _custodian(main)),
                (
                    "Block sizes",
                    ", ".join(str(b) for b in main.block_sizes)
                    if main.block_sizes is not None
                    else "withheld until the final unblinding (restricted version only, RND-12)",
                ),
            ]
        out.append(
            (
                "Stratification factors",
                "; ".join(f"{label} ({levels})" for _, label, levels in self.factors)
                if self.factors is not None
                else "withheld until the final unblinding (restricted version only, REP-01)",
            )
        )
        return (*out, *_CONCEALMENT)

    def tables(self) -> tuple[kitreport.Table, ...]:
        def role_row(r: admin.RoleRow) -> tuple[str, ...]:
            return (
                r.full_name,
                r.username,
                r.role,
                r.site or "",
                _t(r.starts_at),
                _t(r.ends_at),
                _t(r.revoked_at),
                r.granted_by,
            )

        role_columns = (
            "Name",
            "Username",
            "Role",
            "Site",
            "From (UTC)",
            "Planned end (UTC)",
            "Revoked (UTC)",
            "Granted by",
        )
        list_columns = (
            "List",
            "Mode",
            "Status",
            "Method",
            "Algorithm",
            "Software",
            "Generated (UTC)",
            "Generated by",
            "Approved",
            "Activated",
            "Seed id",
            "Versions",
            "Block sizes",
            "Slots",
        )
        factors = (
            ()
            if self.factors is None
            else (kitreport.Table("Stratification factors", ("Factor", "Label", "Levels"), self.factors),)
        )
        return (
            kitreport.Table(
                "Randomization lists",
                list_columns,
                tuple(
                    (
                        r.label,
                        r.mode,
                        r.status,
                        _method_text(r.method),
                        f"{r.algorithm} v{r.algorithm_version}",
                        f"allocator {r.software_version}",
                        _t(r.generated_at),
                        r.generated_by,
                        r.approved,
                        r.activated,
                        r.seed_id,
                        " | ".join(f"v{v} {_t(at)} by {by}: {reason}" for v, at, by, reason in r.versions),
                        ", ".join(str(b) for b in r.block_sizes) if r.block_sizes is not None else "withheld",
                        str(r.slot_count) if r.slot_count is not None else "withheld",
                    )
                    for r in self.lists
                ),
                "The seed id names the seed without revealing it. Block sizes, list lengths and stratification "
                "factors are shown only in the restricted version and after the final unblinding (RND-12, "
                "REP-01).",
            ),
            *factors,
            kitreport.Table(
                "Who enrolled: investigators (ever)",
                role_columns,
                tuple(role_row(r) for r in self.enrolled_by),
            ),
            kitreport.Table(
                "Everyone who ever held an unblinded role (access to the sequence)",
                role_columns,
                tuple(role_row(r) for r in self.unblinded_holders),
                "From the append-only role history (BLD-13; CONSORT 2025 item 19).",
            ),
        )


def _method_text(method: str) -> str:
    return {
        "permuted_blocks": "stratified permuted blocks with block sizes drawn at random",
        "minimization": "Pocock-Simon minimization with a random element",
    }.get(method, method)


def _custodian(record: ListRecord) -> str:
    """The seed stays sealed in the service; its custodian is the statistician who approved the
    list (or, before approval, whoever generated it)."""
    if record.approved_by:
        return f"{record.approved_by}, unblinded statistician who approved the list (the seed stays sealed)"
    return f"{record.generated_by}, who generated the list (not approved yet; the seed stays sealed)"


def sequence_report(ctx: ServiceContext, trial_code: str, *, restricted: bool) -> SequenceReport:
    """Who generated the list, how, with which software, when, the seed's custodian, the strata, the
    concealment mechanism, who enrolled and who assigned, and everyone who ever held an unblinded
    role. Block sizes, list lengths and stratification factors only when `restricted` or once the
    trial is UNBLINDED (REP-01)."""
    mode = instance_mode(ctx.settings.env).value
    overviews = [o for o in lists.lists(ctx, trial_code) if o.mode == mode]
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        disclose = restricted or trial.status == TrialStatus.UNBLINDED.value
        # The software version that generated each list is the one in its audit entry (VAL-04).
        software = dict(
            session.execute(
                select(AuditEvent.object_id, AuditEvent.software_version).where(
                    AuditEvent.chain == trial.code, AuditEvent.action == Action.LIST_GENERATED.value
                )
            ).all()
        )
    records = []
    for o in overviews:
        randomization = o.parameters.get("randomization")
        sizes = randomization.get("block_sizes") if isinstance(randomization, dict) else None
        ratio = o.parameters.get("ratio")
        records.append(
            ListRecord(
                label=o.label,
                mode=o.mode,
                status=o.status,
                method=o.method,
                algorithm=o.algorithm,
                algorithm_version=o.algorithm_version,
                software_version=software.get(o.label, "unknown"),
                generated_at=o.generated_at,
                generated_by=o.generated_by,
                approved=o.approved.line() if o.approved else "",
                approved_by=o.approved.printed_name if o.approved else "",
                activated=o.activated.line() if o.activated else "",
                seed_id=o.seed_id,
                ratio=":".join(str(w) for w in ratio) if isinstance(ratio, list) else "",
                versions=tuple((v.version, v.created_at, v.created_by_name, v.reason) for v in o.versions),
                block_sizes=tuple(int(b) for b in sizes) if disclose and isinstance(sizes, list) else None,
                slot_count=o.slot_count if disclose else None,
            )
        )
    factors = (
        tuple(
            (f.code, f.label.en, ", ".join(level.code for level in f.levels))
            for f in definition.stratification
        )
        if disclose
        else None
    )
    roles = admin.trial_roles(ctx, trial_code)
    return SequenceReport(
        restricted=restricted,
        factors=factors,
        lists=tuple(records),
        enrolled_by=tuple(r for r in roles if r.role == Role.INVESTIGATOR.value),
        unblinded_holders=tuple(admin.unblinded_role_history(ctx, trial_code)),
    )


# --- audit-trail review reports and their sign-off (AUD-09) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewKind:
    name: str
    title: str
    description: str
    actions: tuple[str, ...] | None  # on the trial's chain; None: every action
    system_actions: tuple[str, ...] = ()  # on the instance chain, for the trial's users


A = Action
REVIEW_KINDS: dict[str, ReviewKind] = {
    kind.name: kind
    for kind in (
        ReviewKind(
            "unblindings",
            "Unblindings",
            "Emergency unblindings (online and offline), refusals, rate alerts, accidental reports, "
            "code-break sheets and trial state changes.",
            (
                A.UNBLINDING_EMERGENCY,
                A.UNBLINDING_OFFLINE,
                A.UNBLINDING_REFUSED,
                A.UNBLINDING_RATE_ALERT,
                A.UNBLINDING_ACCIDENTAL,
                A.CODE_BREAK_GENERATED,
                A.CODE_BREAK_CHECKED,
                A.TRIAL_STATUS_CHANGED,
            ),
        ),
        ReviewKind(
            "arm-reads",
            "Accesses to the arm",
            "Every audited read of an arm (BLD-08): who, when and for what purpose; never the arm.",
            (A.ARM_READ,),
        ),
        ReviewKind(
            "sign-ins",
            "Failed sign-ins, lockouts and refused signatures",
            "Failed sign-ins and lockouts of the trial's users, refused electronic signatures and refused "
            "permissions in the trial.",
            (A.SIGNATURE_FAILED, A.PERMISSION_DENIED),
            (A.LOGIN_FAILED, A.LOCKED_OUT),
        ),
        ReviewKind(
            "off-hours",
            "Actions outside working hours",
            "Every entry recorded before or after the working hours, or on a Saturday or Sunday, in the "
            "trial's time zone.",
            None,
        ),
        ReviewKind(
            "reprints", "Reprints", "Every reprinted document (marked DUPLICATA).", (A.DOCUMENT_PRINTED,)
        ),
        ReviewKind(
            "corrections",
            "Manual corrections",
            "Randomizations flagged in error, stratum corrections, manual kit status changes and batch "
            "expiry changes.",
            (
                A.SUBJECT_FLAGGED_IN_ERROR,
                A.SUBJECT_STRATUM_CORRECTED,
                A.KIT_STATUS_CHANGED,
                A.BATCH_EXPIRY_CHANGED,
            ),
        ),
        ReviewKind(
            "mis-stratifications",
            "Mis-stratifications",
            "Stratum corrections recorded beside the values used at randomization.",
            (A.SUBJECT_STRATUM_CORRECTED,),
        ),
        ReviewKind(
            "kit-replacements",
            "Kit replacements",
            "Lost, damaged or expired kits replaced.",
            (A.KIT_REPLACED,),
        ),
        ReviewKind(
            "withdrawals",
            "Withdrawals",
            "Subjects withdrawn (treatment discontinued, consent withdrawn, lost to follow-up), each signed.",
            (A.SUBJECT_WITHDRAWN,),
        ),
        ReviewKind(
            "role-changes",
            "Role changes",
            "Roles granted and revoked in the trial.",
            (A.ROLE_GRANTED, A.ROLE_REVOKED),
        ),
    )
}
_REVIEW_COLUMNS = (
    "Entry",
    "At (UTC)",
    "Local time",
    "Who",
    "Username",
    "Role",
    "Site",
    "Action",
    "Object",
    "Details",
)


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    entry: str  # chain:seq
    at: str
    local_time: str
    who: str
    username: str
    role: str
    site: str
    action: str
    object: str
    details: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.entry,
            self.at,
            self.local_time,
            self.who,
            self.username,
            self.role,
            self.site,
            self.action,
            self.object,
            self.details,
        )


@dataclass(frozen=True, slots=True)
class PastReview:
    id: int
    report: str
    period_start: date
    period_end: date  # inclusive
    entries: int
    content_sha256: str
    comment: str
    signature: signatures.Manifestation


@dataclass(frozen=True, slots=True)
class AuditReviewReport:
    kind: ReviewKind
    timezone: str
    hours: tuple[int, int]
    entries: tuple[ReviewEntry, ...]
    past: tuple[PastReview, ...]
    suggested_period: tuple[date, date]

    @property
    def rows(self) -> tuple[tuple[str, ...], ...]:
        return tuple(e.cells() for e in self.entries)

    @property
    def digest(self) -> str:
        """SHA-256 of what the reviewer is shown (and signs): the report name, columns and rows."""
        raw = json.dumps(
            {"report": self.kind.name, "columns": _REVIEW_COLUMNS, "rows": self.rows},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def facts(self) -> tuple[tuple[str, str], ...]:
        out = [
            ("Review report", f"{self.kind.title}: {self.kind.description}"),
            ("Entries listed", str(len(self.entries))),
            ("SHA-256 of the listed entries", self.digest),
        ]
        if self.kind.name == "off-hours":
            out.append(
                (
                    "Working hours",
                    f"{self.hours[0]:02d}:00 to {self.hours[1]:02d}:00, Monday to Friday ({self.timezone})",
                )
            )
        return tuple(out)

    def tables(self) -> tuple[kitreport.Table, ...]:
        return (
            kitreport.Table(
                self.kind.title,
                _REVIEW_COLUMNS,
                self.rows,
                "Clear values only: sealed values are never shown.",
            ),
            kitreport.Table(
                "Signed reviews of this report",
                ("Period", "Entries", "SHA-256", "Findings", "Signature"),
                tuple(
                    (
                        f"{p.period_start} to {p.period_end}",
                        str(p.entries),
                        p.content_sha256,
                        p.comment,
                        p.signature.line(),
                    )
                    for p in self.past
                ),
            ),
        )


def _pharmacovigilance(entry: audit_trail.EntryView) -> bool:
    """UNB-08: entries that would tell trial staff that a pharmacovigilance unblinding happened."""
    new = entry.new or {}
    if entry.action == Action.UNBLINDING_PV.value:
        return True
    if entry.action == Action.ARM_READ.value and new.get("purpose") == unblinding.PV_MEANING:
        return True
    return entry.action in (Action.SIGNATURE_APPLIED.value, Action.SIGNATURE_FAILED.value) and (
        new.get("meaning") == unblinding.PV_MEANING
    )


def _details(entry: audit_trail.EntryView) -> str:
    parts = []
    if entry.old:
        parts.append("before " + json.dumps(entry.old, sort_keys=True, ensure_ascii=False, default=str))
    if entry.new:
        parts.append(json.dumps(entry.new, sort_keys=True, ensure_ascii=False, default=str))
    if entry.reason:
        parts.append(f"reason: {entry.reason}")
    return "; ".join(parts)


def _trial_usernames(ctx: ServiceContext, trial_id: int, scope: Scope) -> set[str]:
    with ctx.db.reading() as session:
        return {
            username
            for username, site_id in session.execute(
                select(User.username, RoleAssignment.site_id)
                .join(RoleAssignment, RoleAssignment.user_id == User.id)
                .where(RoleAssignment.trial_id == trial_id)
            ).all()
            if site_id is None or scope.allows_site(site_id)
        }


def audit_review(
    ctx: ServiceContext, trial_code: str, report: str, scope: Scope, flt: ReportFilter
) -> AuditReviewReport:
    """One review report for the period (AUD-09): the matching audit entries within reach, blinded
    (clear values only, pharmacovigilance unblindings left out, UNB-08), and the signed reviews."""
    kind = REVIEW_KINDS.get(report)
    if kind is None:
        raise NotFound(
            f"no review report {report!r}",
            errors=[FieldProblem("report", f"one of {', '.join(REVIEW_KINDS)}")],
        )
    frame = _frame(ctx, trial_code, scope, flt)
    zone = ZoneInfo(frame.definition.timezone)
    found = audit_trail.entries(
        ctx, frame.code, actions=kind.actions, since=flt.start, until=flt.end, scope=frame.scope
    )
    if kind.system_actions:
        found += audit_trail.entries(
            ctx,
            SYSTEM_CHAIN,
            actions=kind.system_actions,
            since=flt.start,
            until=flt.end,
            scope=None,
            usernames=_trial_usernames(ctx, frame.trial_id, frame.scope),
        )
    rows = []
    for entry in sorted(found, key=lambda e: (e.at, e.chain, e.seq)):
        if _pharmacovigilance(entry) or entry.action == Action.AUDIT_CHECKPOINT.value:
            continue
        if flt.site is not None and entry.site_code not in (None, flt.site):
            continue
        if kind.name == "reprints" and not (entry.new or {}).get("reprint"):
            continue
        moment = _audit_time(entry.at).astimezone(zone)
        if kind.name == "off-hours" and moment.weekday() < 5 and flt.hours_from <= moment.hour < flt.hours_to:
            continue
        rows.append(
            ReviewEntry(
                f"{entry.chain}:{entry.seq}",
                _t(_audit_time(entry.at)),
                moment.strftime("%a %Y-%m-%d %H:%M %Z"),
                entry.actor_name,
                entry.actor_username,
                entry.actor_role,
                entry.site_code or "",
                entry.action,
                f"{entry.object_type} {entry.object_id}",
                _details(entry),
            )
        )
    today = ctx.now().astimezone(UTC).date()
    return AuditReviewReport(
        kind,
        frame.definition.timezone,
        (flt.hours_from, flt.hours_to),
        tuple(rows),
        tuple(reviews(ctx, frame.code, report=kind.name)),
        (today.replace(day=1), today),
    )


def reviews(ctx: ServiceContext, trial_code: str, *, report: str | None = None) -> list[PastReview]:
    """Signed review periods, newest first (of one review report when `report` is given)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        query = (
            select(AuditReview, Signature)
            .join(Signature, Signature.id == AuditReview.signature_id)
            .where(AuditReview.trial_id == trial.id)
            .order_by(AuditReview.id.desc())
        )
        if report is not None:
            query = query.where(AuditReview.report == report)
        return [
            PastReview(
                row.id,
                row.report,
                row.period_start.date(),
                (row.period_end - timedelta(days=1)).date(),
                row.entries,
                row.content_sha256,
                row.comment,
                signatures.manifestation(signature),
            )
            for row, signature in session.execute(query).all()
        ]


def sign_review(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    report: str,
    period_start: date | None,
    period_end: date | None,
    comment: str,
    signature: signatures.SignatureRequest,
    *,
    scope: Scope,
    hours: tuple[int, int] = WORKDAY,
) -> PastReview:
    """Sign off the review of one review report for one period (AUD-09, ACC-12): an AuditReview row
    with the number and the SHA-256 of the entries listed (as the reviewer sees them, within
    their reach), an electronic signature meaning "audit trail review", and an `audit.reviewed`
    entry, in one unit of work. A refused signature is audited and counted toward lockout."""
    problems = []
    if report not in REVIEW_KINDS:
        problems.append(FieldProblem("report", f"one of {', '.join(REVIEW_KINDS)}"))
    if period_start is None:
        problems.append(FieldProblem("since", "the start of the reviewed period is required"))
    if period_end is None:
        problems.append(FieldProblem("until", "the end of the reviewed period is required"))
    if period_start is not None and period_end is not None and period_end < period_start:
        problems.append(FieldProblem("until", "is before the start of the period"))
    if period_end is not None and period_end > ctx.now().astimezone(UTC).date():
        problems.append(FieldProblem("until", "is in the future: review a period that is over"))
    if len(comment) > 2000:
        problems.append(FieldProblem("comment", "at most 2000 characters"))
    if problems or period_start is None or period_end is None:
        raise ValidationFailed("the review cannot be signed", errors=problems)
    flt = ReportFilter(since=period_start, until=period_end, hours_from=hours[0], hours_to=hours[1])
    listed = audit_review(ctx, trial_code, report, scope, flt)
    object_id = f"{report}/{period_start.isoformat()}/{period_end.isoformat()}"
    sites = "all" if scope.all_sites else ",".join(sorted(str(s) for s in scope.site_ids))
    content = {
        "trial": trial_code,
        "report": report,
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
        "entries": len(listed.entries),
        "sha256": listed.digest,
        "sites": sites,
    }
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=audit_trail.REVIEW_MEANING,
            object_type="audit_review",
            object_id=object_id,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=audit_trail.REVIEW_MEANING,
            object_type="audit_review",
            object_id=object_id,
            content=content,
            now=now,
        )
        row = AuditReview(
            trial_id=trial.id,
            report=report,
            period_start=flt.start,
            period_end=flt.end,
            entries=len(listed.entries),
            content_sha256=listed.digest,
            comment=comment.strip(),
            reviewed_at=now,
            reviewed_by_id=actor.user_id,
            reviewed_by_name=actor.name,
            signature_id=signed.id,
        )
        session.add(row)
        session.flush()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.AUDIT_REVIEWED,
            object_type="audit_review",
            object_id=row.id,
            new={**content, "signature": signed.id},
            reason=comment.strip() or None,
            at=now,
        )
        return PastReview(
            row.id,
            report,
            period_start,
            period_end,
            row.entries,
            row.content_sha256,
            row.comment,
            signatures.manifestation(signed),
        )


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


@dataclass(frozen=True, slots=True)
class RestrictedFlow:
    """The blinded participant flow and its per-arm counterpart."""

    blinded: ParticipantFlow
    per_arm: ParticipantFlow

    def facts(self) -> tuple[tuple[str, str], ...]:
        return self.blinded.facts()

    def tables(self) -> tuple[kitreport.Table, ...]:
        return (self.per_arm.tables()[0], self.per_arm.arm_strata_table(), *self.blinded.tables())


Report = (
    AllocationHistory
    | Enrolment
    | Balance
    | DispensingCompleteness
    | Accountability
    | UnblindingReport
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
    tables: tuple[kitreport.Table, ...]
    notice: str | None = None
    test_mode: bool = field(default=True)

    @property
    def chart(self) -> kitreport.StepChart | None:
        return self.data.chart if isinstance(self.data, Enrolment) else None

    @property
    def svg(self) -> str | None:
        """The chart as inline SVG (no script, no style attribute: fine under the CSP)."""
        chart = self.chart
        return kitreport.render_step_chart_svg(chart) if chart is not None else None

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

    def document(self) -> kitreport.ReportDocument:
        return kitreport.ReportDocument(
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
    if name == "deviations":
        return deviations(ctx, trial_code, scope, flt)
    if name == "participant-flow":
        if unblinded:
            per_arm = participant_flow_by_arm(ctx, reader, trial_code, scope, flt)
            return RestrictedFlow(participant_flow(ctx, trial_code, scope, flt), per_arm)
        return participant_flow(ctx, trial_code, scope, flt)
    return sequence_report(ctx, trial_code, restricted=unblinded)


def to_csv(view: ReportView) -> str:
    """Metadata rows ("# key", value), summary rows ("# summary", key, value), then each table as a
    "# section" row, its header and its rows. Every cell is neutralised against formula injection."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def row(cells: Iterable[str]) -> None:
        writer.writerow([audit_trail.neutralise_cell(c) for c in cells])

    for key, value in view.metadata():
        row((f"# {key.lower()}", value))
    for key, value in view.facts:
        row(("# summary", key, value))
    for table in view.tables:
        row(("# section", table.title))
        row(table.columns)
        for cells in table.rows:
            row(cells)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    mimetype: str
    body: bytes
    rows: int


def export(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    fmt: str,
    *,
    version: str = "blinded",
) -> Export:
    """A report as CSV or PDF, and its `report.exported` audit entry (report, version, format,
    filters, row count, SHA-256 of the file)."""
    if fmt not in ("csv", "pdf"):
        raise ValidationFailed("unknown format", errors=[FieldProblem("format", "csv or pdf")])
    view = build(ctx, actor, trial_code, name, flt, scope, version=version)
    if fmt == "csv":
        body, mimetype = to_csv(view).encode("utf-8"), "text/csv"
    else:
        body, mimetype = kitreport.render_report_pdf(view.document()), "application/pdf"
    counted = {"rows": view.rows, "sha256": hashlib.sha256(body).hexdigest()}
    # The row count of a restricted export would tell blinded readers of the audit trail how many
    # pharmacovigilance unblindings there are (UNB-08): it is sealed, like every unblinded value.
    restricted = view.version in ("restricted", "safety")
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial_code,
            action=Action.REPORT_EXPORTED,
            object_type="report",
            object_id=f"{view.version}:{name}"[:64],
            site_code=flt.site,
            new={
                "report": name,
                "version": view.version,
                "format": fmt,
                "filters": flt.query_args(),
                **({} if restricted else counted),
            },
            sealed=counted if restricted else None,
            at=ctx.now(),
        )
    return Export(f"{view.file_stem}.{fmt}", mimetype, body, view.rows)
