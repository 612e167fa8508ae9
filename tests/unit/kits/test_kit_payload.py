"""QR payloads: opaque fixed structure, MAC, and distinct errors for each kind of bad scan (LBL-08/09)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kits import payload as payload_module
from kits.errors import (
    BadMacError,
    KitNumberCheckDigitError,
    MalformedPayloadError,
    PayloadCheckDigitError,
    PayloadError,
    UnknownPayloadVersionError,
    WrongKitKindError,
    WrongTrialError,
)
from kits.numbers import check_digit, format_kit_number, generate_kit_numbers
from kits.payload import (
    MAC_CONTEXT,
    PAYLOAD_PATTERN,
    QR_ALPHANUMERIC,
    KitKind,
    build_payload,
    kind_of_unit,
    parse_payload,
    sample_unit,
    verify_payload,
)
from tests.unit.kits.kits_testdata import TRIAL_CODE, trial_mac

KITS = generate_kit_numbers(300)


def _other_key_mac(message: bytes) -> bytes:
    return hmac.new(b"another key", message, hashlib.sha256).digest()


@pytest.mark.req("LBL-08")
def test_payload_has_the_documented_fixed_structure() -> None:
    text = build_payload(TRIAL_CODE, "1234-5671", "D2", trial_mac)
    assert text.startswith("AL1/APHP220672/12345671/D2/")
    assert PAYLOAD_PATTERN.fullmatch(text)
    assert len(text.rsplit("/", 1)[1]) == 16
    assert set(text) <= QR_ALPHANUMERIC


@pytest.mark.req("LBL-08", "BLD-02", "BLD-03")
def test_payloads_of_all_kits_have_identical_length_and_character_classes() -> None:
    payloads = [build_payload(TRIAL_CODE, kit, f"D{day}", trial_mac) for kit in KITS for day in (1, 2, 3)]
    assert len({len(text) for text in payloads}) == 1
    shapes = {
        "".join("9" if c.isdigit() else "A" if c.isalpha() else c for c in text[:27]) for text in payloads
    }
    assert shapes == {"AA9/AAAA999999/99999999/A9/"}
    assert all(PAYLOAD_PATTERN.fullmatch(text) for text in payloads)
    assert len(set(payloads)) == len(payloads)


@pytest.mark.req("LBL-08")
def test_payload_holds_only_trial_kit_unit_and_tag() -> None:
    """No room for an arm, a subject, a slot or a date: exactly five fields of fixed meaning."""
    text = build_payload(TRIAL_CODE, KITS[0], "D1", trial_mac)
    parsed = parse_payload(text)
    assert text.split("/") == ["AL1", parsed.trial_code, parsed.kit_number, parsed.unit, parsed.tag]
    assert (parsed.trial_code, parsed.kit_number, parsed.unit) == (TRIAL_CODE, KITS[0], "D1")


@pytest.mark.req("LBL-08", "LBL-09")
def test_tag_is_the_truncated_mac_over_context_and_body() -> None:
    seen: list[bytes] = []

    def spy(message: bytes) -> bytes:
        seen.append(message)
        return trial_mac(message)

    text = build_payload(TRIAL_CODE, KITS[1], "D3", spy)
    body = text.rsplit("/", 1)[0]
    assert seen == [MAC_CONTEXT + body.encode("ascii")]
    tag = base64.b32decode(text.rsplit("/", 1)[1])
    assert tag == trial_mac(MAC_CONTEXT + body.encode("ascii"))[:10]  # 80 bits


@pytest.mark.req("LBL-09")
def test_genuine_payloads_verify_and_tolerate_scanner_noise() -> None:
    text = build_payload(TRIAL_CODE, KITS[2], "D1", trial_mac)
    assert verify_payload(text, TRIAL_CODE, trial_mac).kit_number == KITS[2]
    assert verify_payload(f"{text}\r\n", TRIAL_CODE, trial_mac).unit == "D1"
    assert verify_payload(f"  {text.lower()}\t", TRIAL_CODE, trial_mac).text == text


@pytest.mark.req("LBL-09")
@pytest.mark.parametrize(
    "text",
    [
        "",
        "12345671",
        "https://example.org/AL1/APHP220672/12345671/D1/AAAAAAAAAAAAAAAA",
        "AL1/APHP220672/12345671/D1",
        "AL1/APHP220672/12345671/D1/AAAAAAAAAAAAAAAA/EXTRA",
        "AL1/APHP220672/1234567/D1/AAAAAAAAAAAAAAAA",
        "AL1/APHP220672/1234-5671/D1/AAAAAAAAAAAAAAAA",
        "AL1/APHP220672/12345671/DAY01/AAAAAAAAAAAAAAAA",
        "AL1/APHP220672/12345671/D1/AAAAAAAAAAAAAAA",
        "AL1/APHP220672/12345671/D1/AAAAAAAAAAAAAAA1",
        "AL1/-BAD/12345671/D1/AAAAAAAAAAAAAAAA",
        "AL1/" + "A" * 80,
        "AL01/APHP220672/12345671/D1/AAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_payloads_are_rejected(text: str) -> None:
    with pytest.raises(MalformedPayloadError):
        parse_payload(text)
    with pytest.raises(MalformedPayloadError):
        verify_payload(text, TRIAL_CODE, trial_mac)


@pytest.mark.req("LBL-09")
def test_unknown_version_is_reported_as_such() -> None:
    text = build_payload(TRIAL_CODE, KITS[3], "D1", trial_mac).replace("AL1/", "AL2/", 1)
    with pytest.raises(UnknownPayloadVersionError, match="version 2"):
        verify_payload(text, TRIAL_CODE, trial_mac)


@pytest.mark.req("LBL-09")
def test_label_of_another_trial_is_reported_as_wrong_trial() -> None:
    text = build_payload("OTHER-TRIAL", KITS[4], "D1", trial_mac)
    with pytest.raises(WrongTrialError, match="OTHER-TRIAL"):
        verify_payload(text, TRIAL_CODE, trial_mac)


@pytest.mark.req("LBL-09")
def test_bad_kit_check_digit_is_reported_before_the_mac() -> None:
    text = build_payload(TRIAL_CODE, "12345671", "D1", trial_mac)
    typo = text.replace("/12345671/", "/12345672/")
    with pytest.raises(PayloadCheckDigitError, match="check digit") as caught:
        verify_payload(typo, TRIAL_CODE, trial_mac)
    assert isinstance(caught.value, KitNumberCheckDigitError)


@pytest.mark.req("LBL-09")
def test_altered_or_forged_labels_fail_the_mac() -> None:
    genuine = build_payload(TRIAL_CODE, KITS[5], "D1", trial_mac)
    other_kit = build_payload(TRIAL_CODE, KITS[6], "D1", trial_mac)
    tag = genuine.rsplit("/", 1)[1]
    flipped = tag[:-1] + ("A" if tag[-1] != "A" else "B")
    tampered = [
        genuine.rsplit("/", 1)[0] + "/" + flipped,  # one tag character changed
        genuine.replace("/D1/", "/D2/"),  # day changed, tag kept
        other_kit.rsplit("/", 1)[0] + "/" + tag,  # another kit's body with this tag
        build_payload(TRIAL_CODE, KITS[5], "D1", _other_key_mac),  # printed with another key
    ]
    for text in tampered:
        with pytest.raises(BadMacError, match="authentication code"):
            verify_payload(text, TRIAL_CODE, trial_mac)


@pytest.mark.req("LBL-09")
def test_mac_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(payload_module.hmac, "compare_digest", spy)
    text = build_payload(TRIAL_CODE, KITS[7], "D1", trial_mac)
    verify_payload(text, TRIAL_CODE, trial_mac)
    assert len(calls) == 1


@pytest.mark.req("LBL-09")
def test_error_types_are_distinct() -> None:
    kinds = [
        MalformedPayloadError,
        UnknownPayloadVersionError,
        WrongTrialError,
        WrongKitKindError,
        PayloadCheckDigitError,
        BadMacError,
    ]
    for first, second in itertools.combinations(kinds, 2):
        assert not issubclass(first, second) and not issubclass(second, first)
    assert all(issubclass(kind, PayloadError) and issubclass(kind, ValueError) for kind in kinds)


@pytest.mark.req("LBL-08")
@pytest.mark.parametrize(
    ("trial_code", "kit", "unit"),
    [
        ("aphp220672", KITS[0], "D1"),
        ("A", KITS[0], "D1"),
        ("APHP/1", KITS[0], "D1"),
        (TRIAL_CODE, KITS[0], "d1"),
    ],
    # Named, not derived from the values: KITS is random, and pytest-xdist needs every worker to
    # collect the same test ids.
    ids=["lowercase-trial", "one-letter-trial", "slash-in-trial", "lowercase-unit"],
)
def test_build_refuses_fields_outside_the_format(trial_code: str, kit: str, unit: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        build_payload(trial_code, kit, unit, trial_mac)


@pytest.mark.req("LBL-08")
def test_build_refuses_invalid_kit_numbers_and_short_macs() -> None:
    with pytest.raises(KitNumberCheckDigitError):
        build_payload(TRIAL_CODE, "12345672", "D1", trial_mac)
    with pytest.raises(ValueError, match="at least 10 bytes"):
        build_payload(TRIAL_CODE, KITS[0], "D1", lambda _message: b"short")
    assert build_payload(TRIAL_CODE, format_kit_number(KITS[0]), "D1", trial_mac) == build_payload(
        TRIAL_CODE, KITS[0], "D1", trial_mac
    )


@pytest.mark.req("LBL-09")
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=70) | st.from_regex(r"AL[0-9]/[A-Z0-9/ -]{0,40}", fullmatch=True))
def test_any_scanned_text_is_either_accepted_or_refused_with_a_payload_error(text: str) -> None:
    try:
        parsed = verify_payload(text, TRIAL_CODE, trial_mac)
    except PayloadError:
        return
    assert parsed.text == text.strip().upper()  # accepted only if it is a genuine label


@pytest.mark.req("LBL-08")
@settings(max_examples=200, deadline=None)
@given(
    body=st.integers(min_value=0, max_value=10**7 - 1),
    day=st.integers(min_value=1, max_value=9),
    trial_code=st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,18}[A-Z0-9]", fullmatch=True),
)
def test_build_and_parse_round_trip(body: int, day: int, trial_code: str) -> None:
    kit = f"{body:07d}" + check_digit(f"{body:07d}")
    text = build_payload(trial_code, kit, f"D{day}", trial_mac)
    assert PAYLOAD_PATTERN.fullmatch(text)
    parsed = verify_payload(text, trial_code, trial_mac)
    assert (parsed.trial_code, parsed.kit_number, parsed.unit, parsed.text) == (
        trial_code,
        kit,
        f"D{day}",
        text,
    )


# --- sample kits of an observational cohort (issue 20, step 4) ----------------------------------------


@pytest.mark.req("LBL-08", "LBL-09")
def test_a_sample_kit_label_is_refused_where_a_drug_kit_is_expected_and_the_reverse() -> None:
    # Same trial code and same key on purpose: only the kind of kit tells the labels apart.
    sample = build_payload(TRIAL_CODE, KITS[0], sample_unit(1), trial_mac)
    drug = build_payload(TRIAL_CODE, KITS[0], "D1", trial_mac)
    own_label = build_payload(TRIAL_CODE, KITS[0], "K", trial_mac)
    with pytest.raises(WrongKitKindError, match="label of a sample kit, not of a drug kit"):
        verify_payload(sample, TRIAL_CODE, trial_mac)  # a drug scan is the default
    with pytest.raises(WrongKitKindError, match="label of a sample kit, not of a drug kit"):
        verify_payload(sample, TRIAL_CODE, trial_mac, KitKind.DRUG)
    for text in (drug, own_label):
        with pytest.raises(WrongKitKindError, match="label of a drug kit, not of a sample kit"):
            verify_payload(text, TRIAL_CODE, trial_mac, KitKind.SAMPLE)
    scanned = verify_payload(sample, TRIAL_CODE, trial_mac, KitKind.SAMPLE)
    assert (scanned.kind, scanned.kit_number, scanned.unit) == (KitKind.SAMPLE, KITS[0], "S-01")
    assert verify_payload(drug, TRIAL_CODE, trial_mac).kind is KitKind.DRUG


@pytest.mark.req("LBL-08", "LBL-09")
def test_another_trials_label_is_refused_as_such_before_its_kind() -> None:
    sample = build_payload("IMMUNOSEPSIS-4", KITS[1], sample_unit(0), trial_mac)
    with pytest.raises(WrongTrialError):
        verify_payload(sample, TRIAL_CODE, trial_mac)
    with pytest.raises(WrongTrialError):
        verify_payload(
            build_payload(TRIAL_CODE, KITS[1], "D1", trial_mac), "IMMUNOSEPSIS-4", trial_mac, KitKind.SAMPLE
        )


@pytest.mark.req("LBL-08")
def test_a_sample_label_cannot_be_relabelled_as_a_drug_label_without_the_key() -> None:
    # Changing the unit field of a genuine sample label into a drug unit breaks its tag.
    sample = build_payload(TRIAL_CODE, KITS[2], sample_unit(1), trial_mac)
    forged = sample.replace("/S-01/", "/D1/")
    assert forged != sample
    with pytest.raises(BadMacError):
        verify_payload(forged, TRIAL_CODE, trial_mac)


@pytest.mark.req("LBL-08", "BLD-02")
def test_sample_payloads_have_the_documented_fixed_structure() -> None:
    payloads = [
        build_payload("IMMUNOSEPSIS-4", kit, sample_unit(tube), trial_mac)
        for kit in KITS[:50]
        for tube in (0, 1, 2, 99)
    ]
    assert all(PAYLOAD_PATTERN.fullmatch(text) for text in payloads)
    assert all(set(text) <= QR_ALPHANUMERIC for text in payloads)
    assert len({len(text) for text in payloads}) == 1
    assert {parse_payload(text).unit for text in payloads} == {"S-00", "S-01", "S-02", "S-99"}


@pytest.mark.req("LBL-08")
def test_sample_units_and_kinds() -> None:
    assert [sample_unit(n) for n in (0, 7, 99)] == ["S-00", "S-07", "S-99"]
    for bad in (-1, 100, True, 1.0, "1"):
        with pytest.raises(ValueError, match="not allowed"):
            sample_unit(bad)  # type: ignore[arg-type]
    assert {unit: kind_of_unit(unit) for unit in ("D1", "K", "S", "S1", "S-01")} == {
        "D1": KitKind.DRUG,
        "K": KitKind.DRUG,
        "S": KitKind.DRUG,
        "S1": KitKind.DRUG,
        "S-01": KitKind.SAMPLE,
    }
    for bad_unit in ("S-1", "S-001", "X-01", "s-01x"):
        with pytest.raises(ValueError, match="not allowed"):
            build_payload(TRIAL_CODE, KITS[0], bad_unit, trial_mac)
    # parse_payload upper-cases what a keyboard wedge typed, but a malformed sample unit stays malformed.
    text = build_payload(TRIAL_CODE, KITS[0], "S-01", trial_mac)
    with pytest.raises(MalformedPayloadError, match="unit field"):
        parse_payload(text.replace("/S-01/", "/S-1/"))
