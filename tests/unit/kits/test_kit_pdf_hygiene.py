"""PDF hygiene and determinism of labels and sheets: no active content, no hidden layers, standard
fonts only, generic metadata, identical bytes for identical input, printable text only (BLD-01,
LBL-10, LBL-04)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pypdf
import pytest

from kits.errors import UnrenderableTextError
from kits.labels import LabelKind, render_label_sheet
from kits.model import Bilingual
from kits.numbers import generate_kit_numbers
from kits.sheet import render_dispensation_sheet
from tests.unit.kits.kits_testdata import make_document, make_label, make_sheet, make_trial

KITS = generate_kit_numbers(30)
REPO = Path(__file__).resolve().parents[3]


def _outer(test_mode: bool = False) -> bytes:
    labels = [make_label(kit, "D1") for kit in KITS[:10]]
    return render_label_sheet(
        make_trial(test_mode=test_mode),
        labels,
        kind=LabelKind.OUTER,
        document=make_document(reprint_number=1),
    )


def _immediate(test_mode: bool = False) -> bytes:
    labels = [make_label(kit, "D2") for kit in KITS[:25]]
    return render_label_sheet(
        make_trial(test_mode=test_mode), labels, kind=LabelKind.IMMEDIATE, document=make_document()
    )


def _sheet(test_mode: bool = False) -> bytes:
    return render_dispensation_sheet(make_trial(test_mode=test_mode), make_sheet(KITS[:3]))


DOCUMENTS: dict[str, Callable[..., bytes]] = {"outer": _outer, "immediate": _immediate, "sheet": _sheet}
FORBIDDEN_KEYS = {
    "/JavaScript",
    "/JS",
    "/OpenAction",
    "/AA",
    "/AcroForm",
    "/EmbeddedFiles",
    "/EmbeddedFile",
    "/Names",
    "/OCProperties",
    "/OC",
    "/Annots",
    "/Launch",
    "/URI",
    "/Metadata",
    "/Encrypt",
}


def _walk(value: object, seen: set[int], found: set[str], reader: pypdf.PdfReader) -> None:
    if isinstance(value, pypdf.generic.IndirectObject):
        if value.idnum in seen:
            return
        seen.add(value.idnum)
        value = value.get_object()
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(str(key))
            if key == "/Subtype":
                found.add(f"Subtype{item}")
            _walk(item, seen, found, reader)
    elif isinstance(value, list):
        for item in value:
            _walk(item, seen, found, reader)


@pytest.mark.req("LBL-10", "BLD-01")
@pytest.mark.parametrize("name", list(DOCUMENTS))
@pytest.mark.parametrize("test_mode", [False, True])
def test_no_active_content_attachments_or_hidden_layers(name: str, test_mode: bool) -> None:
    reader = pypdf.PdfReader(io.BytesIO(DOCUMENTS[name](test_mode)))
    catalog = reader.trailer["/Root"]
    assert set(catalog) <= {"/Type", "/Pages", "/PageMode", "/Lang"}, set(catalog)
    keys: set[str] = set()
    for number in range(1, int(reader.trailer["/Size"])):
        _walk(pypdf.generic.IndirectObject(number, 0, reader), set(), keys, reader)
    assert not keys & FORBIDDEN_KEYS, keys & FORBIDDEN_KEYS
    assert "Subtype/Image" not in keys  # QR codes are vector drawings
    assert "/Encrypt" not in reader.trailer


@pytest.mark.req("LBL-10", "BLD-02")
@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_only_standard_helvetica_fonts_and_nothing_embedded(name: str) -> None:
    reader = pypdf.PdfReader(io.BytesIO(DOCUMENTS[name]()))
    fonts = {}
    for page in reader.pages:
        resources = page["/Resources"]
        fonts.update({key: value.get_object() for key, value in resources["/Font"].items()})
        for xobject in resources.get("/XObject", {}).values():
            form = xobject.get_object()
            assert form["/Subtype"] == "/Form"
            fonts.update({key: value.get_object() for key, value in form["/Resources"]["/Font"].items()})
    assert fonts
    for font in fonts.values():
        assert font["/Subtype"] == "/Type1"
        assert font["/BaseFont"] in {
            "/Helvetica",
            "/Helvetica-Bold",
            "/Helvetica-Oblique",
            "/Helvetica-BoldOblique",
        }
        assert font["/Encoding"] == "/WinAnsiEncoding"
        assert "/FontDescriptor" not in font  # no embedded font program


@pytest.mark.req("BLD-01", "LBL-10")
@pytest.mark.parametrize("name", list(DOCUMENTS))
@pytest.mark.parametrize("test_mode", [False, True])
def test_metadata_holds_only_a_generic_title_and_the_document_id(name: str, test_mode: bool) -> None:
    reader = pypdf.PdfReader(io.BytesIO(DOCUMENTS[name](test_mode)))
    info = {key: str(value) for key, value in (reader.metadata or {}).items()}
    document_id = "DISP-2025-000042" if name == "sheet" else "LBL-2025-000123"
    title = (
        "Fiche de dispensation / Dispensation sheet" if name == "sheet" else "Étiquettes de kits / Kit labels"
    )
    if test_mode:
        title = f"TEST – {title}"
    assert info["/Title"] == f"{title} {document_id}"
    assert info["/Subject"] == info["/Keywords"] == document_id
    assert info["/Author"] == "allocator"
    assert info["/Creator"] == "allocator 0.1.0"
    assert info["/CreationDate"] == info["/ModDate"] == "D:20250301134507+00'00'"
    assert set(info) == {
        "/Title",
        "/Subject",
        "/Keywords",
        "/Author",
        "/Creator",
        "/Producer",
        "/CreationDate",
        "/ModDate",
        "/Trapped",
    }
    joined = " ".join(info.values()).lower()
    for word in ("placebo", "interféron", "interferon", "gamma", "nacl", "imukin", "saline", "arm", "bras"):
        assert word not in joined, word


@pytest.mark.req("LBL-10", "BLD-02")
@pytest.mark.parametrize("name", list(DOCUMENTS))
def test_same_input_gives_identical_bytes(name: str) -> None:
    assert DOCUMENTS[name]() == DOCUMENTS[name]()


_SUBPROCESS_RENDER = """
import hashlib, sys
from tests.unit.kits.kits_testdata import make_sheet, make_trial
from kits.sheet import render_dispensation_sheet
kits = sys.argv[1].split(",")
sys.stdout.write(hashlib.sha256(render_dispensation_sheet(make_trial(), make_sheet(kits))).hexdigest())
"""


@pytest.mark.req("LBL-10", "BLD-02")
def test_bytes_do_not_depend_on_the_process() -> None:
    """Another interpreter, another hash seed, another day: still the same file."""
    expected = hashlib.sha256(render_dispensation_sheet(make_trial(), make_sheet(KITS[:3]))).hexdigest()
    environment = {**os.environ, "PYTHONHASHSEED": "12345", "TZ": "America/New_York", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_RENDER, ",".join(KITS[:3])],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=environment,
        timeout=120,
    )
    assert result.stdout == expected


@pytest.mark.req("LBL-04", "LBL-01")
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("product_name", Bilingual("Interféron gamma-1b 2 × 10⁶ UI ou placebo", "x"), r"U\+2076 .*write \^6"),
        ("product_name", Bilingual("IFN-γ ou placebo", "x"), r"U\+03B3 GREEK SMALL LETTER GAMMA.*'gamma'"),
        ("storage", Bilingual("x", "Store at 2–8 °C ≤ 25 °C"), r"storage conditions \(en\).*U\+2264"),
        ("sponsor_name", "AP-HP 🏥", r"sponsor name: character .*U\+1F3E5"),
        ("sponsor_address", "1 avenue Victoria\n75004 Paris", r"U\+000A .*cannot be printed"),
        ("main_contact_name", "Dr A. Marti\u200bn", r"U\+200B \(ZERO WIDTH SPACE\)"),
        ("short_title", "Interfe\u0301ron", "not NFC-normalised"),
    ],
)
def test_characters_the_standard_fonts_cannot_print_are_refused(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(UnrenderableTextError, match=message):
        make_trial(**{field: value})


@pytest.mark.req("LBL-04")
def test_french_and_windows_1252_typography_is_accepted() -> None:
    trial = make_trial(
        product_name=Bilingual(
            "Interféron gamma-1b 2 × 10^6 UI ou placebo – « NaCl 0,9 % »", "Interferon … €"
        ),
        storage=Bilingual("À conserver entre 2 °C et 8 °C ; ne pas congeler", "Store at 2 °C – 8 °C"),
    )
    pdf = render_label_sheet(trial, [make_label(KITS[0])], kind=LabelKind.OUTER, document=make_document())
    text = " ".join(pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text().replace("\u00a0", " ").split())
    assert "2 × 10 6 UI ou placebo – « NaCl 0,9 % »" in text  # 10^6 printed with a raised 6 (issue 13)
    assert "À conserver entre 2 °C et 8 °C ; ne pas congeler" in text
