"""The printed manifest of a shipment of samples to the central lab (issue 20): the shipment
number, the site, one line per tube set (its number, the participant's subject number, the sample
label, when it was collected) and one QR per shipment (`kits.payload.build_shipment_payload`), scanned
at the lab to open the receipt. Bilingual, French first, deterministic bytes (invariant mode).
No personal data: subject numbers only."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from kits.model import DocumentMeta, check_aware
from kits.numbers import format_kit_number, normalize_kit_number
from kits.payload import SHIPMENT_PAYLOAD_PATTERN
from kits.pdf import (
    BOLD,
    MARK_COLOR,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    draw_page_watermark,
    duplicate_text,
    finish,
    new_canvas,
    utc_text,
)
from kits.qr import draw_qr, encode_qr
from kits.text import check_printable, check_required

MARGIN = 50.0
ROW_HEIGHT = 15.0
QR_SIZE = 110.0


@dataclass(frozen=True)
class ManifestSample:
    kit_number: str
    subject_number: str
    label: str  # the planned sample's label, e.g. D3
    collected_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "kit_number", normalize_kit_number(self.kit_number))
        check_required(self.subject_number, "subject number", 32)
        check_required(self.label, "sample label", 8)
        check_aware(self.collected_at, "collection time")


@dataclass(frozen=True)
class LabManifest:
    trial_code: str
    short_title: str
    shipment_number: str
    site_code: str
    site_name: str
    prepared_by: str
    qr_payload: str  # kits.payload.build_shipment_payload(...)
    samples: tuple[ManifestSample, ...]
    document: DocumentMeta
    test_mode: bool
    software_version: str

    def __post_init__(self) -> None:
        for value, name in (
            (self.trial_code, "trial code"),
            (self.short_title, "short title"),
            (self.shipment_number, "shipment number"),
            (self.site_code, "site code"),
            (self.site_name, "site name"),
            (self.prepared_by, "prepared by"),
        ):
            check_required(value, name, 200)
        if not SHIPMENT_PAYLOAD_PATTERN.fullmatch(self.qr_payload):
            raise ValueError("the manifest's QR payload is not a shipment payload")


def render_lab_manifest(manifest: LabManifest) -> bytes:
    """A4 pages: the header and QR on the first, the samples listed across as many pages as needed."""
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer,
        title="Bordereau d'envoi au laboratoire / Lab shipment manifest",
        document=manifest.document,
        software_version=manifest.software_version,
        compress=True,
    )
    rows_first = int((PAGE_HEIGHT - 2 * MARGIN - 250) // ROW_HEIGHT)
    rows_next = int((PAGE_HEIGHT - 2 * MARGIN - 60) // ROW_HEIGHT)
    pages: list[tuple[ManifestSample, ...]] = [manifest.samples[:rows_first]]
    rest = manifest.samples[rows_first:]
    while rest:
        pages.append(rest[:rows_next])
        rest = rest[rows_next:]
    columns = (MARGIN, MARGIN + 40, MARGIN + 150, MARGIN + 250, MARGIN + 325)

    for page_index, rows in enumerate(pages):
        if manifest.test_mode:
            draw_page_watermark(canvas)
        y = PAGE_HEIGHT - MARGIN

        def line(text: str, font: str = REGULAR, size: float = 10.5, gap: float = 15.0) -> None:
            nonlocal y
            canvas.setFont(font, size)
            canvas.drawString(MARGIN, y, check_printable(text, "manifest text"))
            y -= gap

        line("BORDEREAU D'ENVOI AU LABORATOIRE / LAB SHIPMENT MANIFEST", BOLD, 13, 20)
        if manifest.document.is_reprint:  # LBL-12: a reprint is printed as a duplicate
            canvas.setFillColorRGB(*MARK_COLOR)
            line(duplicate_text(manifest.document.reprint_number), BOLD, 11, 18)
            canvas.setFillColorRGB(0, 0, 0)
        if page_index == 0:
            draw_qr(
                canvas,
                encode_qr(manifest.qr_payload),
                PAGE_WIDTH - MARGIN - QR_SIZE,
                y - QR_SIZE + 10,
                QR_SIZE,
            )
            line(f"{manifest.short_title} ({manifest.trial_code})", BOLD, 11)
            line(f"Envoi / Shipment : {manifest.shipment_number}", BOLD, 15, 22)
            line(f"Centre / Site : {manifest.site_code} \u2013 {manifest.site_name}")
            line(f"Pr\u00e9par\u00e9 par / Prepared by : {manifest.prepared_by}")
            line(f"\u00c9chantillons / Samples : {len(manifest.samples)}", gap=18)
            line("Au laboratoire : scanner le QR de ce bordereau, puis chaque kit de tubes.", size=9, gap=12)
            line("At the lab: scan this manifest's QR, then each tube set.", size=9, gap=26)
        else:
            line(f"{manifest.shipment_number} \u2013 {manifest.site_code}", BOLD, 11, 20)
        canvas.setFont(BOLD, 9.5)
        for x, head in zip(
            columns,
            (
                "N\u00b0 / No.",
                "Kit de tubes / Tube set",
                "Participant",
                "\u00c9ch. / Sample",
                "Pr\u00e9lev\u00e9 / Collected (UTC)",
            ),
            strict=True,
        ):
            canvas.drawString(x, y, head)
        y -= ROW_HEIGHT
        canvas.setFont(REGULAR, 10)
        first = sum(len(p) for p in pages[:page_index])
        for index, sample in enumerate(rows, start=first + 1):
            for x, text in zip(
                columns,
                (
                    str(index),
                    format_kit_number(sample.kit_number),
                    sample.subject_number,
                    sample.label,
                    utc_text(sample.collected_at),
                ),
                strict=True,
            ):
                canvas.drawString(x, y, check_printable(text, "manifest row"))
            y -= ROW_HEIGHT
        if page_index == len(pages) - 1:
            y -= 12
            line("Re\u00e7u le / Received on : ____________  par / by : ____________________", size=10)
        canvas.setFont(REGULAR, 7.5)
        canvas.drawString(
            MARGIN,
            30,
            check_printable(
                f"allocator {manifest.software_version} \u2013 Document {manifest.document.document_id} \u2013 "
                "Aucune donn\u00e9e d'identification directe / No direct identifier",
                "footer",
            ),
        )
        canvas.drawRightString(PAGE_WIDTH - MARGIN, 30, f"Page {page_index + 1}/{len(pages)}")
        canvas.showPage()
    return finish(canvas, buffer)
