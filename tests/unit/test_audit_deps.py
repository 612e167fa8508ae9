"""tools/audit_deps.py tells a known vulnerability (fail) from a vulnerability service that cannot be
reached (say so, do not fail) and from an audit that could not run (fail). pip-audit is replaced by
canned reports shaped like its JSON output, and by a fake executable for the whole command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.audit_deps import NOT_RUN, VULNERABLE, PipAuditRun, judge, main

CLEAN = {"name": "flask", "version": "3.1.3", "vulns": []}
VULN = {
    "name": "requests",
    "version": "2.19.0",
    "vulns": [
        {
            "id": "PYSEC-2018-28",
            "fix_versions": ["2.20.0"],
            "aliases": ["CVE-2018-18074"],
            "description": "credentials sent on redirect",
        }
    ],
}
SKIPPED = {
    "name": "alembic",
    "skip_reason": "Dependency not found on PyPI and could not be audited: alembic (1.20.1)",
}
OSV_DOWN = """Traceback (most recent call last):
  File "requests/adapters.py", line 729, in send
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded
"""


def report(*dependencies: dict[str, Any]) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_a_known_vulnerability_fails_and_is_listed_with_its_fix() -> None:
    verdict = judge(PipAuditRun(1, report(CLEAN, VULN), ""))
    assert verdict.status == VULNERABLE
    assert "VULNERABLE requests 2.19.0: PYSEC-2018-28 (CVE-2018-18074); fixed in 2.20.0" in verdict.lines
    assert "1 known vulnerabilities in 1 of 2 dependencies checked" in verdict.lines


def test_a_vulnerability_fails_even_when_other_dependencies_went_unchecked() -> None:
    verdict = judge(PipAuditRun(1, report(VULN, SKIPPED), ""))
    assert verdict.status == VULNERABLE
    assert any(line.startswith("NOT checked: alembic") for line in verdict.lines)


def test_a_vulnerability_without_a_fix_says_so() -> None:
    unfixed = {"name": "x", "version": "1", "vulns": [{"id": "GHSA-1", "fix_versions": [], "aliases": []}]}
    verdict = judge(PipAuditRun(1, report(unfixed), ""))
    assert verdict.status == VULNERABLE and "VULNERABLE x 1: GHSA-1; fixed in none yet" in verdict.lines


def test_no_vulnerability_passes() -> None:
    verdict = judge(PipAuditRun(0, report(CLEAN, {**CLEAN, "name": "click"}), ""))
    assert verdict == type(verdict)(0, ["2 pinned dependencies checked: no known vulnerability"])


def test_a_service_that_answers_for_no_dependency_is_unreachable_not_a_failure() -> None:
    # pip-audit's PyPI service: every dependency skipped, exit 0. It must not read as "all clear".
    verdict = judge(PipAuditRun(0, report(SKIPPED, {**SKIPPED, "name": "flask"}), ""))
    assert verdict.status == 0
    assert len(verdict.lines) == 1
    assert verdict.lines[0].startswith(
        "vulnerability service unreachable: NOT checked (2 pinned dependencies"
    )
    assert "no known vulnerability" not in verdict.lines[0]


def test_dependencies_left_unchecked_are_named() -> None:
    verdict = judge(PipAuditRun(0, report(CLEAN, SKIPPED), ""))
    assert verdict.status == 0
    assert verdict.lines == [
        f"NOT checked: alembic ({SKIPPED['skip_reason']})",
        "1 pinned dependencies checked: no known vulnerability",
    ]


def test_a_network_error_before_any_report_is_unreachable_not_a_failure() -> None:
    verdict = judge(PipAuditRun(1, None, OSV_DOWN))
    assert verdict.status == 0
    assert verdict.lines[0].startswith("vulnerability service unreachable: NOT checked (requests.exceptions")


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (PipAuditRun(1, None, "ERROR: invalid requirement: 'flask=3'"), "failed (exit 1) without a report"),
        (PipAuditRun(1, "{not json", ""), "report cannot be read"),
        (PipAuditRun(0, json.dumps({"dependencies": [{"name": "x"}]}), ""), "report cannot be read"),
        (PipAuditRun(0, report(), ""), "audited no dependency"),
        (PipAuditRun(1, report(CLEAN), ""), "exited 1 yet reported no vulnerability"),
    ],
)
def test_an_audit_that_could_not_run_fails(run: PipAuditRun, expected: str) -> None:
    verdict = judge(run)
    assert verdict.status == NOT_RUN
    assert any(expected in line for line in verdict.lines), verdict.lines


FAKE_PIP_AUDIT = """
import sys
from pathlib import Path

args = sys.argv[1:]
assert "--no-deps" in args and "--disable-pip" in args, args
requirements = Path(args[args.index("--requirement") + 1])
Path(sys.argv[0]).with_name("seen.txt").write_text(requirements.read_text())
mode = Path(sys.argv[0]).with_name("mode.txt").read_text()
if mode == "down":
    sys.stderr.write({down!r})
    sys.exit(1)
Path(args[args.index("--output") + 1]).write_text({reports!r}[mode])
sys.exit(1 if mode == "vulnerable" else 0)
"""


@pytest.fixture
def fake_pip_audit(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "fake_pip_audit.py"
    reports = {"vulnerable": report(CLEAN, VULN), "clean": report(CLEAN)}
    script.write_text(FAKE_PIP_AUDIT.format(down=OSV_DOWN, reports=reports), encoding="utf-8")
    return [sys.executable, str(script)], tmp_path


@pytest.mark.parametrize(
    ("mode", "status", "stream", "expected"),
    [
        ("vulnerable", VULNERABLE, "err", "VULNERABLE requests 2.19.0: PYSEC-2018-28"),
        ("down", 0, "out", "vulnerability service unreachable: NOT checked"),
        ("clean", 0, "out", "1 pinned dependencies checked: no known vulnerability"),
    ],
)
def test_the_command_audits_the_file_given_and_exits_with_the_verdict(
    fake_pip_audit: tuple[list[str], Path],
    capsys: pytest.CaptureFixture[str],
    mode: str,
    status: int,
    stream: str,
    expected: str,
) -> None:
    command, folder = fake_pip_audit
    (folder / "mode.txt").write_text(mode, encoding="utf-8")
    pins = folder / "constraints.txt"
    pins.write_text("flask==3.1.3\nrequests==2.19.0\n", encoding="utf-8")
    assert main([str(pins)], command) == status
    captured = capsys.readouterr()
    assert expected in (captured.err if stream == "err" else captured.out)
    assert (folder / "seen.txt").read_text(encoding="utf-8") == pins.read_text(encoding="utf-8")


def test_the_command_refuses_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main([str(tmp_path / "nothing.txt")], ["false"]) == NOT_RUN
    assert "no such file" in capsys.readouterr().err
