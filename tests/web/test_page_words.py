"""Every page in plain words, in both languages (issue 13, point 4 of the French work).

The world of the leak crawler (tests/web/leak_world.py) is built once; then every role signs in,
chooses French or English, and walks every GET route with real ids, the links and the GET forms it
finds (tests/web/crawler.py, `Crawler.walk`). The visible text of every HTML page — text nodes and
the attributes a reader meets (title, placeholder, alt, aria-label) — must hold:

- no code-level field name: a snake_case identifier (`icu_admission_date`) or a dotted path
  (`eligibility.sofa_24h`);
- no requirement id (`RND-07`) of docs/requirements.md;
- no JSON blob (`{"key": ...`) and no escaped character (`\\u00e9`);
- in French, no English-only sentence of our catalogue (a message whose French differs).

Code is shown on purpose in a few places only, all kept out of the visible text: `<code>` (commands,
hashes, file headers a user types or compares, and the audit trail's recorded values that are codes),
the small secondary text that keeps an audit action's code beside its label (`class="code-name"`),
and `<pre>` (the design quality report of the unblinded statistician, printed as its PDF is).

The report pages are checked like every other: their content (titles, columns, facts, notes and the
audit-review rows) is built in the reader's language (allocator/wording.py); a recorded value that is
a code (a stratification factor's code in the sequence report, a value with no words in an audit
entry) is shown in `<code>`, as on the audit trail.

The checker is proven able to fail (`test_the_checks_catch_each_kind_of_word`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from allocator import crypto
from tests.conftest import FreshDatabase, Kept
from tests.leakcheck import Finding, LeakChecker, Vocabulary
from tests.support import Clock
from tests.web import crawler as crawler_module
from tests.web.conftest import csrf_token
from tests.web.crawler import Crawler, Fetched
from tests.web.leak_world import World, build_world
from tests.web.test_leak_crawler import EXTRA_ALLOWED, make_app

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("en", "fr")

_SNAKE = re.compile(r"(?<![.\w])[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_DOTTED = re.compile(r"\b(?:eligibility|strata|scans)\.[A-Za-z0-9_]+\b|\b[a-z]+\.[a-z0-9]+_[a-z0-9_]+\b")
_JSON = re.compile(r"[{\[]\s*\"[^\"]*\"\s*:|\\u[0-9a-fA-F]{4}")
_SHOWN_ATTRIBUTES = ("title", "placeholder", "alt", "aria-label")
_HIDDEN = {"script", "style", "code", "pre", "template"}
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]|%[sd]")


def requirement_ids() -> frozenset[str]:
    text = (ROOT / "docs" / "requirements.md").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^\| ([A-Z]{3}-\d{2}) \|", text, re.M))


_REQUIREMENT = re.compile(r"\b(" + "|".join(sorted(requirement_ids())) + r")\b")


def english_only_sentences() -> tuple[str, ...]:
    """Our catalogue's English sentences whose French is different: the longest literal piece of
    each message (between its placeholders), when it is long enough to be a sentence of its own."""
    with (ROOT / "allocator" / "translations" / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="fr")
    found = set()
    for message in catalog:
        if not message.id or not isinstance(message.id, str) or not message.string:
            continue
        piece = max(_PLACEHOLDER.split(message.id), key=len).strip()
        if len(piece) >= 24 and " " in piece and piece not in str(message.string):
            found.add(piece)
    return tuple(sorted(found))


class _Visible(HTMLParser):
    """The text a reader sees, less the code shown on purpose (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden: list[str] = []  # open tags whose content is not checked

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in _HIDDEN or "code-name" in (values.get("class") or "").split():
            if tag not in {"br", "input", "img", "meta", "link"}:
                self._hidden.append(tag)
            return
        if tag == "input" and values.get("type") == "hidden":
            return
        for name in _SHOWN_ATTRIBUTES:
            if values.get(name) and not self._hidden:
                self.parts.append(str(values[name]))

    def handle_endtag(self, tag: str) -> None:
        if self._hidden and self._hidden[-1] == tag:
            self._hidden.pop()

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(data)


def visible_text(markup: str) -> str:
    parser = _Visible()
    parser.feed(markup)
    return " ".join(" ".join(parser.parts).split())


@dataclass(frozen=True)
class Word:
    kind: str
    text: str
    around: str

    def __str__(self) -> str:
        return f"{self.kind} {self.text!r} in «…{self.around}…»"


def words(text: str, language: str, english: tuple[str, ...] = ()) -> list[Word]:
    """What a page must not show, found in its visible text."""

    def around(match: re.Match[str]) -> str:
        return text[max(0, match.start() - 50) : match.end() + 50]

    found = [Word("code name", m.group(0), around(m)) for m in _SNAKE.finditer(text)]
    found += [Word("dotted path", m.group(0), around(m)) for m in _DOTTED.finditer(text)]
    found += [Word("requirement id", m.group(0), around(m)) for m in _REQUIREMENT.finditer(text)]
    found += [Word("JSON", m.group(0), around(m)) for m in _JSON.finditer(text)]
    if language == "fr":
        for sentence in english:
            at = text.find(sentence)
            if at >= 0:
                found.append(Word("English", sentence, text[max(0, at - 30) : at + len(sentence) + 30]))
    return found


# --- the crawl ------------------------------------------------------------------------------------


@dataclass
class Walk:
    world: World
    pages: dict[str, list[Fetched]] = field(default_factory=dict)  # "role fr" -> pages fetched

    def html(self) -> Iterator[tuple[str, str, Fetched]]:
        for key, fetched in sorted(self.pages.items()):
            role, language = key.split()
            for page in fetched:
                if page.method == "GET" and page.status < 400 and page.response.mimetype == "text/html":
                    yield role, language, page


class WordsOnly(LeakChecker):
    """The walk reads pages for their words only: the leak crawl (test_leak_crawler.py) checks the
    same pages for arms, and its PDF, barcode and header checks are most of a walk's time."""

    def headers(self, where: str, headers: Iterable[tuple[str, str]]) -> list[Finding]:
        return []

    def body(self, where: str, mimetype: str, data: bytes) -> list[Finding]:
        return []


@pytest.fixture(scope="session")
def backend() -> str:
    """The walk runs on SQLite only. A page's words come from its template and the catalogue, not
    from the database that holds its data; the leak crawl (test_leak_crawler.py) walks the same
    pages on both backends for what depends on the data. Walking both was 330 s of the suite."""
    return "sqlite"


@pytest.fixture
def walk(
    kept: Kept, backend: str, tmp_path_factory: pytest.TempPathFactory, key_dir: Path, ring: crypto.KeyRing
) -> Walk:
    """Every role, in both languages: every GET route with every real id (the crawler's seeds),
    then the links and GET forms of those pages, one level deep, a few query strings per route
    (the leak crawl goes deeper; words do not change with the depth of a filter). In a database of
    its own, once per backend and test process (tests.conftest.Kept)."""

    def build() -> tuple[Walk, Callable[[], None]]:
        fresh = FreshDatabase(backend, tmp_path_factory.mktemp(f"words-{backend}")).migrate()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(crawler_module, "MAX_DEPTH", 1)
            patch.setattr(crawler_module, "MAX_VARIANTS", 4)
            # Every subject with every other subject's document is a 404 page whose words are those
            # of any 404: the leak crawl tries all of them, the words need a few.
            patch.setattr(crawler_module, "MAX_COMBINATIONS", 24)
            return _walk(fresh, key_dir, ring)

    return kept.get(("page-words", backend), build)


def _walk(fresh: FreshDatabase, key_dir: Path, ring: crypto.KeyRing) -> tuple[Walk, Callable[[], None]]:
    clock = Clock()
    app, ctx = make_app(fresh, key_dir, ring, clock)
    world = build_world(ctx, clock)
    crawler = Crawler(app, world, WordsOnly(Vocabulary.of(world.definition, EXTRA_ALLOWED)))
    result = Walk(world)
    for role, principal in sorted(world.principals.items()):
        client = crawler.sign_in(principal)  # once: a second factor's code serves once
        for language in LANGUAGES:
            start = len(crawler.fetched)
            token = csrf_token(client, "/account")
            client.post("/language", data={"language": language, "next": "/", "csrf_token": token})
            crawler.walk(principal, client)
            result.pages[f"{role} {language}"] = crawler.fetched[start:]

    def cleanup() -> None:
        ctx.db.dispose()
        fresh.drop()

    return result, cleanup


def test_the_walk_reaches_every_page_in_both_languages(walk: Walk) -> None:
    for key, fetched in walk.pages.items():
        # The sign-in steps (auth.*) speak the language chosen before signing in, not the account's.
        html = [
            f
            for f in fetched
            if f.status < 400
            and f.response.mimetype == "text/html"
            and not (f.endpoint or "").startswith("auth.")
        ]
        assert len(html) >= 3, key
        language = key.split()[1]
        wrong = [f.url for f in html if f'<html lang="{language}">' not in f.response.get_data(as_text=True)]
        assert not wrong, (key, wrong[:5])


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_page_shows_code_names_requirement_ids_json_or_english_in_french(
    walk: Walk, language: str
) -> None:
    english = english_only_sentences()
    problems: dict[str, set[str]] = {}
    for role, shown_in, page in walk.html():
        if shown_in != language:
            continue
        for word in words(visible_text(page.response.get_data(as_text=True)), language, english):
            problems.setdefault(f"{word.kind} {word.text!r} on {page.endpoint}", set()).add(
                f"{role} {page.url}: …{word.around}…"
            )
    lines = [f"{what}\n    e.g. {sorted(where)[0]}" for what, where in sorted(problems.items())]
    assert not lines, f"{len(lines)} problem(s):\n" + "\n".join(lines[:400])


# --- the checker can fail ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markup", "language", "kind"),
    [
        ("<p>Admission: icu_admission_date</p>", "en", "code name"),
        ("<p>eligibility.sofa_24h: must be a whole number</p>", "en", "dotted path"),
        ("<p>Refused (RND-07)</p>", "en", "requirement id"),
        ('<td>{"site": "P1"}</td>', "en", "JSON"),
        ("<td>H\\u00f4pital</td>", "en", "JSON"),
        ('<input title="screening_number">', "en", "code name"),
        (
            "<p>Give it to the user through a separate channel. It is shown only now, and must be "
            "changed at the first sign-in.</p>",
            "fr",
            "English",
        ),
    ],
)
def test_the_checks_catch_each_kind_of_word(markup: str, language: str, kind: str) -> None:
    found = words(visible_text(markup), language, english_only_sentences())
    assert [w.kind for w in found] == [kind], found


def test_code_shown_on_purpose_and_data_are_not_words() -> None:
    markup = (
        "<p>Run <code>allocator export verify</code>; header <code>kit_number,arm</code></p>"
        '<span>Site created</span><span class="muted small code-name">trial.definition_loaded</span>'
        '<input type="hidden" name="csrf_token" value="x_y"><script>var a_b = 1;</script>'
        "<p>Subject P1-001, kit 123-456-7, 4 200,5 mg, e-mail name@hospital.fr, list.json</p>"
    )
    assert words(visible_text(markup), "fr", english_only_sentences()) == []
