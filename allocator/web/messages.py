"""The service messages that site staff meet, in the page's language. The services keep speaking
English: the API, the CLI, the audit trail and the logs read them as they are.

The messages themselves (`KNOWN`, matched exactly, and `PATTERNS`, which carry values) are in
allocator/service_messages.py, which the reports read too; here, a value that is a criterion's or a
factor's English label is swapped for its label in the page's language. A message found in neither
is shown as it is, less its code field names (forms.plain). The error titles, status words and
fixed choices are listed here for the catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask_babel import gettext

from allocator import service_messages


def N_(message: str) -> str:
    """Mark a message for extraction without translating it here."""
    return message


# The titles of the services' errors (DomainError.title) that site staff meet.
TITLES = frozenset(
    {
        N_("The scanned label does not match"),
        N_("Check before giving this dose"),
        N_("This label belongs to another patient"),
        N_("This label is for another day"),
        N_("This dose was already given"),
        N_("The patient is not eligible"),
        N_("This screening number is already randomized"),
        N_("This screening number is already registered"),
        N_("This study registers its patients: it does not randomize them"),
        N_("This trial randomizes its patients: it does not register them"),
        N_("This trial randomizes its patients: it has no central-lab calendar"),
        N_("The lab is already closed that day"),
        N_("The lab has no closure that day to withdraw"),
        N_("Kits of every arm are not available at the site"),
        N_("The stratum's randomization list is exhausted"),
        N_("No randomization list is active"),
        N_("The site is not activated for randomization"),
        N_("The subject was withdrawn: no further dose"),
        N_("Exactly one subject per unblinding"),
        N_("The electronic signature was not accepted"),
        N_("This is not the kit allocated to this subject and day"),
        N_("The kit was already dispensed"),
        N_("Some fields are invalid"),
        N_("Conflict with the current state"),
        N_("No more reprints of this document"),
        # issue 20: the cohort's tube sets
        N_("No tube set available at the site"),
        N_("The scanned tube set does not match"),
        N_("This tube set belongs to another participant"),
        N_("This sample was already collected"),
        N_("Outside the sample's window"),
    }
)

# The role titles of allocator.permissions.ROLE_TITLES, for the catalogue.
ROLE_TITLES = (
    N_("Investigator"),
    N_("Pharmacist"),
    N_("Unblinded pharmacist"),
    N_("Nurse"),
    N_("Monitor"),
    N_("Auditor"),
    N_("Trial manager"),
    N_("Administrator"),
    N_("Unblinded statistician"),
    N_("Pharmacovigilance"),
    N_("Lab technician"),
)

# Status words (trial, site, kit) and the labels of the services' fixed choices, for the catalogue.
STATUS_WORDS = frozenset(
    {
        N_("setup"),
        N_("active"),
        N_("locked"),
        N_("unblinded"),
        N_("pending"),
        N_("closed"),
        N_("at_depot"),
        N_("in_transit"),
        N_("available"),
        # issue 20 (labship): tube sets and lab shipments
        N_("assigned"),
        N_("collected"),
        N_("shipped"),
        N_("received"),
        N_("unusable"),
        N_("missed"),
        N_("without a tube set"),  # a planned sample given no tube set (services/samples/collection.py)
        N_("prepared"),
        N_("allocated"),
        N_("dispensed"),
        N_("administered"),
        N_("returned"),
        N_("damaged"),
        N_("lost"),
        N_("quarantined"),
        N_("expired"),
        N_("destroyed"),
        N_("released"),  # a temperature excursion's decision (issue 19)
        # code-break sheets: what a check found, and the reconciliation's states (UNB-06)
        N_("intact"),
        N_("opened"),
        N_("missing"),
        N_("replaced"),
        N_("opened_registered"),
        N_("opened_unregistered"),
        N_("never_checked"),
        N_("depot"),
        # randomization lists and their extensions
        N_("draft"),
        N_("retired"),
        N_("permuted_blocks"),
        N_("minimization"),
        N_("low"),
        N_("exhausted"),
        N_("approved"),
        N_("declined"),
        N_("withdrawn"),
        # corrections of a subject
        N_("stratum"),
        N_("randomized_in_error"),
        # issue 20: a tube set's statuses
        N_("assigned"),
        N_("collected"),
        N_("shipped"),
        N_("received"),
        N_("unusable"),
        N_("missed"),
    }
)
CHOICE_LABELS = frozenset(
    {
        N_("treatment discontinued"),
        N_("consent withdrawn"),
        N_("lost to follow-up"),
        N_("Serious adverse event: the treatment of the event depends on the product"),
        N_("Overdose or medication error"),
        N_("Interaction with a treatment the patient needs"),
        N_("Pregnancy"),
        N_("Other medical emergency"),
        N_("Suspected unexpected serious adverse reaction (expedited report)"),
        N_("Other expedited safety report"),
        # units of the shipped trial's criteria
        N_("years"),
        N_("points"),
        N_("days"),
    }
)


def title(text: str) -> str | None:
    """An error title in the page's language, or None when it is not a known one."""
    return gettext(text) if text in TITLES else None


def word(code: str) -> str:
    """A status word or a fixed choice's label in the page's language (unknown ones unchanged).
    A code is never shown as it is: `in_transit` reads "in transit" in English."""
    if code in STATUS_WORDS or code in CHOICE_LABELS:
        shown = gettext(code)
        return shown.replace("_", " ") if shown == code else shown
    return code


def translate(message: str, names: Mapping[str, str]) -> str | None:
    """`message` in the page's language, or None when it is not a known service message."""
    return service_messages.translate(message, names, gettext, word)
