"""Kit numbers: fixed length, uniqueness, CSPRNG uniformity, and Damm error detection (BLD-03, LBL-09)."""

from __future__ import annotations

import inspect
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from stdnum import damm

from kits import numbers
from kits.errors import (
    KitNumberCharacterError,
    KitNumberCheckDigitError,
    KitNumberError,
    KitNumberLengthError,
    KitNumberSpaceExhaustedError,
)
from kits.numbers import (
    KIT_NUMBER_LENGTH,
    format_kit_number,
    generate_kit_number,
    generate_kit_numbers,
    is_valid_kit_number,
    normalize_kit_number,
)

SAMPLE = generate_kit_numbers(2000)


def _damm_transition_table() -> list[list[int]]:
    """The Damm quasigroup as seen through stdnum's public `checksum`: T[state][digit] -> state."""
    # Row 0 is a permutation, so every state i is reached from the start state by one digit p_i.
    first_digit = {damm.checksum(str(p)): str(p) for p in range(10)}
    assert sorted(first_digit) == list(range(10))
    return [[damm.checksum(first_digit[state] + str(digit)) for digit in range(10)] for state in range(10)]


@pytest.mark.req("LBL-09")
def test_generated_numbers_have_fixed_length_and_a_valid_check_digit() -> None:
    for number in SAMPLE:
        assert len(number) == KIT_NUMBER_LENGTH == 8
        assert number.isascii() and number.isdigit()
        assert damm.checksum(number) == 0
        assert normalize_kit_number(number) == number


@pytest.mark.req("LBL-09")
def test_every_single_digit_substitution_is_detected() -> None:
    """Exhaustive over each sampled number: every position, every other digit."""
    tried = 0
    for number in SAMPLE:
        for position in range(KIT_NUMBER_LENGTH):
            for digit in "0123456789":
                if digit == number[position]:
                    continue
                typo = number[:position] + digit + number[position + 1 :]
                tried += 1
                assert not is_valid_kit_number(typo), (number, typo)
    assert tried == len(SAMPLE) * KIT_NUMBER_LENGTH * 9


@pytest.mark.req("LBL-09")
def test_every_adjacent_transposition_is_detected() -> None:
    """Exhaustive over each sampled number: every pair of unequal neighbours swapped."""
    tried = 0
    for number in SAMPLE:
        for position in range(KIT_NUMBER_LENGTH - 1):
            a, b = number[position], number[position + 1]
            if a == b:
                continue
            swapped = number[:position] + b + a + number[position + 2 :]
            tried += 1
            with pytest.raises(KitNumberCheckDigitError):
                normalize_kit_number(swapped)
    assert tried > len(SAMPLE) * 5


@pytest.mark.req("LBL-09")
def test_damm_table_detects_substitutions_and_transpositions_for_all_numbers() -> None:
    """Proof over the whole number space: the check-digit quasigroup has the two properties that make
    every single substitution and every adjacent transposition detectable, at any position."""
    table = _damm_transition_table()
    for state in range(10):
        # Each row and each column is a permutation: a changed digit changes the state, and a changed
        # state stays changed after any further digits, so the final check fails.
        assert sorted(table[state]) == list(range(10))
        assert sorted(table[s][state] for s in range(10)) == list(range(10))
    for state, a, b in itertools.product(range(10), repeat=3):
        if a != b:
            # Weak total anti-symmetry: "ab" and "ba" never lead to the same state.
            assert table[table[state][a]][b] != table[table[state][b]][a], (state, a, b)


@pytest.mark.req("BLD-03", "LBL-09")
def test_generated_numbers_are_unique_and_avoid_numbers_in_use() -> None:
    in_use = set(generate_kit_numbers(3000))
    fresh = generate_kit_numbers(20000, in_use)
    assert len(set(fresh)) == len(fresh) == 20000
    assert not set(fresh) & in_use
    # Numbers in use given in display form block the same canonical number.
    display_in_use = {format_kit_number(number) for number in in_use}
    assert generate_kit_number(display_in_use) not in in_use


@pytest.mark.req("BLD-03")
def test_a_drawn_number_that_is_in_use_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([1234567, 1234567, 7654321])
    monkeypatch.setattr(numbers.secrets, "randbelow", lambda _bound: next(draws))
    taken = "1234567" + numbers.check_digit("1234567")
    assert generate_kit_number({taken}) == "7654321" + numbers.check_digit("7654321")
    # The second call got the same body again and must have skipped it as well.
    draws = iter([1234567, 1234567, 7654321])
    assert generate_kit_numbers(2) == [taken, "7654321" + numbers.check_digit("7654321")]


@pytest.mark.req("BLD-03")
def test_numbers_come_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_randbelow(bound: int) -> int:
        calls.append(bound)
        return 42

    monkeypatch.setattr(numbers.secrets, "randbelow", fake_randbelow)
    assert generate_kit_number() == "0000042" + numbers.check_digit("0000042")
    assert calls == [10**7]  # one uniform draw over every 7-digit body, leading zeros included


@pytest.mark.req("BLD-03")
def test_digits_are_uniform_in_every_position() -> None:
    """Chi-square per position over a large sample; p > 1e-9 fails only on real bias, not on chance."""
    sample = generate_kit_numbers(40000)
    for position in range(KIT_NUMBER_LENGTH):
        counts = [0] * 10
        for number in sample:
            counts[int(number[position])] += 1
        result = chisquare(counts)
        assert result.pvalue > 1e-9, (position, counts)


@pytest.mark.req("BLD-03")
def test_number_generation_takes_no_arm_or_order_input() -> None:
    """The generator cannot depend on the arm: it has no parameter through which an arm could arrive."""
    assert list(inspect.signature(generate_kit_numbers).parameters) == ["count", "in_use"]
    assert list(inspect.signature(generate_kit_number).parameters) == ["in_use"]


@pytest.mark.req("LBL-09")
def test_capacity_limit_is_enforced() -> None:
    with pytest.raises(KitNumberSpaceExhaustedError, match="at most"):
        generate_kit_numbers(numbers.MAX_KITS_PER_TRIAL + 1)


@pytest.mark.req("LBL-09")
@pytest.mark.parametrize(
    "typed", ["1234-5671", "12345671", " 1234 5671 ", "1234\u00a05671", "1-2-3-4-5-6-7-1"]
)
def test_display_forms_are_accepted(typed: str) -> None:
    assert damm.checksum("12345671") == 0
    assert normalize_kit_number(typed) == "12345671"
    assert format_kit_number(typed) == "1234-5671"


@pytest.mark.req("LBL-09")
@pytest.mark.parametrize(
    ("typed", "error", "message"),
    [
        ("", KitNumberLengthError, "no digits"),
        ("1234-567", KitNumberLengthError, "7 digits, expected 8"),
        ("1234-56710", KitNumberLengthError, "9 digits, expected 8"),
        ("1234-567O", KitNumberCharacterError, "'O' at position 9"),
        ("1234_5671", KitNumberCharacterError, "'_'"),
        ("\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0661", KitNumberCharacterError, "only digits 0-9"),
        ("1234\u20825671", KitNumberCharacterError, "only digits 0-9"),
        ("1234-5675", KitNumberCheckDigitError, "wrong check digit"),
        ("2134-5671", KitNumberCheckDigitError, "2134-5671"),
    ],
)
def test_invalid_input_raises_an_error_that_names_the_problem(
    typed: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        normalize_kit_number(typed)
    assert not is_valid_kit_number(typed)


@pytest.mark.req("LBL-09")
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=20))
def test_any_typed_text_is_either_a_valid_number_or_refused_with_a_kit_number_error(text: str) -> None:
    try:
        number = normalize_kit_number(text)
    except KitNumberError:
        return
    assert len(number) == 8 and damm.checksum(number) == 0


@pytest.mark.req("LBL-09")
@given(st.integers(min_value=0, max_value=10**7 - 1))
def test_every_body_gets_a_check_digit_that_validates(body: int) -> None:
    number = f"{body:07d}" + numbers.check_digit(f"{body:07d}")
    assert normalize_kit_number(format_kit_number(number)) == number
