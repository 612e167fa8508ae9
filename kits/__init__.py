"""Kit numbers, QR payloads, kit labels and dispensation sheets - a pure library.

Plain data in, text or PDF bytes out. No web framework, no database, no keys: the MAC used in QR
payloads is a function the application passes in. Nothing here knows which arm a kit belongs to
(BLD-01, BLD-03): no function takes an arm and no input type has an arm field. The one exception is
`kits.codebreak`, whose sealed code-break sheets print an opaque `sealed_text` (the application
passes the arm label) inside a box hidden under a fold-and-seal flap, for unblinded roles only.

Modules: `kits.numbers` (kit numbers), `kits.payload` (QR payloads), `kits.qr` (QR symbols),
`kits.model` (input types), `kits.labels` (label sheets), `kits.sheet` (dispensation sheets),
`kits.codebreak` (sealed code-break sheets), `kits.samples` (tube-set labels of a cohort),
`kits.lab_manifest` (lab shipment manifests), `kits.pdf` and `kits.text` (shared PDF and text
helpers), `kits.errors` (exceptions).
"""

from __future__ import annotations

from kits.codebreak import CodeBreakDocument, SealedSheet, render_code_break_sheets
from kits.confirmation import ConfirmedKit, RandomizationConfirmation, render_randomization_confirmation
from kits.errors import (
    BadMacError,
    KitNumberCharacterError,
    KitNumberCheckDigitError,
    KitNumberError,
    KitNumberLengthError,
    KitNumberSpaceExhaustedError,
    KitsError,
    LabelDataError,
    LabelLayoutError,
    MalformedPayloadError,
    PayloadCheckDigitError,
    PayloadError,
    UnknownPayloadVersionError,
    UnrenderableTextError,
    WrongKitKindError,
    WrongTrialError,
)
from kits.lab_manifest import LabManifest, ManifestSample, render_lab_manifest
from kits.labels import IMMEDIATE_LAYOUT, OUTER_LAYOUT, LabelKind, LabelLayout, render_label_sheet
from kits.model import MAX_REPRINT_NUMBER, Bilingual, DocumentMeta, Expiry, KitLabel, TrialLabelInfo
from kits.numbers import (
    KIT_NUMBER_LENGTH,
    format_kit_number,
    generate_kit_number,
    generate_kit_numbers,
    is_valid_kit_number,
    normalize_kit_number,
)
from kits.payload import (
    PAYLOAD_PATTERN,
    SHIPMENT_PAYLOAD_PATTERN,
    KitKind,
    KitPayload,
    MacFunction,
    ShipmentPayload,
    build_payload,
    build_shipment_payload,
    kind_of_unit,
    looks_like_scan,
    parse_payload,
    parse_shipment_payload,
    sample_unit,
    verify_payload,
    verify_shipment_payload,
)
from kits.samples import SampleLabel, SampleLabelInfo, render_sample_label_sheet
from kits.sheet import DispensationRow, DispensationSheet, ElectronicSignature, render_dispensation_sheet

__all__ = [
    "IMMEDIATE_LAYOUT",
    "KIT_NUMBER_LENGTH",
    "MAX_REPRINT_NUMBER",
    "OUTER_LAYOUT",
    "PAYLOAD_PATTERN",
    "SHIPMENT_PAYLOAD_PATTERN",
    "BadMacError",
    "Bilingual",
    "CodeBreakDocument",
    "ConfirmedKit",
    "DispensationRow",
    "DispensationSheet",
    "DocumentMeta",
    "ElectronicSignature",
    "Expiry",
    "KitKind",
    "KitLabel",
    "KitNumberCharacterError",
    "KitNumberCheckDigitError",
    "KitNumberError",
    "KitNumberLengthError",
    "KitNumberSpaceExhaustedError",
    "KitPayload",
    "KitsError",
    "LabManifest",
    "LabelDataError",
    "LabelKind",
    "LabelLayout",
    "LabelLayoutError",
    "MacFunction",
    "MalformedPayloadError",
    "ManifestSample",
    "PayloadCheckDigitError",
    "PayloadError",
    "RandomizationConfirmation",
    "SampleLabel",
    "SampleLabelInfo",
    "SealedSheet",
    "ShipmentPayload",
    "TrialLabelInfo",
    "UnknownPayloadVersionError",
    "UnrenderableTextError",
    "WrongKitKindError",
    "WrongTrialError",
    "build_payload",
    "build_shipment_payload",
    "format_kit_number",
    "generate_kit_number",
    "generate_kit_numbers",
    "is_valid_kit_number",
    "kind_of_unit",
    "looks_like_scan",
    "normalize_kit_number",
    "parse_payload",
    "parse_shipment_payload",
    "render_code_break_sheets",
    "render_dispensation_sheet",
    "render_lab_manifest",
    "render_label_sheet",
    "render_randomization_confirmation",
    "render_sample_label_sheet",
    "sample_unit",
    "verify_payload",
    "verify_shipment_payload",
]
