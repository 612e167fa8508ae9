"""The words of a document built outside a request (a report's page, CSV and PDF; the CLI): the
reader's language as a value handed in, not read from Flask (issue 13).

`Words` carries the catalogue's gettext for one language and formats numbers, dates and times as
that language writes them. The services that build text for readers (services/reports) take one
and call it `_`, so that the catalogue's extractor finds their messages (`_("Site")`); the web
passes `Words.of(<the page's language>)`, the archive and the tests English.

Pure: babel and the compiled catalogue only; no Flask, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time
from babel.numbers import format_decimal

from allocator import notices, service_messages
from allocator.models.kit import KitStatus
from allocator.permissions import ROLE_TITLES, Role
from allocator.trialdef import Text, TrialDefinition

# Where a kit at no site is, as the services name it (supply/stock.py, reconciliation.py, ...).
DEPOT = "depot"


def date_and_time(moment: datetime, date_skeleton: str, locale: Locale, time_pattern: str = "HH:mm") -> str:
    """A date and a 24-hour time joined as `locale` joins them (24-hour everywhere: a ward reads
    00:30, not 12:30 AM). `moment` is aware; it is shown in its own time zone."""
    shown_date = format_skeleton(date_skeleton, moment, tzinfo=moment.tzinfo, locale=locale)
    shown_time = format_time(moment, time_pattern, tzinfo=moment.tzinfo, locale=locale)
    pattern = str(locale.datetime_formats["medium"])
    return pattern.replace("{1}", shown_date).replace("{0}", shown_time).replace("'", "")


_ROLES = {role.value: role for role in Role}


@lru_cache(maxsize=4096)
def _day_pattern(language: str, day: date, skeleton: str) -> str:
    """`date_and_time`'s text for a day with `{0}` where the time goes: a report shows thousands of
    moments, and babel's formatting of each date cost more than the report (issue 21)."""
    return date_and_time(datetime.combine(day, time(12), UTC), skeleton, Locale.parse(language), "'{0}'")


@dataclass(frozen=True, slots=True)
class Words:
    """One reader's language: `words("Site")`, `words("%(n)s doses", n=3)`, and its formats."""

    language: str
    gettext: notices.Gettext = field(repr=False, compare=False)
    # The trial's own texts: a factor's label by its code, a level's by "factor=level".
    labels: Mapping[str, Text] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, language: str | None) -> Words:
        """The words of `language` ("fr" or "en"; None or unknown: English)."""
        chosen = language if language in ("fr", "en") else "en"
        return cls(chosen, notices.catalogue_gettext(chosen))

    def with_trial(self, definition: TrialDefinition) -> Words:
        """These words, and the labels of the trial's stratification factors and levels."""
        labels: dict[str, Text] = {}
        for factor in definition.stratification:
            labels[factor.code] = factor.label
            labels.update({f"{factor.code}={level.code}": level.label for level in factor.levels})
        labels.update({f"criterion:{c.label.en}": c.label for c in definition.eligibility})
        return replace(self, labels=labels)

    def __call__(self, message: str, **values: object) -> str:
        text = self.gettext(message)
        return text % values if values else text

    @property
    def locale(self) -> Locale:
        return Locale.parse(self.language)

    def n(self, value: int | float | Decimal | None) -> str:
        """A number: `4 200,5` / `4,200.5`."""
        return "" if value is None else format_decimal(value, locale=self.locale)

    def day(self, value: date | None) -> str:
        """A calendar date: `5 déc. 2026` / `Dec 5, 2026`."""
        return "" if value is None else format_date(value, "medium", locale=self.locale)

    def utc(self, moment: datetime | None) -> str:
        """A recorded moment in UTC, to the second (AUD-07): `5 déc. 2026, 12:09:30 UTC`. Naive
        values are UTC (how the database stores them)."""
        if moment is None:
            return ""
        aware = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
        # The same text as date_and_time(aware, "yMMMd", locale, "HH:mm:ss"): 24-hour, Latin digits.
        return self.utc_of(aware.date(), f"{aware:%H:%M:%S}")

    def utc_of(self, day: date, clock: str) -> str:
        """`utc` of the UTC moment at `clock` ("12:09:30") on `day`, for a time already in text (an
        audit entry's, issue 21: no datetime to build and format for each of thousands)."""
        return f"{_day_pattern(self.language, day, 'yMMMd').replace('{0}', clock)} UTC"

    def local(self, moment: datetime) -> str:
        """An aware moment in its own time zone, with the weekday and the zone's abbreviation:
        `sam. 5 déc. 2026, 13:09 CET`."""
        # The same text as date_and_time(moment, "yMMMEd", locale): the day's text is kept.
        shown = _day_pattern(self.language, moment.date(), "yMMMEd").replace("{0}", f"{moment:%H:%M}")
        return f"{shown} {moment.tzname() or ''}".strip()

    def local_around_minutes(self, moment: datetime) -> tuple[str, str] | None:
        """`local` of any minute of `moment`'s hour as the text before and after its two digits of
        minutes, for an hour whose every minute has the same date, offset and zone abbreviation
        (issue 21: a review words thousands of entries, hour by hour). None when the day's pattern
        does not hold the time once."""
        pattern = _day_pattern(self.language, moment.date(), "yMMMEd")
        head, marker, tail = pattern.partition("{0}")
        if not marker or "{0}" in tail:
            return None
        return f"{head}{moment:%H}:".lstrip(), f"{tail} {moment.tzname() or ''}".rstrip()

    def yes_no(self, flag: bool) -> str:
        return self("yes") if flag else self("no")

    def role(self, code: str) -> str:
        """A role's title (`trial_manager` -> "Trial manager" / "Gestionnaire de l'essai")."""
        member = _ROLES.get(code)  # a look-up, not Role(code): a review asks for every recorded value
        return self(ROLE_TITLES[member]) if member is not None else self.word(code)

    def message(self, text: str) -> str:
        """A service's message (an error, a refusal's detail recorded in the audit trail, a
        reconciliation discrepancy) in the reader's language when it is a known one, else as it
        is. A kit status inside it is given in words, and so is the status a pattern names."""
        statuses = {status.value: self.word(status.value) for status in KitStatus}
        return service_messages.translate(text, statuses, self.gettext, self.word) or text

    def word(self, code: str) -> str:
        """A status or kind code in words (`in_transit` -> "in transit" / "en transit"): the
        catalogue's word when it has one, else the code with spaces."""
        shown = self.gettext(code)
        return shown.replace("_", " ") if shown == code else shown

    def place(self, code: str) -> str:
        """Where kits are: a site's code as it is, the depot in words ("dépôt"). Only the depot:
        a site's code is never looked up in the catalogue (a site coded like a word stays a code)."""
        return self.gettext(DEPOT) if code == DEPOT else code

    def label(self, code: str) -> str:
        """A factor's label (`admission_cause`) or a level's (`admission_cause=septic`), the code
        with spaces when the trial has none."""
        text = self.labels.get(code)
        if text is not None:
            return text.fr if self.language == "fr" else text.en
        return code.rsplit("=", maxsplit=1)[-1].replace("_", " ")

    def criterion(self, english: str) -> str:
        """An eligibility criterion, known by its English label, in the reader's language."""
        text = self.labels.get(f"criterion:{english}")
        return english if text is None else (text.fr if self.language == "fr" else text.en)

    def strata(self, values: Mapping[str, object] | str) -> str:
        """Stratification values in words, without the site (it has its own column):
        `{"admission_cause": "septic"}` or `admission_cause=septic` -> "Cause of admission: septic"."""
        pairs = (
            [(str(k), str(v)) for k, v in values.items()]
            if not isinstance(values, str)
            else [tuple(part.split("=", 1)) for part in values.split("; ") if "=" in part]
        )
        colon = self(": ")
        return "; ".join(f"{self.label(k)}{colon}{self.label(f'{k}={v}')}" for k, v in pairs if k != "site")


ENGLISH = Words.of("en")
