"""Evaluate a trial's eligibility criteria against the data an investigator entered.

Two distinct outcomes, on purpose (RND-06, DIB-08):

* **Input errors** — a missing answer, a value that is not a number or a date, a number outside the
  plausible input range, a date in the future. Nothing is recorded; the user corrects the form.
* **Ineligibility** — valid data that fails a criterion. The patient goes to the screening log with
  the failed criteria and is never randomized.

Pure: takes the criteria, the raw answers and today's date (in the trial's time zone) explicitly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from allocator.trialdef import BooleanCriterion, Criterion, DateCriterion, NumberCriterion

Answer = bool | Fraction | date

_TRUE = {"yes", "true", "1", "on", "oui", "y"}
_FALSE = {"no", "false", "0", "off", "non", "n"}
_NUMBER = re.compile(r"^[+-]?\d+([.,]\d+)?$")


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class EligibilityInputError(ValueError):
    """The answers cannot be evaluated; `errors` names each field and its problem."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


@dataclass(frozen=True, slots=True)
class Failure:
    """One criterion that the patient does not meet."""

    criterion: str
    message: str


@dataclass(frozen=True, slots=True)
class EligibilityResult:
    eligible: bool
    failures: tuple[Failure, ...]
    answers: Mapping[str, Answer]

    def answers_json(self) -> dict[str, object]:
        """Answers as JSON-friendly values for the screening log."""
        out: dict[str, object] = {}
        for key, value in self.answers.items():
            if isinstance(value, bool):
                out[key] = value
            elif isinstance(value, Fraction):
                out[key] = int(value) if value.denominator == 1 else float(value)
            else:
                out[key] = value.isoformat()
        return out


def check(
    criteria: Sequence[Criterion], raw: Mapping[str, object], today: date, *, json_numbers: bool = False
) -> EligibilityResult:
    """Parse `raw` answers and evaluate them. Raises EligibilityInputError on invalid input."""
    answers = parse_answers(criteria, raw, today, json_numbers=json_numbers)
    return evaluate(criteria, answers)


def parse_answers(
    criteria: Sequence[Criterion], raw: Mapping[str, object], today: date, *, json_numbers: bool = False
) -> dict[str, Answer]:
    """Turn raw form or JSON values into typed answers, or raise EligibilityInputError.

    A form sends text, so a number may be typed ("4 200" is refused, "2,5" is read as 2.5). With
    `json_numbers` (the JSON API, issue 14), a number criterion takes a JSON number only: text in
    its place is an input error, as the API's contract says."""
    errors: list[FieldError] = []
    known = {c.id for c in criteria}
    for key in raw:
        if key not in known:
            errors.append(FieldError(str(key), "is not a criterion of this trial"))
    answers: dict[str, Answer] = {}
    for criterion in criteria:
        value = raw.get(criterion.id)
        if value is None or (isinstance(value, str) and value.strip() == ""):
            errors.append(FieldError(criterion.id, "is required"))
            continue
        try:
            if json_numbers and isinstance(criterion, NumberCriterion) and isinstance(value, str):
                raise ValueError("must be a JSON number, not text")
            answers[criterion.id] = _parse_one(criterion, value, today)
        except ValueError as exc:
            errors.append(FieldError(criterion.id, str(exc)))
    if errors:
        raise EligibilityInputError(errors)
    return answers


def _parse_one(criterion: Criterion, value: object, today: date) -> Answer:
    if isinstance(criterion, BooleanCriterion):
        return _parse_bool(value)
    if isinstance(criterion, NumberCriterion):
        number = _parse_number(value)
        if criterion.integer and number.denominator != 1:
            raise ValueError("must be a whole number")
        if criterion.input_min is not None and number < criterion.input_min:
            raise ValueError(
                f"{_fmt(number)} is below the plausible minimum {_fmt(criterion.input_min)} {criterion.unit}"
            )
        if criterion.input_max is not None and number > criterion.input_max:
            raise ValueError(
                f"{_fmt(number)} is above the plausible maximum {_fmt(criterion.input_max)} {criterion.unit}"
            )
        return number
    return _parse_date(criterion, value, today)


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE:
        return True
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return False
    raise ValueError("must be yes or no")


def _parse_number(value: object) -> Fraction:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return Fraction(str(value))
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        try:
            # French users type a decimal comma.
            return Fraction(Decimal(value.strip().replace(",", ".")))
        except InvalidOperation:  # pragma: no cover - the regular expression already excludes this
            pass
    raise ValueError("must be a number")


def _parse_date(criterion: DateCriterion, value: object, today: date) -> date:
    if not isinstance(value, str):
        raise ValueError("must be a date (YYYY-MM-DD)")
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError("must be a date (YYYY-MM-DD)") from None
    if criterion.not_in_future and parsed > today:
        raise ValueError(f"{parsed.isoformat()} is in the future")
    if criterion.max_days_ago is not None and (today - parsed).days > criterion.max_days_ago:
        raise ValueError(f"{parsed.isoformat()} is more than {criterion.max_days_ago} days ago")
    return parsed


def evaluate(criteria: Sequence[Criterion], answers: Mapping[str, Answer]) -> EligibilityResult:
    """Evaluate typed answers. Every failed criterion is reported, not only the first."""
    failures: list[Failure] = []
    for criterion in criteria:
        answer = answers[criterion.id]
        message = _failure(criterion, answer, answers)
        if message is not None:
            failures.append(Failure(criterion=criterion.id, message=message))
    return EligibilityResult(eligible=not failures, failures=tuple(failures), answers=dict(answers))


class AnswerTypeError(TypeError):
    """An answer of the wrong type reached `evaluate` (use `parse_answers` first)."""


def _failure(criterion: Criterion, answer: Answer, answers: Mapping[str, Answer]) -> str | None:
    if criterion.kind == "data":
        return None
    if isinstance(criterion, BooleanCriterion):
        if not isinstance(answer, bool):
            raise AnswerTypeError(criterion.id)
        if answer == criterion.required:
            return None
        if criterion.kind == "exclusion":
            return f"exclusion criterion present: {criterion.label.en}"
        return f"inclusion criterion not met: {criterion.label.en}"
    if isinstance(criterion, NumberCriterion):
        if isinstance(answer, bool) or not isinstance(answer, Fraction):
            raise AnswerTypeError(criterion.id)
        low, high = criterion.min, criterion.max
        ok = (low is None or (answer >= low if criterion.min_inclusive else answer > low)) and (
            high is None or (answer <= high if criterion.max_inclusive else answer < high)
        )
        if ok:
            return None
        return f"{criterion.label.en}: {_fmt(answer)} {criterion.unit} is not {_range_text(criterion)}"
    if not isinstance(answer, date):
        raise AnswerTypeError(criterion.id)
    if criterion.relative_to is None or criterion.window_days is None:
        return None
    reference = answers[criterion.relative_to]
    if not isinstance(reference, date):
        raise AnswerTypeError(criterion.relative_to)
    days = (answer - reference).days
    first, last = criterion.window_days
    if first <= days <= last:
        return None
    return (
        f"{criterion.label.en}: day {days} after {criterion.relative_to} is outside the window "
        f"day {first} to day {last}"
    )


def _range_text(criterion: NumberCriterion) -> str:
    parts = []
    if criterion.min is not None:
        parts.append(f"{'≥' if criterion.min_inclusive else '>'} {_fmt(criterion.min)}")
    if criterion.max is not None:
        parts.append(f"{'≤' if criterion.max_inclusive else '<'} {_fmt(criterion.max)}")
    return " and ".join(parts)


def _fmt(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):g}"
