"""Kit-list arm sequence: balanced consecutive blocks, own stream (BLD-03, BLD-04, RND-03)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from allocator.randomization import BlockDesign, generate_stratum, kit_arm_sequence

SEED = bytes(range(32))
KITS = BlockDesign(("IFNG", "PLACEBO"), (1, 1), (4,))


def _kits(count: int, design: BlockDesign = KITS, seed: bytes = SEED, label: str = "KITS-1") -> list[str]:
    return [
        s.arm
        for s in kit_arm_sequence(seed, design, trial_code="IFNG-ICU", kit_list_label=label, count=count)
    ]


@pytest.mark.req("BLD-04")
def test_every_run_of_four_consecutive_kits_from_a_block_boundary_is_balanced() -> None:
    arms = _kits(400)
    assert len(arms) == 400
    for start in range(0, 400, 4):
        assert Counter(arms[start : start + 4]) == {"IFNG": 2, "PLACEBO": 2}
    # Any window of consecutive kits is off by at most one block's half.
    for start in range(400):
        for width in (1, 2, 3, 5, 8, 13):
            window = arms[start : start + width]
            assert abs(window.count("IFNG") - window.count("PLACEBO")) <= 4


@pytest.mark.req("BLD-04")
@settings(max_examples=80, deadline=None)
@given(
    ratio=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    multiple=st.integers(1, 3),
    count=st.integers(1, 200),
    seed=st.binary(min_size=32, max_size=32),
)
def test_positions_blocks_and_balance_for_any_ratio(
    ratio: tuple[int, int], multiple: int, count: int, seed: bytes
) -> None:
    size = multiple * sum(ratio)
    design = BlockDesign(("A", "B"), ratio, (size,))
    slots = kit_arm_sequence(seed, design, trial_code="T", kit_list_label="K", count=count)
    assert [s.position for s in slots] == list(range(1, count + 1))
    assert all(s.block == (s.position - 1) // size + 1 and s.block_size == size for s in slots)
    for first in range(0, count - size + 1, size):
        block = Counter(s.arm for s in slots[first : first + size])
        assert block == {"A": multiple * ratio[0], "B": multiple * ratio[1]}


@pytest.mark.req("RND-10")
def test_a_longer_kit_list_starts_with_the_shorter_one() -> None:
    assert _kits(1000)[:333] == _kits(333)


@pytest.mark.req("BLD-03")
def test_kit_blocks_are_independent_of_the_randomization_blocks() -> None:
    # Same seed, trial and label: the kit stream ("kits") differs from every stratum stream ("blocks").
    kits = _kits(200)
    for stratum in ("kits", "site=01"):
        randomization = generate_stratum(
            SEED, KITS, trial_code="IFNG-ICU", list_label="KITS-1", stratum=stratum, min_slots=200
        ).arms()
        assert list(randomization[:200]) != kits


@pytest.mark.req("BLD-04")
def test_the_kit_list_label_and_seed_change_the_sequence() -> None:
    reference = _kits(200)
    assert _kits(200, label="KITS-2") != reference
    assert _kits(200, seed=bytes(32)) != reference


@pytest.mark.req("BLD-04")
def test_orders_within_kit_blocks_are_uniform() -> None:
    arms = _kits(24_000)
    orders = Counter(tuple(arms[i : i + 4]) for i in range(0, 24_000, 4))
    assert len(orders) == 6
    assert stats.chisquare(list(orders.values())).pvalue > 0.01


@pytest.mark.req("BLD-04")
@pytest.mark.parametrize("count", [0, -1, True, 2.0])
def test_count_must_be_a_positive_integer(count: object) -> None:
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        kit_arm_sequence(SEED, KITS, trial_code="T", kit_list_label="K", count=count)  # type: ignore[arg-type]


PINNED_KITS = "PIPIIIPPPPIIIPIPPIPIIPIP"  # I = IFNG, P = PLACEBO; also re-derived from the spec


@pytest.mark.req("RND-03")
def test_pinned_kit_sequence() -> None:
    assert "".join(arm[0] for arm in _kits(24)) == PINNED_KITS
