"""Rendering of a randomization design quality report: plain text, standalone SVG charts and PDF.

The report is restricted, unblinded material (RND-12: it discloses the block sizes) that documents
the choice of design for the sequence-generation report (REP-01) and the statistician's QC
(RND-15). Every renderer is a pure function of a `QualityReport` and its arguments, so the same
report always renders to the same bytes; the PDF is built with reportlab's ``invariant=1`` (fixed
dates and document ID) so that it can be hashed and archived.

Constraints kept here on purpose:

* SVG: standalone documents with no script, no event attribute, no link and no external resource,
  so that they can be embedded in a page under a strict Content-Security-Policy (ACC-09) or opened
  from disk safely. Text is XML-escaped. This module only builds the charts' primitives;
  `allocator.printing.charts` writes them as SVG and as the PDF's reportlab drawings.
* PDF: only the standard Helvetica fonts, which reportlab writes with WinAnsi (cp1252) encoding; any
  text outside cp1252 is refused rather than silently turned into wrong glyphs. A non-production
  PDF carries the "TEST – NE PAS UTILISER" watermark (RND-13, LBL-15); every page shows the software
  version (VAL-04).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from allocator.printing import charts
from allocator.randomization.quality import (
    PER_ALLOCATION_FIGURES,
    DesignFigures,
    Figure,
    QualityReport,
    StratumSizeFigures,
)

__all__ = [
    "FIGURE_LABELS",
    "FIGURE_SHORT_LABELS",
    "TEST_WATERMARK",
    "format_figure",
    "render_pdf",
    "render_svg_balance",
    "render_svg_imbalance_distribution",
    "render_text",
]

TEST_WATERMARK: Final = "TEST – NE PAS UTILISER"
RESTRICTED_NOTICE: Final = (
    "RESTRICTED - for the unblinded statistician only: this report discloses the block sizes and "
    "the randomization design (RND-12)."
)

FIGURE_LABELS: Final[dict[str, str]] = {
    "final_abs_imbalance": "Expected |N_A - N_B| at the end, E|D_n|",
    "mean_abs_imbalance": "Expected |D_i| averaged over the trial, (1/n) sum E|D_i|",
    "expected_max_imbalance": "Expected maximum imbalance, E[max_i |D_i|]",
    "final_balance_probability": "Probability of exact balance at the end, P(D_n = 0)",
    "mean_balance_probability": "Probability of exact balance averaged over the trial",
    "final_imbalance_sd": "Standard deviation of the final imbalance, SD(D_n)",
    "deterministic_proportion": (
        "Deterministic allocations, block boundaries unknown to the guesser (not Zhao's DA)"
    ),
    "deterministic_proportion_known_blocks": (
        "Deterministic allocations, block boundaries known (Zhao et al. 'DA')"
    ),
    "correct_guess_probability": "Correct-guess probability, convergence strategy (tie = 1/2)",
    "excess_correct_guess": "Excess correct-guess probability over 1/2",
    "allocation_entropy": "Mean allocation entropy in nats (a fair coin: ln 2 = 0.6931)",
}
FIGURE_SHORT_LABELS: Final[dict[str, str]] = {
    "final_abs_imbalance": "E|Dn|",
    "mean_abs_imbalance": "mean E|Di|",
    "expected_max_imbalance": "E max|Di|",
    "final_balance_probability": "P(Dn=0)",
    "mean_balance_probability": "mean P(Di=0)",
    "final_imbalance_sd": "SD(Dn)",
    "deterministic_proportion": "Det. (bounds unknown)",
    "deterministic_proportion_known_blocks": "DA (bounds known)",
    "correct_guess_probability": "CG",
    "excess_correct_guess": "CG - 1/2",
    "allocation_entropy": "Entropy",
}
_MAX_POSSIBLE_LABEL: Final = "Largest possible |D_i| during the trial"

_DEFINITIONS: Final = (
    "D_i = N_A(i) - N_B(i) is the imbalance after i allocations of one sequence (one stratum).",
    "Balance: E|D_n| at the end; E|D_i| averaged over i = 1..n; the largest max_i |D_i| that any "
    "sequence of positive probability reaches, and its expectation E[max_i |D_i|]; P(D_n = 0), and "
    "P(D_i = 0) averaged over i; SD(D_n) = sqrt(E[D_n^2]).",
    "Deterministic allocation: its arm is certain for a guesser who knows the design and every past "
    "allocation. 'Det. (bounds unknown)': for random block sizes the guesser does not know the sizes "
    "drawn, hence where blocks end. 'DA (bounds known)': the guesser also knows the block boundaries, "
    "as Zhao et al. (2012) assume for their DA. For random block sizes the first is much lower than "
    "the second and must not be compared with published DA values: compare the correct-guess "
    "probability (CG) instead.",
    "Correct guess: the guesser names the arm with fewer allocations so far (Blackwell & Hodges 1957, "
    "convergence strategy); a tie scores 1/2. 1/2 is no predictability.",
    "Entropy: mean binary Shannon entropy of each allocation given the generator's state, in nats "
    "(Zhao et al. 2012 'ET'); for random block sizes this state includes the block boundaries.",
    "Exact figures come from dynamic programming over the allocation states and have no sampling "
    "error; simulated figures show their Monte Carlo standard error (SE).",
    "Zhao et al. (2012) names: EB = mean P(Di=0), Dn = SD(Dn), MI = E max|Di|, ET = entropy, "
    "DA = DA (bounds known), CG = CG.",
    "Each stratum runs its own sequence, so the per-stratum figures at the expected stratum sizes are "
    "the trial's figures; the trial total averages the per-allocation figures over every allocation "
    "of every stratum, (1/n) sum_k n_k x figure_k, and sums the strata's final imbalances. The "
    "figures for n allocations as one sequence are an unstratified reference.",
)
_REFERENCES: Final = (
    "Blackwell D, Hodges JL. Design for the control of selection bias. Ann Math Stat 1957;28:449-460.",
    "Efron B. Forcing a sequential experiment to be balanced. Biometrika 1971;58:403-417.",
    "Soares JF, Wu CFJ. Some restricted randomization rules in sequential designs. "
    "Commun Stat Theory Methods 1983;12:2017-2034.",
    "Berger VW, Ivanova A, Knoll MD. Minimizing predictability while retaining balance through the use "
    "of less restrictive randomization procedures. Stat Med 2003;22:3017-3028.",
    "Zhao W, Weng Y, Wu Q, Palesch Y. Quantitative comparison of randomization designs in sequential "
    "clinical trials based on treatment balance and allocation randomness. Pharm Stat 2012;11:39-48.",
)


def _number(value: float) -> str:
    # round() then + 0.0 turns a tiny negative value into 0.0, so "-0.0000" never appears.
    return f"{round(value, 4) + 0.0:.4f}"


def format_figure(figure: Figure) -> str:
    """A figure as shown in every rendering: 4 decimals, plus its standard error when simulated."""
    if figure.exact:
        return _number(figure.value)
    return f"{_number(figure.value)} (SE {_number(figure.standard_error)})"


def _design_title(figures: DesignFigures, index: int) -> str:
    role = "configured design" if index == 0 else "alternative"
    return f"[{index + 1}] {figures.design.name} ({role})"


def _method_line(report: QualityReport) -> str:
    if report.all_exact:
        return "Method: exact dynamic programming over the allocation states; no figure is simulated."
    return (
        "Method: exact dynamic programming where the state space allows; figures marked SE are Monte "
        f"Carlo estimates from {report.simulations} sequences (seed {report.simulation_seed})."
    )


def _strata_line(report: QualityReport) -> str:
    if not report.stratum_sizes:
        return "Stratification: none assumed."
    sizes = ", ".join(str(size) for size in report.stratum_sizes)
    return f"Stratification: {len(report.stratum_sizes)} strata of {sizes} subjects (independent sequences)."


def _selected_steps(n: int) -> list[int]:
    steps = sorted({max(1, round(n * q / 4)) for q in (1, 2, 3, 4)})
    return steps


# --------------------------------------------------------------------------------------------------
# Plain text
# --------------------------------------------------------------------------------------------------


def render_text(report: QualityReport) -> str:
    """The report as plain text: every figure of every design, the comparison table, definitions."""
    lines = [
        "RANDOMIZATION DESIGN QUALITY REPORT",
        RESTRICTED_NOTICE,
        f"Sample size: n = {report.n} allocations; the figures per design below analyse them as one "
        "sequence (an unstratified reference); the per-stratum tables and the trial total follow the comparison.",
        _strata_line(report),
        _method_line(report),
        "",
    ]
    width = max(len(label) for label in (*FIGURE_LABELS.values(), _MAX_POSSIBLE_LABEL)) + 3
    for index, figures in enumerate(report.designs):
        lines.append(_design_title(figures, index))
        for name, figure in figures.figures():
            lines.append(f"    {FIGURE_LABELS[name]:.<{width}} {format_figure(figure)}")
        lines.append(f"    {_MAX_POSSIBLE_LABEL:.<{width}} {figures.max_possible_imbalance}")
        if figures.stratified is not None:
            strat = figures.stratified
            lines.append(
                f"    {'Trial-level E|sum of stratum D_n| over strata':.<{width}} "
                f"{format_figure(strat.total_abs_imbalance)}"
            )
            lines.append(
                f"    {'Trial-level P(sum of stratum D_n = 0)':.<{width}} "
                f"{format_figure(strat.total_balance_probability)}"
            )
            lines.append(
                f"    {'Trial-level largest possible |sum of stratum D_n|':.<{width}} "
                f"{strat.worst_total_imbalance}"
            )
        lines.append("")
    lines += _comparison_table(report.designs, "Comparison (one sequence of n allocations):")
    for group in report.per_stratum:
        lines.append("")
        lines += _comparison_table(group.designs, _stratum_title(group))
    if report.per_stratum:
        lines.append("")
        lines += _total_table(report)
    lines.append("")
    lines.append("Expected |D_i| at selected steps i (balance over the course of the trial):")
    steps = _selected_steps(report.n)
    lines.append("    " + f"{'Design':<14}" + "".join(f"{'i = ' + str(step):>12}" for step in steps))
    for figures in report.designs:
        cells = "".join(f"{_number(figures.abs_imbalance_by_step[step - 1]):>12}" for step in steps)
        lines.append("    " + f"{figures.design.short_name:<14}" + cells)
    lines.append("")
    lines.append("Definitions:")
    lines += [f"  - {text}" for text in _DEFINITIONS]
    lines.append("")
    lines.append("References:")
    lines += [f"  - {text}" for text in _REFERENCES]
    return "\n".join(lines) + "\n"


def _stratum_title(group: StratumSizeFigures) -> str:
    strata = f"{group.strata} stratum" if group.strata == 1 else f"{group.strata} strata"
    return f"Per stratum: one stratum of n = {group.size} allocations ({strata} of this expected size):"


def _total_rows(report: QualityReport) -> tuple[list[str], list[list[str]]]:
    """The trial total over the strata: per-allocation figures averaged over every allocation,
    and the trial's final balance (sum of the strata's D_n)."""
    headers = [
        "Design",
        *(FIGURE_SHORT_LABELS[name] for name in PER_ALLOCATION_FIGURES),
        "E|sum Dn|",
        "P(sum Dn=0)",
    ]
    body = []
    for index, figures in enumerate(report.designs):
        strat = figures.stratified
        body.append(
            [
                figures.design.short_name,
                *(format_figure(figure) for _, figure in report.trial_total(index)),
                format_figure(strat.total_abs_imbalance) if strat else "-",
                format_figure(strat.total_balance_probability) if strat else "-",
            ]
        )
    return headers, body


def _total_title(report: QualityReport) -> str:
    return (
        f"Trial total over the {len(report.stratum_sizes)} strata (n = {sum(report.stratum_sizes)}): "
        "per-allocation figures averaged over every allocation; final balance of the summed strata:"
    )


def _total_table(report: QualityReport) -> list[str]:
    headers, body = _total_rows(report)
    return _aligned(_total_title(report), headers, body)


def _comparison_table(designs: Sequence[DesignFigures], title: str) -> list[str]:
    names = [name for name, _ in designs[0].figures()]
    headers = ["Design", *(FIGURE_SHORT_LABELS[name] for name in names), "max|Di|"]
    body = [
        [
            figures.design.short_name,
            *(format_figure(figure) for _, figure in figures.figures()),
            str(figures.max_possible_imbalance),
        ]
        for figures in designs
    ]
    return _aligned(title, headers, body)


def _aligned(title: str, headers: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(row[k]) for row in (headers, *body)) for k in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        return (
            "    "
            + first
            + "".join(f"  {cell:>{width}}" for cell, width in zip(cells[1:], widths[1:], strict=True))
        )

    return [title, line(headers), *(line(row) for row in body)]


# --------------------------------------------------------------------------------------------------
# Chart geometry, shared by the SVG and the PDF renderers
# --------------------------------------------------------------------------------------------------

# Tableau 10, colour-blind aware enough for ten series; dashes tell series apart in grey print.
_PALETTE: Final = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#5a5a5a",
)
_DASHES: Final = ((), (6.0, 3.0), (2.0, 2.0), (8.0, 3.0, 2.0, 3.0))


@dataclass(frozen=True, slots=True)
class _Series:
    label: str
    points: tuple[tuple[float, float], ...]
    emphasis: bool


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * power >= raw:
            return factor * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def _ticks(lo: float, hi: float, target: int, integer: bool) -> list[float]:
    step = _nice_step(hi - lo, target)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-9 * max(1.0, abs(hi)):
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    if abs(value - round(value)) < 1e-9:
        return str(round(value))
    return f"{value:.3g}"


def _panel(
    *,
    left: float,
    top: float,
    width: float,
    height: float,
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[_Series],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    integer_x: bool,
    dots: bool,
) -> list[charts.Primitive]:
    """One chart panel in a y-down coordinate system; values outside y_range are clipped."""
    out: list[charts.Primitive] = []
    x0, x1 = x_range
    y0, y1 = y_range
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * width

    def py(y: float) -> float:
        return top + height - (min(max(y, y0), y1) - y0) / (y1 - y0) * height

    out.append(charts.Text(left + width / 2, top - 10, title, 12, "middle", bold=True))
    for tick in _ticks(y0, y1, 5, integer=False):
        out.append(charts.Line(left, py(tick), left + width, py(tick), "#dddddd", 0.6))
        out.append(charts.Text(left - 6, py(tick) + 3.5, _tick_label(tick), 9, "end"))
    for tick in _ticks(x0, x1, 8, integer=integer_x):
        out.append(charts.Line(px(tick), top + height, px(tick), top + height + 4, "#333333", 0.8))
        out.append(charts.Text(px(tick), top + height + 15, _tick_label(tick), 9, "middle"))
    out.append(charts.Line(left, top + height, left + width, top + height, "#333333", 1.0))
    out.append(charts.Line(left, top, left, top + height, "#333333", 1.0))
    out.append(charts.Text(left + width / 2, top + height + 32, x_label, 10, "middle"))
    out.append(charts.Text(left - 40, top + height / 2, y_label, 10, "middle", vertical=True))
    for k, item in enumerate(series):
        color = _PALETTE[k % len(_PALETTE)]
        dash = _DASHES[(k // len(_PALETTE) + (0 if k % 2 == 0 else 1)) % len(_DASHES)]
        points = tuple((px(x), py(y)) for x, y in item.points)
        line_width = 2.4 if item.emphasis else 1.2
        if len(points) > 1:
            out.append(
                charts.Polyline(points, color, line_width, () if item.emphasis else dash, round_join=True)
            )
        if dots:
            out += [charts.Dot(x, y, 2.2 if item.emphasis else 1.6, color) for x, y in points]
    return out


def _legend(left: float, top: float, series: Sequence[_Series]) -> list[charts.Primitive]:
    out: list[charts.Primitive] = []
    for k, item in enumerate(series):
        color = _PALETTE[k % len(_PALETTE)]
        dash = _DASHES[(k // len(_PALETTE) + (0 if k % 2 == 0 else 1)) % len(_DASHES)]
        y = top + 15 * k
        out.append(
            charts.Line(
                left, y, left + 22, y, color, 2.4 if item.emphasis else 1.2, () if item.emphasis else dash
            )
        )
        out.append(charts.Text(left + 28, y + 3.5, item.label, 9.5, "start", bold=item.emphasis))
    return out


def _legend_label(figures: DesignFigures) -> str:
    return figures.design.short_name


def _balance_chart(report: QualityReport, y_max: float | None) -> charts.Chart:
    peak = max(max(figures.abs_imbalance_by_step) for figures in report.designs)
    top_value = peak * 1.05 if y_max is None else y_max
    series = []
    for index, figures in enumerate(report.designs):
        clipped = max(figures.abs_imbalance_by_step) > top_value
        label = _legend_label(figures) + (" (off scale)" if clipped else "")
        points = tuple((float(i + 1), value) for i, value in enumerate(figures.abs_imbalance_by_step))
        series.append(_Series(label, points, index == 0))
    title = f"Expected |N_A - N_B| over the course of the trial (n = {report.n})"
    primitives = _panel(
        left=70,
        top=40,
        width=560,
        height=330,
        title=title,
        x_label="Allocation number i",
        y_label="E|D_i|",
        series=series,
        x_range=(1.0, float(report.n)),
        y_range=(0.0, top_value),
        integer_x=True,
        dots=False,
    )
    primitives += _legend(650, 50, series)
    return charts.Chart(820, 420, title, tuple(primitives))


def _folded(distribution: Sequence[tuple[int, float]]) -> dict[int, float]:
    folded: dict[int, float] = {}
    for value, probability in distribution:
        folded[abs(value)] = folded.get(abs(value), 0.0) + probability
    return folded


_SHOWN_PROBABILITY: Final = 0.001


def _distribution_panel_series(
    report: QualityReport, pick: Callable[[DesignFigures], dict[int, float]], start: int, step: int
) -> tuple[list[_Series], int, float]:
    tables = [pick(figures) for figures in report.designs]
    shown = [k for table in tables for k, q in table.items() if q >= _SHOWN_PROBABILITY]
    last = max(shown) if shown else start
    peak = max((q for table in tables for q in table.values()), default=1.0)
    series = [
        _Series(
            _legend_label(figures),
            tuple((float(k), table.get(k, 0.0)) for k in range(start, last + 1, step)),
            index == 0,
        )
        for index, (figures, table) in enumerate(zip(report.designs, tables, strict=True))
    ]
    return series, last, peak


def _distribution_chart(report: QualityReport) -> charts.Chart:
    final_series, final_last, final_peak = _distribution_panel_series(
        # |D_n| has the parity of n: the other values have probability 0 and would only add noise.
        report,
        lambda figures: _folded(figures.final_imbalance_distribution),
        report.n % 2,
        2,
    )
    max_series, max_last, max_peak = _distribution_panel_series(
        report, lambda figures: dict(figures.max_imbalance_distribution), 1, 1
    )
    title = f"Distribution of the final and of the maximum imbalance (n = {report.n})"
    primitives = _panel(
        left=70,
        top=50,
        width=300,
        height=300,
        title=f"Final imbalance: P(|D_n| = k), k = {report.n % 2}, {report.n % 2 + 2}, ...",
        x_label="k",
        y_label="Probability",
        series=final_series,
        x_range=(float(report.n % 2), float(max(final_last, report.n % 2 + 1))),
        y_range=(0.0, min(1.0, final_peak * 1.05)),
        integer_x=True,
        dots=True,
    )
    primitives += _panel(
        left=450,
        top=50,
        width=300,
        height=300,
        title="Maximum imbalance: P(max_i |D_i| = m)",
        x_label="m",
        y_label="Probability",
        series=max_series,
        x_range=(1.0, float(max(max_last, 2))),
        y_range=(0.0, min(1.0, max_peak * 1.05)),
        integer_x=True,
        dots=True,
    )
    primitives.append(
        charts.Text(
            410, 20, title + f"; values of probability below {_SHOWN_PROBABILITY} are not shown", 11, "middle"
        )
    )
    primitives += _legend(780, 60, final_series)
    return charts.Chart(940, 410, title, tuple(primitives))


# --------------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------------


def render_svg_balance(report: QualityReport, *, y_max: float | None = None) -> str:
    """Line chart of E|D_i| against i for every design, as a standalone SVG document.

    ``y_max`` caps the vertical axis (complete randomization dwarfs the restricted designs); lines
    above it are clipped and their legend entry says "off scale".
    """
    if y_max is not None and not (math.isfinite(y_max) and y_max > 0):
        raise ValueError(f"y_max must be a positive finite number, got {y_max}")
    return charts.svg(_balance_chart(report, y_max), standalone=True)


def render_svg_imbalance_distribution(report: QualityReport) -> str:
    """Two-panel chart: the distribution of |D_n| and of max_i |D_i|, as a standalone SVG document."""
    return charts.svg(_distribution_chart(report), standalone=True)


# --------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------


def _pdf_safe(kind: str, text: str) -> str:
    """Refuse text that the standard (WinAnsi-encoded) PDF fonts cannot show."""
    try:
        text.encode("cp1252")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{kind} contains characters outside cp1252: {text[exc.start : exc.end]!r}") from exc
    return text


def _chart_text(text: str) -> str:
    return _pdf_safe("chart text", text)


def _cell(figure: Figure) -> str:
    if figure.exact:
        return _number(figure.value)
    return f"{_number(figure.value)}\nSE {_number(figure.standard_error)}"


def render_pdf(
    report: QualityReport,
    *,
    title: str,
    generated_at: str,
    software_version: str,
    test_mode: bool,
) -> bytes:
    """The report as a PDF (A4 landscape, Helvetica only), byte-for-byte reproducible.

    Args:
        report: the quality report.
        title: document title (shown and stored in the PDF metadata); cp1252 text only.
        generated_at: when the report was produced, as the caller wants it shown (e.g. ISO 8601 UTC).
        software_version: the application version shown on every page (VAL-04).
        test_mode: True on a non-production instance: every page carries the
            "TEST – NE PAS UTILISER" watermark (RND-13, LBL-15).

    Raises:
        ValueError: a text argument contains characters outside cp1252.
    """
    from reportlab.lib import colors  # noqa: PLC0415 - keep reportlab off the import path of the text renderer
    from reportlab.lib.enums import TA_LEFT  # noqa: PLC0415
    from reportlab.lib.pagesizes import A4, landscape  # noqa: PLC0415
    from reportlab.lib.styles import ParagraphStyle  # noqa: PLC0415
    from reportlab.lib.units import mm  # noqa: PLC0415
    from reportlab.platypus import (  # noqa: PLC0415
        KeepTogether,
        PageBreak,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    title = _pdf_safe("title", title)
    generated_at = _pdf_safe("generated_at", generated_at)
    software_version = _pdf_safe("software_version", software_version)
    page_size = landscape(A4)
    base = ParagraphStyle("base", fontName="Helvetica", fontSize=9, leading=11.5, alignment=TA_LEFT)
    small = ParagraphStyle("small", parent=base, fontSize=8, leading=10)
    heading = ParagraphStyle(
        "heading", parent=base, fontName="Helvetica-Bold", fontSize=12, leading=15, spaceBefore=6
    )
    title_style = ParagraphStyle("title", parent=base, fontName="Helvetica-Bold", fontSize=16, leading=20)
    notice = ParagraphStyle(
        "notice", parent=base, fontName="Helvetica-Bold", textColor=colors.HexColor("#a61b1b")
    )

    def para(text: str, style: ParagraphStyle = base) -> Any:
        return Paragraph(html.escape(_pdf_safe("report text", text), quote=False), style)

    story: list[Any] = [
        para(title, title_style),
        Spacer(1, 2 * mm),
        para(RESTRICTED_NOTICE, notice),
        para(f"Generated at: {generated_at}"),
        para(f"Software: allocator {software_version}"),
        para(
            f"Sample size: n = {report.n} allocations. The first table analyses them as one sequence "
            "(an unstratified reference); the per-stratum tables and the trial total follow."
        ),
        para(_strata_line(report)),
        para(_method_line(report)),
        Spacer(1, 3 * mm),
        para("Figures per design", heading),
    ]
    names = [name for name, _ in report.designs[0].figures()]
    header = ["Design", *(FIGURE_SHORT_LABELS[name] for name in names), "max|Di|"]
    rows: list[list[str]] = [header]
    for figures in report.designs:
        rows.append(
            [
                figures.design.short_name,
                *(_cell(figure) for _, figure in figures.figures()),
                str(figures.max_possible_imbalance),
            ]
        )
    table = Table(rows, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
                ("FONT", (0, 1), (0, 1), "Helvetica-Bold", 7.5),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f2f2")]),
                ("BACKGROUND", (0, 1), (-1, 1), colors.HexColor("#e3ecf7")),
            ]
        )
    )
    story += [table, Spacer(1, 2 * mm)]
    story.append(para("Designs (row 1 is the configured design):", small))
    story += [para(f"{f.design.short_name}: {f.design.name}", small) for f in report.designs]
    story.append(para("Column headings:", small))
    story += [para(f"{FIGURE_SHORT_LABELS[name]}: {FIGURE_LABELS[name]}", small) for name in names]
    story.append(para(f"max|Di|: {_MAX_POSSIBLE_LABEL}", small))
    stratified = [f for f in report.designs if f.stratified is not None]
    if stratified:
        strat_rows = [["Design", "E|sum D_n|", "P(sum D_n = 0)", "largest |sum D_n|"]]
        for figures in stratified:
            strat = figures.stratified
            assert strat is not None  # noqa: S101 - filtered just above; narrows the type for mypy
            strat_rows.append(
                [
                    figures.design.short_name,
                    _cell(strat.total_abs_imbalance),
                    _cell(strat.total_balance_probability),
                    str(strat.worst_total_imbalance),
                ]
            )
        strat_table = Table(strat_rows, hAlign="LEFT")
        strat_table.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ]
            )
        )
        story.append(
            KeepTogether(
                [
                    para("Trial-level balance over strata", heading),
                    para(
                        _strata_line(report) + " D_n is summed over the strata at the end of the trial.",
                        small,
                    ),
                    strat_table,
                ]
            )
        )

    def small_table(rows: list[list[str]]) -> Any:
        grid = Table(rows, repeatRows=1, hAlign="LEFT")
        grid.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
                    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
                    ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                    ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f2f2")]),
                    ("BACKGROUND", (0, 1), (-1, 1), colors.HexColor("#e3ecf7")),
                ]
            )
        )
        return grid

    if report.per_stratum:
        story += [PageBreak(), para("Per stratum, at the expected stratum sizes", heading)]
        for group in report.per_stratum:
            rows = [header]
            rows += [
                [
                    f.design.short_name,
                    *(_cell(figure) for _, figure in f.figures()),
                    str(f.max_possible_imbalance),
                ]
                for f in group.designs
            ]
            story.append(
                KeepTogether([para(_stratum_title(group), small), small_table(rows), Spacer(1, 2 * mm)])
            )
        total_headers, total_body = _total_rows(report)
        story.append(
            KeepTogether(
                [
                    para("Trial total", heading),
                    para(_total_title(report), small),
                    small_table([total_headers, *total_body]),
                ]
            )
        )
    story += [PageBreak(), para("Balance over the course of the trial", heading)]
    story.append(charts.drawing(_balance_chart(report, None), 0.9, text=_chart_text))
    zoom = max(1.0, 2.0 * max(report.configured.abs_imbalance_by_step))
    story += [
        PageBreak(),
        para(f"Balance over the course of the trial, vertical axis up to {zoom:.2f}", heading),
    ]
    story.append(charts.drawing(_balance_chart(report, zoom), 0.9, text=_chart_text))
    story += [PageBreak(), para("Final and maximum imbalance", heading)]
    story.append(charts.drawing(_distribution_chart(report), 0.8, text=_chart_text))
    steps = _selected_steps(report.n)
    step_rows = [["Design", *(f"i = {step}" for step in steps)]]
    step_rows += [
        [f.design.short_name, *(_number(f.abs_imbalance_by_step[step - 1]) for step in steps)]
        for f in report.designs
    ]
    step_table = Table(step_rows, hAlign="LEFT")
    step_table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
            ]
        )
    )
    story += [
        PageBreak(),
        para("Expected |D_i| at selected steps", heading),
        step_table,
        para("Definitions", heading),
        *(para(text, small) for text in _DEFINITIONS),
        para("References", heading),
        *(para(text, small) for text in _REFERENCES),
    ]

    footer = f"{title} | allocator {software_version} | generated {generated_at}"

    def decorate(canvas: Any, document: Any) -> None:
        canvas.saveState()
        if test_mode:
            canvas.setFillColor(colors.HexColor("#c8c8c8"))
            canvas.setFont("Helvetica-Bold", 60)
            canvas.translate(page_size[0] / 2, page_size[1] / 2)
            canvas.rotate(30)
            canvas.drawCentredString(0, 0, TEST_WATERMARK)
            canvas.rotate(-30)
            canvas.translate(-page_size[0] / 2, -page_size[1] / 2)
        canvas.setFillColor(colors.black)
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
        title=title,
        author="allocator",
        subject="Randomization design quality report (restricted)",
        creator=f"allocator {software_version}",
        invariant=1,
    )
    document.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buffer.getvalue()
