"""Dispensation sheet: required content, times in UTC and Paris time, pages, markings, and identical
structure whatever the kits (LBL-06, LBL-07, LBL-10, LBL-12, LBL-15, AUD-07, ACC-12, BLD-02)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, date, datetime, timedelta, timezone

import pypdf
import pytest

from kits.errors import LabelDataError
from kits.model import Bilingual
from kits.numbers import format_kit_number, generate_kit_numbers
from kits.payload import build_payload
from kits.sheet import DispensationRow, ElectronicSignature, local_time_text, render_dispensation_sheet
from tests.unit.kits.kits_testdata import (
    TRIAL_CODE,
    all_text,
    flat,
    make_document,
    make_sheet,
    make_trial,
    mask_kit,
    mask_payload,
    page_count,
    page_texts,
    trial_mac,
)

KITS = generate_kit_numbers(40)


@pytest.mark.req("LBL-10", "LBL-06", "LBL-07", "ACC-12", "VAL-04")
def test_sheet_holds_every_required_item() -> None:
    trial = make_trial()
    sheet = make_sheet(KITS[:3])
    text = flat(all_text(render_dispensation_sheet(trial, sheet)))
    required = [
        "FICHE DE DISPENSATION / DISPENSATION SHEET",
        trial.short_title,
        f"EU CT {trial.eu_ct_number}",
        f"Protocole / Protocol {trial.protocol_code}",
        trial.nct_number or "",
        trial.sponsor_name,
        "Centre / Site : 75-01 – Hôpital Lariboisière, réanimation",
        "Investigateur / Investigator : Pr E. Dupont",
        "N° patient / Subject no. : 01-007",
        "N° de randomisation / Randomization no. : R-0042",
        # LBL-10 / AUD-07: dispensing time in UTC and in the site's zone
        "Dispensé le / Dispensed on : 2025-03-01 13:45:07 UTC – 2025-03-01 14:45:07 Europe/Paris (UTC+01:00)",
        # ACC-12: printed name, date and time, meaning
        "Signature électronique / Electronic signature : Claire Pharmacienne – 2025-03-01 13:46:00 UTC – "
        "Signification / Meaning : Dispensation / Dispensing",
        # LBL-07: 24/7 emergency unblinding and main contact
        f"24/7 emergency unblinding : {trial.emergency_phone}",
        trial.main_contact_phone,
        # LBL-10 / VAL-04: document id, version and page x/y
        "Document DISP-2025-000042",
        "allocator 0.1.0",
        "Page 1/1",
    ]
    for item in required:
        assert flat(item) in text, item
    # LBL-06: one row per injection day with its kit number and planned date, and the subject on the label.
    for day, kit in enumerate(KITS[:3], start=1):
        assert f"J{day} / D{day}" in text
        assert text.count(format_kit_number(kit)) == 2  # in the row and on its syringe label
        assert f"2025-03-0{day}" in text
    without_numbers = text
    for kit in KITS[:3]:  # random: one may read "xx01-007x"
        without_numbers = without_numbers.replace(format_kit_number(kit), " ")
    assert without_numbers.count("01-007") == 4  # header and three syringe labels


@pytest.mark.req("AUD-07", "LBL-10")
@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2025, 3, 30, 0, 30, tzinfo=UTC), "2025-03-30 01:30:00 Europe/Paris (UTC+01:00)"),
        (datetime(2025, 3, 30, 1, 30, tzinfo=UTC), "2025-03-30 03:30:00 Europe/Paris (UTC+02:00)"),
        (datetime(2025, 10, 26, 0, 30, tzinfo=UTC), "2025-10-26 02:30:00 Europe/Paris (UTC+02:00)"),
        (datetime(2025, 10, 26, 1, 30, tzinfo=UTC), "2025-10-26 02:30:00 Europe/Paris (UTC+01:00)"),
        (
            datetime(2025, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=-4))),
            "2025-07-01 18:00:00 Europe/Paris",
        ),
    ],
)
def test_dispensing_time_is_shown_in_utc_and_paris_time_across_dst_changes(
    moment: datetime, expected: str
) -> None:
    assert local_time_text(moment, "Europe/Paris").startswith(expected)
    text = flat(all_text(render_dispensation_sheet(make_trial(), make_sheet(KITS[:3], dispensed_at=moment))))
    assert moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") in text
    assert expected in text


@pytest.mark.req("AUD-07")
def test_naive_times_and_unknown_zones_are_refused() -> None:
    with pytest.raises(LabelDataError, match="timezone-aware"):
        make_sheet(KITS[:3], dispensed_at=datetime(2025, 3, 1, 12, 0))  # noqa: DTZ001 - the point of the test
    with pytest.raises(LabelDataError, match="timezone-aware"):
        ElectronicSignature("A. B.", datetime(2025, 3, 1, 12, 0), Bilingual("Dispensation", "Dispensing"))  # noqa: DTZ001
    with pytest.raises(LabelDataError, match="unknown time zone"):
        make_sheet(KITS[:3], local_zone="Europe/Pariss")


@pytest.mark.req("LBL-10", "LBL-06")
def test_long_schedules_continue_on_numbered_pages_with_the_header_repeated() -> None:
    sheet = make_sheet(KITS[:9])
    texts = page_texts(render_dispensation_sheet(make_trial(), sheet))
    assert len(texts) >= 2
    for number, text in enumerate(texts, start=1):
        flat_text = flat(text)
        assert f"Page {number}/{len(texts)}" in flat_text
        assert "N° patient / Subject no. : 01-007" in flat_text
        assert "EU CT 2023-506725-11-00" in flat_text
        assert "24/7 emergency unblinding" in flat_text
        assert "Document DISP-2025-000042" in flat_text
    joined = flat(" ".join(texts))
    for kit in KITS[:9]:
        assert joined.count(format_kit_number(kit)) == 2
    assert "J9 / D9" in joined


@pytest.mark.req("LBL-15", "RND-13")
def test_test_watermark_iff_test_mode() -> None:
    sheet = make_sheet(KITS[:9])
    texts = page_texts(render_dispensation_sheet(make_trial(test_mode=True), sheet))
    assert len(texts) >= 2
    rows_on_page = [flat(text).count("Kit scanné au lit") for text in texts]
    for text, rows in zip(texts, rows_on_page, strict=True):
        # The status line under the heading, the page-wide mark, and the mark on each syringe label.
        assert "TEST – NE PAS UTILISER / TEST – DO NOT USE" in flat(text)
        assert flat(text).count("TEST – DO NOT USE") == 2 + rows
    production = render_dispensation_sheet(make_trial(test_mode=False), sheet)
    assert "TEST" not in all_text(production)
    assert "TEST" not in str(pypdf.PdfReader(io.BytesIO(production)).metadata)


@pytest.mark.req("LBL-12")
def test_duplicate_marking_and_reprint_number_iff_reprint() -> None:
    reprint = make_sheet(KITS[:3], document=make_document("DISP-2025-000042", reprint_number=2))
    text = flat(all_text(render_dispensation_sheet(make_trial(), reprint)))
    # Status line of the sheet and each of the three syringe labels.
    assert text.count("DUPLICATA – réimpression n° 2 / DUPLICATE – reprint no. 2") == 4
    original = all_text(render_dispensation_sheet(make_trial(), make_sheet(KITS[:3])))
    assert "DUPLICATA" not in original and "DUPLICATE" not in original


@pytest.mark.req("LBL-12")
@pytest.mark.parametrize("reprint_number", [100, 999])
def test_a_hundredth_reprint_in_test_mode_still_prints(reprint_number: int) -> None:
    """Issue 14's schemathesis run: from the 100th reprint of a test-mode sheet, the status line
    (duplicate mark and test mark) was wider than the page and printing answered 500."""
    reprint = make_sheet(KITS[:3], document=make_document("DISP-2025-000042", reprint_number=reprint_number))
    text = flat(all_text(render_dispensation_sheet(make_trial(test_mode=True), reprint)))
    assert f"DUPLICATE – reprint no. {reprint_number} – TEST – NE PAS UTILISER / TEST – DO NOT USE" in text


def _masked(sheet_kits: list[str]) -> object:
    sheet = make_sheet(sheet_kits)
    rows = tuple(
        dataclasses.replace(row, kit_number=mask_kit(index), qr_payload=mask_payload(row.unit, index))
        for index, row in enumerate(sheet.rows)
    )
    return dataclasses.replace(sheet, rows=rows)


@pytest.mark.req("BLD-02", "LBL-03")
def test_sheets_differ_only_in_kit_numbers_and_codes() -> None:
    """Two subjects' sheets (think: one on each arm) whose inputs differ only in kits and payloads."""
    trial = make_trial()
    kits_a, kits_b = KITS[:3], KITS[3:6]
    pdf_a = render_dispensation_sheet(trial, make_sheet(kits_a))
    pdf_b = render_dispensation_sheet(trial, make_sheet(kits_b))
    assert pdf_a != pdf_b
    masked_a = render_dispensation_sheet(trial, _masked(kits_a))  # type: ignore[arg-type]
    masked_b = render_dispensation_sheet(trial, _masked(kits_b))  # type: ignore[arg-type]
    assert masked_a == masked_b
    text_a, text_b = all_text(pdf_a), all_text(pdf_b)
    assert text_a != text_b
    for kit in kits_a:
        text_a = text_a.replace(format_kit_number(kit), "####-####")
    for kit in kits_b:
        text_b = text_b.replace(format_kit_number(kit), "####-####")
    assert text_a == text_b


def _shape(value: object) -> object:
    """A comparable rendering of a PDF object: references by number, streams by their keys only."""
    if isinstance(value, pypdf.generic.IndirectObject):
        return ("ref", value.idnum)
    if isinstance(value, pypdf.generic.StreamObject):
        return (
            "stream",
            sorted((key, _shape(item)) for key, item in value.items() if key not in ("/Length", "/Filter")),
        )
    if isinstance(value, dict):
        return sorted((key, _shape(item)) for key, item in value.items())
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return repr(value)


def _skeleton(pdf: bytes) -> list[object]:
    """Every object of the file, stream data left out: types, keys, names, fonts, boxes, references."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    size = int(reader.trailer["/Size"])
    return [_shape(reader.get_object(number)) for number in range(1, size)]


@pytest.mark.req("BLD-02")
def test_unmasked_sheets_have_the_same_objects_pages_and_byte_size() -> None:
    trial = make_trial()
    sizes = []
    skeletons = []
    for start in range(0, 30, 3):
        pdf = render_dispensation_sheet(trial, make_sheet(KITS[start : start + 3]))
        sizes.append(len(pdf))
        skeletons.append(_skeleton(pdf))
        assert page_count(pdf) == 1
    assert all(skeleton == skeletons[0] for skeleton in skeletons)
    assert len(set(sizes)) == 1, sizes


@pytest.mark.req("LBL-06")
def test_rows_must_be_distinct_days_and_kits() -> None:
    sheet = make_sheet(KITS[:3])
    same_day = (
        sheet.rows[0],
        dataclasses.replace(sheet.rows[1], unit="D1", qr_payload=sheet.rows[0].qr_payload),
    )
    with pytest.raises(LabelDataError):
        dataclasses.replace(sheet, rows=same_day)
    same_kit = (
        sheet.rows[0],
        DispensationRow(
            unit="D2",
            kit_number=KITS[0],
            qr_payload=build_payload(TRIAL_CODE, KITS[0], "D2", trial_mac),
            batch="BL-2409A",
            expiry=sheet.rows[0].expiry,
            planned_date=date(2025, 3, 2),
        ),
    )
    with pytest.raises(LabelDataError, match="two rows"):
        dataclasses.replace(sheet, rows=same_kit)
    with pytest.raises(LabelDataError, match="at least one"):
        dataclasses.replace(sheet, rows=())


@pytest.mark.req("LBL-06")
def test_planned_date_may_be_left_to_write_in() -> None:
    sheet = make_sheet(KITS[:3])
    rows = tuple(dataclasses.replace(row, planned_date=None) for row in sheet.rows)
    text = flat(all_text(render_dispensation_sheet(make_trial(), dataclasses.replace(sheet, rows=rows))))
    assert "Date prévue / Planned date" in text
    assert "2025-03-02" not in text
