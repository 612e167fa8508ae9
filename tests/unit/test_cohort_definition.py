"""The observational kind of study definition (issue 20): the shipped IMMUNOSEPSIS-4 cohort loads
with every fact of its public record, a randomized file without `kind` stays randomized, and every
kind of mistake in the cohort's own sections is refused naming the field (VAL-03)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from allocator.trialdef import (
    BooleanCriterion,
    DateCriterion,
    DefinitionError,
    NotRandomized,
    NumberCriterion,
    load_definition,
    parse_definition,
)
from tests.support import IFN_TRIAL, ROOT

COHORT = ROOT / "trials" / "immunosepsis-4.toml"
TEXT = COHORT.read_text(encoding="utf-8")


def broken(old: str, new: str) -> str:
    assert old in TEXT, f"fixture text not found: {old!r}"
    return TEXT.replace(old, new, 1)


@pytest.mark.req("VAL-03")
def test_the_shipped_cohort_definition_holds_the_record() -> None:
    d, _ = load_definition(COHORT)
    assert d.kind == "observational" and d.observational
    assert (d.code, d.nct_number, d.sponsor_protocol_code, d.eu_ct_number) == (
        "IMMUNOSEPSIS-4",
        "NCT04067674",
        "69HCL19_0071",
        None,
    )
    assert d.sponsor.name == "Hospices Civils de Lyon" and d.target_sample_size == 305
    assert d.arms == () and d.ratio == () and d.stratification == ()
    age = d.criterion("age")
    assert isinstance(age, NumberCriterion) and age.min == 18
    lactate = d.criterion("lactate")
    assert isinstance(lactate, NumberCriterion) and lactate.min == 2 and not lactate.min_inclusive
    onset = d.criterion("septic_shock_onset_date")
    assert isinstance(onset, DateCriterion) and onset.relative_to == "icu_admission_date"
    assert onset.window_days == (0, 2)  # vasopressors within 48 h of ICU admission, on dates
    exclusions = [c.id for c in d.eligibility if c.kind == "exclusion"]
    assert exclusions == [
        "pregnancy_breastfeeding",
        "no_social_security_or_protection",
        "language_barrier",
        "interfering_interventional_study",
    ]
    assert all(
        isinstance(c, BooleanCriterion) and not c.required for c in d.eligibility if c.kind == "exclusion"
    )
    assert d.sampling is not None and d.sampling.anchor == "septic_shock_onset_date"
    assert d.sampling.working_weekdays == (1, 2, 3, 4, 5) and d.sampling.holidays_country == "FR"
    [d3] = d.sampling.timepoints
    assert (d3.label, d3.day, d3.last_day, d3.kit_type) == ("D3", 3, 4, "BIOMARKER")
    [kit] = d.kit_types
    assert kit.units == len(kit.tubes) == 3 and kit.tubes[2].volume_ml == Fraction(5, 2)
    # What the record does not give is marked to be confirmed, not invented.
    fields = {u.field for u in d.unconfirmed}
    assert {"sites", "kit_types.BIOMARKER", "sampling.anchor", "sampling.timepoints.D3"} <= fields
    # Randomization-only parts do not exist, and asking for one says so.
    for part in ("randomization", "dispensing", "labels"):
        with pytest.raises(NotRandomized, match="IMMUNOSEPSIS-4 is an observational study"):
            getattr(d, part)


def test_a_randomized_file_without_kind_stays_randomized() -> None:
    text = IFN_TRIAL.read_text(encoding="utf-8")
    plain = parse_definition(text)
    explicit = parse_definition(text.replace("[trial]\n", '[trial]\nkind = "randomized"\n', 1))
    assert plain.kind == explicit.kind == "randomized" and not plain.observational
    assert plain.allocation_fingerprint() == explicit.allocation_fingerprint()
    assert plain.sampling is None and plain.randomization.method == "permuted_blocks"


INVALID = [
    pytest.param(
        broken('\nkind = "observational"', '\nkind = "cohort"'),
        "trial.kind",
        "'cohort' is not one of randomized, observational",
        id="unknown-kind",
    ),
    pytest.param(
        TEXT + '\n[[arms]]\ncode = "A"\nlabel = "x"\nproduct = "y"\n',
        "arms",
        "must not be given for an observational study",
        id="arms-in-a-cohort",
    ),
    pytest.param(
        TEXT + '\n[randomization]\nmethod = "permuted_blocks"\n',
        "randomization",
        "must not be given for an observational study",
        id="randomization-in-a-cohort",
    ),
    pytest.param(
        broken('anchor = "septic_shock_onset_date"', 'anchor = "age"'),
        "sampling.anchor",
        "'age' is not a date criterion of this definition",
        id="anchor-not-a-date",
    ),
    pytest.param(
        broken("working_weekdays = [1, 2, 3, 4, 5]", "working_weekdays = [1, 8]"),
        "sampling.working_weekdays[1]",
        "must be an ISO weekday 1 (Monday) to 7, not 8",
        id="bad-weekday",
    ),
    pytest.param(
        broken('holidays_country = "FR"', 'holidays_country = "France"'),
        "sampling.holidays_country",
        "'France' is not valid",
        id="bad-country",
    ),
    pytest.param(
        broken("last_day = 4", "last_day = 2"),
        "sampling.timepoints[0].last_day",
        "2 is before day 3",
        id="window-backwards",
    ),
    pytest.param(
        broken('last_day = 4\nkit_type = "BIOMARKER"', 'last_day = 4\nkit_type = "SERUM"'),
        "sampling.timepoints[0].kit_type",
        "unknown kit type 'SERUM'",
        id="unknown-sample-kit",
    ),
    pytest.param(
        broken("units = 3", "units = 2"),
        "kit_types[0].units",
        "2 does not match the 3 tubes listed",
        id="tubes-and-units-disagree",
    ),
    pytest.param(
        broken("volume_ml = 2.5", "volume_ml = 0"),
        "kit_types[0].tubes[2].volume_ml",
        "must be above 0",
        id="empty-tube",
    ),
    pytest.param(
        TEXT[: TEXT.index("[sampling]")] + TEXT[TEXT.index("# --- Sites") :],
        "sampling",
        "is required",
        id="no-schedule",
    ),
]


@pytest.mark.req("VAL-03")
@pytest.mark.parametrize(("text", "field", "message"), INVALID)
def test_cohort_mistakes_name_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, source="trials/cohort.toml")
    problems = caught.value.problems
    assert any(path == field and message in problem for path, problem in problems), problems
    assert f"trials/cohort.toml: {field}: " in str(caught.value)


def test_a_sample_kit_without_tubes_is_refused() -> None:
    start = TEXT.index("tubes = [")
    end = TEXT.index("]\n", TEXT.index("PAXgene")) + 2
    with pytest.raises(DefinitionError) as caught:
        parse_definition(TEXT[:start] + TEXT[end:])
    assert ("kit_types[0].tubes", "a sample kit of an observational study needs its tubes") in (
        caught.value.problems
    )
