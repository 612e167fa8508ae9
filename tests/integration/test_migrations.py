"""The schema is built by the migrations, matches the models, round-trips, and the database
itself refuses to change or delete append-only rows (AUD-03, RND-07) — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DatabaseError

from allocator import migrate
from allocator.db import Database, connect_once
from allocator.models import Base
from tests.conftest import FreshDatabase

MIGRATED_TABLES = set(Base.metadata.tables) | {"alembic_version"}


def _diff(url: str) -> list[object]:
    engine = connect_once(url)
    try:
        with engine.connect() as conn:
            return list(
                compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            )
    finally:
        engine.dispose()


@pytest.mark.req("VAL-04")
def test_upgrade_check_downgrade_upgrade(fresh_database: FreshDatabase) -> None:
    url = fresh_database.url
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert _diff(url) == []  # the equivalent of `alembic check`
    migrate.downgrade(url, "base")
    engine = connect_once(url)
    with engine.connect() as conn:
        left = set(inspect(conn).get_table_names()) - {"alembic_version"}
    engine.dispose()
    assert left == set()
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    engine = connect_once(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == MIGRATED_TABLES
    engine.dispose()


# The state after every migration: which tables are append-only, which keep their rows for ever
# while a status may change, and which hold operational data that may be purged (sessions,
# throttles). Written out by hand: a new table must be placed here on purpose.
APPEND_ONLY = {
    "audit_event",
    "audit_checkpoint",
    "trial_definition",
    "role_assignment",
    "role_revocation",
    "signature",
    "list_version",
    "slot",
    "kit_event",
    "sample_kit_event",
    "screening_entry",
    "subject",
    "subject_correction",
    "subject_withdrawal",
    "administration",
    "printed_document",
    "integrity_check",
    "minimization_decision",
    "unblinding",
    "accidental_unblinding",
    "trial_state_change",
    "code_break_sheet",
    "code_break_check",
    "interim_package",
    "audit_review",
    "idempotent_request",
    "drill_subject",
    "unblinding_drill",
    "excursion_kit",
    "kit_disposal",
    "kit_disposal_item",
    "registration",
    "planned_sample",
    "lab_closure",
    "lab_closure_withdrawal",
}
NO_DELETE = {
    "trial",
    "site",
    "app_user",
    "randomization_list",
    "stratum",
    "kit_list",
    "batch",
    "kit",
    "shipment",
    "sample_kit",
    "lab_shipment",
    "dispensation",
    "audit_chain_head",
    "notification",
    "api_token",
    "list_extension_proposal",
    "temperature_excursion",  # and no change once decided (guard_decided)
    "report_job",  # status and progress change while the PDF is built
}
UNGUARDED = {"login_session", "login_throttle", "audit_verification", "kit_check"}


def _triggers(db: Database, table: str) -> set[str]:
    with db.reading() as session:
        conn = session.connection()
        if db.dialect == "postgresql":
            query = "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"
        return set(conn.execute(text(query), {"t": table}).scalars().all())


def test_every_table_is_classified() -> None:
    assert set(Base.metadata.tables) == APPEND_ONLY | NO_DELETE | UNGUARDED
    assert not (APPEND_ONLY & NO_DELETE)


@pytest.mark.req("AUD-03")
@pytest.mark.parametrize("table", sorted(APPEND_ONLY | NO_DELETE))
def test_every_guarded_table_has_its_triggers_after_all_migrations(db: Database, table: str) -> None:
    triggers = _triggers(db, table)
    if db.dialect == "postgresql":
        assert {f"{table}_guard", f"{table}_no_truncate"} <= triggers
    elif table in APPEND_ONLY:
        assert {f"{table}_no_update", f"{table}_no_delete"} <= triggers
    else:
        assert f"{table}_no_delete" in triggers and f"{table}_no_update" not in triggers


@pytest.mark.req("AUD-03")
def test_guards_fire_on_real_rows(ctx) -> None:  # type: ignore[no-untyped-def]
    from tests.support import load_ifn

    load_ifn(ctx)
    for statement in (
        "UPDATE audit_event SET reason = 'rewritten'",
        "DELETE FROM audit_event",
        "DELETE FROM trial",
        "UPDATE trial_definition SET source_text = ''",
        "DELETE FROM site",
    ):
        with pytest.raises(DatabaseError, match="not allowed"), ctx.db.unit_of_work() as session:
            session.execute(text(statement))
    with ctx.db.unit_of_work() as session:  # status columns of mutable tables can still change
        session.execute(text("UPDATE site SET status = 'pending'"))


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database.connect(f"sqlite:///{tmp_path / 'x.db'}")
    with database.write_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    database.dispose()


@pytest.mark.req("AUD-03")
def test_the_downgrade_below_0021_refuses_to_drop_recorded_withdrawals(
    fresh_database: FreshDatabase, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Dropping `lab_closure_withdrawal` would delete records and put withdrawn closures back in
    force: with a withdrawal recorded, the downgrade stops and the database stays at head."""
    from allocator import crypto
    from allocator.services import lab_calendar
    from allocator.services.context import ServiceContext
    from allocator.settings import Environment, Settings
    from tests.support import CLI_ACTOR, COHORT, Clock, ready_cohort

    url = fresh_database.url
    migrate.upgrade(url)
    keys = tmp_path / "keys"
    crypto.KeyRing.create_missing(keys)
    db = Database.connect(url)
    try:
        ctx = ServiceContext.build(
            Settings(env=Environment.TEST, database_url=url, key_dir=keys),
            db,
            crypto.KeyRing.load(keys),
            clock=Clock(),
            passwords=crypto.FAST_PASSWORD_HASHING,
        )
        ready_cohort(ctx, tube_sets=0)
        lab_calendar.add_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "wrong day"})
        lab_calendar.withdraw_closure(ctx, CLI_ACTOR, COHORT, {"day": "2026-03-04", "reason": "mistake"})
    finally:
        db.dispose()
    with pytest.raises(RuntimeError, match="lab closure withdrawal"):
        migrate.downgrade(url, "0020")
    # Refused before the first step: from the review, SQLite committed the steps above 0021 one by
    # one, and a database left at 0021 made the service refuse to start.
    assert migrate.current_revision(url) == migrate.head_revision()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM lab_closure_withdrawal")).scalar_one() == 1
    finally:
        engine.dispose()
