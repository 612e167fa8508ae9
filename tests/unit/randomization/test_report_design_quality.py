"""Rendering of the design quality report (allocator.printing.quality_report): text, SVG, PDF.

The report is restricted, unblinded material documenting the randomization method (REP-01, RND-15,
RND-12). The SVG charts must be inert standalone documents (no script, no link, no external
resource); the PDF must be reproducible byte for byte, use only the standard fonts, show the
software version (VAL-04) and carry the TEST watermark outside production (RND-13, LBL-15).
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from allocator.printing import charts
from allocator.printing.quality_report import (
    TEST_WATERMARK,
    format_figure,
    render_pdf,
    render_svg_balance,
    render_svg_imbalance_distribution,
    render_text,
)
from allocator.randomization.quality import (
    CompleteRandomization,
    PermutedBlocks,
    QualityReport,
    quality_report,
    standard_alternatives,
    stratum_sizes_for,
)

SVG_NS = "{http://www.w3.org/2000/svg}"
CONFIGURED = PermutedBlocks((2, 4, 6))


@pytest.fixture(scope="module")
def report() -> QualityReport:
    return quality_report(
        CONFIGURED,
        170,
        standard_alternatives(CONFIGURED),
        simulation_seed=20251122,
        simulations=1000,
        stratum_sizes=stratum_sizes_for(170, 4),
    )


@pytest.fixture(scope="module")
def simulated_report() -> QualityReport:
    # A state limit of 10 forces the configured design onto the Monte Carlo fallback.
    return quality_report(
        CONFIGURED,
        40,
        [CompleteRandomization()],
        simulation_seed=5,
        simulations=2000,
        max_exact_states=10,
    )


def _pdf(report: QualityReport, *, test_mode: bool, generated_at: str = "2026-11-22T10:00:00Z") -> bytes:
    return render_pdf(
        report,
        title="Design quality - IFN-gamma ICU trial",
        generated_at=generated_at,
        software_version="0.1.0+test",
        test_mode=test_mode,
    )


def _pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------


@pytest.mark.req("REP-01", "RND-15")
def test_text_report_contains_every_figure_of_every_design(report: QualityReport) -> None:
    text = render_text(report)
    for index, figures in enumerate(report.designs):
        block = text.split(f"[{index + 1}] {figures.design.name}", 1)[1].split("\n\n", 1)[0]
        for name, figure in figures.figures():
            assert format_figure(figure) in block, (figures.design.name, name)
        assert re.search(
            rf"Largest possible \|D_i\| during the trial\.+ {figures.max_possible_imbalance}\n", block
        )
        assert figures.stratified is not None
        assert format_figure(figures.stratified.total_abs_imbalance) in block
        assert format_figure(figures.stratified.total_balance_probability) in block
        assert figures.design.short_name in text
    assert "(configured design)" in text.split("\n[2]")[0]
    assert "43, 43, 42, 42" in text
    assert "RESTRICTED" in text and "RND-12" in text
    text.encode("cp1252")  # the same strings feed the PDF


@pytest.mark.req("REP-01")
def test_text_report_of_the_configured_design_shows_the_expected_numbers(report: QualityReport) -> None:
    # Blocks of 4 over 168 + 2 allocations: the guess probability of a whole block is 17/24.
    text = render_text(report)
    assert "0.7500" in text  # blocks of 2: 3/4
    assert "0.5000" in text  # complete randomization: 1/2
    line = next(row for row in text.splitlines() if row.strip().startswith("PB{2,4,6} "))
    assert format_figure(report.configured.correct_guess_probability) in line


@pytest.mark.req("REP-01")
def test_text_shows_standard_errors_of_simulated_figures(simulated_report: QualityReport) -> None:
    text = render_text(simulated_report)
    figure = simulated_report.configured.correct_guess_probability
    assert not figure.exact and figure.standard_error > 0
    assert f"(SE {figure.standard_error:.4f})" in text
    assert "2000 sequences (seed 5)" in text


@pytest.mark.req("REP-01")
def test_format_figure() -> None:
    from allocator.randomization.quality import Figure

    assert format_figure(Figure(0.70833333, 0.0, True)) == "0.7083"
    assert format_figure(Figure(-1e-17, 0.0, True)) == "0.0000"
    assert format_figure(Figure(0.5012, 0.00123, False)) == "0.5012 (SE 0.0012)"


# --------------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------------


def _assert_inert_svg(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output; parsing proves it is well-formed XML
    assert root.tag == f"{SVG_NS}svg"
    lowered = svg.lower()
    for needle in (
        "<script",
        "javascript:",
        "href",
        "url(",
        "@import",
        "<foreignobject",
        "<image",
        "<!entity",
    ):
        assert needle not in lowered, needle
    for element in root.iter():
        local = element.tag.split("}")[-1].lower()
        assert local not in {"script", "a", "image", "use", "foreignobject", "iframe", "style"}, local
        for attribute, value in element.attrib.items():
            assert not attribute.split("}")[-1].lower().startswith("on"), attribute
            assert "://" not in value, (attribute, value)
    return root


@pytest.mark.req("REP-01")
def test_balance_svg_is_inert_well_formed_and_complete(report: QualityReport) -> None:
    svg = render_svg_balance(report)
    root = _assert_inert_svg(svg)
    lines = root.findall(f".//{SVG_NS}polyline")
    assert len(lines) == len(report.designs)  # one curve per design
    # Every curve has one point per allocation.
    assert all(len(line.attrib["points"].split()) == report.n for line in lines)
    labels = {t.text for t in root.iter(f"{SVG_NS}text")}
    assert {f.design.short_name for f in report.designs} <= labels
    assert svg == render_svg_balance(report)  # deterministic


@pytest.mark.req("REP-01")
def test_balance_svg_clips_to_the_requested_axis(report: QualityReport) -> None:
    root = _assert_inert_svg(render_svg_balance(report, y_max=2.0))
    labels = {t.text for t in root.iter(f"{SVG_NS}text")}
    assert "CR (off scale)" in labels and "RAR (off scale)" in labels
    assert "PB{2,4,6}" in labels  # the configured design stays on scale
    with pytest.raises(ValueError, match="y_max"):
        render_svg_balance(report, y_max=0.0)


@pytest.mark.req("REP-01")
def test_distribution_svg_is_inert_and_has_both_panels(report: QualityReport) -> None:
    svg = render_svg_imbalance_distribution(report)
    root = _assert_inert_svg(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG_NS}text")]
    assert any(t.startswith("Final imbalance") for t in texts)
    assert any(t.startswith("Maximum imbalance") for t in texts)
    assert len(root.findall(f".//{SVG_NS}polyline")) == 2 * len(report.designs)


@pytest.mark.req("REP-01")
def test_svg_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & "quotes"'
    chart = charts.Chart(100, 100, hostile, (charts.Text(1, 2, hostile, 9),))
    for standalone in (True, False):
        root = _assert_inert_svg(charts.svg(chart, standalone=standalone))
        assert root.find(f"{SVG_NS}title") is not None
        assert [t.text for t in root.iter(f"{SVG_NS}text")] == [hostile]


# --------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------


@pytest.mark.req("REP-01")
def test_pdf_is_deterministic(report: QualityReport) -> None:
    first = _pdf(report, test_mode=False)
    assert first.startswith(b"%PDF-")
    assert first == _pdf(report, test_mode=False)
    # Reproducible, not constant: the inputs do show up in the bytes.
    assert first != _pdf(report, test_mode=False, generated_at="2026-11-23T10:00:00Z")


@pytest.mark.req("REP-01", "RND-15", "VAL-04")
def test_pdf_text_contains_designs_figures_and_version(report: QualityReport) -> None:
    text = _pdf_text(_pdf(report, test_mode=False))
    assert "Design quality - IFN-gamma ICU trial" in text
    assert "allocator 0.1.0+test" in text
    assert "2026-11-22T10:00:00Z" in text
    assert "RESTRICTED" in text
    for figures in report.designs:
        assert figures.design.short_name in text
        assert figures.design.name in text
        for name, figure in figures.figures():
            assert format_figure(figure) in text, (figures.design.short_name, name)
    assert TEST_WATERMARK not in text
    assert "NE PAS UTILISER" not in text


@pytest.mark.req("RND-13", "LBL-15")
def test_pdf_watermark_in_test_mode(report: QualityReport) -> None:
    data = _pdf(report, test_mode=True)
    reader = PdfReader(io.BytesIO(data))
    for page in reader.pages:
        assert "NE PAS UTILISER" in (page.extract_text() or "")
    assert TEST_WATERMARK in _pdf_text(data)


@pytest.mark.req("REP-01")
def test_pdf_uses_only_standard_fonts_and_carries_nothing_active(report: QualityReport) -> None:
    data = _pdf(report, test_mode=True)
    reader = PdfReader(io.BytesIO(data))
    fonts = set()
    for page in reader.pages:
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        for font in resources.get("/Font", DictionaryObject()).values():
            font_object = font.get_object()
            fonts.add(str(font_object["/BaseFont"]))
            # The 14 standard fonts need no descriptor; an embedded font would bring one.
            assert "/FontDescriptor" not in font_object
    assert fonts <= {"/Helvetica", "/Helvetica-Bold", "/Helvetica-Oblique", "/Helvetica-BoldOblique"}
    assert fonts
    for marker in (b"/JavaScript", b"/JS ", b"/EmbeddedFile", b"/Launch", b"/URI", b"/OpenAction"):
        assert marker not in data, marker
    assert reader.metadata is not None and reader.metadata.title == "Design quality - IFN-gamma ICU trial"


@pytest.mark.req("REP-01")
def test_pdf_with_simulated_figures_shows_standard_errors(simulated_report: QualityReport) -> None:
    text = _pdf_text(
        render_pdf(simulated_report, title="t", generated_at="g", software_version="v", test_mode=False)
    )
    se = simulated_report.configured.deterministic_proportion.standard_error
    assert f"SE {se:.4f}" in text


@pytest.mark.req("REP-01")
@pytest.mark.parametrize("field", ["title", "generated_at", "software_version"])
def test_pdf_refuses_text_outside_cp1252(report: QualityReport, field: str) -> None:
    arguments = {"title": "t", "generated_at": "g", "software_version": "v"}
    arguments[field] = "interf\u00e9ron \u03b3 \u2265 1"  # é is fine in cp1252; γ and ≥ are not
    with pytest.raises(ValueError, match="cp1252"):
        render_pdf(report, test_mode=False, **arguments)
