"""An audit-trail review's rows in the reader's words (AUD-09, issue 21's `_Known`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from allocator.services.audit_trail import EntryView
from allocator.services.reports import audit_review
from allocator.services.reports.filters import time_text
from allocator.wording import Words

FRENCH, ENGLISH = Words.of("fr"), Words.of("en")
VALUES = {
    "comment": "",
    "role": "trial_manager",
    "status": "in_transit",
    "code": "screening_number_x",
    "kits": [{"day": "D1", "kit": "0012"}],
    "flag": True,
    "n": 3,
    "none": None,
    "empty": [],
}


def entry(
    new: dict[str, object] | None, old: dict[str, object] | None = None, reason: str | None = None
) -> EntryView:
    return EntryView(
        "IFNG-PAIS", 7, "2026-12-05T22:09:30.123456Z", "inv", "Ines", "investigator", "P1",
        "kit.status_changed", "kit", "0012", "P1", old, new, False, reason, "r", "1.0", "0" * 64, "1" * 64,
    )  # fmt: skip


@pytest.mark.req("AUD-05")
def test_recorded_values_read_as_words_in_each_language() -> None:
    assert audit_review._value_text(VALUES, ENGLISH) == (
        "comment: ; role: Trial manager; status: in_transit; code: screening_number_x; "
        "kits: day: D1; kit: 0012; flag: yes; n: 3; none: —; empty: —"
    )
    assert audit_review._value_text(VALUES, FRENCH) == (
        "comment\xa0: ; rôle\xa0: Chef de projet de l’essai; statut\xa0: en transit; "
        "code\xa0: screening_number_x; kits\xa0: jour\xa0: D1; kit\xa0: 0012; flag\xa0: oui; n\xa0: 3; "
        "none\xa0: —; empty\xa0: —"
    )


def test_an_empty_recorded_text_stays_empty_in_french() -> None:
    """gettext("") is the catalogue's header: an empty comment was shown in French as
    "Project-Id-Version: allocator VERSION ..." (found while reworking the words, issue 21)."""
    shown = audit_review.details_text(entry({"comment": ""}, reason="r"), FRENCH)
    assert "Project-Id-Version" not in shown
    assert shown == "comment\xa0:  | motif\xa0: r"
    assert audit_review._value_text("", FRENCH) == ""


def test_words_kept_for_a_table_are_the_words_found_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table's rows share one `_Known` (issue 21); what it keeps never changes what a row says,
    past its limit of kept texts too."""
    monkeypatch.setattr(audit_review._Known, "LIMIT", 2)
    known = audit_review._Known(FRENCH)
    rows = [entry({"status": s, "by": r}, old={"status": "received"}) for s, r in (
        ("in_transit", "monitor"), ("in_transit", "pharmacist"), ("lost", "monitor"), ("in_transit", "nurse"),
    )]  # fmt: skip
    assert [audit_review.details_text(e, FRENCH, known) for e in rows] == [
        audit_review.details_text(e, FRENCH) for e in rows
    ]
    assert len(known.texts) == 2
    assert audit_review.details_text(rows[0], FRENCH).startswith(
        "avant\xa0: statut\xa0: reçu | statut\xa0: en transit"
    )


def test_a_reason_the_service_wrote_is_in_the_readers_words_a_typed_one_as_typed() -> None:
    written = entry({"status": "active"}, reason="first site activated (P1): recruitment open")
    assert audit_review.details_text(written, FRENCH).endswith(
        "motif\xa0: premier centre activé (P1) : les inclusions sont ouvertes"
    )
    assert audit_review.details_text(written, ENGLISH).endswith(
        "reason: first site activated (P1): recruitment open"
    )
    typed = entry(None, reason="randomisé par erreur, voir note")
    assert audit_review.details_text(typed, ENGLISH) == "reason: randomisé par erreur, voir note"


def test_a_time_not_in_the_services_own_form_is_formatted_as_it_always_was() -> None:
    """The digest's time cell is cut from the recorded text only when that text is in the form the
    service writes; an imported entry's time in another form is formatted from the parsed moment."""
    at = datetime(2026, 12, 5, 12, 9, 30, tzinfo=UTC)
    assert audit_review._utc_cell("2026-12-05T12:09:30.123456Z", at) == "2026-12-05 12:09:30 UTC"
    for other in ("2026-12-05T120930.12345678Z", "2026-W49-6T12:09:30.12345Z", "2026-12-05T12:09:30Z"):
        assert audit_review._utc_cell(other, at) == "2026-12-05 12:09:30 UTC" == time_text(at)
    assert audit_review._utc_cell("2026-12-05T120930.12345678Z", at.replace(second=31)).endswith(":31 UTC")


@pytest.mark.parametrize("words", [ENGLISH, FRENCH], ids=["en", "fr"])
def test_a_rows_times_in_words_are_those_of_its_own_moment(words: Words) -> None:
    """Issue 21: a row's UTC time in words is cut from the recorded text, and its local time in
    words is kept per minute (the moment of the first entry of that minute); both must say what
    `Words.utc` and `Words.local` say of the entry's own moment, around the changes of hour too."""
    known = audit_review._Known(words)
    zone = ZoneInfo("Europe/Paris")
    rng = random.Random(21)
    moments = [
        datetime(2019, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(8 * 365 * 86400), microseconds=n)
        for n in range(1500)
    ]
    for change in (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)):
        moments += [change + timedelta(seconds=s) for s in range(-3600, 3600, 59)]
    for at in moments:
        recorded = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert known.utc(recorded) == words.utc(at), recorded
        first_of_its_minute = at.replace(second=rng.randrange(60)).astimezone(zone)
        assert known.local(first_of_its_minute) == words.local(at.astimezone(zone)), recorded
    other = "2026-12-05T12:09:30.12345Z"  # not the service's own form: read as it always was
    assert known.utc(other) == words.utc(datetime(2026, 12, 5, 12, 9, 30, 123450, tzinfo=UTC))


def test_the_depot_is_a_word_and_a_site_code_stays_a_code() -> None:
    """Reports name the place of kits: the depot in the reader's words, a site by its code even when
    the code is spelled like a word of the catalogue (found in review: `Words.word` translated it)."""
    french, english = Words.of("fr"), Words.of("en")
    assert (french.place("depot"), english.place("depot")) == ("dépôt", "depot")
    assert french.word("UNBLINDED") != "UNBLINDED"  # what a site so coded would have read
    for code in ("P1", "UNBLINDED", "DRAFT"):
        assert french.place(code) == code
