"""Scan what was printed: every QR code on labels and sheets, rasterised by pdfium and decoded by
zxing-cpp, gives back exactly its payload, verifies, and names the kit printed beside it (LBL-08,
LBL-09, LBL-06)."""

from __future__ import annotations

import re

import pytest

from kits.labels import IMMEDIATE_LAYOUT, OUTER_LAYOUT, LabelKind, render_label_sheet, unit_display
from kits.numbers import generate_kit_numbers, normalize_kit_number
from kits.payload import PAYLOAD_PATTERN, verify_payload
from kits.sheet import ROW_HEIGHT, render_dispensation_sheet
from tests.unit.kits.kits_testdata import (
    TRIAL_CODE,
    Placed,
    decode_qr_codes,
    make_document,
    make_label,
    make_sheet,
    make_trial,
    page_count,
    text_runs,
    trial_mac,
)

KIT_TEXT = re.compile(r"[0-9]{4}-[0-9]{4}")
KITS = generate_kit_numbers(60)


@pytest.mark.req("LBL-08", "LBL-09")
@pytest.mark.parametrize("kind", list(LabelKind))
@pytest.mark.parametrize("test_mode", [False, True])
def test_every_label_code_decodes_verifies_and_matches_the_printed_kit_number(
    kind: LabelKind, test_mode: bool
) -> None:
    layout = OUTER_LAYOUT if kind is LabelKind.OUTER else IMMEDIATE_LAYOUT
    count = layout.per_page + layout.per_page // 2  # a full page and a partial one
    labels = [
        make_label(kit, f"D{index % 3 + 1}", subject_number="01-007" if index % 2 else None)
        for index, kit in enumerate(KITS[:count])
    ]
    pdf = render_label_sheet(make_trial(test_mode=test_mode), labels, kind=kind, document=make_document())
    assert page_count(pdf) == 2

    def cell(point: Placed) -> int:
        """Index of the label on the page whose rectangle contains `point`."""
        for index in range(layout.per_page):
            x, y = layout.origin(index)
            if x <= point.x <= x + layout.label_width and y <= point.y <= y + layout.label_height:
                return index
        raise AssertionError(f"{point} is outside every label")

    for page_index in range(2):
        on_page = labels[page_index * layout.per_page : (page_index + 1) * layout.per_page]
        codes = decode_qr_codes(pdf, page_index, scale=3)
        assert sorted(code.text for code in codes) == sorted(label.qr_payload for label in on_page)
        printed = {cell(run): run.text for run in text_runs(pdf, page_index) if KIT_TEXT.fullmatch(run.text)}
        assert len(printed) == len(on_page)
        for code in codes:
            assert PAYLOAD_PATTERN.fullmatch(code.text)
            payload = verify_payload(code.text, TRIAL_CODE, trial_mac)
            # The human-readable number on the same label is the encoded one (LBL-09) ...
            assert normalize_kit_number(printed[cell(code)]) == payload.kit_number
            # ... and the label sits where the caller's order puts it.
            assert on_page[cell(code)].qr_payload == code.text


@pytest.mark.req("LBL-08", "LBL-09", "LBL-06")
@pytest.mark.parametrize("test_mode", [False, True])
@pytest.mark.parametrize("reprint", [0, 1])
def test_every_sheet_code_decodes_and_matches_its_row(test_mode: bool, reprint: int) -> None:
    sheet = make_sheet(KITS[:5], document=make_document("DISP-2025-000042", reprint_number=reprint))
    pdf = render_dispensation_sheet(make_trial(test_mode=test_mode), sheet)
    seen = []
    for page_index in range(page_count(pdf)):
        codes = decode_qr_codes(pdf, page_index, scale=3)
        runs = text_runs(pdf, page_index)
        for code in codes:
            payload = verify_payload(code.text, TRIAL_CODE, trial_mac)
            seen.append(code.text)
            same_row = [run for run in runs if abs(run.y - code.y) < ROW_HEIGHT / 2]
            # The kit number in the row and on the syringe label beside the code, and the day.
            kits_in_row = [normalize_kit_number(run.text) for run in same_row if KIT_TEXT.fullmatch(run.text)]
            assert kits_in_row == [payload.kit_number, payload.kit_number]
            assert unit_display(payload.unit) in [run.text for run in same_row]
            subject = [run.text for run in same_row if run.text == "01-007"]
            assert subject == ["01-007"]  # the subject number is on each syringe label (LBL-06)
    assert sorted(seen) == sorted(row.qr_payload for row in sheet.rows)
