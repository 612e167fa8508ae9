"""Reading the audit trail: filtered, paged, blinded by default, exported as CSV, verified.

Blinded viewers (monitors, auditors, managers) see every entry but never a sealed value: only the
fact that one exists (BLD-07, AUD-05). Unblinded viewers open sealed values through the audited
arm accessor (BLD-08).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from allocator import audit
from allocator.audit import Action, Actor
from allocator.logs import log_event
from allocator.models import AuditEvent, Signature, Site, Trial
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_chunks
from allocator.services import arm_access, periods, signatures, spooling
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed, bad_character

MAX_PAGE = 1000
MAX_FILTER_TEXT = 200  # user, object_type, object_id


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """The filters of the audit trail (page, CSV, API). The OpenAPI document states each bound."""

    username: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive

    @classmethod
    def parse(cls, args: dict[str, str]) -> AuditFilter:
        """From query-string values; raises ValidationFailed naming the field."""
        problems: list[FieldProblem] = []
        since, until = (periods.period_date(args, key, problems) for key in ("since", "until"))
        texts = {}
        for key in ("user", "object_type", "object_id"):
            texts[key] = (args.get(key) or "").strip() or None
            if texts[key] is not None and len(texts[key] or "") > MAX_FILTER_TEXT:
                problems.append(FieldProblem(key, f"must be at most {MAX_FILTER_TEXT} characters long"))
            elif texts[key] is not None and (bad := bad_character(texts[key] or "")):
                # A NUL reached PostgreSQL and was a 500 on the trail's page and CSV (the API
                # already refused it before the look-up).
                problems.append(FieldProblem(key, bad))
                texts[key] = None
        action = (args.get("action") or "").strip() or None
        if action is not None and action not in {a.value for a in Action}:
            problems.append(FieldProblem("action", f"{action!r} is not an audited action"))
        if problems:
            raise ValidationFailed("invalid audit filter", errors=problems)
        return cls(
            username=texts["user"],
            action=action,
            object_type=texts["object_type"],
            object_id=texts["object_id"],
            since=since,
            until=until,
        )

    def query_args(self) -> dict[str, str]:
        out = {
            "user": self.username,
            "action": self.action,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {k: v for k, v in out.items() if v}


# Not frozen: a review of a large trial builds tens of thousands, and a frozen dataclass sets each of
# its 20 fields through object.__setattr__, nine times the cost of building one (issue 21). Nothing
# changes an entry once built.
@dataclass(slots=True)
class EntryView:
    chain: str
    seq: int
    at: str
    actor_username: str
    actor_name: str
    actor_role: str
    actor_site: str | None
    action: str
    object_type: str
    object_id: str
    site_code: str | None
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    has_sealed: bool
    reason: str | None
    request_id: str
    software_version: str
    prev_hash: str
    hash: str
    sealed: dict[str, Any] | None = field(default=None)  # only ever filled for unblinded viewers

    def as_json(self) -> dict[str, Any]:
        data = {
            "seq": self.seq,
            "at": self.at,
            "actor": {
                "username": self.actor_username,
                "name": self.actor_name,
                "role": self.actor_role,
                "site": self.actor_site,
            },
            "action": self.action,
            "object": {"type": self.object_type, "id": self.object_id, "site": self.site_code},
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "request_id": self.request_id,
            "software_version": self.software_version,
            "sealed_value": "present" if self.has_sealed else None,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }
        if self.sealed is not None:
            data["sealed"] = self.sealed
        return data


@dataclass(frozen=True, slots=True)
class Page:
    entries: tuple[EntryView, ...]
    next_after: int | None  # pass as `after` to get the next page


def _query(
    chain: str, flt: AuditFilter, scope: Scope | None, site_codes: dict[int, str]
) -> Select[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.chain == chain)
    if flt.username:
        # A person is looked for by user name or by (part of) their printed name (issue 13 point 9).
        needle = f"%{flt.username.lower()}%"
        query = query.where(
            (AuditEvent.actor_username == flt.username) | func.lower(AuditEvent.actor_name).like(needle)
        )
    if flt.action:
        query = query.where(AuditEvent.action == flt.action)
    if flt.object_type:
        query = query.where(AuditEvent.object_type == flt.object_type)
    if flt.object_id:
        query = query.where(AuditEvent.object_id == flt.object_id)
    if flt.since:
        query = query.where(AuditEvent.at >= flt.since.isoformat())
    if flt.until:
        query = query.where(AuditEvent.at < (flt.until + timedelta(days=1)).isoformat())
    return _within(query, scope, site_codes)


def _within(query: Select[AuditEvent], scope: Scope | None, site_codes: dict[int, str]) -> Select[AuditEvent]:
    if scope is not None and not scope.all_sites:
        # A monitor limited to some sites sees trial-level entries and those of their sites.
        allowed = [site_codes[s] for s in scope.site_ids if s in site_codes]
        query = query.where((AuditEvent.site_code.is_(None)) | (AuditEvent.site_code.in_(allowed)))
    return query


def _view(event: AuditEvent | Row[Any]) -> EntryView:
    """An entry (an AuditEvent, or a row of its `_VIEW_COLUMNS`) as readers see it."""
    return EntryView(
        chain=event.chain,
        seq=event.seq,
        at=event.at,
        actor_username=event.actor_username,
        actor_name=event.actor_name,
        actor_role=event.actor_role,
        actor_site=event.actor_site,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        site_code=event.site_code,
        old=json.loads(event.old_values) if event.old_values else None,
        new=json.loads(event.new_values) if event.new_values else None,
        has_sealed=event.sealed_values is not None,
        reason=event.reason,
        request_id=event.request_id,
        software_version=event.software_version,
        prev_hash=event.prev_hash,
        hash=event.hash,
    )


def _site_codes(ctx: ServiceContext, chain: str) -> dict[int, str]:
    with ctx.db.reading() as session:
        rows = session.execute(
            select(Site.id, Site.code).join(Trial, Trial.id == Site.trial_id).where(Trial.code == chain)
        )
        return {row.id: row.code for row in rows}


def page(
    ctx: ServiceContext,
    chain: str,
    flt: AuditFilter,
    *,
    after: int | None,
    limit: int,
    scope: Scope | None,
    unblinded_reader: Actor | None = None,
    newest_first: bool = False,
) -> Page:
    """One page of entries in sequence order, starting after `after`; with `newest_first` (the
    trail's pages, issue 13 point 9) in reverse order, starting before `after`.

    `unblinded_reader` (an unblinded role) opens sealed values; each opening is itself audited."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(
            "invalid page size", errors=[FieldProblem("limit", f"must be 1 to {MAX_PAGE}")]
        )
    site_codes = _site_codes(ctx, chain) if scope is not None and not scope.all_sites else {}
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
    query = _query(chain, flt, scope, site_codes).order_by(order).limit(limit + 1)
    if after is not None:
        query = query.where(AuditEvent.seq < after if newest_first else AuditEvent.seq > after)
    with ctx.db.reading() as session:
        events = list(session.execute(query).scalars())
    more = len(events) > limit
    events = events[:limit]
    views = [_view(e) for e in events]
    if unblinded_reader is not None and any(e.sealed_values is not None for e in events):
        opened = arm_access.open_audit_values(
            ctx, unblinded_reader, chain, [e for e in events if e.sealed_values]
        )
        views = [
            EntryView(
                **{**{f: getattr(v, f) for f in v.__slots__ if f != "sealed"}, "sealed": opened.get(v.seq)}
            )
            for v in views
        ]
    return Page(entries=tuple(views), next_after=events[-1].seq if more and events else None)


def entries(
    ctx: ServiceContext,
    chain: str,
    *,
    actions: Collection[str] | None,
    since: datetime | None,
    until: datetime | None,
    scope: Scope | None,
    usernames: Collection[str] | None = None,
    brief: bool = False,
) -> list[EntryView]:
    """The blinded entries of `chain` whose action is one of `actions` (all when None), at or after
    `since` and before `until`, in sequence order: the rows of the review reports and deviation
    listings (AUD-09, REP-07). `usernames` keeps the entries of those actors only. Never a sealed
    value (BLD-07). `brief` leaves out what only the chain's verification reads (request id,
    software version and the two hashes, left empty): a review of a large trial reads tens of
    thousands of entries and shows none of these (issue 21)."""
    rows = entry_rows(
        ctx, chain, actions=actions, since=since, until=until, scope=scope, usernames=usernames, brief=brief
    )
    return _views(rows, filler=BRIEF if brief else ())


def entry_rows(
    ctx: ServiceContext,
    chain: str,
    *,
    actions: Collection[str] | None,
    since: datetime | None,
    until: datetime | None,
    scope: Scope | None,
    usernames: Collection[str] | None = None,
    brief: bool = False,
) -> Sequence[Any]:
    """The rows `entries` makes its entries of, for a reader that keeps only some of them and builds
    those alone (`view`): the columns of `_VIEW_COLUMNS` by position, the time at `AT`."""
    site_codes = site_codes_within(ctx, chain, scope)
    query = entry_select(
        chain,
        actions=actions,
        since=since,
        until=until,
        scope=scope,
        site_codes=site_codes,
        usernames=usernames,
        brief=brief,
    )
    with ctx.db.reading() as session:
        return session.connection().execute(query.order_by(AuditEvent.__table__.c.seq)).all()


def site_codes_within(ctx: ServiceContext, chain: str, scope: Scope | None) -> dict[int, str]:
    """The site codes `entry_select` needs for a reader of `scope` (none for a reader of every site)."""
    return _site_codes(ctx, chain) if scope is not None and not scope.all_sites else {}


def entry_select(
    chain: str,
    *,
    actions: Collection[str] | None,
    since: datetime | None,
    until: datetime | None,
    scope: Scope | None,
    site_codes: dict[int, str],
    usernames: Collection[str] | None = None,
    brief: bool = False,
) -> Select[Any]:
    """The statement of `entry_rows`, unordered, for a reader that adds its own conditions, order
    or window (the review reports, issue 21)."""
    query = _within(select(AuditEvent).where(AuditEvent.chain == chain), scope, site_codes)
    if actions is not None:
        query = query.where(AuditEvent.action.in_(list(actions)))
    if since is not None:
        query = query.where(AuditEvent.at >= audit.format_time(since))
    if until is not None:
        query = query.where(AuditEvent.at < audit.format_time(until))
    if usernames is not None:
        query = query.where(AuditEvent.actor_username.in_(list(usernames)))
    # Columns, not entities: a review of a large trial reads tens of thousands of entries, and an
    # ORM object for each cost more than the review itself (issue 21). The table's own columns,
    # read through the session's connection: the rows of a Core statement, without the ORM's
    # handling of each row (issue 21).
    table = AuditEvent.__table__
    names = _VIEW_COLUMNS[:_BRIEF_END] if brief else _VIEW_COLUMNS
    return query.with_only_columns(
        *(
            table.c[name] if name != "sealed_values" else table.c[name].isnot(None).label(name)
            for name in names
        )
    )


def _views(rows: Sequence[Any], filler: tuple[str, ...] = ()) -> list[EntryView]:
    """`_view` of many rows of `_VIEW_COLUMNS` (issue 21: a review of a large trial reads tens of
    thousands), each `view`."""
    return [view(row, filler) for row in rows]


def view(row: Any, filler: tuple[str, ...] = (), same: dict[Any, Any] | None = None) -> EntryView:
    """The entry of a row of `_VIEW_COLUMNS` (`entry_rows`), read by position, which costs a fraction
    of reading its columns by name, and built with positional arguments: the columns are in
    `EntryView`'s order, the recorded values parsed, and whether there is a sealed value read instead
    of that value. The rows of a brief read end at the reason: `filler` (`BRIEF`) stands for the
    columns left out. With `same`, the texts most entries repeat (chain, actor, action, object type,
    site) are kept once for all the entries made with it (issue 21: a review of 30,000 entries held
    eight copies of them per entry)."""
    if same is None:
        return EntryView(  # type: ignore[call-arg]  # positions: test_the_entries_of_a_review_are_the_entries_of_the_trail
            *row[:11],
            _loads(row[11]) if row[11] else None,
            _loads(row[12]) if row[12] else None,
            bool(row[13]),
            *row[14:],
            *filler,
        )
    once = same.setdefault
    chain, seq, at, username, name, role, actor_site, action, object_type, object_id, site, old, new = row[
        :13
    ]
    return EntryView(
        once(chain, chain),
        seq,
        at,
        once(username, username),
        once(name, name),
        once(role, role),
        once(actor_site, actor_site),
        once(action, action),
        once(object_type, object_type),
        object_id,
        once(site, site),
        _loads(old) if old else None,
        _loads(new) if new else None,
        bool(row[13]),
        *row[14:],
        *filler,
    )


_loads = json.loads


# What `_view` reads of an entry.
_VIEW_COLUMNS = (
    "chain",
    "seq",
    "at",
    "actor_username",
    "actor_name",
    "actor_role",
    "actor_site",
    "action",
    "object_type",
    "object_id",
    "site_code",
    "old_values",
    "new_values",
    "sealed_values",
    "reason",
    "request_id",
    "software_version",
    "prev_hash",
    "hash",
)
_BRIEF_END = _VIEW_COLUMNS.index("reason") + 1  # a brief read's columns end there
BRIEF = ("",) * (len(_VIEW_COLUMNS) - _BRIEF_END)  # what a brief read leaves empty: request, version, hashes
AT = _VIEW_COLUMNS.index("at")  # where a row of `entry_rows` holds its time


_CSV_COLUMNS = (
    "seq",
    "at_utc",
    "actor_username",
    "actor_name",
    "actor_role",
    "actor_site",
    "action",
    "object_type",
    "object_id",
    "site",
    "old_values",
    "new_values",
    "sealed_value",
    "reason",
    "request_id",
    "software_version",
    "prev_hash",
    "hash",
)


def export_csv(
    ctx: ServiceContext, actor: Actor, chain: str, flt: AuditFilter, scope: Scope | None
) -> spooling.Spooled:
    """The blinded audit trail as CSV (every matching entry), written row by row into a spooled
    file as the entries are read in batches, never held whole (issue 21: one entry per action of a
    trial of years; 42,000 at 5,000 subjects). The export itself is audited, with its entry count
    and the SHA-256 of the file. The caller sends `chunks()` and then calls `close()`."""
    site_codes = _site_codes(ctx, chain) if scope is not None and not scope.all_sites else {}
    count = 0

    def rows(session: Session) -> Iterator[Sequence[object]]:
        nonlocal count
        yield _CSV_COLUMNS
        # Columns, not entities: no ORM object per entry, and only whether a sealed value is there.
        query = (
            _query(chain, flt, scope, site_codes)
            .with_only_columns(
                AuditEvent.seq,
                AuditEvent.at,
                AuditEvent.actor_username,
                AuditEvent.actor_name,
                AuditEvent.actor_role,
                func.coalesce(AuditEvent.actor_site, ""),
                AuditEvent.action,
                AuditEvent.object_type,
                AuditEvent.object_id,
                func.coalesce(AuditEvent.site_code, ""),
                func.coalesce(AuditEvent.old_values, ""),
                func.coalesce(AuditEvent.new_values, ""),
                AuditEvent.sealed_values.is_not(None),
                func.coalesce(AuditEvent.reason, ""),
                AuditEvent.request_id,
                AuditEvent.software_version,
                AuditEvent.prev_hash,
                AuditEvent.hash,
            )
            .order_by(AuditEvent.seq)
        )
        for row in session.execute(query.execution_options(yield_per=CSV_BATCH)):
            count += 1
            yield (*row[:12], "present" if row[12] else "", *row[13:])

    with ctx.db.reading() as session:
        spooled = spooling.spool(csv_chunks(rows(session)))
    try:
        with ctx.db.unit_of_work() as session:
            ctx.audit.record(
                session,
                actor=actor,
                chain=chain,
                action=Action.AUDIT_EXPORTED,
                object_type="audit_trail",
                object_id=chain,
                new={"entries": count, "filter": flt.query_args(), "sha256": spooled.sha256},
                at=ctx.now(),
            )
    except BaseException:
        spooled.close()
        raise
    return spooled


# The entries read at a time by the CSV export.
CSV_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Verification:
    """What the audit pages show: the result, and since when the entries before this view's own
    checks were found intact (None: the whole chain was verified for this view)."""

    result: audit.VerifyResult
    earlier: audit.KeptVerification | None


def verify(ctx: ServiceContext, chain: str) -> audit.VerifyResult:
    """The chain verified for a page or an API call: only what was appended since the last
    verification kept (issue 21); see `verify_since`."""
    return verify_since(ctx, chain).result


def verify_since(ctx: ServiceContext, chain: str) -> Verification:
    """Verify what was appended to `chain` since the last verification that found it intact, and
    keep this one when it finds the chain intact (audit.verify_chain_since). The whole chain is
    verified when nothing (or nothing signed by the audit key) is kept, and by `allocator audit
    verify` at any time."""
    with ctx.db.reading() as session:
        connection = session.connection()
        before = audit.verification_mark(connection, chain)
        kept = audit.kept_verification(connection, ctx.ring, chain, ctx.settings.audit_witness)
        result, keep = audit.verify_chain_since(
            connection, ctx.ring, chain, kept, ctx.now(), ctx.settings.audit_witness
        )
    if keep is not None and (kept is None or keep.verified_seq > kept.verified_seq):
        _keep(ctx, keep, before)
    elif not result.ok:
        # A break this page found: reset, so that no verification that started before it (and saw
        # the chain intact) is kept in place of what this page read.
        _forget(ctx, result)
    # A row reset by a whole verification that found a break says nothing was verified before.
    return Verification(result, kept if kept is not None and kept.verified_seq else None)


def _keep(ctx: ServiceContext, keep: audit.KeptVerification, before: bytes | None) -> None:
    try:
        with ctx.db.unit_of_work() as session:
            audit.keep_verification(session.connection(), ctx.ring, keep, before)
    except IntegrityError:
        pass  # another request kept its own verification of the same entries first


def _forget(ctx: ServiceContext, result: audit.VerifyResult) -> None:
    try:
        with ctx.db.unit_of_work() as session:
            audit.forget_verification(session.connection(), ctx.ring, result.chain, ctx.now(), result.witness)
    except SQLAlchemyError as exc:
        log_event(
            "audit.verification_not_forgotten", logging.WARNING, chain=result.chain, error=type(exc).__name__
        )


def verification_marks(ctx: ServiceContext, chains: Iterable[str]) -> dict[str, bytes | None]:
    """What is kept for each chain before a whole verification starts (`keep_whole`)."""
    with ctx.db.reading() as session:
        return {chain: audit.verification_mark(session.connection(), chain) for chain in chains}


def keep_whole(
    ctx: ServiceContext, results: Iterable[audit.VerifyResult], before: Mapping[str, bytes | None]
) -> None:
    """After `allocator audit verify` or the self-check verified whole chains (issue 21):

    - a chain found intact is kept, with the witness it was compared with in its signed message:
      the pages use it only when it is theirs (ALLOCATOR_AUDIT_WITNESS, or none when none is
      set), and then verify only from the last signed checkpoint it verified; made with another
      witness (a cron job without the server's ALLOCATOR_AUDIT_WITNESS), the pages verify the
      whole chain instead, and keep their own;
    - a chain found broken has its kept verification reset, so that the pages verify it whole
      again and show the break, as the command does.

    `before` holds each chain's `verification_marks` from before the verification started: a
    chain's verification is kept only while its row is still that one (audit.keep_verification).

    Best effort: a database that refuses the write (read-only, busy) leaves things as they were,
    with a warning (`audit.verification_not_kept`, `audit.verification_not_forgotten`), and the
    verification's verdict stands."""
    for result in results:
        if not result.ok:
            _forget(ctx, result)
            continue
        try:
            keep = audit.kept_whole(result, ctx.now())
            if keep is not None:
                _keep(ctx, keep, before.get(result.chain))
        except SQLAlchemyError as exc:
            log_event(
                "audit.verification_not_kept", logging.WARNING, chain=result.chain, error=type(exc).__name__
            )


# --- review sign-off (AUD-09, ACC-12) --------------------------------------------------------

REVIEW_MEANING = "audit trail review"


@dataclass(frozen=True, slots=True)
class Review:
    up_to_seq: int
    manifestation: signatures.Manifestation
    comment: str | None


def sign_review(
    ctx: ServiceContext,
    actor: Actor,
    chain: str,
    *,
    up_to_seq: int,
    comment: str,
    request: signatures.SignatureRequest,
    trial_id: int | None,
) -> Review:
    """A reviewer signs that the trail was reviewed up to entry `up_to_seq` (ACC-12: password, and
    a code when enrolled). The signature is linked to the chain's hash at that entry, so a later
    change to any reviewed entry no longer matches the signed content."""
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=chain,
            meaning=REVIEW_MEANING,
            object_type="audit_trail",
            object_id=f"{chain}:{up_to_seq}",
        ),
        ctx.db.unit_of_work() as session,
    ):
        entry = session.execute(
            select(AuditEvent).where(AuditEvent.chain == chain, AuditEvent.seq == up_to_seq)
        ).scalar_one_or_none()
        if entry is None:
            raise ValidationFailed(
                "no such entry", errors=[FieldProblem("up_to_seq", "is not an entry of this trail")]
            )
        content = {"chain": chain, "up_to_seq": up_to_seq, "hash": entry.hash}
        signature = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=chain,
            trial_id=trial_id,
            request=request,
            meaning=REVIEW_MEANING,
            object_type="audit_trail",
            object_id=f"{chain}:{up_to_seq}",
            content=content,
            now=now,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=chain,
            action=Action.AUDIT_REVIEWED,
            object_type="audit_trail",
            object_id=f"{chain}:{up_to_seq}",
            new={"up_to_seq": up_to_seq, "hash": entry.hash, "signature": signature.id},
            reason=comment.strip() or None,
            at=now,
        )
        return Review(up_to_seq, signatures.manifestation(signature), comment.strip() or None)


def reviews(ctx: ServiceContext, chain: str) -> list[Review]:
    """Signed review periods of a trail, newest first, each re-checked against the trail."""
    with ctx.db.reading() as session:
        rows = (
            session.execute(
                select(Signature)
                .where(
                    Signature.object_type == "audit_trail",
                    Signature.object_id.like(f"{chain}:%"),
                    Signature.meaning == REVIEW_MEANING,
                )
                .order_by(Signature.id.desc())
            )
            .scalars()
            .all()
        )
        out = []
        for signature in rows:
            up_to = int(signature.object_id.rsplit(":", 1)[1])
            entry = session.execute(
                select(AuditEvent.hash, AuditEvent.reason).where(
                    AuditEvent.chain == chain, AuditEvent.seq == up_to
                )
            ).first()
            comment = session.execute(
                select(AuditEvent.reason).where(
                    AuditEvent.chain == chain,
                    AuditEvent.action == Action.AUDIT_REVIEWED.value,
                    AuditEvent.object_id == signature.object_id,
                )
            ).scalar()
            intact = entry is not None and signatures.verify(
                signature, {"chain": chain, "up_to_seq": up_to, "hash": entry.hash}
            )
            out.append(
                Review(
                    up_to,
                    signatures.manifestation(signature),
                    comment if intact else "THE REVIEWED ENTRIES CHANGED AFTER THIS SIGNATURE",
                )
            )
        return out


# --- security events for administrators (ACC-05: attempted misuse reaches the admin) ----------

SECURITY_ACTIONS = (
    Action.LOGIN_FAILED.value,
    Action.LOCKED_OUT.value,
    Action.PERMISSION_DENIED.value,
    Action.SIGNATURE_FAILED.value,
)


def security_events(ctx: ServiceContext, limit: int = 50) -> list[EntryView]:
    """The latest failed sign-ins, lockouts, refused permissions and refused signatures, across all
    chains. Blinded: these entries never carry sealed values."""
    with ctx.db.reading() as session:
        events = (
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.action.in_(SECURITY_ACTIONS))
                .order_by(AuditEvent.id.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        return [_view(e) for e in events]
