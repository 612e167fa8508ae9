"""The list commands as operators run them (generate-lists, verify-list, integrity-check,
quality-report), on a real database of each backend (no rolled-back transaction around them)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfReader
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from allocator.cli import main
from allocator.db import Database
from allocator.models import IntegrityCheck, Kit, Slot, Stratum
from allocator.services.lookups import get_trial
from allocator.services.supply import kit_check, kit_lists
from tests.conftest import FreshDatabase
from tests.support import CLI_ACTOR, IFN_TRIAL, committed_context, tamper

LABEL = "IFNG-PAIS/TEST/1"
VICTIM = "site=P2;admission_cause=septic"
Run = Callable[..., tuple[int, str]]


@pytest.fixture
def run(fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke `allocator` with a test instance's environment; returns (exit code, output)."""
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("ALLOCATOR_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("ALLOCATOR_ENV", "test")
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


@pytest.fixture
def loaded(run: Run) -> Run:
    assert run("init")[0] == 0
    code, out = run("load-trial", str(IFN_TRIAL))
    assert code == 0, out
    return run


def victim_slot(url: str) -> tuple[int, bytes]:
    db = Database.connect(url)
    try:
        with db.reading() as s:
            slot_id, sealed = s.execute(
                select(Slot.id, Slot.sealed)
                .join(Stratum, Stratum.id == Slot.stratum_id)
                .where(Stratum.key == VICTIM, Slot.position == 5)
            ).one()
        return slot_id, bytes(sealed)
    finally:
        db.dispose()


def integrity_checks(url: str) -> list[bool]:
    db = Database.connect(url)
    try:
        with db.reading() as s:
            return list(s.execute(select(IntegrityCheck.ok).order_by(IntegrityCheck.id)).scalars())
    finally:
        db.dispose()


@pytest.mark.req("RND-03", "RND-10", "RND-13", "ACC-15")
def test_generate_verify_and_check_a_list_from_the_command_line(
    loaded: Run, fresh_database: FreshDatabase
) -> None:
    run = loaded
    code, out = run("generate-lists", "IFNG-PAIS", "--mode", "production")
    assert code == 1
    assert "holds TEST lists only, not PRODUCTION" in out and "RND-13" not in out
    code, out = run("integrity-check")
    assert (code, out) == (0, "")  # nothing to check yet

    code, out = run("generate-lists", "IFNG-PAIS", "--mode", "test")
    assert code == 0, out
    generated = re.search(rf"generated {re.escape(LABEL)}: 4 strata, (\d+) slots \(permuted_blocks\)", out)
    assert generated is not None, out
    slots = int(generated.group(1))
    assert 480 <= slots < 480 + 4 * 6
    assert re.search(r"storage digest [0-9a-f]{64}", out)
    code, out = run("generate-lists", "IFNG-PAIS", "--mode", "test")
    assert code == 1 and "already has a TEST list" in out

    code, out = run("verify-list", "IFNG-PAIS")
    assert (code, out) == (0, f"{LABEL}: identical to its regeneration ({slots} slots)\n")
    code, out = run("verify-list", "NO-SUCH-TRIAL")
    assert code == 1 and "NO-SUCH-TRIAL" in out
    assert run("integrity-check") == (0, f"{LABEL}: intact\n")
    assert run("integrity-check", "IFNG-PAIS") == (0, f"{LABEL}: intact\n")

    slot_id, _ = victim_slot(fresh_database.url)
    tamper(fresh_database.url, "slot", "DELETE FROM slot WHERE id = :i", i=slot_id)
    code, out = run("integrity-check")
    assert code == 1
    assert out.startswith(f"{LABEL}: FAILED: stratum {VICTIM}: stored slots differ from the recorded digest")
    assert integrity_checks(fresh_database.url) == [True, True, False]
    code, out = run("verify-list", "IFNG-PAIS")
    assert code == 1 and f"{LABEL}: DIFFERS" in out and f"stratum {VICTIM}" in out


@pytest.mark.req("RND-10", "ACC-15")
def test_integrity_check_fails_on_an_altered_ciphertext(loaded: Run, fresh_database: FreshDatabase) -> None:
    run = loaded
    assert run("generate-lists", "IFNG-PAIS", "--mode", "test")[0] == 0
    slot_id, sealed = victim_slot(fresh_database.url)
    tamper(
        fresh_database.url,
        "slot",
        "UPDATE slot SET sealed = :b WHERE id = :i",
        b=sealed[:-1] + bytes([sealed[-1] ^ 0x80]),
        i=slot_id,
    )
    code, out = run("integrity-check", "IFNG-PAIS")
    assert code == 1 and "FAILED" in out and VICTIM in out
    tamper(fresh_database.url, "slot", "UPDATE slot SET sealed = :b WHERE id = :i", b=sealed, i=slot_id)
    assert run("integrity-check", "IFNG-PAIS") == (0, f"{LABEL}: intact\n")


@pytest.mark.req("RND-03", "RND-10")
def test_verify_list_reports_an_altered_ciphertext(loaded: Run, fresh_database: FreshDatabase) -> None:
    run = loaded
    assert run("generate-lists", "IFNG-PAIS", "--mode", "test")[0] == 0
    slot_id, sealed = victim_slot(fresh_database.url)
    tamper(
        fresh_database.url,
        "slot",
        "UPDATE slot SET sealed = :b WHERE id = :i",
        b=sealed[:-1] + bytes([sealed[-1] ^ 0x80]),
        i=slot_id,
    )
    code, out = run("verify-list", "IFNG-PAIS")
    assert code == 1 and f"{LABEL}: DIFFERS" in out and VICTIM in out


@pytest.mark.req("RND-13")
def test_a_production_instance_refuses_test_lists_and_an_unconfirmed_definition(
    loaded: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOCATOR_ENV", "production")
    code, out = loaded("generate-lists", "IFNG-PAIS", "--mode", "test")
    assert code == 1 and "holds PRODUCTION lists only, not TEST" in out and "RND-13" not in out
    code, out = loaded("generate-lists", "IFNG-PAIS", "--mode", "production")
    assert code == 1 and "needs a confirmed definition" in out


@pytest.mark.req("RND-01", "REP-01", "LBL-15")
def test_quality_report_on_screen_and_as_files(loaded: Run, tmp_path: Path) -> None:
    run = loaded
    code, out = run("quality-report", "IFNG-PAIS")
    assert code == 0 and out.startswith("RANDOMIZATION DESIGN QUALITY REPORT")
    assert "{2, 4, 6}" in out and "n = 170" in out

    pdf = tmp_path / "quality.pdf"
    assert run("quality-report", "IFNG-PAIS", "--out", str(pdf)) == (0, f"written {pdf}\n")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 1
    for page in reader.pages:  # a non-production instance: every page carries the watermark
        assert "NE PAS UTILISER" in (page.extract_text() or "")

    page_html = tmp_path / "quality.html"
    assert run("quality-report", "IFNG-PAIS", "--out", str(page_html))[0] == 0
    html = page_html.read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2
    for image in images:
        svg = base64.b64decode(image).decode("utf-8")
        assert "<svg" in svg and "<script" not in svg.lower()
    assert "<script" not in html.lower()
    assert "RANDOMIZATION DESIGN QUALITY REPORT" in html

    plain = tmp_path / "quality.txt"
    assert run("quality-report", "IFNG-PAIS", "--out", str(plain))[0] == 0
    assert plain.read_text(encoding="utf-8").startswith("RANDOMIZATION DESIGN QUALITY REPORT")
    code, out = run("quality-report", "IFNG-PAIS", "--out", str(tmp_path / "quality.csv"))
    assert code == 2 and "--out must end in .txt, .pdf or .html" in out
    assert not (tmp_path / "quality.csv").exists()


@pytest.mark.req("LBL-11")
def test_integrity_check_checks_every_kit_history_and_keeps_the_result(
    loaded: Run, fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: the daily `integrity-check` also checks every kit's history whole and keeps the
    result (signed), so that the reconciliation pages check only the kits that moved since; a kit
    whose records do not agree fails the command (exit 1), without blocking randomization."""
    run = loaded
    with committed_context(fresh_database.url, tmp_path / "keys") as ctx:
        kit_lists.generate_kit_list(
            ctx,
            CLI_ACTOR,
            "IFNG-PAIS",
            count=12,
            lot_code="LOT-1",
            expiry=ctx.now().date() + timedelta(days=300),
        )
    assert run("integrity-check") == (0, "IFNG-PAIS: kit histories agree (12 kits)\n")
    with committed_context(fresh_database.url, tmp_path / "keys") as ctx, ctx.db.reading() as session:
        trial = get_trial(session, "IFNG-PAIS")
        kept = kit_check.kept(session, ctx.ring, trial)
        victim = session.execute(select(Kit.id).order_by(Kit.id)).scalars().first()
    assert kept is not None and kept.suspects == () and kept.through_kit_id >= 12
    tamper(fresh_database.url, "kit", "UPDATE kit SET status = 'lost' WHERE id = :i", i=victim)
    code, out = run("integrity-check", "IFNG-PAIS")
    assert (code, out) == (
        1,
        "IFNG-PAIS: kits whose history does not agree: 1 (see the kit reconciliation)\n",
    )

    # A database that refuses the writes (the keeping and the audit entry, one transaction): the
    # verdict stands, and the command says that neither was written.
    def refused(*_: object) -> None:
        raise OperationalError("INSERT INTO kit_check", {}, Exception("read-only"))

    monkeypatch.setattr(kit_check, "_keep", refused)
    result = CliRunner().invoke(main, ["integrity-check", "IFNG-PAIS"])
    assert result.exit_code == 1
    assert result.stdout == "IFNG-PAIS: kits whose history does not agree: 1 (see the kit reconciliation)\n"
    assert result.stderr == (
        "IFNG-PAIS: the kit check could not be kept\n"
        "IFNG-PAIS: the failure could not be written to the audit trail\n"
    )
