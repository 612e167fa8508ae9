"""Eligibility of the IFN-gamma trial: criteria, date windows, input errors (RND-06, DIB-08)."""

from __future__ import annotations

from datetime import date

import pytest

from allocator.eligibility import EligibilityInputError, check
from allocator.trialdef import load_definition
from tests.support import IFN_TRIAL

DEFINITION, _ = load_definition(IFN_TRIAL)
TODAY = date(2026, 3, 12)
EXCLUSIONS = [c.id for c in DEFINITION.eligibility if c.kind == "exclusion"]


def eligible_answers(**overrides: object) -> dict[str, object]:
    answers: dict[str, object] = {
        "age": 64,
        "icu_admission_date": "2026-03-03",
        "sofa_24h": 9,
        "invasive_ventilation": True,
        "mhladr": 5400,
        "mhladr_date": "2026-03-10",
        "social_security": "yes",
        "consent": "oui",
        **dict.fromkeys(EXCLUSIONS, False),
    }
    answers.update(overrides)
    return answers


@pytest.mark.req("RND-06")
def test_an_eligible_patient() -> None:
    result = check(DEFINITION.eligibility, eligible_answers(), TODAY)
    assert result.eligible and result.failures == ()
    assert result.answers_json()["mhladr_date"] == "2026-03-10"


@pytest.mark.req("RND-06")
@pytest.mark.parametrize(
    ("overrides", "failed"),
    [
        ({"age": 17}, "age"),
        ({"sofa_24h": 5}, "sofa_24h"),
        ({"invasive_ventilation": False}, "invasive_ventilation"),
        ({"mhladr": 8000}, "mhladr"),  # the bound is strict: < 8,000 AB/C
        ({"mhladr_date": "2026-03-07"}, "mhladr_date"),  # day 4 after admission
        ({"mhladr_date": "2026-03-14", "icu_admission_date": "2026-03-03"}, "mhladr_date"),
        ({"consent": False}, "consent"),
        ({"pregnancy_breastfeeding": True}, "pregnancy_breastfeeding"),
        ({"immunosuppressive_therapy": "yes"}, "immunosuppressive_therapy"),
    ],
)
def test_each_failed_criterion_is_reported(overrides: dict[str, object], failed: str) -> None:
    today = date(2026, 3, 20) if "2026-03-14" in overrides.values() else TODAY
    result = check(DEFINITION.eligibility, eligible_answers(**overrides), today)
    assert not result.eligible
    assert [f.criterion for f in result.failures] == [failed]


@pytest.mark.parametrize(
    ("measured", "ok"), [("2026-03-07", False), ("2026-03-08", True), ("2026-03-12", True)]
)
def test_mhladr_window_is_day_5_to_day_10_inclusive(measured: str, ok: bool) -> None:
    # Admission on 3 March: day 5 = 8 March, day 10 = 13 March.
    result = check(DEFINITION.eligibility, eligible_answers(mhladr_date=measured), TODAY)
    assert result.eligible is ok


def test_day_10_is_in_and_day_11_is_out() -> None:
    today = date(2026, 3, 20)
    assert check(DEFINITION.eligibility, eligible_answers(mhladr_date="2026-03-13"), today).eligible
    assert not check(DEFINITION.eligibility, eligible_answers(mhladr_date="2026-03-14"), today).eligible


def test_several_failures_are_all_listed() -> None:
    result = check(DEFINITION.eligibility, eligible_answers(age=16, sofa_24h=2, short_icu_stay=True), TODAY)
    assert {f.criterion for f in result.failures} == {"age", "sofa_24h", "short_icu_stay"}
    assert any("exclusion criterion present" in f.message for f in result.failures)


@pytest.mark.req("DIB-08")
@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"age": None}, "age", "is required"),
        ({"age": "sixty"}, "age", "must be a number"),
        ({"age": 64.5}, "age", "must be a whole number"),
        ({"sofa_24h": 30}, "sofa_24h", "above the plausible maximum 24"),
        ({"mhladr": -1}, "mhladr", "below the plausible minimum 0"),
        ({"mhladr_date": "12/03/2026"}, "mhladr_date", "must be a date"),
        ({"mhladr_date": "2026-03-13"}, "mhladr_date", "is in the future"),
        ({"icu_admission_date": "2025-01-01"}, "icu_admission_date", "more than 60 days ago"),
        ({"consent": "maybe"}, "consent", "must be yes or no"),
        ({"age": True}, "age", "must be a number"),
        ({"arm": "A"}, "arm", "is not a criterion of this trial"),
    ],
)
def test_input_errors_name_the_field_and_record_nothing(
    overrides: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(EligibilityInputError) as caught:
        check(DEFINITION.eligibility, eligible_answers(**overrides), TODAY)
    assert any(e.field == field and message in e.message for e in caught.value.errors), caught.value.errors


def test_decimal_comma_is_accepted_and_integers_are_enforced() -> None:
    from fractions import Fraction

    from allocator.trialdef import NumberCriterion, Text

    lactate = NumberCriterion(
        id="lactate",
        kind="inclusion",
        label=Text("Lactate", "Lactate"),
        unit="mmol/L",
        integer=False,
        min=Fraction(2),
        max=None,
        min_inclusive=False,
        max_inclusive=True,
        input_min=Fraction(0),
        input_max=Fraction(40),
    )
    assert check([lactate], {"lactate": "2,5"}, TODAY).eligible
    assert not check([lactate], {"lactate": "2"}, TODAY).eligible  # strictly greater than 2
    with pytest.raises(EligibilityInputError, match="must be a whole number"):
        check(DEFINITION.eligibility, eligible_answers(mhladr="7999,5"), TODAY)


def test_json_numbers_refuse_text_where_a_number_is_asked() -> None:
    """Issue 14: the JSON API is strict ("age": "64" is text, not a number); a form is not."""
    answers = eligible_answers(age="64", mhladr=5400)
    assert check(DEFINITION.eligibility, answers, TODAY).eligible  # a form's typed text
    with pytest.raises(EligibilityInputError) as raised:
        check(DEFINITION.eligibility, answers, TODAY, json_numbers=True)
    assert [(e.field, e.message) for e in raised.value.errors] == [("age", "must be a JSON number, not text")]
    typed = eligible_answers(age=64, mhladr=5400.0, invasive_ventilation=True)
    assert check(DEFINITION.eligibility, typed, TODAY, json_numbers=True).eligible
