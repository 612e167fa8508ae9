"""The `allocator` command (click, as Flask's CLI).

Every command builds what it needs from the environment (contract.md: ALLOCATOR_DATABASE_URL,
ALLOCATOR_KEY_DIR, ALLOCATOR_ENV), calls services with a command-line actor, and exits non-zero
with a message naming the problem. Secrets are printed only where the contract says so (one-time
passwords, new API tokens), and never logged.
"""

from __future__ import annotations

import base64
import getpass
import html
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from sqlalchemy import select

from allocator import audit, crypto, manifest, migrate, notices, resources
from allocator.audit import Actor
from allocator.db import Database, connection_budget_problem, server_connection_limit
from allocator.models import User
from allocator.permissions import Scope
from allocator.services import (
    archive,
    audit_trail,
    backup,
    codebreak,
    exports,
    notifications,
    signatures,
    sites,
    trials,
)
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.lists import approval, generation, integrity, quality
from allocator.services.samples import kits as sample_kits
from allocator.services.supply import kit_check, kit_lists, resupply, shipments
from allocator.settings import SERVE_THREADS, Environment, Settings, SettingsError
from allocator.trialdef import NotRandomized
from allocator.web.hygiene import MAX_URL_BYTES

DEMO_TRIAL = "ifn-gamma-pais"  # shipped with the package (allocator.resources)
DEMO_COHORT = "immunosepsis-4"  # the observational cohort beside it (issue 20)
LANGUAGES = ("en", "fr")
_REQUIREMENT_ID = re.compile(r"\s*\((?:[A-Z]{2,4}-\d{2,3})(?:[,;/ ]+[A-Z]{2,4}-\d{2,3})*\)")
_CHOSEN = {"language": "en"}  # set by `main` from --lang or the environment


def language_of_environment(environ: Mapping[str, str]) -> str:
    """The language of the messages as the shell asks for it: LC_ALL, then LC_MESSAGES, then LANG
    ("fr_FR.UTF-8" -> French); English otherwise (issue 13)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            return "fr" if value.lower().startswith("fr") else "en"
    return "en"


def _(msgid: str, /, **values: object) -> str:
    """A message of the command in the chosen language (--lang, or the environment's)."""
    translated = notices.catalogue_gettext(_CHOSEN["language"])(msgid)
    return translated % values if values else translated


def _plain(message: str) -> str:
    """A service's message for the operator's screen: translated when the catalogue knows it, and
    without requirement ids (they stay in the audit trail and the logs)."""
    return _(_REQUIREMENT_ID.sub("", message).strip())


def _fail(message: str, code: int = 1) -> NoReturn:
    click.secho(_("error: %(message)s", message=message), fg="red", err=True)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        _fail(str(exc), 2)


def _actor() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Actor.command_line(user, request_id=f"cli-{secrets.token_hex(6)}")


@contextmanager
def _context(settings: Settings, *, check_schema: bool = True) -> Iterator[ServiceContext]:
    if check_schema:
        current = migrate.current_revision(settings.database_url)
        if current != migrate.head_revision():
            _fail(
                f"the database is at schema {current or '(empty)'}, not {migrate.head_revision()}: run `allocator init`"
            )
    try:
        ring = crypto.KeyRing.load(settings.key_dir, strict_modes=settings.is_production)
    except crypto.KeyError_ as exc:
        _fail(str(exc))
    db = Database.connect(settings.database_url)
    try:
        yield ServiceContext.build(settings, db, ring)
    finally:
        db.dispose()


def _domain(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DomainError into a readable message and exit status 1."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DomainError as exc:
            click.secho(_("error: %(message)s", message=_plain(exc.detail)), fg="red", err=True)
            for problem in exc.errors:
                click.echo(f"  {problem.field}: {_plain(problem.message)}", err=True)
            sys.exit(1)
        except NotRandomized as exc:  # issue 20: a randomization-only command on a cohort
            detail = f"{exc.code} is an observational study: it has no arms, lists or drug kits"
            click.secho(_("error: %(message)s", message=_plain(detail)), fg="red", err=True)
            sys.exit(1)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--lang",
    type=click.Choice(LANGUAGES),
    default=None,
    help="Language of the messages (default: from LC_ALL / LANG, else English).",
)
def main(lang: str | None) -> None:
    """allocator: randomization and blinded drug allocation for double-blind trials."""
    _CHOSEN["language"] = lang or language_of_environment(os.environ)


@main.command("init")
def init_command() -> None:
    """Create or migrate the database to the latest schema and create missing keys."""
    settings = _settings()
    created = crypto.KeyRing.create_missing(settings.key_dir)
    for purpose in created:
        click.echo(_("created %(purpose)s key in %(where)s", purpose=purpose.value, where=settings.key_dir))
    before = migrate.current_revision(settings.database_url)
    migrate.upgrade(settings.database_url)
    after = migrate.current_revision(settings.database_url)
    if before == after:
        click.echo(_("database already at the latest schema (%(revision)s)", revision=after))
    else:
        click.echo(
            _("database migrated from %(before)s to %(after)s", before=before or _("(empty)"), after=after)
        )


@main.command("load-trial")
@click.argument("path", type=click.Path(path_type=Path))
@_domain
def load_trial_command(path: Path) -> None:
    """Validate a trial definition file and load it (a changed file becomes a new version).

    PATH is a file, or the name of a definition shipped with allocator (`ifn-gamma-pais`): an
    installed service has no trials/ folder of its own. A file of that name takes precedence."""
    settings = _settings()
    source_name = str(path)
    if not path.exists() and len(path.parts) == 1 and (shipped := _shipped(path.name)):
        click.echo(_("loading the definition shipped with allocator: %(path)s", path=shipped))
        path, source_name = shipped, resources.shipped_source_name(shipped)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(
            _(
                "%(path)s: file not found (definitions shipped with allocator: %(names)s)",
                path=path,
                names=_shipped_names(),
            )
        )
    except UnicodeDecodeError:
        _fail(_("%(path)s: not UTF-8 text", path=path))
    with _context(settings) as ctx:
        result = trials.load_trial(ctx, _actor(), text, source_name=source_name)
    messages = {
        "created": _("loaded trial %(trial)s (definition version 1)", trial=result.trial_code),
        "new_version": _(
            "loaded definition version %(version)s of trial %(trial)s",
            version=result.version,
            trial=result.trial_code,
        ),
        "unchanged": _(
            "trial %(trial)s already has this definition (version %(version)s); nothing changed",
            trial=result.trial_code,
            version=result.version,
        ),
    }
    click.echo(messages[result.outcome])
    if result.sites_added:
        click.echo(_("sites added (pending activation): %(sites)s", sites=", ".join(result.sites_added)))
    for low in result.low_triggers:
        field = (
            "supply.trigger_courses"
            if low.site is None
            else "supply.sites (" + low.site + ").trigger_courses"
        )
        click.echo(
            _(
                "note: %(field)s = %(trigger)s courses does not cover how far apart the arms' stock at a "
                "site can drift with these blocks and strata (%(drift)s courses), before the courses used "
                'during the lead time: a site may run out of one arm. See "Choosing the levels" in '
                "docs/trial-definition.md.",
                field=field,
                trigger=low.trigger,
                drift=low.drift,
            )
        )


def _shipped(name: str) -> Path | None:
    try:
        return resources.shipped_trial(name)
    except resources.ResourceMissing:
        return None  # a broken installation: the message lists what was looked for


def _shipped_names() -> str:
    try:
        return ", ".join(resources.shipped_trials()) or "none"
    except resources.ResourceMissing as exc:
        return f"none found: {exc}"


@main.command("create-user")
@click.argument("username")
@click.option("--role", required=True, help="Role to grant, e.g. investigator")
@click.option("--trial", "trial_code", help="Trial code for trial roles")
@click.option("--site", "site_code", help="Site code for site roles")
@click.option("--name", "full_name", help="Printed name (defaults to the user name)")
@click.option("--email", help="E-mail address for notifications")
@_domain
def create_user_command(
    username: str,
    role: str,
    trial_code: str | None,
    site_code: str | None,
    full_name: str | None,
    email: str | None,
) -> None:
    """Create a user with one role and print a one-time password."""
    settings = _settings()
    with _context(settings) as ctx:
        created = users.create_user(
            ctx,
            _actor(),
            users.NewUser(username=username, full_name=full_name or username, email=email),
            users.RoleRequest(role=role, trial_code=trial_code, site_code=site_code),
        )
    click.echo(
        _(
            "user %(username)s created; one-time password (change it at first sign-in):",
            username=created.username,
        )
    )
    click.echo(created.one_time_password)


@main.command("create-token")
@click.argument("username")
@click.option("--name", default="api", show_default=True, help="What the token is for")
@_domain
def create_token_command(username: str, name: str) -> None:
    """Print a new API bearer token for USERNAME (shown once; only its digest is stored)."""
    settings = _settings()
    with _context(settings) as ctx:
        created = users.create_token(ctx, _actor(), username, name)
    click.echo(created.token)


@main.command("generate-lists")
@click.argument("trial")
@click.option(
    "--mode",
    required=True,
    type=click.Choice(["test", "production"]),
    help="Must be the instance's mode: production on a production instance, test elsewhere",
)
@_domain
def generate_lists_command(trial: str, mode: str) -> None:
    """Generate the randomization list of TRIAL from a fresh secret seed (status DRAFT)."""
    settings = _settings()
    with _context(settings) as ctx, click.progressbar(length=1, label="generating strata") as bar:

        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        generated = generation.generate_lists(ctx, _actor(), trial, mode, progress)
    click.echo(
        f"generated {generated.label}: {generated.strata} strata, {generated.slots} slots ({generated.method})"
    )
    click.echo(f"storage digest {generated.storage_sha256}")
    click.echo(
        _("next: the unblinded statistician reviews, approves and activates it (signed) in the web UI")
    )


@main.command("verify-list")
@click.argument("trial")
@_domain
def verify_list_command(trial: str) -> None:
    """Regenerate every list of TRIAL from its seed and parameters and compare (exit 1 on a difference)."""
    settings = _settings()
    with _context(settings) as ctx:
        results = integrity.verify_lists(ctx, _actor(), trial)
    if not results:
        _fail(f"{trial} has no randomization list")
    for result in results:
        if result.ok:
            click.echo(
                _(
                    "%(list)s: identical to its regeneration (%(count)s slots)",
                    list=result.label,
                    count=result.slots,
                )
            )
        else:
            click.secho(_("%(list)s: DIFFERS", list=result.label), fg="red")
            for problem in result.problems[:20]:
                click.echo(f"  {problem}")
    if not all(r.ok for r in results):
        sys.exit(1)


@main.command("integrity-check")
@click.argument("trial", required=False)
def integrity_check_command(trial: str | None) -> None:
    """Check the stored lists against their digests and every kit's history (run daily).

    Exit 1 on a failure; a list that differs also blocks randomization from it."""
    settings = _settings()
    checked_by = _actor()  # one request id for the run's audit entries
    with _context(settings) as ctx:
        results = integrity.check_integrity(ctx, checked_by, trial)
        for result in results:  # said before the kits are checked, whatever happens to that check
            click.echo(
                _("%(list)s: intact", list=result.label)
                if result.ok
                else _(
                    "%(list)s: FAILED: %(problems)s", list=result.label, problems="; ".join(result.problems)
                )
            )
        kits = kit_check.check_whole(ctx, checked_by, trial)
    for checked in kits:
        if not checked.kits:
            continue  # a trial without kits: nothing to say
        if checked.ok:
            click.echo(
                _(
                    "%(trial)s: kit histories agree (%(count)s kits)",
                    trial=checked.trial_code,
                    count=checked.kits,
                )
            )
        else:
            click.echo(
                _(
                    "%(trial)s: kits whose history does not agree: %(count)s (see the kit reconciliation)",
                    trial=checked.trial_code,
                    count=len(checked.suspects),
                )
            )
        if not checked.kept:
            click.echo(_("%(trial)s: the kit check could not be kept", trial=checked.trial_code), err=True)
        if not checked.ok and not checked.audited:
            click.echo(
                _("%(trial)s: the failure could not be written to the audit trail", trial=checked.trial_code),
                err=True,
            )
    if not all(r.ok for r in results) or not all(k.ok for k in kits):
        sys.exit(1)


@main.command("quality-report")
@click.argument("trial")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write to FILE (.txt, .pdf or .html) instead of the screen"
)
@_domain
def quality_report_command(trial: str, out: Path | None) -> None:
    """Balance and predictability figures of TRIAL's randomization design, beside alternatives."""
    settings = _settings()
    with _context(settings) as ctx:
        if out is not None and out.suffix == ".pdf":
            out.write_bytes(quality.quality_pdf(ctx, trial))
        else:
            document = quality.quality_document(ctx, trial)
            if out is None:
                click.echo(document.text)
            elif out.suffix == ".txt":
                out.write_text(document.text, encoding="utf-8")
            elif out.suffix == ".html":
                out.write_text(
                    quality_html(document, ctx.now().strftime("%Y-%m-%d %H:%M UTC")), encoding="utf-8"
                )
            else:
                _fail("--out must end in .txt, .pdf or .html", 2)
    if out is not None:
        click.echo(_("written %(path)s", path=out))


def quality_html(document: quality.QualityDocument, generated_at: str) -> str:
    """A standalone HTML page (charts as SVG images, no script)."""

    def image(svg: str) -> str:
        return f'<img alt="chart" src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'

    code = html.escape(document.code)
    return (
        f"<!doctype html><meta charset=utf-8><title>Design quality - {code}</title>"
        f"<h1>Randomization design quality - {code}</h1><p>{html.escape(generated_at)}</p>"
        f"<pre>{html.escape(document.text)}</pre>{image(document.balance_svg)}{image(document.distribution_svg)}"
    )


@main.command("selfcheck")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the dated report and its signed manifest (selfcheck-<time>.txt) into this folder",
)
def selfcheck_command(out: Path | None) -> None:
    """Installation qualification: configuration, keys and their permissions, schema at head, audit
    chains, list digests, kit histories, time-zone data and the e-mail relay. Exit 1 on any failure."""
    from allocator.services import selfcheck  # noqa: PLC0415

    report = selfcheck.run(os.environ, _actor(), now=lambda: datetime.now(UTC))
    for line in report.lines():
        click.echo(line)
    if out is not None:
        ring = None
        with suppress(crypto.KeyError_, SettingsError):
            ring = crypto.KeyRing.load(Settings.from_env().key_dir)
        for path in selfcheck.write_signed(report, out, ring):
            click.echo(f"written {path}")
    if not report.ok:
        sys.exit(1)


@main.command("validation-report")
@click.option(
    "--junit",
    "junit_file",
    required=True,
    type=click.Path(path_type=Path),
    help="JUnit XML file of a test run",
)
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder for the HTML, PDF and CSV"
)
@click.option(
    "--requirements",
    "requirements_file",
    default=Path("docs/requirements.md"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="The requirements document",
)
@click.option(
    "--sbom",
    "sbom_file",
    type=click.Path(path_type=Path),
    help="CycloneDX SBOM for dependency versions and hashes (default: the newest dist/allocator-*.cdx.json)",
)
@click.option(
    "--database-url",
    "database_urls",
    multiple=True,
    envvar="ALLOCATOR_TEST_DATABASE_URL",
    help="Database server the tests ran on, to record its version (default: $ALLOCATOR_TEST_DATABASE_URL)",
)
def validation_report_command(
    junit_file: Path,
    out: Path,
    requirements_file: Path,
    sbom_file: Path | None,
    database_urls: tuple[str, ...],
) -> None:
    """Traceability matrix from every requirement to its tests' results in a run (VAL-01). Exit 1
    when a MUST requirement has no passing test or a citing test failed."""
    from allocator import validation  # noqa: PLC0415 - reportlab only for this command

    if sbom_file is None:
        found = sorted(Path("dist").glob("allocator-*.cdx.json"), key=lambda p: p.stat().st_mtime)
        sbom_file = found[-1] if found else None
    try:
        report = validation.build_report(
            requirements_file=requirements_file,
            junit_file=junit_file,
            generated_at=datetime.now(UTC),
            sbom_file=sbom_file,
            constraints_file=Path("constraints.txt"),
            database_urls=list(database_urls),
            checkout=Path.cwd(),
        )
    except validation.ValidationInputError as exc:
        _fail(str(exc), 2)
    for path in validation.write_report(report, out):
        click.echo(f"written {path}")
    for line in report.summary_lines():
        click.echo(line)
    if not report.acceptable:
        sys.exit(1)


@main.group("audit")
def audit_group() -> None:
    """Verify and checkpoint the audit trail."""


@audit_group.command("verify")
@click.argument("trial", required=False)
@click.option(
    "--witness",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The witness file of signed heads (default: ALLOCATOR_AUDIT_WITNESS); detects truncation.",
)
def audit_verify_command(trial: str | None, witness: Path | None) -> None:
    """Check the whole audit chain (or one trial's); exit 1 and name the first broken entry."""
    settings = _settings()
    witness = witness or settings.audit_witness
    if witness is not None and not witness.is_file():
        _fail(f"--witness: no witness file at {witness}")
    workers = os.cpu_count() or 1
    with _context(settings) as ctx:
        with ctx.db.read_engine.connect() as conn:
            names = [trial] if trial else audit.chains(conn)
            sizes = {name: audit.chain_length(conn, name) for name in names}
        marks = audit_trail.verification_marks(ctx, names)  # before the chains are read
        results = [
            # Long chains are hashed by several processes; the result is the same.
            audit.verify_chain_parallel(settings.database_url, ctx.ring, name, workers, witness)
            if sizes[name] >= PARALLEL_VERIFY_FROM and workers > 1
            else _verify_one(ctx, name, witness)
            for name in names
        ]
        # The audit pages then verify only what is appended after this (issue 21).
        audit_trail.keep_whole(ctx, results, marks)
    if trial and results and results[0].entries == 0:
        _fail(f"no audit entries for {trial!r}")
    broken = [r for r in results if not r.ok]
    for result in results:
        click.echo(result.summary())
        for problem in result.problems[1:5]:
            click.echo(_("  also: %(problem)s", problem=problem.message))
    if broken:
        sys.exit(1)


PARALLEL_VERIFY_FROM = 50_000


def _verify_one(ctx: ServiceContext, chain: str, witness: Path | None) -> audit.VerifyResult:
    with ctx.db.read_engine.connect() as conn:
        return audit.verify_chain(conn, ctx.ring, chain, witness)


@audit_group.command("checkpoint")
def audit_checkpoint_command() -> None:
    """Sign the head of every chain now (run it from cron, e.g. hourly)."""
    settings = _settings()
    with _context(settings) as ctx:
        with ctx.db.read_engine.connect() as conn:
            names = audit.chains(conn)
        for name in names:
            with ctx.db.unit_of_work() as session:
                checkpoint = ctx.audit.checkpoint(session, name, ctx.now())
            click.echo(
                _("%(chain)s: signed up to entry %(entry)s", chain=name, entry=checkpoint.seq)
                if checkpoint
                else _("%(chain)s: nothing new to sign", chain=name)
            )


@main.command("send-mail")
def send_mail_command() -> None:
    """Send the blinded notifications not yet e-mailed (for cron or a systemd timer; the web server
    also sends them in the background when ALLOCATOR_SMTP_HOST is set)."""
    settings = _settings()
    if not settings.smtp_host:
        _fail(_("no SMTP relay is configured: set ALLOCATOR_SMTP_HOST (and ALLOCATOR_SMTP_PORT)"))
    with _context(settings) as ctx:
        report = notifications.send_pending(ctx)
    click.echo(
        _(
            "%(sent)s message(s) sent for %(notifications)s notification(s); %(failed)s notification(s) "
            "failed and will be tried again",
            sent=report.sent,
            notifications=report.notifications,
            failed=report.failed,
        )
    )
    if report.failed:
        sys.exit(1)


@main.command("resupply")
@click.argument("trial")
@_domain
def resupply_command(trial: str) -> None:
    """Check every active site of TRIAL against its resupply levels and request the shipments due
    (run it daily from cron: kits passing their usable date between two events are noticed then).
    Exit 1 when a site cannot be resupplied."""
    settings = _settings()
    with _context(settings) as ctx:
        checks = resupply.check_sites(ctx, _actor(), trial)
    if not checks:
        click.echo(_("%(trial)s: no active site to check, or no [supply] in its definition", trial=trial))
    for check in checks:
        if check.shipment:
            line = _("shipment %(shipment)s requested", shipment=check.shipment)
        elif check.impossible:
            line = _("cannot be resupplied: the depot lacks usable kits")
        else:
            line = _("nothing due")
        click.echo(
            _(
                "%(site)s: %(courses)s course(s), level %(level)s: %(outcome)s",
                site=check.site,
                courses=check.courses,
                level=check.trigger,
                outcome=line,
            )
        )
    if any(check.impossible for check in checks):
        sys.exit(1)


DEMO_USERS = (
    ("investigator", "Dr Inès Vestigatrice", "investigator", "P1"),
    ("pharmacist", "Paul Harmacien", "pharmacist", "P1"),
    ("unblinded-pharmacist", "Ursula Nblind", "unblinded_pharmacist", "P1"),
    ("nurse", "Nadia Urse", "nurse", "P1"),
    ("monitor", "Monique Onitor", "monitor", None),
    ("auditor", "Aude Itor", "auditor", None),
    ("trial-manager", "Thomas Rial", "trial_manager", None),
    ("admin", "Adèle Min", "admin", None),
    ("statistician", "Stéphane Tatisticien", "unblinded_statistician", None),
    # A list extension needs a second unblinded statistician to approve it (RND-10).
    ("statistician-2", "Sophie Econde", "unblinded_statistician", None),
    ("pharmacovigilance", "Victor Igilance", "pharmacovigilance", None),
)
# The observational cohort's own users (issue 20): none has a role in the randomized trial.
DEMO_TUBE_SETS = 20  # BIOMARKER tube sets available at L1 in the demo (issue 20)
DEMO_COHORT_USERS = (
    ("cohort-investigator", "Dr Corinne Ohorte", "investigator", "L1"),
    ("cohort-monitor", "Marc Onitor", "monitor", None),
    ("cohort-manager", "Manon Anager", "trial_manager", None),
    # labship: the central lab's technician, who receives every site's samples (a trial-wide role).
    ("cohort-lab", "Lucie Aborantine", "lab_technician", None),
    ("cohort-nurse", "Noémie Urse", "nurse", "L1"),  # collects the samples by scan (issue 20)
)


@main.command("demo")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--dir",
    "demo_dir",
    default="instance/demo",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the demo database and keys; emptied at every start",
)
@click.option("--no-serve", is_flag=True, help="Prepare the demo instance and exit")
@_domain
def demo_command(port: int, host: str, demo_dir: Path, no_serve: bool) -> None:
    """A disposable TEST instance of the IFN-gamma trial with one user per role."""
    if demo_dir.exists():
        shutil.rmtree(demo_dir)  # a demo instance is disposable: a fresh start every time
    demo_dir.mkdir(parents=True)
    settings = Settings(
        env=Environment.DEVELOPMENT,
        database_url=f"sqlite:///{(demo_dir / 'allocator-demo.db').resolve()}",
        key_dir=demo_dir / "keys",
    )
    crypto.KeyRing.create_missing(settings.key_dir)
    migrate.upgrade(settings.database_url)
    actor = _actor()
    with _context(settings) as ctx:
        definition = resources.shipped_trial(DEMO_TRIAL)
        if definition is None:
            _fail(
                _(
                    "the %(trial)s definition is not in %(folder)s: reinstall allocator",
                    trial=DEMO_TRIAL,
                    folder=resources.trials(),
                )
            )
        loaded = trials.load_trial(
            ctx,
            actor,
            definition.read_text(encoding="utf-8"),
            source_name=resources.shipped_source_name(definition),
        )
        code = loaded.trial_code
        rows = []
        for username, name, role, site in DEMO_USERS:
            created = users.create_user(
                ctx,
                actor,
                users.NewUser(username=username, full_name=name),
                users.RoleRequest(
                    role=role,
                    trial_code=None if role == "admin" else code,
                    site_code=site,
                    reason="demo user",
                ),
            )
            rows.append((username, role, site or "-", created.one_time_password))
        _prepare_demo_trial(ctx, actor, code, {row[0]: row[3] for row in rows})
        cohort_code, cohort_rows = _prepare_demo_cohort(ctx, actor)
    click.echo("")
    click.secho(_("Demo instance of %(trial)s (TEST) in %(folder)s", trial=code, folder=demo_dir), bold=True)
    click.echo(
        _(
            "One-time passwords (each must be changed at first sign-in; admin and unblinded roles also "
            "enrol an authenticator app):"
        )
    )
    click.echo("")
    _echo_passwords(rows)
    click.echo("")
    click.secho(
        _(
            "Users of the observational cohort %(trial)s (no role in %(other)s):",
            trial=cohort_code,
            other=code,
        ),
        bold=True,
    )
    click.echo("")
    _echo_passwords(cohort_rows)
    click.echo("")
    if no_serve:
        return
    click.secho(_("Serving on http://%(host)s:%(port)s  (Ctrl-C to stop)", host=host, port=port), bold=True)
    _serve(settings, host, port, workers=2)


def _prepare_demo_cohort(ctx: ServiceContext, actor: Actor) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The observational cohort beside the demo trial (issue 20): loaded, its site L1 active, and
    its own users. Returns its code and the users' rows for the password table."""
    definition = resources.shipped_trial(DEMO_COHORT)
    if definition is None:
        _fail(
            _(
                "the %(trial)s definition is not in %(folder)s: reinstall allocator",
                trial=DEMO_COHORT,
                folder=resources.trials(),
            )
        )
    code = trials.load_trial(
        ctx,
        actor,
        definition.read_text(encoding="utf-8"),
        source_name=resources.shipped_source_name(definition),
    ).trial_code
    today = ctx.now().date()
    sites.activate_site(
        ctx,
        actor,
        code,
        "L1",
        approval_date=today - timedelta(days=30),
        delegation_log_date=today - timedelta(days=7),
        code_break_evidence="demo: not applicable, an observational study has no code-break sheets",
        scope=Scope(all_sites=True, site_ids=frozenset()),
        reason="demo: approvals recorded",
    )
    # Issue 20: L1 stocked with tube sets, so that registrations find one per planned sample.
    sample_kits.generate(
        ctx,
        actor,
        code,
        site="L1",
        kit_type="BIOMARKER",
        count=DEMO_TUBE_SETS,
        scope=Scope(all_sites=True, site_ids=frozenset()),
    )
    rows = []
    for username, name, role, site in DEMO_COHORT_USERS:
        created = users.create_user(
            ctx,
            actor,
            users.NewUser(username=username, full_name=name),
            users.RoleRequest(role=role, trial_code=code, site_code=site, reason="demo user"),
        )
        rows.append((username, role, site or "-", created.one_time_password))
    return code, rows


def _echo_passwords(rows: list[tuple[str, str, str, str]]) -> None:
    """The demo's (or a UAT scenario's) users and their one-time passwords, as a table."""
    heading = (_("user"), _("role"), _("site"), _("one-time password"))
    click.echo(f"  {heading[0]:<22}{heading[1]:<24}{heading[2]:<8}{heading[3]}")
    for username, role, site, password in rows:
        click.echo(f"  {username:<22}{role:<24}{site:<8}{password}")


def _prepare_demo_trial(ctx: ServiceContext, actor: Actor, code: str, passwords: dict[str, str]) -> None:
    """Make the demo usable at once: the TEST list generated, approved and activated with the demo
    statistician's signature (the one-time password is their password until they change it), 96 kits
    generated with their sealed code-break sheets (signed by the statistician too), both sites active
    with that evidence (UNB-07), and 24 kits shipped to and received at each site."""
    today = ctx.now().date()
    everywhere = Scope(all_sites=True, site_ids=frozenset())
    generated = generation.generate_lists(ctx, actor, code, "test")
    with ctx.db.reading() as session:
        statistician = session.execute(select(User).where(User.username == "statistician")).scalar_one()
    signer = Actor(
        user_id=statistician.id,
        username=statistician.username,
        name=statistician.full_name,
        role="unblinded_statistician",
        request_id=actor.request_id,
    )
    signed = signatures.SignatureRequest(password=passwords["statistician"])
    approval.approve_list(ctx, signer, code, generated.list_id, signed)
    approval.activate_list(ctx, signer, code, generated.list_id, signed)
    kit_lists.generate_kit_list(
        ctx, actor, code, count=96, lot_code="DEMO-LOT-1", expiry=today + timedelta(days=365)
    )
    sheets = codebreak.generate_sheets(ctx, signer, code, signature=signed)
    for site in ("P1", "P2"):
        sites.activate_site(
            ctx,
            actor,
            code,
            site,
            approval_date=today - timedelta(days=30),
            delegation_log_date=today - timedelta(days=7),
            code_break_evidence=(
                f"demo: sealed code-break sheets of every kit ({sheets.document_id}) held by the on-call "
                "unblinded pharmacist"
            ),
            scope=everywhere,
            reason="demo: approvals recorded",
        )
    for site in ("P1", "P2"):
        shipment = shipments.create_shipment(ctx, actor, code, site, 24)
        shipments.ship(ctx, actor, code, shipment.number)
        shipments.receive(ctx, actor, code, shipment.number, shipment.kits, scope=everywhere)


@main.group("uat")
def uat_group() -> None:
    """UAT scenario fixtures on a TEST or development instance (VAL-05)."""


@uat_group.command("reset")
@click.argument("trial")
@click.option("--scenario", required=True, help="empty, mid-recruitment or close-out-ready (see the README)")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
def uat_reset_command(trial: str, scenario: str, yes: bool) -> None:
    """Rebuild this TEST or development instance's database with a named scenario (refused in
    production). Every existing record of the instance is dropped; the keys are kept."""
    from allocator import uat  # noqa: PLC0415

    settings = _settings()
    try:
        uat.check_allowed(settings, trial, scenario)
    except uat.UatRefused as exc:
        _fail(_(exc.message, **exc.values))
    if not yes:
        click.confirm(
            _(
                "Drop every record of the %(env)s instance at %(backend)s and build the UAT scenario %(scenario)s?",
                env=settings.env.value,
                backend=settings.database_url.split("://", 1)[0],
                scenario=repr(scenario),
            ),
            abort=True,
        )
    crypto.KeyRing.create_missing(settings.key_dir)
    uat.rebuild_database(settings.database_url)
    with _context(settings) as ctx:
        result = uat.build(ctx, _actor(), scenario, demo_users=DEMO_USERS, prepare=_prepare_demo_trial)
    click.secho(
        _(
            "UAT scenario %(scenario)s of %(trial)s ready: %(what)s",
            scenario=repr(result.scenario),
            trial=result.trial_code,
            what=_(uat.SCENARIOS[scenario]),
        ),
        bold=True,
    )
    if result.subjects:
        click.echo(_("Subjects: %(subjects)s", subjects=", ".join(result.subjects)))
    _echo_passwords(list(result.users))


@main.command("serve")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (put TLS in front)")
@click.option("--workers", default=max(2, (os.cpu_count() or 1) * 2 + 1), show_default=True, type=int)
def serve_command(port: int, host: str, workers: int) -> None:
    """Production-style server (gunicorn) for the instance described by the environment."""
    settings = _settings()
    current = migrate.current_revision(settings.database_url)
    if current != migrate.head_revision():
        _fail(
            f"the database is at schema {current or '(empty)'}, not {migrate.head_revision()}: run `allocator init`"
        )
    if not settings.is_sqlite:
        # Issue 14: every worker may hold its whole pool; together they must fit in the server.
        max_connections, reserved = server_connection_limit(settings.database_url)
        problem = connection_budget_problem(
            workers=workers,
            limits=settings.db_limits(SERVE_THREADS),
            max_connections=max_connections,
            reserved=reserved,
        )
        if problem is not None:
            _fail(problem, 2)
    _serve(settings, host, port, workers=workers)


def hide_server_header() -> None:
    """gunicorn writes `Server: gunicorn` on every response, before the application's headers and
    with no setting to turn it off; the service never announces what it runs (issue 15). Its
    response class is looked up when each response is made, so a subclass without that line
    replaces it for this process."""
    from gunicorn.http import wsgi  # noqa: PLC0415 - only the serving commands need it

    if getattr(wsgi.Response, "allocator_quiet", False):
        return

    class QuietResponse(wsgi.Response):  # type: ignore[misc]
        allocator_quiet = True

        def default_headers(self) -> list[str]:
            return [line for line in super().default_headers() if not line.lower().startswith("server:")]

    wsgi.Response = QuietResponse


# gunicorn's own refusals, made before the application sees the request (issue 14: every error from
# anywhere in the stack is a problem document). Slugs and titles are those the application gives the
# same statuses (allocator/web/errors.py names them after werkzeug's exceptions); the details are
# plain words of our own, never gunicorn's message, which quotes the client's bytes.
_GUNICORN_REFUSALS: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "Bad Request", "The request is not valid HTTP: check its request line and headers."),
    403: ("forbidden", "Forbidden", "The request was refused before it reached the service."),
    414: (
        "request-uri-too-long",
        "Request URI Too Long",
        f"The request line is too long: the path and query may be at most {MAX_URL_BYTES} bytes.",
    ),
    417: ("expectation-failed", "Expectation Failed", "The request's Expect header cannot be met."),
    431: (
        "request-header-fields-too-large",
        "Request Header Fields Too Large",
        "The request has too many header fields (at most 100), or one longer than 8190 bytes.",
    ),
    501: ("not-implemented", "Not Implemented", "The request's transfer coding is not supported."),
}
_GUNICORN_INTERNAL = ("internal-error", "Internal error", "The request could not be handled.")


def gunicorn_problem(status: int, reason: str) -> bytes:
    """The whole HTTP response gunicorn writes for a request it refuses itself: a problem document
    (RFC 9457) instead of its HTML page, with the headers the application puts on every answer."""
    slug, title, detail = _GUNICORN_REFUSALS.get(status, _GUNICORN_INTERNAL)
    if status not in _GUNICORN_REFUSALS and status < 500:
        slug, title, detail = "bad-request", reason, "The request cannot be processed."
    body = json.dumps(
        {"type": f"urn:allocator:problem:{slug}", "title": title, "status": status, "detail": detail}
    ).encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def refuse_with_problems() -> None:
    """gunicorn answers what it refuses itself (a request line over its 8190-byte limit, too many or
    too large headers, a request that is not HTTP) with an HTML page written by `util.write_error`,
    which its workers look up at each refusal; replace it for this process (issue 14)."""
    from gunicorn import util  # noqa: PLC0415 - only the serving commands need it

    if getattr(util.write_error, "allocator_problem", False):
        return

    def write_problem(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        del mesg  # gunicorn's words quote the client's bytes; the problem document says its own
        util.write_nonblock(sock, gunicorn_problem(status_int, reason))

    write_problem.allocator_problem = True  # type: ignore[attr-defined]
    util.write_error = write_problem


def _serve(settings: Settings, host: str, port: int, *, workers: int) -> None:
    from gunicorn.app.base import BaseApplication  # noqa: PLC0415 - only the serving commands need it

    from allocator.app import create_app  # noqa: PLC0415 - each worker builds its own app after fork

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", SERVE_THREADS)  # the pool size is derived from it (Settings.db_limits)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", None)  # the app logs every request as structured JSON
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 10)
            # The app refuses lines over 4096 bytes with its own problem document (issue 14);
            # gunicorn's hard limit is 8190, and what it refuses is a problem too
            # (refuse_with_problems).
            self.cfg.set("limit_request_line", 8190)

        def load(self) -> Any:
            return create_app(replace(settings))

    hide_server_header()
    refuse_with_problems()
    _Server().run()


# --- data leaving the instance: exports (DIB-04, DIB-07) ---------------------------------------


class _TrialOrSubcommand(click.Group):
    """`allocator export TRIAL ...` beside `allocator export verify PATH`: a first argument that names
    no subcommand is a trial code (trial codes are upper case, subcommands lower case), handled by
    the group's hidden default command."""

    default_command = "run"

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            # An empty name: usage and errors read "allocator export  TRIAL ...", not "... run TRIAL".
            return "", self.commands[self.default_command], args
        return super().resolve_command(ctx, args)


def _trusted_keys(public_keys: tuple[Path, ...]) -> list[str] | None:
    """The public keys a manifest must be signed by: the files given, else this instance's audit
    keys when its key directory is readable, else None (the manifest's own key, reported as such)."""
    if public_keys:
        try:
            return [p.read_text("ascii") for p in public_keys]
        except (OSError, UnicodeDecodeError) as exc:
            _fail(f"--public-key: {exc}")
    key_dir = os.environ.get("ALLOCATOR_KEY_DIR")
    if key_dir:
        try:
            return list(crypto.audit_public_keys_pem(crypto.KeyRing.load(Path(key_dir))).values())
        except (crypto.KeyError_, OSError):
            return None
    return None


@main.group("export", cls=_TrialOrSubcommand)
def export_group() -> None:
    """Export a trial (`allocator export TRIAL --format odm|fhir|redcap|csv --out PATH [--unblinded]`)
    with a signed manifest PATH.manifest.json, or check one (`allocator export verify PATH`)."""


@export_group.command("run", hidden=True)
@click.argument("trial")
@click.option(
    "--format", "fmt", type=click.Choice(exports.FORMATS), required=True, help="odm, fhir, redcap or csv"
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="The file to write (for csv: a folder of tables); PATH.manifest.json is written beside it",
)
@click.option("--unblinded", is_flag=True, help="Add the arm (after the final unblinding; signed)")
@click.option("--signer", help="With --unblinded: the unblinded statistician's user name (password asked)")
@_domain
def export_command(trial: str, fmt: str, out: Path, unblinded: bool, signer: str | None) -> None:
    """Export TRIAL in a standard format, blinded unless --unblinded."""
    target = manifest.manifest_path(out)
    for path in (out, target):
        if path.exists():
            _fail(_("--out: %(path)s already exists (an export never overwrites a file)", path=path))
    if not out.parent.is_dir():
        _fail(_("--out: the folder %(folder)s does not exist", folder=out.parent))
    settings = _settings()
    with _context(settings) as ctx:
        request_id = f"cli-{secrets.token_hex(6)}"
        if unblinded:
            if not signer:
                _fail(_("--signer: an unblinded export is signed by the unblinded statistician"))
            actor = exports.unblinded_signer(ctx, signer, trial, request_id)
            password = click.prompt(_("password of %(user)s", user=signer), hide_input=True, err=True)
            otp = click.prompt(
                _("authenticator code (empty if none)"), default="", show_default=False, err=True
            )
            request = signatures.SignatureRequest(password=password, totp=otp or None)
            made = exports.export_trial(
                ctx, actor, trial, fmt, name=out.name, unblinded=True, signature=request
            )
        else:
            made = exports.export_trial(ctx, _actor(), trial, fmt, name=out.name)
    for relative, content in made.files.items():
        path = out.parent / relative
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
    manifest.write(out, made.manifest)
    rows = ", ".join(f"{n} {table}" for table, n in made.rows.items())
    click.echo(
        _(
            "wrote %(kind)s %(format)s export of %(trial)s to %(path)s (%(rows)s) and %(manifest)s",
            kind=_("blinded") if made.blinded else _("UNBLINDED"),
            format=fmt,
            trial=trial,
            path=out,
            rows=rows,
            manifest=target.name,
        )
    )


@export_group.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A trusted audit public key (PEM); default: this instance's, when its key directory is readable",
)
def export_verify_command(path: Path, public_keys: tuple[Path, ...]) -> None:
    """Check an export against its signed manifest: every file's SHA-256 and the signature."""
    result = manifest.verify(path, _trusted_keys(public_keys))
    click.echo(result.summary())
    for problem in result.problems:
        click.echo(f"  {problem}")
    if not result.ok:
        sys.exit(1)


# --- the closing archive (DIB-05, AUD-08) --------------------------------------------------------


@main.group("archive", cls=_TrialOrSubcommand)
def archive_group() -> None:
    """Write a trial's closing archive (`allocator archive TRIAL --out DIR`, after the database lock)
    or check one offline (`allocator archive verify DIR`)."""


@archive_group.command("run", hidden=True)
@click.argument("trial")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="A new folder")
@_domain
def archive_command(trial: str, out: Path) -> None:
    """Write the closing archive of TRIAL into the new folder --out."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _fail(_("--out: %(path)s exists and is not an empty folder", path=out))
    settings = _settings()
    with _context(settings) as ctx:
        done = archive.build(ctx, _actor(), trial, out)
    click.echo(
        _(
            "wrote the closing archive of %(trial)s to %(path)s: %(files)s files, %(kind)s, %(manifest)s",
            trial=trial,
            path=out,
            files=done.files,
            kind=_("with the lists and seeds (unblinded)") if done.unblinded else _("blinded"),
            manifest=done.manifest.name,
        )
    )


@archive_group.command("verify")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def archive_verify_command(folder: Path) -> None:
    """Check an archive with its files alone: hashes, manifest signature, audit chain end to end."""
    if not folder.is_dir():
        _fail(_("%(folder)s: no such folder", folder=folder))
    result = archive.verify(folder)
    click.echo(result.summary())
    for problem in result.problems:
        click.echo(f"  {problem}")
    if not result.ok:
        sys.exit(1)


# --- backups and restore drills (DIB-02, VAL-06) -------------------------------------------------


@main.command("backup")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The backup file to write"
)
@click.option(
    "--recipient",
    envvar="ALLOCATOR_BACKUP_RECIPIENT",
    required=True,
    help="The age public key the backup is encrypted to (default: ALLOCATOR_BACKUP_RECIPIENT)",
)
@_domain
def backup_command(out: Path, recipient: str) -> None:
    """Write an encrypted, consistent backup of the database while the service runs (never the keys)."""
    if out.exists():
        _fail(_("--out: %(path)s already exists (a backup never overwrites a file)", path=out))
    settings = _settings()
    blob, made = backup.create(settings.database_url, recipient)
    out.write_bytes(blob)
    out.chmod(0o600)
    rows = sum(made["tables"].values())
    click.echo(
        _(
            "wrote %(path)s: %(backend)s backup taken at %(at)s, schema %(schema)s, %(rows)s rows, "
            "%(chains)s audit chains, encrypted to %(recipient)s...",
            path=out,
            backend=made["backend"],
            at=made["taken_at"],
            schema=made["schema_revision"],
            rows=rows,
            chains=len(made["audit_heads"]),
            recipient=recipient[:12],
        )
    )


@main.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="ALLOCATOR_BACKUP_IDENTITY",
    required=True,
    help="The age identity (secret key) file that decrypts the backup (default: ALLOCATOR_BACKUP_IDENTITY)",
)
@click.option(
    "--drill", is_flag=True, help="Restore into a scratch database, check it, report, record the drill"
)
@_domain
def restore_command(file: Path, identity: Path, drill: bool) -> None:
    """Restore FILE into the empty database of ALLOCATOR_DATABASE_URL, or run a restore drill."""
    settings = _settings()
    opened = backup.open_backup(file.read_bytes(), identity.read_text("ascii", errors="replace"))
    if not drill:
        backup.restore(opened, settings.database_url)
        click.echo(
            _(
                "restored the backup taken at %(at)s (schema %(schema)s); keys are restored apart (README)",
                at=opened.manifest["taken_at"],
                schema=opened.manifest["schema_revision"],
            )
        )
        return
    with _context(settings) as ctx:
        report = backup.drill(ctx, _actor(), opened)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)
