"""The manifest of a lab shipment (issue 20): its QR payload, told apart from any kit label and
MAC'd under its own context, and its bilingual PDF whose QR decodes to that payload (LBL-08/09)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kits import (
    DocumentMeta,
    KitKind,
    LabManifest,
    ManifestSample,
    build_payload,
    build_shipment_payload,
    parse_shipment_payload,
    render_lab_manifest,
    sample_unit,
    verify_payload,
    verify_shipment_payload,
)
from kits.errors import BadMacError, MalformedPayloadError, UnknownPayloadVersionError, WrongTrialError
from kits.payload import SHIPMENT_PAYLOAD_PATTERN, looks_like_scan, parse_payload
from tests.unit.kits.kits_testdata import all_text, decode_qr_codes, flat, mask_kit, trial_mac

COHORT = "IMMUNOSEPSIS-4"


def _other_key_mac(message: bytes) -> bytes:
    return bytes(32)


@pytest.mark.req("LBL-08")
def test_manifest_payload_has_its_own_prefix_and_verifies() -> None:
    text = build_shipment_payload(COHORT, "LS-0001", trial_mac)
    assert SHIPMENT_PAYLOAD_PATTERN.fullmatch(text)
    assert text.startswith("LS1/IMMUNOSEPSIS-4/LS-0001/")
    payload = verify_shipment_payload(f"  {text.lower()}\r\n", COHORT, trial_mac)  # scanner noise
    assert (payload.trial_code, payload.number) == (COHORT, "LS-0001")


@pytest.mark.req("LBL-09")
def test_manifest_of_another_trial_altered_or_forged_is_refused() -> None:
    text = build_shipment_payload(COHORT, "LS-0001", trial_mac)
    with pytest.raises(WrongTrialError, match="belongs to trial IMMUNOSEPSIS-4"):
        verify_shipment_payload(text, "IFNG-PAIS", trial_mac)
    with pytest.raises(BadMacError):
        verify_shipment_payload(text.replace("LS-0001", "LS-0002"), COHORT, trial_mac)
    with pytest.raises(BadMacError):
        verify_shipment_payload(build_shipment_payload(COHORT, "LS-0001", _other_key_mac), COHORT, trial_mac)
    with pytest.raises(UnknownPayloadVersionError):
        parse_shipment_payload(text.replace("LS1/", "LS2/", 1))
    for bad in ("", "LS-0001", "LS1/IMMUNOSEPSIS-4/LS-01/AAAAAAAAAAAAAAAA", "hello"):
        with pytest.raises(MalformedPayloadError):
            parse_shipment_payload(bad)


@pytest.mark.req("LBL-09")
def test_a_manifest_and_a_kit_label_are_never_taken_for_each_other() -> None:
    tube_set = build_payload(COHORT, mask_kit(1), sample_unit(0), trial_mac)
    with pytest.raises(MalformedPayloadError, match="kit label, not a shipment manifest"):
        parse_shipment_payload(tube_set)
    manifest = build_shipment_payload(COHORT, "LS-0001", trial_mac)
    with pytest.raises(MalformedPayloadError, match="not a kit label"):
        parse_payload(manifest)
    with pytest.raises(MalformedPayloadError):
        verify_payload(manifest, COHORT, trial_mac, kind=KitKind.SAMPLE)


def test_manifest_tag_is_not_a_kit_label_tag_of_the_same_body() -> None:
    # Different MAC contexts: the tag of a manifest is no tag a kit label could carry.
    manifest = parse_shipment_payload(build_shipment_payload(COHORT, "LS-0001", trial_mac))
    label = parse_payload(build_payload(COHORT, mask_kit(1), sample_unit(0), trial_mac))
    assert manifest.tag != label.tag


def _manifest(count: int, reprint: int = 0) -> LabManifest:
    at = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
    return LabManifest(
        trial_code=COHORT,
        short_title="IMMUNOSEPSIS 4",
        shipment_number="LS-0007",
        site_code="L1",
        site_name="Lyon site 1",
        prepared_by="Dr Corinne Ohorte",
        qr_payload=build_shipment_payload(COHORT, "LS-0007", trial_mac),
        samples=tuple(ManifestSample(mask_kit(i), f"L1-{i:04d}", "D3", at) for i in range(1, count + 1)),
        document=DocumentMeta("LM-IMMUNOSEPSIS-4-000001", at, reprint),
        test_mode=True,
        software_version="0.0-test",
    )


@pytest.mark.req("LBL-08")
def test_manifest_pdf_lists_every_sample_and_its_qr_decodes_to_the_payload() -> None:
    manifest = _manifest(3)
    pdf = render_lab_manifest(manifest)
    assert pdf == render_lab_manifest(manifest)  # deterministic bytes
    text = flat(all_text(pdf))
    assert "LAB SHIPMENT MANIFEST" in text and "BORDEREAU D'ENVOI" in text
    assert "LS-0007" in text and "L1 – Lyon site 1" in text
    for i in range(1, 4):
        assert f"L1-{i:04d}" in text
    assert "2026-03-04 09:30:00 UTC" in text
    assert [code.text for code in decode_qr_codes(pdf, 0)] == [manifest.qr_payload]


def test_a_long_manifest_runs_over_several_pages_with_one_qr() -> None:
    pdf = render_lab_manifest(_manifest(80, reprint=1))
    text = flat(all_text(pdf))
    assert "L1-0080" in text and "Page 2/" in text and "DUPLICATA" in text
    assert len(decode_qr_codes(pdf, 0)) == 1 and decode_qr_codes(pdf, 1) == []


@pytest.mark.req("LBL-09")
def test_a_manifest_scanned_into_a_password_field_is_seen_as_a_scan() -> None:
    """Issue 13's refusal of a scan typed into a password field (services/signatures.refuse_a_scan)
    knew kit labels and kit numbers, not the lab's manifests: one counted as a wrong password."""
    manifest = build_shipment_payload(COHORT, "LS-0001", trial_mac)
    assert looks_like_scan(manifest) and looks_like_scan(f" {manifest.lower()}\r\n")
    assert not looks_like_scan("LS1/IMMUNOSEPSIS-4/LS-0001/not-a-tag-at-all")
    assert not looks_like_scan("correct horse battery staple")
