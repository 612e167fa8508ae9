"""Trial definition files: the shipped IFN-gamma trial loads; every kind of mistake is refused
with a message naming the file, the field and the problem (VAL-03)."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from allocator.trialdef import (
    BlockRandomization,
    BooleanCriterion,
    DateCriterion,
    DefinitionError,
    NumberCriterion,
    iter_stratum_keys,
    load_definition,
    parse_definition,
)
from tests.support import IFN_TRIAL

TEXT = IFN_TRIAL.read_text(encoding="utf-8")


def broken(old: str, new: str, count: int = 1) -> str:
    assert TEXT.count(old) >= count, f"fixture text not found: {old!r}"
    return TEXT.replace(old, new, count)


@pytest.mark.req("VAL-03")
def test_the_shipped_ifn_gamma_definition_is_valid_and_complete() -> None:
    d, text = load_definition(IFN_TRIAL)
    assert text == TEXT
    assert (d.code, d.eu_ct_number, d.nct_number, d.sponsor_protocol_code) == (
        "IFNG-PAIS",
        "2023-506725-11-00",
        "NCT06694740",
        "APHP220672",
    )
    assert d.target_sample_size == 170
    assert d.arm_codes == ("A", "B") and d.ratio == (("A", 1), ("B", 1))
    assert [s.principal_investigator for s in d.sites] == ["Pr Dépret", "Dr de Roquetaillade"]
    assert [f.code for f in d.stratification] == ["site", "admission_cause"]
    assert list(iter_stratum_keys(d)) == [
        "site=P1;admission_cause=septic",
        "site=P1;admission_cause=non_septic",
        "site=P2;admission_cause=septic",
        "site=P2;admission_cause=non_septic",
    ]
    assert isinstance(d.randomization, BlockRandomization) and d.randomization.block_sizes == (2, 4, 6)
    assert [day.label for day in d.dispensing.schedule] == ["D1", "D2", "D3"]
    sofa = d.criterion("sofa_24h")
    assert isinstance(sofa, NumberCriterion) and sofa.min == 6
    mhla = d.criterion("mhladr")
    assert isinstance(mhla, NumberCriterion) and mhla.max == 8000 and not mhla.max_inclusive
    window = d.criterion("mhladr_date")
    assert isinstance(window, DateCriterion) and window.window_days == (5, 10)
    assert window.relative_to == "icu_admission_date"
    excl = [c for c in d.eligibility if c.kind == "exclusion"]
    assert len(excl) == 9 and all(isinstance(c, BooleanCriterion) and c.required is False for c in excl)
    # The unknowns are marked as such, not silently invented (mission.md).
    fields = {u.field for u in d.unconfirmed}
    assert {
        "stratification.admission_cause",
        "sponsor.emergency_phone",
        "randomization.block_sizes",
    } <= fields
    assert d.labels.fr.clinical_trial_use_only == "Pour essai clinique uniquement"


def test_fingerprint_changes_only_with_allocation_relevant_fields() -> None:
    base = parse_definition(TEXT)
    retitled = parse_definition(broken('short_title = "IFN-gamma PAIS"', 'short_title = "IFN PAIS"'))
    reblocked = parse_definition(broken("block_sizes = [2, 4, 6]", "block_sizes = [4, 6]"))
    assert retitled.allocation_fingerprint() == base.allocation_fingerprint()
    assert reblocked.allocation_fingerprint() != base.allocation_fingerprint()
    assert parse_definition(TEXT).canonical_json() == base.canonical_json()


INVALID = [
    pytest.param(
        broken('eu_ct_number = "2023-506725-11-00"\n', ""),
        "trial.eu_ct_number",
        "is required",
        id="missing-field",
    ),
    pytest.param(
        broken("target_sample_size = 170", 'target_sample_size = "170"'),
        "trial.target_sample_size",
        "must be a whole number, not a string",
        id="wrong-type",
    ),
    pytest.param(
        broken("ratio = { A = 1, B = 1 }", "ratio = { A = 1, C = 1 }"),
        "allocation.ratio.C",
        "unknown arm 'C'",
        id="unknown-arm-in-ratio",
    ),
    pytest.param(
        broken('{ code = "non_septic"', '{ code = "septic"'),
        "stratification[1].levels[1].code",
        "duplicate level 'septic'",
        id="duplicate-level",
    ),
    pytest.param(
        broken("block_sizes = [2, 4, 6]", "block_sizes = [2, 3, 6]"),
        "randomization.block_sizes[1]",
        "3 is not a multiple of the ratio total 2",
        id="block-not-multiple-of-ratio",
    ),
    pytest.param(
        broken("ratio = { A = 1, B = 1 }", "ratio = { A = 2, B = 1 }"),
        "randomization.block_sizes[0]",
        "2 is not a multiple of the ratio total 3",
        id="ratio-change-breaks-blocks",
    ),
    pytest.param(
        broken("slots_per_stratum = 120", "slot_per_stratum = 120"),
        "randomization.slot_per_stratum",
        "is not a known field",
        id="typo-unknown-field",
    ),
    pytest.param(
        broken('code = "A"\n', 'code = "B"\n'), "arms[1].code", "duplicate arm code 'B'", id="duplicate-arm"
    ),
    pytest.param(
        broken('code = "P2"\n', 'code = "DRILL"\n'),
        "sites[1].code",
        "codes starting with DRILL are reserved for drills",
        id="site-code-reserved-for-drills",
    ),
    pytest.param(
        broken('relative_to = "icu_admission_date"', 'relative_to = "admission"'),
        "eligibility[5].relative_to",
        "unknown criterion 'admission'",
        id="unknown-relative-date",
    ),
    pytest.param(
        broken('timezone = "Europe/Paris"', 'timezone = "Europe/Lutece"'),
        "trial.timezone",
        "not a known time zone",
        id="bad-timezone",
    ),
    pytest.param(
        broken('clinical_trial_use_only = "Pour essai clinique uniquement"\n', ""),
        "labels.fr.clinical_trial_use_only",
        "is required",
        id="missing-french-label-text",
    ),
    pytest.param(
        broken('field = "sponsor.emergency_phone"', 'field = "sponsor.fax"'),
        "unconfirmed[2].field",
        "does not name a field",
        id="unconfirmed-unknown-field",
    ),
    pytest.param(
        broken('kit_type = "VIAL"\noffset_hours = 24', 'kit_type = "BOX"\noffset_hours = 24'),
        "dispensing.schedule[1].kit_type",
        "unknown kit type 'BOX'",
        id="unknown-kit-type",
    ),
    pytest.param(
        broken('source = "site"\n', 'source = "entered"\n'),
        "stratification[0].levels",
        "is required",
        id="site-factor-missing",
    ),
    pytest.param(
        broken("window_days = [5, 10]", "window_days = [10, 5]"),
        "eligibility[5].window_days",
        "first_day <= last_day",
        id="inverted-window",
    ),
    pytest.param(
        broken("format_version = 1", "format_version = 2"), "format_version", "not supported", id="version"
    ),
    pytest.param(
        broken(
            'screening_number_pattern = "^[A-Z0-9]{2,4}-[0-9]{3,5}$"', 'screening_number_pattern = "[A-Z"'
        ),
        "trial.screening_number_pattern",
        "not a valid regular expression",
        id="bad-regex",
    ),
    pytest.param("this is = = not toml", "(top level)", "not valid TOML", id="not-toml"),
]


@pytest.mark.req("VAL-03")
@pytest.mark.parametrize(("text", "field", "problem"), INVALID)
def test_invalid_definitions_name_the_file_the_field_and_the_problem(
    text: str, field: str, problem: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, source="trials/x.toml")
    message = str(caught.value)
    assert re.search(
        rf"^trials/x\.toml: {re.escape(field)}: .*{re.escape(problem)}", message, re.MULTILINE
    ), message


def test_every_problem_is_reported_at_once() -> None:
    text = broken("target_sample_size = 170", 'target_sample_size = "x"')
    text = text.replace("block_sizes = [2, 4, 6]", "block_sizes = [3]")
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text)
    fields = [path for path, _ in caught.value.problems]
    assert "trial.target_sample_size" in fields and "randomization.block_sizes[0]" in fields


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"nope\.toml: \(top level\): file not found"):
        load_definition(tmp_path / "nope.toml")


def test_minimization_designs_are_validated() -> None:
    minim = broken(
        'method = "permuted_blocks"\nblock_sizes = [2, 4, 6]\nslots_per_stratum = 120\nalert_remaining = 20',
        'method = "minimization"\nfactors = ["site", "admission_cause"]\nweights = { site = 1, admission_cause = 2 }\n'
        'imbalance = "range"\np_preferred = 0.8\nmax_subjects = 200\nalert_remaining = 10',
    ).replace('field = "randomization.block_sizes"', 'field = "randomization.factors"')
    d = parse_definition(minim)
    assert d.randomization.method == "minimization"
    assert d.randomization.p_preferred == Fraction(4, 5)  # type: ignore[union-attr]
    with pytest.raises(
        DefinitionError, match=r"randomization.factors\[1\]: unknown stratification factor 'sex'"
    ):
        parse_definition(minim.replace('factors = ["site", "admission_cause"]', 'factors = ["site", "sex"]'))
    with pytest.raises(DefinitionError, match=r"p_preferred: 0\.3 must be between 0\.5 and 1"):
        parse_definition(minim.replace("p_preferred = 0.8", "p_preferred = 0.3"))


# --- [supply]: automatic resupply (issue 19) ---------------------------------------------------

SUPPLY = """
[supply]
initial_courses = 8
trigger_courses = 4
resupply_courses = 10
lead_time_days = 3
do_not_ship_days = 60
predictive = true

[[supply.sites]]
code = "P2"
lead_time_days = 5
trigger_courses = 6
"""


def test_supply_levels_are_read_per_site_with_the_trial_s_as_defaults() -> None:
    assert parse_definition(TEXT).supply is None  # without [supply]: shipments by hand only
    supply = parse_definition(TEXT + SUPPLY).supply
    assert supply is not None
    assert supply.predictive and supply.do_not_ship_days == 60 and supply.enrolment_window_days == 60
    p1, p2 = supply.for_site("P1"), supply.for_site("P2")
    assert (p1.initial_courses, p1.trigger_courses, p1.resupply_courses, p1.lead_time_days) == (8, 4, 10, 3)
    assert (p2.initial_courses, p2.trigger_courses, p2.resupply_courses, p2.lead_time_days) == (8, 6, 10, 5)


@pytest.mark.req("VAL-03")
@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        ("resupply_courses = 10", "resupply_courses = 4", "supply.resupply_courses", "must be above"),
        ("initial_courses = 8", "initial_courses = 2", "supply.initial_courses", "at least trigger"),
        ("do_not_ship_days = 60\n", "", "supply.do_not_ship_days", "is required"),
        ('code = "P2"\nlead', 'code = "P9"\nlead', "supply.sites[0].code", "is not a site"),
        ("trigger_courses = 6", "trigger_courses = 12", "supply.sites[0].resupply_courses", "must be above"),
        ("predictive = true", 'predictive = "yes"', "supply.predictive", "must be true or false"),
        ("lead_time_days = 3", "lead_time_days = -1", "supply.lead_time_days", "below the minimum"),
        ("lead_time_days = 5", "lead_days = 5", "supply.sites[0].lead_days", "is not a known field"),
    ],
)
def test_invalid_supply_levels_name_the_field(old: str, new: str, field: str, problem: str) -> None:
    assert SUPPLY.count(old) == 1, old
    with pytest.raises(DefinitionError) as caught:
        parse_definition(TEXT + SUPPLY.replace(old, new), source="trials/x.toml")
    assert re.search(
        rf"^trials/x\.toml: {re.escape(field)}: .*{re.escape(problem)}", str(caught.value), re.M
    ), str(caught.value)
