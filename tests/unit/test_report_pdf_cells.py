"""Report PDF cells (issue 21): each distinct word and text is measured once per document, and the
cells are broken into the same lines as ReportLab's simpleSplit."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime

import pypdf
import pytest
from reportlab.lib.utils import simpleSplit

from allocator.printing import monitoring_reports as mr

WORDS = [
    "kit",
    "subject.randomized",
    "P01-00012",
    "Jean-François",
    "Łukasz",
    '{"a": 1}',
    "x" * 70,
    "été",
    "2026-12-05",
]


def _document(table: mr.Table) -> mr.ReportDocument:
    """A report of one table."""
    return mr.ReportDocument(
        "A report",
        "T/report",
        datetime(2026, 12, 6, tzinfo=UTC),
        "1.0",
        False,
        (("Trial", "T"),),
        tables=(table,),
    )


def _long_document(rows: tuple[tuple[str, str], ...]) -> mr.ReportDocument:
    """A report of one long two-column table."""
    return _document(mr.Table("Rows", ("Subject", "Note"), rows))


@pytest.mark.req("REP-05")
def test_a_cell_is_broken_into_the_lines_of_simplesplit_with_each_word_measured_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(21)
    cells = [
        "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(1, 3))
        )
        for _ in range(300)
    ]
    measured: list[str] = []
    real = mr.stringWidth

    def counting(text: str, font: str, size: float) -> float:
        measured.append(text)
        return float(real(text, font, size))

    monkeypatch.setattr(mr, "stringWidth", counting)
    measures = mr._Measures()
    for width in (40.0, 120.0, 400.0):
        for text in cells:
            clean = mr.printable(text)
            expected = (
                clean
                if real(clean, mr.REGULAR, mr._CELL_SIZE) <= width - 2 * mr._CELL_PAD
                else "\n".join(simpleSplit(clean, mr.REGULAR, mr._CELL_SIZE, width - 2 * mr._CELL_PAD))
            )
            assert mr._wrapped(text, width, measures) == expected
    assert len(measured) == len(set(measured))  # never the same text twice


@pytest.mark.req("REP-05")
def test_a_long_table_is_made_piece_by_piece_as_the_layout_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: a 20,000-row review held every piece of its table, wrapped, before the first page
    was laid out (331 MB for the off-hours PDF at 5,000 subjects; 279 MB made as reached). Each
    piece is now made when the layout gets to it: when the first rows are counted as laid out,
    only the first piece of the long table exists, and every row is in the PDF once."""
    made: list[int] = []
    real = mr.PdfTable

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, data: list[list[object]], *args: object, **kwargs: object) -> None:
            made.append(len(data))
            super().__init__(data, *args, **kwargs)

    monkeypatch.setattr(mr, "PdfTable", Counted)
    rows = tuple((f"P01-{i:05d}", f"row {i}") for i in range(5 * mr._CHUNK + 7))
    document = _long_document(rows)
    pieces = lambda: made.count(mr._CHUNK + 1)  # noqa: E731 (header and a whole piece; splits are smaller)
    seen: list[tuple[int, int]] = []
    pdf = mr.render_report_pdf(document, progress=lambda done: seen.append((done, pieces())))
    assert 0 < seen[0][0] <= mr._CHUNK and seen[0][1] == 1  # rows of the first piece laid out, only it made
    assert seen[-1][0] == len(rows) and pieces() == 5 and made.count(7 + 1) == 1
    text = "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    assert all(text.count(f"P01-{i:05d}") == 1 for i in (0, mr._CHUNK - 1, mr._CHUNK, len(rows) - 1))


def test_pages_kept_compressed_until_the_count_is_known_make_the_same_pdf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: "Page n of N" needs every page kept until the last; each page's drawing operators
    were kept as separate strings (a fifth of the off-hours PDF's 300 MB). They are now kept
    compressed while the document is laid out, and the PDF is the same, byte for byte, as the one
    the pages kept whole give (the way it was made before)."""
    rows = tuple((f"P01-{i:05d}", f"row {i} été Łukasz") for i in range(3 * mr._CHUNK))
    document = _long_document(rows)
    kept: list[object] = []
    real = mr._page_numbering_canvas

    def watched(label: str) -> type:
        numbered = real(label)

        class Watched(numbered):  # type: ignore[misc, valid-type]
            def showPage(self) -> None:
                super().showPage()
                kept.append(self._pages[-1]["_code"])

        return Watched

    monkeypatch.setattr(mr, "_page_numbering_canvas", watched)
    made = mr.render_report_pdf(document)
    assert len(kept) > 5 and all(isinstance(code, bytes) for code in kept)

    def whole(label: str) -> type:  # the pages kept as they are drawn, numbered at the end
        class Whole(mr.Canvas):  # type: ignore[misc]
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, **kwargs)
                self.states: list[dict[str, object]] = []

            def showPage(self) -> None:
                self.states.append(dict(self.__dict__))
                self._startPage()

            def save(self) -> None:
                for state in self.states:
                    self.__dict__.update(state)
                    self.saveState()
                    self.setFont(mr.REGULAR, 7)
                    self.drawRightString(
                        self._pagesize[0] - 12 * mr.mm,
                        7 * mr.mm,
                        label % {"page": self._pageNumber, "total": len(self.states)},
                    )
                    self.restoreState()
                    mr.Canvas.showPage(self)
                super().save()

        return Whole

    monkeypatch.setattr(mr, "_page_numbering_canvas", whole)
    assert mr.render_report_pdf(document) == made
    pages = pypdf.PdfReader(io.BytesIO(made)).pages
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1].extract_text()


@pytest.mark.req("REP-05")
def test_a_row_taller_than_a_page_continues_on_the_next_page() -> None:
    """A closing note of 2026-12-06: a cell of a few hundred lines (an audit entry listing many
    subjects) made a row taller than a page, which ReportLab could not lay out: the PDF failed (a
    500). The row now continues on the next page, every line of it printed."""
    tall = " ".join(f"w{n:04d}" for n in range(4000))
    rows = (("P01-001", "short"), ("P01-002", tall), ("P01-003", "after the tall row"))
    pdf = mr.render_report_pdf(_long_document(rows))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = " ".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) >= 4
    words = text.split()
    assert all(f"w{n:04d}" in words for n in range(4000))
    assert words.index("w3999") < words.index("tall")


@pytest.mark.req("REP-05")
@pytest.mark.parametrize("entries", [3, mr._CHUNK - 1, mr._CHUNK])
def test_a_total_row_is_set_in_bold_after_the_entries(entries: int) -> None:
    """The "All sites" row of a per-site table is a total: in the PDF it is set in bold (the rows
    above it in the regular face), also when it is the only row of the table's last piece."""
    rows = (*((f"P{i:03d}", str(i)) for i in range(entries)), ("All sites", str(entries)))
    document = _document(mr.Table("Subjects per site", ("Site", "Randomized"), rows, totals=1))
    fonts: dict[str, set[str]] = {}

    def seen(text: str, _cm: object, _tm: object, font: dict[str, object] | None, _size: float) -> None:
        if text.strip() and font is not None:
            fonts.setdefault(text.strip(), set()).add(str(font["/BaseFont"]))

    for page in pypdf.PdfReader(io.BytesIO(mr.render_report_pdf(document))).pages:
        page.extract_text(visitor_text=seen)
    assert fonts["All sites"] == {"/Helvetica-Bold"}
    assert fonts[f"P{entries - 1:03d}"] == {"/Helvetica"} and fonts["P000"] == {"/Helvetica"}


def test_a_table_cannot_hold_more_total_rows_than_rows() -> None:
    with pytest.raises(ValueError, match="2 total rows among 1 rows"):
        mr.Table("Subjects per site", ("Site",), (("All sites",),), totals=2)


def test_a_total_row_is_measured_in_bold() -> None:
    """Bold is wider than regular: a total's cell is wrapped and its column sized with the bold
    widths, or a bold "Tous les centres" ran into the cell's padding in a squeezed table."""
    text = "Tous les centres"
    regular = mr.stringWidth(text, mr.REGULAR, mr._CELL_SIZE)
    bold = mr.stringWidth(text, mr.BOLD, mr._CELL_SIZE)
    assert regular < bold
    width = (regular + bold) / 2 + 2 * mr._CELL_PAD  # the text fits in regular, not in bold
    assert mr._wrapped(text, width) == text
    assert mr._wrapped(text, width, font=mr.BOLD) == "Tous les\ncentres"
    # A page too narrow for the columns' minimums shares it in their proportion: the first column's
    # minimum is its longest word, the total's, in bold.
    table = mr.Table("Per site", ("S", "N"), (("centres", "1"), ("Tous-les-centres", "2")), totals=1)
    first = mr.stringWidth("Tous-les-centres", mr.BOLD, mr._CELL_SIZE) + mr._PADDING
    second = mr.stringWidth("N", mr.BOLD, mr._CELL_SIZE) + mr._PADDING  # the header, wider than 1 or 2
    assert mr._widths(table, 1.0) == pytest.approx([first / (first + second), second / (first + second)])
