"""Tube-set labels of an observational cohort (issue 20): per set, its own label (unit S-00) and one
per tube; every QR code decodes to its payload, verifies as a sample kit's and not a drug kit's;
French first; the same input gives the same bytes (LBL-04, LBL-08, LBL-09, LBL-12)."""

from __future__ import annotations

import pytest

from kits.errors import LabelDataError, WrongKitKindError
from kits.numbers import generate_kit_numbers
from kits.payload import KitKind, build_payload, sample_unit, verify_payload
from kits.samples import SampleLabel, SampleLabelInfo, render_sample_label_sheet
from tests.unit.kits.kits_testdata import all_text, decode_qr_codes, make_document, page_count, trial_mac

STUDY = "IMMUNOSEPSIS-4"
TUBES = ("EDTA 5 mL (1/3)", "Heparin 5 mL (2/3)", "PAXgene RNA 2.5 mL (3/3)")


def _info(test_mode: bool = False) -> SampleLabelInfo:
    return SampleLabelInfo(
        STUDY, "IMMUNOSEPSIS 4", "69HCL19_0071", "NCT04067674", "Hospices Civils de Lyon", test_mode, "1.0"
    )


def _labels(numbers: list[str]) -> list[SampleLabel]:
    return [
        SampleLabel(
            n,
            build_payload(STUDY, n, sample_unit(i), trial_mac),
            sample_unit(i),
            "L1",
            None if i == 0 else TUBES[i - 1],
        )
        for n in numbers
        for i in range(len(TUBES) + 1)
    ]


@pytest.mark.req("LBL-08", "LBL-09", "LBL-04")
def test_every_tube_set_code_decodes_as_a_sample_kit_of_its_printed_set() -> None:
    labels = _labels(generate_kit_numbers(5))  # 20 labels: one page of 21
    pdf = render_sample_label_sheet(_info(), labels, document=make_document("SLB-IMMUNOSEPSIS-4-000001"))
    assert page_count(pdf) == 1
    codes = decode_qr_codes(pdf, 0, scale=3)
    assert sorted(c.text for c in codes) == sorted(label.qr_payload for label in labels)
    for code in codes:
        assert verify_payload(code.text, STUDY, trial_mac, kind=KitKind.SAMPLE).unit.startswith("S-")
        with pytest.raises(WrongKitKindError):  # never taken for a drug kit's label
            verify_payload(code.text, STUDY, trial_mac)
    text = all_text(pdf)
    assert text.index("Kit de tubes") < text.index("Tube set")  # French first
    assert "PAXgene RNA 2.5 mL (3/3)" in text and "Biological sample" in text


@pytest.mark.req("LBL-12")
def test_the_sheet_is_byte_stable_and_a_reprint_is_marked() -> None:
    labels = _labels(generate_kit_numbers(2))
    first = render_sample_label_sheet(_info(), labels, document=make_document("SLB-1"))
    assert first == render_sample_label_sheet(_info(), labels, document=make_document("SLB-1"))
    reprint = render_sample_label_sheet(_info(), labels, document=make_document("SLB-2", reprint_number=1))
    assert "DUPLICATA" in all_text(reprint) and "DUPLICATA" not in all_text(first)


def test_a_label_must_be_a_sample_kits_and_match_its_code() -> None:
    [number, other] = generate_kit_numbers(2)
    with pytest.raises(LabelDataError):  # a drug unit
        SampleLabel(number, build_payload(STUDY, number, "K", trial_mac), "K", "L1")
    with pytest.raises(LabelDataError):  # the code names another set
        SampleLabel(number, build_payload(STUDY, other, "S-00", trial_mac), "S-00", "L1")
    with pytest.raises(LabelDataError):
        render_sample_label_sheet(_info(), [], document=make_document())
