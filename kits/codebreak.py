"""Sealed code-break sheets: the offline fallback of emergency unblinding (UNB-06, UNB-07).

One A4 page per kit, in three horizontal parts:

* the **visible part** (top): trial identifiers, the kit and sheet numbers, a QR code of the sheet
  number, the document id, what to do (open only in a medical emergency when the online service is
  unreachable, call the 24/7 line first, register the opening as soon as the service is back), lines
  to write who opened the sheet, when and why, and the electronic signature of the person who
  generated the sheets (ACC-12);
* below the upper fold line, the **sealed panel**: a box holding the sealed text (the kit's arm
  label, supplied by the application), printed between two security patterns;
* below the lower fold line, the **security flap**, covered with a dense pattern. Folded up along the
  lower line (printed "(1)") it lies face down on the box, and sealed at its edges it hides the text,
  even against the light: whoever looks through the paper sees the text through the dense pattern.
  Folded again along the upper line ("(2)"), the sealed part goes behind the visible part.

The one exception in this library to "no input carries an arm" (BLD-01): a sheet's `sealed_text` is
what is printed inside the sealed box. The renderer treats it as an opaque string: it appears only in
the box, never in the metadata, the QR code or an error message, and nothing else on the page
depends on it. The box has a fixed size; the text is fitted into it (the font shrinks and the text
wraps over at most three lines), so the visible part of the sheets of two kits with the same
numbers is identical whatever their arms (BLD-02): page count, layout, objects and pixels outside
the box. Only unblinded roles (code_break:generate) ever receive these documents.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reportlab.lib.units import mm

from kits.errors import KitNumberError, LabelDataError, LabelLayoutError
from kits.labels import (
    CAPTION_CONTACT,
    CAPTION_EMERGENCY,
    CAPTION_KIT,
    CAPTION_PHONE,
    CAPTION_PROTOCOL,
    CAPTION_SPONSOR,
)
from kits.model import DocumentMeta, TrialLabelInfo
from kits.numbers import format_kit_number, normalize_kit_number
from kits.pdf import (
    BOLD,
    LEADING,
    MARK_COLOR,
    OBLIQUE,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    WATERMARK_COLOR,
    WATERMARK_EN,
    WATERMARK_FR,
    FieldSpec,
    Flow,
    Plan,
    draw_page_watermark,
    duplicate_text,
    finish,
    fit,
    keep_together,
    new_canvas,
    take_line,
    utc_text,
    width,
)
from kits.qr import draw_qr, encode_qr
from kits.sheet import ElectronicSignature
from kits.text import check_required

DOCUMENT_TITLE = "Fiches de lev\u00e9e d'aveugle / Code-break sheets"
HEADING = "ENVELOPPE DE LEV\u00c9E D'AVEUGLE / CODE-BREAK SHEET"
CAPTION_SHEET = "N\u00b0 de fiche / Sheet no."
CAPTION_REPLACES = "Remplace la fiche / Replaces sheet"
CAPTION_DOCUMENT = "Document"
CAPTION_SIGNATURE = (
    "G\u00e9n\u00e9r\u00e9 et sign\u00e9 \u00e9lectroniquement par / Generated and signed electronically by"
)
CAPTION_MEANING = "Signification / Meaning"
CAPTION_OPENED_BY = "Ouvert par (nom, fonction) / Opened by (name, role)"
CAPTION_OPENED_AT = "Date, heure / Date, time"
CAPTION_SIGNED = "Signature"
CAPTION_REASON = "Motif / Reason"
CAPTION_SEALED = "Bras de traitement / Treatment arm"
FOLD_HERE = "PLIER ICI / FOLD HERE"
SEAL_HERE = "SCELLER / SEAL"
FLAP_CAPTION = (
    "Volet de s\u00e9curit\u00e9 : le rabattre sur la case, puis sceller les bords / "
    "Security flap: fold it over the box, then seal the edges"
)
NO_REPLACEMENT = "\u2013"

INSTRUCTIONS_FR = (
    "\u00c0 ouvrir uniquement en cas d'urgence m\u00e9dicale, quand la connaissance du traitement est "
    "indispensable \u00e0 la prise en charge du patient ET que le service de randomisation en ligne est "
    "inaccessible. Appeler d'abord la ligne d'urgence 24 h/24 : {phone}. Ne lever l'aveugle que pour le "
    "patient qui a re\u00e7u ce kit. D\u00e8s que le service est de nouveau accessible, y enregistrer "
    "l'ouverture (\u00ab lev\u00e9e d'aveugle hors ligne \u00bb) avec le num\u00e9ro de cette fiche : qui "
    "l'a ouverte, quand et pourquoi. Conserver la fiche ouverte dans le classeur de l'essai pour le "
    "moniteur."
)
INSTRUCTIONS_EN = (
    "Open only in a medical emergency, when knowing the treatment is essential to the patient's care AND "
    "the online randomization service is unreachable. First call the 24/7 emergency line: {phone}. "
    "Unblind only the patient who received this kit. As soon as the service is back, register the "
    "opening there (\u201coffline unblinding\u201d) with this sheet's number: who opened it, when and "
    "why. Keep the opened sheet in the trial file for the monitor."
)


def opening_warning(kit_number: str) -> tuple[str, str]:
    """The warning printed above the fold and again beside the box, French first (LBL-04)."""
    kit = format_kit_number(kit_number)
    return (
        f"L'ouverture de cette partie l\u00e8ve l'aveugle du kit {kit}.",
        f"Opening this part unblinds kit {kit}.",
    )


MARGIN = 14 * mm
TOP = PAGE_HEIGHT - MARGIN
# The lower fold line ("(1)", folded first): everything below it is the security flap. Folded up, the
# flap covers exactly the panel between the two fold lines, so the upper fold line lies twice as high.
FLAP_TOP = 214.0
FOLD_TOP = 2 * FLAP_TOP
QR_SIZE = 88.0
QR_X = PAGE_WIDTH - MARGIN - QR_SIZE
STATUS_Y = TOP - 30
STATUS_PITCH = 14.0
CONTENT_TOP = STATUS_Y - STATUS_PITCH - 6  # two status lines are reserved above it
QR_Y = CONTENT_TOP - QR_SIZE
# The sealed box, in page coordinates: (x, y, width, height). Tests mask it when comparing sheets.
BOX_X = MARGIN + 14
BOX_Y = FLAP_TOP + 52
BOX_WIDTH = PAGE_WIDTH - 2 * BOX_X
BOX_HEIGHT = FOLD_TOP - 54 - BOX_Y
SEALED_BOX = (BOX_X, BOX_Y, BOX_WIDTH, BOX_HEIGHT)
BOX_PADDING = 14.0
SEALED_SIZES = (30.0, 27.0, 24.0, 22.0, 20.0, 18.0, 16.0, 14.0, 13.0, 12.0, 11.0, 10.0, 9.0, 8.0)
SEALED_MAX_LINES = 3
# The flap's dense pattern covers the mirror image of the box about the lower fold line, with a margin.
FLAP_PATTERN = (
    BOX_X - 8,
    2 * FLAP_TOP - (BOX_Y + BOX_HEIGHT) - 8,
    BOX_WIDTH + 16,
    BOX_HEIGHT + 16,
)
IDENTITY_Y = FOLD_TOP + 40
WARNING_Y = FOLD_TOP + 24

_SHEET_NUMBER = re.compile(r"[A-Z0-9][A-Z0-9-]{1,39}")  # QR alphanumeric mode, like the sheet numbers
_KIT_SAMPLE = "0000-0000"


@dataclass(frozen=True)
class SealedSheet:
    """One kit's sheet: its numbers, the sheet it replaces (a lost one) if any, and the text sealed in
    the box. `kit_number` may be given in display form; it is stored canonical."""

    sheet_number: str
    kit_number: str
    sealed_text: str
    replaces: str | None = None

    def __post_init__(self) -> None:
        for value, field in ((self.sheet_number, "sheet number"), (self.replaces, "replaced sheet number")):
            if value is not None and (not isinstance(value, str) or not _SHEET_NUMBER.fullmatch(value)):
                raise LabelDataError(f"{field} {value!r} must be 2-40 characters A-Z, 0-9 and '-'")
        try:
            object.__setattr__(self, "kit_number", normalize_kit_number(self.kit_number))
        except KitNumberError as exc:
            raise LabelDataError(f"kit number of sheet {self.sheet_number}: {exc}") from exc
        # The sealed text is never quoted in an error message: messages travel further than the paper.
        try:
            check_required(self.sealed_text, "sealed text", 120)
        except LabelDataError:
            raise LabelDataError(
                f"the sealed text of sheet {self.sheet_number} is empty, too long or not printable with "
                "the standard PDF fonts"
            ) from None


@dataclass(frozen=True)
class CodeBreakDocument:
    """A printed set of sealed sheets, the signature of the person who generated them, its identity."""

    sheets: tuple[SealedSheet, ...]
    signature: ElectronicSignature
    document: DocumentMeta
    # UNB-11: the sheet of a drill subject, for an offline unblinding drill: marked on every page.
    drill: bool = False

    def __post_init__(self) -> None:
        sheets = tuple(self.sheets)
        object.__setattr__(self, "sheets", sheets)
        if not sheets or not all(isinstance(sheet, SealedSheet) for sheet in sheets):
            raise LabelDataError("a code-break document needs at least one SealedSheet")
        numbers = [sheet.sheet_number for sheet in sheets]
        if len(set(numbers)) != len(numbers):
            raise LabelDataError("a sheet number appears twice in one document")
        if len({len(number) for number in numbers}) != 1:
            # BLD-02, LBL-08: the QR codes of one document all have the same size.
            raise LabelDataError("the sheet numbers of one document must all have the same length")
        if not isinstance(self.signature, ElectronicSignature):
            raise LabelDataError("signature must be an ElectronicSignature")
        if not isinstance(self.document, DocumentMeta):
            raise LabelDataError("document must be a DocumentMeta")


# --- the fixed page ----------------------------------------------------------------------------------


def _visible_plan(trial: TrialLabelInfo, document: CodeBreakDocument) -> Plan:
    """The visible part: fixed texts, and slots for the kit number, sheet number and replaced sheet."""
    phone = keep_together(trial.emergency_phone)
    signature = document.signature

    def build(scale: float) -> Plan:
        plan = Plan()
        flow = Flow(
            plan,
            left=MARGIN,
            right=PAGE_WIDTH - MARGIN,
            top=CONTENT_TOP,
            bottom=IDENTITY_Y + 10,
            scale=scale,
            reserved_left=QR_X - 8,
            reserved_bottom=QR_Y - 12,
        )
        flow.paragraph(f"{trial.trial_code} \u2013 {trial.short_title}", BOLD, 10, "short title")
        reference = f"EU CT {trial.eu_ct_number} \u2013 {CAPTION_PROTOCOL} {trial.protocol_code}"
        if trial.nct_number:
            reference += f" \u2013 {trial.nct_number}"
        flow.paragraph(reference, REGULAR, 8.5, "trial reference")
        flow.paragraph(f"{CAPTION_SPONSOR} : {trial.sponsor_name}", REGULAR, 8, "sponsor")
        flow.skip(4)
        flow.fields(
            [FieldSpec("kit", CAPTION_KIT, BOLD, 18, room=width(_KIT_SAMPLE, BOLD, 18) + 2, underline=False)],
            REGULAR,
            9,
        )
        flow.fields([FieldSpec("sheet", CAPTION_SHEET, BOLD, 12, underline=False)], REGULAR, 9)
        flow.fields([FieldSpec("replaces", CAPTION_REPLACES, REGULAR, 9, underline=False)], REGULAR, 8)
        flow.paragraph(
            f"{CAPTION_DOCUMENT} : {document.document.document_id} \u2013 Imprim\u00e9 le / Printed on "
            f"{utc_text(document.document.created_at)}",
            REGULAR,
            8,
            "document id",
        )
        flow.skip(6)
        flow.paragraph(f"{CAPTION_EMERGENCY} : {phone}", BOLD, 11, "emergency phone", MARK_COLOR)
        flow.paragraph(
            f"{CAPTION_CONTACT} : {trial.main_contact_name} \u2013 {CAPTION_PHONE} "
            f"{keep_together(trial.main_contact_phone)}",
            REGULAR,
            8.5,
            "main contact",
        )
        flow.skip(5)
        flow.paragraph(INSTRUCTIONS_FR.format(phone=phone), REGULAR, 8.6, "instructions (fr)")
        flow.skip(2)
        flow.paragraph(INSTRUCTIONS_EN.format(phone=phone), OBLIQUE, 8.2, "instructions (en)")
        flow.skip(7)
        flow.fields([FieldSpec("opened_by", CAPTION_OPENED_BY, REGULAR, 9)], REGULAR, 8.5)
        flow.skip(5)
        flow.fields(
            [
                FieldSpec("opened_at", CAPTION_OPENED_AT, REGULAR, 9, room=150),
                FieldSpec("signed", CAPTION_SIGNED, REGULAR, 9),
            ],
            REGULAR,
            8.5,
        )
        flow.skip(5)
        flow.fields([FieldSpec("reason", CAPTION_REASON, REGULAR, 9)], REGULAR, 8.5)
        flow.skip(6)
        flow.paragraph(
            f"{CAPTION_SIGNATURE} : {signature.printed_name} \u2013 {utc_text(signature.signed_at)} \u2013 "
            f"{CAPTION_MEANING} : {signature.meaning.fr} / {signature.meaning.en}",
            REGULAR,
            7.5,
            "signature",
        )
        return plan

    return fit(build, "code-break sheet", min_scale=0.8)


def _status_line(canvas: Any, trial: TrialLabelInfo, document: DocumentMeta) -> None:
    """DUPLICATA and TEST markings (LBL-12, LBL-15), one per line, on lines reserved on every sheet so
    that nothing below them moves."""
    marks = []
    if document.is_reprint:
        marks.append(duplicate_text(document.reprint_number))
    if trial.test_mode:
        marks.append(f"{WATERMARK_FR} / {WATERMARK_EN}")
    canvas.saveState()
    canvas.setFillColorRGB(*MARK_COLOR)
    canvas.setStrokeColorRGB(*MARK_COLOR)
    canvas.setFont(BOLD, 8.5)
    for index, text in enumerate(marks):
        y = STATUS_Y - index * STATUS_PITCH
        if width(text, BOLD, 8.5) > PAGE_WIDTH - 2 * MARGIN - 8:
            raise LabelLayoutError("the status line of the code-break sheet is too long")
        canvas.rect(MARGIN, y - 3.5, width(text, BOLD, 8.5) + 8, 12.5, stroke=1, fill=0)
        canvas.drawString(MARGIN + 4, y, text)
    canvas.restoreState()


def _fold_line(canvas: Any, y: float, caption: str) -> None:
    canvas.saveState()
    canvas.setLineWidth(0.6)
    canvas.setStrokeGray(0.3)
    canvas.setDash(6, 3)
    canvas.line(MARGIN / 2, y, PAGE_WIDTH - MARGIN / 2, y)
    canvas.setDash()
    caption_width = width(caption, BOLD, 7.5)
    canvas.setFillGray(1)
    canvas.rect(PAGE_WIDTH / 2 - caption_width / 2 - 4, y - 5, caption_width + 8, 10, stroke=0, fill=1)
    canvas.setFillGray(0.15)
    canvas.setFont(BOLD, 7.5)
    canvas.drawCentredString(PAGE_WIDTH / 2, y - 2.6, caption)
    canvas.restoreState()


def _seal_mark(canvas: Any, x: float, y: float, *, upright: bool = False) -> None:
    """Where a seal (tape or sticker) goes across an edge of the folded flap; `upright` along a side."""
    mark_width = width(SEAL_HERE, BOLD, 7) + 10
    canvas.saveState()
    if upright:
        canvas.translate(x, y)
        canvas.rotate(90)
        x, y = 0.0, 0.0
    canvas.setLineWidth(0.8)
    canvas.setStrokeColorRGB(*MARK_COLOR)
    canvas.setFillColorRGB(1, 1, 1)
    canvas.setDash(2, 1.5)
    canvas.rect(x - mark_width / 2, y - 7, mark_width, 14, stroke=1, fill=1)
    canvas.setFillColorRGB(*MARK_COLOR)
    canvas.setFont(BOLD, 7)
    canvas.drawCentredString(x, y - 2.4, SEAL_HERE)
    canvas.restoreState()


def _lines_path(canvas: Any, segments: Sequence[tuple[float, float, float, float]]) -> None:
    canvas.lines(list(segments))


def _clip(canvas: Any, x: float, y: float, w: float, h: float) -> None:
    path = canvas.beginPath()
    path.rect(x, y, w, h)
    canvas.clipPath(path, stroke=0, fill=0)


def _hatch(
    canvas: Any, area: tuple[float, float, float, float], pitch: float, line_width: float, gray: float
) -> None:
    """Lines at 45 and 135 degrees every `pitch` points across `area`."""
    x, y, w, h = area
    steps = int((w + h) / pitch) + 2
    up = [(x - h + i * pitch, y, x + i * pitch, y + h) for i in range(steps)]
    down = [(x - h + i * pitch, y + h, x + i * pitch, y) for i in range(steps)]
    canvas.saveState()
    _clip(canvas, x, y, w, h)
    canvas.setLineWidth(line_width)
    canvas.setStrokeGray(gray)
    _lines_path(canvas, up + down)
    canvas.restoreState()


def _scribbles(
    canvas: Any,
    area: tuple[float, float, float, float],
    count: int,
    line_width: float,
    gray: float,
    seed: int,
) -> None:
    """Short irregular strokes, letter-sized, that break up the shapes of the text under them. The
    pattern is a fixed drawing (a linear congruential sequence from a constant), the same on every
    sheet; it is decoration, not randomness."""
    x, y, w, h = area
    state = seed

    def step() -> float:
        nonlocal state
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        return state / 0x7FFFFFFF

    segments = []
    for _ in range(count):
        px, py = x + step() * w, y + step() * h
        for _ in range(3):
            qx, qy = px + (step() - 0.5) * 14, py + (step() - 0.5) * 14
            segments.append((px, py, qx, qy))
            px, py = qx, qy
    canvas.saveState()
    _clip(canvas, x, y, w, h)
    canvas.setLineWidth(line_width)
    canvas.setStrokeGray(gray)
    canvas.setLineCap(1)
    _lines_path(canvas, segments)
    canvas.restoreState()


def _define_forms(canvas: Any, trial: TrialLabelInfo, document: CodeBreakDocument, plan: Plan) -> None:
    """Three forms, drawn on every page: the fixed page, and the patterns under and over the box."""
    canvas.beginForm("codebreak-page", 0, 0, PAGE_WIDTH, PAGE_HEIGHT)
    canvas.setFont(BOLD, 14)
    canvas.drawString(MARGIN, TOP - 14, HEADING)
    _status_line(canvas, trial, document.document)
    plan.draw_fixed(canvas)
    canvas.setFont(REGULAR, 7)
    canvas.setFillGray(0.2)
    canvas.drawString(
        MARGIN,
        IDENTITY_Y,
        f"allocator {trial.software_version} \u2013 {CAPTION_DOCUMENT} {document.document.document_id}",
    )
    canvas.setFillGray(0)
    _fold_line(canvas, FOLD_TOP, f"(2) {FOLD_HERE}")
    _fold_line(canvas, FLAP_TOP, f"(1) {FOLD_HERE} \u2013 {FLAP_CAPTION}")
    # The sealed panel: its caption and the frame of the box.
    canvas.setFont(BOLD, 10)
    canvas.drawString(BOX_X, BOX_Y + BOX_HEIGHT + 12, CAPTION_SEALED)
    canvas.saveState()
    canvas.setLineWidth(1.4)
    canvas.rect(BOX_X, BOX_Y, BOX_WIDTH, BOX_HEIGHT, stroke=1, fill=0)
    canvas.restoreState()
    # The security flap: a dense pattern over the mirror image of the box, and the seal marks.
    canvas.saveState()
    canvas.setFillGray(0.45)
    x, y, w, h = FLAP_PATTERN
    canvas.rect(x, y, w, h, stroke=0, fill=1)
    canvas.restoreState()
    _hatch(canvas, FLAP_PATTERN, 2.2, 0.9, 0.0)
    _scribbles(canvas, FLAP_PATTERN, 500, 1.1, 0.0, seed=20240607)
    _scribbles(canvas, FLAP_PATTERN, 300, 0.8, 1.0, seed=19700101)
    for mark_x in (MARGIN, PAGE_WIDTH / 2, PAGE_WIDTH - MARGIN):
        _seal_mark(canvas, mark_x, MARGIN / 2 + 4)
    for mark_x in (BOX_X / 2, PAGE_WIDTH - BOX_X / 2):
        _seal_mark(canvas, mark_x, FLAP_TOP + (FOLD_TOP - FLAP_TOP) / 2, upright=True)
    canvas.endForm()

    inner = (BOX_X + 1, BOX_Y + 1, BOX_WIDTH - 2, BOX_HEIGHT - 2)
    canvas.beginForm("codebreak-under", 0, 0, PAGE_WIDTH, PAGE_HEIGHT)
    _scribbles(canvas, inner, 400, 0.6, 0.78, seed=31415926)
    canvas.endForm()
    canvas.beginForm("codebreak-over", 0, 0, PAGE_WIDTH, PAGE_HEIGHT)
    _hatch(canvas, inner, 3.2, 0.3, 0.6)
    canvas.endForm()


# --- per-sheet content -------------------------------------------------------------------------------


def fit_sealed_text(text: str) -> tuple[float, list[str]]:
    """The largest font size at which `text` fits the box in at most three lines, and its lines."""
    room = BOX_WIDTH - 2 * BOX_PADDING
    for size in SEALED_SIZES:
        words = [word for word in text.split() if word]
        lines: list[str] = []
        while words and len(lines) <= SEALED_MAX_LINES:
            line, words = take_line(words, BOLD, size, room)
            lines.append(line)
        if len(lines) <= SEALED_MAX_LINES and len(lines) * size * LEADING <= BOX_HEIGHT - 2 * BOX_PADDING:
            return size, lines
    raise LabelLayoutError("the sealed text does not fit its box even in the smallest size: shorten it")


def _draw_sealed_text(canvas: Any, lines: Sequence[str], size: float) -> None:
    pitch = size * LEADING
    centre = BOX_Y + BOX_HEIGHT / 2
    first = centre + (len(lines) - 1) * pitch / 2 - size * 0.36
    canvas.setFillGray(0)
    canvas.setFont(BOLD, size)
    for index, line in enumerate(lines):
        canvas.drawCentredString(PAGE_WIDTH / 2, first - index * pitch, line)


def _draw_sheet(canvas: Any, plan: Plan, sheet: SealedSheet, page: int, pages: int) -> None:
    canvas.doForm("codebreak-page")
    values = {
        "kit": format_kit_number(sheet.kit_number),
        "sheet": sheet.sheet_number,
        "replaces": sheet.replaces or NO_REPLACEMENT,
    }
    canvas.setFillGray(0)
    for name, value in values.items():
        plan.slots[name].draw(canvas, value, name)
    draw_qr(canvas, encode_qr(sheet.sheet_number), QR_X, QR_Y, QR_SIZE, fixed_length=True)
    canvas.setFont(BOLD, 8)
    canvas.drawCentredString(QR_X + QR_SIZE / 2, QR_Y - 9, sheet.sheet_number)
    canvas.setFont(BOLD, 8)
    canvas.drawRightString(PAGE_WIDTH - MARGIN, IDENTITY_Y, f"Page {page}/{pages}")
    french, english = opening_warning(sheet.kit_number)
    canvas.saveState()
    canvas.setFillColorRGB(*MARK_COLOR)
    canvas.setFont(BOLD, 8.5)
    canvas.drawString(MARGIN, WARNING_Y, french)
    canvas.setFont(OBLIQUE, 8.5)
    canvas.drawString(MARGIN, WARNING_Y - 11, english)
    canvas.restoreState()
    # The sealed panel: the kit beside the caption, the text in its box between the two patterns.
    canvas.setFont(BOLD, 10)
    canvas.drawRightString(
        BOX_X + BOX_WIDTH, BOX_Y + BOX_HEIGHT + 12, f"Kit {format_kit_number(sheet.kit_number)}"
    )
    canvas.doForm("codebreak-under")
    size, lines = fit_sealed_text(sheet.sealed_text)
    _draw_sealed_text(canvas, lines, size)
    canvas.doForm("codebreak-over")
    canvas.setFont(BOLD, 7.5)
    canvas.drawCentredString(PAGE_WIDTH / 2, BOX_Y - 14, f"{french} / {english}")


DRILL_TEXT = "EXERCICE / DRILL"
DRILL_NOTE = "Pas un patient / Not a patient"


def _draw_drill_mark(canvas: Any) -> None:
    """UNB-11: a drill sheet says so across the page, so that it is never mistaken for a patient's."""
    canvas.saveState()
    canvas.setFillColorRGB(*WATERMARK_COLOR)
    canvas.translate(PAGE_WIDTH / 2, PAGE_HEIGHT / 2)
    canvas.rotate(-35)
    canvas.setFont(BOLD, 40)
    canvas.drawCentredString(0, 10, DRILL_TEXT)
    canvas.setFont(BOLD, 22)
    canvas.drawCentredString(0, -24, DRILL_NOTE)
    canvas.restoreState()


def render_code_break_sheets(trial: TrialLabelInfo, document: CodeBreakDocument) -> bytes:
    """The PDF of `document`: one A4 page per sheet, in the order given."""
    if not isinstance(trial, TrialLabelInfo) or not isinstance(document, CodeBreakDocument):
        raise LabelDataError("render_code_break_sheets needs a TrialLabelInfo and a CodeBreakDocument")
    for sheet in document.sheets:
        try:
            fit_sealed_text(sheet.sealed_text)
        except LabelLayoutError:
            raise LabelLayoutError(
                f"the sealed text of sheet {sheet.sheet_number} does not fit its box: shorten it"
            ) from None
    plan = _visible_plan(trial, document)
    title = f"TEST \u2013 {DOCUMENT_TITLE}" if trial.test_mode else DOCUMENT_TITLE
    if document.drill:
        title = f"{DRILL_TEXT} \u2013 {title}"
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer, title=title, document=document.document, software_version=trial.software_version
    )
    _define_forms(canvas, trial, document, plan)
    pages = len(document.sheets)
    for page, sheet in enumerate(document.sheets, start=1):
        if trial.test_mode:
            draw_page_watermark(canvas)
        if document.drill:
            _draw_drill_mark(canvas)
        _draw_sheet(canvas, plan, sheet, page, pages)
        canvas.showPage()
    return finish(canvas, buffer)


__all__ = [
    "SEALED_BOX",
    "CodeBreakDocument",
    "SealedSheet",
    "fit_sealed_text",
    "opening_warning",
    "render_code_break_sheets",
]
