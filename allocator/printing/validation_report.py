"""Rendering of the validation report (VAL-01): the traceability matrix from every requirement of
docs/requirements.md to the tests that cite it (`@pytest.mark.req`) and their result in one run of
the suite, with the environment of that run and a summary.

The report is for the sponsor's quality assurance, not for site staff, so it is in English only. It
names requirements and tests, never a subject, a kit or an arm. Every renderer is a pure function
of a `ValidationReport`: HTML (standalone, no script, everything escaped), CSV (through the safe
writer) and PDF (reportlab, standard Helvetica fonts only, like the project's other PDFs).
"""

from __future__ import annotations

import html
import io
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from allocator.printing.safe_csv import csv_text

__all__ = [
    "OUTCOMES",
    "Environment",
    "Requirement",
    "TestResult",
    "Trace",
    "ValidationReport",
    "render_csv",
    "render_html",
    "render_pdf",
]

# A test's outcome in the run, as JUnit XML records it.
OUTCOMES: Final = ("passed", "failed", "error", "skipped")

# A requirement's status in the run.
PASSED: Final = "passed"  # cited by at least one test, every citing test that ran passed
FAILED: Final = "failed"  # a citing test failed or errored
NOT_RUN: Final = "not run"  # cited only by tests that were skipped
NO_TEST: Final = "no test"  # no test of the run cites it


@dataclass(frozen=True)
class Requirement:
    id: str
    priority: str  # MUST, SHOULD or MAY
    section: str
    text: str
    source: str
    priority_note: str = ""  # e.g. "(MUST for unblinded and admin roles)" beside a SHOULD

    @property
    def priority_label(self) -> str:
        return f"{self.priority} {self.priority_note}".strip()


@dataclass(frozen=True)
class TestResult:
    name: str  # "tests/web/test_x.py::test_y[sqlite]"
    outcome: str  # one of OUTCOMES
    requirements: tuple[str, ...]
    seconds: float = 0.0
    message: str = ""

    @property
    def function(self) -> str:
        """The test without its parameters: parametrised cases are counted under it."""
        return self.name.split("[", 1)[0]


@dataclass(frozen=True)
class Trace:
    requirement: Requirement
    tests: tuple[TestResult, ...]

    @property
    def counts(self) -> Counter[str]:
        return Counter(t.outcome for t in self.tests)

    @property
    def status(self) -> str:
        counts = self.counts
        if not self.tests:
            return NO_TEST
        if counts["failed"] or counts["error"]:
            return FAILED
        if counts["passed"]:
            return PASSED
        return NOT_RUN

    def by_function(self) -> list[tuple[str, Counter[str]]]:
        """(test function, its outcomes) in name order."""
        grouped: dict[str, Counter[str]] = {}
        for test in self.tests:
            grouped.setdefault(test.function, Counter())[test.outcome] += 1
        return sorted(grouped.items())


@dataclass(frozen=True)
class Environment:
    software_version: str
    git_commit: str
    python: str
    platform: str
    database_servers: tuple[str, ...]
    run_started: str  # from the JUnit file
    run_host: str
    dependency_source: str  # where the versions below come from (the SBOM or constraints.txt)
    dependencies: tuple[tuple[str, str, str], ...]  # (name, version, SHA-256 or "")


@dataclass(frozen=True)
class ValidationReport:
    generated_at: str
    requirements_file: str
    junit_file: str
    environment: Environment
    traces: tuple[Trace, ...]
    tests: int  # test cases in the run
    uncited_tests: int  # tests of the run that cite no requirement
    unknown_citations: tuple[str, ...] = field(default=())  # ids cited by a test but not in the file

    def status_counts(self, priority: str | None = None) -> Counter[str]:
        return Counter(
            t.status for t in self.traces if priority is None or t.requirement.priority == priority
        )

    def must_gaps(self) -> list[Trace]:
        """MUST requirements without a passing test in this run: each one stops a release (VAL-01)."""
        return [t for t in self.traces if t.requirement.priority == "MUST" and t.status != PASSED]

    @property
    def acceptable(self) -> bool:
        return not self.must_gaps() and not self.status_counts()[FAILED]

    def summary_lines(self) -> list[str]:
        lines = []
        for priority in ("MUST", "SHOULD", "MAY"):
            counts = self.status_counts(priority)
            total = sum(counts.values())
            if total:
                lines.append(
                    f"{priority}: {counts[PASSED]}/{total} traced to passing tests"
                    + "".join(f", {counts[s]} {s}" for s in (FAILED, NOT_RUN, NO_TEST) if counts[s])
                )
        lines.append(f"Tests in the run: {self.tests} ({self.uncited_tests} cite no requirement).")
        gaps = self.must_gaps()
        lines.append(
            "Result: ACCEPTABLE - every MUST requirement is traced to a passing test and no citing test failed."
            if self.acceptable
            else "Result: NOT ACCEPTABLE - "
            + (
                f"MUST requirements without a passing test: {', '.join(t.requirement.id for t in gaps)}."
                if gaps
                else "a test citing a requirement failed."
            )
        )
        return lines


def _environment_rows(env: Environment) -> list[tuple[str, str]]:
    return [
        ("Software", f"allocator {env.software_version}"),
        ("Git commit", env.git_commit),
        ("Python", env.python),
        ("Platform", env.platform),
        ("Database servers", "; ".join(env.database_servers) or "(not recorded)"),
        ("Test run started", env.run_started or "(not recorded)"),
        ("Test run host", env.run_host or "(not recorded)"),
        ("Dependency versions from", env.dependency_source),
    ]


def _outcome_text(counts: Counter[str]) -> str:
    return ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts[o])


# --- CSV ----------------------------------------------------------------------------------------


def render_csv(report: ValidationReport) -> str:
    """One row per (requirement, citing test); a requirement without a test has one row with none."""
    rows: list[list[object]] = [["requirement", "priority", "status", "test", "outcome"]]
    for trace in report.traces:
        req = trace.requirement
        if not trace.tests:
            rows.append([req.id, req.priority, trace.status, "", ""])
        for test in trace.tests:
            rows.append([req.id, req.priority, trace.status, test.name, test.outcome])
    return csv_text(rows)


# --- HTML ---------------------------------------------------------------------------------------

_CSS: Final = (
    "body{font-family:Helvetica,Arial,sans-serif;font-size:13px;margin:2em;color:#111}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1.5em}"
    "th,td{border:1px solid #bbb;padding:3px 6px;vertical-align:top;text-align:left}"
    "th{background:#eee}.passed{background:#e6f4e6}.failed{background:#f8d7d7}"
    ".not-run,.no-test{background:#fdf1d0}.small{font-size:11px;color:#444}"
    "ul{margin:0;padding-left:1.2em}"
)


def render_html(report: ValidationReport) -> str:
    """A standalone page: no script, no external resource, every text escaped."""

    def esc(text: object) -> str:
        return html.escape(str(text))

    env = report.environment
    out = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>Validation report - allocator {esc(env.software_version)}</title>",
        f"<style>{_CSS}</style>",
        f"<h1>Validation report - allocator {esc(env.software_version)}</h1>",
        f"<p>Generated at {esc(report.generated_at)} from {esc(report.junit_file)} and "
        f"{esc(report.requirements_file)} (VAL-01).</p>",
        "<h2>Summary</h2><ul>",
        *(f"<li>{esc(line)}</li>" for line in report.summary_lines()),
        "</ul>",
    ]
    if report.unknown_citations:
        out.append(
            f"<p>Tests cite ids not in the requirements file: {esc(', '.join(report.unknown_citations))}</p>"
        )
    out.append("<h2>Environment</h2><table>")
    out += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _environment_rows(env)]
    out.append("</table>")
    out.append("<h2>Traceability matrix</h2><table>")
    out.append(
        "<tr><th>ID</th><th>Priority</th><th>Requirement</th><th>Source</th><th>Tests</th><th>Status</th></tr>"
    )
    for trace in report.traces:
        req = trace.requirement
        css = trace.status.replace(" ", "-")
        tests = "".join(
            f"<li>{esc(name)} <span class=small>({esc(_outcome_text(counts))})</span></li>"
            for name, counts in trace.by_function()
        )
        out.append(
            f"<tr class={css}><td>{esc(req.id)}</td><td>{esc(req.priority_label)}</td><td>{esc(req.text)}</td>"
            f"<td class=small>{esc(req.source)}</td><td><ul>{tests}</ul></td><td>{esc(trace.status)}</td></tr>"
        )
    out.append("</table>")
    out.append(f"<h2>Dependencies ({esc(env.dependency_source)})</h2><table>")
    out.append("<tr><th>Package</th><th>Version</th><th>SHA-256</th></tr>")
    out += [
        f"<tr><td>{esc(n)}</td><td>{esc(v)}</td><td class=small>{esc(h)}</td></tr>"
        for n, v, h in env.dependencies
    ]
    out.append("</table></html>\n")
    return "\n".join(out)


# --- PDF ----------------------------------------------------------------------------------------

# The PDF lists at most this many test functions per requirement (the HTML and the CSV list all).
PDF_MAX_TESTS: Final = 12

# Characters of the requirements file that the standard PDF fonts (cp1252) cannot show.
_PDF_REPLACEMENTS: Final = {
    "→": "->",
    "←": "<-",
    "↔": "<->",
    "≥": ">=",
    "≤": "<=",
    "≈": "~",
    "≠": "!=",
    "∈": "in",
    "−": "-",
    "✓": "yes",
    "✗": "no",
    "χ": "chi",
    "α": "alpha",
    "β": "beta",
    "γ": "gamma",
    "σ": "sigma",
    "μ": "mu",
    "\u2009": " ",
    "\u202f": " ",
    "\u2011": "-",
}


def pdf_text(text: str) -> str:
    """`text` in characters the standard PDF fonts can show: known symbols spelled out, accents kept
    where cp1252 has them, anything else as '?'. The HTML and CSV keep the original text."""
    out = []
    for original in text:
        char = _PDF_REPLACEMENTS.get(original, original)
        try:
            char.encode("cp1252")
        except UnicodeEncodeError:
            decomposed = unicodedata.normalize("NFKD", char).encode("cp1252", "ignore").decode("cp1252")
            char = decomposed or "?"
        out.append(char)
    return "".join(out)


def render_pdf(report: ValidationReport) -> bytes:
    """The report as a PDF (A4 landscape, Helvetica only), byte-for-byte reproducible."""
    from reportlab.lib import colors  # noqa: PLC0415 - keep reportlab off the import path of the other renderers
    from reportlab.lib.pagesizes import A4, landscape  # noqa: PLC0415
    from reportlab.lib.styles import ParagraphStyle  # noqa: PLC0415
    from reportlab.lib.units import mm  # noqa: PLC0415
    from reportlab.platypus import (  # noqa: PLC0415
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    env = report.environment
    page_size = landscape(A4)
    base = ParagraphStyle("base", fontName="Helvetica", fontSize=9, leading=11.5)
    small = ParagraphStyle("small", parent=base, fontSize=7, leading=8.5)
    cell = ParagraphStyle("cell", parent=base, fontSize=7.5, leading=9)
    heading = ParagraphStyle(
        "heading", parent=base, fontName="Helvetica-Bold", fontSize=12, leading=15, spaceBefore=6
    )
    title_style = ParagraphStyle("title", parent=base, fontName="Helvetica-Bold", fontSize=16, leading=20)
    status_colours = {
        PASSED: colors.HexColor("#e6f4e6"),
        FAILED: colors.HexColor("#f8d7d7"),
        NOT_RUN: colors.HexColor("#fdf1d0"),
        NO_TEST: colors.HexColor("#fdf1d0"),
    }

    def para(text: str, style: ParagraphStyle = base) -> Any:
        return Paragraph(html.escape(pdf_text(text), quote=False), style)

    def grid(rows: list[list[Any]], widths: list[float], extra: list[tuple[Any, ...]] | None = None) -> Any:
        # splitInRow: a row taller than what is left of the page continues on the next one.
        table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT", splitInRow=1)
        table.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
                    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e6e6e6")),
                    *(extra or []),
                ]
            )
        )
        return table

    title = f"Validation report - allocator {env.software_version}"
    story: list[Any] = [
        para(title, title_style),
        Spacer(1, 2 * mm),
        para(
            f"Generated at {report.generated_at} from {report.junit_file} and {report.requirements_file} (VAL-01)."
        ),
        para("Summary", heading),
        *(para(line) for line in report.summary_lines()),
    ]
    if report.unknown_citations:
        story.append(
            para(f"Tests cite ids not in the requirements file: {', '.join(report.unknown_citations)}")
        )
    story.append(para("Environment", heading))
    story.append(
        grid(
            [["Item", "Value"], *([k, para(v, cell)] for k, v in _environment_rows(env))], [45 * mm, 225 * mm]
        )
    )
    story += [PageBreak(), para("Traceability matrix", heading)]
    widths = [16 * mm, 13 * mm, 88 * mm, 50 * mm, 88 * mm, 15 * mm]
    rows: list[list[Any]] = [
        ["ID", "Priority", "Requirement", "Source", "Tests (outcomes in this run)", "Status"]
    ]
    colouring: list[tuple[Any, ...]] = []
    for index, trace in enumerate(report.traces, start=1):
        req = trace.requirement
        # Failed and errored tests first, so that the PDF never hides them behind the cut.
        functions = sorted(trace.by_function(), key=lambda f: (not (f[1]["failed"] or f[1]["error"]), f[0]))
        shown = [f"{name} ({_outcome_text(counts)})" for name, counts in functions[:PDF_MAX_TESTS]]
        if len(functions) > PDF_MAX_TESTS:
            shown.append(
                f"... and {len(functions) - PDF_MAX_TESTS} more test functions "
                f"({_outcome_text(Counter(t.outcome for t in trace.tests))} in all; every one in the HTML and CSV)"
            )
        tests = "<br/>".join(html.escape(pdf_text(line), quote=False) for line in shown)
        rows.append(
            [
                req.id,
                para(req.priority_label, small),
                para(req.text, cell),
                para(req.source, small),
                Paragraph(tests or "-", small),
                para(trace.status, cell),
            ]
        )
        colouring.append(("BACKGROUND", (5, index), (5, index), status_colours[trace.status]))
    story.append(grid(rows, widths, colouring))
    story += [PageBreak(), para(f"Dependencies ({env.dependency_source})", heading)]
    dep_rows: list[list[Any]] = [["Package", "Version", "SHA-256"]]
    dep_rows += [[para(n, cell), para(v, cell), para(h or "-", small)] for n, v, h in env.dependencies]
    story.append(grid(dep_rows, [60 * mm, 35 * mm, 175 * mm]))

    footer = pdf_text(f"{title} | commit {env.git_commit[:12]} | generated {report.generated_at}")

    def decorate(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.drawString(12 * mm, 8 * mm, footer)
        canvas.drawRightString(page_size[0] - 12 * mm, 8 * mm, f"Page {document.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=page_size,
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=15 * mm,
        title=pdf_text(title),
        author="allocator",
        subject="Validation report: traceability matrix (VAL-01)",
        creator=pdf_text(f"allocator {env.software_version}"),
        invariant=1,
    )
    document.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buffer.getvalue()
