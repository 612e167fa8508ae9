"""The `allocator` command as operators use it (contract.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from allocator import migrate, resources
from allocator.cli import main
from tests.conftest import FreshDatabase
from tests.support import IFN_TRIAL
from tests.support.supply_simulation import with_supply


@pytest.fixture
def run(fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("ALLOCATOR_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("ALLOCATOR_ENV", "test")
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):  # English, whatever the shell running the tests
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


def test_messages_speak_the_language_asked_for(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 13: --lang, else LC_ALL / LC_MESSAGES / LANG; English by default; requirement ids stay
    out of the operator's screen."""
    code, out = run("init")
    assert code == 0 and "database migrated from (empty) to" in out
    code, out = run("--lang", "fr", "init")
    assert code == 0 and "base déjà au dernier schéma" in out
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    code, out = run("load-trial", "no-such-trial")
    assert code == 1 and "erreur : no-such-trial : fichier introuvable" in out
    code, out = run("--lang", "en", "load-trial", "no-such-trial")
    assert code == 1 and "error: no-such-trial: file not found" in out
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # LC_ALL wins over LANG
    code, out = run("init")
    assert "database already at the latest schema" in out
    code, out = run("generate-lists", "--trial", "NOPE", "--mode", "production")
    assert code != 0 and not re.search(r"\b[A-Z]{3}-\d{2}\b", out)


def test_demo_speaks_french_with_lang_fr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: the demo's messages (and those of backup, archive and export) follow --lang."""
    monkeypatch.chdir(tmp_path)
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(
        main, ["--lang", "fr", "demo", "--no-serve", "--dir", str(tmp_path / "demo")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "Instance de démonstration de IFNG-PAIS (TEST)" in result.output
    assert "Mots de passe à usage unique" in result.output and "One-time passwords" not in result.output
    assert re.search(r"utilisateur\s+rôle\s+centre\s+mot de passe à usage unique", result.output)
    # A refusal of the same family of commands, in French too.
    out = tmp_path / "taken.age"
    out.write_bytes(b"")
    refused = CliRunner().invoke(main, ["--lang", "fr", "backup", "--out", str(out), "--recipient", "age1x"])
    assert refused.exit_code == 1
    assert (
        "erreur : --out : " in refused.output
        and "existe déjà (une sauvegarde n'écrase jamais" in refused.output
    )


LOW_SUPPLY = """
[supply]
initial_courses = 12
trigger_courses = 9
resupply_courses = 13
lead_time_days = 3
do_not_ship_days = 60

[[supply.sites]]
code = "P2"
trigger_courses = 18
resupply_courses = 21
initial_courses = 21
"""


@pytest.mark.req("LBL-05")
def test_a_trigger_below_the_arms_drift_is_noted_when_loading(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """IFNG-PAIS: blocks up to 6 and two causes at each site, so a site's stock of the two arms can
    come 12 courses apart; a trigger of 9 is loaded (it is not invalid) with a note, in the
    operator's language; the site whose own trigger covers the drift is not named."""
    assert run("init")[0] == 0
    low = tmp_path / "low.toml"
    low.write_text(with_supply(IFN_TRIAL.read_text(encoding="utf-8"), LOW_SUPPLY), encoding="utf-8")
    code, out = run("load-trial", str(low))
    assert code == 0 and "loaded trial IFNG-PAIS" in out
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "supply.trigger_courses = 9 courses" in notes[0] and "(12 courses)" in notes[0]
    code, out = run("--lang", "fr", "load-trial", str(low))
    assert code == 0 and "remarque : supply.trigger_courses = 9 traitements" in out
    enough = tmp_path / "enough.toml"
    enough.write_text(
        low.read_text(encoding="utf-8").replace(
            "initial_courses = 12\ntrigger_courses = 9\nresupply_courses = 13\n",
            "initial_courses = 16\ntrigger_courses = 13\nresupply_courses = 16\n",
        ),
        encoding="utf-8",
    )
    code, out = run("load-trial", str(enough))
    assert code == 0 and "loaded definition version 2" in out and "note: " not in out


def test_commands_refuse_an_uninitialised_database(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("load-trial", str(IFN_TRIAL))
    assert code == 1 and "run `allocator init`" in out


@pytest.mark.req("VAL-03")
def test_init_load_users_tokens_and_audit(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out = run("init")
    assert code == 0 and "created lists key" in out and "database migrated" in out
    assert run("init") == (0, f"database already at the latest schema ({migrate.head_revision()})\n")
    code, out = run("load-trial", str(IFN_TRIAL))
    assert code == 0 and "loaded trial IFNG-PAIS (definition version 1)" in out and "P1, P2" in out
    code, out = run("load-trial", str(IFN_TRIAL))
    assert code == 0 and "nothing changed" in out

    bad = tmp_path / "bad.toml"
    bad.write_text(
        IFN_TRIAL.read_text(encoding="utf-8").replace("block_sizes = [2, 4, 6]", "block_sizes = [2, 5]")
    )
    code, out = run("load-trial", str(bad))
    assert code == 1
    assert "randomization.block_sizes[1]: 5 is not a multiple of the ratio total 2" in out
    code, out = run("load-trial", str(tmp_path / "missing.toml"))
    assert code == 1 and "file not found" in out

    code, out = run(
        "create-user",
        "inv1",
        "--role",
        "investigator",
        "--trial",
        "IFNG-PAIS",
        "--site",
        "P1",
        "--name",
        "Dr Jeanne Test",
    )
    assert code == 0
    assert re.search(r"^[a-z2-9]{4}(-[a-z2-9]{4}){3}$", out.splitlines()[-1])
    code, out = run("create-user", "inv2", "--role", "investigator", "--trial", "IFNG-PAIS")
    assert code == 1 and "site: the investigator role must be granted for a site" in out
    code, out = run("create-token", "inv1", "--name", "edc")
    assert code == 0 and out.startswith("alc_")
    code, out = run("create-token", "nobody")
    assert code == 1 and "username: unknown user" in out

    code, out = run("audit", "verify")
    assert code == 0
    assert re.search(r"chain IFNG-PAIS: \d+ entries intact", out) and "chain system:" in out
    code, out = run("audit", "verify", "IFNG-PAIS")
    assert code == 0 and "system" not in out
    # Each chain found intact is kept: the audit pages verify only what is appended after it.
    engine = create_engine(os.environ["ALLOCATOR_DATABASE_URL"])
    with engine.connect() as connection:
        kept = dict(connection.execute(text("SELECT chain, verified_seq FROM audit_verification")).all())
    engine.dispose()
    assert set(kept) == {"IFNG-PAIS", "system"} and all(seq > 0 for seq in kept.values())
    code, out = run("audit", "checkpoint")
    assert code == 0 and "IFNG-PAIS: signed up to entry" in out


def test_load_trial_takes_the_name_of_a_shipped_definition(  # type: ignore[no-untyped-def]
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed service has no trials/ folder beside it: `allocator load-trial ifn-gamma-pais`
    loads the definition shipped in the package, from any working directory; a file of that name in
    the working directory takes precedence (PATH keeps its meaning)."""
    monkeypatch.chdir(tmp_path)
    assert run("init")[0] == 0
    code, out = run("load-trial", "ifn-gamma-pais")
    assert code == 0, out
    assert f"loading the definition shipped with allocator: {IFN_TRIAL}" in out
    assert "loaded trial IFNG-PAIS (definition version 1)" in out
    code, out = run("load-trial", str(IFN_TRIAL))  # the very same file
    assert code == 0 and "nothing changed" in out
    code, out = run("load-trial", "immunosepsis-4")  # the observational cohort (issue 20)
    assert code == 0, out
    assert "loaded trial IMMUNOSEPSIS-4 (definition version 1)" in out
    assert "sites added (pending activation): L1" in out
    code, out = run("generate-lists", "IMMUNOSEPSIS-4", "--mode", "test")
    assert code == 1 and "IMMUNOSEPSIS-4 is an observational study: it has no arms, lists or drug kits" in out

    (tmp_path / "ifn-gamma-pais").write_text("not = [a definition", encoding="utf-8")
    code, out = run("load-trial", "ifn-gamma-pais")
    assert code == 1 and "shipped" not in out and "ifn-gamma-pais" in out

    code, out = run("load-trial", "no-such-trial")
    assert code == 1
    assert (
        "no-such-trial: file not found (definitions shipped with allocator: ifn-gamma-pais, immunosepsis-4)"
        in out
    )
    code, out = run("load-trial", "elsewhere/ifn-gamma-pais")  # a path is only ever a path
    assert code == 1 and "file not found" in out

    # A broken installation (no bundled folders, no checkout) still gets a message, not a traceback.
    monkeypatch.setattr(resources, "BUNDLED", tmp_path / "nowhere")
    monkeypatch.setattr(resources, "CHECKOUT", tmp_path / "nowhere")
    code, out = run("load-trial", "no-such-trial")
    assert code == 1 and "(definitions shipped with allocator: none found: neither" in out


def test_demo_prepares_a_test_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["demo", "--no-serve", "--dir", str(tmp_path / "demo")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "Demo instance of IFNG-PAIS (TEST)" in result.output
    for role in (
        "investigator",
        "pharmacist",
        "unblinded_pharmacist",
        "nurse",
        "monitor",
        "auditor",
        "trial_manager",
        "admin",
        "unblinded_statistician",
        "pharmacovigilance",
    ):
        assert re.search(rf"\s{role}\s+\S+\s+[a-z2-9]{{4}}-", result.output), role
    assert re.search(r"statistician-2\s+unblinded_statistician\s", result.output)  # RND-10's second signer
    # Issue 20: the observational cohort beside it, with its own users.
    assert "Users of the observational cohort IMMUNOSEPSIS-4 (no role in IFNG-PAIS):" in result.output
    assert re.search(r"cohort-investigator\s+investigator\s+L1\s+[a-z2-9]{4}-", result.output)
    assert re.search(r"cohort-monitor\s+monitor\s+-\s+[a-z2-9]{4}-", result.output)
    assert re.search(r"cohort-lab\s+lab_technician\s+-\s+[a-z2-9]{4}-", result.output)  # labship
    assert re.search(r"cohort-nurse\s+nurse\s+L1\s+[a-z2-9]{4}-", result.output)  # collects the samples
    assert (tmp_path / "demo" / "allocator-demo.db").exists()
    assert (tmp_path / "demo" / "keys" / "lists.key").stat().st_mode & 0o077 == 0


def test_resupply_checks_the_active_sites(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 19: the daily check of `[supply]` levels; a trial without active sites has none to check."""
    definition = tmp_path / "trial.toml"
    definition.write_text(
        IFN_TRIAL.read_text(encoding="utf-8")
        + "\n[supply]\ninitial_courses = 4\ntrigger_courses = 2\nresupply_courses = 5\nlead_time_days = 3\n"
        "do_not_ship_days = 30\n",
        encoding="utf-8",
    )
    assert run("init")[0] == 0
    assert run("load-trial", str(definition))[0] == 0
    code, out = run("resupply", "IFNG-PAIS")
    assert code == 0 and "IFNG-PAIS: no active site to check, or no [supply] in its definition" in out
    code, out = run("resupply", "NOPE")
    assert code == 1 and "no trial" in out
