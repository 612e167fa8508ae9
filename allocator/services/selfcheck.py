"""Installation qualification (`allocator selfcheck`, issue 18): is this instance installed as it
must be? Configuration, key files present with safe permissions, schema at head, every audit chain
and every list digest intact, time-zone data present, the e-mail relay reachable when one is
configured. Each check is a line of a dated report, signed with the instance's audit key like an
export manifest (allocator/manifest.py), so that `allocator export verify` checks it later.

Reads only, apart from what `allocator integrity-check` also writes: the check recorded for each
list (`check_integrity`), the kept kit check and, for a failure, its audit entry (`kit_check`), and
the kept audit verification; opens no arm."""

from __future__ import annotations

import platform
import smtplib
import socket
import ssl
import stat
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from allocator import audit, crypto, manifest, migrate
from allocator.audit import Actor
from allocator.db import Database
from allocator.models import Trial
from allocator.services import audit_trail
from allocator.services.context import ServiceContext
from allocator.services.lists import integrity
from allocator.services.lookups import current_definition
from allocator.services.supply import kit_check
from allocator.settings import Settings, SettingsError
from allocator.version import __version__

# Time zones the service itself needs, beside those of the loaded trials' sites.
BASE_ZONES = ("UTC", "Europe/Paris")

RelayProbe = Callable[[Settings], str]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class SelfcheckReport:
    at: datetime
    host: str
    environment: str
    checks: tuple[Check, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def lines(self) -> list[str]:
        out = [
            f"allocator {__version__} installation self-check on {self.host}, "
            f"{self.at.strftime('%Y-%m-%d %H:%M:%S UTC')}, environment {self.environment}: "
            + ("PASSED" if self.ok else "FAILED"),
        ]
        out += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return out

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_keys(key_dir: Path) -> tuple[list[Check], crypto.KeyRing | None]:
    """Every key file present, readable, and neither it nor its folder open to group or others."""
    checks: list[Check] = []
    if not key_dir.is_dir():
        return [Check("key directory", False, f"{key_dir} does not exist (run `allocator init`)")], None
    mode = _mode(key_dir)
    checks.append(
        Check(
            "key directory",
            not mode & 0o077,
            f"{key_dir} mode {mode:o}" + ("" if not mode & 0o077 else ": must be 700 (chmod 700)"),
        )
    )
    for purpose in crypto.Purpose:
        path = key_dir / f"{purpose.value}.key"
        if not path.is_file():
            checks.append(Check(f"key {purpose.value}", False, f"{path} is missing (run `allocator init`)"))
            continue
        mode = _mode(path)
        checks.append(
            Check(
                f"key {purpose.value}",
                not mode & 0o077,
                f"{path.name} mode {mode:o}" + ("" if not mode & 0o077 else ": must be 600 (chmod 600)"),
            )
        )
    try:
        ring = crypto.KeyRing.load(key_dir)
    except crypto.KeyError_ as exc:
        checks.append(Check("key files readable", False, str(exc)))
        return checks, None
    checks.append(Check("key files readable", True, f"{len(ring.sets)} key sets loaded"))
    return checks, ring


def check_schema(url: str) -> Check:
    try:
        current = migrate.current_revision(url)
    except Exception as exc:
        return Check("database schema", False, f"cannot read the schema: {type(exc).__name__}: {exc}"[:300])
    head = migrate.head_revision()
    if current == head:
        return Check("database schema", True, f"at head {head}")
    return Check(
        "database schema", False, f"at {current or '(empty)'}, head is {head} (run `allocator init`)"
    )


def check_time_zones(zones: list[str]) -> Check:
    missing = []
    for zone in sorted(set(zones)):
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            missing.append(zone)
    if missing:
        return Check("time-zone data", False, f"no data for {', '.join(missing)} (install tzdata)")
    return Check("time-zone data", True, f"{', '.join(sorted(set(zones)))} found")


def smtp_probe(settings: Settings) -> str:
    """Connect to the relay, greet it and (as configured) start TLS, then quit: no message is sent.
    Returns what the relay said; raises OSError or SMTPException when it cannot be reached."""
    host = settings.smtp_host or ""
    context = None
    if settings.smtp_security != "none":
        context = ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(host, settings.smtp_port, timeout=10, context=context)
    else:
        smtp = smtplib.SMTP(host, settings.smtp_port, timeout=10)
    with smtp:
        code, _ = smtp.ehlo()
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
            code, _ = smtp.ehlo()
    return f"{host}:{settings.smtp_port} answered {code} ({settings.smtp_security})"


def check_relay(settings: Settings, probe: RelayProbe) -> Check:
    if settings.smtp_host is None:
        return Check(
            "e-mail relay",
            True,
            "not configured (ALLOCATOR_SMTP_HOST unset): notifications stay in the application",
        )
    if settings.smtp_user and (
        settings.smtp_password_file is None or not settings.smtp_password_file.is_file()
    ):
        return Check(
            "e-mail relay", False, "ALLOCATOR_SMTP_USER is set but ALLOCATOR_SMTP_PASSWORD_FILE is not a file"
        )
    try:
        return Check("e-mail relay", True, probe(settings))
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        return Check(
            "e-mail relay",
            False,
            f"{settings.smtp_host}:{settings.smtp_port} not reachable: {type(exc).__name__}: {exc}"[:300],
        )


def check_database(ctx: ServiceContext, actor: Actor) -> tuple[list[Check], list[str]]:
    """Audit chains, list digests, kit histories, and the time zones of the loaded trials."""
    checks: list[Check] = []
    witness = ctx.settings.audit_witness
    with ctx.db.read_engine.connect() as connection:
        names = audit.chains(connection)
    marks = audit_trail.verification_marks(ctx, names)  # before the chains are read
    with ctx.db.read_engine.connect() as connection:
        results = [audit.verify_chain(connection, ctx.ring, chain, witness) for chain in names]
    audit_trail.keep_whole(ctx, results, marks)
    broken = [r.summary() for r in results if not r.ok]
    checks.append(
        Check(
            "audit chains",
            not broken,
            f"{len(results)} chains, {sum(r.entries for r in results)} entries intact"
            + (" (with the witness)" if witness else "")
            if not broken
            else "; ".join(broken)[:600],
        )
    )
    lists = integrity.check_integrity(ctx, actor)
    bad = [f"{r.label}: {'; '.join(r.problems)}" for r in lists if not r.ok]
    checks.append(
        Check(
            "list digests",
            not bad,
            f"{len(lists)} lists match their digests" if not bad else "; ".join(bad)[:600],
        )
    )
    # Every kit's history against the kit, kept like the daily `integrity-check` keeps it, so that
    # the kit pages check only what moves after it (issue 21); a disagreement is audited there.
    kits = kit_check.check_whole(ctx, actor)
    disagreeing = [f"{k.trial_code} ({len(k.suspects)} of {k.kits} kits)" for k in kits if not k.ok]
    checks.append(
        Check(
            "kit histories",
            not disagreeing,
            f"{sum(k.kits for k in kits)} kits agree with their histories"
            + ("" if all(k.kept for k in kits) else " (not kept: the kit pages check every kit)")
            if not disagreeing
            else "kits whose history does not agree (see the kit reconciliation): " + "; ".join(disagreeing),
        )
    )
    zones: list[str] = []
    with ctx.db.reading() as session:
        for trial in session.execute(select(Trial)).scalars():
            definition = current_definition(session, trial)
            zones.append(definition.timezone)
    return checks, zones


def run(
    environ: Mapping[str, str],
    actor: Actor,
    *,
    now: Callable[[], datetime],
    probe: RelayProbe = smtp_probe,
    build_context: Callable[[Settings, Database, crypto.KeyRing], ServiceContext] | None = None,
) -> SelfcheckReport:
    """Every check, in order; a check that cannot run because an earlier one failed says so."""
    checks: list[Check] = []
    at = now()
    try:
        settings = Settings.from_env(environ)
    except SettingsError as exc:
        checks.append(Check("configuration", False, str(exc)))
        return SelfcheckReport(at, socket.gethostname(), environ.get("ALLOCATOR_ENV", "?"), tuple(checks))
    checks.append(
        Check(
            "configuration",
            True,
            f"environment {settings.env.value}, database {settings.database_url.split('://', 1)[0]}, keys in {settings.key_dir}",
        )
    )
    key_checks, ring = check_keys(settings.key_dir)
    checks += key_checks
    if settings.audit_witness is not None:
        checks.append(
            Check(
                "audit witness",
                settings.audit_witness.is_file(),
                f"{settings.audit_witness}" + ("" if settings.audit_witness.is_file() else " is missing"),
            )
        )
    schema = check_schema(settings.database_url)
    checks.append(schema)
    zones = list(BASE_ZONES)
    if schema.ok and ring is not None:
        db = Database.connect(settings.database_url)
        try:
            ctx = (build_context or _build_context)(settings, db, ring)
            database_checks, trial_zones = check_database(ctx, actor)
            checks += database_checks
            zones += trial_zones
        finally:
            db.dispose()
    else:
        checks.append(
            Check(
                "audit chains, list digests and kit histories",
                False,
                "not checked: the keys or the schema failed above",
            )
        )
    checks.append(check_time_zones(zones))
    checks.append(check_relay(settings, probe))
    return SelfcheckReport(at, socket.gethostname(), settings.env.value, tuple(checks))


def _build_context(settings: Settings, db: Database, ring: crypto.KeyRing) -> ServiceContext:
    return ServiceContext.build(settings, db, ring)


def write_signed(report: SelfcheckReport, out: Path, ring: crypto.KeyRing | None) -> list[Path]:
    """The report as `selfcheck-<UTC time>.txt` in `out`, with its signed manifest beside it (the
    instance's audit key; `allocator export verify FILE` checks both). Unsigned, and said so, when
    the keys could not be read."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"selfcheck-{report.at.strftime('%Y%m%dT%H%M%SZ')}.txt"
    text = report.text()
    if ring is None:
        text += "NOT SIGNED: the instance's keys could not be read.\n"
    path = out / name
    path.write_text(text, encoding="utf-8")
    if ring is None:
        return [path]
    body: dict[str, Any] = {
        "kind": "allocator selfcheck",
        "software_version": __version__,
        "host": report.host,
        "environment": report.environment,
        "at": report.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ok": report.ok,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        "python": platform.python_version(),
        "files": [manifest.file_entry(name, text.encode("utf-8"))],
    }
    return [path, manifest.write(path, manifest.sign(ring, body))]
