"""Stratified permuted-block lists: balance, random block sizes, reproducibility, digest (RND-01..03, RND-10).

Running imbalance, as checked here: after the first ``j`` slots of a stratum, with ``c_a`` slots on arm
``a`` of ratio weight ``r_a``, ``D_j = max_a(c_a / r_a) - min_a(c_a / r_a)`` (counts in units of the
ratio, exact fractions). For 1:1 this is ``|c_A - c_B|``. Inside a block of size ``s = m * T`` every
``c_a / r_a`` of that block lies in ``[0, m]`` and completed blocks contribute equally to every arm, so
``D_j <= max_block / T <= max_block / 2`` (RND-01 states the last bound).
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from allocator.randomization import (
    ALGORITHM,
    ALGORITHM_VERSION,
    BlockDesign,
    ListRow,
    RandomizationList,
    StratumSequence,
    digest_rows,
    generate_list,
    generate_stratum,
    iter_blocks,
    iter_slots,
)

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
TRIAL = "IFNG-ICU"
LABEL = "PROD-1"

arm_codes = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=6
)  # any printable code, including non-ASCII


@st.composite
def designs(draw: st.DrawFn) -> BlockDesign:
    n_arms = draw(st.integers(min_value=2, max_value=4))
    arms = tuple(draw(st.lists(arm_codes, min_size=n_arms, max_size=n_arms, unique=True)))
    ratio = tuple(draw(st.lists(st.integers(1, 3), min_size=n_arms, max_size=n_arms)))
    multiples = draw(st.sets(st.integers(1, 4), min_size=1, max_size=3))
    sizes = [m * sum(ratio) for m in multiples]
    return BlockDesign(arms, ratio, tuple(draw(st.permutations(sizes))))


seeds = st.binary(min_size=32, max_size=32)
stratum_keys = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=30)


def _stratum(seed: bytes, design: BlockDesign, min_slots: int, key: str = "site=01") -> StratumSequence:
    return generate_stratum(
        seed, design, trial_code=TRIAL, list_label=LABEL, stratum=key, min_slots=min_slots
    )


def _running_imbalance(design: BlockDesign, arms: tuple[str, ...]) -> list[Fraction]:
    counts = dict.fromkeys(design.arms, 0)
    weight = dict(zip(design.arms, design.ratio, strict=True))
    out: list[Fraction] = []
    for arm in arms:
        counts[arm] += 1
        units = [Fraction(counts[a], weight[a]) for a in design.arms]
        out.append(max(units) - min(units))
    return out


# --- design validation ------------------------------------------------------------------------------


@pytest.mark.req("RND-01")
@pytest.mark.parametrize(
    ("arms", "ratio", "sizes", "message"),
    [
        (("A", "B"), (1, 1), (), "at least one block size"),
        (("A", "B"), (1, 1), (3,), "block size 3 is not a multiple of the ratio total 2"),
        (("A", "B"), (2, 1), (2, 3), "block size 2 is not a multiple of the ratio total 3"),
        (("A", "B"), (1, 1), (0,), "must be a positive integer"),
        (("A", "B"), (1, 1), (-2,), "must be a positive integer"),
        (("A", "B"), (1, 1), (4, 4), "repeated: 4"),
        (("A", "A"), (1, 1), (2,), "unique; repeated: A"),
        (("A", ""), (1, 1), (2,), "arm code must not be empty"),
        (("A", "B\t"), (1, 1), (2,), "control character U\\+0009"),
        (("A",), (1,), (1,), "at least two arms"),
        (("A", "B"), (1,), (2,), "ratio has 1 entries but there are 2 arms"),
        (("A", "B"), (1, 0), (2,), "ratio entry for arm 'B' must be an integer >= 1"),
        (("A", "B"), (1, True), (2,), "ratio entry for arm 'B'"),
    ],
)
def test_invalid_designs_are_rejected_with_a_message_naming_the_problem(
    arms: tuple[str, ...], ratio: tuple[int, ...], sizes: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BlockDesign(arms, ratio, sizes)


@pytest.mark.req("RND-03")
def test_block_sizes_are_normalized_so_the_list_does_not_depend_on_their_written_order() -> None:
    a = BlockDesign(("A", "B"), (1, 1), (6, 2, 4))
    b = BlockDesign(("A", "B"), (1, 1), (2, 4, 6))
    assert a.block_sizes == (2, 4, 6)
    assert _stratum(SEED, a, 50).arms() == _stratum(SEED, b, 50).arms()


@pytest.mark.req("RND-01")
def test_block_template_is_filled_in_arm_order() -> None:
    design = BlockDesign(("ACT", "PBO", "LOW"), (3, 2, 1), (6, 12))
    assert design.block_template(6) == ("ACT",) * 3 + ("PBO",) * 2 + ("LOW",)
    assert design.block_template(12) == ("ACT",) * 6 + ("PBO",) * 4 + ("LOW",) * 2
    with pytest.raises(ValueError, match="not an allowed block size"):
        design.block_template(18)


# --- properties over random designs ------------------------------------------------------------------


@pytest.mark.req("RND-01")
@settings(max_examples=150, deadline=None)
@given(design=designs(), seed=seeds, min_slots=st.integers(1, 300))
def test_every_block_is_balanced_exactly_to_the_ratio(
    design: BlockDesign, seed: bytes, min_slots: int
) -> None:
    sequence = _stratum(seed, design, min_slots)
    expected_position = 1
    for number, block in enumerate(sequence.blocks, start=1):
        assert block.number == number
        assert block.first_position == expected_position
        assert block.size in design.block_sizes
        multiple = block.size // design.ratio_total
        assert Counter(block.arms) == {
            arm: multiple * r for arm, r in zip(design.arms, design.ratio, strict=True)
        }
        expected_position += block.size
    slots = list(sequence.slots())
    assert [slot.position for slot in slots] == list(range(1, len(slots) + 1))
    assert all(slot.block_size == sequence.blocks[slot.block - 1].size for slot in slots)


@pytest.mark.req("RND-01")
@settings(max_examples=150, deadline=None)
@given(design=designs(), seed=seeds, min_slots=st.integers(1, 300))
def test_running_imbalance_never_exceeds_half_the_largest_block(
    design: BlockDesign, seed: bytes, min_slots: int
) -> None:
    imbalance = _running_imbalance(design, _stratum(seed, design, min_slots).arms())
    bound = Fraction(design.max_block_size, design.ratio_total)
    assert max(imbalance) <= bound <= Fraction(design.max_block_size, 2)


@pytest.mark.req("RND-01")
@settings(max_examples=100, deadline=None)
@given(seed=seeds, sizes=st.sets(st.sampled_from([2, 4, 6, 8]), min_size=1), min_slots=st.integers(1, 200))
def test_one_to_one_arm_counts_differ_by_at_most_half_the_largest_block(
    seed: bytes, sizes: set[int], min_slots: int
) -> None:
    design = BlockDesign(("A", "B"), (1, 1), tuple(sizes))
    a = b = 0
    for arm in _stratum(seed, design, min_slots).arms():
        a, b = a + (arm == "A"), b + (arm == "B")
        assert abs(a - b) <= max(sizes) // 2


@pytest.mark.req("RND-01")
@settings(max_examples=150, deadline=None)
@given(design=designs(), seed=seeds, min_slots=st.integers(1, 400))
def test_capacity_is_met_with_whole_blocks_and_no_extra_block(
    design: BlockDesign, seed: bytes, min_slots: int
) -> None:
    sequence = _stratum(seed, design, min_slots)
    assert len(sequence) >= min_slots
    assert len(sequence) - sequence.blocks[-1].size < min_slots  # the last block was needed
    assert len(sequence) - min_slots < design.max_block_size
    assert sequence.min_slots == min_slots


@pytest.mark.req("RND-10")
@settings(max_examples=150, deadline=None)
@given(design=designs(), seed=seeds, short=st.integers(1, 200), extra=st.integers(0, 200))
def test_prefix_stability_a_longer_list_starts_with_the_shorter_one(
    design: BlockDesign, seed: bytes, short: int, extra: int
) -> None:
    small = _stratum(seed, design, short)
    large = _stratum(seed, design, short + extra)
    assert large.blocks[: len(small.blocks)] == small.blocks
    assert list(large.slots())[: len(small)] == list(small.slots())


@pytest.mark.req("RND-03")
@settings(max_examples=60, deadline=None)
@given(design=designs(), seed=seeds, keys=st.lists(stratum_keys, min_size=1, max_size=4, unique=True))
def test_same_seed_and_parameters_give_an_identical_list_and_digest(
    design: BlockDesign, seed: bytes, keys: list[str]
) -> None:
    strata = dict.fromkeys(keys, 40)
    first = generate_list(seed, design, trial_code=TRIAL, list_label=LABEL, strata=strata)
    again = generate_list(
        seed, design, trial_code=TRIAL, list_label=LABEL, strata=dict(reversed(strata.items()))
    )
    assert again == first
    assert again.serialize() == first.serialize()
    assert again.digest == first.digest


@pytest.mark.req("RND-04")
@settings(max_examples=60, deadline=None)
@given(design=designs(), seed=seeds, other=seeds)
def test_a_different_seed_gives_a_different_list(design: BlockDesign, seed: bytes, other: bytes) -> None:
    # 200 slots hold at least 25 blocks with 2 or more distinct orders each, so equal lists from two
    # different seeds would mean the seed is not used (chance below 2**-25).
    if seed == other:
        return
    strata = {"site=01": 200}
    a = generate_list(seed, design, trial_code=TRIAL, list_label=LABEL, strata=strata)
    b = generate_list(other, design, trial_code=TRIAL, list_label=LABEL, strata=strata)
    assert a.stratum("site=01").arms() != b.stratum("site=01").arms()
    assert a.digest != b.digest


# --- independence of strata and domains --------------------------------------------------------------

DESIGN = BlockDesign(("A", "B"), (1, 1), (2, 4, 6))


@pytest.mark.req("RND-01")
def test_each_stratum_has_its_own_sequence_unaffected_by_the_other_strata() -> None:
    alone = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={"site=01": 100})
    together = generate_list(
        SEED,
        DESIGN,
        trial_code=TRIAL,
        list_label=LABEL,
        strata={"site=02": 300, "site=01": 100, "site=03": 7},
    )
    assert together.stratum("site=01") == alone.stratum("site=01")
    assert (
        together.stratum("site=01").arms()
        != together.stratum("site=02").arms()[: len(alone.stratum("site=01"))]
    )


@pytest.mark.req("RND-03")
@pytest.mark.parametrize(
    "changed",
    [{"trial_code": "OTHER"}, {"list_label": "UAT-1"}, {"stratum": "site=01 "}, {"stratum": "SITE=01"}],
)
def test_trial_code_list_label_and_stratum_key_are_part_of_the_domain(changed: dict[str, str]) -> None:
    base = {"trial_code": TRIAL, "list_label": LABEL, "stratum": "site=01"}
    reference = generate_stratum(SEED, DESIGN, min_slots=100, **base)
    other = generate_stratum(SEED, DESIGN, min_slots=100, **(base | changed))
    assert other.arms() != reference.arms()


@pytest.mark.req("RND-01")
def test_iterators_yield_the_same_sequence_as_the_generated_stratum() -> None:
    sequence = _stratum(SEED, DESIGN, 120)
    slots = iter_slots(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, stratum="site=01")
    assert [next(slots) for _ in range(len(sequence))] == list(sequence.slots())
    blocks = iter_blocks(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, stratum="site=01")
    assert tuple(next(blocks) for _ in range(len(sequence.blocks))) == sequence.blocks


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("key", ["", "site\n01", "site\t01", "a\x00", "\x85"])
def test_stratum_keys_with_control_characters_or_empty_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="stratum key"):
        generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={key: 10})
    with pytest.raises(ValueError, match="stratum key"):
        iter_slots(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, stratum=key)


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("min_slots", [0, -4, True, 2.5])
def test_min_slots_must_be_a_positive_integer(min_slots: object) -> None:
    with pytest.raises(ValueError, match="min_slots for stratum 'site=01'"):
        generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={"site=01": min_slots})  # type: ignore[dict-item]


@pytest.mark.req("RND-01")
def test_a_list_needs_at_least_one_stratum() -> None:
    with pytest.raises(ValueError, match="at least one stratum"):
        generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={})


# --- statistics of the random elements --------------------------------------------------------------


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("sizes", [(2, 4, 6), (4, 8), (2, 4, 6, 8, 10)])
def test_block_size_frequencies_do_not_differ_from_uniform(sizes: tuple[int, ...]) -> None:
    design = BlockDesign(("A", "B"), (1, 1), sizes)
    blocks = iter_blocks(SEED, design, trial_code=TRIAL, list_label=LABEL, stratum="chi-square")
    counts = Counter(next(blocks).size for _ in range(6_000))
    assert set(counts) == set(sizes)
    result = stats.chisquare([counts[s] for s in sizes])
    assert result.pvalue > 0.01, (counts, result)


@pytest.mark.req("RND-01")
def test_block_size_draw_detects_a_biased_sequence() -> None:
    # The same chi-square check rejects a draw that favours the first size 40 % against 30/30,
    # so the test above has the power to fail.
    result = stats.chisquare([2_400, 1_800, 1_800])
    assert result.pvalue < 0.01


@pytest.mark.req("RND-04")
def test_orders_within_blocks_are_uniform_over_the_distinct_permutations() -> None:
    design = BlockDesign(("A", "B"), (1, 1), (4,))
    blocks = iter_blocks(SEED, design, trial_code=TRIAL, list_label=LABEL, stratum="orders")
    counts = Counter(next(blocks).arms for _ in range(6_000))
    assert len(counts) == 6  # 4! / (2! 2!)
    assert stats.chisquare(list(counts.values())).pvalue > 0.01


@pytest.mark.req("RND-04")
def test_first_slot_of_each_stratum_is_not_predictable_from_the_stratum_key() -> None:
    strata = {f"site={i:03d}": 1 for i in range(2_000)}
    lst = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata=strata)
    first_is_a = sum(seq.arms()[0] == "A" for seq in lst.strata)
    assert stats.binomtest(first_is_a, len(strata), 0.5).pvalue > 0.01


# --- record, serialization and digest ---------------------------------------------------------------


@pytest.mark.req("RND-02")
def test_the_list_records_algorithm_version_parameters_and_digest() -> None:
    lst = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={"b": 10, "a": 20})
    assert (lst.algorithm, lst.algorithm_version) == (ALGORITHM, ALGORITHM_VERSION)
    assert (lst.trial_code, lst.list_label, lst.design) == (TRIAL, LABEL, DESIGN)
    assert [(s.stratum, s.min_slots) for s in lst.strata] == [("a", 20), ("b", 10)]
    assert lst.digest == hashlib.sha256(lst.serialize()).hexdigest()
    assert lst.total_slots == len(lst.stratum("a")) + len(lst.stratum("b"))
    assert SEED.hex() not in repr(lst)  # RND-12: the seed never travels with the list
    with pytest.raises(KeyError):
        lst.stratum("c")


@pytest.mark.req("RND-02")
def test_serialization_is_one_tab_separated_line_per_slot_in_canonical_order() -> None:
    lst = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={"é": 2, "z": 2, "Z": 2})
    lines = lst.serialize().decode("utf-8").split("\n")
    assert lines[-1] == ""  # ends with LF
    keys = [line.split("\t")[0] for line in lines[:-1]]
    assert keys == sorted(keys) and keys[0] == "Z" and keys[-1] == "é"  # code point order
    for line, row in zip(lines[:-1], lst.rows(), strict=True):
        assert line == f"{row.stratum}\t{row.position}\t{row.block}\t{row.block_size}\t{row.arm}"


@pytest.mark.req("RND-10")
def test_digest_of_stored_rows_ignores_storage_order_and_detects_tampering() -> None:
    lst = generate_list(
        SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata={"site=01": 50, "site=02": 50}
    )
    rows = list(lst.rows())
    assert digest_rows(reversed(rows)) == lst.digest
    assert digest_rows(sorted(rows, key=lambda row: (row.arm, row.block_size, -row.position))) == lst.digest
    victim = rows[17]
    flipped = ListRow(
        victim.stratum, victim.position, victim.block, victim.block_size, "B" if victim.arm == "A" else "A"
    )
    assert digest_rows([*rows[:17], flipped, *rows[18:]]) != lst.digest
    assert digest_rows(rows[:-1]) != lst.digest
    with pytest.raises(ValueError, match="duplicate slot"):
        digest_rows([*rows, rows[3]])
    with pytest.raises(ValueError, match="position"):
        digest_rows([ListRow("site=01", 0, 1, 2, "A")])
    with pytest.raises(ValueError, match="arm code"):
        digest_rows([ListRow("site=01", 1, 1, 2, "A\nsite=01")])


@pytest.mark.req("RND-02")
def test_progress_callback_reports_each_stratum() -> None:
    calls: list[tuple[int, int]] = []
    generate_list(
        SEED,
        DESIGN,
        trial_code=TRIAL,
        list_label=LABEL,
        strata={f"s{i}": 4 for i in range(5)},
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


# --- pinned reference (RND-03) ----------------------------------------------------------------------

WORKED_EXAMPLE_DIGEST = "1b8d9dddb0b5b02839d7ae249d5502294c67b0b8c0969b5874080c3588f4c373"
REFERENCE_DIGEST = "6765f4fe0f25e500fc836b4866390d48db4f7f9fbdcd18fa58f4db08c20e0562"


def _worked_example() -> RandomizationList:
    return generate_list(
        SEED,
        BlockDesign(("A", "B"), (1, 1), (2, 4)),
        trial_code="EXAMPLE",
        list_label="LIST-1",
        strata={"site=01": 8, "site=02": 6},
    )


def _reference() -> RandomizationList:
    strata = {
        f"site={site};admission_cause={cause}": 60
        for site in ("PARIS-01", "PARIS-02")
        for cause in ("septic", "trauma", "other")
    }
    return generate_list(
        SEED,
        BlockDesign(("IFNG", "PLACEBO"), (1, 1), (2, 4, 6)),
        trial_code="IFNG-ICU",
        list_label="REF",
        strata=strata,
    )


@pytest.mark.req("RND-03")
def test_pinned_worked_example_of_the_specification() -> None:
    lst = _worked_example()
    assert ALGORITHM_VERSION == "1"
    assert lst.digest == WORKED_EXAMPLE_DIGEST
    assert lst.stratum("site=01").arms() == tuple("ABABBAAB")
    assert lst.stratum("site=02").arms() == tuple("BAABBA")


@pytest.mark.req("RND-03")
def test_pinned_reference_list_digest() -> None:
    lst = _reference()
    assert lst.total_slots >= 360
    assert lst.digest == REFERENCE_DIGEST


@pytest.mark.req("RND-02")
def test_the_specification_shows_the_pinned_worked_example() -> None:
    from pathlib import Path

    spec = (Path(__file__).resolve().parents[3] / "docs" / "randomization.md").read_text(encoding="utf-8")
    assert WORKED_EXAMPLE_DIGEST in spec
    assert f"`{ALGORITHM}`, version `{ALGORITHM_VERSION}`" in spec


# --- size and speed ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.req("RND-01")
def test_a_thousand_strata_of_a_thousand_slots_are_whole_balanced_blocks() -> None:
    # How long it takes is measured by bench/bench_lists.py (tests check behaviour, not speed).
    strata = {f"site={i // 10:03d};factor={i % 10}": 1_000 for i in range(1_000)}
    lst = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata=strata)
    assert lst.total_slots >= 1_000_000
    assert len(lst.strata) == 1_000
    for sequence in lst.strata[::100]:
        counts = Counter(sequence.arms())
        assert len(sequence) >= 1_000 and len(set(counts.values())) == 1, (sequence.stratum, counts)


@pytest.mark.req("RND-01")
def test_memory_grows_by_well_under_a_hundred_bytes_per_slot() -> None:
    # Blocks keep one shared arm-code reference per slot; Slot objects are made only when iterated.
    strata = {f"s{i:03d}": 1_000 for i in range(100)}
    tracemalloc.start()
    try:
        lst = generate_list(SEED, DESIGN, trial_code=TRIAL, list_label=LABEL, strata=strata)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lst.total_slots >= 100_000
    assert current < 100 * lst.total_slots, f"{current / lst.total_slots:.0f} bytes per slot"
    assert peak < 2 * current + 2**20
