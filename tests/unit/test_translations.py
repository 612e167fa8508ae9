"""Every text of the interface exists in French (issue 13): a template text outside `_()` or
`{% trans %}` fails, in every template, and so does a message of the code or the templates without a
French translation in the catalogue, or a compiled catalogue older than its source."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pytest

from allocator.wording import Words
from tools import translations

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Texts that are the same in both languages on purpose.
SAME_IN_BOTH = {
    "allocator",
    "TEST",
    "TEST – NE PAS UTILISER · TEST – DO NOT USE",
    # standards' names, commands and file headers, typed or read as they are
    "CDISC ODM 1.3.2",
    "HL7 FHIR R4",
    "allocator export verify",
    "openssl enc -d -aes-256-cbc -pbkdf2 -md sha256 -iter 600000 -in FILE -out list.json",
    "kit_number,arm,lot_code,expiry",
    "CSV",
    "PDF",
}

_HOLE = "\x00"  # stands for a Jinja expression or statement in the page skeleton
_TAG = re.compile(r"<!--.*?-->|<script\b.*?</script>|<[^>]*>", re.S)
_SHOWN_ATTRIBUTE = re.compile(r'\b(?:alt|placeholder|title|aria-label)="([^"]*)"')
_LETTER = re.compile(r"[^\W\d_]")
_ATTRIBUTES = re.compile(
    r'^(?:[\w.-]*"\s*)?(?:[\w:-]+="[^"]*"?\s*)*$'
)  # a macro writing attributes, not text
_ENV = jinja2.Environment(extensions=["jinja2.ext.i18n"], autoescape=True)


def bare_texts(source: str) -> list[str]:
    """The texts a reader would see that are neither translated nor Jinja output."""
    skeleton: list[str] = []
    tokens = [token for token in _ENV.lex(source) if token[1] != "whitespace"]
    in_trans = False
    for index, (_line, kind, value) in enumerate(tokens):
        if kind == "name" and index > 0 and tokens[index - 1][1] == "block_begin":
            in_trans = {"trans": True, "endtrans": False}.get(value, in_trans)
        if kind == "data" and not in_trans:
            skeleton.append(value)
        elif not skeleton or skeleton[-1] != _HOLE:
            skeleton.append(_HOLE)
    page = "".join(skeleton)
    found = [value for value in _SHOWN_ATTRIBUTE.findall(page) if _visible(value)]
    for chunk in _TAG.sub(_HOLE, page).split(_HOLE):
        text = " ".join(chunk.split())
        if _visible(text) and text.strip(" ·–-:|") not in SAME_IN_BOTH and not _ATTRIBUTES.match(text):
            found.append(text)
    return found


def _visible(text: str) -> bool:
    return any(_LETTER.search(part) for part in text.split(_HOLE))


def _templates() -> list[str]:
    return sorted(str(path.relative_to(TEMPLATES)) for path in TEMPLATES.rglob("*.html"))


@pytest.mark.parametrize("name", _templates())
def test_template_texts_are_translated(name: str) -> None:
    assert bare_texts((TEMPLATES / name).read_text(encoding="utf-8")) == []


def test_every_message_has_a_french_translation() -> None:
    assert translations.problems() == []


def test_the_checker_sees_bare_text() -> None:
    """The checker itself: bare text, a shown attribute and a title block are caught; translated
    text, Jinja output and tags are not."""
    source = (
        '{% block title %}Sign in{% endblock %}<p title="Help">{{ _("Yes") }} {{ name }}</p>'
        '{% trans %}Hello{% endtrans %}<input value="{{ v }}"> · Bonjour'
    )
    assert bare_texts(source) == ["Help", "Sign in", "· Bonjour"]


def test_report_words_in_french_and_english() -> None:
    """Issue 13: what the reports build outside a request (allocator/wording.py) speaks the reader's
    language: messages, numbers, dates, times in UTC, yes/no, status codes and roles."""
    fr, en = Words.of("fr"), Words.of("en")
    moment = datetime(2026, 12, 5, 13, 9, 30, tzinfo=UTC)
    assert (
        fr("Subjects randomized") == "Patients randomisés"
        and en("Subjects randomized") == "Subjects randomized"
    )
    assert fr("%(day)s dispensed", day="D1") == "D1 dispensé"
    assert fr.n(4200.5) == "4\u202f200,5" and en.n(4200.5) == "4,200.5"
    assert fr.day(date(2026, 12, 5)) == "5 déc. 2026" and en.day(date(2026, 12, 5)) == "Dec 5, 2026"
    assert fr.utc(moment) == "5 déc. 2026, 13:09:30 UTC" and en.utc(moment) == "Dec 5, 2026, 13:09:30 UTC"
    # The day's text is kept (issue 21): the same day at another time, naive (UTC) or in another zone.
    later = datetime(2026, 12, 5, 23, 59, 1)  # noqa: DTZ001 - naive is UTC, as stored
    assert fr.utc(later) == "5 déc. 2026, 23:59:01 UTC" and en.utc(later) == "Dec 5, 2026, 23:59:01 UTC"
    east = datetime(2026, 12, 6, 0, 30, 2, tzinfo=timezone(timedelta(hours=2)))
    assert fr.utc(east) == "5 déc. 2026, 22:30:02 UTC" and en.utc(east) == "Dec 5, 2026, 22:30:02 UTC"
    paris = datetime(2026, 12, 5, 13, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert (
        fr.local(paris) == "sam. 5 déc. 2026, 13:09 CET" and en.local(paris) == "Sat, Dec 5, 2026, 13:09 CET"
    )
    summer = datetime(2026, 7, 4, 0, 5, tzinfo=ZoneInfo("Europe/Paris"))
    assert fr.local(summer) == "sam. 4 juil. 2026, 00:05 CEST"
    assert (fr.yes_no(True), en.yes_no(False)) == ("oui", "no")
    assert (fr.word("in_transit"), en.word("in_transit"), fr.word("never_seen_code")) == (
        "en transit",
        "in transit",
        "never seen code",
    )
    assert fr.role("trial_manager") != "trial_manager" and en.role("monitor").startswith("Monitor")
    assert fr.message("STOP: this label does not belong to P1-007").endswith("P1-007")
    assert (
        fr.message("STOP: this label does not belong to P1-007")
        != "STOP: this label does not belong to P1-007"
    )
    # A status inside a service's message is in words too, whichever status it is (not only a kit's).
    refused = "the D3 tube set of L1-001 is collected: it cannot be collected"
    assert "est prélevé" in fr.message(refused) and "collected" not in fr.message(refused)
    assert "is collected" in en.message(refused)
    shipment = fr.message("lab shipment LS-0001 is shipped, not prepared")
    assert "expédié" in shipment and "shipped" not in shipment and "prepared" not in shipment
    missed = fr.message("the D3 sample of L1-001 is without a tube set: it cannot be recorded as missed")
    assert "sans kit de tubes" in missed
    assert Words.of(None).language == "en" and Words.of("de").language == "en"
