"""The validation report (VAL-01): requirements parsed from docs/requirements.md, test results and
their `requirement` properties from a JUnit file, a matrix whose MUST gaps fail the command."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest
from click.testing import CliRunner

from allocator import validation
from allocator.cli import main
from allocator.printing.validation_report import pdf_text, render_html, render_pdf

ROOT = Path(__file__).resolve().parents[2]

REQUIREMENTS = """# Requirements
## 1. Things (THG)

| ID | Pri | Requirement | Source(s) | How to test |
|---|---|---|---|---|
| THG-01 | MUST | The **first** thing → done ≥ twice. | Rule 1 [V] | a test |
| THG-02 | MUST | The second thing, `exactly`. | Rule 2 [P] | a test |
| THG-03 | SHOULD | A nice <script>alert(1)</script> thing. | Rule 3 | a test |
| THG-04 | MAY | Optional. | Rule 4 | none |
"""


def junit(*cases: tuple[str, str, tuple[str, ...]]) -> bytes:
    """A JUnit file as pytest writes it: (name, outcome, requirement ids) per case."""
    body = []
    for name, outcome, reqs in cases:
        props = "".join(f'<property name="requirement" value="{r}"/>' for r in reqs)
        child = {
            "passed": "",
            "failed": '<failure message="assert 1 == 2">trace</failure>',
            "error": '<error message="fixture">trace</error>',
            "skipped": '<skipped type="pytest.skip" message="no server"/>',
        }[outcome]
        body.append(
            f'<testcase classname="tests.unit.test_x" name="{name}" time="0.1">'
            f"{'<properties>' + props + '</properties>' if props else ''}{child}</testcase>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="0" '
        f'skipped="0" tests="{len(cases)}" time="1" timestamp="2026-12-05T10:00:00" hostname="ci">'
        + "".join(body)
        + "</testsuite></testsuites>"
    ).encode()


def report(tmp_path: Path, data: bytes) -> validation.ValidationReport:
    (tmp_path / "requirements.md").write_text(REQUIREMENTS, encoding="utf-8")
    (tmp_path / "junit.xml").write_bytes(data)
    return validation.build_report(
        requirements_file=tmp_path / "requirements.md",
        junit_file=tmp_path / "junit.xml",
        generated_at=datetime(2026, 12, 5, 12, 0, tzinfo=UTC),
        sbom_file=None,
        constraints_file=ROOT / "constraints.txt",
        database_urls=[],
        checkout=ROOT,
    )


@pytest.mark.req("VAL-01")
def test_every_requirement_of_the_document_is_read() -> None:
    found = validation.parse_requirements((ROOT / "docs/requirements.md").read_text(encoding="utf-8"))
    from tests.conftest import known_requirement_ids

    assert {r.id for r in found} == set(known_requirement_ids())
    assert sum(r.priority == "MUST" for r in found) == 91
    first = found[0]
    assert (first.id, first.priority, first.section) == ("RND-01", "MUST", "1. Randomisation (RND)")
    assert first.text.startswith("Allocation uses a pre-generated, stratified, permuted-block list")
    assert "**" not in first.text and first.source.startswith("ICH E9")


@pytest.mark.req("VAL-01")
def test_this_run_writes_each_cited_requirement_into_the_junit_properties(
    request: pytest.FixtureRequest,
) -> None:
    assert ("requirement", "VAL-01") in request.node.user_properties


@pytest.mark.req("VAL-01")
def test_statuses_and_the_verdict(tmp_path: Path) -> None:
    built = report(
        tmp_path,
        junit(
            ("test_a[sqlite]", "passed", ("THG-01",)),
            ("test_a[postgresql]", "passed", ("THG-01",)),
            ("test_b", "failed", ("THG-02", "THG-03")),
            ("test_c", "passed", ("THG-02",)),
            ("test_d", "skipped", ("THG-04",)),
            ("test_e", "passed", ()),
            ("test_f", "passed", ("ZZZ-99",)),
        ),
    )
    statuses = {t.requirement.id: t.status for t in built.traces}
    assert statuses == {"THG-01": "passed", "THG-02": "failed", "THG-03": "failed", "THG-04": "not run"}
    assert [t.requirement.id for t in built.must_gaps()] == ["THG-02"]
    assert not built.acceptable
    assert built.unknown_citations == ("ZZZ-99",) and built.uncited_tests == 1 and built.tests == 7
    first = built.traces[0]
    assert [(name, dict(counts)) for name, counts in first.by_function()] == [
        ("tests/unit/test_x.py::test_a", {"passed": 2})
    ]
    assert built.environment.run_host == "ci" and built.environment.dependencies
    assert "MUST: 1/2 traced to passing tests, 1 failed" in built.summary_lines()


@pytest.mark.req("VAL-01")
def test_a_must_requirement_without_a_test_is_a_gap_even_if_everything_passed(tmp_path: Path) -> None:
    built = report(tmp_path, junit(("test_a", "passed", ("THG-01",))))
    assert [t.requirement.id for t in built.must_gaps()] == ["THG-02"]
    assert built.traces[1].status == "no test" and not built.acceptable
    complete = report(tmp_path, junit(("test_a", "passed", ("THG-01",)), ("test_b", "passed", ("THG-02",))))
    assert complete.must_gaps() == [] and complete.acceptable  # SHOULD and MAY gaps do not stop a release


@pytest.mark.req("VAL-01")
def test_the_renderings_name_requirements_tests_and_results(tmp_path: Path) -> None:
    built = report(tmp_path, junit(("test_a", "passed", ("THG-01",)), ("test_b", "failed", ("THG-02",))))
    page = render_html(built)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "The first thing → done ≥ twice." in page and "tests/unit/test_x.py::test_b" in page
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(built)))
    text = " ".join(" ".join((p.extract_text() or "").split()) for p in reader.pages)
    for expected in (
        "THG-01",
        "The first thing -> done >= twice.",
        "tests/unit/test_x.py::test_b (1 failed)",
        "NOT ACCEPTABLE",
        "Git commit",
        "SQLite",
    ):
        assert expected in text, expected
    assert render_pdf(built) == render_pdf(built)  # reproducible bytes
    assert pdf_text("χ² ≈ 0 – “ok”") == "chi² ~ 0 – “ok”"


@pytest.mark.req("VAL-01")
def test_the_command_exits_1_on_a_gap_and_0_when_every_must_passes(tmp_path: Path) -> None:
    (tmp_path / "requirements.md").write_text(REQUIREMENTS, encoding="utf-8")
    runner = CliRunner()

    def run(data: bytes) -> tuple[int, str]:
        (tmp_path / "junit.xml").write_bytes(data)
        result = runner.invoke(
            main,
            [
                "validation-report",
                "--junit",
                str(tmp_path / "junit.xml"),
                "--out",
                str(tmp_path / "out"),
                "--requirements",
                str(tmp_path / "requirements.md"),
            ],
            env={"ALLOCATOR_TEST_DATABASE_URL": ""},
        )
        return result.exit_code, result.output

    code, output = run(junit(("test_a", "passed", ("THG-01",))))
    assert code == 1 and "MUST requirements without a passing test: THG-02" in output
    code, output = run(junit(("test_a", "passed", ("THG-01",)), ("test_b", "passed", ("THG-02",))))
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "traceability.csv",
        "validation-report.html",
        "validation-report.pdf",
    ]
    csv = (tmp_path / "out" / "traceability.csv").read_text(encoding="utf-8")
    assert "THG-02,MUST,passed,tests/unit/test_x.py::test_b,passed" in csv
    (tmp_path / "junit.xml").write_text("not xml", encoding="utf-8")
    code, output = run(b"not xml")
    assert code == 2 and "the JUnit file is not XML" in output


@pytest.mark.req("VAL-01")
def test_a_requirement_cited_by_hundreds_of_tests_still_renders_and_shows_its_failure_first(
    tmp_path: Path,
) -> None:
    cases = [
        (f"test_{'a_rather_long_descriptive_name_' * 3}{k}[sqlite]", "passed", ("THG-01",))
        for k in range(300)
    ]
    cases.append(("test_zz_the_one_that_failed", "failed", ("THG-01",)))
    built = report(tmp_path, junit(*cases))
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(built)))  # a row taller than a page raised LayoutError
    text = " ".join(" ".join((p.extract_text() or "").split()) for p in reader.pages)
    assert "test_zz_the_one_that_failed (1 failed)" in text
    assert "more test functions (300 passed, 1 failed in all; every one in the HTML and CSV)" in text
    assert render_html(built).count("a_rather_long") == 300 * 3
