"""Unblinding drills (UNB-11): a drill subject that is never a subject, online and offline drills
recorded as drills, and — the issue's done-when — a drill in the drill log and in no blinded or
unblinded count, report or export."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from allocator.audit import Actor
from allocator.models import DrillSubject, Notification, Subject, Unblinding, UnblindingDrill
from allocator.permissions import Scope
from allocator.services import archive, codebreak, exports, signatures, trials, unblinding, unblinding_drills
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError, NotFound, ValidationFailed
from allocator.services.reports import catalogue, export, filters
from allocator.services.subjects import views
from allocator.trialdef import parse_definition
from tests.leakcheck import LeakChecker, Vocabulary
from tests.support import (
    CLI_ACTOR,
    GOOD_PASSWORD,
    IFN_TRIAL,
    Clock,
    ReadyTrial,
    events,
    make_actor,
    randomize,
    ready_trial,
)

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
REASON = "Yearly emergency-unblinding drill of the night shift."
EVERYTHING = filters.ReportFilter()
ARM_WORDS = ("interferon", "placebo", "imukin", "saline", "nacl", "gamma")


def site_scope(ctx: ServiceContext, code: str) -> Scope:
    from allocator.models import Site

    with ctx.db.reading() as s:
        site_id = s.execute(select(Site.id).where(Site.code == code)).scalar_one()
    return Scope(all_sites=False, site_ids=frozenset({site_id}))


@pytest.fixture
def ready(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx, kits_per_site=24)


@pytest.fixture
def manager(ctx: ServiceContext, ready: ReadyTrial) -> Actor:
    return make_actor(ctx, "drill-tm", "trial_manager")


def drill_online(
    ctx: ServiceContext, investigator: Actor, number: str, scope: Scope
) -> unblinding.RevealedArm:
    return unblinding_drills.drill_unblind(
        ctx,
        investigator,
        TRIAL,
        number,
        reason_category="other_medical_emergency",
        reason=REASON,
        confirmed=True,
        signature=SIGNED,
        scope=scope,
    )


def drill_offline(
    ctx: ServiceContext, investigator: Actor, number: str, clock: Clock, scope: Scope
) -> unblinding_drills.DrillEvent:
    return unblinding_drills.register_offline_drill(
        ctx,
        investigator,
        TRIAL,
        unblinding_drills.sheet_number_of(number),
        opened_at=clock() - timedelta(minutes=95),
        opened_by="Dr Night Duty",
        opened_by_role="physician",
        reason_category="other_medical_emergency",
        reason=REASON,
        signature=SIGNED,
        scope=scope,
    )


def everything_counted(ctx: ServiceContext) -> dict[str, object]:
    """Every count, report (each version that applies) and export of the trial, as the readers get
    them. The clock stands still, so two snapshots of an unchanged trial are equal."""
    out: dict[str, object] = {}
    for name in catalogue.REPORTS:
        if name == "drill-log":
            continue
        for version in ("blinded", "restricted", "safety"):
            try:
                view = catalogue.build(ctx, CLI_ACTOR, TRIAL, name, EVERYTHING, ALL, version=version)
            except DomainError:  # a version that does not exist, or waits for the final unblinding
                continue
            out[f"report {version} {name}"] = (view.facts, view.tables)
            out[f"report {version} {name} csv"] = export.to_csv(view).split("\n", 7)[-1]  # past metadata
    for fmt in exports.FORMATS:
        out[f"export {fmt}"] = exports.export_trial(ctx, CLI_ACTOR, TRIAL, fmt, name=f"drill-{fmt}").files
    out["subjects"] = views.subjects(ctx, TRIAL, ALL)
    out["unblindings"] = unblinding.unblindings(ctx, TRIAL, ALL, include_pharmacovigilance=True)
    with ctx.db.reading() as session:
        trial_id = session.execute(text("SELECT id FROM trial WHERE code = :c"), {"c": TRIAL}).scalar_one()
        out["blind broken"] = unblinding.blind_broken_subject_ids(session, trial_id)
        out["subject rows"] = len(session.execute(select(Subject.id)).all())
        out["unblinding rows"] = len(session.execute(select(Unblinding.id)).all())
    out["code-break reconciliation"] = codebreak.reconciliation(ctx, TRIAL, ALL)
    summary = trials.trial_summary(ctx, TRIAL, None)
    out["trial summary"] = (summary.subjects, [(s.code, s.subjects) for s in summary.sites])
    return out


@pytest.mark.req("UNB-11")
def test_a_drill_is_in_the_drill_log_and_in_no_count_report_or_export(
    ctx: ServiceContext, ready: ReadyTrial, manager: Actor, clock: Clock
) -> None:
    subjects = [randomize(ctx, ready, f"P1-{i:04d}") for i in (1, 2)] + [
        randomize(ctx, ready, "P2-0001", "P2")
    ]
    unblinding.emergency_unblind(
        ctx,
        ready.investigator,
        TRIAL,
        subjects[0],
        reason_category="serious_adverse_event",
        reason="Anaphylaxis after D2; the choice of treatment depends on the product.",
        confirmed=True,
        signature=SIGNED,
        scope=ALL,
    )
    emergency_entries = len(events(ctx, "unblinding.emergency"))
    before = everything_counted(ctx)
    number = unblinding_drills.create_drill_subject(ctx, manager, TRIAL, "P1", "yearly drill", scope=ALL)
    assert number == "DRILL-P1-01"
    assert everything_counted(ctx) == before  # a drill subject is no subject
    clock.advance(hours=2)
    before = everything_counted(ctx)
    p1 = site_scope(ctx, "P1")
    revealed = drill_online(ctx, ready.investigator, number, p1)
    assert revealed.drill and revealed.subject_number == number and revealed.arm_code in {"A", "B"}
    assert revealed.as_json()["drill"] is True
    document_id, pdf = unblinding_drills.generate_drill_sheet(
        ctx, ready.statistician, TRIAL, number, signature=SIGNED, scope=ALL
    )
    assert pdf.startswith(b"%PDF") and document_id.startswith("DRILLDOC")
    offline = drill_offline(ctx, ready.investigator, number, clock, p1)
    assert offline.sheet_number == "DRILL-CB-P1-01" and offline.channel == "offline"

    # Nothing a reader counts, lists or exports has changed: not a subject, not an unblinding.
    assert everything_counted(ctx) == before
    assert len(events(ctx, "unblinding.emergency")) == emergency_entries

    # Recorded as drills: the drill log (blinded), the audit trail, the DRILL notifications.
    log = catalogue.build(ctx, CLI_ACTOR, TRIAL, "drill-log", EVERYTHING, ALL)
    facts = dict(log.facts)
    assert facts["Online drills"] == "1" and facts["Offline drills (drill code-break sheet)"] == "1"
    assert facts["Drill subjects"] == "1"
    drills = [dict(zip(log.tables[0].columns, row, strict=True)) for row in log.tables[0].rows]
    assert [(d["Drill subject"], d["Channel"], d["Site"]) for d in drills] == [
        (number, "offline", "P1"),
        (number, "online", "P1"),
    ]
    assert drills[0]["Registered after"] == "1 h 35 min" and drills[0]["Unblinded by"] == "Dr Night Duty"
    assert "emergency unblinding drill" in drills[1]["Electronic signature"]
    assert [e.action for e in events(ctx, "drill.unblinding")] == ["drill.unblinding"]
    assert len(events(ctx, "drill.offline_registered")) == 1
    with ctx.db.reading() as session:
        notes = list(
            session.execute(select(Notification).where(Notification.kind == "unblinding_drill")).scalars()
        )
    assert len(notes) == 6 and all(n.title.startswith("DRILL:") for n in notes)
    assert {n.audience for n in notes} == {"trial_manager", "pharmacovigilance", "monitor"}

    # Blinded readers see nothing about the drill value: not in the log, not in the notifications.
    checker = LeakChecker(Vocabulary.of(parse_definition(IFN_TRIAL.read_text(encoding="utf-8"))))
    exported = export.export(ctx, CLI_ACTOR, TRIAL, "drill-log", EVERYTHING, ALL, "csv")
    assert checker.csv_text("drill log", exported.body.decode("utf-8")) == []
    words = " ".join([exported.body.decode("utf-8"), *(n.title + n.body for n in notes)]).lower()
    assert not [w for w in ARM_WORDS if w in words]
    assert revealed.arm_label.lower() not in words


@pytest.mark.req("UNB-11")
def test_the_archive_keeps_drills_apart_from_subjects_and_unblindings(
    ctx: ServiceContext, ready: ReadyTrial, manager: Actor, clock: Clock, tmp_path: Path
) -> None:
    randomize(ctx, ready, "P1-0001")
    number = unblinding_drills.create_drill_subject(ctx, manager, TRIAL, "P1", "", scope=ALL)
    drill_online(ctx, ready.investigator, number, ALL)
    state.lock(ctx, ready.statistician, TRIAL, reason="database lock", signature=SIGNED)
    built = archive.build(ctx, CLI_ACTOR, TRIAL, tmp_path / "archive")
    folder = tmp_path / "archive"
    assert built.rows["tables/subjects.csv"] == 1 and built.rows["tables/unblindings.csv"] == 0
    assert built.rows["tables/drill_subjects.csv"] == 1 and built.rows["tables/unblinding_drills.csv"] == 1
    for name in ("subjects", "unblindings", "screening_log", "kits", "dispensations"):
        assert "DRILL" not in (folder / "tables" / f"{name}.csv").read_text("utf-8")
    for path in (folder / "exports").rglob("*"):
        if path.is_file():
            assert b"DRILL-P1" not in path.read_bytes(), path.name
    drill_rows = list(
        csv.DictReader(io.StringIO((folder / "tables" / "drill_subjects.csv").read_text("utf-8")))
    )
    assert "sealed_arm" not in drill_rows[0]  # the sealed value is left out, as every binary column
    assert (folder / "reports" / "drill-log.csv").exists()


@pytest.mark.req("UNB-11", "UNB-03")
def test_a_drill_is_limited_to_the_investigators_sites_and_needs_the_real_checks(
    ctx: ServiceContext, ready: ReadyTrial, manager: Actor, clock: Clock
) -> None:
    number = unblinding_drills.create_drill_subject(ctx, manager, TRIAL, "P1", "", scope=ALL)
    with pytest.raises(NotFound) as other_site:
        drill_online(ctx, ready.investigator_p2, number, site_scope(ctx, "P2"))
    assert other_site.value.errors[0].field == "subject"
    with pytest.raises(ValidationFailed) as incomplete:
        unblinding_drills.drill_unblind(
            ctx,
            ready.investigator,
            TRIAL,
            number,
            reason_category="",
            reason="short",
            confirmed=False,
            signature=SIGNED,
            scope=ALL,
        )
    assert {p.field for p in incomplete.value.errors} == {"reason_category", "reason", "confirm"}
    with pytest.raises(unblinding.SignatureNotAccepted):
        unblinding_drills.drill_unblind(
            ctx,
            ready.investigator,
            TRIAL,
            number,
            reason_category="other_medical_emergency",
            reason=REASON,
            confirmed=True,
            signature=signatures.SignatureRequest(password="not the password at all"),
            scope=ALL,
        )
    assert len(events(ctx, "signature.failed")) >= 1
    with pytest.raises(NotFound):
        unblinding_drills.create_drill_subject(ctx, manager, TRIAL, "P2", "", scope=site_scope(ctx, "P1"))
    with pytest.raises(ValidationFailed) as bad_sheet:
        unblinding_drills.register_offline_drill(
            ctx,
            ready.investigator,
            TRIAL,
            "CB-IFNG-PAIS-000001",
            opened_at=clock() + timedelta(hours=1),
            opened_by="",
            opened_by_role="janitor",
            reason_category="x",
            reason="",
            signature=SIGNED,
            scope=ALL,
        )
    assert {p.field for p in bad_sheet.value.errors} == {
        "sheet_number",
        "opened_by",
        "opened_by_role",
        "reason_category",
        "reason",
        "opened_at",
    }
    with ctx.db.reading() as session:
        assert session.execute(select(UnblindingDrill.id)).first() is None


@pytest.mark.req("UNB-11")
def test_the_drill_result_is_shown_once_and_drill_rows_cannot_be_changed(
    ctx: ServiceContext, ready: ReadyTrial, manager: Actor
) -> None:
    number = unblinding_drills.create_drill_subject(ctx, manager, TRIAL, "P2", "", scope=ALL)
    revealed = drill_online(ctx, ready.investigator_p2, number, ALL)
    first = unblinding_drills.show_drill_result(ctx, ready.investigator_p2, TRIAL, revealed.unblinding_id)
    assert isinstance(first, unblinding.RevealedArm) and first.drill and first.arm_code == revealed.arm_code
    again = unblinding_drills.show_drill_result(ctx, ready.investigator_p2, TRIAL, revealed.unblinding_id)
    assert isinstance(again, unblinding.ShownBefore) and again.drill
    with pytest.raises(NotFound):
        unblinding_drills.show_drill_result(ctx, ready.investigator, TRIAL, revealed.unblinding_id)
    for table in ("unblinding_drill", "drill_subject"):
        with pytest.raises(DBAPIError), ctx.db.unit_of_work() as session:
            session.execute(text(f"DELETE FROM {table}"))
    with ctx.db.reading() as session:
        assert session.execute(select(DrillSubject.drill_number)).scalars().all() == [number]
