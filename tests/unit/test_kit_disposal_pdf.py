"""The return form and the destruction certificate (issue 19) as documents: every kit listed across
pages, each continuation page naming its record, the closing block kept together, the same bytes
for the same input, nothing that names an arm."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import kits as kitlib
from allocator.printing import kit_disposal
from kits.numbers import generate_kit_numbers
from tests.unit.kits.kits_testdata import flat, page_count, page_texts

AT = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)


def document(kind: str, count: int) -> kit_disposal.DisposalDocument:
    numbers = sorted(generate_kit_numbers(count))
    conditions = ("used", "unused", "damaged", "expired")
    return kit_disposal.DisposalDocument(
        kind=kind,
        trial_code="IFNG-PAIS",
        site_code="P1",
        number="DES-P1-0007" if kind == "destruction" else "RET-P1-0007",
        recorded_at=AT,
        recorded_by="Pharm P1",
        method="incineration",
        witness=None,
        kits=tuple((n, conditions[i % 4]) for i, n in enumerate(numbers)),
        signature_lines=("Signé électroniquement par Pharm P1", "Signed electronically by Pharm P1")
        if kind == "destruction"
        else (),
        test_mode=False,
        software_version="0.1.0",
        document=kitlib.DocumentMeta(document_id="DES-IFNG-PAIS-000009", created_at=AT),
    )


def test_a_long_certificate_lists_every_kit_and_names_its_record_on_every_page() -> None:
    doc = document("destruction", 200)
    pdf = kit_disposal.render(doc)
    assert pdf == kit_disposal.render(doc)  # deterministic
    pages = page_texts(pdf)
    assert page_count(pdf) == len(pages) >= 2
    for text in pages:
        assert "DES-P1-0007" in flat(text) and "Kit destruction certificate" in flat(text)
    whole = flat(" ".join(pages))
    for number, _ in doc.kits:
        assert kitlib.format_kit_number(number) in whole
    last = flat(pages[-1])
    assert "Electronic signature" in last and "Signed electronically by Pharm P1" in last
    assert "aucun / none" in whole  # no witness, said so
    assert not re.search(r"(?i)placebo|interf[eé]ron|\barms?\b|\bbras\b|\blot\b", whole)


def test_a_return_form_has_the_depot_receipt_and_no_signature() -> None:
    text = flat(" ".join(page_texts(kit_disposal.render(document("return", 4)))))
    assert "Kit return form" in text and "Receipt at the depot" in text
    assert "Electronic signature" not in text and "Witness" not in text
