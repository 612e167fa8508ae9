"""REDCap data-import CSV (DIB-07): one row per subject, for a REDCap project used as the trial's EDC.

Field names come from the trial definition's `[exports.redcap]` table (docs/trial-definition.md),
with defaults. REDCap's conventions: the record id first (`record_id` by default, filled with the
subject number), then `redcap_event_name` when the project is longitudinal; datetimes as
`YYYY-MM-DD HH:MM` and dates as `YYYY-MM-DD` in the trial's time zone (what REDCap's `datetime_ymd`
and `date_ymd` fields import); yes/no fields as 1/0; multiple-choice fields as their raw codes (the
stratum levels, the withdrawal kinds, the dispensing statuses). The arm column exists only in an
unblinded export. Pure: takes a Dataset, returns UTF-8 CSV bytes.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from allocator.printing import safe_csv
from allocator.services.exports.dataset import Dataset
from allocator.trialdef import RedcapFields


def _day_key(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower())


def columns(data: Dataset) -> list[str]:
    """The CSV header, in REDCap's order (record id first)."""
    f: RedcapFields = data.definition.exports.redcap
    out = [f.record_id]
    if f.event_name is not None:
        out.append("redcap_event_name")
    out += [f.site, f.screening_number, f.randomization_number, f.randomization_datetime]
    out += [f.strata_prefix + factor.code for factor in data.definition.stratification]
    out += [f.corrected_prefix + factor.code for factor in data.definition.stratification]
    out += [f.randomized_in_error, f.blind_broken, f.withdrawal, f.withdrawal_date]
    for day in data.definition.dispensing.schedule:
        key = _day_key(day.label)
        out += [f.kit_prefix + key, f.dispensed_prefix + key, f.administered_prefix + key]
    if not data.blinded:
        out.append(f.arm)
    return out


def render(data: Dataset) -> bytes:
    f = data.definition.exports.redcap
    zone = ZoneInfo(data.definition.timezone)

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment is not None else ""

    table: list[list[str]] = [columns(data)]
    for s in data.subjects:
        row = [s.subject_number]
        if f.event_name is not None:
            row.append(f.event_name)
        row += [s.site, s.screening_number, s.randomization_number, local(s.randomized_at)]
        row += [s.strata.get(factor.code, "") for factor in data.definition.stratification]
        row += [
            s.strata_corrected.get(factor.code, "") if s.corrected else ""
            for factor in data.definition.stratification
        ]
        row += [
            "1" if s.in_error else "0",
            "1" if s.blind_broken else "0",
            s.withdrawal_kind or "",
            s.withdrawal_date.isoformat() if s.withdrawal_date else "",
        ]
        doses = {d.day: d for d in s.doses}
        for day in data.definition.dispensing.schedule:
            dose = doses.get(day.day)
            row += (
                [dose.kit_number, local(dose.dispensed_at), local(dose.administered_at)]
                if dose is not None
                else ["", "", ""]
            )
        if not data.blinded:
            row.append(s.arm or "")
        table.append(row)
    # A data-import file read by REDCap, not opened by people: the values go as they are.
    return safe_csv.csv_text(table, neutralise=False).encode("utf-8")
