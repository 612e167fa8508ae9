"""Shared PDF machinery: a deterministic, hygienic canvas and a small text-layout engine.

Determinism (same input, same bytes): reportlab's invariant mode, a creation date taken from the input,
and a document identifier (/ID) that reportlab derives from the metadata, which holds the input's
document id. Hygiene (BLD-01, LBL-10): standard Type-1 fonts only, no images, no annotations, no
JavaScript, no attachments, no optional content, and metadata that holds only a generic title and the
document id - never a product, arm or person.

Layout: label texts are laid out once per trial into a `Plan` of fixed drawing operations plus named
`Slot`s for the per-kit values. The same plan is used for every kit, so labels of different kits (and
arms) differ only in the slot contents (BLD-02, LBL-03). A text that does not fit is an error, never
clipped: a truncated mandatory particular is worse than no label.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from kits.errors import LabelLayoutError
from kits.model import Bilingual, DocumentMeta

REGULAR = "Helvetica"
BOLD = "Helvetica-Bold"
OBLIQUE = "Helvetica-Oblique"

LEADING = 1.18  # line pitch as a multiple of the font size
DESCENT = 0.22  # Helvetica descender depth, as a multiple of the font size
ASCENT = 0.72  # Helvetica cap height, as a multiple of the font size

WATERMARK_FR = "TEST \u2013 NE PAS UTILISER"
WATERMARK_EN = "TEST \u2013 DO NOT USE"
WATERMARK_COLOR = (0.98, 0.78, 0.78)
DUPLICATE_FR = "DUPLICATA"
DUPLICATE_EN = "DUPLICATE"
MARK_COLOR = (0.75, 0.0, 0.0)

PAGE_WIDTH, PAGE_HEIGHT = A4


def width(text: str, font: str, size: float) -> float:
    """Width of `text` in points."""
    return float(stringWidth(text, font, size))


_GLUE_BEFORE = re.compile(r" (?=[%:;!?\u00bb)])")


def glue_punctuation(text: str) -> str:
    """French typography: never start a line with "%", ":", ";", "!", "?" or a closing mark."""
    return _GLUE_BEFORE.sub("\u00a0", text)


def keep_together(text: str) -> str:
    """Non-breaking spaces, so that a phone number or a reference is never split across two lines."""
    return text.replace(" ", "\u00a0")


def utc_text(moment: datetime) -> str:
    """AUD-07: ``2025-03-30 01:30:00 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duplicate_text(reprint_number: int) -> str:
    """LBL-12: the duplicate marking of the n-th reprint."""
    french = f"{DUPLICATE_FR} \u2013 r\u00e9impression n\u00b0 {reprint_number}"
    return f"{french} / {DUPLICATE_EN} \u2013 reprint no. {reprint_number}"


# --- canvas ------------------------------------------------------------------------------------------


def new_canvas(
    buffer: io.BytesIO, *, title: str, document: DocumentMeta, software_version: str, compress: bool = True
) -> Any:
    """An A4 canvas whose output depends only on what is drawn and on `document`.

    Without compression, drawings of equal byte length give files of equal byte length (BLD-02).
    """
    canvas = Canvas(
        buffer,
        pagesize=A4,
        invariant=1,  # no wall-clock time or random /ID
        pageCompression=1 if compress else 0,
        lang="fr-FR",
        initialFontName=REGULAR,
    )
    # BLD-01 / LBL-10: metadata is generic. The title and the document id are the only variable parts.
    canvas.setTitle(f"{title} {document.document_id}")
    canvas.setAuthor("allocator")
    canvas.setSubject(document.document_id)
    canvas.setKeywords(document.document_id)
    canvas.setCreator(f"allocator {software_version}")
    stamp = document.created_at.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00'")
    canvas.setDateFormatter(lambda *_parts: stamp)
    return canvas


def finish(canvas: Any, buffer: io.BytesIO) -> bytes:
    """Save the canvas and return the PDF bytes."""
    canvas.save()
    return buffer.getvalue()


def draw_page_watermark(canvas: Any) -> None:
    """RND-13 / LBL-15: a diagonal TEST mark across the page, drawn first so that content stays legible."""
    canvas.saveState()
    canvas.setFillColorRGB(*WATERMARK_COLOR)
    canvas.translate(PAGE_WIDTH / 2, PAGE_HEIGHT / 2)
    canvas.rotate(55)
    canvas.setFont(BOLD, 44)
    canvas.drawCentredString(0, 12, WATERMARK_FR)
    canvas.drawCentredString(0, -40, WATERMARK_EN)
    canvas.restoreState()


def draw_box_watermark(canvas: Any, box_width: float, box_height: float) -> None:
    """LBL-15: the TEST mark inside one label, so that a label cut from its sheet still carries it.

    Placed in the lower left, away from the QR code in the upper right, which would hide part of it."""
    size = min(box_height / 7, box_width / 19)
    canvas.saveState()
    canvas.setFillColorRGB(*WATERMARK_COLOR)
    canvas.translate(box_width * 0.38, box_height * 0.3)
    canvas.rotate(18)
    canvas.setFont(BOLD, size)
    canvas.drawCentredString(0, size * 0.15, WATERMARK_FR)
    canvas.drawCentredString(0, -size * 1.05, WATERMARK_EN)
    canvas.restoreState()


# --- layout plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextOp:
    """One line of fixed text."""

    x: float
    y: float
    text: str
    font: str
    size: float
    color: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class LineOp:
    """A straight line (write-in lines, rules)."""

    x1: float
    y1: float
    x2: float
    y2: float
    line_width: float = 0.4
    gray: float = 0.35


@dataclass(frozen=True)
class Slot:
    """Where a per-kit value goes: left end of its baseline, the room it has, and its font."""

    x: float
    y: float
    width: float
    font: str
    size: float

    def draw(self, canvas: Any, value: str, field_name: str) -> None:
        """Draw `value`; raise `LabelLayoutError` if it is wider than the slot (never clip)."""
        if width(value, self.font, self.size) > self.width + 0.01:
            raise LabelLayoutError(
                f"{field_name} {value!r} is too long for its place on the label "
                f"({width(value, self.font, self.size):.0f} pt, room for {self.width:.0f} pt)"
            )
        canvas.setFont(self.font, self.size)
        canvas.drawString(self.x, self.y, value)


_POWER_OF_TEN = re.compile(r"(?<=10)\^(\d{1,2})")


def draw_text(canvas: Any, x: float, y: float, text: str, font: str, size: float) -> None:
    """Draw `text` at (x, y); a power of ten written `10^6` (the standard fonts have no superscript
    six) is printed as 10 with a raised, smaller 6, never as a caret (issue 13). The width is then
    a little less than `width(text)`, so a line measured with the caret still fits."""
    parts = _POWER_OF_TEN.split(text)
    if len(parts) == 1:
        canvas.drawString(x, y, text)
        return
    for index, part in enumerate(parts):
        if index % 2 == 0:
            canvas.setFont(font, size)
            canvas.drawString(x, y, part)
            x += width(part, font, size)
        else:
            small = size * 0.62
            canvas.setFont(font, small)
            canvas.drawString(x, y + size * 0.4, part)
            x += width(part, font, small)
    canvas.setFont(font, size)


@dataclass
class Plan:
    """Fixed operations of a box (label, sheet block) and the slots for its variable values."""

    ops: list[TextOp | LineOp] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)

    def draw_fixed(self, canvas: Any) -> None:
        """Draw the fixed operations (in box coordinates)."""
        font: tuple[str, float] | None = None
        color: tuple[float, float, float] | None = None
        for op in self.ops:
            if isinstance(op, TextOp):
                if font != (op.font, op.size):
                    font = (op.font, op.size)
                    canvas.setFont(op.font, op.size)
                if color != op.color:
                    color = op.color
                    canvas.setFillColorRGB(*op.color)
                draw_text(canvas, op.x, op.y, op.text, op.font, op.size)
            else:
                canvas.saveState()
                canvas.setLineWidth(op.line_width)
                canvas.setStrokeGray(op.gray)
                canvas.line(op.x1, op.y1, op.x2, op.y2)
                canvas.restoreState()
        if color not in (None, (0.0, 0.0, 0.0)):
            canvas.setFillColorRGB(0, 0, 0)


class Overflow(Exception):
    """The content does not fit at the scale being tried."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class FieldSpec:
    """A caption followed by a slot for a per-kit value, with a write-in line under the slot.

    `room` is the slot width in points, or None to take the rest of the line.
    """

    name: str
    caption: str
    value_font: str
    value_size: float
    room: float | None = None
    underline: bool = True


def take_line(words: list[str], font: str, size: float, line_width: float) -> tuple[str, list[str]]:
    """The longest run of leading `words` that fits `line_width`, and the words left over. A first word
    wider than the line is split between characters."""
    line = ""
    for index, word in enumerate(words):
        candidate = f"{line} {word}" if line else word
        if width(candidate, font, size) <= line_width:
            line = candidate
            continue
        if line:
            return line, words[index:]
        head = ""
        for char in word:
            if head and width(head + char, font, size) > line_width:
                break
            head += char
        return head, [word[len(head) :], *words[index + 1 :]]
    return line, []


class Flow:
    """Places lines top-down in a box; lines beside a reserved top-right area are shortened."""

    def __init__(
        self,
        plan: Plan,
        *,
        left: float,
        right: float,
        top: float,
        bottom: float,
        scale: float,
        reserved_left: float | None = None,
        reserved_bottom: float | None = None,
    ) -> None:
        self.plan = plan
        self.left = left
        self.right = right
        self.y = top  # top of the next line
        self.bottom = bottom
        self.scale = scale
        self.reserved_left = reserved_left
        self.reserved_bottom = reserved_bottom

    def size(self, base: float) -> float:
        """Font size at the current scale."""
        return round(base * self.scale, 2)

    def _line_box(self, size: float, what: str) -> tuple[float, float]:
        """Baseline y and right edge for the next line of font size `size`, or Overflow."""
        baseline = self.y - size * ASCENT - (size * (LEADING - 1) / 2)
        line_bottom = self.y - size * LEADING
        if line_bottom < self.bottom - 0.01:
            raise Overflow(what)
        right = self.right
        if (
            self.reserved_left is not None
            and self.reserved_bottom is not None
            and self.y > self.reserved_bottom
        ):
            right = self.reserved_left  # some part of the line is level with the reserved area
        self.y = line_bottom
        return baseline, right

    def next_line_width(self, size: float) -> float:
        """Width available to the next line (without consuming it)."""
        if (
            self.reserved_left is not None
            and self.reserved_bottom is not None
            and self.y > self.reserved_bottom
        ):
            return self.reserved_left - self.left
        return self.right - self.left

    def skip(self, points: float) -> None:
        """Vertical space."""
        self.y -= points * self.scale
        if self.y < self.bottom - 0.01:
            raise Overflow("spacing")

    def paragraph(
        self,
        text: str,
        font: str,
        base_size: float,
        what: str,
        color: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        """Wrapped text."""
        size = self.size(base_size)
        words = [word for word in glue_punctuation(text).split(" ") if word]
        while words:
            line, words = take_line(words, font, size, self.next_line_width(size))
            baseline, _right = self._line_box(size, what)
            self.plan.ops.append(TextOp(self.left, baseline, line, font, size, color))

    def bilingual(
        self,
        text: Bilingual,
        font: str,
        base_size: float,
        what: str,
        *,
        caption: Bilingual | None = None,
        en_font: str | None = None,
    ) -> None:
        """LBL-04: French first, then English; on one line as "fr / en" when that fits."""
        fr = f"{caption.fr} : {text.fr}" if caption else text.fr
        en = f"{caption.en}: {text.en}" if caption else text.en
        size = self.size(base_size)
        joined = f"{fr} / {en}"
        if width(joined, font, size) <= self.next_line_width(size):
            self.paragraph(joined, font, base_size, what)
            return
        self.paragraph(fr, font, base_size, what)
        self.paragraph(en, en_font or font, base_size, what)

    def fields(self, specs: Sequence[FieldSpec], caption_font: str, base_size: float) -> None:
        """One line of caption + slot pairs; each pair on its own line if they do not fit together."""
        size = self.size(base_size)
        try:
            self._fields_line(specs, caption_font, size, dry_run=True)
        except Overflow:
            if len(specs) == 1:
                raise
            for spec in specs:
                self._fields_line([spec], caption_font, size, dry_run=False)
            return
        self._fields_line(specs, caption_font, size, dry_run=False)

    def _fields_line(
        self, specs: Sequence[FieldSpec], caption_font: str, size: float, *, dry_run: bool
    ) -> None:
        value_size = max(round(spec.value_size * self.scale, 2) for spec in specs)
        height = max(size, value_size)
        what = ", ".join(spec.name for spec in specs)
        saved_y = self.y
        baseline, right = self._line_box(height, what)
        x = self.left
        gap = 0.9 * size
        ops: list[TextOp | LineOp] = []
        slots: dict[str, Slot] = {}
        for index, spec in enumerate(specs):
            caption = f"{spec.caption} :"
            ops.append(TextOp(x, baseline, caption, caption_font, size))
            x += width(caption, caption_font, size) + 0.3 * size
            spec_size = round(spec.value_size * self.scale, 2)
            last = index == len(specs) - 1
            room = right - x if last or spec.room is None else spec.room * self.scale
            if room < 3 * spec_size or x + room > right + 0.01:
                self.y = saved_y
                raise Overflow(what)
            slots[spec.name] = Slot(x, baseline, room, spec.value_font, spec_size)
            if spec.underline:
                ops.append(LineOp(x, baseline - 0.18 * spec_size, x + room, baseline - 0.18 * spec_size))
            x += room + gap
        if dry_run:
            self.y = saved_y
            return
        self.plan.ops.extend(ops)
        self.plan.slots.update(slots)


def fit(build: Callable[[float], Plan], what: str, min_scale: float = 0.72, max_scale: float = 1.0) -> Plan:
    """Build at the largest scale (`max_scale` down to `min_scale`) at which everything fits."""
    scale = max_scale
    last = ""
    while scale >= min_scale - 1e-9:
        try:
            return build(scale)
        except Overflow as overflow:
            last = overflow.what
        scale = round(scale - 0.02, 2)
    raise LabelLayoutError(
        f"the {what} does not fit even with the smallest allowed text: shorten the trial's label texts "
        f"(last item that did not fit: {last})"
    )
