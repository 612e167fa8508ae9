"""H1, the blind-leak checks (BLD-01, BLD-07, BLD-10, BLD-14, UNB-05, UNB-08): look for an arm in
anything a blinded user can receive — an HTML page (text, markup, attributes, comments, embedded
images), JSON, CSV, a header (file names and redirect targets included), a PDF (text by two
extractors, Info and XMP metadata, attachments, annotations, outlines, scripts, optional-content
layers, and every barcode on every rendered page), a barcode payload, an e-mail or a log line.

What counts as an arm:

* arm LABELS and PRODUCT words, anywhere: taken from the trial definition (each arm's label and
  product, and a product's bracketed short name such as "(Imukin)") plus a fixed list of product
  words (`PRODUCT_WORDS`). Matched case-insensitively as whole words (a letter or digit on either
  side does not match: "IFNG-PAIS", the trial code, is not "IFN").
* arm CODES ("A", "B") only where a code denotes an arm, since "A" is ordinary English: alone in an
  HTML element or attribute value, alone on a PDF or e-mail line, as a JSON string value, as a CSV
  cell, as a field of a barcode payload or a file name, as a query value, and after a word such as
  "arm", "group" or "treatment" in running text. Keys and column names that name an arm
  ("arm", "treatment", "allocation") are findings whatever their value (BLD-06: a blinded JSON has
  no arm key at all).

Some texts of the trial definition legitimately contain product words and are shown identically
to everyone, whatever the subject's arm (the registered title names both treatments; every label
names the blinded product "interferon gamma-1b or placebo"). They are the documented exceptions
(`AllowedPhrase`, each with its reason): removed before searching, as whole phrases only, so that
the same word anywhere else is still found.

The module is pure: it takes bytes and strings and returns `Finding`s; the crawler
(tests/web/crawler.py) decides which role and route each text came from.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import parse_qsl, unquote, urlsplit

import pypdf
import pypdfium2 as pdfium
import zxingcpp
from PIL import Image, ImageDraw

from allocator.trialdef import TrialDefinition

# The product vocabulary of the brief and of requirements.md (H1), beyond what the definition says.
PRODUCT_WORDS = (
    "interferon",
    "interféron",
    "gamma",
    "γ",
    "IFN",
    "Imukin",
    "placebo",
    "saline",
    "NaCl",
    "chlorure",
    "chlorure de sodium",
    "sodium chloride",
    "sérum physiologique",
    "verum",
)
# Pages of a PDF rendered to look for codes: reports that list events run to hundreds of pages of
# text (all of it checked), but codes are printed on labels and sheets, a few pages at most.
BARCODE_PAGES = 12
# Words after which an arm code denotes an arm in running text ("arm A", "groupe B", "treatment: A").
ARM_CONTEXT = (
    "arm",
    "arms",
    "group",
    "groupe",
    "treatment",
    "traitement",
    "allocation",
    "allocated to",
    "bras",
)
# Tokens of a key, column, attribute or parameter name that name an arm.
ARM_KEY_TOKENS = frozenset({"arm", "arms", "treatment", "treatments", "allocation", "bras", "traitement"})

_LETTER = "0-9A-Za-zÀ-ÖØ-öø-ÿ"
_SPACES = re.compile(r"\s+")
_KEY_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class Finding:
    """One suspected leak: where it was found, through which channel, what matched, and context."""

    where: str
    channel: str  # html-text, html-markup, json, csv, header, pdf-text, pdf-metadata, barcode, email, log...
    what: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where} [{self.channel}] {self.what}: …{self.excerpt}…"


@dataclass(frozen=True)
class AllowedPhrase:
    """A text that contains a product word yet reveals no arm: shown identically for every subject."""

    phrase: str
    reason: str


def normalise(text: str) -> str:
    """One space for any run of white space, straight apostrophes (extractors and templates differ)."""
    return _SPACES.sub(" ", text.replace("\u2019", "'").replace("\u00a0", " ")).strip()


@lru_cache(maxsize=1 << 16)
def key_tokens(name: str) -> frozenset[str]:
    """The lower-case words of an identifier: "armCode", "arm_code", "data-arm" → {"arm", "code"}.
    Remembered: a crawl asks a million times about far fewer names."""
    return frozenset(t for t in _KEY_SPLIT.split(_CAMEL.sub("_", name).lower()) if t)


@dataclass
class Vocabulary:
    """What is searched for, and the documented exceptions, for one trial."""

    arm_codes: tuple[str, ...]
    words: tuple[str, ...]
    allowed: tuple[AllowedPhrase, ...]
    _words_re: re.Pattern[str] = field(init=False, repr=False)
    _allowed_re: re.Pattern[str] | None = field(init=False, repr=False)
    _context_re: re.Pattern[str] = field(init=False, repr=False)
    _alone_line_re: re.Pattern[str] = field(init=False, repr=False)
    # What `hits` found in each short text already searched: a crawl meets the same attribute
    # values, JSON keys, cells and headers thousands of times (1.4 million searches, about a tenth
    # of the crawl's time under cProfile, for far fewer distinct texts).
    _hits: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        def phrase(text: str) -> str:
            return r"\s+".join(re.escape(part) for part in normalise(text).split(" "))

        ordered = sorted({normalise(w) for w in self.words if w.strip()}, key=len, reverse=True)
        self._words_re = re.compile(
            rf"(?<![{_LETTER}])(?:{'|'.join(phrase(w) for w in ordered)})(?![{_LETTER}])", re.IGNORECASE
        )
        allowed = sorted({normalise(a.phrase) for a in self.allowed}, key=len, reverse=True)
        self._allowed_re = (
            re.compile("|".join(phrase(a) for a in allowed), re.IGNORECASE) if allowed else None
        )
        codes = "|".join(re.escape(c) for c in self.arm_codes)
        context = "|".join(phrase(w) for w in ARM_CONTEXT)
        # "arm A", "Arm: B", "groupe B", and JSON or Python text: "arm": "A", 'arm'='B'
        self._context_re = re.compile(
            rf"(?i:(?<![{_LETTER}])(?:{context}))[\"']?\s*[:=#\-–]?\s*[\"'«(]?\s*(?:{codes})(?![{_LETTER}])(?!-[{_LETTER}])"
        )
        self._alone_line_re = re.compile(rf"(?m)^[ \t\"'«(]*(?:{codes})[ \t\"'».,;:)]*$")

    @classmethod
    def of(cls, definition: TrialDefinition, extra: Sequence[AllowedPhrase] = ()) -> Vocabulary:
        """Arm labels and products of `definition` plus `PRODUCT_WORDS`; its blinded texts that
        mention a product, and `extra`, as the documented exceptions."""
        words: list[str] = list(PRODUCT_WORDS)
        for arm in definition.arms:
            words += [arm.label, arm.product]
            words += re.findall(r"\(([^()]{3,40})\)", arm.product)  # "(Imukin)", "(saline)"
        probe = Vocabulary(tuple(a.code for a in definition.arms), tuple(words), ())
        candidates: list[tuple[str, str]] = [
            (definition.title, "the registered public title of the trial names both compared treatments"),
            (definition.short_title, "the trial's short title names the studied product"),
            (definition.design, "the registered design ('placebo-controlled') describes the whole trial"),
        ]
        for texts in (definition.labels.fr, definition.labels.en):
            # As printed too: 10^6 is drawn with a raised 6 (issue 13), which text extractors read
            # as "106" or "10 6".
            for printed in {
                texts.product_name,
                re.sub(r"(?<=10)\^(\d{1,2})", r"\1", texts.product_name),
                re.sub(r"(?<=10)\^(\d{1,2})", r" \1", texts.product_name),
            }:
                candidates.append(
                    (
                        printed,
                        "the blinded product name printed on every label names both possibilities "
                        "(CTR Annex VI), identically for both arms",
                    )
                )
        for kit_type in definition.kit_types:
            candidates.append(
                (kit_type.description, "the kit type names both possibilities and says they look identical")
            )
        for criterion in definition.eligibility:
            reason = (
                f"eligibility criterion {criterion.id!r} is asked of every patient before randomization "
                "(an exclusion for a contraindication to the product, not the product given)"
            )
            candidates += [(criterion.label.en, reason), (criterion.label.fr, reason), (criterion.id, reason)]
        for item in definition.unconfirmed:
            candidates.append(
                (item.note, "a note on the trial definition shown on the trial page, the same for everyone")
            )
        allowed = tuple(AllowedPhrase(text, reason) for text, reason in candidates if probe.words_in(text))
        return cls(probe.arm_codes, probe.words, allowed + tuple(extra))

    # --- primitives -------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """`text` normalised, with every allowed phrase removed."""
        text = normalise(text)
        return self._allowed_re.sub(" ⟦allowed⟧ ", text) if self._allowed_re else text

    def words_in(self, text: str) -> list[tuple[str, str]]:
        """(matched word, excerpt) of every arm label or product word outside the allowed phrases."""
        scrubbed = self.scrub(text)
        return [
            (m.group(0), _excerpt(scrubbed, m.start(), m.end())) for m in self._words_re.finditer(scrubbed)
        ]

    def codes_in_context(self, text: str) -> list[tuple[str, str]]:
        """(match, excerpt) of an arm code after an arm word ("arm A", "treatment: B")."""
        flat = normalise(text)
        return [(m.group(0), _excerpt(flat, m.start(), m.end())) for m in self._context_re.finditer(flat)]

    def hits(self, text: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
        """`words_in` and `codes_in_context` of `text`, remembered for a short text (a pure function
        of the text: the same answer, searched once)."""
        known = self._hits.get(text)
        if known is not None:
            return known
        found = (tuple(self.words_in(text)), tuple(self.codes_in_context(text)))
        if len(text) <= _REMEMBERED:
            self._hits[text] = found
        return found

    def codes_alone_on_a_line(self, text: str) -> list[str]:
        return [m.group(0).strip() for m in self._alone_line_re.finditer(text)]

    def is_code(self, value: str) -> bool:
        return value.strip() in self.arm_codes


_REMEMBERED = 512  # longer texts (a page's whole text, a PDF's) are met once


def _excerpt(text: str, start: int, end: int, width: int = 60) -> str:
    return text[max(0, start - width) : end + width]


# --- HTML ------------------------------------------------------------------------------------


class ParsedPage(HTMLParser):
    """Text nodes (with the element holding them), attributes, comments, links and GET forms."""

    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
    )

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.texts: list[tuple[str, str]] = []  # (element, text)
        self.attributes: list[tuple[str, str, str]] = []  # (element, name, value)
        self.comments: list[str] = []
        self.links: list[str] = []
        self.forms: list[Form] = []
        self.images: list[str] = []
        self._form: Form | None = None
        self._select: str | None = None
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name, value in values.items():
            self.attributes.append((tag, name, value))
        if tag in ("a", "link") and values.get("href"):
            self.links.append(values["href"])
        if tag == "img" and values.get("src"):
            self.images.append(values["src"])
        if tag == "script" and values.get("src"):
            self.links.append(values["src"])
        if tag == "form":
            self._form = Form(values.get("action", ""), values.get("method", "get").lower())
            self.forms.append(self._form)
        elif self._form is not None and tag in ("input", "select", "textarea", "button"):
            name = values.get("name")
            kind = values.get("type", "text").lower()
            if tag == "select":
                self._select = name
            elif name and kind not in ("submit", "button", "image", "reset", "file"):
                if kind in ("checkbox", "radio") and "checked" not in values:
                    pass
                else:
                    self._form.fields.setdefault(name, values.get("value", ""))
        elif tag == "option" and self._form is not None and self._select:
            self._form.fields.setdefault(self._select, values.get("value", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        if tag == "select":
            self._select = None
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.texts.append((self.stack[-1] if self.stack else "", data))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=8)
def parse_html(markup: str) -> ParsedPage:
    """The parsed page, kept for the few latest pages: the leak checker and the crawler's link
    finder both parse every page the crawl receives (the SQLite crawl's set-up took 139 s parsing
    twice, 133 s once). Callers only read a ParsedPage."""
    return ParsedPage(markup)


# --- barcodes --------------------------------------------------------------------------------

_SVG_PATH = re.compile(r'<path[^>]*\sd="([^"]+)"', re.IGNORECASE)
_SVG_RECT = re.compile(r"<rect([^>]*)/?>", re.IGNORECASE)
_SVG_VIEWBOX = re.compile(r'viewBox="([-\d.\s]+)"', re.IGNORECASE)
_PATH_TOKEN = re.compile(r"[MmHhVvLlZz]|-?\d*\.?\d+(?:e-?\d+)?")


def rasterise_svg(svg: str, size: int = 600) -> Image.Image:
    """A bitmap of the filled paths and rectangles of an SVG — enough for the QR codes this
    application draws (qrcode's SvgPathImage: one path of squares); charts come out as shapes."""
    box = _SVG_VIEWBOX.search(svg)
    x0, y0, width, height = (float(v) for v in box.group(1).split()) if box else (0.0, 0.0, 100.0, 100.0)
    scale = size / max(width, height)
    margin = 40
    image = Image.new("L", (int(width * scale) + 2 * margin, int(height * scale) + 2 * margin), 255)
    draw = ImageDraw.Draw(image)

    def point(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) * scale + margin, (y - y0) * scale + margin)

    for d in _SVG_PATH.findall(svg):
        tokens = _PATH_TOKEN.findall(d)
        polygon: list[tuple[float, float]] = []
        x = y = 0.0
        command = "M"
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token in "MmHhVvLlZz":
                command = token
                i += 1
                if command in "Zz":
                    if len(polygon) > 2:
                        draw.polygon([point(*p) for p in polygon], fill=0)
                    polygon = [(x, y)]
                continue
            if command in "MmLl":
                dx, dy = float(tokens[i]), float(tokens[i + 1])
                i += 2
                x, y = (x + dx, y + dy) if command.islower() else (dx, dy)
                if command in "Mm":
                    if len(polygon) > 2:
                        draw.polygon([point(*p) for p in polygon], fill=0)
                    polygon = []
                    command = "l" if command == "m" else "L"
            elif command in "Hh":
                value = float(tokens[i])
                i += 1
                x = x + value if command == "h" else value
            elif command in "Vv":
                value = float(tokens[i])
                i += 1
                y = y + value if command == "v" else value
            else:  # an unsupported command (curves): skip its number
                i += 1
            polygon.append((x, y))
        if len(polygon) > 2:
            draw.polygon([point(*p) for p in polygon], fill=0)
    for attributes in _SVG_RECT.findall(svg):
        values = dict(re.findall(r'(\w+)="([-\d.]+)"', attributes))
        if {"width", "height"} <= values.keys() and 'fill="none"' not in attributes:
            rx, ry = float(values.get("x", 0)), float(values.get("y", 0))
            left, top = point(rx, ry)
            right, bottom = point(rx + float(values["width"]), ry + float(values["height"]))
            if right - left < image.width - 2 * margin:  # not the background
                draw.rectangle([left, top, right, bottom], fill=0)
    return image


def read_barcodes(image: Image.Image) -> list[str]:
    """Every two-dimensional code (QR, micro QR, Data Matrix, Aztec, PDF417, MaxiCode) zxing-cpp
    finds in `image`. Linear barcodes carry too little to matter and would double the time."""
    return [code.text for code in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.AllMatrix)]


def data_uri(uri: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of a data: URI, or None."""
    match = re.fullmatch(r"data:([\w/+.-]+)?(;base64)?,(.*)", uri, re.DOTALL)
    if not match:
        return None
    raw = match.group(3)
    return match.group(1) or "text/plain", base64.b64decode(raw) if match.group(2) else unquote(raw).encode()


# --- the checker -----------------------------------------------------------------------------


@dataclass
class Seen:
    """Counters for the crawl summary."""

    documents: dict[str, int] = field(default_factory=dict)  # by kind: html, json, csv, pdf, ...
    pdf_pages: int = 0
    pages_not_scanned: int = 0  # for codes: beyond BARCODE_PAGES
    barcodes: list[str] = field(default_factory=list)

    def count(self, kind: str) -> None:
        self.documents[kind] = self.documents.get(kind, 0) + 1


class LeakChecker:
    """Checks every kind of output for arms; each method returns the findings (empty: clean)."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self.seen = Seen()

    # --- text ---------------------------------------------------------------------------------

    def text(self, where: str, text: str, channel: str) -> list[Finding]:
        """Free text: arm labels and product words anywhere, arm codes after an arm word."""
        words, contexts = self.vocabulary.hits(text)
        found = [Finding(where, channel, f"product or arm word {w!r}", e) for w, e in words]
        found += [Finding(where, channel, f"arm code in context {m!r}", e) for m, e in contexts]
        return found

    def lines(self, where: str, text: str, channel: str) -> list[Finding]:
        """Text laid out in lines (PDF, e-mail): also an arm code alone on a line."""
        found = self.text(where, text, channel)
        found += [
            Finding(where, channel, f"arm code {c!r} alone on a line", c)
            for c in self.vocabulary.codes_alone_on_a_line(text)
        ]
        return found

    def name(self, where: str, name: str, channel: str) -> list[Finding]:
        """A key, column, attribute or parameter name that names an arm."""
        hit = key_tokens(name) & ARM_KEY_TOKENS
        return [Finding(where, channel, f"name {name!r} names an arm", name)] if hit else []

    def value(self, where: str, value: str, channel: str) -> list[Finding]:
        """A structured value (JSON string, CSV cell, attribute, payload field): an arm code as the
        whole value, or arm words inside it."""
        found = self.text(where, value, channel)
        if self.vocabulary.is_code(value):
            found.append(Finding(where, channel, f"arm code {value.strip()!r} as a value", value))
        return found

    # --- structured documents ---------------------------------------------------------------

    def json_value(self, where: str, value: object, channel: str = "json", path: str = "$") -> list[Finding]:
        found: list[Finding] = []
        if isinstance(value, Mapping):
            for raw, item in value.items():
                key = str(raw)
                found += self.name(f"{where} {path}", key, f"{channel}-key")
                found += self.text(f"{where} {path}", key, f"{channel}-key")
                found += self.json_value(where, item, channel, f"{path}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                found += self.json_value(where, item, channel, f"{path}[{index}]")
        elif isinstance(value, str):
            found += self.value(f"{where} {path}", value, channel)
            embedded = _embedded_json(value)
            if embedded is not None:
                found += self.json_value(where, embedded, channel, f"{path}<json>")
        return found

    def json_text(self, where: str, text: str) -> list[Finding]:
        self.seen.count("json")
        try:
            document = json.loads(text)
        except ValueError:
            return [Finding(where, "json", "unparseable JSON", text[:120]), *self.text(where, text, "json")]
        return self.json_value(where, document)

    def csv_text(self, where: str, text: str) -> list[Finding]:
        self.seen.count("csv")
        rows = list(csv.reader(io.StringIO(text)))
        found: list[Finding] = []
        for index, row in enumerate(rows):
            for column, cell in enumerate(row):
                cell_where = f"{where} row {index + 1} col {column + 1}"
                if index == 0:
                    found += self.name(cell_where, cell, "csv-header")
                found += self.value(cell_where, cell, "csv")
                embedded = _embedded_json(cell)
                if embedded is not None:
                    found += self.json_value(cell_where, embedded, "csv-json")
        return found

    def html(self, where: str, markup: str) -> list[Finding]:
        """Visible text, every attribute (names and values), comments, scripts, and the images
        embedded as data: URIs (their text, and the barcodes in them)."""
        self.seen.count("html")
        page = parse_html(markup)
        found = self.text(where, " ".join(text for _, text in page.texts), "html-text")
        for element, text in page.texts:
            if self.vocabulary.is_code(text):
                found.append(
                    Finding(where, "html-element", f"arm code {text.strip()!r} alone in <{element}>", text)
                )
            embedded = _embedded_json(text)
            if embedded is not None:  # e.g. audit values shown as <code>{"kit": ...}</code>
                found += self.json_value(f"{where} <{element}>", embedded, "html-json")
        for element, name, value in page.attributes:
            at = f"{where} <{element} {name}>"
            found += self.name(at, name, "html-attribute")
            if name in ("src", "href") and value.startswith("data:"):
                found += self.embedded(at, value)
                continue
            found += self.value(at, html.unescape(value), "html-attribute")
        for comment in page.comments:
            found += self.text(where, comment, "html-comment")
        return found

    def embedded(self, where: str, uri: str) -> list[Finding]:
        """An image embedded in a page: SVG text and barcodes, raster barcodes."""
        decoded = data_uri(uri)
        if decoded is None:
            return []
        media, data = decoded
        self.seen.count(f"embedded {media}")
        found: list[Finding] = []
        if media == "image/svg+xml":
            svg = data.decode("utf-8", "replace")
            found += self.text(where, re.sub(r"<[^>]+>", " ", svg), "svg-text")
            image = rasterise_svg(svg)
        elif media.startswith("image/"):
            image = Image.open(io.BytesIO(data))
        else:
            return self.text(where, data.decode("utf-8", "replace"), "data-uri")
        for payload in read_barcodes(image):
            found += self.barcode(where, payload)
        return found

    def barcode(self, where: str, payload: str) -> list[Finding]:
        """A decoded barcode: words anywhere, an arm code as one of its fields, an arm-named field."""
        self.seen.barcodes.append(payload)
        found = self.text(where, payload, "barcode")
        parts = urlsplit(payload) if "://" in payload else None
        fields = re.split(r"[/|;,&?=:#\s]+", payload)
        for item in fields:
            if self.vocabulary.is_code(item):
                found.append(Finding(where, "barcode", f"arm code {item!r} as a payload field", payload))
        if parts is not None:
            for name, value in parse_qsl(parts.query):
                found += self.name(where, name, "barcode")
                found += self.value(where, value, "barcode")
        return found

    def headers(self, where: str, headers: Iterable[tuple[str, str]]) -> list[Finding]:
        """Every header; the file name of Content-Disposition and the target of Location as
        structured values."""
        found: list[Finding] = []
        for name, value in headers:
            at = f"{where} header {name}"
            found += self.name(at, name, "header")
            lowered = name.lower()
            if lowered == "set-cookie":
                found += self.set_cookie(at, value)
                continue
            found += self.text(at, unquote(value), "header")
            if lowered == "content-disposition":
                match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", value)
                if match:
                    found += self.file_name(at, unquote(match.group(1)))
            elif lowered == "location":
                found += self.url(at, value)
        return found

    def set_cookie(self, where: str, header: str) -> list[Finding]:
        """A Set-Cookie header: the cookie's name and attributes as text; its value decoded where it
        has a structure the browser can read (Flask's session cookie is signed, not encrypted: its
        JSON, flash messages included, is checked as JSON), plain text searched as a value, and an
        random token of the one shape the service issues (the device cookie, `OPAQUE_TOKEN`) not
        searched at all: random base64 holds a product word such as "-IFN_" now and then, about
        one crawl in a hundred. Any other value is searched, however long."""
        name, _, rest = header.partition("=")
        value, _, attributes = rest.partition(";")
        found = self.name(where, name, "cookie") + self.text(where, f"{name}; {attributes}", "cookie")
        payload = _session_payload(value.strip().strip('"'))
        if payload is not None:
            found += self.json_value(where, payload, "cookie-json")
        elif not OPAQUE_TOKEN.fullmatch(value.strip()):
            found += self.value(where, unquote(value), "cookie")
        return found

    def file_name(self, where: str, name: str) -> list[Finding]:
        found: list[Finding] = []
        for token in re.split(r"[-_. ]+", name):
            if self.vocabulary.is_code(token):
                found.append(Finding(where, "file-name", f"arm code {token!r} in a file name", name))
        return found + self.text(where, name.replace("_", " ").replace("-", " "), "file-name")

    def url(self, where: str, target: str) -> list[Finding]:
        """A URL (redirect target, link): query names and values, path segments (BLD-14: nothing
        arm-related in URLs)."""
        parts = urlsplit(target)
        found = self.text(where, unquote(target).replace("_", " "), "url")
        for segment in parts.path.split("/"):
            if self.vocabulary.is_code(unquote(segment)):
                found.append(Finding(where, "url", f"arm code {segment!r} as a path segment", target))
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            found += self.name(where, name, "url")
            if self.vocabulary.is_code(value):
                found.append(Finding(where, "url", f"arm code {value!r} as a query value", target))
        return found

    def pdf(self, where: str, data: bytes) -> list[Finding]:
        """Text of every page (pdfium, which also returns invisible text), metadata (Info and XMP),
        attachments, annotations, outline, scripts, optional-content layers and forms (pypdf); then
        every two-dimensional code of every page rendered at 144 dpi."""
        self.seen.count("pdf")
        found: list[Finding] = []
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
        except Exception as exc:
            return [Finding(where, "pdf", f"unreadable PDF ({type(exc).__name__})", repr(data[:60]))]
        self.seen.pdf_pages += len(reader.pages)
        for key, value in (reader.metadata or {}).items():
            found += self.name(f"{where} metadata {key}", str(key), "pdf-metadata")
            found += self.value(f"{where} metadata {key}", str(value), "pdf-metadata")
        root = reader.trailer["/Root"]
        xmp = root.get("/Metadata")
        if xmp is not None:
            raw = xmp.get_object().get_data().decode("utf-8", "replace")
            found += self.text(f"{where} XMP", re.sub(r"<[^>]+>", " ", raw), "pdf-metadata")
        for name, contents in reader.attachments.items():
            found.append(
                Finding(where, "pdf-attachment", f"embedded file {name!r} (LBL-10: none allowed)", name)
            )
            for content in contents:
                found += self.text(
                    f"{where} attachment {name}", content.decode("utf-8", "replace"), "pdf-attachment"
                )
        names = root.get("/Names")
        names = names.get_object() if names is not None else {}
        for key, why in (
            ("/JavaScript", "document JavaScript"),
            ("/EmbeddedFiles", "embedded files"),
        ):
            if key in names:
                found.append(Finding(where, "pdf-structure", f"{why} present (LBL-10)", key))
        for key, why in (
            ("/OCProperties", "optional-content (hidden) layers"),
            ("/OpenAction", "an open action"),
            ("/AA", "additional actions"),
            ("/AcroForm", "form fields"),
        ):
            if key in root:
                found.append(Finding(where, "pdf-structure", f"{why} present (LBL-10)", key))
        for index, page in enumerate(reader.pages):
            for reference in page.get("/Annots") or []:
                annotation = reference.get_object()
                for key in ("/Contents", "/T", "/TU", "/V"):
                    if key in annotation:
                        found += self.text(
                            f"{where} p{index + 1} annotation", str(annotation[key]), "pdf-annotation"
                        )
        found += self._outline(where, reader.outline)
        document = pdfium.PdfDocument(data)
        try:
            for index in range(len(document)):
                page = document[index]
                textpage = page.get_textpage()
                found += self.lines(f"{where} p{index + 1}", textpage.get_text_range(), "pdf-text")
                textpage.close()
                if index < BARCODE_PAGES:
                    image = page.render(scale=2, grayscale=True).to_pil()
                    for payload in read_barcodes(image):
                        found += self.barcode(f"{where} p{index + 1}", payload)
                else:
                    self.seen.pages_not_scanned += 1
                page.close()
        finally:
            document.close()
        return _dedupe(found)

    def _outline(self, where: str, outline: Sequence[object]) -> list[Finding]:
        found: list[Finding] = []
        for item in outline:
            if isinstance(item, list):
                found += self._outline(where, item)
            else:
                found += self.text(f"{where} outline", str(getattr(item, "title", item)), "pdf-outline")
        return found

    def email(self, where: str, message: EmailMessage) -> list[Finding]:
        self.seen.count("email")
        found: list[Finding] = []
        for name, value in message.items():
            found += self.text(f"{where} header {name}", str(value), "email-header")
        for part in message.walk():
            if part.is_multipart():
                continue
            name = part.get_filename()
            if name:
                found += self.file_name(where, name)
            content = part.get_content()
            text = content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")
            found += self.lines(where, text, "email-body")
        return found

    def log_line(self, where: str, line: str) -> list[Finding]:
        """A log line: the allocator's JSON lines are checked as JSON (keys and values)."""
        self.seen.count("log")
        document = _embedded_json(line)
        if document is not None:
            return self.json_value(where, document, "log")
        return self.lines(where, line, "log")

    def zip(self, where: str, data: bytes) -> list[Finding]:
        """Every member of a ZIP (an export and its manifest), by its file name's type."""
        self.seen.count("zip")
        types = {
            ".xml": "application/xml",
            ".json": "application/json",
            ".csv": "text/csv",
            ".pdf": "application/pdf",
        }
        findings: list[Finding] = []
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                findings += self.file_name(f"{where} {name}", name)
                kind = types.get(name[name.rfind(".") :].lower(), "text/plain")
                findings += self.body(f"{where} {name}", kind, archive.read(name))
        return findings

    def body(self, where: str, mimetype: str, data: bytes) -> list[Finding]:
        """A response body, by media type."""
        if mimetype == "application/pdf" or data.startswith(b"%PDF"):
            return self.pdf(where, data)
        if mimetype == "application/zip" or data.startswith(b"PK\x03\x04"):
            return self.zip(where, data)
        text = data.decode("utf-8", "replace")
        if mimetype in ("application/xml", "text/xml"):
            self.seen.count("xml")
            return self.html(where, text)  # elements, attributes and text, as for a page
        if mimetype == "text/html":
            return self.html(where, text)
        if mimetype.endswith("json"):
            return self.json_text(where, text)
        if mimetype == "text/csv":
            return self.csv_text(where, text)
        if mimetype.startswith("image/"):
            self.seen.count(mimetype)
            return [f for p in read_barcodes(Image.open(io.BytesIO(data))) for f in self.barcode(where, p)]
        self.seen.count(mimetype or "other")
        return self.lines(where, text, mimetype or "body")


# The device cookie (crypto.device_cookie): version, key id, 18 random bytes, a SHA-256 MAC.
OPAQUE_TOKEN = re.compile(r"v1\.[A-Za-z0-9-]{1,40}\.[A-Za-z0-9_-]{24}\.[A-Za-z0-9_-]{43}")


def _session_payload(value: str) -> object | None:
    """The JSON inside a Flask (itsdangerous) session cookie, `[.]<base64url payload>.<time>.<sig>`
    with a leading dot when the payload is zlib-compressed; None for any other value."""
    compressed = value.startswith(".")
    parts = value.lstrip(".").split(".")
    if len(parts) != 3:
        return None
    try:
        data = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        if compressed:
            data = zlib.decompress(data)
        return json.loads(data)
    except (ValueError, zlib.error):
        return None


def _embedded_json(text: str) -> object | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        parsed: object = json.loads(stripped)
    except ValueError:
        return None
    return parsed


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for f in findings:
        key = (f.channel.split("-")[0], f.what, f.excerpt)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
