"""Monitoring reports as PDF tables and standalone SVG charts: a pure renderer (REP-01..09, AUD-05,
DIB-04).

Plain data in — a `ReportDocument` of titled tables of text cells, metadata lines and an optional
step chart — bytes or text out. Nothing here knows about arms: the input types have no arm field,
and the caller decides what a table holds (blinded reports never hold an arm, BLD-07).

PDF: A4 landscape, the standard Helvetica fonts only (`kits.pdf`), reportlab's invariant mode (same
input, same bytes), generic metadata (the report title and the document id, never a product or a
person), "Page n of N", the generation time and author and the software version on every page, and
the TEST watermark on a non-production instance (RND-13, LBL-15). Text outside Windows-1252 is
transliterated or replaced by "?" rather than refused: a report must print whatever users typed.

SVG: an inline SVG element with no script, no style attribute, no link and no external resource, so
that it can be inlined in a page under the strict Content-Security-Policy (ACC-09). Text is
XML-escaped. This module only builds the step chart's primitives; `allocator.printing.charts`
writes them as SVG and as the PDF's reportlab drawing.
"""

from __future__ import annotations

import html
import io
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, TableStyle
from reportlab.platypus import Table as PdfTable

from allocator.printing import charts
from kits.pdf import BOLD, REGULAR, WATERMARK_COLOR, WATERMARK_EN, WATERMARK_FR, utc_text

__all__ = [
    "Labels",
    "ReportDocument",
    "Series",
    "StepChart",
    "Table",
    "printable",
    "render_report_pdf",
    "render_step_chart_svg",
]


@dataclass(frozen=True)
class Table:
    """One titled table of text cells; every row has one cell per column."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    # A page shows a window of a long table (issue 21): its rows are rows `start` onwards (0-based)
    # of `total`. None: the table holds every row (the CSV, the PDF, a short table).
    total: int | None = None
    start: int = 0
    # The last `totals` rows add up the rows above them (the "All sites" row): shown apart, as
    # totals, and not counted as entries of the table ("Subjects per site (3)" for two sites).
    totals: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.totals <= len(self.rows):
            raise ValueError(f"table {self.title!r}: {self.totals} total rows among {len(self.rows)} rows")
        for index, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.title!r}: row {index + 1} has {len(row)} cells for {len(self.columns)} columns"
                )


@dataclass(frozen=True)
class Series:
    """A cumulative count over time: (day, count after that day), days in increasing order."""

    label: str
    points: tuple[tuple[date, int], ...]


@dataclass(frozen=True)
class StepChart:
    """Cumulative counts of several series against calendar days, drawn as steps."""

    title: str
    y_label: str
    series: tuple[Series, ...]
    x_label: str = "Date"


@dataclass(frozen=True)
class Labels:
    """The renderer's own words, in the reader's language (the caller translates them)."""

    summary: str = "Summary"
    columns: str = "Columns: %(columns)s."
    no_entries: str = "No entries."
    page: str = "Page %(page)s of %(total)s"


@dataclass(frozen=True)
class ReportDocument:
    title: str
    document_id: str  # e.g. "IFNG-PAIS/allocation-history": in the PDF metadata
    created_at: datetime
    software_version: str
    test_mode: bool
    metadata: tuple[tuple[str, str], ...]  # trial, report, generated at and by, filters
    facts: tuple[tuple[str, str], ...] = ()  # key figures and statements shown before the tables
    tables: tuple[Table, ...] = ()
    chart: StepChart | None = None
    notice: str | None = None  # a restricted report says so on every page
    footer: str = field(default="")
    labels: Labels = field(default_factory=Labels)


# --- text --------------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """`text` with every character the standard PDF fonts cannot show replaced: control characters
    by a space, others by their decomposition when it is printable (e.g. "ł" -> "l"), else "?"."""
    if text.isascii() and text.isprintable():  # nearly every cell: no character to look at (issue 21)
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            out.append(" ")
            continue
        try:
            char.encode("cp1252")
            out.append(char)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            try:
                base.encode("cp1252")
                out.append(base or "?")
            except UnicodeEncodeError:
                out.append("?")
    return "".join(out)


# --- chart geometry (shared by the SVG and the PDF) --------------------------------------------------

_WIDTH, _HEIGHT = 760.0, 330.0
_LEFT, _TOP, _PLOT_W, _PLOT_H = 60.0, 36.0, 520.0, 240.0
_PALETTE = ("#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0f766e")
_DASHES: tuple[tuple[float, ...], ...] = ((), (6.0, 3.0), (2.0, 2.0), (8.0, 3.0, 2.0, 3.0))


def _y_ticks(top: int) -> list[int]:
    step = 1
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        step = candidate
        if top / candidate <= 6:
            break
    return list(range(0, top + 1, step))


def _x_step(span: int) -> int:
    """Days between two date labels: every day, every other day, or whole weeks; at most 9 labels."""
    for step in (1, 2):
        if span / step <= 8:
            return step
    return 7 * -(-span // 56)


def _chart(chart: StepChart) -> charts.Chart:
    """The chart in a y-down coordinate system of _WIDTH x _HEIGHT points. Each day is the interval
    [day, day + 1): the axis ends one day after the last point, so that the last day's count is a
    visible step rather than a jump at the edge."""
    days = [day for series in chart.series for day, _ in series.points]
    first = min(days) if days else date(2000, 1, 1)
    last = (max(days) if days else first) + timedelta(days=1)
    peak = max((count for series in chart.series for _, count in series.points), default=0)
    ticks = _y_ticks(max(peak, 1))
    top = max(ticks[-1], 1)
    span = (last - first).days

    def px(day: date) -> float:
        return _LEFT + (day - first).days / span * _PLOT_W

    def py(count: float) -> float:
        return _TOP + _PLOT_H - count / top * _PLOT_H

    out: list[charts.Primitive] = [charts.Text(_LEFT + _PLOT_W / 2, 20, chart.title, 12, "middle", bold=True)]
    for tick in ticks:
        out.append(charts.Line(_LEFT, py(tick), _LEFT + _PLOT_W, py(tick), "#dddddd", 0.6))
        out.append(charts.Text(_LEFT - 6, py(tick) + 3.5, str(tick), 9, "end"))
    step = _x_step(span)
    for offset in range(0, span + 1, step):
        day = first + timedelta(days=offset)
        out.append(charts.Line(px(day), _TOP + _PLOT_H, px(day), _TOP + _PLOT_H + 4, "#333333", 0.8))
        out.append(charts.Text(px(day), _TOP + _PLOT_H + 16, day.isoformat(), 8.5, "middle"))
    out.append(charts.Line(_LEFT, _TOP + _PLOT_H, _LEFT + _PLOT_W, _TOP + _PLOT_H, "#333333", 1.0))
    out.append(charts.Line(_LEFT, _TOP, _LEFT, _TOP + _PLOT_H, "#333333", 1.0))
    out.append(charts.Text(_LEFT + _PLOT_W / 2, _TOP + _PLOT_H + 34, chart.x_label, 10, "middle"))
    out.append(charts.Text(_LEFT - 40, _TOP + _PLOT_H / 2, chart.y_label, 10, "middle", vertical=True))
    for index, series in enumerate(chart.series):
        color = _PALETTE[index % len(_PALETTE)]
        dash = _DASHES[index % len(_DASHES)]
        points: list[tuple[float, float]] = [(px(first), py(0))]
        level = 0
        for day, value in series.points:
            points.append((px(day), py(level)))
            points.append((px(day), py(value)))
            level = value
        points.append((px(last), py(level)))
        out.append(charts.Polyline(tuple(points), color, 2.0, dash))
        legend_y = _TOP + 8 + 16 * index
        out.append(
            charts.Line(_LEFT + _PLOT_W + 24, legend_y, _LEFT + _PLOT_W + 48, legend_y, color, 2.0, dash)
        )
        out.append(charts.Text(_LEFT + _PLOT_W + 54, legend_y + 3.5, f"{series.label} ({level})", 9.5))
    return charts.Chart(_WIDTH, _HEIGHT, chart.title, tuple(out))


def render_step_chart_svg(chart: StepChart) -> str:
    """The chart as an SVG element (no XML prolog, so that it can be inlined in HTML)."""
    return charts.svg(_chart(chart), standalone=False)


# --- PDF ---------------------------------------------------------------------------------------------


_CELL_SIZE = 7.0
_PADDING = 6.0
_CELL_PAD = 2.5  # left and right padding inside a cell
_CHUNK = 200  # rows per table flowable: splitting one long table across pages costs rows x pages


class _Measures:
    """Widths in points at the cell size, each distinct text measured once per document (issue 21:
    a 20,000-row report measured the same words, actions and names hundreds of thousands of times).
    One table per font, keyed by the text alone."""

    def __init__(self) -> None:
        self._widths: dict[str, dict[str, float]] = {}

    def width(self, text: str, font: str = REGULAR) -> float:
        """The width of `text` (already printable) in `font`."""
        known = self._widths.get(font)
        if known is None:
            known = self._widths[font] = {}
        found = known.get(text)
        if found is None:
            found = known[text] = stringWidth(text, font, _CELL_SIZE)
        return found

    def words_width(self, text: str, font: str) -> float:
        """The width of the longest word of `text`."""
        return max((self.width(printable(w), font) for w in text.split()), default=0.0)


def _widths(table: Table, available: float, measures: _Measures | None = None) -> list[float]:
    """Column widths in points: each column gets at least its longest word (header or cell, so that
    no word is cut), and the rest of the line in proportion to its typical text length."""
    measures = measures or _Measures()
    minimum, desired = [], []
    entries = len(table.rows) - table.totals  # the total rows after them are set in bold
    for index, column in enumerate(table.columns):
        cells = [row[index] for row in table.rows]
        longest = max(
            [
                measures.words_width(column, BOLD),
                *(
                    min(measures.words_width(c, BOLD if i >= entries else REGULAR), 160.0)
                    for i, c in enumerate(cells)
                ),
            ],
            default=0.0,
        )
        minimum.append(longest + _PADDING)
        texts = sorted(measures.width(printable(c)) for c in cells) or [0.0]
        typical = texts[min(len(texts) - 1, int(len(texts) * 0.9))]
        desired.append(max(minimum[-1], min(typical + _PADDING, 260.0)))
    spare = available - sum(minimum)
    if spare <= 0:
        return [available * m / sum(minimum) for m in minimum]
    extra = [d - m for d, m in zip(desired, minimum, strict=True)]
    if sum(extra) <= spare:
        grow = [e + (spare - sum(extra)) / len(extra) for e in extra]
    else:
        grow = [spare * e / sum(extra) for e in extra]
    return [m + g for m, g in zip(minimum, grow, strict=True)]


def _wrapped(text: str, width: float, measures: _Measures | None = None, font: str = REGULAR) -> str:
    """`text` broken into lines that fit a cell of `width` points (between words; a word longer than
    the line keeps its own line, as a paragraph would): ReportLab's simpleSplit, with each word
    measured once per document, in `font`."""
    measures = measures or _Measures()
    clean = printable(text)
    room = width - 2 * _CELL_PAD
    if measures.width(clean, font) <= room:
        return clean
    space = measures.width(" ", font)
    lines: list[str] = []
    for paragraph in clean.split("\n"):
        line: list[str] = []
        used = -space
        for word in paragraph.split():
            size = measures.width(word, font)
            if used + space + size <= room or not line:
                line.append(word)
                used += space + size
            else:
                lines.append(" ".join(line))
                line, used = [word], size
        if line:
            lines.append(" ".join(line))
    return "\n".join(lines)


def _piece(
    header: list[Any],
    rows: tuple[tuple[str, ...], ...],
    widths: list[float],
    style: TableStyle,
    measures: _Measures,
    totals: int = 0,
) -> Any:
    """A piece of a long table: the header and up to _CHUNK rows, each cell wrapped to its column;
    its last `totals` rows (in the last piece) are totals, set in bold under a rule."""
    totals = min(totals, len(rows))
    body = [
        [
            _wrapped(value, width, measures, BOLD if index >= len(rows) - totals else REGULAR)
            for value, width in zip(row, widths, strict=True)
        ]
        for index, row in enumerate(rows)
    ]
    # splitInRow: a row taller than a page (a cell of hundreds of lines) continues on the next page,
    # where ReportLab otherwise fails the whole document.
    made = PdfTable([header, *body], colWidths=widths, repeatRows=1, hAlign="LEFT", splitInRow=1)
    made.setStyle(style)
    if totals:
        first = len(body) - totals + 1  # the header is row 0
        made.setStyle(
            TableStyle(
                [
                    ("FONT", (0, first), (-1, -1), BOLD, _CELL_SIZE, _CELL_SIZE * 1.2),
                    ("LINEABOVE", (0, first), (-1, first), 0.6, colors.black),
                ]
            )
        )
    return made


class _Later(Flowable):  # type: ignore[misc]
    """A piece of a long table made only when the layout reaches it (issue 21): the pieces already
    drawn are let go, and those not yet reached are never all held at once, wrapped. It never fits,
    so the layout splits it: into the table itself, or the part of it that fits and the rest."""

    def __init__(self, make: Callable[[], Any], name: str) -> None:
        super().__init__()
        self._make, self._name = make, name

    def identity(self, maxLen: int | None = None) -> str:  # ReportLab names the argument
        """What a layout error names: the table and its rows, not this stand-in."""
        return self._name if maxLen is None else self._name[:maxLen]

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return available_width, available_height + 1

    def split(self, available_width: float, available_height: float) -> list[Any]:
        made = self._make()
        _, height = made.wrapOn(self.canv, available_width, available_height)
        if height <= available_height:
            return [made]
        return list(made.splitOn(self.canv, available_width, available_height))  # the first piece fits

    def draw(self) -> None:  # never drawn: always split first
        raise AssertionError("a table piece is drawn only once made")


def render_report_pdf(document: ReportDocument, progress: Callable[[int], None] | None = None) -> bytes:
    """The report as a PDF: title, notice, metadata, facts, chart, then every table in full.
    `progress` is told how many table rows are laid out so far, as pages are made (report jobs)."""

    page = landscape(A4)
    margin = 12 * mm
    available = page[0] - 2 * margin
    base = ParagraphStyle("base", fontName=REGULAR, fontSize=8.5, leading=10.5)
    small = ParagraphStyle("small", parent=base, fontSize=7.5, leading=9)
    cell = ParagraphStyle("cell", parent=base, fontSize=_CELL_SIZE, leading=_CELL_SIZE * 1.2)
    head = ParagraphStyle("head", parent=cell, fontName=BOLD)
    heading = ParagraphStyle("heading", parent=base, fontName=BOLD, fontSize=11.5, leading=14, spaceBefore=8)
    title_style = ParagraphStyle("title", parent=base, fontName=BOLD, fontSize=15, leading=19)
    notice_style = ParagraphStyle("notice", parent=base, fontName=BOLD, textColor=colors.HexColor("#a61b1b"))

    def para(text: str, style: ParagraphStyle = base) -> Any:
        return Paragraph(html.escape(printable(text), quote=False), style)

    story: list[Any] = [para(document.title, title_style), Spacer(1, 2 * mm)]
    measures = _Measures()
    if document.notice:
        story.append(para(document.notice, notice_style))
    story += [para(f"{key}: {value}", small) for key, value in document.metadata]
    if document.facts:
        story.append(para(document.labels.summary, heading))
        facts = PdfTable(
            [[para(key, head), para(value, cell)] for key, value in document.facts],
            colWidths=[available * 0.3, available * 0.7],
            hAlign="LEFT",
        )
        facts.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d0d0d0")),
                ]
            )
        )
        story.append(facts)
    if document.chart is not None:
        story += [Spacer(1, 3 * mm), charts.drawing(_chart(document.chart), 0.85, text=printable)]
    for table in document.tables:
        header = [para(column, head) for column in table.columns]
        intro = [para(table.title, heading)]
        if table.note:
            intro.append(para(table.note, small))
        if not table.rows:
            columns = document.labels.columns % {"columns": ", ".join(table.columns)}
            story.append(KeepTogether([*intro, para(columns, small)]))
            story.append(para(document.labels.no_entries, small))
            continue
        widths = _widths(table, available, measures)
        # Issue 21: a cell is plain text wrapped to its column's fixed width (one measure per word),
        # not a Paragraph laid out per cell; the rows go in tables of _CHUNK rows, each with the
        # header, so that no flowable is split again and again across pages.
        style = TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("FONT", (0, 1), (-1, -1), REGULAR, _CELL_SIZE, _CELL_SIZE * 1.2),
                ("LEFTPADDING", (0, 0), (-1, -1), _CELL_PAD),
                ("RIGHTPADDING", (0, 0), (-1, -1), _CELL_PAD),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f5f5f5")]),
            ]
        )
        story += intro

        story += [
            _Later(
                partial(
                    _piece,
                    header,
                    table.rows[start : start + _CHUNK],
                    widths,
                    style,
                    measures,
                    table.totals if start + _CHUNK >= len(table.rows) else 0,
                ),
                f"table {table.title!r}, rows {start + 1} to {min(start + _CHUNK, len(table.rows))}",
            )
            for start in range(0, len(table.rows), _CHUNK)
        ]

    footer = printable(
        document.footer
        or f"{document.title} | generated {utc_text(document.created_at)} | allocator {document.software_version}"
    )
    notice = printable(document.notice) if document.notice else None

    def decorate(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        if document.test_mode:
            canvas.setFillColorRGB(*WATERMARK_COLOR)
            canvas.setFont(BOLD, 40)
            canvas.translate(page[0] / 2, page[1] / 2)
            canvas.rotate(25)
            canvas.drawCentredString(0, 14, WATERMARK_FR)
            canvas.drawCentredString(0, -36, WATERMARK_EN)
            canvas.rotate(-25)
            canvas.translate(-page[0] / 2, -page[1] / 2)
        canvas.setFillColorRGB(0, 0, 0)
        canvas.setFont(REGULAR, 7)
        canvas.drawString(margin, 7 * mm, footer)
        if notice:
            canvas.setFont(BOLD, 7)
            canvas.drawString(margin, page[1] - 7 * mm, notice)
        canvas.restoreState()

    buffer = io.BytesIO()
    template = SimpleDocTemplate(
        buffer,
        pagesize=page,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=13 * mm,
        title=printable(f"{document.title} {document.document_id}"),
        author="allocator",
        subject=printable(document.document_id),
        creator=f"allocator {printable(document.software_version)}",
        invariant=1,
    )
    if progress is not None:
        done = [0]

        def counted(flowable: Any) -> None:
            if isinstance(flowable, PdfTable) and flowable.repeatRows == 1:  # a piece of a long table
                done[0] += len(flowable._cellvalues) - 1
                progress(done[0])

        template.afterFlowable = counted
    template.build(
        story,
        onFirstPage=decorate,
        onLaterPages=decorate,
        canvasmaker=_page_numbering_canvas(document.labels.page),
    )
    return buffer.getvalue()


def _page_numbering_canvas(label: str) -> Any:
    """A reportlab canvas class that stamps "Page n of N" on every page at save time."""

    class NumberedCanvas(Canvas):  # type: ignore[misc]
        """Each page is kept until the number of pages is known, its drawing compressed (issue 21:
        a 640-page review held 200,000 small strings of drawing operators, a fifth of its peak
        memory); the page made at the end is the same, byte for byte."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            state = dict(self.__dict__)
            drawn = "\n".join(self._code).encode("utf-8") if self._code else None
            state["_code"] = zlib.compress(drawn, 1) if drawn is not None else None
            self._pages.append(state)
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for index, state in enumerate(self._pages):
                drawn = state["_code"]
                state["_code"] = [zlib.decompress(drawn).decode("utf-8")] if drawn is not None else []
                self._pages[index] = {}  # let the page's state go once it is drawn
                self.__dict__.update(state)
                width = self._pagesize[0]
                self.saveState()
                self.setFont(REGULAR, 7)
                self.drawRightString(
                    width - 12 * mm, 7 * mm, label % {"page": self._pageNumber, "total": total}
                )
                self.restoreState()
                super().showPage()
            super().save()

    return NumberedCanvas
