"""The documents of a kit return or destruction (issue 19): the return form that travels with the
kits to the depot, and the destruction certificate, signed. French and English on the same page,
like the project's other printed documents.

Blinding (BLD-01): the kit numbers, the site, who, when, the method, the witness, each kit's
condition and the signature manifest; never an arm, a lot, a kit type, a subject or anything from
which an arm could be inferred. Drawn with the shared deterministic, hygienic canvas (kits.pdf):
standard fonts, no image, generic metadata.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reportlab.lib.utils import simpleSplit

import kits as kitlib
from kits.model import DocumentMeta
from kits.pdf import BOLD, PAGE_HEIGHT, PAGE_WIDTH, REGULAR, draw_page_watermark, finish, new_canvas, utc_text

MARGIN = 50.0
COLUMNS = 3  # kits per line of the kit table

# Each kit's condition in both languages (the codes are those of services/supply/disposal.py).
CONDITIONS: dict[str, tuple[str, str]] = {
    "used": ("utilisé", "used"),
    "unused": ("non utilisé", "unused"),
    "damaged": ("endommagé", "damaged"),
    "expired": ("périmé", "expired"),
}
TITLES = {
    "return": ("Bordereau de retour de kits", "Kit return form"),
    "destruction": ("Certificat de destruction de kits", "Kit destruction certificate"),
}


@dataclass(frozen=True, slots=True)
class DisposalDocument:
    kind: str  # return | destruction
    trial_code: str
    site_code: str
    number: str
    recorded_at: datetime
    recorded_by: str
    method: str
    witness: str | None
    kits: tuple[tuple[str, str], ...]  # (kit number, condition)
    signature_lines: tuple[str, ...]  # the manifestation in French and English (destruction only)
    test_mode: bool
    software_version: str
    document: DocumentMeta


class _Page:
    def __init__(self, doc: DisposalDocument) -> None:
        self.doc = doc
        self.buffer = io.BytesIO()
        _fr, en = TITLES[doc.kind]
        self.canvas: Any = new_canvas(
            self.buffer, title=en, document=doc.document, software_version=doc.software_version
        )
        self.page = 0
        self.y = 0.0
        self.new_page()

    def new_page(self) -> None:
        if self.page:
            self.footer()
            self.canvas.showPage()
        self.page += 1
        if self.doc.test_mode:
            draw_page_watermark(self.canvas)
        self.y = PAGE_HEIGHT - MARGIN
        fr, en = TITLES[self.doc.kind]
        self.line(fr, BOLD, 15)
        self.line(en, BOLD, 13)
        if self.page > 1:  # a continuation page names its record
            self.line(f"{self.doc.number} \u2013 {self.doc.site_code} (suite / continued)", REGULAR, 10)
        self.y -= 6

    def footer(self) -> None:
        self.canvas.setFont(REGULAR, 7.5)
        self.canvas.drawString(
            MARGIN,
            MARGIN / 2,
            f"{self.doc.document.document_id} \u2013 page {self.page} \u2013 allocator {self.doc.software_version}",
        )

    def room(self, height: float) -> None:
        if self.y - height < MARGIN:
            self.new_page()

    def line(self, text: str, font: str = REGULAR, size: float = 10.0) -> None:
        for part in simpleSplit(text, font, size, PAGE_WIDTH - 2 * MARGIN) or [""]:
            self.room(size * 1.3)
            self.canvas.setFont(font, size)
            self.canvas.drawString(MARGIN, self.y - size, part)
            self.y -= size * 1.3

    def field(self, caption: str, value: str) -> None:
        self.line(f"{caption} : {value}")


def render(doc: DisposalDocument) -> bytes:
    """The return form or destruction certificate as PDF bytes (deterministic for one input)."""
    page = _Page(doc)
    page.field("Essai / Trial", doc.trial_code)
    page.field("Centre / Site", doc.site_code)
    page.field("N\u00b0 / Record", doc.number)
    page.field("Date (UTC)", utc_text(doc.recorded_at))
    page.field("Enregistr\u00e9 par / Recorded by", doc.recorded_by)
    if doc.kind == "destruction":
        page.field("M\u00e9thode de destruction / Method of destruction", doc.method)
        page.field("T\u00e9moin / Witness", doc.witness or "aucun / none")
    else:
        page.field("Exp\u00e9dition / Shipping", doc.method)
    page.y -= 6
    page.line(f"Kits ({len(doc.kits)})", BOLD, 11)
    column = (PAGE_WIDTH - 2 * MARGIN) / COLUMNS
    for start in range(0, len(doc.kits), COLUMNS):
        page.room(13)
        page.canvas.setFont(REGULAR, 9.5)
        for offset, (number, condition) in enumerate(doc.kits[start : start + COLUMNS]):
            fr, en = CONDITIONS[condition]
            page.canvas.drawString(
                MARGIN + offset * column, page.y - 9.5, f"{kitlib.format_kit_number(number)}  {fr} / {en}"
            )
        page.y -= 13
    page.y -= 10
    page.room(80)  # the closing block stays together, with its heading
    if doc.signature_lines:
        page.line("Signature \u00e9lectronique / Electronic signature", BOLD, 11)
        for line in doc.signature_lines:
            page.line(line, REGULAR, 9)
    else:
        page.line("R\u00e9ception au d\u00e9p\u00f4t / Receipt at the depot", BOLD, 11)
        for caption in ("Nom / Name", "Date", "Signature"):
            page.line(f"{caption} : ______________________________")
    page.footer()
    return finish(page.canvas, page.buffer)
