"""Encrypted backups, restores and restore drills (DIB-02, VAL-06).

A backup is one consistent snapshot of the database taken while the service runs — SQLite's online
backup API, or `pg_dump` inside an exported repeatable-read snapshot for PostgreSQL — with a
manifest taken from that same snapshot: the schema revision, the row count of every table, the head
of every audit chain and the storage digest of every list version. Both go into a tar file, which is
encrypted with age (through `pyrage`) to the recipient public key `ALLOCATOR_BACKUP_RECIPIENT`, so
the server holding the backup cannot read it. The key directory is never in a backup: keys are
backed up apart (README), and a backup without them opens no arm.

`restore` decrypts with the age identity, refuses a target that holds any table, and loads the
snapshot. `drill` restores into a scratch database and checks it — schema at head, every audit chain
verifies, every list matches its storage digest, counts and heads as in the manifest — then records
the drill and its result in the live instance's audit trail and removes the scratch database.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyrage
from sqlalchemy import Connection, create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from allocator import audit, migrate
from allocator.audit import Action, Actor
from allocator.db import Database, connect_once
from allocator.models import AuditChainHead, ListVersion, RandomizationList
from allocator.models.base import Base
from allocator.services.context import ServiceContext, utcnow
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lists import integrity as lists_integrity
from allocator.version import __version__

FORMAT = "allocator-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
PG_FILE = "database.pgdump"


class BackupError(ValidationFailed):
    slug = "backup-invalid"
    title = "The backup cannot be used"


class TargetNotEmpty(Conflict):
    slug = "restore-target-not-empty"
    title = "The restore target is not empty"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a backup holds about its database, taken from the same snapshot as the data."""

    backend: str
    schema_revision: str | None
    tables: Mapping[str, int]
    audit_heads: Mapping[str, tuple[int, str]]
    list_digests: Mapping[str, str]  # "label vN" -> storage SHA-256

    def as_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "schema_revision": self.schema_revision,
            "tables": dict(self.tables),
            "audit_heads": {k: list(v) for k, v in self.audit_heads.items()},
            "list_digests": dict(self.list_digests),
        }


def _recipient(recipient: str) -> pyrage.x25519.Recipient:
    try:
        return pyrage.x25519.Recipient.from_str(recipient.strip())
    except pyrage.RecipientError:
        raise ValidationFailed(
            "not an age recipient",
            errors=[FieldProblem("ALLOCATOR_BACKUP_RECIPIENT", "must be an age public key (age1...)")],
        ) from None


def _identity(identity: str) -> pyrage.x25519.Identity:
    lines = [line.strip() for line in identity.splitlines() if line.strip() and not line.startswith("#")]
    try:
        return pyrage.x25519.Identity.from_str(lines[0] if lines else "")
    except pyrage.IdentityError:
        raise ValidationFailed(
            "not an age identity",
            errors=[FieldProblem("identity", "must be an age secret key (AGE-SECRET-KEY-1...)")],
        ) from None


def describe(connection: Connection) -> Snapshot:
    """Counts, audit heads and list digests, read in `connection`'s transaction."""
    tables = {
        t.name: int(connection.execute(select(text("count(*)")).select_from(t)).scalar_one())
        for t in Base.metadata.sorted_tables
    }
    heads = {
        chain: (int(seq), str(head_hash))
        for chain, seq, head_hash in connection.execute(
            select(AuditChainHead.chain, AuditChainHead.seq, AuditChainHead.hash).order_by(
                AuditChainHead.chain
            )
        )
    }
    digests = {
        f"{label} v{version}": str(storage)
        for label, version, storage in connection.execute(
            select(RandomizationList.label, ListVersion.version, ListVersion.storage_sha256)
            .join(RandomizationList, RandomizationList.id == ListVersion.list_id)
            .order_by(RandomizationList.label, ListVersion.version)
        )
    }
    revision = None
    if "alembic_version" in inspect(connection).get_table_names():
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    return Snapshot(connection.dialect.name, revision, tables, heads, digests)


def _sqlite_path(url: str) -> Path:
    parsed = make_url(url)
    if not parsed.database or parsed.database == ":memory:":
        raise ValidationFailed(
            "a backup needs a database file", errors=[FieldProblem("database_url", "in memory")]
        )
    return Path(parsed.database)


def _libpq(url: str) -> tuple[str, str | None]:
    """A libpq URI for pg_dump/pg_restore, and the schema named by `options=-csearch_path=`."""
    parsed = make_url(url)
    options = str(parsed.query.get("options", ""))
    schema = options.split("search_path=", 1)[1].split(maxsplit=1)[0] if "search_path=" in options else None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False), schema


def _run(args: list[str]) -> None:
    tool = shutil.which(args[0])
    if tool is None:
        raise BackupError(f"{args[0]} is not installed", errors=[FieldProblem(args[0], "not found on PATH")])
    done = subprocess.run([tool, *args[1:]], capture_output=True, text=True, check=False)  # noqa: S603 - fixed tool, argument list
    if done.returncode != 0:
        raise BackupError(f"{args[0]} failed: {done.stderr.strip()[:500]}")


def _snapshot_sqlite(url: str, work: Path) -> tuple[Path, Snapshot]:
    path = _sqlite_path(url)
    if not path.is_file():  # sqlite3.connect would create an empty file and back it up
        raise BackupError(f"no database at {path}", errors=[FieldProblem("database_url", "no such file")])
    source = sqlite3.connect(path)
    target_path = work / SQLITE_FILE
    target = sqlite3.connect(target_path)
    try:
        source.backup(target)  # one step: a consistent copy while writers go on (WAL)
    finally:
        target.close()
        source.close()
    engine = connect_once(f"sqlite:///{target_path}")
    try:
        with engine.connect() as connection:
            return target_path, describe(connection)
    finally:
        engine.dispose()


def _snapshot_postgresql(url: str, work: Path) -> tuple[Path, Snapshot]:
    uri, schema = _libpq(url)
    target_path = work / PG_FILE
    engine = create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as connection:
            connection.execute(text("SET TRANSACTION READ ONLY"))
            snapshot_id = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            described = describe(connection)
            args = [
                "pg_dump",
                f"--dbname={uri}",
                "--format=custom",
                "--no-owner",
                f"--snapshot={snapshot_id}",
            ]
            if schema is not None:
                args.append(f"--schema={schema}")
            _run([*args, f"--file={target_path}"])
            connection.rollback()
    finally:
        engine.dispose()
    return target_path, described


def create(url: str, recipient: str) -> tuple[bytes, dict[str, Any]]:
    """An encrypted backup of the database at `url` (the key directory is never read), and its
    manifest. Consistent while the service runs."""
    to = _recipient(recipient)
    with tempfile.TemporaryDirectory(prefix="allocator-backup-") as tmp:
        work = Path(tmp)
        backend = make_url(url).get_backend_name()
        path, snapshot = (
            _snapshot_sqlite(url, work) if backend == "sqlite" else _snapshot_postgresql(url, work)
        )
        data = path.read_bytes()
    manifest = {
        "format": FORMAT,
        "software_version": __version__,
        "taken_at": audit.format_time(utcnow()),
        "database_file": path.name,
        "database_sha256": hashlib.sha256(data).hexdigest(),
        **snapshot.as_json(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in (
            (MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode()),
            (path.name, data),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(content))
    return pyrage.encrypt(buffer.getvalue(), [to]), manifest


@dataclass(frozen=True, slots=True)
class Opened:
    manifest: Mapping[str, Any]
    database_file: str
    data: bytes


def open_backup(blob: bytes, identity: str) -> Opened:
    """Decrypt and unpack a backup; refuse anything corrupted, truncated or not ours, clearly."""
    who = _identity(identity)
    try:
        plain = pyrage.decrypt(blob, [who])
    except pyrage.DecryptError:
        raise BackupError(
            "the backup cannot be decrypted: it is corrupted or truncated, or was not encrypted to this identity",
            errors=[FieldProblem("file", "not a readable backup")],
        ) from None
    try:
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r") as archive:
            members = {m.name: archive.extractfile(m) for m in archive.getmembers() if m.isfile()}
            manifest = json.loads(members[MANIFEST].read())  # type: ignore[union-attr]
            name = str(manifest["database_file"])
            data = members[name].read()  # type: ignore[union-attr]
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise BackupError(
            f"the backup is not complete ({exc})", errors=[FieldProblem("file", "incomplete")]
        ) from None
    if manifest.get("format") != FORMAT:
        raise BackupError("not an allocator backup", errors=[FieldProblem("file", "unknown format")])
    if hashlib.sha256(data).hexdigest() != manifest.get("database_sha256"):
        raise BackupError(
            "the database in the backup does not match its manifest", errors=[FieldProblem("file", "altered")]
        )
    return Opened(manifest, name, data)


def describe_tables(url: str) -> list[str]:
    """The tables of the database at `url` (empty: a valid restore target)."""
    return _tables_in(url)


def _tables_in(url: str) -> list[str]:
    engine = connect_once(url)
    try:
        with engine.connect() as connection:
            return inspect(connection).get_table_names()
    finally:
        engine.dispose()


def restore(opened: Opened, url: str) -> None:
    """Load a backup into the empty database at `url`. Refuses a target holding any table."""
    backend = make_url(url).get_backend_name()
    if backend != opened.manifest.get("backend"):
        raise BackupError(
            f"a {opened.manifest.get('backend')} backup cannot be restored into {backend}",
            errors=[FieldProblem("database_url", "other backend")],
        )
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path.exists() and path.stat().st_size and _tables_in(url):
            raise TargetNotEmpty(f"{path} holds tables: a restore goes into an empty database")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="allocator-restore-") as tmp:
            staged = Path(tmp) / SQLITE_FILE
            staged.write_bytes(opened.data)
            source = sqlite3.connect(staged)
            target = sqlite3.connect(path)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
        return
    if _tables_in(url):
        raise TargetNotEmpty("the target database holds tables: a restore goes into an empty database")
    uri, _schema = _libpq(url)
    with tempfile.TemporaryDirectory(prefix="allocator-restore-") as tmp:
        staged = Path(tmp) / PG_FILE
        staged.write_bytes(opened.data)
        _run(
            [
                "pg_restore",
                f"--dbname={uri}",
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                str(staged),
            ]
        )


@contextmanager
def scratch_database(live_url: str) -> Iterator[str]:
    """A new, empty database beside the live one (a temporary SQLite file, or a new PostgreSQL
    database on the same server, dropped afterwards); yields its URL."""
    parsed = make_url(live_url)
    if parsed.get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix="allocator-drill-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'drill.db'}"
        return
    name = f"allocator_drill_{secrets.token_hex(6)}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield parsed.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True, slots=True)
class DrillReport:
    taken_at: str
    ok: bool
    checks: tuple[tuple[str, bool, str], ...] = field(default=())

    def lines(self) -> list[str]:
        out = [f"restore drill of the backup taken at {self.taken_at}: {'PASSED' if self.ok else 'FAILED'}"]
        out += [f"  [{'ok' if good else 'FAIL'}] {name}: {detail}" for name, good, detail in self.checks]
        return out


def _check_restored(
    ctx: ServiceContext, actor: Actor, opened: Opened, url: str, checks: list[tuple[str, bool, str]]
) -> None:
    """The drill's checks of a restored scratch database, appended to `checks`."""
    manifest = opened.manifest
    revision = migrate.current_revision(url)
    head = migrate.head_revision()
    checks.append(("schema", revision == head, f"at {revision}, head is {head}"))
    engine = connect_once(url)
    try:
        with engine.connect() as connection:
            found = describe(connection)
            expected = manifest.get("tables", {})
            differing = sorted(
                t for t in set(expected) | set(found.tables) if expected.get(t) != found.tables.get(t)
            )
            checks.append(
                (
                    "row counts",
                    not differing,
                    f"{len(found.tables)} tables as in the manifest"
                    if not differing
                    else "differ in " + ", ".join(differing),
                )
            )
            heads_ok = {k: list(v) for k, v in found.audit_heads.items()} == manifest.get("audit_heads")
            checks.append(("audit heads", heads_ok, f"{len(found.audit_heads)} chains as in the manifest"))
            digests_ok = dict(found.list_digests) == manifest.get("list_digests")
            checks.append(
                (
                    "list digests",
                    digests_ok,
                    f"{len(found.list_digests)} list versions as in the manifest",
                )
            )
            results = [audit.verify_chain(connection, ctx.ring, chain) for chain in audit.chains(connection)]
            broken = [r.summary() for r in results if not r.ok]
            checks.append(
                (
                    "audit chains",
                    not broken,
                    f"{len(results)} chains, {sum(r.entries for r in results)} entries intact"
                    if not broken
                    else "; ".join(broken),
                )
            )
    finally:
        engine.dispose()
    scratch = Database.connect(url)
    try:
        scratch_ctx = ServiceContext.build(
            replace(ctx.settings, database_url=url, audit_witness=None),
            scratch,
            ctx.ring,
            clock=ctx.clock,
        )
        integrity = lists_integrity.check_integrity(scratch_ctx, actor)
    finally:
        scratch.dispose()
    bad = [r.label for r in integrity if not r.ok]
    checks.append(
        (
            "list integrity",
            not bad,
            f"{len(integrity)} lists match their digests" if not bad else "differ: " + ", ".join(bad),
        )
    )


def drill(ctx: ServiceContext, actor: Actor, opened: Opened) -> DrillReport:
    """Restore into scratch and check it; record the drill in the live audit trail (VAL-06)."""
    manifest = opened.manifest
    checks: list[tuple[str, bool, str]] = []
    with scratch_database(ctx.settings.database_url) as url:
        try:
            restore(opened, url)
        except BackupError as exc:
            checks.append(("restore", False, exc.detail))
        else:
            checks.append(("restore", True, f"{opened.database_file} loaded into a scratch database"))
            _check_restored(ctx, actor, opened, url, checks)
    report = DrillReport(str(manifest.get("taken_at")), all(good for _, good, _ in checks), tuple(checks))
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=audit.SYSTEM_CHAIN,
            action=Action.RESTORE_DRILL,
            object_type="backup",
            object_id=str(manifest.get("taken_at")),
            new={
                "ok": report.ok,
                "database_sha256": manifest.get("database_sha256"),
                "checks": {name: good for name, good, _ in checks},
            },
            at=ctx.now(),
        )
    return report
