"""The services' messages that readers meet (errors, refusal details recorded in the audit trail),
as msgids of the catalogue, and `translate`: a message in the language of a gettext (issue 13).

The services keep speaking English (the API, the CLI, the audit trail and the logs read them so);
the screens (allocator/web/messages.py) and the reports (allocator/wording.py) show them translated.
`KNOWN` is matched exactly; `PATTERNS` carry values (a number, a date, a subject).

Pure: no Flask.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from allocator.notices import N_, Gettext

KNOWN = frozenset(
    {
        # sign-in, passwords, second factor
        N_("the user name or the password is wrong"),
        N_("the passwords differ"),
        N_("does not match the new password"),
        N_("the current password is wrong"),
        N_("is wrong"),
        N_("the new password is not acceptable"),
        N_("is a commonly used password"),
        N_("repeats the same characters"),
        N_("is a simple sequence"),
        N_("must not contain your user name or your name"),
        N_("the enrolment expired; scan the new code"),
        N_("start again"),
        N_("does not match; check the time on your phone"),
        N_("the code is wrong"),
        N_("is wrong or already used"),
        # e-signatures
        N_("the password is wrong"),
        N_("the authenticator code is wrong"),
        N_("is wrong, missing or already used"),
        N_("too many failed attempts: the account is locked for a while"),
        # common
        N_("is required"),
        N_("unknown"),
        N_("unknown site"),
        N_("a reason is required"),
        N_("some text is too long"),
        N_("is in the future"),
        N_("must be a date"),
        N_("must be a date (YYYY-MM-DD)"),
        N_("must be a date from 2000-01-01 to 2999-12-31"),  # services/periods.py
        N_("is not a date"),
        N_("unknown day"),
        N_("is not a dispensing day"),
        # temperature excursions (issue 19; services/supply/excursions.py, web/supply.py's receipt)
        N_("where did it happen?"),
        N_("a shipment or a site's refrigerator"),
        N_("not a temperature"),
        N_("a temperature in °C, e.g. 9.5 (from -50 to 60)"),
        N_("the minimum is above the maximum"),
        N_("is above the maximum"),
        N_("not an excursion"),
        N_("both temperatures are within 2-8 °C"),
        N_("invalid duration"),
        N_("a whole number of minutes from 1 to 100000"),
        N_("attach the logger's file"),
        N_("the logger's file is empty"),
        N_("is empty"),
        N_("the logger's file is too large"),
        N_("is larger than 2 MB"),
        N_("the logger's file is not accepted"),
        N_("must be a CSV, text or PDF file"),
        N_("the logger's file is not what its name says"),
        N_("its content does not match its type (CSV, text or PDF)"),
        N_("this report is signed"),
        N_("this decision is signed"),
        N_("release or destroy?"),
        N_("release or destroy"),
        N_("no kit there can be quarantined (no kit in transit or available)"),
        N_("holds no kit in transit or available"),
        N_("the shipment has not been shipped yet"),
        N_("has not been shipped yet"),
        N_("unknown shipment"),
        N_("does the logger show an excursion?"),
        N_("report the excursion first"),
        N_("no excursion is reported for this shipment"),
        N_("answer yes or no"),
        # relabelling after an expiry change (issue 19; services/supply/relabelling.py, dispensing)
        N_("awaits its new expiry label: relabel it first"),
        N_("held by a temperature excursion: wait for the decision or replace it"),
        N_("no kit there awaits relabelling"),
        N_("no kit to relabel"),
        N_("this kit awaits no relabelling"),
        N_("awaits no relabelling"),
        N_("print the relabelling sheet first"),
        N_("its new label has not been printed yet"),
        N_("the kit cannot be read"),
        N_("not within your reach"),
        # the supply dashboard (issue 19)
        N_("invalid number of days"),
        N_("a whole number of days from 1 to 365"),
        # report pages (issue 21): the first row of a page of a long table
        N_("must be a whole number from 0"),
        # printed documents (LBL-12; allocator/services/documents.py)
        N_("this document has been reprinted 999 times, the most allowed: use a printed copy"),
        # randomization and eligibility
        N_("the eligibility data are invalid"),
        N_("the stratification data are invalid"),
        N_("invalid screening number"),
        N_("is already randomized"),
        N_("is already registered"),  # an observational study (issue 20)
        N_("is already a closure"),  # the central lab's closures (issue 20)
        N_("the closure cannot be recorded"),
        N_("the closure cannot be withdrawn"),
        N_("has no closure"),
        N_("must be a whole number"),
        N_("must be a number"),
        N_("must be yes or no"),
        N_("is not a criterion of this trial"),
        N_("is not an entered stratification factor of this trial"),
        # dispensing
        N_("scan at least one kit"),
        N_("no kit scanned"),
        N_("some scans are not valid"),
        N_("wrong kit"),
        N_("already dispensed"),
        N_("expired: replace the kit"),
        N_("invalid cause"),
        N_("lost, damaged or expired"),
        # scanning (issue 13): what is wrong with one scan, beside its field
        N_("not this patient's kit"),
        N_("a label of another trial"),
        N_("a sample kit's label, not a drug kit's"),
        # issue 20: the cohort's tube sets and their collection scan
        N_("a drug kit's label, not a tube set's"),
        N_("unreadable: not a tube set's label or number"),
        N_("a tube set not assigned to anyone"),
        N_("another participant's or another sample's tube set"),
        N_("already collected"),
        N_("is before the registration"),
        N_("give at least one"),
        N_("is closed"),
        N_("the label's security code is wrong: not printed by this service, or altered"),
        N_("wrong check digit: scan or type the number again"),
        N_("unreadable: not a kit label or a kit number"),
        N_("this is a scanned label, not your password"),
        N_("a scanned label was typed into the password field: nothing was signed"),
        N_("some scans are refused"),
        N_("scan the kit"),
        N_("confirm with a reason, or do not give this dose"),
        N_("not in this shipment"),
        N_("a kit label, not a code-break sheet"),
        N_("a lab shipment manifest, not a code-break sheet"),
        N_("a sheet of another trial"),
        # kit returns and destruction (issue 19)
        N_("this kit is scanned twice"),
        N_("some kit numbers are not valid"),
        N_("the method is required"),
        N_("this record is signed"),
        N_("unknown record"),
        N_("must be return or destruction"),
        N_("some kits cannot be recorded"),
        N_("the kits are at different sites: record one site at a time"),
        N_("unknown sheet"),
        # bedside
        N_("the time needs a time zone"),
        N_("no time zone"),
        N_("invalid administration time"),
        N_("a late entry needs a reason"),
        N_("the label cannot be verified"),
        N_("another patient's or an unallocated kit"),
        N_("already given"),
        N_("not dispensed"),
        N_("expired"),
        N_("before randomization"),
        N_("is before randomization"),
        N_("invalid time"),
        N_("date and time"),
        N_("this time did not exist that day: the clocks went forward"),  # web/forms.local_moment
        N_("time skipped by the change to summer time"),
        # unblinding
        N_("give exactly one subject number; nothing was revealed"),
        N_("one subject number, no list or wildcard"),
        N_("the unblinding request is incomplete; nothing was revealed"),
        N_("confirm that you want to break the blind of this subject"),
        N_("give a date and time"),
        N_("give the time with its time zone"),
        N_("name the person who opened the sheet"),
        N_("investigator, physician, pharmacist or other"),
        N_("the offline unblinding cannot be registered"),
        N_("opened before the subject was randomized"),
        N_("is before the randomization of the kit's subject"),
        N_("the report is incomplete"),
        N_("the report names a treatment"),
        N_("do not write the treatment in this report: it is read by blinded staff"),
        N_("name the subject or the site"),
        # corrections and withdrawals
        N_("is longer than allowed"),
        # administration, code-break sheets, lists, close-out
        N_("unknown sheet"),
        N_("must be a date (YYYY-MM-DD)"),
        N_("must be an entry number"),
        N_("the code-break sheets cannot be printed"),
        N_("an offline unblinding names this sheet, but it was last found intact"),
        N_(
            "found opened without a registered offline unblinding (protocol deviation): register the "
            "opening or report an accidental unblinding"
        ),
        N_("missing and not replaced: generate a replacement"),
        N_("is taken"),
        N_("unknown trial"),
        N_("unknown user"),
        N_("is deactivated"),
        N_("is in the past"),
        N_("the account cannot be created"),
        N_("is required (the printed name on signatures)"),
        N_("must be one e-mail address, such as name@hospital.fr"),
        N_("3-64 characters: lower-case letters, digits, '.', '_' or '-'"),
        N_("a site needs a trial"),
        N_("you cannot grant a role to your own account"),
        N_("the end must be in the future"),
        N_("this role assignment is already revoked"),
        # labship (issue 20): lab shipments of samples and their receipt at the central lab
        N_("scan or type a tube set"),
        N_("a shipment manifest, not a tube set"),
        N_("a manifest, not a tube set"),
        N_("the tube set cannot be read"),
        N_("a label of another study"),
        N_("a drug kit's label, not a tube set's"),
        N_("unreadable: not a tube set's label or number"),
        N_("listed twice"),
        N_("some tube sets cannot be shipped"),
        N_("no tube set"),
        N_("scan or pick at least one tube set"),
        N_("not a tube set of this study"),
        N_("a tube set of another site"),
        N_("already in another shipment"),
        N_("no such shipment"),
        N_("a manifest of another study"),
        N_("the manifest's security code is wrong: not printed by this service, or altered"),
        N_("a kit label, not a shipment manifest"),
        N_("unreadable: not a shipment manifest or number"),
        N_("the manifest cannot be read"),
        N_("not a shipment number"),
        N_("scan the manifest's QR or type its number (LS-0001)"),
        N_("why unusable?"),
        N_("say why the sample is unusable"),
        N_("note too long"),
        N_("unknown tube set"),
        N_("the lab technician role is for an observational study"),
        N_("is for an observational study (its central lab)"),
        # issue 20, the review of the merged cohort: summaries a French reader met in English
        N_("invalid tube-set numbers"),
        N_("invalid damage report"),
        N_("invalid collection time"),
        N_("unknown sample"),
        N_("before registration"),
        N_("invalid tube-set generation"),
        N_("unknown tube sets"),
        N_("print new labels and reprints separately"),
        N_("unknown cursor"),
        N_("invalid status"),
        N_("invalid site"),
        N_("invalid before"),
        N_("invalid offset"),  # a report page's or a long table's window (Window.parse)
        N_("invalid after"),
        N_("give it once"),
        N_("unreadable file"),  # a kit-list CSV the csv module cannot read (a field past its limit)
        # Pages' refusals that were shown in English on French pages (the review of 2026-12-07)
        N_("invalid cursor"),
        N_("must be a sequence number"),
        N_("invalid entry"),
        N_("invalid size"),
        N_("invalid proposal"),
        N_("invalid count"),
        N_("invalid report filter"),
        N_("must be in a year from 2000 to 2099, which the labels can print"),  # supply/kit_rules.py
        N_("invalid expiry"),
        N_("is not in the future"),
        # kit lists generated or imported (services/supply/kit_lists.py, web/supply.py); a column
        # of the imported file is named as its header names it
        N_("2-32 characters A-Z, 0-9 and '-'"),
        N_("invalid batch"),
        N_("invalid count"),
        N_("unknown kit type"),
        N_("choose a file"),
        N_("not UTF-8"),
        N_("must be UTF-8 CSV"),
        N_("no kit in the file"),
        N_("one kit type per file"),
        N_("several kit types"),
        N_("expiry: must be YYYY-MM-DD"),
        N_("expiry: is not in the future"),
        N_("expiry: must be in a year from 2000 to 2099, which the labels can print"),
        N_("lot_code: 2-32 characters A-Z, 0-9 and '-'"),
        N_("a field of the form holds a character that no keyboard types: type it again"),  # web/hygiene.py
        N_("a field name contains a character that is not allowed"),
        N_("must be an hour from 0 to 24"),
        N_("must be later than hours_from"),
        N_("invalid within"),
        N_("not UTF-8"),
        N_("must be UTF-8 CSV"),
        N_("bad header"),
        N_("choose a file"),
        N_("not a CSV file this service can read"),
        N_("unknown status"),
        N_("invalid kind"),  # the returns page's filter (issue 21)
        N_("unknown kind"),
        # reasons the service writes itself into the audit trail (shown on the trail's page)
        N_("randomization list activated"),
        N_("recruitment open: a site was active already"),
    }
)

PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^first site activated \((?P<site>[^)]+)\): recruitment open$"),
        N_("first site activated (%(site)s): recruitment open"),
    ),
    (
        re.compile(r"^must be at least (?P<count>\d+) characters long$"),
        N_("must be at least %(count)s characters long"),
    ),
    (
        re.compile(r"^at most (?P<count>\d+) printable characters$"),
        N_("at most %(count)s printable characters"),
    ),
    (
        re.compile(r"^contains a character that is not allowed \(U\+(?P<code>[0-9A-F]{4,6})\)$"),
        N_("contains a character that is not allowed (U+%(code)s)"),
    ),
    (
        re.compile(r"^must be at most (?P<count>\d+) characters long$"),
        N_("must be at most %(count)s characters long"),
    ),
    (
        re.compile(r"^too many failed attempts: try again after (?P<time>\S+) UTC, or ask an administrator$"),
        N_("too many failed attempts: try again after %(time)s UTC, or ask an administrator"),
    ),
    (
        re.compile(r"^must look like (?P<example>\S+) \(a pseudonymous number, no name\)$"),
        N_("must look like %(example)s (a pseudonymous number, no name)"),
    ),
    (
        re.compile(r"^(?P<value>\S+) is below the plausible minimum (?P<limit>\S+) (?P<unit>.*)$"),
        N_("%(value)s is below the plausible minimum %(limit)s %(unit)s"),
    ),
    (
        re.compile(r"^(?P<value>\S+) is above the plausible maximum (?P<limit>\S+) (?P<unit>.*)$"),
        N_("%(value)s is above the plausible maximum %(limit)s %(unit)s"),
    ),
    (re.compile(r"^(?P<date>\d{4}-\d\d-\d\d) is in the future$"), N_("%(date)s is in the future")),
    (
        re.compile(r"^(?P<date>\d{4}-\d\d-\d\d) is more than (?P<days>\d+) days ago$"),
        N_("%(date)s is more than %(days)s days ago"),
    ),
    (
        re.compile(r"^exclusion criterion present: (?P<label>.+)$"),
        N_("exclusion criterion present: %(label)s"),
    ),
    (
        re.compile(r"^inclusion criterion not met: (?P<label>.+)$"),
        N_("inclusion criterion not met: %(label)s"),
    ),
    (
        re.compile(r"^(?P<label>.+): (?P<value>\S+) (?P<unit>.*) is not (?P<range>[≥>≤<].*)$"),
        N_("%(label)s: %(value)s %(unit)s is not %(range)s"),
    ),
    (re.compile(r"^'(?P<value>.*)' is not one of .*$"), N_("%(value)s is not one of the choices")),
    (re.compile(r"^no site '(?P<site>.*)' within your reach$"), N_("no site %(site)s within your reach")),
    (
        re.compile(r"^['\"](?P<site>.*)['\"] is not a site of (?P<trial>\S+) within your reach$"),
        N_("%(site)s is not a site of %(trial)s within your reach"),
    ),
    (
        re.compile(r"^no shipment ['\"](?P<shipment>.*)['\"] within your reach$"),
        N_("no shipment %(shipment)s within your reach"),
    ),
    (
        re.compile(r"^no record ['\"](?P<record>.*)['\"] within your reach$"),
        N_("no record %(record)s within your reach"),
    ),
    (re.compile(r"^no excursion (?P<excursion>\S+)$"), N_("no excursion %(excursion)s")),
    (
        re.compile(r"^no excursion ['\"](?P<excursion>.*)['\"] within your reach$"),
        N_("no excursion %(excursion)s within your reach"),
    ),
    (re.compile(r"^no kit (?P<kit>\S+) within your reach$"), N_("no kit %(kit)s within your reach")),
    (
        re.compile(
            r"^the (?P<day>\S+) kit of (?P<subject>\S+) awaits its new expiry label: relabel it and confirm by "
            r"scan first$"
        ),
        N_(
            "the %(day)s kit of %(subject)s awaits its new expiry label: relabel it and confirm by scan first"
        ),
    ),
    (
        re.compile(
            r"^the (?P<day>\S+) kit of (?P<subject>\S+) is held by temperature excursion (?P<excursion>\S+): "
            r"wait for the sponsor's decision or replace the kit$"
        ),
        N_(
            "the %(day)s kit of %(subject)s is held by temperature excursion %(excursion)s: "
            "wait for the sponsor's decision or replace the kit"
        ),
    ),
    (
        re.compile(
            r"^kit (?P<kit>\S+) is held by excursion (?P<excursion>\S+) until the sponsor's decision$"
        ),
        N_("kit %(kit)s is held by excursion %(excursion)s until the sponsor's decision"),
    ),
    (
        re.compile(r"^awaits the sponsor's decision on (?P<excursion>\S+)$"),
        N_("awaits the sponsor's decision on %(excursion)s"),
    ),
    (
        re.compile(r"^excursion (?P<excursion>\S+) is already decided$"),
        N_("excursion %(excursion)s is already decided"),
    ),
    (
        re.compile(r"^site (?P<site>\S+) is (?P<status>\S+): it cannot randomize$"),
        N_("site %(site)s is %(status)s: it cannot randomize"),
    ),
    (
        re.compile(r"^no subject ['\"](?P<subject>.*)['\"] within your reach$"),
        N_("no subject %(subject)s within your reach"),
    ),
    (
        re.compile(r"^no subject (?P<subject>\S+) within your reach$"),
        N_("no subject %(subject)s within your reach"),
    ),
    (
        re.compile(r"^no subject (?P<subject>\S+) in (?P<trial>\S+)$"),
        N_("no subject %(subject)s in %(trial)s"),
    ),
    (
        re.compile(r"^this label is (?P<subject>\S+)'s (?P<label>\S+) dose, not (?P<day>\S+)$"),
        N_("this label is %(subject)s's %(label)s dose, not %(day)s"),
    ),
    (
        re.compile(r"^STOP: this label does not belong to (?P<subject>\S+)$"),
        N_("STOP: this label does not belong to %(subject)s"),
    ),
    (
        re.compile(r"^this label is printed for (?P<unit>\S+), not (?P<day>\S+)$"),
        N_("this label is printed for %(unit)s, not %(day)s"),
    ),
    (
        re.compile(r"^the (?P<day>\S+) dose of (?P<subject>\S+) was already given$"),
        N_("the %(day)s dose of %(subject)s was already given"),
    ),
    (
        re.compile(r"^the (?P<day>\S+) kit of (?P<subject>\S+) was not dispensed by the pharmacy$"),
        N_("the %(day)s kit of %(subject)s was not dispensed by the pharmacy"),
    ),
    (
        re.compile(r"^the (?P<day>\S+) kit of (?P<subject>\S+) is expired: do not give it$"),
        N_("the %(day)s kit of %(subject)s is expired: do not give it"),
    ),
    (
        re.compile(r"^(?P<screening>\S+) is not eligible: recorded in the screening log, not randomized$"),
        N_("%(screening)s is not eligible: recorded in the screening log, not randomized"),
    ),
    (
        re.compile(r"^(?P<screening>\S+) is not eligible: recorded in the screening log, not registered$"),
        N_("%(screening)s is not eligible: recorded in the screening log, not registered"),
    ),
    (
        re.compile(
            r"^no central-lab working day for the (?P<label>\S+) sample between (?P<first>\S+) and (?P<last>\S+)$"
        ),
        N_("no central-lab working day for the %(label)s sample between %(first)s and %(last)s"),
    ),
    (
        re.compile(r"^a query parameter is given more than once: (?P<names>.+)$"),  # hygiene.single_args
        N_("a query parameter is given more than once: %(names)s"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) is an observational study: register the patient instead$"),
        N_("%(trial)s is an observational study: register the patient instead"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) is an observational study: it has no arms, lists or drug kits$"),
        N_("%(trial)s is an observational study: it has no arms, lists or drug kits"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) randomizes its patients: it has no central-lab calendar$"),
        N_("%(trial)s randomizes its patients: it has no central-lab calendar"),
    ),
    (
        re.compile(r"^the lab is already closed on (?P<day>\S+)$"),
        N_("the lab is already closed on %(day)s"),
    ),
    (
        re.compile(r"^the lab has no closure on (?P<day>\S+) to withdraw$"),
        N_("the lab has no closure on %(day)s to withdraw"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) randomizes its patients: use the randomization$"),
        N_("%(trial)s randomizes its patients: use the randomization"),
    ),
    (
        re.compile(
            r"^(?P<label>.+): day (?P<days>-?\d+) after (?P<reference>\S+) is outside the window "
            r"day (?P<first>\d+) to day (?P<last>\d+)$"
        ),
        N_("%(label)s: day %(days)s after %(reference)s is outside the window day %(first)s to day %(last)s"),
    ),
    (
        re.compile(r"^(?P<days>.+) not recorded as given before (?P<day>\S+)$"),
        N_("%(days)s not recorded as given before %(day)s"),
    ),
    (re.compile(r"^(?P<day>\S+) was planned for (?P<date>\S+)$"), N_("%(day)s was planned for %(date)s")),
    (
        re.compile(r"^(?P<subject>\S+) was already withdrawn on (?P<date>\S+)$"),
        N_("%(subject)s was already withdrawn on %(date)s"),
    ),
    (re.compile(r"^the label is for (?P<day>\S+)$"), N_("the label is for %(day)s")),
    (
        re.compile(r"^(?P<status>\S+): keep it aside, it will not be made available$"),
        N_("%(status)s: keep it aside, it will not be made available"),
    ),
    (
        re.compile(r"^the shipment is (?P<status>\S+), not in transit$"),
        N_("the shipment is %(status)s, not in transit"),
    ),
    # labship (issue 20)
    (re.compile(r"^not collected \(it is (?P<status>\S+)\)$"), N_("not collected (it is %(status)s)")),
    (re.compile(r"^already scanned: (?P<status>\S+)$"), N_("already scanned: %(status)s")),
    (re.compile(r"^tube set already (?P<status>\S+)$"), N_("tube set already %(status)s")),
    (
        re.compile(r"^already printed, reprint separately: (?P<kits>.+)$"),
        N_("already printed, reprint separately: %(kits)s"),
    ),
    (re.compile(r"^site (?P<site>\S+) is closed$"), N_("site %(site)s is closed")),
    (
        re.compile(r"^no participant ['\"](?P<subject>.*)['\"] within your reach$"),
        N_("no participant %(subject)s within your reach"),
    ),
    (
        re.compile(
            r"^the (?P<label>\S+) sample of (?P<subject>\S+) cannot be recorded as missed before its "
            r"window opens on (?P<date>\S+)$"
        ),
        N_(
            "the %(label)s sample of %(subject)s cannot be recorded as missed before its window opens on %(date)s"
        ),
    ),
    (re.compile(r"^its window opens on (?P<date>\S+)$"), N_("its window opens on %(date)s")),
    (
        re.compile(r"^lab shipment (?P<number>\S+) is (?P<status>\S+), not (?P<expected>\S+)$"),
        N_("lab shipment %(number)s is %(status)s, not %(expected)s"),
    ),
    (re.compile(r"^no lab shipment (?P<number>\S+)$"), N_("no lab shipment %(number)s")),
    (re.compile(r"^no manifest (?P<document>\S+)$"), N_("no manifest %(document)s")),
    (
        re.compile(r"^a (?P<status>\S+) tube set cannot become (?P<target>\S+)$"),
        N_("a %(status)s tube set cannot become %(target)s"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) randomizes its patients: it has no samples$"),
        N_("%(trial)s randomizes its patients: it has no samples"),
    ),
    (re.compile(r"^one of (?P<choices>.+)$"), N_("one of %(choices)s")),
    (
        re.compile(r"^this patient's kit for (?P<other>\S+), not (?P<day>\S+)$"),
        N_("this patient's kit for %(other)s, not %(day)s"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is the (?P<other>\S+) kit of (?P<subject>\S+), not (?P<day>\S+)$"),
        N_("kit %(kit)s is the %(other)s kit of %(subject)s, not %(day)s"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is not the kit allocated to (?P<subject>\S+) for (?P<day>\S+)$"),
        N_("kit %(kit)s is not the kit allocated to %(subject)s for %(day)s"),
    ),
    (
        re.compile(r"^the (?P<day>\S+) kit of (?P<subject>\S+) was already dispensed$"),
        N_("the %(day)s kit of %(subject)s was already dispensed"),
    ),
    (
        re.compile(r"^the (?P<day>\S+) kit of (?P<subject>\S+) expires before its day: replace it$"),
        N_("the %(day)s kit of %(subject)s expires before its day: replace it"),
    ),
    (re.compile(r"^one of:? (?P<choices>.+)$"), N_("choose one of the proposed answers")),
    (
        re.compile(r"^describe the reason \(at least (?P<count>\d+) characters\)$"),
        N_("describe the reason (at least %(count)s characters)"),
    ),
    (
        re.compile(r"^the subject was withdrawn on (?P<date>\S+)$"),
        N_("the subject was withdrawn on %(date)s"),
    ),
    (re.compile(r"^is longer than (?P<count>\d+) characters$"), N_("is longer than %(count)s characters")),
    (re.compile(r"^at most (?P<count>\d+) characters$"), N_("at most %(count)s characters")),
    (re.compile(r"^at most (?P<count>\d+)$"), N_("at most %(count)s")),
    (re.compile(r"^no code-break sheet (?P<sheet>\S+)$"), N_("no code-break sheet %(sheet)s")),
    (
        re.compile(r"^no code-break sheet (?P<sheet>\S+) within your reach$"),
        N_("no code-break sheet %(sheet)s within your reach"),
    ),
    (
        re.compile(r"^describe what was found \(required for a (?P<status>\S+) sheet\)$"),
        N_("describe what was found (required for an opened or missing sheet)"),
    ),
    (
        re.compile(
            r"^sheet (?P<sheet>\S+) is opened but no offline unblinding names it: register the opening, "
            r"or report an accidental unblinding \(protocol deviation\)$"
        ),
        N_(
            "sheet %(sheet)s is opened but no offline unblinding names it: register the opening, or "
            "report an accidental unblinding (protocol deviation)"
        ),
    ),
    (
        re.compile(r"^sheet (?P<sheet>\S+) was already replaced by (?P<other>\S+)$"),
        N_("sheet %(sheet)s was already replaced by %(other)s"),
    ),
    (re.compile(r"^no kit (?P<kit>\S+) in (?P<trial>\S+)$"), N_("no kit %(kit)s in %(trial)s")),
    (
        re.compile(r"^kit (?P<kit>\S+) is at no site within your reach$"),
        N_("kit %(kit)s is at no site within your reach"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) has already left the site's stock$"),
        N_("kit %(kit)s has already left the site's stock"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is in quarantine: it waits for the sponsor's decision$"),
        N_("kit %(kit)s is in quarantine: it waits for the sponsor's decision"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is allocated to a subject: replace it through the subject first$"),
        N_("kit %(kit)s is allocated to a subject: replace it through the subject first"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is not in the site's stock$"),
        N_("kit %(kit)s is not in the site's stock"),
    ),
    (
        re.compile(r"^no record (?P<record>\S+) within your reach$"),
        N_("no record %(record)s within your reach"),
    ),
    (
        re.compile(
            r"^site (?P<site>\S+): (?P<shipped>\d+) kits shipped but (?P<accounted>\d+) accounted for$"
        ),
        N_("site %(site)s: %(shipped)s kits shipped but %(accounted)s accounted for"),
    ),
    (re.compile(r"^kit (?P<kit>\S+) has sheet (?P<sheet>\S+)$"), N_("kit %(kit)s has sheet %(sheet)s")),
    (
        re.compile(r"^the (?P<role>\S+) role must be granted for a site$"),
        N_("this role must be granted for a site"),
    ),
    (re.compile(r"^no user '?(?P<user>[^']+)'?$"), N_("no user %(user)s")),
    # issue 20: the cohort's tube sets (services/samples)
    (
        re.compile(r"^a whole number from 1 to (?P<count>\d+)$"),
        N_("a whole number from 1 to %(count)s"),
    ),
    (re.compile(r"^no (?P<type>\S+) tube set available$"), N_("no %(type)s tube set available")),
    (
        re.compile(
            r"^no (?P<type>\S+) tube set available at site (?P<site>\S+) for the (?P<label>\S+) sample$"
        ),
        N_("no %(type)s tube set available at site %(site)s for the %(label)s sample"),
    ),
    (
        re.compile(r"^STOP: tube set (?P<kit>\S+) is not assigned to any participant$"),
        N_("STOP: tube set %(kit)s is not assigned to any participant"),
    ),
    (
        re.compile(r"^STOP: tube set (?P<kit>\S+) is not (?P<subject>\S+)'s (?P<label>\S+) tube set$"),
        N_("STOP: tube set %(kit)s is not %(subject)s's %(label)s tube set"),
    ),
    (
        re.compile(r"^the (?P<label>\S+) sample of (?P<subject>\S+) was already collected$"),
        N_("the %(label)s sample of %(subject)s was already collected"),
    ),
    (
        re.compile(
            r"^the (?P<label>\S+) tube set of (?P<subject>\S+) is (?P<status>\S+): it cannot be collected$"
        ),
        N_("the %(label)s tube set of %(subject)s is %(status)s: it cannot be collected"),
    ),
    (
        re.compile(
            r"^the (?P<label>\S+) sample is due from (?P<first>\S+) to (?P<last>\S+), planned (?P<planned>\S+)$"
        ),
        N_("the %(label)s sample is due from %(first)s to %(last)s, planned %(planned)s"),
    ),
    (re.compile(r"^planned (?P<date>\d{4}-\d\d-\d\d)$"), N_("planned %(date)s")),
    (
        re.compile(r"^no tube set (?P<kit>\S+) within your reach$"),
        N_("no tube set %(kit)s within your reach"),
    ),
    (
        re.compile(
            r"^tube set (?P<kit>\S+) is (?P<status>\S+): only an available one can be marked damaged$"
        ),
        N_("tube set %(kit)s is %(status)s: only an available one can be marked damaged"),
    ),
    (
        re.compile(
            r"^the (?P<label>\S+) sample of (?P<subject>\S+) is (?P<status>.+), not missed: there is nothing to "
            r"withdraw$"
        ),
        N_("the %(label)s sample of %(subject)s is %(status)s, not missed: there is nothing to withdraw"),
    ),
    (
        re.compile(
            r"^the (?P<label>\S+) sample of (?P<subject>\S+) is (?P<status>.+): it cannot be recorded as missed$"
        ),
        N_("the %(label)s sample of %(subject)s is %(status)s: it cannot be recorded as missed"),
    ),
    (
        re.compile(r"^(?P<trial>\S+) randomizes its patients: it has no tube sets$"),
        N_("%(trial)s randomizes its patients: it has no tube sets"),
    ),
    (
        re.compile(r"^a (?P<status>\S+) tube set cannot become (?P<other>\S+)$"),
        N_("a %(status)s tube set cannot become %(other)s"),
    ),
    (
        re.compile(
            r"^is (?P<status>assigned|collected|missed|damaged|shipped|received|unusable|available|without a tube set)$"
        ),
        N_("is %(status)s"),
    ),
    # kit lists (services/supply/kit_lists.py)
    (
        re.compile(r"^batch (?P<lot>\S+) expires on (?P<date>\d{4}-\d{2}-\d{2})$"),
        N_("batch %(lot)s expires on %(date)s"),
    ),
    (
        re.compile(r"^a multiple of (?P<block>\d+) \(whole balanced blocks\), at most 100000$"),
        N_("a multiple of %(block)s (whole balanced blocks), at most 100000"),
    ),
    (
        re.compile(r"^the header must contain (?P<columns>[a-z_, ]+)$"),
        N_("the header must contain %(columns)s"),
    ),
    (
        re.compile(r"^batch (?P<lot>\S+) exists with expiry (?P<date>\d{4}-\d{2}-\d{2})$"),
        N_("batch %(lot)s exists with the expiry %(date)s"),
    ),
    (
        re.compile(r"^(?P<file>.+): the kit list is refused; nothing was imported$"),
        N_("%(file)s: the kit list is refused; nothing was imported"),
    ),
    (
        re.compile(
            r"^kit_number: kit number contains (?P<char>'.+') at position (?P<position>\d+): "
            r"only digits 0-9 are allowed$"
        ),
        N_(
            "kit_number: the kit number contains %(char)s at position %(position)s: only digits 0-9 are allowed"
        ),
    ),
    (
        re.compile(r"^kit_number: kit number has no digits, expected (?P<expected>\d+)$"),
        N_("kit_number: the kit number has no digits, %(expected)s expected"),
    ),
    (
        re.compile(r"^kit_number: kit number has (?P<count>\d+) digits?, expected (?P<expected>\d+)$"),
        N_("kit_number: the kit number has %(count)s digits, %(expected)s expected"),
    ),
    (
        re.compile(
            r"^kit_number: kit number (?P<number>[\d-]+) has a wrong check digit: it was probably mistyped$"
        ),
        N_("kit_number: the kit number %(number)s has a wrong check digit: it was probably mistyped"),
    ),
    (
        re.compile(r"^kit_number: (?P<number>\S+) appears twice or already exists$"),
        N_("kit_number: %(number)s appears twice in the file or already exists"),
    ),
    (
        re.compile(r"^arm: (?P<arm>'.*') is not an arm of (?P<trial>\S+)$"),
        N_("arm: %(arm)s is not an arm of %(trial)s"),
    ),
    (
        re.compile(r"^kit_type: (?P<kit_type>'.*') is unknown$"),
        N_("kit_type: %(kit_type)s is unknown"),
    ),
    (
        re.compile(r"^expiry: batch (?P<lot>\S+) was given expiry (?P<date>\S+) on line (?P<line>\d+)$"),
        N_("expiry: batch %(lot)s was given the expiry %(date)s on line %(line)s"),
    ),
    # kit reconciliation (services/supply/reconciliation.py): statuses are given words by the caller
    (
        re.compile(
            r"^kit (?P<kit>\S+): the event at (?P<time>\S+ \S+) starts from (?P<status>\S+), not (?P<previous>\S+)$"
        ),
        N_("kit %(kit)s: the event of %(time)s starts from %(status)s, not from %(previous)s"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is (?P<status>\S+) but its history ends at (?P<previous>\S+)$"),
        N_("kit %(kit)s is %(status)s but its history ends at %(previous)s"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+): its statuses ever entered differ from its history$"),
        N_("kit %(kit)s: the statuses it ever entered differ from its history"),
    ),
    (
        re.compile(r"^kit (?P<kit>\S+) is (?P<status>\S+) but at no site$"),
        N_("kit %(kit)s is %(status)s but at no site"),
    ),
    (
        re.compile(
            r"^shipment (?P<shipment>\S+) records (?P<count>\d+) kits but (?P<found>\d+) kits belong to it$"
        ),
        N_("shipment %(shipment)s records %(count)s kits but %(found)s kits belong to it"),
    ),
    (
        re.compile(
            r"^shipment (?P<shipment>\S+) was received but (?P<count>\d+) of its kits are still in transit$"
        ),
        N_("shipment %(shipment)s was received but %(count)s of its kits are still in transit"),
    ),
)


# The values of a pattern that are statuses (`collected`, `shipped`): shown in words.
STATUS_GROUPS = frozenset({"status", "expected", "previous", "target"})


def translate(
    message: str,
    names: Mapping[str, str],
    gettext: Gettext,
    status_word: Callable[[str], str] | None = None,
) -> str | None:
    """`message` in the language of `gettext`, a value that is a key of `names` swapped for its
    name, and a status (a value of STATUS_GROUPS: `collected`, `shipped`) given in words by
    `status_word`; None when it is not a known service message."""
    if message in KNOWN:
        return gettext(message)
    for pattern, template in PATTERNS:
        match = pattern.match(message)
        if match:
            values = {key: names.get(value, value) for key, value in match.groupdict().items()}
            if status_word is not None:
                for key in STATUS_GROUPS & match.groupdict().keys():
                    if match.group(key) not in names:
                        values[key] = status_word(match.group(key))
            return gettext(template) % values
    return None
