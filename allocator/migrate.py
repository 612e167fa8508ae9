"""Run the Alembic migrations programmatically (`allocator init`, the test suite, start-up checks)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select, table

from allocator import resources
from allocator.db import connect_once


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """The service's Alembic configuration, built here rather than read from alembic.ini: the
    migrations are found through the installed package (allocator.resources), and an installed
    service has no alembic.ini. The top-level alembic.ini serves the `alembic` command in a checkout
    (writing revisions, CI's upgrade/check round trip) and points at the same migrations/ folder."""
    config = Config()
    config.set_main_option("script_location", str(resources.migrations()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError(f"no migration found in {resources.migrations()}")
    return head


def current_revision(url: str) -> str | None:
    engine = connect_once(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


# Downgrades that would delete records: the revision whose downgrade drops them, the table that
# holds them, and what they are. `downgrade` refuses before its first step (each revision's own
# downgrade refuses too, but SQLite commits the steps taken before it one by one: a refusal part
# of the way down left the database below head, and the service refused to start).
RECORD_KEEPING_REVISIONS = {"0021": ("lab_closure_withdrawal", "lab closure withdrawal(s)")}


def downgrade(url: str, revision: str) -> None:
    """Down to `revision`; RuntimeError, with nothing changed, if a step would delete records."""
    current = current_revision(url)
    if current is not None:
        script = ScriptDirectory.from_config(alembic_config(url))
        undone = {step.revision for step in script.iterate_revisions(current, revision)}
        undone.discard(revision)  # the target itself stays
        engine = connect_once(url)
        try:
            with engine.connect() as conn:
                for step, (name, what) in RECORD_KEEPING_REVISIONS.items():
                    if step not in undone:
                        continue
                    kept = conn.execute(select(func.count()).select_from(table(name))).scalar_one()
                    if kept:
                        raise RuntimeError(
                            f"{kept} {what} recorded: the downgrade below {step} would delete them; refused"
                        )
        finally:
            engine.dispose()
    command.downgrade(alembic_config(url), revision)
