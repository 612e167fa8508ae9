"""The review reports choose their entries in the database (issue 21: a review page counted and
digested every entry of the trail in Python each time it was shown, 0.58 s at 5,000 subjects).
Each condition the database now applies is checked here against the same judgement made entry by
entry in Python, as the review made it before, on both backends:

- the working hours in the trial's zone, for zones with and without summer time, whole-hour and
  half-hour offsets, around each change of offset and over weekends;
- the entries that would tell of a pharmacovigilance unblinding (UNB-08);
- a reprint number that is "true" as Python tells it, whatever JSON type it was recorded with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from allocator.audit import Action
from allocator.models import AuditEvent
from allocator.permissions import Scope
from allocator.services import unblinding
from allocator.services.context import ServiceContext
from allocator.services.reports import audit_review
from allocator.services.reports.filters import ReportFilter, Window
from allocator.wording import ENGLISH
from tests.support import CLI_ACTOR, TRIAL, load_ifn

# A day on which each zone's offset changes (or not), in 2026 (as tests/unit/test_audit_review_hours).
ZONES = (
    ("Europe/Paris", "2026-03-29"),  # +1 -> +2, a Sunday
    ("Europe/Paris", "2026-10-25"),  # +2 -> +1: the local hour 02:00-03:00 twice
    ("Asia/Kolkata", "2026-03-01"),  # +5:30
    ("America/St_Johns", "2026-03-08"),  # -3:30 -> -2:30
    ("Australia/Lord_Howe", "2026-04-05"),  # +11 -> +10:30
    ("Pacific/Chatham", "2026-04-05"),  # +13:45 -> +12:45
    ("UTC", "2026-03-01"),
)
HOURS = ((8, 20), (0, 24), (9, 10), (0, 0))
ALL = Scope(all_sites=True, site_ids=frozenset())


def _record(ctx: ServiceContext, entries: list[tuple[Action, datetime, dict[str, Any] | None]]) -> None:
    with ctx.db.unit_of_work() as session:
        for action, at, new in entries:
            ctx.audit.record(
                session,
                actor=CLI_ACTOR,
                chain=TRIAL,
                action=action,
                object_type="test",
                object_id="x",
                new=new,
                at=at,
            )


def _chosen(ctx: ServiceContext, condition: Any) -> list[int]:
    table = AuditEvent.__table__
    with ctx.db.reading() as session:
        return list(
            session.connection()
            .execute(select(table.c.seq).where(table.c.chain == TRIAL, condition).order_by(table.c.seq))
            .scalars()
        )


@pytest.mark.req("AUD-09")
def test_the_working_hours_are_told_in_the_database_as_in_python(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    moments = []
    for _, day in ZONES:
        start = datetime.fromisoformat(f"{day}T00:00:00+00:00") - timedelta(hours=36)
        # Every 13 minutes (and some seconds) for three days around the change.
        moments += [start + timedelta(minutes=13 * i, seconds=i % 60, microseconds=i) for i in range(333)]
    _record(ctx, [(Action.DOCUMENT_PRINTED, at, None) for at in moments])
    with ctx.db.reading() as session:
        recorded = dict(
            session.execute(select(AuditEvent.seq, AuditEvent.at).where(AuditEvent.chain == TRIAL)).all()
        )
    split = 0
    for zone_name, _ in ZONES:
        zone = ZoneInfo(zone_name)
        for hours in HOURS:
            flt = ReportFilter(hours_from=hours[0], hours_to=hours[1])
            with ctx.db.reading() as session:
                working = audit_review._working(session.connection(), TRIAL, flt, zone)
            expected = [
                seq
                for seq, at in sorted(recorded.items())
                if audit_review._minute(datetime.fromisoformat(at), zone, flt)[1]
            ]
            assert _chosen(ctx, working) == expected, (zone_name, hours)
            split += 0 < len(expected) < len(recorded)
    assert split >= 2 * len(ZONES)  # entries on both sides of the hours in every zone


@pytest.mark.req("AUD-09")
def test_the_offsets_change_where_the_zone_changes() -> None:
    paris = ZoneInfo("Europe/Paris")
    year = audit_review._offsets(paris, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert year == [(None, 3600), ("2026-03-29T01:00:00", 7200), ("2026-10-25T01:00:00", 3600)]
    assert audit_review._offsets(
        ZoneInfo("Asia/Kolkata"), datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)
    ) == [(None, 19800)]


def _pharmacovigilance(action: str, new: dict[str, Any] | None) -> bool:
    """UNB-08 as the review judged it entry by entry before issue 21."""
    new = new or {}
    if action == Action.UNBLINDING_PV.value:
        return True
    if action == Action.UNBLINDING_RESULT_SHOWN.value and new.get("kind") == "pharmacovigilance":
        return True
    if action == Action.ARM_READ.value and new.get("purpose") == unblinding.PV_MEANING:
        return True
    return (
        action in (Action.SIGNATURE_APPLIED.value, Action.SIGNATURE_FAILED.value)
        and new.get("meaning") == unblinding.PV_MEANING
    )


REPRINTS: list[object] = [0, 1, 7, 0.0, 2.5, -1, True, False, "", "0", "x", [], [0], {}, {"a": 0}, None]


@pytest.mark.req("UNB-08")
@pytest.mark.req("AUD-09")
def test_pharmacovigilance_and_reprints_are_told_in_the_database_as_in_python(
    ctx: ServiceContext, backend: str
) -> None:
    load_ifn(ctx)
    pv = unblinding.PV_MEANING
    at = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
    entries: list[tuple[Action, datetime, dict[str, Any] | None]] = [
        (Action.UNBLINDING_PV, at, {"subject": "P1-001"}),
        (Action.UNBLINDING_RESULT_SHOWN, at, {"kind": "pharmacovigilance"}),
        (Action.UNBLINDING_RESULT_SHOWN, at, {"kind": "emergency"}),
        (Action.UNBLINDING_RESULT_SHOWN, at, None),
        (Action.ARM_READ, at, {"purpose": pv}),
        (Action.ARM_READ, at, {"purpose": "emergency unblinding"}),
        (Action.ARM_READ, at, {"purpose": 3}),
        (Action.SIGNATURE_APPLIED, at, {"meaning": pv}),
        (Action.SIGNATURE_FAILED, at, {"meaning": pv}),
        (Action.SIGNATURE_APPLIED, at, {"meaning": "approval"}),
        (Action.DOCUMENT_PRINTED, at, {"meaning": pv, "kind": "pharmacovigilance", "purpose": pv}),
        *((Action.DOCUMENT_PRINTED, at, {"kind": "label", "reprint": value}) for value in REPRINTS),
        (Action.DOCUMENT_PRINTED, at, {"kind": "label"}),
        (Action.DOCUMENT_PRINTED, at, None),
    ]
    _record(ctx, entries)
    with ctx.db.reading() as session:
        shown = {
            seq: (action, new)
            for seq, action, new in session.execute(
                select(AuditEvent.seq, AuditEvent.action, AuditEvent.new_values).where(
                    AuditEvent.chain == TRIAL, AuditEvent.object_type == "test"
                )
            ).all()
        }
    parsed = {seq: (action, json.loads(new) if new else None) for seq, (action, new) in shown.items()}
    in_sql = set(_chosen(ctx, audit_review._pharmacovigilance(backend)))
    assert {seq for seq in parsed if seq in in_sql} == {
        seq for seq, (action, new) in parsed.items() if _pharmacovigilance(action, new)
    }
    assert len(in_sql & set(parsed)) == 5
    truthy = set(_chosen(ctx, audit_review._truthy(backend, "reprint")))
    assert {seq for seq in parsed if seq in truthy} == {
        seq for seq, (_, new) in parsed.items() if (new or {}).get("reprint")
    }
    assert len(truthy & set(parsed)) == 9  # 1, 7, 2.5, -1, true, "0", "x", [0], {"a": 0}


@pytest.mark.req("AUD-09")
def test_a_review_page_reads_only_its_window(ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's count is the database's; only the window's rows are read and put in words (before
    issue 21's last change every entry of the period was read, parsed and digested for each page)."""
    load_ifn(ctx)
    sunday = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # every entry of a Sunday is off-hours
    _record(ctx, [(Action.DOCUMENT_PRINTED, sunday + timedelta(seconds=i), None) for i in range(450)])
    every = audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, ReportFilter())
    assert every.count == len(every.entries) >= 450 and every.digest == every.sha256()
    read: list[int] = []
    made = audit_review._entries

    def spied(rows: list[Any], zone: ZoneInfo, flt: ReportFilter) -> list[audit_review.ReviewEntry]:
        read.append(len(rows))
        return made(rows, zone, flt)

    monkeypatch.setattr(audit_review, "_entries", spied)
    window = Window(start=200, size=200)
    page = audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, ReportFilter(), window)
    assert read == [200] and page.count == every.count and page.digest is None
    assert [e.entry for e in page.entries] == [e.entry for e in every.entries[200:400]]
    table = page.tables(ENGLISH)[0]
    assert (table.total, table.start, len(table.rows)) == (every.count, 200, 200)
    last = audit_review.audit_review(ctx, TRIAL, "off-hours", ALL, ReportFilter(), Window(400, 200))
    assert [e.entry for e in last.entries] == [e.entry for e in every.entries[400:]]
