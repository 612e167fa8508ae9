"""`allocator selfcheck`, the installation qualification (issue 18, VAL-01/VAL-03): passes on a
sound instance and writes a dated report signed like an export manifest; fails, naming the check,
for each fault that can be provoked: bad configuration, a missing or open key file, a schema behind
head, a tampered audit entry, a tampered list, missing time-zone data, an unreachable relay."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from allocator.cli import main
from allocator.services import selfcheck
from allocator.services.supply import kit_lists
from allocator.settings import Settings
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, IFN_TRIAL, committed_context, tamper


@pytest.fixture
def env(fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "ALLOCATOR_DATABASE_URL": fresh_database.url,
        "ALLOCATOR_KEY_DIR": str(tmp_path / "keys"),
        "ALLOCATOR_ENV": "test",
    }
    monkeypatch.delenv("ALLOCATOR_SMTP_HOST", raising=False)
    monkeypatch.delenv("ALLOCATOR_AUDIT_WITNESS", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def installed(env: dict[str, str]) -> None:
    assert run("init")[0] == 0
    assert run("load-trial", str(IFN_TRIAL))[0] == 0
    code, out = run("generate-lists", "IFNG-PAIS", "--mode", "test")
    assert code == 0, out


def failed_checks(out: str) -> list[str]:
    return [line.split("]", 1)[1].split(":", 1)[0].strip() for line in out.splitlines() if "[FAIL]" in line]


@pytest.mark.req("VAL-01")
def test_a_sound_instance_passes_and_the_report_is_signed_and_dated(
    env: dict[str, str], tmp_path: Path
) -> None:
    installed(env)
    before = datetime.now(UTC)
    code, out = run("selfcheck", "--out", str(tmp_path / "iq"))
    after = datetime.now(UTC)
    assert code == 0, out
    assert "installation self-check" in out and "PASSED" in out and failed_checks(out) == []
    for name in (
        "configuration",
        "key directory",
        "key audit",
        "database schema",
        "audit chains",
        "list digests",
        "kit histories",
        "time-zone data",
        "e-mail relay",
    ):
        assert f"[ok] {name}:" in out, name
    assert "Europe/Paris" in out and "not configured" in out
    # The chains it found intact are kept: the audit pages verify only the entries after them.
    engine = create_engine(env["ALLOCATOR_DATABASE_URL"])
    with engine.connect() as connection:
        kept = set(connection.execute(text("SELECT chain FROM audit_verification")).scalars())
    engine.dispose()
    assert "IFNG-PAIS" in kept
    # And the kit check: the kit pages check only the kits that move after it (issue 21).
    engine = create_engine(env["ALLOCATOR_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM kit_check")).scalar_one() == 1
    engine.dispose()
    [report] = sorted((tmp_path / "iq").glob("selfcheck-*.txt"))
    # Dated on the day it ran, whichever side of midnight UTC the run ended.
    assert any(report.name.startswith(f"selfcheck-{moment:%Y%m%d}T") for moment in (before, after))
    code, verified = run("export", "verify", str(report))
    assert code == 0 and "1 files intact" in verified, verified
    report.write_text(report.read_text(encoding="utf-8").replace("PASSED", "PASSED!"), encoding="utf-8")
    code, verified = run("export", "verify", str(report))
    assert code == 1 and "file altered" in verified


@pytest.mark.req("VAL-01")
def test_a_key_file_open_to_others_or_missing_fails(env: dict[str, str]) -> None:
    installed(env)
    keys = Path(env["ALLOCATOR_KEY_DIR"])
    os.chmod(keys / "audit.key", 0o644)
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["key audit"] and "must be 600" in out
    os.chmod(keys / "audit.key", 0o600)
    os.chmod(keys, 0o755)  # noqa: S103 - the fault this test provokes
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["key directory"]
    os.chmod(keys, 0o700)
    (keys / "lists.key").unlink()
    code, out = run("selfcheck")
    assert code == 1 and "key lists" in failed_checks(out) and "is missing" in out


@pytest.mark.req("VAL-01")
def test_a_schema_behind_head_fails(env: dict[str, str]) -> None:
    code, out = run("selfcheck")  # never initialised
    assert code == 1 and "database schema" in failed_checks(out) and "run `allocator init`" in out


@pytest.mark.req("VAL-01")
def test_a_tampered_audit_entry_or_list_fails(env: dict[str, str]) -> None:
    installed(env)
    url = env["ALLOCATOR_DATABASE_URL"]
    tamper(
        url, "slot", "UPDATE slot SET randomization_number = 'R999999' WHERE id = (SELECT min(id) FROM slot)"
    )
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["list digests"], out
    tamper(url, "audit_event", "UPDATE audit_event SET reason = 'rewritten' WHERE seq = 2")
    code, out = run("selfcheck")
    assert code == 1 and "audit chains" in failed_checks(out), out


@pytest.mark.req("VAL-01", "LBL-11")
def test_a_kit_edited_by_hand_fails(env: dict[str, str]) -> None:
    """Every kit's history is checked against the kit, as `allocator integrity-check` does: a kit
    whose status was changed behind the application fails the check, which is audited."""
    installed(env)
    url = env["ALLOCATOR_DATABASE_URL"]
    with committed_context(url, Path(env["ALLOCATOR_KEY_DIR"])) as ctx:
        expiry = datetime.now(UTC).date() + timedelta(days=400)
        kit_lists.generate_kit_list(ctx, CLI_ACTOR, "IFNG-PAIS", count=4, lot_code="LOT-IQ", expiry=expiry)
    code, out = run("selfcheck")
    assert code == 0 and "[ok] kit histories: 4 kits agree with their histories" in out, out
    tamper(url, "kit", "UPDATE kit SET status = 'lost' WHERE id = (SELECT min(id) FROM kit)")
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["kit histories"], out
    assert "IFNG-PAIS (1 of 4 kits)" in out
    engine = create_engine(url)
    with engine.connect() as connection:
        actions = connection.execute(
            text("SELECT action FROM audit_event WHERE chain = 'IFNG-PAIS'")
        ).scalars()
        assert list(actions).count("kit.check_failed") == 1
    engine.dispose()


@pytest.mark.req("VAL-01")
def test_bad_configuration_fails_and_names_the_variable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOCATOR_ENV", "staging-ish")
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["configuration"] and "ALLOCATOR_ENV" in out


@pytest.mark.req("VAL-01")
def test_an_unreachable_relay_fails_and_a_reachable_one_passes(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    installed(env)
    monkeypatch.setenv("ALLOCATOR_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("ALLOCATOR_SMTP_PORT", "1")  # nothing listens there
    code, out = run("selfcheck")
    assert code == 1 and failed_checks(out) == ["e-mail relay"] and "not reachable" in out
    settings = Settings.from_env()
    assert selfcheck.check_relay(settings, lambda s: "relay.example:25 answered 250 (starttls)").ok
    report = selfcheck.run(
        dict(os.environ),
        CLI_ACTOR,
        now=lambda: datetime(2026, 12, 5, tzinfo=UTC),
        probe=lambda s: f"{s.smtp_host}:{s.smtp_port} answered 250",
    )
    assert report.ok, report.lines()


@pytest.mark.req("VAL-01")
def test_missing_time_zone_data_fails() -> None:
    assert selfcheck.check_time_zones(["UTC", "Europe/Paris"]).ok
    missing = selfcheck.check_time_zones(["Europe/Paris", "Mars/Olympus_Mons"])
    assert not missing.ok and "Mars/Olympus_Mons" in missing.detail and "tzdata" in missing.detail
