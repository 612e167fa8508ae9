"""Audit review report (AUD-09) and its signed
reviews."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    TIMESTAMP,
    BigInteger,
    ColumnElement,
    Connection,
    Numeric,
    Subquery,
    and_,
    case,
    cast,
    extract,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB

from allocator import audit_labels, service_messages
from allocator.audit import SYSTEM_CHAIN, Action, Actor, format_time
from allocator.models import AuditEvent, AuditReview, RoleAssignment, Signature, User
from allocator.notices import N_
from allocator.permissions import Role, Scope
from allocator.printing import monitoring_reports
from allocator.services import audit_trail, signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import get_trial, trial_definition
from allocator.services.reports.filters import (
    WORKDAY,
    Frame,
    ReportFilter,
    Window,
    audit_time,
    scoped_frame,
    signature_text,
    time_text,
)
from allocator.trialdef import TrialDefinition
from allocator.wording import Words

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
            N_("Unblindings"),
            N_(
                "Emergency unblindings (online and offline) and when their result was shown, refusals, rate "
                "alerts, accidental reports, code-break sheets and trial state changes."
            ),
            (
                A.UNBLINDING_EMERGENCY,
                A.UNBLINDING_RESULT_SHOWN,
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
            N_("Accesses to the arm"),
            N_("Every audited read of an arm: who, when and for what purpose; never the arm."),
            (A.ARM_READ,),
        ),
        ReviewKind(
            "sign-ins",
            N_("Failed sign-ins, lockouts and refused signatures"),
            N_(
                "Failed sign-ins and lockouts of the trial's users, refused electronic signatures and refused "
                "permissions in the trial."
            ),
            (A.SIGNATURE_FAILED, A.PERMISSION_DENIED),
            (A.LOGIN_FAILED, A.LOCKED_OUT),
        ),
        ReviewKind(
            "off-hours",
            N_("Actions outside working hours"),
            N_(
                "Every entry recorded before or after the working hours, or on a Saturday or Sunday, in the "
                "trial's time zone."
            ),
            None,
        ),
        ReviewKind(
            "reprints",
            N_("Reprints"),
            N_("Every reprinted document (marked DUPLICATA)."),
            (A.DOCUMENT_PRINTED,),
        ),
        ReviewKind(
            "corrections",
            N_("Manual corrections"),
            N_(
                "Randomizations flagged in error, stratum corrections, manual kit status changes and batch "
                "expiry changes."
            ),
            (
                A.SUBJECT_FLAGGED_IN_ERROR,
                A.SUBJECT_STRATUM_CORRECTED,
                A.KIT_STATUS_CHANGED,
                A.BATCH_EXPIRY_CHANGED,
            ),
        ),
        ReviewKind(
            "mis-stratifications",
            N_("Mis-stratifications"),
            N_("Stratum corrections recorded beside the values used at randomization."),
            (A.SUBJECT_STRATUM_CORRECTED,),
        ),
        ReviewKind(
            "kit-replacements",
            N_("Kit replacements"),
            N_("Lost, damaged or expired kits replaced."),
            (A.KIT_REPLACED,),
        ),
        ReviewKind(
            "withdrawals",
            N_("Withdrawals"),
            N_(
                "Subjects withdrawn (treatment discontinued, consent withdrawn, lost to follow-up), each signed."
            ),
            (A.SUBJECT_WITHDRAWN,),
        ),
        ReviewKind(
            "role-changes",
            N_("Role changes"),
            N_("Roles granted and revoked in the trial."),
            (A.ROLE_GRANTED, A.ROLE_REVOKED),
        ),
    )
}
# The reviews that apply to an observational study (issue 20): no arm, list, kit or unblinding.
COHORT_REVIEW_KINDS = ("sign-ins", "off-hours", "reprints", "role-changes")


def review_kinds_for(definition: TrialDefinition) -> tuple[str, ...]:
    """The audit-trail review reports of a study."""
    return COHORT_REVIEW_KINDS if definition.observational else tuple(REVIEW_KINDS)


_REVIEW_COLUMNS = (  # the digest's column names: stable, whatever the reader's language
    N_("Entry"),
    N_("At (UTC)"),
    N_("Local time"),
    N_("Who"),
    N_("Username"),
    N_("Role"),
    N_("Site"),
    N_("Action"),
    N_("Object"),
    N_("Details"),
)


@dataclass(slots=True)  # not frozen, like EntryView: built for every entry of a review (issue 21)
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
    # What the page shows in the reader's words (the cells above are what the digest covers).
    source: audit_trail.EntryView | None = field(default=None, compare=False)
    # In the trial's time zone, to the minute (the first entry of its minute's, issue 21): what the
    # local time cells show.
    moment: datetime | None = field(default=None, compare=False)
    # The recorded UTC hour ("2026-12-05T12") when every minute of it has the same local date,
    # offset and zone abbreviation (`_hour`): its local time is then worded once per hour.
    hour: str | None = field(default=None, compare=False)

    def shown(self, _: Words, known: _Known | None = None) -> tuple[str, ...]:
        """The entry in the reader's words: times in their language, the action's label, the
        object's type and the recorded values as words ("key: value"), never JSON. `known` keeps
        the words already found for the other rows of the table."""
        entry, moment = self.source, self.moment
        if entry is None or moment is None:
            return self.cells()
        known = _Known(_) if known is None else known
        return (
            self.entry,
            known.utc(entry.at),
            known.local(moment) if self.hour is None else known.in_hour(self.hour, moment),
            self.who,
            self.username,
            known.role(self.role),
            self.site,
            known.action(self.action),
            f"{known.object_type(entry.object_type)} {entry.object_id}",
            details_text(entry, _, known),
        )

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
    # A page's window (issue 21), when the page does not hold every entry: `entries` are the window's
    # alone and `total` counts every entry listed; there is then no SHA-256 (the CSV, the PDF and
    # the signature cover every entry).
    window: Window | None = None
    total: int | None = None

    @property
    def count(self) -> int:
        """The number of entries listed (not only the window's)."""
        return len(self.entries) if self.total is None else self.total

    @property
    def rows(self) -> tuple[tuple[str, ...], ...]:
        return tuple(e.cells() for e in self.entries)

    @property
    def digest(self) -> str | None:
        """SHA-256 of what the reviewer is shown (and signs): the report name, columns and rows.
        None for a page's window of a longer list."""
        return None if self.total is not None else self.sha256()

    def sha256(self) -> str:
        """`digest` of the entries held (every entry listed, when read without a window)."""
        raw = json.dumps(
            {"report": self.kind.name, "columns": _REVIEW_COLUMNS, "rows": self.rows},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        digest = self.digest
        out = [
            (_("Review report"), f"{_(self.kind.title)}{_(': ')}{_(self.kind.description)}"),
            (_("Entries listed"), _.n(self.count)),
            (
                _("SHA-256 of the listed entries"),
                digest
                if digest is not None
                else _("in the CSV and the PDF, which hold every entry, and recorded with the signature"),
            ),
        ]
        if self.kind.name == "off-hours":
            start, end = (f"{hour:02d}" for hour in self.hours)
            out.append(
                (
                    _("Working hours"),
                    _(
                        "%(start)s:00 to %(end)s:00, Monday to Friday (%(zone)s)",
                        start=start,
                        end=end,
                        zone=self.timezone,
                    ),
                )
            )
        return tuple(out)

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        window = self.window if self.total is not None else None
        known = _Known(_)  # words already found, for every row (issue 21)
        return (
            monitoring_reports.Table(
                _(self.kind.title),
                tuple(_(column) for column in _REVIEW_COLUMNS),
                tuple(e.shown(_, known) for e in self.entries),
                _(
                    "Clear values only: sealed values are never shown. The SHA-256 covers the entries as "
                    "recorded (codes and values), whatever the language they are read in."
                ),
                total=self.total,
                start=window.start if window is not None else 0,
            ),
            monitoring_reports.Table(
                _("Signed reviews of this report"),
                (_("Period"), _("Entries"), _("SHA-256"), _("Findings"), _("Signature")),
                tuple(
                    (
                        _("%(start)s to %(end)s", start=_.day(p.period_start), end=_.day(p.period_end)),
                        _.n(p.entries),
                        p.content_sha256,
                        p.comment,
                        signature_text(p.signature, _),
                    )
                    for p in self.past
                ),
            ),
        )


# The action codes `_pharmacovigilance` compares with.
_UNBLINDING_PV = Action.UNBLINDING_PV.value
_RESULT_SHOWN = Action.UNBLINDING_RESULT_SHOWN.value
_ARM_READ = Action.ARM_READ.value
_SIGNATURES = (Action.SIGNATURE_APPLIED.value, Action.SIGNATURE_FAILED.value)


# The form the service records times in (audit.format_time): "2026-12-05T12:09:30.123456Z".
_RECORDED_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")


def _utc_cell(recorded: str, at: datetime) -> str:
    """`time_text(at)` of an entry recorded at `recorded`: the recorded text's own date and time when it
    is in the form the service writes, with no formatting; any other form (an imported entry) is
    formatted from `at`, as it always was."""
    if _RECORDED_TIME.fullmatch(recorded):
        return f"{recorded[:10]} {recorded[11:19]} UTC"
    return time_text(at)


def _minute(at: datetime, zone: ZoneInfo, flt: ReportFilter) -> tuple[datetime, bool, str]:
    """A recorded moment in the trial's zone, whether it falls within the working hours (Monday to
    Friday), and the review's local time cell for it."""
    moment = at.astimezone(zone)
    working = moment.weekday() < 5 and flt.hours_from <= moment.hour < flt.hours_to
    return moment, working, moment.strftime("%a %Y-%m-%d %H:%M %Z")


def _hour(utc_hour: str, zone: ZoneInfo, flt: ReportFilter) -> tuple[datetime, bool, str, str] | None:
    """For a recorded hour ("2026-12-05T12", UTC) whose every minute is in the trial's zone at the
    same whole-hour offset and abbreviation (most zones, most hours): its start there, whether it
    is within the working hours, and the local time cell's text before and after the minutes
    (`_minute`'s, for any minute of the hour). None for an hour `_minute` must judge minute by minute (an offset
    with minutes, India's or Nepal's, or a change of offset within the hour)."""
    start = datetime.fromisoformat(f"{utc_hour}:00:00+00:00").astimezone(zone)
    offset = start.utcoffset()
    last = datetime.fromisoformat(f"{utc_hour}:59:59.999999+00:00").astimezone(zone)
    if (
        offset is None
        or offset != last.utcoffset()
        or offset.total_seconds() % 3600
        or start.tzname() != last.tzname()
    ):
        return None
    working = start.weekday() < 5 and flt.hours_from <= start.hour < flt.hours_to
    return start, working, start.strftime("%a %Y-%m-%d %H:"), start.strftime(" %Z")


# What `json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)` writes, without
# building an encoder for every entry (issue 21).
_DETAILS_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


def _details(entry: audit_trail.EntryView) -> str:
    """An entry's recorded values as the digest covers them: the text of past signed reviews, so
    never to be changed."""
    parts = []
    if entry.old:
        parts.append("before " + _DETAILS_JSON.encode(entry.old))
    if entry.new:
        parts.append(_DETAILS_JSON.encode(entry.new))
    if entry.reason:
        parts.append(f"reason: {entry.reason}")
    return "; ".join(parts)


class _Known:
    """Words already found while a table is put in words (issue 21: a review of 20,000 entries words
    the same few hundred keys, roles, actions and codes again and again): per key, per recorded
    text (up to `LIMIT` of them: numbers and names are mostly seen once), per action, per object
    type."""

    LIMIT = 10_000
    __slots__ = (
        "_",
        "actions",
        "colon",
        "days",
        "hours",
        "keys",
        "locals",
        "objects",
        "reasons",
        "roles",
        "texts",
    )

    def __init__(self, _: Words) -> None:
        self._ = _
        self.colon = _(": ")
        self.keys: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.actions: dict[str, str] = {}
        self.objects: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.days: dict[str, date] = {}
        self.locals: dict[tuple[datetime, int], str] = {}
        self.hours: dict[str, tuple[str, str] | None] = {}

    def utc(self, at: str) -> str:
        """`Words.utc` of an entry's recorded time, read from its text when it is in the form the
        service writes (no datetime built and formatted for each entry)."""
        if _RECORDED_TIME.fullmatch(at) is None:
            return self._.utc(audit_time(at))
        day = self.days.get(at[:10])
        if day is None:
            day = self.days[at[:10]] = date.fromisoformat(at[:10])
        return self._.utc_of(day, at[11:19])

    def local(self, moment: datetime) -> str:
        """`Words.local`, once per minute of the table. Keyed with the fold: the two moments of the
        hour repeated when summer time ends are equal as local times, but not the same time."""
        key = (moment, moment.fold)
        shown = self.locals.get(key)
        if shown is None:
            shown = self._.local(moment)
            if len(self.locals) < self.LIMIT:
                self.locals[key] = shown
        return shown

    def in_hour(self, hour: str, moment: datetime) -> str:
        """`local` of a moment of the recorded UTC `hour`, one whose every minute has the same local
        date, offset and zone abbreviation: the words around the minutes found once per hour (the
        entries of a trial are spread over every hour, rarely two in a minute)."""
        around = self.hours.get(hour)
        if around is None:
            if hour in self.hours:  # a pattern `local_around_minutes` cannot split
                return self.local(moment)
            around = self.hours[hour] = self._.local_around_minutes(moment)
            if around is None:
                return self.local(moment)
        return f"{around[0]}{moment.minute:02d}{around[1]}"

    def text(self, text: str) -> str:
        """A recorded text in words: a role's title, a code the catalogue knows, else as recorded."""
        shown = self.texts.get(text)
        if shown is None:
            # `Words.role` gives a non-role the catalogue's word (or the code with spaces); a
            # recorded text keeps its underscores unless the catalogue has a word for it.
            # An empty text stays empty (gettext("") is the catalogue's header).
            shown = self._.role(text) if text in _ROLE_CODES else self._.gettext(text) if text else ""
            if len(self.texts) < self.LIMIT:
                self.texts[text] = shown
        return shown

    def reason(self, text: str) -> str:
        """A recorded reason: one the service wrote itself in the reader's words, one a person typed
        as typed."""
        shown = self.reasons.get(text)
        if shown is None:
            shown = service_messages.translate(text, {}, self._.gettext, self._.word) or text
            if len(self.reasons) < self.LIMIT:
                self.reasons[text] = shown
        return shown

    def key(self, key: str) -> str:
        label = self.keys.get(key)
        if label is None:
            label = self.keys[key] = f"{audit_labels.key_label(key, self._.gettext)}{self.colon}"
        return label

    def action(self, code: str) -> str:
        label = self.actions.get(code)
        if label is None:
            label = self.actions[code] = audit_labels.action_label(code, self._.gettext)
        return label

    def object_type(self, object_type: str) -> str:
        label = self.objects.get(object_type)
        if label is None:
            label = self.objects[object_type] = audit_labels.key_label(object_type, self._.gettext)
        return label

    def role(self, code: str) -> str:
        title = self.roles.get(code)
        if title is None:
            title = self.roles[code] = self._.role(code)
        return title

    def value(self, value: object) -> str:
        """A recorded value in words: yes/no, lists joined, nested values as "key: value", a role or
        a status code in words; any other text as recorded. Values read from JSON are of its six
        types exactly, tried in the order they are met most."""
        kind = value.__class__
        if kind is str:
            return self.texts.get(value) or self.text(value)  # type: ignore[call-overload, arg-type]
        if kind is dict:
            return self._mapping(value)  # type: ignore[arg-type]
        if kind is list or kind is tuple:
            return ", ".join([self.value(item) for item in value]) or "—"  # type: ignore[attr-defined]
        if value is None:
            return "—"
        if kind is bool:
            return self._.yes_no(value)  # type: ignore[arg-type]
        if isinstance(value, Mapping):
            return self._mapping(value)
        if isinstance(value, list | tuple):
            return ", ".join([self.value(item) for item in value]) or "—"
        return self.text(str(value))

    def _mapping(self, values: Mapping[Any, object]) -> str:
        keys, texts = self.keys, self.texts
        parts = []
        for k, v in values.items():
            label = keys.get(k) if k.__class__ is str else None
            if label is None:
                label = self.key(str(k))
            if v.__class__ is str:
                parts.append(label + (texts.get(v) or self.text(v)))
            else:
                parts.append(label + self.value(v))
        return "; ".join(parts)


_ROLE_CODES = frozenset(role.value for role in Role)


def _value_text(value: object, _: Words, known: _Known | None = None) -> str:
    """A recorded value in words (`_Known.value`)."""
    return (known if known is not None else _Known(_)).value(value)


def details_text(entry: audit_trail.EntryView, _: Words, known: _Known | None = None) -> str:
    """An entry's recorded values (before, after, reason) as "key: value" words, never JSON."""
    known = _Known(_) if known is None else known
    parts = []
    if entry.old:
        parts.append(f"{_('before')}{known.colon}{known.value(entry.old)}")
    if entry.new:
        parts.append(known.value(entry.new))
    if entry.reason:
        parts.append(f"{_('reason')}{known.colon}{known.reason(entry.reason)}")
    return " | ".join(parts)


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
    ctx: ServiceContext,
    trial_code: str,
    report: str,
    scope: Scope,
    flt: ReportFilter,
    window: Window | None = None,
) -> AuditReviewReport:
    """One review report for the period (AUD-09): the matching audit entries within reach, blinded
    (clear values only, pharmacovigilance unblindings left out, UNB-08), and the signed reviews.

    The database chooses the entries (`_listed`: the actions, the period, the reader's sites, the
    filter's site, the working hours in the trial's zone, pharmacovigilance, reprints), so that a
    page (`window`) counts them there and reads only its window's rows (issue 21). Without a window
    (the CSV, the PDF, the signature), every entry listed is read and the SHA-256 covers them all;
    a page whose window does not hold every entry has no SHA-256 (`digest` is None)."""
    kind = REVIEW_KINDS.get(report)
    if kind is None:
        raise NotFound(
            f"no review report {report!r}",
            errors=[FieldProblem("report", f"one of {', '.join(REVIEW_KINDS)}")],
        )
    frame = scoped_frame(ctx, trial_code, scope, flt)
    zone = ZoneInfo(frame.definition.timezone)
    usernames = _trial_usernames(ctx, frame.trial_id, frame.scope) if kind.system_actions else None
    with ctx.db.reading() as session:
        connection = session.connection()
        listed = _listed(connection, kind, frame, flt, zone, usernames)
        order = (listed.c.at, listed.c.chain, listed.c.seq)
        in_order = select(listed).order_by(*order)
        total = None
        if window is not None:
            # The window's entries, with the count of every entry: only their keys are sorted.
            keys = connection.execute(
                select(listed.c.chain, listed.c.seq, func.count().over())
                .order_by(*order)
                .offset(window.start)
                .limit(window.size)
            ).all()
            total = (
                int(keys[0][2])
                if keys
                else connection.execute(select(func.count()).select_from(listed)).scalar_one()
            )
            if total <= window.size:
                total = None  # a short table is shown whole (Window.cut), with its SHA-256
            else:
                chains: dict[str, list[int]] = {}
                for chain, seq, _count in keys:
                    chains.setdefault(chain, []).append(seq)
                in_order = in_order.where(
                    or_(
                        false(),
                        *(and_(listed.c.chain == c, listed.c.seq.in_(seqs)) for c, seqs in chains.items()),
                    )
                )
        rows = list(connection.execute(in_order).all())
    today = ctx.now().astimezone(UTC).date()
    return AuditReviewReport(
        kind,
        frame.definition.timezone,
        (flt.hours_from, flt.hours_to),
        tuple(_entries(rows, zone, flt)),
        tuple(reviews(ctx, frame.code, report=kind.name)),
        (today.replace(day=1), today),
        window if total is not None else None,
        total,
    )


def _entries(rows: list[Any], zone: ZoneInfo, flt: ReportFilter) -> list[ReviewEntry]:
    """The review's entries of the rows `_listed` chose, in its order, each with its time cells."""
    at_ = audit_trail.AT
    out = []
    # Per minute of recorded time (issue 21: a trial's entries come in bursts, a randomization's or a
    # dispensing's in the same minute): the moment in the trial's zone and the local time cell.
    minutes: dict[str, tuple[datetime, bool, str]] = {}
    # And first per hour, where every minute of it has the same whole-hour offset (`_hour`): the
    # entries of a trial are spread over every hour, rarely two in a minute (issue 21: 23,868
    # look-ups of the zone for 27,797 entries when cached per minute).
    hours: dict[str, tuple[datetime, bool, str, str] | None] = {}
    view, brief = audit_trail.view, audit_trail.BRIEF
    same: dict[Any, Any] = {}  # the texts the entries repeat, kept once (audit_trail.view)
    rows.reverse()
    while rows:
        row = rows.pop()  # each row let go once read (issue 21: a review's peak memory)
        recorded = row[at_]
        if _RECORDED_TIME.fullmatch(recorded) is not None:
            key = recorded[:13]
            hour = hours[key] if key in hours else hours.setdefault(key, _hour(key, zone, flt))
            if hour is not None:
                start, _working, before, after = hour
                moment = start.replace(minute=int(recorded[14:16]))
                local_cell = f"{before}{recorded[14:16]}{after}"
                uniform: str | None = key
            else:
                uniform = None
                minute = minutes.get(recorded[:16])
                if minute is None:
                    minute = minutes[recorded[:16]] = _minute(datetime.fromisoformat(recorded), zone, flt)
                moment, _working, local_cell = minute
            utc_cell = f"{recorded[:10]} {recorded[11:19]} UTC"  # _utc_cell, with no datetime
        else:  # an imported entry's time, in another form
            at = audit_time(recorded)
            moment, _working, local_cell = _minute(at, zone, flt)
            utc_cell = _utc_cell(recorded, at)
            uniform = None
        entry = view(row, brief, same)
        out.append(
            ReviewEntry(
                f"{entry.chain}:{entry.seq}",
                utc_cell,
                local_cell,
                entry.actor_name,
                entry.actor_username,
                entry.actor_role,
                entry.site_code or "",
                entry.action,
                f"{entry.object_type} {entry.object_id}",
                _details(entry),
                entry,
                moment,
                uniform,
            )
        )
    return out


# --- the entries a review lists, chosen in the database (issue 21) ---------------------------------

_EVENT = AuditEvent.__table__.c


def _listed(
    connection: Connection,
    kind: ReviewKind,
    frame: Frame,
    flt: ReportFilter,
    zone: ZoneInfo,
    usernames: set[str] | None,
) -> Subquery:
    """The entries a review lists, as a subquery of `audit_trail.entry_select`'s brief columns: the
    trial's entries of the kind's actions in the period and within the reader's reach, and for the
    sign-in review the instance's entries of the trial's users; never an audit checkpoint or an
    entry that would tell of a pharmacovigilance unblinding (UNB-08); of the filter's site (and
    the trial-level entries) when it names one; reprinted documents only for the reprints review;
    outside the working hours in the trial's zone for the off-hours review."""
    dialect = connection.dialect.name
    chains = [
        audit_trail.entry_select(
            frame.code,
            actions=kind.actions,
            since=flt.start,
            until=flt.end,
            scope=frame.scope,
            site_codes=frame.sites,
            brief=True,
        )
    ]
    if kind.system_actions:
        chains.append(
            audit_trail.entry_select(
                SYSTEM_CHAIN,
                actions=kind.system_actions,
                since=flt.start,
                until=flt.end,
                scope=None,
                site_codes={},
                usernames=usernames or (),
                brief=True,
            )
        )
    kept = [_CHECKPOINT_LEFT_OUT, not_(_pharmacovigilance(dialect))]
    if flt.site is not None:
        kept.append(or_(_EVENT.site_code.is_(None), _EVENT.site_code == flt.site))
    if kind.name == "reprints":
        kept.append(_truthy(dialect, "reprint"))
    if kind.name == "off-hours":
        kept.append(not_(_working(connection, frame.code, flt, zone)))
    chosen = [query.where(*kept) for query in chains]
    return (chosen[0] if len(chosen) == 1 else union_all(*chosen)).subquery("listed")


_CHECKPOINT_LEFT_OUT = _EVENT.action != Action.AUDIT_CHECKPOINT.value


def _json_text(dialect: str, key: str) -> ColumnElement[Any]:
    """The recorded value `key` of an entry's new values: its text on PostgreSQL, its SQL value on
    SQLite; NULL when absent."""
    if dialect == "postgresql":
        return func.json_extract_path_text(cast(_EVENT.new_values, JSON), key)
    return func.json_extract(_EVENT.new_values, f"$.{key}")


def _when(action: ColumnElement[bool], dialect: str, key: str, value: str) -> ColumnElement[bool]:
    """The entry is of `action` and its recorded `key` is the text `value` (never NULL). Only an
    entry of `action` whose recorded text holds `value` (a word of plain letters, written as such
    in JSON) is parsed: a trial's thousands of arm reads are not."""
    holds = and_(action, _EVENT.new_values.contains(value, autoescape=True))
    return case((holds, func.coalesce(_json_text(dialect, key), "")), else_="") == value


def _pharmacovigilance(dialect: str) -> ColumnElement[bool]:
    """UNB-08: entries that would tell trial staff that a pharmacovigilance unblinding happened: the
    unblinding itself, its result shown, the arm read for it and the signatures with its meaning."""
    action = _EVENT.action
    return or_(
        action == _UNBLINDING_PV,
        _when(action == _RESULT_SHOWN, dialect, "kind", "pharmacovigilance"),
        _when(action == _ARM_READ, dialect, "purpose", unblinding.PV_MEANING),
        _when(action.in_(_SIGNATURES), dialect, "meaning", unblinding.PV_MEANING),
    )


def _truthy(dialect: str, key: str) -> ColumnElement[bool]:
    """The recorded value `key` is true as Python tells it: a number other than zero, true, a text,
    a list or a mapping that is not empty (a reprint number other than 0)."""
    if dialect == "postgresql":
        value = cast(_EVENT.new_values, JSONB)[key]
        kind = func.jsonb_typeof(value)
        return case(
            (kind == "number", cast(value.astext, Numeric) != 0),
            (kind == "boolean", value.astext == "true"),
            (kind == "string", value.astext != ""),
            (kind == "array", func.jsonb_array_length(value) > 0),
            (kind == "object", value.astext != "{}"),
            else_=false(),
        )
    path = f"$.{key}"
    kind = func.json_type(_EVENT.new_values, path)
    value = func.json_extract(_EVENT.new_values, path)
    return case(
        (kind.in_(("integer", "real")), value != 0),
        (kind == "true", true()),
        (kind == "text", value != ""),
        (kind == "array", func.json_array_length(_EVENT.new_values, path) > 0),
        (kind == "object", value != "{}"),
        else_=false(),
    )


def _working(connection: Connection, chain: str, flt: ReportFilter, zone: ZoneInfo) -> ColumnElement[bool]:
    """Whether an entry was recorded within the working hours, Monday to Friday, in the trial's
    zone, worked out in the database: its recorded UTC second plus the zone's offset at that time
    (`_offsets`: the offsets between the first and the last entry of the period, each from the
    moment it took effect), then the day of the week and the hour of that local second."""
    period = [_EVENT.chain == chain]
    if flt.start is not None:
        period.append(_EVENT.at >= format_time(flt.start))
    if flt.end is not None:
        period.append(_EVENT.at < format_time(flt.end))
    first, last = connection.execute(select(func.min(_EVENT.at), func.max(_EVENT.at)).where(*period)).one()
    if first is None:
        return true()  # no entry: nothing to tell
    offsets = _offsets(zone, audit_time(first), audit_time(last) + timedelta(days=1))
    seconds = _utc_seconds(connection.dialect.name)
    offset: ColumnElement[Any] = literal(offsets[-1][1], BigInteger)
    if len(offsets) > 1:
        # Before the n-th change, the offset before it; after the last, the last.
        offset = case(
            *(
                (_EVENT.at < boundary, literal(before, BigInteger))
                for (_, before), (boundary, _) in itertools.pairwise(offsets)
            ),
            else_=literal(offsets[-1][1], BigInteger),
        )
    # The hour of the week of the local second, from Monday 00:00 (1 January 1970 was a Thursday:
    # 72 hours after a Monday's start), worked out once per entry and looked up among the working
    # hours of the week.
    hour_of_week = ((seconds + offset) // 3600 + 72) % 168
    working = [day * 24 + hour for day in range(5) for hour in range(flt.hours_from, flt.hours_to)]
    return hour_of_week.in_(working) if working else false()


def _utc_seconds(dialect: str) -> ColumnElement[Any]:
    """An entry's recorded time to the second, as seconds since 1970 (UTC)."""
    second = func.substr(_EVENT.at, 1, 19)  # "2026-12-05T12:09:30"
    if dialect == "postgresql":
        return cast(extract("epoch", cast(second, TIMESTAMP)), BigInteger)
    return cast(func.strftime("%s", second), BigInteger)


def _offsets(zone: ZoneInfo, first: datetime, last: datetime) -> list[tuple[str | None, int]]:
    """The zone's offsets from UTC, in seconds, between `first` and `last`: the first one's, then
    each change with the UTC second it takes effect from, as recorded times begin
    ("2026-03-29T01:00:00"). Looked for day by day, each change then found to the second (no zone
    changes its offset twice in a day)."""

    def offset(second: int) -> int:
        shift = datetime.fromtimestamp(second, UTC).astimezone(zone).utcoffset()
        return int(shift.total_seconds()) if shift is not None else 0

    lo, hi = int(first.timestamp()), int(last.timestamp())
    current = offset(lo)
    found: list[tuple[str | None, int]] = [(None, current)]
    day = lo
    while day < hi:
        step = min(day + 86400, hi)
        if offset(step) != current:
            before, after = day, step  # the change is in (before, after]
            while after - before > 1:
                middle = (before + after) // 2
                if offset(middle) == current:
                    before = middle
                else:
                    after = middle
            current = offset(after)
            found.append((datetime.fromtimestamp(after, UTC).strftime("%Y-%m-%dT%H:%M:%S"), current))
        day = step
    return found


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
    kinds = review_kinds_for(trial_definition(ctx, trial_code))
    if report not in kinds:
        problems.append(FieldProblem("report", f"one of {', '.join(kinds)}"))
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
    digest = listed.sha256()  # read without a window: every entry listed
    object_id = f"{report}/{period_start.isoformat()}/{period_end.isoformat()}"
    sites = "all" if scope.all_sites else ",".join(sorted(str(s) for s in scope.site_ids))
    content = {
        "trial": trial_code,
        "report": report,
        "period_start": period_start.isoformat(),
        "period_end": period_end.isoformat(),
        "entries": len(listed.entries),
        "sha256": digest,
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
            content_sha256=digest,
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
