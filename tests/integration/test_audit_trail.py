"""Reading the audit trail (AUD-05, BLD-07, BLD-08, ACC-11): filters, paging, site scope, the
blinded projection, the audited unblinded view and the CSV export."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from allocator.audit import Action, Actor
from allocator.models import AuditEvent, Site
from allocator.permissions import Scope
from allocator.printing import safe_csv
from allocator.services import audit_trail, spooling
from allocator.services.audit_trail import AuditFilter
from allocator.services.context import ServiceContext
from allocator.services.errors import ValidationFailed
from tests.support import CLI_ACTOR, load_ifn, make_user

ALL = Scope(all_sites=True, site_ids=frozenset())
MONITOR = Actor(user_id=None, username="mon", name="Monique", role="monitor", request_id="r")
STAT = Actor(user_id=None, username="stat", name="Stéphane", role="unblinded_statistician", request_id="r")


def trail(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    make_user(ctx, "inv-p1", "investigator", site="P1")
    make_user(ctx, "inv-p2", "investigator", site="P2")
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=CLI_ACTOR,
            chain="IFNG-PAIS",
            action=Action.USER_UPDATED,
            object_type="subject",
            object_id="P1-001",
            site_code="P1",
            new={"note": '=HYPERLINK("http://x")'},
            sealed={"arm": "A"},
            reason="+danger",
            at=ctx.now(),
        )


def test_filters_and_paging(ctx: ServiceContext) -> None:
    trail(ctx)
    everything = audit_trail.page(ctx, "IFNG-PAIS", AuditFilter(), after=None, limit=1000, scope=ALL)
    assert [e.seq for e in everything.entries] == list(range(1, len(everything.entries) + 1))
    first = audit_trail.page(ctx, "IFNG-PAIS", AuditFilter(), after=None, limit=3, scope=ALL)
    second = audit_trail.page(ctx, "IFNG-PAIS", AuditFilter(), after=first.next_after, limit=3, scope=ALL)
    assert [e.seq for e in first.entries + second.entries] == [1, 2, 3, 4, 5, 6]
    grants = audit_trail.page(
        ctx, "IFNG-PAIS", AuditFilter(action="role.granted"), after=None, limit=100, scope=ALL
    )
    assert {e.new["role"] for e in grants.entries if e.new} == {"investigator"}
    by_object = audit_trail.page(
        ctx, "IFNG-PAIS", AuditFilter(object_id="P2"), after=None, limit=100, scope=ALL
    )
    assert [e.action for e in by_object.entries] == ["site.created"]
    none = audit_trail.page(
        ctx, "IFNG-PAIS", AuditFilter.parse({"since": "2030-01-01"}), after=None, limit=100, scope=ALL
    )
    assert none.entries == () and none.next_after is None
    with pytest.raises(ValidationFailed) as caught:
        AuditFilter.parse({"since": "yesterday", "action": "drop.table"})
    assert {e.field for e in caught.value.errors} == {"since", "action"}


@pytest.mark.req("BLD-07")
def test_the_entries_of_a_review_are_the_entries_of_the_trail(ctx: ServiceContext) -> None:
    """`entries` builds its views from rows by position (issue 21); they are the trail's views, field
    for field, and a sealed value is only ever said to be present."""
    trail(ctx)
    shown = audit_trail.page(ctx, "IFNG-PAIS", AuditFilter(), after=None, limit=1000, scope=ALL).entries
    read = audit_trail.entries(ctx, "IFNG-PAIS", actions=None, since=None, until=None, scope=ALL)
    assert len(read) == len(shown) > 5
    assert read == list(shown)
    sealed = [e for e in read if e.has_sealed]
    assert [e.object_id for e in sealed] == ["P1-001"] and sealed[0].sealed is None
    assert sealed[0].new == {"note": '=HYPERLINK("http://x")'} and sealed[0].reason == "+danger"
    # A brief read (the reviews', issue 21) is the same but for what only the chain's verification
    # reads, left empty; its rows, made entries one by one, are the same entries.
    brief = audit_trail.entries(ctx, "IFNG-PAIS", actions=None, since=None, until=None, scope=ALL, brief=True)
    chain_only = {"request_id": "", "software_version": "", "prev_hash": "", "hash": ""}
    assert brief == [dataclasses.replace(e, **chain_only) for e in read]
    assert all(e.hash and e.request_id for e in read)
    rows = audit_trail.entry_rows(
        ctx, "IFNG-PAIS", actions=None, since=None, until=None, scope=ALL, brief=True
    )
    assert [audit_trail.view(row, audit_trail.BRIEF) for row in rows] == brief
    same: dict[object, object] = {}  # the texts the entries repeat, kept once (the reviews' memory)
    kept_once = [audit_trail.view(row, audit_trail.BRIEF, same) for row in rows]
    assert kept_once == brief
    assert all(e.chain is kept_once[0].chain for e in kept_once)
    assert len({id(e.action) for e in kept_once}) == len({e.action for e in kept_once})  # one object each
    assert [row[audit_trail.AT] for row in rows] == [e.at for e in read]


@pytest.mark.req("ACC-10")
@pytest.mark.req("BLD-07")
def test_a_monitor_limited_to_a_site_sees_trial_entries_and_that_site_only(ctx: ServiceContext) -> None:
    trail(ctx)
    with ctx.db.reading() as s:
        p1 = s.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    scoped = audit_trail.page(
        ctx,
        "IFNG-PAIS",
        AuditFilter(),
        after=None,
        limit=1000,
        scope=Scope(all_sites=False, site_ids=frozenset({p1})),
    )
    sites = {e.site_code for e in scoped.entries}
    assert sites == {None, "P1"}


@pytest.mark.req("AUD-05")
@pytest.mark.req("BLD-07")
def test_blinded_views_show_that_a_sealed_value_exists_never_what_it_is(ctx: ServiceContext) -> None:
    trail(ctx)
    page = audit_trail.page(
        ctx, "IFNG-PAIS", AuditFilter(object_id="P1-001"), after=None, limit=10, scope=ALL
    )
    (entry,) = page.entries
    assert entry.has_sealed and entry.sealed is None
    data = entry.as_json()
    assert data["sealed_value"] == "present" and "sealed" not in data
    assert '"A"' not in str(data)


@pytest.mark.req("BLD-08")
def test_the_unblinded_view_opens_sealed_values_and_audits_the_read(ctx: ServiceContext) -> None:
    trail(ctx)
    page = audit_trail.page(
        ctx,
        "IFNG-PAIS",
        AuditFilter(object_id="P1-001"),
        after=None,
        limit=10,
        scope=ALL,
        unblinded_reader=STAT,
    )
    assert page.entries[0].sealed == {"arm": "A"}
    with ctx.db.reading() as s:
        read = s.execute(select(AuditEvent).where(AuditEvent.action == "arm.read")).scalar_one()
    assert read.actor_username == "stat" and str(page.entries[0].seq) in (read.new_values or "")


@pytest.mark.req("AUD-01")
@pytest.mark.req("ACC-11")
def test_csv_export_neutralises_formulas_and_is_audited(ctx: ServiceContext) -> None:
    trail(ctx)
    exported = audit_trail.export_csv(ctx, MONITOR, "IFNG-PAIS", AuditFilter(), ALL)
    body = exported.body.decode("utf-8")
    exported.close()
    rows = list(csv.reader(io.StringIO(body)))
    header, data = rows[0], rows[1:]
    assert header[0] == "seq" and "sealed_value" in header
    sealed_row = next(r for r in data if r[8] == "P1-001")
    assert sealed_row[header.index("reason")] == "'+danger"
    assert sealed_row[header.index("sealed_value")] == "present"
    assert "=HYPERLINK" in sealed_row[header.index("new_values")]  # inside JSON, not at the start of a cell
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in data for cell in row)
    assert safe_csv.neutralise_cell("-1") == "'-1" and safe_csv.neutralise_cell("@x") == "'@x"
    with ctx.db.reading() as s:
        export = s.execute(select(AuditEvent).where(AuditEvent.action == "audit.exported")).scalar_one()
    assert export.actor_username == "mon"
    recorded = json.loads(export.new_values or "{}")
    assert recorded["entries"] == len(data)
    assert recorded["sha256"] == hashlib.sha256(body.encode("utf-8")).hexdigest()


@pytest.mark.req("AUD-01")
def test_the_csv_export_is_read_in_batches_and_spooled_never_held_whole(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: the trail's CSV was built as one list of rows and one string (42,000 entries at
    5,000 subjects). The entries are now read CSV_BATCH at a time and written into a spooled file,
    on disk past SPOOL_BYTES; what is sent is what the export's audit entry counts and digests,
    every time it is read, and the same as one batch and one in-memory file would give."""
    trail(ctx)
    whole = audit_trail.export_csv(ctx, MONITOR, "IFNG-PAIS", AuditFilter(), ALL)
    expected = whole.body
    whole.close()
    monkeypatch.setattr(audit_trail, "CSV_BATCH", 2)
    monkeypatch.setattr(spooling, "SPOOL_BYTES", 512)
    monkeypatch.setattr(spooling, "READ_BYTES", 100)
    spooled = audit_trail.export_csv(ctx, MONITOR, "IFNG-PAIS", AuditFilter(), ALL)
    assert spooled.file._rolled  # type: ignore[attr-defined]  # on disk, not in memory
    pieces = list(spooled.chunks())
    assert len(pieces) > 3 and all(len(piece) <= 100 for piece in pieces)
    body = b"".join(pieces)
    assert body == spooled.body  # read again, the same
    spooled.close()
    # The second export has one entry more in its file: the first export's own audit entry.
    assert body.count(b"\r\n") == expected.count(b"\r\n") + 1
    assert body.startswith(expected)
    with ctx.db.reading() as s:
        last = s.execute(
            select(AuditEvent.new_values)
            .where(AuditEvent.action == "audit.exported")
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).scalar_one()
    recorded = json.loads(last or "{}")
    assert recorded["sha256"] == hashlib.sha256(body).hexdigest()
    assert recorded["entries"] == body.count(b"\r\n") - 1


def test_verify_through_the_service(ctx: ServiceContext) -> None:
    trail(ctx)
    result = audit_trail.verify(ctx, "IFNG-PAIS")
    assert result.ok and result.entries >= 7


def test_the_csv_exports_file_is_let_go_when_its_audit_entry_cannot_be_written(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the review: the spooled file must be closed when the export's audit entry fails (the
    export is then refused as a whole), as when it is sent."""
    trail(ctx)
    made: list[spooling.Spooled] = []
    real_spool = spooling.spool

    def spy(pieces: object) -> spooling.Spooled:
        made.append(real_spool(pieces))  # type: ignore[arg-type]
        return made[-1]

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the audit trail is unavailable")

    monkeypatch.setattr(spooling, "spool", spy)
    monkeypatch.setattr(type(ctx.audit), "record", refuse)
    with pytest.raises(RuntimeError, match="unavailable"):
        audit_trail.export_csv(ctx, MONITOR, "IFNG-PAIS", AuditFilter(), ALL)
    assert len(made) == 1 and made[0].file.closed


def test_a_failing_write_closes_the_rows_it_was_reading() -> None:
    closed: list[bool] = []

    def pieces() -> Iterator[str]:
        try:
            yield "a,b\r\n"
            raise OSError("disk full")
        finally:
            closed.append(True)

    rows = pieces()
    with pytest.raises(OSError, match="disk full"):
        spooling.spool(rows)
    assert closed == [True]


@pytest.mark.req("ACC-11")
@pytest.mark.parametrize("key", ["user", "object_type", "object_id"])
def test_a_control_character_in_a_filter_is_refused_naming_it(key: str) -> None:
    """From the review: a NUL in the trail page's or CSV's filter reached PostgreSQL (a 500)."""
    with pytest.raises(ValidationFailed) as refused:
        AuditFilter.parse({key: "a\x00b", "action": "no.such"})
    problems = {p.field: p.message for p in refused.value.errors}
    assert problems[key] == "contains a character that is not allowed (U+0000)"
    assert "action" in problems
    assert AuditFilter.parse({key: "a\tb"}).query_args()[{"user": "user"}.get(key, key)] == "a\tb"
