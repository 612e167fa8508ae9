"""The validation report (VAL-01): reads the requirements (docs/requirements.md), the JUnit XML file
of a test run (each test carries a `requirement` property per `@pytest.mark.req` id, written by
tests/conftest.py) and the environment of the run, and builds the traceability matrix that
`allocator.printing.validation_report` renders. `allocator validation-report` and `make validation`
call it; CI runs it after the suite."""

from __future__ import annotations

import json
import platform
import re
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from allocator.printing.validation_report import (
    Environment,
    Requirement,
    TestResult,
    Trace,
    ValidationReport,
    render_csv,
    render_html,
    render_pdf,
)
from allocator.version import __version__

PROPERTY = "requirement"  # the JUnit property name tests/conftest.py writes for each cited id
_ROW = re.compile(r"^\| ([A-Z]{3}-\d{2}) \| (MUST|SHOULD|MAY)([^|]*)\|(.*)\|\s*$")
_SECTION = re.compile(r"^## (.+)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


class ValidationInputError(Exception):
    """An input file is missing or cannot be read; the message names it."""


def _plain(markdown: str) -> str:
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", markdown)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    return " ".join(text.split())


def parse_requirements(text: str) -> list[Requirement]:
    """Every requirement row of the requirements document, in document order."""
    found: list[Requirement] = []
    section = ""
    for line in text.splitlines():
        heading = _SECTION.match(line)
        if heading:
            section = heading.group(1).strip()
            continue
        row = _ROW.match(line)
        if row is None:
            continue
        cells = row.group(4).split("|")
        requirement_text = cells[0] if cells else ""
        source = cells[1] if len(cells) > 1 else ""
        found.append(
            Requirement(row.group(1), row.group(2), section, _plain(requirement_text), _plain(source))
        )
    return found


def _test_name(classname: str, name: str) -> str:
    parts = classname.split(".")
    if len(parts) > 1 and parts[-1][:1].isupper():  # a test class
        return "/".join(parts[:-1]) + ".py::" + parts[-1] + "::" + name
    return "/".join(parts) + ".py::" + name if classname else name


def parse_junit(data: bytes) -> tuple[list[TestResult], str, str]:
    """The test cases of a JUnit XML file, and the run's start time and host."""
    try:
        root = ET.fromstring(data)  # noqa: S314 - the file our own test run wrote
    except ET.ParseError as exc:
        raise ValidationInputError(f"the JUnit file is not XML: {exc}") from exc
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise ValidationInputError("the JUnit file has no <testsuite>")
    results: list[TestResult] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome = "passed"
            message = ""
            for kind in ("error", "failure", "skipped"):
                child = case.find(kind)
                if child is not None:
                    outcome = {"failure": "failed"}.get(kind, kind)
                    message = child.get("message", "")
                    break
            reqs = tuple(
                sorted(
                    {
                        p.get("value", "")
                        for p in case.iter("property")
                        if p.get("name") == PROPERTY and p.get("value")
                    }
                )
            )
            results.append(
                TestResult(
                    name=_test_name(case.get("classname", ""), case.get("name", "")),
                    outcome=outcome,
                    requirements=reqs,
                    seconds=float(case.get("time") or 0),
                    message=message[:300],
                )
            )
    first = suites[0]
    return results, first.get("timestamp", ""), first.get("hostname", "")


def trace(requirements: list[Requirement], results: list[TestResult]) -> tuple[list[Trace], int, list[str]]:
    """(one trace per requirement, tests citing nothing, ids cited but not in the requirements)."""
    by_id: dict[str, list[TestResult]] = defaultdict(list)
    for result in results:
        for rid in result.requirements:
            by_id[rid].append(result)
    known = {r.id for r in requirements}
    traces = [Trace(r, tuple(sorted(by_id.get(r.id, []), key=lambda t: t.name))) for r in requirements]
    uncited = sum(1 for r in results if not r.requirements)
    return traces, uncited, sorted(set(by_id) - known)


def git_commit(directory: Path) -> str:
    """The checked-out commit, marked when the tree has uncommitted changes; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def dependencies_from_sbom(data: str) -> list[tuple[str, str, str]]:
    """(name, version, SHA-256) of each component of a CycloneDX JSON SBOM."""
    document = json.loads(data)
    found = []
    for component in document.get("components", []):
        sha = next(
            (h.get("content", "") for h in component.get("hashes", []) if h.get("alg") == "SHA-256"), ""
        )
        found.append((str(component.get("name", "")), str(component.get("version", "")), sha))
    return sorted(found, key=lambda d: d[0].lower())


def dependencies_from_constraints(text: str) -> list[tuple[str, str, str]]:
    """(name, version, "") of each `name==version` pin."""
    found = []
    for line in text.splitlines():
        pin = _PIN.match(line.strip())
        if pin:
            found.append((pin.group(1), pin.group(2), ""))
    return sorted(found, key=lambda d: d[0].lower())


def database_versions(urls: list[str]) -> list[str]:
    """The database servers the tests ran on: SQLite always, and each server URL given."""
    versions = [f"SQLite {sqlite3.sqlite_version}"]
    for url in urls:
        if not url.strip():
            continue
        try:
            from sqlalchemy import create_engine, text  # noqa: PLC0415 - only when a server is named

            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    versions.append(str(conn.execute(text("select version()")).scalar_one()))
            finally:
                engine.dispose()
        except Exception as exc:
            versions.append(f"{url.split('@')[-1]}: version not read ({type(exc).__name__})")
    return versions


def build_report(
    *,
    requirements_file: Path,
    junit_file: Path,
    generated_at: datetime,
    sbom_file: Path | None,
    constraints_file: Path | None,
    database_urls: list[str],
    checkout: Path,
) -> ValidationReport:
    try:
        requirements = parse_requirements(requirements_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationInputError(
            f"cannot read the requirements file {requirements_file}: {exc.strerror}"
        ) from exc
    if not requirements:
        raise ValidationInputError(f"{requirements_file} has no requirement rows")
    try:
        results, started, host = parse_junit(junit_file.read_bytes())
    except OSError as exc:
        raise ValidationInputError(f"cannot read the JUnit file {junit_file}: {exc.strerror}") from exc
    traces, uncited, unknown = trace(requirements, results)
    if sbom_file is not None:
        try:
            dependencies = dependencies_from_sbom(sbom_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValidationInputError(f"cannot read the SBOM {sbom_file}: {exc}") from exc
        source = f"SBOM {sbom_file.name}"
    elif constraints_file is not None and constraints_file.is_file():
        dependencies = dependencies_from_constraints(constraints_file.read_text(encoding="utf-8"))
        source = f"{constraints_file.name} (no SBOM: run `make sbom` for hashes)"
    else:
        dependencies, source = [], "(neither an SBOM nor constraints.txt found)"
    environment = Environment(
        software_version=__version__,
        git_commit=git_commit(checkout),
        python=platform.python_version(),
        platform=platform.platform(),
        database_servers=tuple(database_versions(database_urls)),
        run_started=started,
        run_host=host,
        dependency_source=source,
        dependencies=tuple(dependencies),
    )
    return ValidationReport(
        generated_at=generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        requirements_file=requirements_file.name,
        junit_file=junit_file.name,
        environment=environment,
        traces=tuple(traces),
        tests=len(results),
        uncited_tests=uncited,
        unknown_citations=tuple(unknown),
    )


def write_report(report: ValidationReport, out: Path) -> list[Path]:
    """validation-report.html, .pdf and traceability.csv in `out` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "validation-report.html", out / "validation-report.pdf", out / "traceability.csv"]
    written[0].write_text(render_html(report), encoding="utf-8")
    written[1].write_bytes(render_pdf(report))
    written[2].write_text(render_csv(report), encoding="utf-8", newline="")
    return written
