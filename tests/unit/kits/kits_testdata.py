"""Test data of the kits tests: the IFN-gamma / placebo trial of AP-HP and a test MAC key."""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pypdf
import pypdfium2 as pdfium
import zxingcpp

from kits.model import Bilingual, DocumentMeta, Expiry, KitLabel, TrialLabelInfo
from kits.numbers import check_digit
from kits.payload import build_payload
from kits.sheet import DispensationRow, DispensationSheet, ElectronicSignature

TEST_KEY = b"kits-unit-test-key-not-a-secret-0123456789"
TRIAL_CODE = "APHP220672"


def trial_mac(message: bytes) -> bytes:
    """HMAC-SHA256 under a fixed test key: stands in for the application's crypto module."""
    return hmac.new(TEST_KEY, message, hashlib.sha256).digest()


def make_trial(**changes: object) -> TrialLabelInfo:
    """Label particulars of the interferon gamma-1b / placebo trial (APHP220672)."""
    values: dict[str, object] = {
        "trial_code": TRIAL_CODE,
        "sponsor_name": "Assistance Publique \u2013 H\u00f4pitaux de Paris (AP-HP)",
        "sponsor_address": "1 avenue Victoria, 75004 Paris, France",
        "main_contact_name": "DRCI AP-HP, Dr A. Martin",
        "main_contact_phone": "+33 1 40 27 00 00",
        "emergency_phone": "+33 1 40 05 48 48",
        "eu_ct_number": "2023-506725-11-00",
        "protocol_code": "APHP220672",
        "nct_number": "NCT06694740",
        "short_title": (
            "Interf\u00e9ron gamma-1b versus placebo dans l'immunod\u00e9pression post-agressive en "
            "r\u00e9animation (PAIS)"
        ),
        "product_name": Bilingual(
            "Interf\u00e9ron gamma-1b 2 x 10^6 UI ou placebo (NaCl 0,9 %)",
            "Interferon gamma-1b 2 x 10^6 IU or placebo (NaCl 0.9 %)",
        ),
        "pharmaceutical_form": Bilingual("Solution injectable", "Solution for injection"),
        "route": Bilingual("Voie sous-cutan\u00e9e", "Subcutaneous use"),
        "quantity": Bilingual("1 seringue pr\u00e9remplie de 0,5 mL", "1 pre-filled syringe of 0.5 mL"),
        "storage": Bilingual(
            "\u00c0 conserver au r\u00e9frig\u00e9rateur (2 \u00b0C \u2013 8 \u00b0C). Ne pas congeler.",
            "Store in a refrigerator (2 \u00b0C \u2013 8 \u00b0C). Do not freeze.",
        ),
        "directions": Bilingual(
            "1 injection sous-cutan\u00e9e par jour pendant 3 jours (J1, J2, J3), selon le protocole.",
            "1 subcutaneous injection daily for 3 days (D1, D2, D3), as per protocol.",
        ),
        "clinical_trial_use": Bilingual("Pour essai clinique uniquement", "For clinical trial use only"),
        "print_keep_out_of_reach": True,
        "test_mode": False,
        "software_version": "0.1.0",
    }
    values.update(changes)
    return TrialLabelInfo(**values)  # type: ignore[arg-type]


def make_label(kit_number: str, unit: str = "D1", **changes: object) -> KitLabel:
    """A label for `kit_number` with a genuine payload."""
    values: dict[str, object] = {
        "kit_number": kit_number,
        "qr_payload": build_payload(TRIAL_CODE, kit_number, unit, trial_mac),
        "batch": "BL-2409A",
        "expiry": Expiry(2027, 3),
        "unit": unit,
        "site_code": "75-01",
    }
    values.update(changes)
    return KitLabel(**values)  # type: ignore[arg-type]


def make_document(document_id: str = "LBL-2025-000123", reprint_number: int = 0) -> DocumentMeta:
    """A document identity with a fixed creation time."""
    return DocumentMeta(document_id, datetime(2025, 3, 1, 13, 45, 7, tzinfo=UTC), reprint_number)


def make_sheet(kit_numbers: list[str], **changes: object) -> DispensationSheet:
    """A dispensation sheet for subject 01-007 with one kit per injection day."""
    rows = tuple(
        DispensationRow(
            unit=f"D{day}",
            kit_number=kit,
            qr_payload=build_payload(TRIAL_CODE, kit, f"D{day}", trial_mac),
            batch="BL-2409A",
            expiry=Expiry(2027, 3),
            planned_date=date(2025, 3, day),
        )
        for day, kit in enumerate(kit_numbers, start=1)
    )
    values: dict[str, object] = {
        "site_code": "75-01",
        "site_name": "H\u00f4pital Lariboisi\u00e8re, r\u00e9animation",
        "investigator_name": "Pr E. Dupont",
        "subject_number": "01-007",
        "randomization_number": "R-0042",
        "rows": rows,
        "dispensed_at": datetime(2025, 3, 1, 13, 45, 7, tzinfo=UTC),
        "local_zone": "Europe/Paris",
        "signature": ElectronicSignature(
            "Claire Pharmacienne",
            datetime(2025, 3, 1, 13, 46, 0, tzinfo=UTC),
            Bilingual("Dispensation", "Dispensing"),
        ),
        "document": make_document("DISP-2025-000042"),
    }
    values.update(changes)
    return DispensationSheet(**values)  # type: ignore[arg-type]


# --- PDF inspection helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A text run or a decoded code, with its position in PDF points (origin bottom left)."""

    text: str
    x: float
    y: float


def page_texts(pdf: bytes) -> list[str]:
    """Extracted text of each page; non-breaking spaces read as spaces."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return [page.extract_text().replace("\u00a0", " ") for page in reader.pages]


def all_text(pdf: bytes) -> str:
    """Extracted text of the whole document."""
    return "\n".join(page_texts(pdf))


def text_runs(pdf: bytes, page_index: int) -> list[Placed]:
    """Text runs drawn directly on a page (not inside forms), with their start position."""
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[page_index]
    runs: list[Placed] = []

    def visit(text: str, cm: list[float], tm: list[float], _font: object, _size: object) -> None:
        if text.strip():
            x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
            y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
            runs.append(Placed(text.strip(), x, y))

    page.extract_text(visitor_text=visit)
    return runs


def decode_qr_codes(pdf: bytes, page_index: int, scale: float = 3.0) -> list[Placed]:
    """Rasterise one page with pdfium and decode every QR code on it with zxing-cpp (centre positions)."""
    document = pdfium.PdfDocument(pdf)
    try:
        page = document[page_index]
        height = page.get_height()
        image = page.render(scale=scale, grayscale=True).to_pil()
    finally:
        document.close()
    found = []
    for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode):
        corners = [
            code.position.top_left,
            code.position.top_right,
            code.position.bottom_left,
            code.position.bottom_right,
        ]
        cx = sum(point.x for point in corners) / 4 / scale
        cy = height - sum(point.y for point in corners) / 4 / scale
        found.append(Placed(code.text, cx, cy))
    return found


def page_count(pdf: bytes) -> int:
    """Number of pages."""
    return len(pypdf.PdfReader(io.BytesIO(pdf)).pages)


def flat(text: str) -> str:
    """Whitespace-normalised text, so that phrases wrapped over two lines can be searched."""
    return " ".join(text.replace("\u00a0", " ").split())


def mask_kit(index: int = 0) -> str:
    """A fixed, valid kit number used to mask the kit numbers of the `index`-th row or label."""
    body = f"{index:07d}"
    return body + check_digit(body)


def mask_payload(unit: str, index: int = 0) -> str:
    """A well-formed payload with a fixed kit number and tag, to mask the per-kit values."""
    return build_payload(TRIAL_CODE, mask_kit(index), unit, lambda _message: bytes(32))
