"""Open CSV tables with a data dictionary (DIB-07): `subjects.csv` (one row per subject),
`dispensing.csv` (one row per subject and dose day) and `data_dictionary.csv` (every column of both,
its type, meaning and codes). UTF-8, comma-separated, RFC 4180 quoting, CRLF line ends; times in
UTC (ISO 8601 with Z). Cells that a spreadsheet would run as a formula are neutralised (ACC-11).
The arm column exists only in an unblinded export. Pure: takes a Dataset, returns files as bytes.
"""

from __future__ import annotations

from allocator.printing import safe_csv
from allocator.services.exports.dataset import DOSE_STATUSES, WITHDRAWAL_KINDS, Dataset, utc_text

SUBJECTS = "subjects.csv"
DISPENSING = "dispensing.csv"
DICTIONARY = "data_dictionary.csv"
DICTIONARY_COLUMNS = ["table", "column", "type", "description", "codes"]


def _codes(values: dict[str, str]) -> str:
    return " | ".join(f"{code}={label}" for code, label in values.items())


def dictionary(data: Dataset) -> list[list[str]]:
    factors = data.definition.stratification
    rows = [
        [SUBJECTS, "subject_number", "text", "Subject number (the record key)", ""],
        [SUBJECTS, "site", "code", "Site", _codes({s.code: f"{s.name}, {s.city}" for s in data.sites})],
        [SUBJECTS, "screening_number", "text", "The site's pseudonymous screening number", ""],
        [SUBJECTS, "randomization_number", "text", "Randomization number", ""],
        [SUBJECTS, "randomized_at", "datetime (UTC)", "Time of randomization", ""],
    ]
    for f in factors:
        codes = _codes({lv.code: lv.label.en for lv in f.levels})
        rows.append([SUBJECTS, f"stratum_{f.code}", "code", f"{f.label.en}, as used at randomization", codes])
    for f in factors:
        codes = _codes({lv.code: lv.label.en for lv in f.levels})
        rows.append(
            [SUBJECTS, f"corrected_{f.code}", "code", f"{f.label.en}, as corrected (empty if never)", codes]
        )
    rows += [
        [
            SUBJECTS,
            "randomized_in_error",
            "yes/no",
            "Flagged as randomized in error (kept, never deleted)",
            "",
        ],
        [SUBJECTS, "blind_broken", "yes/no", "The subject's blind was broken (emergency or accidental)", ""],
        [SUBJECTS, "withdrawal", "code", "Withdrawal, if any", _codes(WITHDRAWAL_KINDS)],
        [SUBJECTS, "withdrawal_date", "date", "Effective date of the withdrawal (site calendar)", ""],
    ]
    if not data.blinded:
        arms = _codes({a.code: a.label for a in data.definition.arms})
        rows.append([SUBJECTS, "arm", "code", "Arm allocated (unblinded export only)", arms])
    rows += [
        [DISPENSING, "subject_number", "text", "Subject number (subjects.csv)", ""],
        [DISPENSING, "day", "integer", "Dose day of the schedule", ""],
        [DISPENSING, "day_label", "text", "Label of the dose day", ""],
        [
            DISPENSING,
            "kit_number",
            "text",
            "Kit allocated for the day (the last one, after replacements)",
            "",
        ],
        [DISPENSING, "kit_type", "code", "Kit type", ""],
        [DISPENSING, "status", "code", "Status of the dose", _codes(DOSE_STATUSES)],
        [DISPENSING, "dispensed_at", "datetime (UTC)", "Time the pharmacy dispensed the kit", ""],
        [DISPENSING, "administered_at", "datetime (UTC)", "Time of administration stated by the nurse", ""],
        [DISPENSING, "replacements", "integer", "Number of kit replacements for the day", ""],
    ]
    return rows


def _csv(rows: list[list[str]]) -> bytes:
    return safe_csv.csv_text(rows).encode("utf-8")


def subject_rows(data: Dataset) -> list[list[str]]:
    factors = data.definition.stratification
    header = ["subject_number", "site", "screening_number", "randomization_number", "randomized_at"]
    header += [f"stratum_{f.code}" for f in factors] + [f"corrected_{f.code}" for f in factors]
    header += ["randomized_in_error", "blind_broken", "withdrawal", "withdrawal_date"]
    if not data.blinded:
        header.append("arm")
    rows = [header]
    for s in data.subjects:
        row = [
            s.subject_number,
            s.site,
            s.screening_number,
            s.randomization_number,
            utc_text(s.randomized_at),
        ]
        row += [s.strata.get(f.code, "") for f in factors]
        row += [s.strata_corrected.get(f.code, "") if s.corrected else "" for f in factors]
        row += [
            "yes" if s.in_error else "no",
            "yes" if s.blind_broken else "no",
            s.withdrawal_kind or "",
            s.withdrawal_date.isoformat() if s.withdrawal_date else "",
        ]
        if not data.blinded:
            row.append(s.arm or "")
        rows.append(row)
    return rows


def dispensing_rows(data: Dataset) -> list[list[str]]:
    rows = [
        [
            "subject_number",
            "day",
            "day_label",
            "kit_number",
            "kit_type",
            "status",
            "dispensed_at",
            "administered_at",
            "replacements",
        ]
    ]
    for s in data.subjects:
        for d in s.doses:
            rows.append(
                [
                    s.subject_number,
                    str(d.day),
                    d.label,
                    d.kit_number,
                    d.kit_type,
                    d.status,
                    utc_text(d.dispensed_at),
                    utc_text(d.administered_at),
                    str(d.replacements),
                ]
            )
    return rows


def render(data: Dataset) -> dict[str, bytes]:
    """File name -> content."""
    return {
        SUBJECTS: _csv(subject_rows(data)),
        DISPENSING: _csv(dispensing_rows(data)),
        DICTIONARY: _csv([DICTIONARY_COLUMNS, *dictionary(data)]),
    }
