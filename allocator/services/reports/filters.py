"""The report filter, the scoped frame every report reads,
and the cell formatting they share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, select

import kits as kitlib
from allocator.models import Registration, ScreeningEntry, Site, Subject
from allocator.notices import N_
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services import periods, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.trialdef import TrialDefinition
from allocator.wording import ENGLISH, Words
from kits.pdf import utc_text

ALL_SITES = N_("All sites")  # the total row or series of a report, translated where shown
# Codes recorded by the services that report cells show as words (`Words.word`), for the catalogue:
# unblinding kinds and channels, list modes.
CELL_WORDS = (
    N_("emergency"),
    N_("pharmacovigilance"),
    N_("accidental"),
    N_("offline"),
    N_("reported"),
    N_("test"),
    N_("production"),
)
WORKDAY = (8, 20)  # default working hours, site local time (AUD-09 "outside working hours")
_SITE = re.compile(r"^[A-Za-z0-9-]{1,10}$")


def time_text(moment: datetime | None) -> str:
    return utc_text(moment) if moment is not None else ""


def signature_text(signed: signatures.Manifestation | None, _: Words) -> str:
    """An electronic signature's manifestation (ACC-12) in the reader's words."""
    if signed is None:
        return ""
    return _(
        "Signed electronically by %(name)s (%(username)s) on %(when)s, meaning: %(meaning)s "
        "[signature #%(number)s]",
        name=signed.printed_name,
        username=signed.username,
        when=_.utc(signed.signed_at),
        meaning=_(signed.meaning),
        number=signed.signature_id,
    )


def audit_time(at: str) -> datetime:
    """An audit entry's time (ISO 8601 UTC text, AUD-07) as an aware datetime."""
    if len(at) == 27 and at[-1] == "Z":  # as recorded, "2026-12-05T12:09:30.123456Z": parsed in C
        return datetime.fromisoformat(at[:-1]).replace(tzinfo=UTC)
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def kit_text(number: str) -> str:
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
        since, until = (periods.period_date(args, key, problems) for key in ("since", "until"))
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
            elif raw.isascii() and raw.isdigit() and len(raw) <= 4 and int(raw) <= 24:  # not "²" (D5)
                hours[key] = int(raw)  # "008" is 8, as "08" is
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

    def describe(self, _: Words = ENGLISH, *, with_period: bool = True) -> str:
        """The filter in the reader's words: the site, then (`with_period`) the period."""
        site = _("site %(site)s", site=self.site) if self.site else _("every site within the reader's reach")
        if not with_period:
            return site
        if self.since or self.until:
            period = _(
                "%(start)s to %(end)s (UTC dates, inclusive)",
                start=_.day(self.since) if self.since else _("start"),
                end=_.day(self.until) if self.until else _("today"),
            )
        else:
            period = _("whole trial")
        # A catalogue text: French puts a space before the semicolon.
        return _("%(site)s; %(period)s", site=site, period=period)


@dataclass(frozen=True, slots=True)
class Frame:
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


def scoped_frame(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Frame:
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
        return Frame(trial.id, trial.code, definition, sites, narrowed, flt)


def strata_text(values: Mapping[str, object]) -> str:
    """Stratification values without the site (it has its own column)."""
    return "; ".join(f"{k}={v}" for k, v in values.items() if k != "site")


def frame_subjects(frame: Frame, *columns: Any) -> Select[Any]:
    """The subjects of the frame (its trial, the reader's sites narrowed to the filter's, randomized
    in the period), narrowed in SQL (issue 21): `select(Subject)`, or of `columns` when given."""
    query = select(*columns) if columns else select(Subject)
    query = query.where(Subject.trial_id == frame.trial_id)
    if not frame.scope.all_sites:
        query = query.where(Subject.site_id.in_(sorted(frame.scope.site_ids)))
    if frame.flt.start is not None:
        query = query.where(Subject.randomized_at >= frame.flt.start)
    if frame.flt.end is not None:
        query = query.where(Subject.randomized_at < frame.flt.end)
    return query


@dataclass(frozen=True, slots=True)
class Screened:
    """A patient screened within the frame: the latest check of its screening number at its site."""

    entry_id: int
    site: str
    screening_number: str
    screened_at: datetime
    eligible: bool
    failed: tuple[str, ...]  # the failed criterion ids, as recorded (sampling.<label> for a schedule)
    registered_as: str | None  # an observational study's subject number, when registered


def latest_screenings(ctx: ServiceContext, frame: Frame) -> list[Screened]:
    """Each patient screened in reach and period, in screening order: one per screening number at a
    site, its latest check (earlier checks with corrected answers are history, kept in the
    screening log, not counted again). One query, columns only: a trial screens thousands (issue
    21). The participant flows of both kinds of study count from it."""
    with ctx.db.reading() as session:
        latest: dict[tuple[int, str], Any] = {}
        for e in session.execute(
            select(
                ScreeningEntry.id,
                ScreeningEntry.site_id,
                ScreeningEntry.screening_number,
                ScreeningEntry.eligible,
                ScreeningEntry.failures,
                ScreeningEntry.screened_at,
                Registration.subject_number,
            )
            .outerjoin(Registration, Registration.screening_entry_id == ScreeningEntry.id)
            .where(ScreeningEntry.trial_id == frame.trial_id)
            .order_by(ScreeningEntry.id)
        ).all():
            latest[(e.site_id, e.screening_number)] = e
        return [
            Screened(
                e.id,
                frame.sites[e.site_id],
                e.screening_number,
                e.screened_at,
                e.eligible,
                tuple(str(f.get("criterion", "")) for f in e.failures),
                e.subject_number,
            )
            for e in sorted(latest.values(), key=lambda entry: entry.id)
            if frame.visible(e.site_id) and frame.flt.in_period(e.screened_at)
        ]


# --- the rows a page shows (issue 21) --------------------------------------------------------------

PAGE_ROWS = 200  # rows of a long table on a report page; the CSV and the PDF hold every row
_MAX_OFFSET = 10**9


@dataclass(frozen=True, slots=True)
class Window:
    """The rows of each long table a report page shows: `size` rows from row `start` (0-based).
    A report that can read only those rows (the allocation history, dispensing completeness) does;
    the others are cut after they are built, so that a page never grows with the trial."""

    start: int = 0
    size: int = PAGE_ROWS

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> Window:
        """From the query string's `offset`; raises ValidationFailed naming it."""
        raw = (args.get("offset") or "").strip()
        if not raw:
            return cls(0, PAGE_ROWS)
        if raw.isascii() and raw.isdigit() and len(raw) <= len(str(_MAX_OFFSET)) and int(raw) <= _MAX_OFFSET:
            return cls(int(raw), PAGE_ROWS)
        raise ValidationFailed(
            "invalid offset", errors=[FieldProblem("offset", "must be a whole number from 0")]
        )

    def counted(self, total: int) -> int | None:
        """The count of every row of a table read as this window, shown beside its rows with the
        links to the rows before and after; None when the window holds the whole table from its
        first row, which is then shown whole, as `cut` shows a short table (an empty history said
        "No rows from row 1; the table has 0" above "No entries")."""
        return None if self.start == 0 and total <= self.size else total

    def cut(self, table: monitoring_reports.Table) -> monitoring_reports.Table:
        """The table's rows in the window. A short table (one window or less: the per-site totals)
        is shown whole on every page; a table already read as a window stays as it is."""
        entries = len(table.rows) - table.totals
        if table.total is not None or entries <= self.size:
            return table
        # A table's total rows (the "All sites" row) follow every window of its entries.
        return replace(
            table,
            rows=(*table.rows[self.start : min(self.start + self.size, entries)], *table.rows[entries:]),
            start=self.start,
            total=entries,
        )
