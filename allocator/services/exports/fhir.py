"""HL7 FHIR R4 Bundle (type `collection`) of a trial: one `ResearchStudy` and one `ResearchSubject`
per subject, with its status, period and identifiers (DIB-07).

The resources use only elements that R4 (4.0.1) and R4B (4.3.0) define alike; the tests validate
the Bundle with `fhir.resources` (its R4B models). A blinded Bundle has no `arm` on the study and
no `assignedArm` on any subject (BLD-01); an unblinded one adds both. The patient is referred to by
the site's pseudonymous screening number only (DIB-06). Pure: takes a Dataset, returns UTF-8 JSON.
"""

from __future__ import annotations

import json
import re
import uuid

from allocator.services.exports.dataset import Dataset, ExportSubject, utc_text

SYSTEM = "urn:allocator"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")

# Trial status -> ResearchStudy.status (R4 code system research-study-status).
STUDY_STATUS = {
    "setup": "approved",
    "active": "active",
    "locked": "closed-to-accrual-and-intervention",
    "unblinded": "completed",
}
# Withdrawal kind -> ResearchSubject.status (R4 code system research-subject-status).
SUBJECT_STATUS = {
    "treatment_discontinued": "off-study",
    "consent_withdrawn": "withdrawn",
    "lost_to_follow_up": "off-study",
}


def resource_id(text: str) -> str:
    """A FHIR id ([A-Za-z0-9-.]{1,64}) for a subject number or trial code."""
    return _ID_UNSAFE.sub("-", text)[:64]


def _urn(data: Dataset, kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{SYSTEM}:{data.trial_code}:{kind}:{key}')}"


def _study(data: Dataset) -> dict[str, object]:
    definition = data.definition
    study: dict[str, object] = {
        "resourceType": "ResearchStudy",
        "id": resource_id(data.trial_code),
        "identifier": [
            {"system": f"{SYSTEM}:trial", "value": data.trial_code},
            {"system": "https://clinicaltrials.gov", "value": definition.nct_number},
            *(
                [{"system": "https://euclinicaltrials.eu", "value": definition.eu_ct_number}]
                if definition.eu_ct_number
                else []
            ),
            {"system": f"{SYSTEM}:sponsor-protocol", "value": definition.sponsor_protocol_code},
        ],
        "title": definition.title,
        "status": STUDY_STATUS.get(data.trial_status, "active"),
        "phase": {"text": definition.phase},
        "description": definition.design,
        "sponsor": {"display": definition.sponsor.name},
        "site": [{"display": f"{s.code}: {s.name}, {s.city}"} for s in data.sites],
    }
    if not data.blinded:
        study["arm"] = [{"name": a.code, "description": a.label} for a in definition.arms]
    return study


def _subject(data: Dataset, subject: ExportSubject) -> dict[str, object]:
    period: dict[str, str] = {"start": utc_text(subject.randomized_at)}
    if subject.withdrawal_date is not None:
        period["end"] = subject.withdrawal_date.isoformat()
    status = "on-study"
    if subject.withdrawal_kind is not None:
        status = SUBJECT_STATUS.get(subject.withdrawal_kind, "off-study")
    if subject.in_error:
        status = "ineligible"
    resource: dict[str, object] = {
        "resourceType": "ResearchSubject",
        "id": resource_id(subject.subject_number),
        "identifier": [
            {"system": f"{SYSTEM}:{data.trial_code}:subject-number", "value": subject.subject_number},
            {
                "system": f"{SYSTEM}:{data.trial_code}:randomization-number",
                "value": subject.randomization_number,
            },
        ],
        "status": status,
        "period": period,
        "study": {"reference": f"ResearchStudy/{resource_id(data.trial_code)}"},
        "individual": {
            "identifier": {
                "system": f"{SYSTEM}:{data.trial_code}:site:{subject.site}:screening-number",
                "value": subject.screening_number,
            },
            "display": f"screening {subject.screening_number} at site {subject.site}",
        },
    }
    if not data.blinded and subject.arm is not None:
        resource["assignedArm"] = subject.arm
        resource["actualArm"] = subject.arm
    return resource


def render(data: Dataset) -> bytes:
    """The Bundle as UTF-8 JSON, keys sorted, so the same data give the same bytes."""
    study = _study(data)
    entries = [{"fullUrl": _urn(data, "study", data.trial_code), "resource": study}]
    entries += [
        {"fullUrl": _urn(data, "subject", s.subject_number), "resource": _subject(data, s)}
        for s in data.subjects
    ]
    bundle = {
        "resourceType": "Bundle",
        "id": resource_id(f"{data.trial_code}-{data.generated_at:%Y%m%dT%H%M%SZ}"),
        "identifier": {
            "system": f"{SYSTEM}:export",
            "value": f"{data.trial_code}/{utc_text(data.generated_at)}",
        },
        "type": "collection",
        "timestamp": utc_text(data.generated_at),
        "entry": entries,
    }
    return (json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
