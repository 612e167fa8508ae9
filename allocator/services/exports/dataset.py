"""What every export format holds, as plain values: the trial, its definition, and each subject as
every role of the trial may see it (no arm, no block, no list position: BLD-01), plus the arm only
when the export is unblinded (after the final unblinding, DIB-07).

Pure: the formats (odm, fhir, redcap, tables) take a `Dataset` and return bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from allocator.trialdef import TrialDefinition


@dataclass(frozen=True, slots=True)
class Dose:
    day: int
    label: str
    kit_type: str
    kit_number: str
    status: str  # allocated | dispensed | administered
    dispensed_at: datetime | None
    administered_at: datetime | None
    replacements: int


@dataclass(frozen=True, slots=True)
class ExportSubject:
    subject_number: str
    screening_number: str
    randomization_number: str
    site: str
    randomized_at: datetime
    strata: dict[str, str]  # as used at randomization (RND-09)
    strata_corrected: dict[str, str]  # as corrected; equal to `strata` when never corrected
    in_error: bool
    blind_broken: bool
    withdrawal_kind: str | None
    withdrawal_date: date | None
    doses: tuple[Dose, ...]
    arm: str | None = None  # only in an unblinded dataset

    @property
    def corrected(self) -> bool:
        return self.strata_corrected != self.strata


@dataclass(frozen=True, slots=True)
class Site:
    code: str
    name: str
    city: str


@dataclass(frozen=True, slots=True)
class Dataset:
    trial_code: str
    trial_status: str
    definition_version: int
    definition: TrialDefinition
    sites: tuple[Site, ...]
    subjects: tuple[ExportSubject, ...]
    blinded: bool
    generated_at: datetime
    generated_by: str
    software_version: str

    def kit_type(self, day: int) -> str:
        for d in self.definition.dispensing.schedule:
            if d.day == day:
                return d.kit_type
        return ""


WITHDRAWAL_KINDS = {
    "treatment_discontinued": "Treatment discontinued",
    "consent_withdrawn": "Consent withdrawn",
    "lost_to_follow_up": "Lost to follow-up",
}
DOSE_STATUSES = {"allocated": "Allocated", "dispensed": "Dispensed", "administered": "Administered"}


def utc_text(moment: datetime | None) -> str:
    """ISO 8601 in UTC with a Z, to the second (the precision every format here agrees on)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
