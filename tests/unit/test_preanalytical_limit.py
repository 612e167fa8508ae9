"""`[sampling] max_preanalytical_hours` of an observational study (issue 20, labship): the longest
delay from collection to receipt at the central lab before a sample is flagged; validated like every
other field, with a default when absent."""

from __future__ import annotations

import pytest

from allocator.trialdef import DefinitionError, parse_definition
from tests.support import ROOT

TEXT = (ROOT / "trials" / "immunosepsis-4.toml").read_text(encoding="utf-8")
LINE = "max_preanalytical_hours = 24"


@pytest.mark.req("VAL-03")
def test_the_shipped_cohort_has_its_limit_marked_unconfirmed() -> None:
    definition = parse_definition(TEXT)
    assert definition.sampling is not None and definition.sampling.max_preanalytical_hours == 24
    assert "sampling.max_preanalytical_hours" in {u.field for u in definition.unconfirmed}


def test_the_limit_defaults_to_24_hours() -> None:
    assert LINE in TEXT
    start = TEXT.index('[[unconfirmed]]\nfield = "sampling.max_preanalytical_hours"')
    end = TEXT.index("[[unconfirmed]]", start + 1)
    without = (TEXT[:start] + TEXT[end:]).replace(LINE, "", 1)
    sampling = parse_definition(without).sampling
    assert sampling is not None and sampling.max_preanalytical_hours == 24
    sampling = parse_definition(TEXT.replace(LINE, "max_preanalytical_hours = 6", 1)).sampling
    assert sampling is not None and sampling.max_preanalytical_hours == 6


@pytest.mark.req("VAL-03")
@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "below the minimum 1"), ("721", "above the maximum 720"), ('"24h"', "a whole number")],
)
def test_a_wrong_limit_names_the_field(value: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(TEXT.replace(LINE, f"max_preanalytical_hours = {value}", 1))
    problems = caught.value.problems
    assert any(path == "sampling.max_preanalytical_hours" and message in p for path, p in problems), problems
