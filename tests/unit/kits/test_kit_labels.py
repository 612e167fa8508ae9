"""Outer and immediate kit labels: Annex VI particulars, French first, markings, identical layout
for every kit (LBL-01 to LBL-04, LBL-07, LBL-12, LBL-15, BLD-01, BLD-02)."""

from __future__ import annotations

import dataclasses
import re

import pypdf
import pytest

from kits.errors import LabelDataError, LabelLayoutError
from kits.labels import (
    IMMEDIATE_LAYOUT,
    OUTER_LAYOUT,
    LabelKind,
    LabelPlan,
    immediate_plan,
    outer_plan,
    render_label_sheet,
)
from kits.model import Bilingual, DocumentMeta, Expiry, KitLabel, TrialLabelInfo
from kits.numbers import check_digit, format_kit_number, generate_kit_numbers
from kits.payload import build_payload
from kits.pdf import ASCENT, DESCENT, TextOp, draw_text, width
from kits.sheet import DispensationRow, DispensationSheet, ElectronicSignature
from tests.unit.kits.kits_testdata import (
    TRIAL_CODE,
    all_text,
    flat,
    make_document,
    make_label,
    make_trial,
    mask_kit,
    mask_payload,
    page_texts,
    trial_mac,
)

KITS = generate_kit_numbers(60)


def _labels(count: int, **changes: object) -> list[KitLabel]:
    return [make_label(kit, f"D{index % 3 + 1}", **changes) for index, kit in enumerate(KITS[:count])]


def _render(
    kind: LabelKind,
    labels: list[KitLabel] | None = None,
    trial: TrialLabelInfo | None = None,
    document: DocumentMeta | None = None,
) -> bytes:
    return render_label_sheet(
        trial or make_trial(),
        labels if labels is not None else _labels(8 if kind is LabelKind.OUTER else 21),
        kind=kind,
        document=document or make_document(),
    )


@pytest.mark.req("LBL-01", "LBL-07")
def test_outer_label_carries_every_annex_vi_particular() -> None:
    trial = make_trial()
    labels = _labels(8, subject_number="01-007", investigator_name="Pr E. Dupont")
    text = flat(page_texts(_render(LabelKind.OUTER, labels, trial))[0])
    per_label = {
        # (a) main contact, address and phone; 24/7 emergency-unblinding phone
        "a": [trial.sponsor_name, trial.sponsor_address, trial.main_contact_name, trial.main_contact_phone],
        "a-emergency": ["levée d'aveugle", "emergency unblinding", trial.emergency_phone],
        # (b) substance and strength, placebo named with the active substance
        # (10^6 is printed as 10 with a raised 6, which the text layer reads as "10 6": issue 13)
        "b": [trial.product_name.fr.replace("10^6", "10 6"), trial.product_name.en.replace("10^6", "10 6")],
        # (c) pharmaceutical form, route, quantity of dosage units
        "c": [
            trial.pharmaceutical_form.fr,
            trial.pharmaceutical_form.en,
            trial.route.fr,
            trial.route.en,
            trial.quantity.fr,
            trial.quantity.en,
        ],
        "d": ["Lot / Batch :", "BL-2409A"],
        "e": [trial.eu_ct_number, f"Protocole / Protocol {trial.protocol_code}", "Centre / Site :", "75-01"],
        "f": ["N° de kit / Kit no. :", "N° patient / Subject no. :", "01-007", "Jour / Day :"],
        "g": ["Investigateur / Investigator :", "Pr E. Dupont"],
        "h": [trial.directions.fr, trial.directions.en],
        "i": [trial.clinical_trial_use.fr, trial.clinical_trial_use.en],
        "j": [trial.storage.fr, trial.storage.en],
        "k": ["Péremption / Expiry (MM/AAAA) :", "03/2027"],
        "l": [
            "Tenir hors de la vue et de la portée des enfants",
            "Keep out of the sight and reach of children",
        ],
    }
    for letter, phrases in per_label.items():
        for phrase in phrases:
            assert text.count(flat(phrase)) >= 8, (letter, phrase)
    assert text.count("placebo") >= 16  # (b) on every label, in both languages
    assert "^" not in text  # never a caret for a power of ten
    for label in labels:
        assert format_kit_number(label.kit_number) in text
    for day in ("J1 / D1", "J2 / D2", "J3 / D3"):
        assert day in text


@pytest.mark.req("LBL-01")
def test_keep_out_of_reach_is_printed_only_when_configured() -> None:
    with_it = all_text(_render(LabelKind.OUTER))
    without = all_text(_render(LabelKind.OUTER, trial=make_trial(print_keep_out_of_reach=False)))
    assert "Keep out of the sight" in flat(with_it)
    assert "Keep out of the sight" not in flat(without)
    assert "hors de la vue" not in flat(without)


@pytest.mark.req("LBL-02", "LBL-07")
def test_immediate_label_carries_the_reduced_set() -> None:
    trial = make_trial()
    # Kit numbers are random; one whose display form holds the site code (like "1275-0130") once made
    # this count 22 in CI. One such kit is always on the sheet, and the count leaves numbers out.
    lookalike = "1275013" + check_digit("1275013")
    labels = [make_label(lookalike, "D1", subject_number="01-007"), *_labels(20, subject_number="01-007")]
    text = flat(page_texts(_render(LabelKind.IMMEDIATE, labels, trial))[0])
    assert "75-01" in format_kit_number(lookalike)
    for label in labels:
        assert format_kit_number(label.kit_number) in text
    without_numbers = text
    for label in labels:
        without_numbers = without_numbers.replace(format_kit_number(label.kit_number), " ")
    for phrase in [
        trial.main_contact_name,  # (a) name of the main contact
        trial.main_contact_phone,
        trial.emergency_phone,  # LBL-07
        f"{trial.route.fr} / {trial.route.en}",  # (b) route
        "Lot / Batch :",  # (c) batch
        "BL-2409A",
        f"EU CT {trial.eu_ct_number}",  # (d) trial reference code
        f"Protocole / Protocol {trial.protocol_code}",
        "Centre / Site :",
        "75-01",
        "Patient / Subject :",  # (e) subject, kit and visit
        "01-007",
        "Kit :",
        "Jour / Day :",
        "EXP :",  # (f) period of use
        "03/2027",
        trial.clinical_trial_use.fr,
    ]:
        assert without_numbers.count(flat(phrase)) == 21, phrase
    # Reduced set: no product name, strength, storage or directions on the syringe of a blinded trial.
    for absent in (trial.product_name.fr, "placebo", trial.storage.fr, trial.directions.en):
        assert flat(absent) not in text


@pytest.mark.req("LBL-02")
def test_expiry_leaves_the_immediate_label_only_when_the_outer_pack_carries_it() -> None:
    omitted = make_trial(immediate_omits_expiry=True)
    text = flat(all_text(_render(LabelKind.IMMEDIATE, trial=omitted)))
    assert "EXP" not in text and "03/2027" not in text
    assert "03/2027" in flat(all_text(_render(LabelKind.OUTER, trial=omitted)))
    with pytest.raises(LabelDataError, match="outer packaging"):
        make_trial(immediate_omits_expiry=True, outer_pack_carries_expiry=False)


@pytest.mark.req("LBL-04")
@pytest.mark.parametrize("kind", list(LabelKind))
def test_french_comes_first_on_every_label(kind: LabelKind) -> None:
    text = flat(all_text(_render(kind)))
    pairs = [
        ("Pour essai clinique uniquement", "For clinical trial use only"),
        ("Voie sous-cutanée", "Subcutaneous"),
    ]
    if kind is LabelKind.OUTER:
        pairs += [("Conservation", "Storage"), ("Mode d'emploi", "Directions"), ("Interféron", "Interferon")]
    for french, english in pairs:
        starts = [match.start() for match in re.finditer(re.escape(french), text)]
        assert starts, french
        for start in starts:
            assert start < text.index(english, start), (french, english)
    for caption in ("Centre / Site", "Lot / Batch", "Jour / Day"):
        assert caption in text


@pytest.mark.req("LBL-15", "RND-13")
@pytest.mark.parametrize("kind", list(LabelKind))
def test_test_watermark_is_on_every_page_iff_test_mode(kind: LabelKind) -> None:
    labels = _labels(30)  # several pages for both layouts
    marked = _render(kind, labels, make_trial(test_mode=True))
    texts = page_texts(marked)
    assert len(texts) >= 2
    for text in texts:
        assert "TEST – NE PAS UTILISER" in text and "TEST – DO NOT USE" in text
    per_page = (OUTER_LAYOUT if kind is LabelKind.OUTER else IMMEDIATE_LAYOUT).per_page
    # Also inside each label (page mark + footer + one per label), so that a cut label keeps it.
    assert flat(texts[0]).count("NE PAS UTILISER") == per_page + 2
    production = _render(kind, labels, make_trial(test_mode=False))
    assert "TEST" not in all_text(production)
    assert "TEST" not in str(pypdf.PdfReader(__import__("io").BytesIO(production)).metadata)


@pytest.mark.req("LBL-12")
@pytest.mark.parametrize("kind", list(LabelKind))
def test_duplicate_marking_iff_reprint(kind: LabelKind) -> None:
    labels = _labels(8)
    reprint = page_texts(_render(kind, labels, document=make_document(reprint_number=3)))
    for text in reprint:
        assert "DUPLICATA" in text
        # On every label and in the footer.
        assert (
            flat(text).count("DUPLICATA – réimpression n° 3 / DUPLICATE – reprint no. 3") == len(labels) + 1
        )
    original = all_text(_render(kind, labels, document=make_document(reprint_number=0)))
    assert "DUPLICATA" not in original and "DUPLICATE" not in original


@pytest.mark.req("VAL-04")
def test_every_label_page_carries_document_id_version_and_page_x_of_y() -> None:
    texts = page_texts(_render(LabelKind.IMMEDIATE, _labels(50)))
    assert len(texts) == 3
    for number, text in enumerate(texts, start=1):
        assert f"Page {number}/3" in text
        assert "Document LBL-2025-000123" in text
        assert "allocator 0.1.0" in text


def _masked(labels: list[KitLabel]) -> list[KitLabel]:
    return [
        dataclasses.replace(label, kit_number=mask_kit(), qr_payload=mask_payload(label.unit))
        for label in labels
    ]


@pytest.mark.req("LBL-03", "BLD-02")
@pytest.mark.parametrize("kind", list(LabelKind))
def test_labels_of_different_kits_differ_only_in_kit_values(kind: LabelKind) -> None:
    """Think of kits A as active and kits B as placebo: the renderer cannot tell, and the PDFs show it."""
    labels_a = [make_label(kit, "D1") for kit in KITS[:8]]
    labels_b = [make_label(kit, "D1") for kit in KITS[8:16]]
    pdf_a, pdf_b = _render(kind, labels_a), _render(kind, labels_b)
    assert pdf_a != pdf_b
    assert _render(kind, _masked(labels_a)) == _render(kind, _masked(labels_b))
    text_a, text_b = all_text(pdf_a), all_text(pdf_b)
    for label in labels_a:
        text_a = text_a.replace(format_kit_number(label.kit_number), "KIT")
    for label in labels_b:
        text_b = text_b.replace(format_kit_number(label.kit_number), "KIT")
    assert text_a == text_b


def _overlaps(op: TextOp, plan: LabelPlan) -> bool:
    left, right = op.x, op.x + width(op.text, op.font, op.size)
    bottom, top = op.y - DESCENT * op.size, op.y + ASCENT * op.size
    return not (
        right <= plan.qr_x
        or left >= plan.qr_x + plan.qr_size
        or top <= plan.qr_y
        or bottom >= plan.qr_y + plan.qr_size
    )


@pytest.mark.req("LBL-01", "LBL-02")
@pytest.mark.parametrize("reprint", [0, 1])
@pytest.mark.parametrize("long_texts", [False, True])
def test_no_text_runs_under_the_qr_code_or_off_the_label(reprint: int, long_texts: bool) -> None:
    trial = make_trial()
    if long_texts:
        trial = make_trial(
            sponsor_name="Assistance Publique – Hôpitaux de Paris, Direction de la Recherche Clinique",
            product_name=Bilingual(
                "Interféron gamma-1b recombinant humain 2 000 000 UI ou placebo (NaCl 0,9 %)", "x"
            ),
        )
    for plan in (
        outer_plan(trial, OUTER_LAYOUT.label_width, OUTER_LAYOUT.label_height, reprint),
        immediate_plan(trial, IMMEDIATE_LAYOUT.label_width, IMMEDIATE_LAYOUT.label_height, reprint),
    ):
        for op in plan.plan.ops:
            if isinstance(op, TextOp):
                assert not _overlaps(op, plan), op
                assert op.x >= 0 and op.x + width(op.text, op.font, op.size) <= plan.width, op
                assert op.y - DESCENT * op.size >= 0 and op.y + ASCENT * op.size <= plan.height, op
        for name, slot in plan.plan.slots.items():
            beside_qr = slot.y + ASCENT * slot.size > plan.qr_y
            assert not beside_qr or slot.x + slot.width <= plan.qr_x, name
            assert slot.x + slot.width <= plan.width, name


@pytest.mark.req("LBL-01")
def test_texts_that_do_not_fit_are_refused_not_clipped() -> None:
    long = " ".join(["Conserver à l'abri de la lumière, dans l'emballage extérieur."] * 4)
    trial = make_trial(storage=Bilingual(long, long), directions=Bilingual(long, long))
    with pytest.raises(LabelLayoutError, match="outer label does not fit"):
        _render(LabelKind.OUTER, trial=trial)
    with pytest.raises(LabelLayoutError, match="batch"):
        _render(LabelKind.OUTER, [make_label(KITS[0], batch="WWWWWWWWWWWWWWWWWWWW")])


@pytest.mark.req("LBL-01")
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sponsor_name", "", "sponsor name is required"),
        ("sponsor_address", "  ", "sponsor address is required"),
        ("main_contact_name", "", "main contact name is required"),
        ("main_contact_phone", "", "main contact phone is required"),
        ("emergency_phone", "call the sponsor", "does not look like a phone number"),
        ("eu_ct_number", "", "EU CT number is required"),
        ("eu_ct_number", "2023-50672-11-00", "must look like"),
        ("nct_number", "NCT123", "must look like"),
        ("storage", Bilingual("", "Store cold"), r"storage conditions \(fr\) is required"),
        ("clinical_trial_use", Bilingual("Pour essai clinique uniquement", ""), r"\(en\) is required"),
        ("trial_code", "aphp 220672", "not allowed in a label payload"),
        ("software_version", "", "software version is required"),
    ],
)
def test_missing_or_malformed_trial_particulars_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(LabelDataError, match=message):
        make_trial(**{field: value})


@pytest.mark.req("LBL-09")
def test_the_code_must_encode_the_kit_and_day_printed_beside_it() -> None:
    other_kit = build_payload(TRIAL_CODE, KITS[1], "D1", trial_mac)
    with pytest.raises(LabelDataError, match="encodes kit"):
        make_label(KITS[0], "D1", qr_payload=other_kit)
    with pytest.raises(LabelDataError, match="encodes kit"):
        make_label(KITS[0], "D2", qr_payload=build_payload(TRIAL_CODE, KITS[0], "D1", trial_mac))
    other_trial = make_label(KITS[0], qr_payload=build_payload("OTHERTRIAL", KITS[0], "D1", trial_mac))
    with pytest.raises(LabelDataError, match="for trial OTHERTRIAL"):
        _render(LabelKind.OUTER, [other_trial])
    mixed = [
        make_label(KITS[0], "D1"),
        make_label(KITS[1], "D10", qr_payload=build_payload(TRIAL_CODE, KITS[1], "D10", trial_mac)),
    ]
    with pytest.raises(LabelDataError, match="same length"):
        _render(LabelKind.OUTER, mixed)
    with pytest.raises(LabelDataError, match="check digit"):
        dataclasses.replace(make_label(KITS[0]), kit_number="12345672")


@pytest.mark.req("LBL-01")
def test_expiry_is_month_and_four_digit_year() -> None:
    assert Expiry(2027, 3).text == "03/2027"
    for year, month in ((27, 3), (2027, 13), (2027, 0)):
        with pytest.raises(LabelDataError):
            Expiry(year, month)


_ARM_WORDS = {"arm", "arms", "treatment", "group", "active", "placebo", "allocation", "blind", "unblinded"}
_ARM_WORDS |= {"codebreak", "slot", "block", "sequence", "stratum", "real", "lot", "verum"}


@pytest.mark.req("BLD-01", "LBL-03")
@pytest.mark.parametrize(
    "data_type",
    [
        TrialLabelInfo,
        KitLabel,
        DocumentMeta,
        Expiry,
        Bilingual,
        DispensationSheet,
        DispensationRow,
        ElectronicSignature,
    ],
)
def test_input_types_have_no_arm_field(data_type: type) -> None:
    names = [field.name for field in dataclasses.fields(data_type)]
    assert names
    assert not [name for name in names if set(name.split("_")) & _ARM_WORDS], names


@pytest.mark.req("LBL-04", "LBL-06")
def test_the_kit_label_prints_the_power_of_ten_raised_and_leaves_an_unknown_day_to_write_in() -> None:
    """Issue 13: the kit's own label (unit K, printed before the kit has a day) read
    "Jour / Day : K", and the strength "2 x 10^6 UI" kept its caret. The day is a line to write on
    now, and the 6 is printed smaller above the line of text (rendered and looked at)."""
    kit_label = make_label(KITS[0], "K")
    pdf = render_label_sheet(make_trial(), [kit_label], kind=LabelKind.OUTER, document=make_document())
    text = flat(all_text(pdf))
    assert "Jour / Day :" in text and "Day : K" not in text and "Day :K" not in text
    assert "2 x 10 6 UI" in text and "^" not in text

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, object, object]] = []
            self.font: tuple[str, float] = ("", 0.0)

        def setFont(self, font: str, size: float) -> None:
            self.font = (font, size)

        def drawString(self, x: float, y: float, text: str) -> None:
            self.calls.append((text, round(y, 2), self.font[1]))

    canvas = Recorder()
    draw_text(canvas, 0, 100, "2 x 10^6 UI", "Helvetica", 10)
    assert canvas.calls == [("2 x 10", 100, 10), ("6", 104.0, 6.2), (" UI", 100, 10)]
