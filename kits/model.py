"""Plain input types of the label and sheet renderers.

BLD-01 / LBL-03: none of these types has an arm, treatment or product-identity field of any kind, so a
label or a sheet cannot differ between arms: the renderers only ever see what is printed on the labels of
both arms alike (the blinded product name names active and placebo together, LBL-01(b)). Per-kit data is
limited to the kit number, its QR payload, the blinded lot code, the expiry, the unit and the site.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from kits.errors import KitNumberError, LabelDataError, PayloadError
from kits.numbers import normalize_kit_number
from kits.payload import parse_payload, validate_trial_code, validate_unit
from kits.text import check_optional, check_printable, check_required

# LBL-12: the duplicate marking of every document is laid out for reprint numbers of up to three
# digits (the test-mode status line of a dispensation sheet shrinks to fit no. 999); the services
# refuse a further reprint before rendering it (allocator/services/documents.py).
MAX_REPRINT_NUMBER = 999

_EU_CT = re.compile(r"\d{4}-\d{6}-\d{2}-\d{2}")
_NCT = re.compile(r"NCT\d{8}")
_PHONE = re.compile(r"\+?[0-9][0-9 .()/-]{5,28}[0-9]")
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def check_aware(value: datetime, field: str) -> datetime:
    """AUD-07: a time without a zone is ambiguous; every printed time must be an aware datetime."""
    if not isinstance(value, datetime):
        raise LabelDataError(f"{field} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise LabelDataError(f"{field} must be timezone-aware (naive datetimes are ambiguous)")
    return value


def _check_phone(value: str, field: str) -> str:
    check_required(value, field, 40)
    if not _PHONE.fullmatch(value):
        raise LabelDataError(
            f"{field} {value!r} does not look like a phone number (digits, spaces, + . ( ) / -)"
        )
    return value


@dataclass(frozen=True)
class Bilingual:
    """A text in French (printed first, LBL-04) and English."""

    fr: str
    en: str

    def check(self, field: str, max_length: int = 500) -> None:
        """Both languages are required and printable."""
        check_required(self.fr, f"{field} (fr)", max_length)
        check_required(self.en, f"{field} (en)", max_length)


@dataclass(frozen=True)
class Expiry:
    """Period of use, month precision (CTR Annex VI A.1(k)). Printed ``MM/YYYY``: a four-digit year
    cannot be mistaken for a month or a day, so the date reads the same in French and English."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not isinstance(self.year, int) or not 2000 <= self.year <= 2099:
            raise LabelDataError(f"expiry year {self.year!r} must be between 2000 and 2099")
        if not isinstance(self.month, int) or not 1 <= self.month <= 12:
            raise LabelDataError(f"expiry month {self.month!r} must be between 1 and 12")

    @property
    def text(self) -> str:
        """``03/2027``."""
        return f"{self.month:02d}/{self.year:04d}"


@dataclass(frozen=True)
class DocumentMeta:
    """Identity of one printed document; the only source of its date and PDF identifiers (determinism)."""

    document_id: str
    created_at: datetime
    reprint_number: int = 0  # 0 = original; n >= 1 = n-th reprint, marked DUPLICATA (LBL-12)

    def __post_init__(self) -> None:
        if not isinstance(self.document_id, str) or not _DOCUMENT_ID.fullmatch(self.document_id):
            raise LabelDataError(
                f"document id {self.document_id!r} must be 1-64 characters A-Z a-z 0-9 . _ : - "
                "starting with a letter or digit"
            )
        check_aware(self.created_at, "document creation time")
        if not isinstance(self.reprint_number, int) or isinstance(self.reprint_number, bool):
            raise LabelDataError("reprint number must be an integer")
        if not 0 <= self.reprint_number <= MAX_REPRINT_NUMBER:
            raise LabelDataError(
                f"reprint number {self.reprint_number} must be between 0 and {MAX_REPRINT_NUMBER}"
            )

    @property
    def is_reprint(self) -> bool:
        """LBL-12: a reprint is printed as a duplicate."""
        return self.reprint_number > 0


@dataclass(frozen=True)
class TrialLabelInfo:
    """Trial-level label particulars (CTR Annex VI A.1), identical on the labels of every kit."""

    trial_code: str  # code in QR payloads, e.g. "APHP220672" (see kits.payload)
    sponsor_name: str
    sponsor_address: str
    main_contact_name: str
    main_contact_phone: str
    emergency_phone: str  # 24/7 emergency-unblinding line (LBL-07)
    eu_ct_number: str
    protocol_code: str
    nct_number: str | None
    short_title: str
    product_name: Bilingual  # blinded name: active and placebo named together (LBL-01(b))
    pharmaceutical_form: Bilingual
    route: Bilingual
    quantity: Bilingual  # quantity of dosage units, e.g. "1 seringue préremplie de 0,5 mL"
    storage: Bilingual  # strictest conditions, the same for both arms (LBL-03)
    directions: Bilingual  # directions for use, or a reference to the protocol or a leaflet
    clinical_trial_use: Bilingual  # "Pour essai clinique uniquement" / "For clinical trial use only"
    print_keep_out_of_reach: bool  # may be False when the product is never taken home (ICU, LBL-01(l))
    test_mode: bool  # non-production instance: TEST watermark on every page (RND-13, LBL-15)
    software_version: str  # printed on every page (VAL-04)
    immediate_omits_expiry: bool = False  # Annex VI A.2 as amended by Delegated Regulation 2022/2239
    outer_pack_carries_expiry: bool = True

    def __post_init__(self) -> None:
        try:
            validate_trial_code(self.trial_code)
        except ValueError as exc:
            raise LabelDataError(str(exc)) from exc
        # LBL-01: label generation refuses to run with an empty trial-level particular.
        check_required(self.sponsor_name, "sponsor name", 120)
        check_required(self.sponsor_address, "sponsor address", 200)
        check_required(self.main_contact_name, "main contact name", 80)
        _check_phone(self.main_contact_phone, "main contact phone")
        _check_phone(self.emergency_phone, "24/7 emergency phone")
        check_required(self.eu_ct_number, "EU CT number", 20)
        if not _EU_CT.fullmatch(self.eu_ct_number):
            raise LabelDataError(f"EU CT number {self.eu_ct_number!r} must look like 2023-506725-11-00")
        check_required(self.protocol_code, "sponsor protocol code", 40)
        check_optional(self.nct_number, "NCT number", 11)
        if self.nct_number is not None and not _NCT.fullmatch(self.nct_number):
            raise LabelDataError(f"NCT number {self.nct_number!r} must look like NCT06694740")
        check_required(self.short_title, "short title", 300)
        self.product_name.check("product name", 150)
        self.pharmaceutical_form.check("pharmaceutical form", 120)
        self.route.check("route of administration", 80)
        self.quantity.check("quantity of dosage units", 120)
        self.storage.check("storage conditions", 300)
        self.directions.check("directions for use", 300)
        self.clinical_trial_use.check("clinical-trial-use statement", 80)
        check_required(self.software_version, "software version", 40)
        for flag in (
            "print_keep_out_of_reach",
            "test_mode",
            "immediate_omits_expiry",
            "outer_pack_carries_expiry",
        ):
            if not isinstance(getattr(self, flag), bool):
                raise LabelDataError(f"{flag} must be True or False")
        # LBL-02: expiry may leave the immediate label only if the outer pack carries it.
        if self.immediate_omits_expiry and not self.outer_pack_carries_expiry:
            raise LabelDataError(
                "the expiry may be omitted from the immediate label only when the outer packaging carries "
                "it (CTR Annex VI A.2, Delegated Regulation 2022/2239)"
            )


@dataclass(frozen=True)
class KitLabel:
    """Per-kit data of one label. `kit_number` may be given in display form; it is stored canonical."""

    kit_number: str
    qr_payload: str
    batch: str  # blinded packaging/lot code, never the manufacturing lot of one arm (LBL-14)
    expiry: Expiry
    unit: str  # injection day of the unit, e.g. "D1" (also in the payload)
    site_code: str
    subject_number: str | None = None  # blank line to write in when absent
    investigator_name: str | None = None  # blank line to write in when absent

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kit_number", normalize_kit_number(self.kit_number))
        except KitNumberError as exc:
            raise LabelDataError(f"kit number: {exc}") from exc
        try:
            validate_unit(self.unit)
        except ValueError as exc:
            raise LabelDataError(str(exc)) from exc
        if not isinstance(self.expiry, Expiry):
            raise LabelDataError("expiry must be an Expiry(year, month)")
        check_required(self.batch, "batch code", 20)
        check_required(self.site_code, "site code", 12)
        check_optional(self.subject_number, "subject number", 20)
        check_optional(self.investigator_name, "investigator name", 60)
        check_printable(self.qr_payload, "QR payload")
        try:
            payload = parse_payload(self.qr_payload)
        except PayloadError as exc:
            raise LabelDataError(f"QR payload of kit {self.kit_number}: {exc}") from exc
        if payload.text != self.qr_payload:
            raise LabelDataError("the QR payload must be given exactly as build_payload produced it")
        # LBL-09: the code must encode the very kit and unit printed beside it.
        if payload.kit_number != self.kit_number or payload.unit != self.unit:
            raise LabelDataError(
                f"the QR payload encodes kit {payload.kit_number} unit {payload.unit}, but the label says "
                f"kit {self.kit_number} unit {self.unit}"
            )
