"""QR symbols: the fast mask search matches `qrcode` exactly; vector drawing with a quiet zone (LBL-08)."""

from __future__ import annotations

import io
import secrets

import pypdf
import pypdfium2 as pdfium
import pytest
import zxingcpp
from reportlab.pdfgen.canvas import Canvas

from kits.numbers import generate_kit_numbers
from kits.payload import build_payload
from kits.qr import QUIET_ZONE_MODULES, draw_qr, encode_qr, encode_qr_reference
from tests.unit.kits.kits_testdata import TRIAL_CODE, trial_mac

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _random_payload(trial_code: str, unit: str) -> str:
    kit = generate_kit_numbers(1)[0]
    tag = "".join(secrets.choice(_BASE32) for _ in range(16))
    return f"AL1/{trial_code}/{kit}/{unit}/{tag}"


@pytest.mark.req("LBL-08")
def test_fast_mask_search_gives_exactly_the_qrcode_library_symbol() -> None:
    payloads = [_random_payload(TRIAL_CODE, f"D{i % 3 + 1}") for i in range(250)]
    payloads += [_random_payload("T" + "X" * (i % 19), "D10") for i in range(60)]  # versions 3 to 5
    versions = set()
    for payload in payloads:
        fast = encode_qr(payload)
        assert fast == encode_qr_reference(payload), payload
        versions.add(fast.version)
    assert len(versions) >= 2


@pytest.mark.req("LBL-08", "BLD-02")
def test_all_kits_of_a_trial_give_symbols_of_one_version() -> None:
    kits = generate_kit_numbers(200)
    versions = {encode_qr(build_payload(TRIAL_CODE, kit, "D1", trial_mac)).version for kit in kits}
    assert versions == {3}  # 29 x 29 modules at level Q


def _single_code_pdf(payload: str, size: float) -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(200, 200), invariant=1)
    canvas.setFillGray(0.5)  # grey background: the quiet zone must be painted white over it
    canvas.rect(0, 0, 200, 200, stroke=0, fill=1)
    draw_qr(canvas, encode_qr(payload), 50, 50, size)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


@pytest.mark.req("LBL-08")
def test_drawn_symbol_decodes_at_level_q_with_a_white_quiet_zone() -> None:
    payload = build_payload(TRIAL_CODE, generate_kit_numbers(1)[0], "D2", trial_mac)
    pdf = _single_code_pdf(payload, 74.0)  # 37 modules of 2 pt: 29 + 2 x 4 quiet zone
    document = pdfium.PdfDocument(pdf)
    image = document[0].render(scale=4, grayscale=True).to_pil()
    document.close()
    codes = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert [code.text for code in codes] == [payload]
    assert codes[0].ec_level == "Q"
    # The 4-module ring around the symbol is white; outside the square the grey background remains.
    module = 2 * 4  # pixels per module at scale 4
    top = (200 - 50 - 74) * 4
    left = 50 * 4
    ring = [(left + module * QUIET_ZONE_MODULES // 2, top + y) for y in range(4, 74 * 4 - 4, 7)]
    ring += [(left + x, top + module * QUIET_ZONE_MODULES // 2) for x in range(4, 74 * 4 - 4, 7)]
    assert all(image.getpixel(point) == 255 for point in ring)
    assert image.getpixel((left - 6, top + 40)) not in (0, 255)


@pytest.mark.req("LBL-08", "BLD-02")
def test_symbol_is_vector_rectangles_without_images() -> None:
    pdf = _single_code_pdf(build_payload(TRIAL_CODE, generate_kit_numbers(1)[0], "D1", trial_mac), 60.0)
    page = pypdf.PdfReader(io.BytesIO(pdf)).pages[0]
    assert "/XObject" not in page["/Resources"]  # no image (nor any other external object)
    assert b" re" in page.get_contents().get_data()  # rectangles in the content stream
    assert encode_qr("AL1/X1/12345671/D1/" + "A" * 16).rows[0][:7] == b"1111111"  # finder pattern


@pytest.mark.req("LBL-08")
def test_non_alphanumeric_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="alphanumeric"):
        encode_qr("al1/lowercase")
    with pytest.raises(ValueError, match="alphanumeric"):
        encode_qr("")


def _raster(payload: str, *, fixed_length: bool) -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(100, 100), invariant=1, pageCompression=0)
    draw_qr(canvas, encode_qr(payload), 10, 10, 80, fixed_length=fixed_length)
    canvas.showPage()
    canvas.save()
    document = pdfium.PdfDocument(buffer.getvalue())
    pixels = document[0].render(scale=4, grayscale=True).to_pil().tobytes()
    document.close()
    return pixels


@pytest.mark.req("BLD-02", "LBL-08")
def test_fixed_length_drawing_has_constant_size_and_looks_identical() -> None:
    payloads = [build_payload(TRIAL_CODE, kit, "D1", trial_mac) for kit in generate_kit_numbers(20)]
    lengths = set()
    for payload in payloads:
        buffer = io.BytesIO()
        canvas = Canvas(buffer, pagesize=(100, 100), invariant=1, pageCompression=0)
        draw_qr(canvas, encode_qr(payload), 10, 10, 80, fixed_length=True)
        canvas.showPage()
        canvas.save()
        lengths.add(len(buffer.getvalue()))
    assert len(lengths) == 1
    for payload in payloads[:5]:
        assert _raster(payload, fixed_length=True) == _raster(payload, fixed_length=False)
