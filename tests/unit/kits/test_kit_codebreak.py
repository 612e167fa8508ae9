"""Sealed code-break sheets (kits.codebreak): one page per kit with what a person needs at 3 a.m.,
the QR code of the sheet number, the sealed text only inside its box, sheets of two arms identical
outside that box, reprint and TEST markings, clean metadata (UNB-06, BLD-01, BLD-02, LBL-12, LBL-15)."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

import pypdf
import pypdfium2 as pdfium
import pytest
from PIL import ImageChops

from kits.codebreak import (
    HEADING,
    SEALED_BOX,
    CodeBreakDocument,
    SealedSheet,
    fit_sealed_text,
    render_code_break_sheets,
)
from kits.errors import LabelDataError, LabelLayoutError
from kits.model import Bilingual, DocumentMeta
from kits.numbers import format_kit_number, generate_kit_numbers
from kits.sheet import ElectronicSignature
from tests.unit.kits.kits_testdata import (
    Placed,
    all_text,
    decode_qr_codes,
    flat,
    make_trial,
    page_count,
    page_texts,
    text_runs,
)
from tests.unit.kits.test_kit_pdf_hygiene import FORBIDDEN_KEYS, _walk

KITS = generate_kit_numbers(6)
ACTIVE = "Interferon gamma-1b"
PLACEBO = "Placebo"
SIGNATURE = ElectronicSignature(
    "St\u00e9phanie Statisticienne",
    datetime(2025, 3, 1, 13, 46, 0, tzinfo=UTC),
    Bilingual("g\u00e9n\u00e9ration des fiches de lev\u00e9e d'aveugle", "code-break sheet generation"),
)


def sheet(index: int, text: str, **changes: object) -> SealedSheet:
    values: dict[str, object] = {
        "sheet_number": f"CB-IFNG-PAIS-{index + 1:06d}",
        "kit_number": KITS[index],
        "sealed_text": text,
    }
    values.update(changes)
    return SealedSheet(**values)  # type: ignore[arg-type]


def document(*sheets: SealedSheet, reprint_number: int = 0) -> CodeBreakDocument:
    return CodeBreakDocument(
        sheets=sheets,
        signature=SIGNATURE,
        document=DocumentMeta(
            "CBDOC-IFNG-PAIS-000001", datetime(2025, 3, 1, 13, 46, 5, tzinfo=UTC), reprint_number
        ),
    )


def render(*sheets: SealedSheet, test_mode: bool = False, reprint_number: int = 0) -> bytes:
    return render_code_break_sheets(
        make_trial(test_mode=test_mode), document(*sheets, reprint_number=reprint_number)
    )


def inside_box(x: float, y: float) -> bool:
    left, bottom, width, height = SEALED_BOX
    return left <= x <= left + width and bottom <= y <= bottom + height


def sealed_text_of(pdf: bytes, page: int) -> str:
    """The text drawn inside the sealed box of a page."""
    return " ".join(run.text for run in text_runs(pdf, page) if inside_box(run.x, run.y))


def outside_runs(pdf: bytes, page: int) -> list[tuple[str, int, int]]:
    return [
        (run.text, round(run.x), round(run.y)) for run in text_runs(pdf, page) if not inside_box(run.x, run.y)
    ]


def beside(runs: list[Placed], caption: str) -> str:
    """The per-sheet value printed on the same line as `caption`, to its right."""
    (label,) = [run for run in runs if run.text.startswith(caption)]
    right = sorted((run for run in runs if abs(run.y - label.y) < 0.5 and run.x > label.x), key=lambda r: r.x)
    return right[0].text if right else ""


def raster(pdf: bytes, page: int, scale: float = 2.0) -> object:
    doc = pdfium.PdfDocument(pdf)
    try:
        return doc[page].render(scale=scale, grayscale=True).to_pil()
    finally:
        doc.close()


@pytest.mark.req("UNB-06", "LBL-04", "LBL-07", "ACC-12")
def test_one_page_per_kit_with_what_to_do_the_numbers_and_a_qr_code_of_the_sheet_number() -> None:
    sheets = [sheet(i, ACTIVE if i % 2 else PLACEBO) for i in range(3)]
    pdf = render(*sheets)
    assert page_count(pdf) == 3
    for index, (raw, item) in enumerate(zip(page_texts(pdf), sheets, strict=True)):
        text = flat(raw)
        kit = format_kit_number(item.kit_number)
        for expected in (
            HEADING,
            "APHP220672",
            "Interf\u00e9ron gamma-1b versus placebo",  # the short title names both arms alike
            "CBDOC-IFNG-PAIS-000001",
            "Urgence 24 h/24, lev\u00e9e d'aveugle / 24/7 emergency unblinding : +33 1 40 05 48 48",
            "Appeler d'abord la ligne d'urgence 24 h/24 : +33 1 40 05 48 48",
            "First call the 24/7 emergency line: +33 1 40 05 48 48",
            "register the opening there",
            "who opened it, when and why",
            "Ouvert par (nom, fonction) / Opened by (name, role)",
            "PLIER ICI / FOLD HERE",
            "SCELLER / SEAL",
            f"Opening this part unblinds kit {kit}.",
            f"L'ouverture de cette partie l\u00e8ve l'aveugle du kit {kit}.",
            "St\u00e9phanie Statisticienne \u2013 2025-03-01 13:46:00 UTC",
            "code-break sheet generation",
            f"Page {index + 1}/3",
        ):
            assert expected in text, expected
        # LBL-09: the human-readable numbers are the ones of this sheet, beside their captions.
        runs = text_runs(pdf, index)
        assert beside(runs, "N\u00b0 de kit / Kit no.") == kit
        assert beside(runs, "N\u00b0 de fiche / Sheet no.") == item.sheet_number
        assert beside(runs, "Remplace la fiche / Replaces sheet") == "\u2013"
        # French first (LBL-04).
        assert text.index("\u00c0 ouvrir uniquement") < text.index("Open only in a medical emergency")
        assert [code.text for code in decode_qr_codes(pdf, index)] == [item.sheet_number]
        assert sealed_text_of(pdf, index) == item.sealed_text


@pytest.mark.req("BLD-02", "UNB-06")
@pytest.mark.parametrize("other", [PLACEBO, "Recombinant human interferon gamma-1b 2 x 10^6 IU subcutaneous"])
def test_sheets_of_two_arms_differ_only_inside_the_sealed_box(other: str) -> None:
    """The same kit and sheet numbers, an arm-A and an arm-B text: the visible part is identical in
    page count, text and pixels, whatever the lengths of the two texts."""
    pdf_a = render(sheet(0, ACTIVE))
    pdf_b = render(sheet(0, other))
    assert pdf_a != pdf_b
    assert page_count(pdf_a) == page_count(pdf_b) == 1
    assert sealed_text_of(pdf_a, 0) == ACTIVE
    assert flat(sealed_text_of(pdf_b, 0)) == other
    assert outside_runs(pdf_a, 0) == outside_runs(pdf_b, 0)
    text_a = flat(all_text(pdf_a)).replace(ACTIVE, "", 1)
    text_b = flat(all_text(pdf_b))
    for line in (flat(sealed_text_of(pdf_b, 0)),):
        text_b = text_b.replace(line, "", 1)
    assert " ".join(text_a.split()) == " ".join(text_b.split())
    # Pixels: every difference lies inside the sealed box.
    scale = 2.0
    image_a, image_b = raster(pdf_a, 0, scale), raster(pdf_b, 0, scale)
    changed = ImageChops.difference(image_a, image_b).getbbox()  # type: ignore[arg-type]
    assert changed is not None
    left, bottom, width, height = SEALED_BOX
    page_height = image_a.size[1] / scale  # type: ignore[attr-defined]
    x0, y0, x1, y1 = (value / scale for value in changed)
    assert left <= x0 and x1 <= left + width
    assert page_height - (bottom + height) <= y0 and y1 <= page_height - bottom


@pytest.mark.req("BLD-02")
def test_the_sealed_text_shrinks_into_the_same_box_and_an_impossible_text_is_refused_unquoted() -> None:
    short_size, short_lines = fit_sealed_text(PLACEBO)
    long_size, long_lines = fit_sealed_text("Recombinant human interferon gamma-1b " * 3)
    assert short_lines == [PLACEBO] and long_size < short_size and 1 < len(long_lines) <= 3
    secret = "Unpronounceable " * 40
    with pytest.raises(LabelLayoutError) as caught:
        fit_sealed_text(secret)
    assert "Unpronounceable" not in str(caught.value)
    with pytest.raises(LabelDataError) as refused:
        sheet(0, secret[:121])
    assert "Unpronounceable" not in str(refused.value) and "CB-IFNG-PAIS-000001" in str(refused.value)


@pytest.mark.req("LBL-12", "LBL-15")
def test_duplicate_and_test_markings_only_when_they_apply() -> None:
    plain = flat(all_text(render(sheet(0, ACTIVE))))
    assert "DUPLICATA" not in plain and "NE PAS UTILISER" not in plain
    marked = flat(all_text(render(sheet(0, ACTIVE), test_mode=True, reprint_number=2)))
    assert "DUPLICATA \u2013 r\u00e9impression n\u00b0 2 / DUPLICATE \u2013 reprint no. 2" in marked
    assert "TEST \u2013 NE PAS UTILISER / TEST \u2013 DO NOT USE" in marked


@pytest.mark.req("UNB-06")
def test_a_replacement_sheet_names_the_sheet_it_replaces() -> None:
    replacement = sheet(0, ACTIVE, sheet_number="CB-IFNG-PAIS-000017", replaces="CB-IFNG-PAIS-000003")
    pdf = render(replacement)
    runs = text_runs(pdf, 0)
    assert beside(runs, "Remplace la fiche / Replaces sheet") == "CB-IFNG-PAIS-000003"
    assert beside(runs, "N\u00b0 de fiche / Sheet no.") == "CB-IFNG-PAIS-000017"
    assert [code.text for code in decode_qr_codes(pdf, 0)] == ["CB-IFNG-PAIS-000017"]


@pytest.mark.req("BLD-01", "LBL-10")
@pytest.mark.parametrize("test_mode", [False, True])
def test_metadata_and_structure_hold_no_arm_and_no_active_content(test_mode: bool) -> None:
    for text in (ACTIVE, PLACEBO):
        pdf = render(sheet(0, text), test_mode=test_mode)
        reader = pypdf.PdfReader(io.BytesIO(pdf))
        info = {key: str(value) for key, value in (reader.metadata or {}).items()}
        title = "Fiches de lev\u00e9e d'aveugle / Code-break sheets"
        if test_mode:
            title = f"TEST \u2013 {title}"
        assert info["/Title"] == f"{title} CBDOC-IFNG-PAIS-000001"
        assert info["/Subject"] == info["/Keywords"] == "CBDOC-IFNG-PAIS-000001"
        joined = " ".join(info.values()).lower()
        for word in ("placebo", "interferon", "gamma", "arm", "bras"):
            assert word not in joined, word
        keys: set[str] = set()
        for number in range(1, int(reader.trailer["/Size"])):
            _walk(pypdf.generic.IndirectObject(number, 0, reader), set(), keys, reader)
        assert not keys & FORBIDDEN_KEYS
        assert "Subtype/Image" not in keys


@pytest.mark.req("LBL-10")
def test_same_input_gives_identical_bytes() -> None:
    assert render(sheet(0, ACTIVE), sheet(1, PLACEBO)) == render(sheet(0, ACTIVE), sheet(1, PLACEBO))


@pytest.mark.req("UNB-06")
def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(LabelDataError, match="sheet number"):
        sheet(0, ACTIVE, sheet_number="cb-lowercase")
    with pytest.raises(LabelDataError, match="kit number"):
        sheet(0, ACTIVE, kit_number=KITS[0][:7] + str((int(KITS[0][7]) + 1) % 10))
    with pytest.raises(LabelDataError, match="sealed text") as caught:
        sheet(0, "Interf\u00e9ron \u03b3")
    assert "\u03b3" not in str(caught.value)
    with pytest.raises(LabelDataError, match="sealed text"):
        sheet(0, " ")
    with pytest.raises(LabelDataError, match="twice"):
        document(sheet(0, ACTIVE), sheet(0, PLACEBO))
    with pytest.raises(LabelDataError, match="same length"):
        document(sheet(0, ACTIVE), sheet(1, PLACEBO, sheet_number="CB-IFNG-PAIS-1000000"))
    with pytest.raises(LabelDataError, match="at least one"):
        document()
    with pytest.raises(LabelDataError):
        render_code_break_sheets(make_trial(), dataclasses.replace(document(sheet(0, ACTIVE))).sheets)  # type: ignore[arg-type]
