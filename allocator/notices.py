"""The notifications (the pharmacy's dispensation requests, withdrawal notices, unblinding alerts...)
in the reader's language (issue 13).

A notification row keeps the English title and body its service wrote (the audit trail and the
archive read them so). Each screen and each e-mail shows them in its reader's language: `translate`
recognises the sentence and rebuilds it from the catalogue's French, the values it carries (a
reason, a withdrawal kind, a role) translated too. An unknown text is shown as it is.

Pure: no Flask. The web passes flask_babel's gettext; the mailer passes the catalogue of the
recipient's stored language (`catalogue_gettext`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from babel.support import NullTranslations, Translations

from allocator.permissions import ROLE_TITLES, Role

Gettext = Callable[[str], str]
TRANSLATIONS = Path(__file__).resolve().parent / "translations"


def N_(message: str) -> str:
    """Mark a message for extraction without translating it here."""
    return message


PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.S), template)
    for pattern, template in (
        (r"Dispensation request for (?P<subject>\S+)", N_("Dispensation request for %(subject)s")),
        (
            r"Subject (?P<subject>\S+) \(randomization number (?P<number>\S+)\) was randomized at site "
            r"(?P<site>\S+) by (?P<who>.+)\. Kits to dispense: (?P<kits>.+)\.",
            N_(
                "Subject %(subject)s (randomization number %(number)s) was randomized at site %(site)s "
                "by %(who)s. Kits to dispense: %(kits)s."
            ),
        ),
        (r"Stratum running low: (?P<stratum>.+)", N_("Stratum running low: %(stratum)s")),
        (
            r"The stratum (?P<stratum>\S+) of (?P<list>\S+) has (?P<count>\d+) unused slot\(s\) left\. "
            r"Consider an extension\.",
            N_(
                "The stratum %(stratum)s of %(list)s has %(count)s unused slot(s) left. Consider an extension."
            ),
        ),
        (r"Withdrawal of (?P<subject>\S+)", N_("Withdrawal of %(subject)s")),
        (
            r"Subject (?P<subject>\S+) was withdrawn \((?P<kind>[^)]+)\) on (?P<date>\S+), recorded by "
            r"(?P<who>.+?)\. (?P<instruction>(?:Dispense|Prepare) no further .+)",
            N_(
                "Subject %(subject)s was withdrawn (%(kind)s) on %(date)s, recorded by %(who)s. %(instruction)s"
            ),
        ),
        (
            r"Dispense no further kit; the kits allocated to (?P<subject>\S+) stay assigned to it\.",
            N_("Dispense no further kit; the kits allocated to %(subject)s stay assigned to it."),
        ),
        (r"Prepare no further dose for (?P<subject>\S+)\.", N_("Prepare no further dose for %(subject)s.")),
        (
            r"Emergency unblinding of (?P<subject>\S+) at site (?P<site>\S+)",
            N_("Emergency unblinding of %(subject)s at site %(site)s"),
        ),
        (
            r"(?P<who>.+) \((?P<role>[^,()]+), site (?P<site>\S+)\) broke the blind of subject (?P<subject>\S+) "
            r"on (?P<when>.+?) UTC, (?P<how>online|offline \(code-break sheet, registered by .+\))\. "
            r"Reason: (?P<reason>.+)\. The treatment is not stated here; the unblinding is recorded in the "
            r"service\.",
            N_(
                "%(who)s (%(role)s, site %(site)s) broke the blind of subject %(subject)s on %(when)s UTC, "
                "%(how)s. Reason: %(reason)s. The treatment is not stated here; the unblinding is recorded "
                "in the service."
            ),
        ),
        (r"online", N_("online")),
        (
            r"offline \(code-break sheet, registered by (?P<who>.+)\)",
            N_("offline (code-break sheet, registered by %(who)s)"),
        ),
        (
            r"DRILL: emergency unblinding drill on (?P<subject>\S+) at site (?P<site>\S+)",
            N_("DRILL: emergency unblinding drill on %(subject)s at site %(site)s"),
        ),
        (
            r"(?P<who>.+) \((?P<role>[^,()]+), site (?P<site>\S+)\) ran an emergency unblinding drill on drill "
            r"subject (?P<subject>\S+) on (?P<when>.+?) UTC, (?P<how>online|offline \(drill code-break sheet, "
            r"registered by .+\))\. This is a drill: no patient's blind is broken and it is counted nowhere but "
            r"in the drill log\.",
            N_(
                "%(who)s (%(role)s, site %(site)s) ran an emergency unblinding drill on drill subject %(subject)s "
                "on %(when)s UTC, %(how)s. This is a drill: no patient's blind is broken and it is counted "
                "nowhere but in the drill log."
            ),
        ),
        (
            r"offline \(drill code-break sheet, registered by (?P<who>.+)\)",
            N_("offline (drill code-break sheet, registered by %(who)s)"),
        ),
        (
            r"Unusual number of emergency unblindings by (?P<who>.+)",
            N_("Unusual number of emergency unblindings by %(who)s"),
        ),
        (
            r"(?P<who>.+) \((?P<role>[^,()]+), site (?P<site>\S+)\) has broken the blind of (?P<count>\d+) "
            r"subjects within an hour\. Please review the unblinding report\.",
            N_(
                "%(who)s (%(role)s, site %(site)s) has broken the blind of %(count)s subjects within an "
                "hour. Please review the unblinding report."
            ),
        ),
        (
            r"Accidental unblinding reported for (?P<subject>\S+)",
            N_("Accidental unblinding reported for %(subject)s"),
        ),
        (r"Accidental unblinding reported", N_("Accidental unblinding reported")),
        (
            r"(?P<who>.+) \((?P<role>[^()]+)\) reported an accidental unblinding that occurred on "
            r"(?P<when>.+)\. Impact and actions are in the unblinding report\.",
            N_(
                "%(who)s (%(role)s) reported an accidental unblinding that occurred on %(when)s. Impact and "
                "actions are in the unblinding report."
            ),
        ),
        (
            r"Pharmacovigilance unblinding of (?P<subject>\S+)",
            N_("Pharmacovigilance unblinding of %(subject)s"),
        ),
        (
            r"(?P<who>.+) unblinded subject (?P<subject>\S+) for an expedited safety report \((?P<reason>.+)\)\. "
            r"Visible to pharmacovigilance only\.",
            N_(
                "%(who)s unblinded subject %(subject)s for an expedited safety report (%(reason)s). Visible "
                "to pharmacovigilance only."
            ),
        ),
        (
            r"Resupply (?P<shipment>\S+) for site (?P<site>\S+)",
            N_("Resupply %(shipment)s for site %(site)s"),
        ),
        (
            r"Shipment (?P<shipment>\S+) of (?P<kits>\d+) kits for site (?P<site>\S+) was prepared "
            r"automatically: the site holds (?P<courses>\d+) treatment course\(s\), below its level of "
            r"(?P<level>\d+)\. Ship it from the depot\.",
            N_(
                "Shipment %(shipment)s of %(kits)s kits for site %(site)s was prepared automatically: the "
                "site holds %(courses)s treatment course(s), below its level of %(level)s. Ship it from the "
                "depot."
            ),
        ),
        (r"Site (?P<site>\S+) cannot be resupplied", N_("Site %(site)s cannot be resupplied")),
        (
            r"Site (?P<site>\S+) holds (?P<courses>\d+) treatment course\(s\), below its level of "
            r"(?P<level>\d+), and the depot does not hold enough usable kits for a balanced shipment of "
            r"(?P<kits>\d+) kits\. Add kits to the depot, with their code-break sheets\.",
            N_(
                "Site %(site)s holds %(courses)s treatment course(s), below its level of %(level)s, and the "
                "depot does not hold enough usable kits for a balanced shipment of %(kits)s kits. Add kits "
                "to the depot, with their code-break sheets."
            ),
        ),
        (r"Extension of (?P<list>\S+) to approve", N_("Extension of %(list)s to approve")),
        (
            r"(?P<who>.+) proposed extension #(?P<number>\d+) of (?P<list>\S+): (?P<reason>.*)\. Another "
            r"unblinded statistician must approve it \(second signature\) or decline it\.",
            N_(
                "%(who)s proposed extension #%(number)s of %(list)s: %(reason)s. Another unblinded "
                "statistician must approve it (second signature) or decline it."
            ),
        ),
    )
)
# The values that are translated inside a sentence (a role, a reason, a kind); names and free text
# the user typed are kept as they were written.
_TRANSLATED_VALUES = frozenset({"role", "reason", "kind", "how", "instruction"})

# The e-mail's own words around the notification.
MAIL_FOOTER = N_(
    "Trial %(trial)s, %(when)s UTC.\n"
    "This message never states a treatment allocation. Sign in to the allocator for details."
)


def translate(text: str, gettext: Gettext) -> str:
    """`text` (a notification's title or body, or a piece of one) in the language of `gettext`."""
    for pattern, template in PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            values = {
                key: _value(value, gettext) if key in _TRANSLATED_VALUES else value
                for key, value in match.groupdict().items()
            }
            return gettext(template) % values
    return text


def _value(value: str, gettext: Gettext) -> str:
    try:
        return gettext(ROLE_TITLES[Role(value)])
    except ValueError:
        pass
    translated = translate(value, gettext)
    return translated if translated != value else gettext(value)


@cache
def _catalogue(language: str) -> NullTranslations:
    return Translations.load(str(TRANSLATIONS), [language], domain="messages")


def catalogue_gettext(language: str | None) -> Gettext:
    """The catalogue's gettext for `language` ("fr" or "en"; None or unknown: English)."""
    if language not in ("fr",):
        return lambda message: message
    return _catalogue(language).gettext
