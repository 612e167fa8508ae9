"""The dispensation sheet of one subject (LBL-06, LBL-07, LBL-10, LBL-12, LBL-15).

One A4 document per dispensing: trial identifiers, site, investigator, subject and randomisation
numbers, the time of dispensing in UTC and in the site's zone, the pharmacist's electronic-signature
manifestation, the 24/7 emergency contact, then one row per injection day with the kit number, the
planned date, boxes for the administering nurse and a cut-out syringe label (immediate-label
particulars and QR code). Every page repeats the header and carries the document id, the software
version and page x/y.

BLD-01/BLD-02: the input types have no arm field. The page structure depends only on the number of rows
and on the trial texts; kit numbers are drawn in fixed-width digits at fixed places, so two sheets that
differ only in kit numbers and QR payloads have the same layout, objects and page count.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reportlab.lib.units import mm

from kits.errors import KitNumberError, LabelDataError, LabelLayoutError
from kits.labels import (
    CAPTION_CONTACT,
    CAPTION_EMERGENCY,
    CAPTION_INVESTIGATOR,
    CAPTION_KIT,
    CAPTION_PHONE,
    CAPTION_PROTOCOL,
    CAPTION_SITE,
    CAPTION_SPONSOR,
    CAPTION_SUBJECT,
    LabelPlan,
    check_labels_consistent,
    define_label_form,
    draw_label,
    immediate_plan,
    unit_display,
)
from kits.model import Bilingual, DocumentMeta, Expiry, KitLabel, TrialLabelInfo, check_aware
from kits.numbers import format_kit_number, normalize_kit_number
from kits.pdf import (
    BOLD,
    MARK_COLOR,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    WATERMARK_EN,
    WATERMARK_FR,
    Flow,
    Plan,
    TextOp,
    draw_page_watermark,
    duplicate_text,
    finish,
    fit,
    keep_together,
    new_canvas,
    utc_text,
    width,
)
from kits.qr import encode_qr
from kits.text import check_required

SHEET_TITLE = "Fiche de dispensation / Dispensation sheet"
HEADING = "FICHE DE DISPENSATION / DISPENSATION SHEET"
CAPTION_RANDOMIZATION = "N\u00b0 de randomisation / Randomization no."
CAPTION_DISPENSED = "Dispens\u00e9 le / Dispensed on"
CAPTION_SIGNATURE = "Signature \u00e9lectronique / Electronic signature"
CAPTION_MEANING = "Signification / Meaning"
CAPTION_PLANNED = "Date pr\u00e9vue / Planned date"
CAPTION_ADMINISTRATION = "Administration"
CAPTION_LABEL = "\u00c9tiquette seringue \u00e0 d\u00e9couper / Syringe label, cut out"
NO_IDENTIFIERS = "Aucune donn\u00e9e d'identification directe du patient / No direct patient identifiers"

MARGIN = 12 * mm
LABEL_WIDTH = 63.5 * mm
LABEL_HEIGHT = 38.1 * mm
ROW_HEIGHT = LABEL_HEIGHT + 10
FOOTER_HEIGHT = 26.0
TABLE_HEADER_HEIGHT = 14.0
STATUS_HEIGHT = 18.0
# Left edges of the table columns: day, kit number, administration boxes, cut-out syringe label.
COLUMN_DAY = MARGIN
COLUMN_KIT = MARGIN + 62
COLUMN_ADMINISTRATION = MARGIN + 170
COLUMN_LABEL = PAGE_WIDTH - MARGIN - LABEL_WIDTH


@dataclass(frozen=True)
class ElectronicSignature:
    """ACC-12 / 21 CFR 11.50 manifestation: printed name, UTC date and time, meaning of the signature."""

    printed_name: str
    signed_at: datetime
    meaning: Bilingual

    def __post_init__(self) -> None:
        check_required(self.printed_name, "signer's printed name", 80)
        check_aware(self.signed_at, "signature time")
        if not isinstance(self.meaning, Bilingual):
            raise LabelDataError("signature meaning must be a Bilingual text")
        self.meaning.check("signature meaning", 60)


@dataclass(frozen=True)
class DispensationRow:
    """One injection day: the kit for that day, its QR payload and label particulars."""

    unit: str  # injection day, e.g. "D1"
    kit_number: str
    qr_payload: str
    batch: str
    expiry: Expiry
    planned_date: date | None = None  # blank line to write in when absent

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kit_number", normalize_kit_number(self.kit_number))
        except KitNumberError as exc:
            raise LabelDataError(f"kit number of day {self.unit!r}: {exc}") from exc
        if self.planned_date is not None and (
            not isinstance(self.planned_date, date) or isinstance(self.planned_date, datetime)
        ):
            raise LabelDataError("planned date must be a date (without time)")


@dataclass(frozen=True)
class DispensationSheet:
    """Everything printed on the dispensation sheet of one subject (no arm field, BLD-01)."""

    site_code: str
    site_name: str
    investigator_name: str
    subject_number: str
    randomization_number: str
    rows: tuple[DispensationRow, ...]
    dispensed_at: datetime
    local_zone: str  # IANA zone of the site, e.g. "Europe/Paris"
    signature: ElectronicSignature
    document: DocumentMeta

    def __post_init__(self) -> None:
        check_required(self.site_name, "site name", 120)
        check_required(self.randomization_number, "randomization number", 20)
        check_aware(self.dispensed_at, "dispensing time")
        if not isinstance(self.local_zone, str):
            raise LabelDataError("local zone must be an IANA zone name such as 'Europe/Paris'")
        try:
            ZoneInfo(self.local_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise LabelDataError(f"unknown time zone {self.local_zone!r}") from exc
        if not isinstance(self.signature, ElectronicSignature):
            raise LabelDataError("signature must be an ElectronicSignature")
        if not isinstance(self.document, DocumentMeta):
            raise LabelDataError("document must be a DocumentMeta")
        rows = tuple(self.rows)
        object.__setattr__(self, "rows", rows)
        if not rows or not all(isinstance(row, DispensationRow) for row in rows):
            raise LabelDataError("a dispensation sheet needs at least one DispensationRow")
        # LBL-06: one row per injection day, and a kit is never given twice.
        units = [row.unit for row in rows]
        if len(set(units)) != len(units):
            raise LabelDataError("each injection day may appear only once on a sheet")
        kits = [row.kit_number for row in rows]
        if len(set(kits)) != len(kits):
            raise LabelDataError("a kit number appears on two rows")
        self.kit_labels()  # validates site, subject, investigator and every payload

    def kit_labels(self) -> list[KitLabel]:
        """The syringe label of each row, carrying the subject, site and investigator of the sheet."""
        return [
            KitLabel(
                kit_number=row.kit_number,
                qr_payload=row.qr_payload,
                batch=row.batch,
                expiry=row.expiry,
                unit=row.unit,
                site_code=self.site_code,
                subject_number=self.subject_number,
                investigator_name=self.investigator_name,
            )
            for row in self.rows
        ]


def local_time_text(moment: datetime, zone: str) -> str:
    """AUD-07: ``2025-03-01 14:45:07 Europe/Paris (UTC+01:00)``, correct on both sides of a DST change."""
    local = moment.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {zone} (UTC{offset[:3]}:{offset[3:]})"


def _header_plan(trial: TrialLabelInfo, sheet: DispensationSheet) -> tuple[Plan, float]:
    """Fixed header of every page, and the y where the table starts."""
    top = PAGE_HEIGHT - MARGIN - 22 - STATUS_HEIGHT
    result: dict[str, float] = {}

    def build(scale: float) -> Plan:
        plan = Plan()
        flow = Flow(
            plan, left=MARGIN, right=PAGE_WIDTH - MARGIN, top=top, bottom=MARGIN + 2 * ROW_HEIGHT, scale=scale
        )
        flow.paragraph(trial.short_title, BOLD, 9.5, "short title")
        reference = f"EU CT {trial.eu_ct_number} \u2013 {CAPTION_PROTOCOL} {trial.protocol_code}"
        if trial.nct_number:
            reference += f" \u2013 {trial.nct_number}"
        flow.paragraph(reference, BOLD, 8.5, "trial reference")
        flow.paragraph(
            f"{CAPTION_SPONSOR} : {trial.sponsor_name}, {trial.sponsor_address}", REGULAR, 8, "sponsor"
        )
        flow.skip(5)
        flow.paragraph(f"{CAPTION_SITE} : {sheet.site_code} \u2013 {sheet.site_name}", REGULAR, 8.5, "site")
        flow.paragraph(f"{CAPTION_INVESTIGATOR} : {sheet.investigator_name}", REGULAR, 8.5, "investigator")
        flow.paragraph(f"{CAPTION_SUBJECT} : {sheet.subject_number}", BOLD, 10, "subject number")
        flow.paragraph(
            f"{CAPTION_RANDOMIZATION} : {sheet.randomization_number}", BOLD, 10, "randomization number"
        )
        flow.skip(5)
        flow.paragraph(
            f"{CAPTION_DISPENSED} : {utc_text(sheet.dispensed_at)} \u2013 "
            f"{local_time_text(sheet.dispensed_at, sheet.local_zone)}",
            REGULAR,
            8.5,
            "dispensing time",
        )
        signature = sheet.signature
        flow.paragraph(
            f"{CAPTION_SIGNATURE} : {signature.printed_name} \u2013 {utc_text(signature.signed_at)} \u2013 "
            f"{CAPTION_MEANING} : {signature.meaning.fr} / {signature.meaning.en}",
            REGULAR,
            8.5,
            "signature",
        )
        flow.skip(5)
        flow.paragraph(
            f"{CAPTION_EMERGENCY} : {keep_together(trial.emergency_phone)}", BOLD, 9.5, "emergency phone"
        )
        contact_phone = keep_together(trial.main_contact_phone)
        flow.paragraph(
            f"{CAPTION_CONTACT} : {trial.main_contact_name} \u2013 {CAPTION_PHONE} {contact_phone}",
            REGULAR,
            8.5,
            "main contact",
        )
        flow.skip(6)
        result["table_top"] = flow.y
        return plan

    plan = fit(build, "dispensation sheet header", min_scale=0.8)
    return plan, result["table_top"]


def _table_header(plan: Plan, top: float) -> None:
    baseline = top - 9
    for x, text in (
        (COLUMN_DAY, "Jour / Day"),
        (COLUMN_KIT, CAPTION_KIT),
        (COLUMN_ADMINISTRATION, f"{CAPTION_ADMINISTRATION} (date, heure / time, initiales / initials)"),
    ):
        plan.ops.append(TextOp(x, baseline, text, BOLD, 7))
    plan.ops.append(TextOp(COLUMN_LABEL, baseline, CAPTION_LABEL, BOLD, 6.3))


def _draw_row(canvas: Any, row: DispensationRow, top: float, label: LabelPlan, kit: KitLabel) -> None:
    canvas.saveState()
    canvas.setLineWidth(0.5)
    canvas.setStrokeGray(0.5)
    canvas.line(MARGIN, top, PAGE_WIDTH - MARGIN, top)
    canvas.restoreState()
    # LBL-06: the day, its planned date and its kit number side by side.
    canvas.setFont(BOLD, 13)
    canvas.drawString(COLUMN_DAY, top - 18, unit_display(row.unit))
    canvas.setFont(REGULAR, 6.5)
    canvas.drawString(COLUMN_DAY, top - 32, CAPTION_PLANNED)
    planned = row.planned_date.isoformat() if row.planned_date else ""
    canvas.setFont(BOLD, 8.5)
    if planned:
        canvas.drawString(COLUMN_DAY, top - 43, planned)
    else:
        canvas.line(COLUMN_DAY, top - 44, COLUMN_DAY + 52, top - 44)
    canvas.setFont(BOLD, 14)
    canvas.drawString(COLUMN_KIT, top - 18, format_kit_number(row.kit_number))
    # Write-in lines for the administering nurse.
    canvas.setFont(REGULAR, 7.5)
    line_end = COLUMN_LABEL - 12
    for offset, caption in ((20, "Date :"), (40, "Heure / Time :"), (60, "Initiales / Initials :")):
        y = top - offset
        canvas.drawString(COLUMN_ADMINISTRATION, y, caption)
        start = COLUMN_ADMINISTRATION + width(caption, REGULAR, 7.5) + 4
        canvas.line(start, y - 1.5, line_end, y - 1.5)
    canvas.rect(COLUMN_ADMINISTRATION, top - 83, 7, 7, stroke=1, fill=0)
    canvas.drawString(COLUMN_ADMINISTRATION + 11, top - 82, "Kit scann\u00e9 au lit / Kit scanned at bedside")
    # The cut-out syringe label, with its own QR code.
    canvas.saveState()
    canvas.translate(COLUMN_LABEL, top - 5 - LABEL_HEIGHT)
    draw_label(canvas, "syringe-label", label, kit, encode_qr(kit.qr_payload), fixed_length=True)
    canvas.restoreState()


STATUS_MIN_SIZE = 7.5  # points


def _status_line(canvas: Any, trial: TrialLabelInfo, document: DocumentMeta) -> None:
    # The line is reserved on every sheet so that the layout below it never moves.
    y = PAGE_HEIGHT - MARGIN - 22 - STATUS_HEIGHT + 5
    marks = []
    if document.is_reprint:
        marks.append(duplicate_text(document.reprint_number))
    if trial.test_mode:
        marks.append(f"{WATERMARK_FR} / {WATERMARK_EN}")
    if not marks:
        return
    text = " \u2013 ".join(marks)
    canvas.saveState()
    canvas.setFillColorRGB(*MARK_COLOR)
    canvas.setStrokeColorRGB(*MARK_COLOR)
    # From the 100th reprint of a test-mode sheet the line no longer fits at 9.5 pt: it shrinks.
    size = 9.5
    while width(text, BOLD, size) > PAGE_WIDTH - 2 * MARGIN - 8 and size > STATUS_MIN_SIZE:
        size -= 0.5
    if width(text, BOLD, size) > PAGE_WIDTH - 2 * MARGIN - 8:
        raise LabelLayoutError("the status line is too long")
    canvas.setFont(BOLD, size)
    canvas.rect(MARGIN, y - 4, width(text, BOLD, size) + 8, 14, stroke=1, fill=0)
    canvas.drawString(MARGIN + 4, y, text)
    canvas.restoreState()


def _footer(canvas: Any, trial: TrialLabelInfo, document: DocumentMeta, page: int, pages: int) -> None:
    canvas.saveState()
    canvas.setLineWidth(0.4)
    canvas.setStrokeGray(0.5)
    canvas.line(MARGIN, MARGIN + FOOTER_HEIGHT - 6, PAGE_WIDTH - MARGIN, MARGIN + FOOTER_HEIGHT - 6)
    canvas.setFont(REGULAR, 7)
    canvas.setFillGray(0.2)
    text = (
        f"allocator {trial.software_version} \u2013 Document {document.document_id} \u2013 "
        f"Imprim\u00e9 le / Printed on {utc_text(document.created_at)}"
    )
    canvas.drawString(MARGIN, MARGIN + 8, text)
    canvas.drawString(MARGIN, MARGIN, NO_IDENTIFIERS)
    canvas.setFont(BOLD, 8)
    canvas.drawRightString(PAGE_WIDTH - MARGIN, MARGIN + 8, f"Page {page}/{pages}")
    canvas.restoreState()


def render_dispensation_sheet(trial: TrialLabelInfo, sheet: DispensationSheet) -> bytes:
    """The PDF dispensation sheet of one subject."""
    if not isinstance(trial, TrialLabelInfo) or not isinstance(sheet, DispensationSheet):
        raise LabelDataError("render_dispensation_sheet needs a TrialLabelInfo and a DispensationSheet")
    kits = sheet.kit_labels()
    check_labels_consistent(trial, kits)
    header, table_top = _header_plan(trial, sheet)
    _table_header(header, table_top)
    rows_top = table_top - TABLE_HEADER_HEIGHT
    rows_per_page = int((rows_top - (MARGIN + FOOTER_HEIGHT)) // ROW_HEIGHT)
    if rows_per_page < 1:
        raise LabelLayoutError("the dispensation sheet header leaves no room for the table")
    pages = -(-len(sheet.rows) // rows_per_page)
    label = immediate_plan(trial, LABEL_WIDTH, LABEL_HEIGHT, sheet.document.reprint_number)
    title = f"TEST \u2013 {SHEET_TITLE}" if trial.test_mode else SHEET_TITLE
    buffer = io.BytesIO()
    # BLD-02: uncompressed, with fixed-length QR drawings, so that the sheets of two subjects have the
    # same byte length: kit numbers have fixed-width digits and payloads a fixed length.
    canvas = new_canvas(
        buffer, title=title, document=sheet.document, software_version=trial.software_version, compress=False
    )
    canvas.beginForm("sheet-header", 0, 0, PAGE_WIDTH, PAGE_HEIGHT)
    header.draw_fixed(canvas)
    canvas.endForm()
    define_label_form(canvas, "syringe-label", label, dashed_outline=True, outline=True)
    rows: Sequence[DispensationRow] = sheet.rows
    for page in range(pages):
        if trial.test_mode:
            draw_page_watermark(canvas)
        canvas.setFont(BOLD, 13)
        canvas.drawString(MARGIN, PAGE_HEIGHT - MARGIN - 13, HEADING)
        canvas.setFont(BOLD, 9)
        canvas.drawRightString(PAGE_WIDTH - MARGIN, PAGE_HEIGHT - MARGIN - 12, f"Page {page + 1}/{pages}")
        _status_line(canvas, trial, sheet.document)
        canvas.doForm("sheet-header")
        first = page * rows_per_page
        for index, row in enumerate(rows[first : first + rows_per_page]):
            _draw_row(canvas, row, rows_top - index * ROW_HEIGHT, label, kits[first + index])
        _footer(canvas, trial, sheet.document, page + 1, pages)
        canvas.showPage()
    return finish(canvas, buffer)


__all__ = [
    "DispensationRow",
    "DispensationSheet",
    "ElectronicSignature",
    "local_time_text",
    "render_dispensation_sheet",
]
