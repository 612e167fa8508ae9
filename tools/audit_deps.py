"""Known vulnerabilities in the pinned dependencies: pip-audit over constraints.txt, judged.

    python tools/audit_deps.py constraints.txt [pip-audit options, e.g. -s osv]

Every pin is audited as written (`--no-deps --disable-pip`: nothing is installed or resolved), the
runtime dependencies and the test and release tools alike, since CI runs all of them.

pip-audit alone cannot be used as a gate here: when the vulnerability service does not answer a
dependency it skips it and still exits 0, and when the service cannot be reached at all it exits 1
as it does for a vulnerability. This wrapper reads pip-audit's JSON report and decides:

  exit 1  a pinned dependency has a known vulnerability (each one is listed, with its fixes);
  exit 0  no known vulnerability among the dependencies checked. Any dependency the service did
          not answer for is named as NOT checked; when none was checked (the service is
          unreachable) it says "vulnerability service unreachable: NOT checked" and does not fail;
  exit 2  the audit could not run for another reason (no pip-audit, a bad requirements file, a
          report that cannot be read): that is a fault to fix, not a network condition.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VULNERABLE = 1
NOT_RUN = 2

# What requests and urllib3 say when a host cannot be reached (DNS, refused, timeout, proxy, TLS).
NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeout",
    "ReadTimeout",
    "timed out",
    "ProxyError",
    "SSLError",
)


@dataclass(frozen=True)
class PipAuditRun:
    """What one pip-audit run left: its exit status, its JSON report (None if it wrote none) and
    its error output."""

    returncode: int
    report: str | None
    stderr: str


@dataclass(frozen=True)
class Verdict:
    status: int
    lines: list[str]


def judge(run: PipAuditRun) -> Verdict:
    """Turn a pip-audit run into an exit status and what to print."""
    if run.report is None:
        if any(marker in run.stderr for marker in NETWORK_ERRORS):
            reason = _last_line(run.stderr)
            return Verdict(0, [f"vulnerability service unreachable: NOT checked ({reason})"])
        return Verdict(
            NOT_RUN, [f"pip-audit failed (exit {run.returncode}) without a report:", *_tail(run.stderr)]
        )
    try:
        dependencies = _dependencies(json.loads(run.report))
    except (ValueError, KeyError, TypeError) as exc:
        return Verdict(NOT_RUN, [f"pip-audit's report cannot be read: {exc}"])
    if not dependencies:
        return Verdict(NOT_RUN, ["pip-audit audited no dependency: is the requirements file empty?"])

    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    checked = [d for d in dependencies if "vulns" in d]
    lines: list[str] = []
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "none yet"
            aliases = ", ".join(vuln.get("aliases") or [])
            lines.append(
                f"VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']}"
                + (f" ({aliases})" if aliases else "")
                + f"; fixed in {fixes}"
            )
    if skipped and not checked:
        lines.append(
            f"vulnerability service unreachable: NOT checked ({len(skipped)} pinned dependencies; "
            f"{skipped[0]['skip_reason']})"
        )
    elif skipped:
        names = ", ".join(f"{d['name']} ({d['skip_reason']})" for d in skipped)
        lines.append(f"NOT checked: {names}")
    if checked and not vulnerable:
        lines.append(f"{len(checked)} pinned dependencies checked: no known vulnerability")
    if vulnerable:
        count = sum(len(d["vulns"]) for d in vulnerable)
        lines.append(
            f"{count} known vulnerabilities in {len(vulnerable)} of {len(checked)} dependencies checked"
        )
        # pip-audit exits 1 when it finds one; if it did not, the report and the exit disagree.
        return Verdict(VULNERABLE, lines)
    if run.returncode != 0:
        return Verdict(NOT_RUN, [*lines, f"pip-audit exited {run.returncode} yet reported no vulnerability:"])
    return Verdict(0, lines)


def _dependencies(report: Any) -> list[dict[str, Any]]:
    dependencies = report["dependencies"]
    if not isinstance(dependencies, list) or not all(
        isinstance(d, dict) and "name" in d and ("vulns" in d or "skip_reason" in d) for d in dependencies
    ):
        raise ValueError("unexpected shape of `dependencies`")
    return dependencies


def _tail(text: str, lines: int = 15) -> list[str]:
    return ["  " + line for line in text.strip().splitlines()[-lines:]]


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else "no message"


def run_pip_audit(requirements: Path, extra: Sequence[str], command: Sequence[str]) -> PipAuditRun:
    """Run pip-audit on REQUIREMENTS as written, its JSON report to a temporary file."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "pip-audit.json"
        completed = subprocess.run(  # noqa: S603 - our own command line, no shell
            [
                *command,
                "--requirement",
                str(requirements),
                "--no-deps",
                "--disable-pip",
                "--progress-spinner",
                "off",
                "--timeout",
                "20",
                "--format",
                "json",
                "--output",
                str(report),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        text = report.read_text(encoding="utf-8") if report.is_file() and report.stat().st_size else None
    return PipAuditRun(completed.returncode, text, completed.stderr)


def main(argv: Sequence[str] | None = None, command: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return NOT_RUN
    requirements = Path(args[0])
    if not requirements.is_file():
        print(f"{requirements}: no such file", file=sys.stderr)
        return NOT_RUN
    try:
        run = run_pip_audit(requirements, args[1:], command or [sys.executable, "-m", "pip_audit"])
    except OSError as exc:
        print(f"pip-audit cannot be started: {exc}", file=sys.stderr)
        return NOT_RUN
    verdict = judge(run)
    stream = sys.stdout if verdict.status == 0 else sys.stderr
    print(f"pip-audit over {requirements}:", file=stream)
    for line in verdict.lines:
        print(f"  {line}", file=stream)
    return verdict.status


if __name__ == "__main__":
    sys.exit(main())
