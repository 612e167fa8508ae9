"""Masking for arm-to-arm comparisons (BLD-02): what legitimately differs between the responses for
two subjects — their own identifiers, document ids, request ids, CSRF tokens, timestamps — is
replaced by placeholders, so that what is left must be identical for an active and a placebo
subject. Shared by tests/web/test_paired_arms.py and the leak crawler (tests/web/test_leak_crawler.py).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pypdf
import pypdfium2 as pdfium
import zxingcpp
from werkzeug.test import TestResponse

# Headers whose value is expected to differ from one request to the next whatever the subject.
VOLATILE_HEADERS = {"X-Request-ID", "Set-Cookie"}


@dataclass
class Subject:
    """What the test knows about one randomized subject (the arm is for the test's eyes only)."""

    screening_number: str
    subject_number: str = ""
    randomization_number: str = ""
    arm: str = ""
    kits: dict[str, str] = field(default_factory=dict)  # day -> 8-digit kit number
    kit_labels: dict[str, str] = field(default_factory=dict)  # day -> QR payload of the kit's own label
    payloads: dict[str, str] = field(default_factory=dict)  # day -> QR payload of the sheet's syringe label
    # Further (value, placeholder) pairs, masked first: e.g. replaced kits and their payloads.
    extra: list[tuple[str, str]] = field(default_factory=list)

    def identifiers(self) -> list[tuple[str, str]]:
        """(value, placeholder), longest and most specific first."""
        pairs: list[tuple[str, str]] = list(self.extra)
        for day, payload in self.payloads.items():
            pairs.append((payload, f"<PAYLOAD-{day}>"))
        for day, payload in self.kit_labels.items():
            pairs.append((payload, f"<KITLABEL-{day}>"))
        pairs += [
            (self.randomization_number, "<RANDOMIZATION-NUMBER>"),
            (self.screening_number, "<SCREENING-NUMBER>"),
            (self.subject_number, "<SUBJECT-NUMBER>"),
        ]
        for day, number in self.kits.items():
            pairs.append((f"{number[:4]}-{number[4:]}", f"<KIT-{day}>"))
            pairs.append((number, f"<KIT-{day}>"))
        return pairs


GENERIC_MASKS = [
    (re.compile(r'(name="csrf_token" value=")[^"]+"'), r'\1<CSRF>"'),
    (re.compile(r"\b(?:RAND|DISP|LBL|CBDOC)-[A-Z0-9-]*\d{4,}\b"), "<DOCUMENT-ID>"),
    (re.compile(r'("instance":\s*")[^"]*"'), r'\1<REQUEST-ID>"'),
    (
        re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}| UTC)?"),
        "<TIME>",
    ),
    (re.compile(r"D:\d{14}[+-]\d{2}'\d{2}'"), "<PDF-TIME>"),
    # Moments as the pages show them (issue 13): the site's time in the reader's language, UTC beside.
    (
        re.compile(
            r"(?:[A-Z][a-z]{2,3} \d{1,2}, \d{4}|\d{1,2} [a-zéû]+\.? \d{4}), \d{2}:\d{2}"
            r"(?: \((?:[A-Z][a-z]{2,3} \d{1,2}|\d{1,2} [a-zéû]+\.?), \d{2}:\d{2} UTC\)| \(\d{2}:\d{2} UTC\))?"
        ),
        "<TIME>",
    ),
]


def mask(text: str, subject: Subject, response: TestResponse | None = None) -> str:
    """`text` with the subject's identifiers, and the response's own request id, replaced."""
    extra = [(response.headers.get("X-Request-ID", ""), "<REQUEST-ID>")] if response is not None else []
    for value, placeholder in [*extra, *subject.identifiers()]:
        if value:
            text = text.replace(value, placeholder)
    for pattern, replacement in GENERIC_MASKS:
        text = pattern.sub(replacement, text)
    return text


def key_shape(value: object) -> object:
    """The keys of a JSON document, recursively (lists keep their length)."""
    if isinstance(value, Mapping):
        return {k: key_shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [key_shape(v) for v in value]
    return type(value).__name__


def assert_same_response(what: str, a: TestResponse, b: TestResponse, sa: Subject, sb: Subject) -> None:
    """Status, header names and masked values, and the masked body (raw length too, except for
    HTML pages holding a CSRF token, whose length is the framework's business)."""
    assert (a.status_code, a.mimetype) == (b.status_code, b.mimetype), what
    assert sorted(a.headers.keys()) == sorted(b.headers.keys()), what
    for name, value in a.headers.items():
        if name in VOLATILE_HEADERS:
            continue
        assert mask(value, sa) == mask(b.headers.get(name, ""), sb), f"{what}: header {name}"
    assert len(a.headers["X-Request-ID"]) == len(b.headers["X-Request-ID"]), what
    body_a, body_b = a.get_data(), b.get_data()
    if a.mimetype == "application/pdf":
        # Both the confirmation and the sheet are written uncompressed (compress=False in
        # kits/confirmation.py and kits/sheet.py), in standard Type-1 fonts whose digits share one
        # width, with fixed-length identifiers and fixed-length QR drawings: equal lengths are
        # expected, byte for byte. (A compressed stream would need a tolerance: deflate output
        # length depends on the digits it compresses.)
        assert len(body_a) == len(body_b), f"{what}: PDF byte length {len(body_a)} != {len(body_b)}"
        return
    text_a, text_b = body_a.decode(), body_b.decode()
    if a.is_json:
        assert key_shape(a.json) == key_shape(b.json), f"{what}: JSON keys"
    assert mask(text_a, sa, a) == mask(text_b, sb, b), what
    unmasked = GENERIC_MASKS[0][0]
    assert len(unmasked.sub("<CSRF>", text_a)) == len(unmasked.sub("<CSRF>", text_b)), f"{what}: length"


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def pdf_fingerprint(pdf: bytes) -> dict[str, object]:
    """What a PDF is made of besides its text: pages, fonts, images and other objects, metadata."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts, xobjects = [], []
    for page in reader.pages:
        resources = page.get("/Resources") or {}
        fonts.append(
            sorted(str(f.get_object().get("/BaseFont")) for f in (resources.get("/Font") or {}).values())
        )
        xobjects.append(
            sorted(str(x.get_object().get("/Subtype")) for x in (resources.get("/XObject") or {}).values())
        )
    return {
        "pages": len(reader.pages),
        "fonts": fonts,
        "xobjects": xobjects,
        "metadata_keys": sorted((reader.metadata or {}).keys()),
        "attachments": sorted(reader.attachments),
        "outline": len(reader.outline),
    }


def decoded_qr(pdf: bytes) -> list[tuple[str, str]]:
    """(text, error-correction level) of every QR code of every page, rendered at scale 3."""
    document = pdfium.PdfDocument(pdf)
    try:
        images = [document[i].render(scale=3, grayscale=True).to_pil() for i in range(len(document))]
    finally:
        document.close()
    return [
        (code.text, code.ec_level)
        for image in images
        for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    ]
