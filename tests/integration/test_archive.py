"""The closing archive (issue 17, point 2; DIB-05, AUD-08): a populated trial is archived after the
database lock, the database and the key directory are deleted, and the archive is checked offline
with its files alone; one flipped byte is named by file."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from allocator import crypto
from allocator.cli import main
from allocator.db import Database
from allocator.permissions import Scope
from allocator.services import archive, dispensing, signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize
from allocator.settings import Environment, Settings
from allocator.trialdef import parse_definition
from tests.conftest import FreshDatabase
from tests.leakcheck import AllowedPhrase, LeakChecker, Vocabulary
from tests.support import (
    CLI_ACTOR,
    ELIGIBLE,
    GOOD_PASSWORD,
    IFN_TRIAL,
    Clock,
    ReadyTrial,
    arm_of,
    ready_trial,
)

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
# As in the crawler: the definition's file name, recorded in the audit trail, names the trial.
EXTRA_ALLOWED = (
    AllowedPhrase("trials/ifn-gamma-pais.toml", "the file the trial definition was loaded from"),
)


@pytest.fixture
def instance(fresh_database: FreshDatabase, tmp_path: Path, clock: Clock) -> Iterator[ServiceContext]:
    """A running instance of its own: a migrated database and a key directory, both deletable."""
    fresh_database.migrate()
    key_dir = tmp_path / "keys"
    crypto.KeyRing.create_missing(key_dir)
    settings = Settings(env=Environment.TEST, database_url=fresh_database.url, key_dir=key_dir)
    db = Database.connect(fresh_database.url)
    ring = crypto.KeyRing.load(key_dir)
    try:
        yield ServiceContext.build(settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
    finally:
        db.dispose()


def _populate(ctx: ServiceContext) -> tuple[ReadyTrial, dict[str, str]]:
    ready = ready_trial(ctx, kits_per_site=36)
    results = [
        randomize.randomize(
            ctx,
            ready.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                site="P1",
                screening_number=f"P1-{i:04d}",
                eligibility=ELIGIBLE,
                strata={"admission_cause": "septic"},
            ),
            ALL,
        )
        for i in range(1, 5)  # both arms: a block holds at most 3 of one arm
    ]
    dispensing.dispense(
        ctx,
        ready.pharmacist,
        TRIAL,
        results[0].subject_number,
        {"D1": results[0].kits[0].kit_number},
        scope=ALL,
        signature=SIGNED,
    )
    arms = {r.subject_number: arm_of(ctx, r.kits[0].kit_number) for r in results}
    assert set(arms.values()) == {"A", "B"}
    return ready, arms


def _text_files(folder: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".pdf":
            yield path.relative_to(folder).as_posix(), path.read_text("utf-8")


@pytest.mark.req("DIB-05")
@pytest.mark.req("AUD-08")
@pytest.mark.req("BLD-01")
def test_an_archive_is_checked_offline_after_the_database_is_gone(
    instance: ServiceContext,
    fresh_database: FreshDatabase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = instance
    ready, arms = _populate(ctx)
    with pytest.raises(archive.TrialNotLocked):
        archive.build(ctx, CLI_ACTOR, TRIAL, tmp_path / "too-early")
    assert not (tmp_path / "too-early").exists()
    state.lock(ctx, ready.statistician, TRIAL, reason="database lock", signature=SIGNED)
    blinded = archive.build(ctx, CLI_ACTOR, TRIAL, tmp_path / "locked")
    assert not blinded.unblinded and blinded.rows["tables/subjects.csv"] == 4
    # Blinded: no arm in any text file of the archive (the crawler's leak scanner).
    definition = parse_definition(IFN_TRIAL.read_text(encoding="utf-8"))
    checker = LeakChecker(Vocabulary.of(definition, EXTRA_ALLOWED))
    for name, text in _text_files(tmp_path / "locked"):
        if name == "tables/randomization_lists.csv":
            # The list parameters name the arms and the design, as the protocol does (DIB-05 asks
            # for them); no subject's arm is in them. Every other column is scanned.
            rows = list(csv.DictReader(io.StringIO(text)))
            assert json.loads(rows[0]["parameters_json"])["arms"] == ["A", "B"]
            kept = io.StringIO()
            writer = csv.DictWriter(
                kept, [k for k in rows[0] if k != "parameters_json"], extrasaction="ignore"
            )
            writer.writeheader()
            writer.writerows(rows)
            found = checker.csv_text(name, kept.getvalue())
        elif name.endswith(".csv"):
            found = checker.csv_text(name, text)
        elif name.endswith(".jsonl"):
            found = [f for line in text.splitlines() if line.strip() for f in checker.json_text(name, line)]
        elif name.endswith(".json"):
            found = checker.json_text(name, text)
        elif name.endswith(".xml"):
            found = checker.html(name, text)
        else:
            found = []
        assert found == [], (name, found)
    state.unblind_trial(ctx, ready.statistician, TRIAL, reason="final analysis", signature=SIGNED)
    done = archive.build(ctx, CLI_ACTOR, TRIAL, tmp_path / "final")
    assert done.unblinded
    (slots_file,) = (tmp_path / "final" / "lists").glob("*-slots.csv")
    slots = slots_file.read_text("utf-8").splitlines()
    assert slots[0] == "stratum,position,randomization_number,arm,block,block_size,list_version"
    numbers = json.loads(json.dumps({line.split(",")[2]: line.split(",")[3] for line in slots[1:]}))
    subjects_csv = (tmp_path / "final" / "tables" / "subjects.csv").read_text("utf-8").splitlines()
    header = subjects_csv[0].split(",")
    by_number = {
        row.split(",")[header.index("subject_number")]: row.split(",")[header.index("randomization_number")]
        for row in subjects_csv[1:]
    }
    assert {n: numbers[by_number[n]] for n in arms} == arms
    assert any((tmp_path / "final" / "reports").glob("*.pdf"))
    assert (tmp_path / "final" / "exports" / "IFNG-PAIS-odm.xml").is_file()

    # The instance is gone: no database, no key directory, no environment.
    ctx.db.dispose()
    fresh_database.drop()
    if fresh_database.schema is None:
        Path(fresh_database.url.removeprefix("sqlite:///")).unlink()
    shutil.rmtree(ctx.ring.key_dir)
    for name in ("ALLOCATOR_DATABASE_URL", "ALLOCATOR_KEY_DIR", "ALLOCATOR_ENV"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    for folder in ("locked", "final"):
        result = runner.invoke(main, ["archive", "verify", str(tmp_path / folder)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "files intact, manifest signed, audit chain of" in result.output

    # One byte of one file.
    target = tmp_path / "final" / "tables" / "kit_events.csv"
    content = target.read_bytes()
    target.write_bytes(content[:40] + bytes([content[40] ^ 0x20]) + content[41:])
    result = runner.invoke(main, ["archive", "verify", str(tmp_path / "final")], catch_exceptions=False)
    assert result.exit_code == 1
    assert "tables/kit_events.csv: its SHA-256 does not match the manifest (file altered)" in result.output
    target.write_bytes(content)
    # A file slipped in is named too.
    (tmp_path / "final" / "tables" / "extra.csv").write_text("a,b\n")
    result = runner.invoke(main, ["archive", "verify", str(tmp_path / "final")], catch_exceptions=False)
    assert result.exit_code == 1 and "tables/extra.csv: not listed in the manifest (added)" in result.output


@pytest.mark.req("DIB-05")
@pytest.mark.req("AUD-03")
def test_the_offline_chain_check_names_an_altered_or_removed_entry(
    instance: ServiceContext, tmp_path: Path
) -> None:
    ctx = instance
    ready, _ = _populate(ctx)
    state.lock(ctx, ready.statistician, TRIAL, reason="database lock", signature=SIGNED)
    folder = tmp_path / "archive"
    archive.build(ctx, CLI_ACTOR, TRIAL, folder)
    entries, problems = archive.verify_chain_files(folder)
    assert problems == [] and entries > 20
    events = folder / "audit" / "events.jsonl"
    original = events.read_text("utf-8").splitlines()
    altered = json.loads(original[9])
    altered["reason"] = "rewritten"
    events.write_text("\n".join([*original[:9], json.dumps(altered), *original[10:]]) + "\n", "utf-8")
    assert archive.verify_chain_files(folder)[1] == [
        "audit/events.jsonl entry 10: its content does not match its hash (altered)"
    ]
    events.write_text("\n".join(original[:-1]) + "\n", "utf-8")  # the newest entry removed
    assert archive.verify_chain_files(folder)[1] == [
        f"audit/head.json: the head is entry {len(original)}, the chain ends at entry {len(original) - 1}"
    ]
    result = archive.verify(folder)
    assert not result.ok and "audit/events.jsonl: its SHA-256 does not match the manifest (file altered)" in (
        result.problems
    )
