"""Encrypted backups, restores and restore drills (issue 17, point 3; DIB-02, VAL-06), on SQLite
and PostgreSQL: a backup taken under write load restores into a fresh database with the same list
digests, kit histories and audit chains up to the backup point; the drill passes and is recorded;
a non-empty target and a corrupted backup are refused clearly; no key is ever in a backup."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from allocator import audit, crypto
from allocator.cli import main
from allocator.db import Database, connect_once
from allocator.models import AuditEvent
from allocator.permissions import Scope
from allocator.services import backup
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.subjects import randomize
from allocator.settings import Environment, Settings
from tests.conftest import PG_URL, FreshDatabase
from tests.support import CLI_ACTOR, ELIGIBLE, Clock, ReadyTrial, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())


@pytest.fixture
def instance(fresh_database: FreshDatabase, tmp_path: Path, clock: Clock) -> Iterator[ServiceContext]:
    fresh_database.migrate()
    key_dir = tmp_path / "keys"
    crypto.KeyRing.create_missing(key_dir)
    settings = Settings(env=Environment.TEST, database_url=fresh_database.url, key_dir=key_dir)
    db = Database.connect(fresh_database.url)
    try:
        yield ServiceContext.build(
            settings, db, crypto.KeyRing.load(key_dir), clock=clock, passwords=crypto.FAST_PASSWORD_HASHING
        )
    finally:
        db.dispose()


@pytest.fixture
def identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def empty_target(fresh_database: FreshDatabase, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database to restore into (PostgreSQL: a new database on the server, with the
    source's schema name, since a pg_dump restores into the schema it came from)."""
    if fresh_database.schema is None:
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    name = f"restore_{secrets.token_hex(6)}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(fresh_database.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _randomize(ctx: ServiceContext, ready: ReadyTrial, number: int) -> None:
    site, who = ("P1", ready.investigator) if number % 2 else ("P2", ready.investigator_p2)
    randomize.randomize(
        ctx,
        who,
        TRIAL,
        randomize.RandomizationRequest(
            site=site,
            screening_number=f"{site}-{number:04d}",
            eligibility=ELIGIBLE,
            strata={"admission_cause": "septic" if number % 3 else "non_septic"},
        ),
        ALL,
    )


class WriteLoad(threading.Thread):
    """Randomizations, one after another on connections of their own, until stopped."""

    def __init__(self, ctx: ServiceContext, ready: ReadyTrial) -> None:
        super().__init__(daemon=True)
        self.ctx = ServiceContext.build(
            ctx.settings,
            Database.connect(ctx.settings.database_url),
            ctx.ring,
            clock=ctx.clock,
            passwords=ctx.passwords,
        )
        self.ready = ready
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[str] = []

    def run(self) -> None:
        number = 100
        try:
            while not self.stop.is_set() and number < 114:
                number += 1
                try:
                    _randomize(self.ctx, self.ready, number)
                    self.done += 1
                except DomainError as exc:  # e.g. no kit of every arm left at a site
                    self.errors.append(exc.detail)
        finally:
            self.ctx.db.dispose()


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = connect_once(url)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(text(query))]
    finally:
        engine.dispose()


@pytest.mark.req("DIB-02")
@pytest.mark.req("VAL-06")
def test_a_backup_under_write_load_restores_identically_and_the_drill_passes(
    instance: ServiceContext,
    identity: pyrage.x25519.Identity,
    empty_target: str,
    tmp_path: Path,
) -> None:
    ctx = instance
    ready = ready_trial(ctx, kits_per_site=36)
    for number in range(1, 4):
        _randomize(ctx, ready, number)
    load = WriteLoad(ctx, ready)
    load.start()
    while load.done < 2 and load.is_alive():
        load.stop.wait(0.05)
    blob, made = backup.create(ctx.settings.database_url, str(identity.to_public()))
    load.stop.set()
    load.join(60)
    assert load.done >= 2, load.errors
    # A standard format: any age tool decrypts it with the identity; it holds the database only.
    plain = pyrage.decrypt(blob, [identity])
    for key_file in ctx.ring.key_dir.iterdir():
        assert key_file.read_bytes()[-60:] not in plain  # DIB-02: keys are backed up apart
    opened = backup.open_backup(blob, str(identity))
    assert opened.manifest["tables"]["subject"] >= 5

    backup.restore(opened, empty_target)
    with pytest.raises(backup.TargetNotEmpty):
        backup.restore(opened, empty_target)
    engine = connect_once(empty_target)
    try:
        with engine.connect() as connection:
            restored = backup.describe(connection)
            chains = {c: audit.verify_chain(connection, ctx.ring, c) for c in audit.chains(connection)}
    finally:
        engine.dispose()
    assert restored.as_json() == {k: opened.manifest[k] for k in restored.as_json()}
    assert all(r.ok for r in chains.values()), [r.summary() for r in chains.values()]
    # Up to the backup point, the restored data are the live data: audit chains, kit histories.
    live = ctx.settings.database_url
    for chain, (seq, _) in restored.audit_heads.items():
        query = f"SELECT seq, hash FROM audit_event WHERE chain = '{chain}' AND seq <= {seq} ORDER BY seq"
        assert _rows(empty_target, query) == _rows(live, query)
    kit_events = "SELECT id, kit_id, at, from_status, to_status, reason FROM kit_event ORDER BY id"
    restored_events = _rows(empty_target, kit_events)
    assert restored_events == _rows(live, kit_events)[: len(restored_events)]
    # The backup point lies inside the write load: after its first randomizations, not after the last.
    assert 3 + 2 <= made["tables"]["subject"] <= len(_rows(live, "SELECT id FROM subject")) == 3 + load.done

    report = backup.drill(ctx, CLI_ACTOR, opened)
    assert report.ok, report.lines()
    assert [name for name, _, _ in report.checks] == [
        "restore",
        "schema",
        "row counts",
        "audit heads",
        "list digests",
        "audit chains",
        "list integrity",
    ]
    with ctx.db.reading() as session:
        recorded = session.execute(
            select(AuditEvent).where(AuditEvent.action == "backup.restore_drill")
        ).scalar_one()
    assert recorded.chain == "system" and '"ok":true' in (recorded.new_values or "")
    # A drill can fail: a manifest that does not describe the data is caught, and recorded as failed.
    wrong = backup.Opened(
        {**opened.manifest, "tables": {**opened.manifest["tables"], "subject": 999}},
        opened.database_file,
        opened.data,
    )
    failed = backup.drill(ctx, CLI_ACTOR, wrong)
    assert not failed.ok and "  [FAIL] row counts: differ in subject" in failed.lines()
    with ctx.db.reading() as session:
        drills = session.execute(
            select(AuditEvent.new_values)
            .where(AuditEvent.action == "backup.restore_drill")
            .order_by(AuditEvent.seq)
        ).scalars()
        assert ['"ok":false' in (v or "") for v in drills] == [False, True]


@pytest.mark.req("DIB-02")
def test_a_corrupted_backup_or_a_wrong_identity_is_refused_clearly(
    instance: ServiceContext, identity: pyrage.x25519.Identity, empty_target: str
) -> None:
    blob, _ = backup.create(instance.settings.database_url, str(identity.to_public()))
    damaged = blob[:200] + bytes([blob[200] ^ 1]) + blob[201:]
    for bad, key in ((damaged, identity), (blob[:-100], identity), (blob, pyrage.x25519.Identity.generate())):
        with pytest.raises(backup.BackupError, match="cannot be decrypted: it is corrupted or truncated"):
            backup.open_backup(bad, str(key))
    assert backup.describe_tables(empty_target) == []
    with pytest.raises(DomainError, match="not an age recipient"):
        backup.create(instance.settings.database_url, "age1nonsense")


@pytest.mark.req("DIB-02")
@pytest.mark.req("VAL-06")
def test_the_backup_and_restore_commands(
    instance: ServiceContext,
    identity: pyrage.x25519.Identity,
    empty_target: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", instance.settings.database_url)
    monkeypatch.setenv("ALLOCATOR_KEY_DIR", str(instance.ring.key_dir))
    monkeypatch.setenv("ALLOCATOR_ENV", "test")
    monkeypatch.setenv("ALLOCATOR_BACKUP_RECIPIENT", str(identity.to_public()))
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(f"# created for the test\n{identity}\n")
    runner = CliRunner()
    out = tmp_path / "backup.age"
    result = runner.invoke(main, ["backup", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0 and "backup taken at" in result.output, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    result = runner.invoke(
        main, ["restore", "--drill", str(out), "--identity", str(identity_file)], catch_exceptions=False
    )
    assert result.exit_code == 0 and "PASSED" in result.output, result.output
    # Restoring over the live, non-empty database is refused.
    result = runner.invoke(
        main, ["restore", str(out), "--identity", str(identity_file)], catch_exceptions=False
    )
    assert result.exit_code == 1 and "a restore goes into an empty database" in result.output
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", empty_target)
    result = runner.invoke(
        main, ["restore", str(out), "--identity", str(identity_file)], catch_exceptions=False
    )
    assert result.exit_code == 0 and "restored the backup taken at" in result.output, result.output
    out.write_bytes(out.read_bytes()[:-50])
    result = runner.invoke(
        main, ["restore", "--drill", str(out), "--identity", str(identity_file)], catch_exceptions=False
    )
    assert result.exit_code == 1 and "cannot be decrypted" in result.output
