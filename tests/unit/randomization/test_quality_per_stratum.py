"""The quality report per stratum (issue 18): each stratum is its own sequence, so the report gives
every design's figures at the expected stratum sizes and the trial total; the deterministic-
allocation columns say which guesser they assume.

The per-stratum figures of permuted blocks of 4 and 6 at n = 44 are checked against values computed
here independently of allocator.randomization.quality: not a Markov chain over generator states,
but a renewal computation over block starts (a block of size b starts at t with probability
start[t], block sizes equally likely) and, inside a block, the hypergeometric law of the number of
A's among its first j allocations."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from allocator.printing.quality_report import render_pdf, render_text
from allocator.randomization.quality import PER_ALLOCATION_FIGURES, PermutedBlocks, quality_report

SIZES = (4, 6)
N = 44
TOL = 1e-9


def _hyper(b: int, j: int, a: int) -> Fraction:
    """P(a A's among the first j allocations of a block of b, half A)."""
    h = b // 2
    if a < 0 or a > h or j - a < 0 or j - a > h:
        return Fraction(0)
    return Fraction(math.comb(h, a) * math.comb(h, j - a), math.comb(b, j))


def _block_starts(n: int) -> list[Fraction]:
    start = [Fraction(0)] * (n + max(SIZES) + 1)
    start[0] = Fraction(1)
    for t in range(n):
        for b in SIZES:
            start[t + b] += start[t] / len(SIZES)
    return start


def _covering(start: list[Fraction], i: int) -> list[tuple[Fraction, int, int]]:
    """(probability, block size, position in block) of the allocation with 0-based index i."""
    out = []
    for b in SIZES:
        for j in range(b):
            t = i - j
            if t >= 0 and start[t]:
                out.append((start[t] / len(SIZES), b, j))
    return out


def _prefix_within(b: int, length: int, m: int) -> Fraction:
    """P(|D| <= m at every step of the first `length` allocations of a block of b)."""
    good = 0
    arrangements = list(itertools.combinations(range(b), b // 2))
    for positions in arrangements:
        d, ok = 0, True
        for k in range(length):
            d += 1 if k in positions else -1
            ok = ok and abs(d) <= m
        good += ok
    return Fraction(good, len(arrangements))


def independent_figures(n: int) -> dict[str, float]:
    start = _block_starts(n)
    abs_d, zero_d, sq_d = [], [], []
    cg = da = Fraction(0)
    entropy_f = 0.0
    for i in range(n):
        e_abs = p_zero = e_sq = Fraction(0)
        for weight, b, j in _covering(start, i):
            h = b // 2
            for a in range(j + 1):  # A's before allocation i in its block
                p = weight * _hyper(b, j, a)
                if not p:
                    continue
                d = 2 * a - j
                p_a = Fraction(h - a, b - j)
                cg += p * (Fraction(1, 2) if d == 0 else (1 - p_a if d > 0 else p_a))
                da += p * (p_a in (0, 1))
                if 0 < p_a < 1:
                    q = float(p_a)
                    entropy_f += float(p) * -(q * math.log(q) + (1 - q) * math.log(1 - q))
            for a in range(j + 2):  # A's after allocation i
                p = weight * _hyper(b, j + 1, a)
                d = 2 * a - (j + 1)
                e_abs += p * abs(d)
                p_zero += p * (d == 0)
                e_sq += p * d * d
        abs_d.append(e_abs)
        zero_d.append(p_zero)
        sq_d.append(e_sq)
    e_max = Fraction(0)
    for m in range(max(SIZES) // 2 + 1):  # E[max] = sum_m P(max > m)
        reach = [Fraction(0)] * (n + 1)
        reach[0] = Fraction(1)
        within = Fraction(0)
        for t in range(n):
            for b in SIZES:
                if t + b <= n:
                    reach[t + b] += reach[t] / len(SIZES) * _prefix_within(b, b, m)
                else:
                    within += reach[t] / len(SIZES) * _prefix_within(b, n - t, m)
        e_max += 1 - (reach[n] + within)
    return {
        "final_abs_imbalance": float(abs_d[-1]),
        "final_balance_probability": float(zero_d[-1]),
        "final_imbalance_sd": math.sqrt(sq_d[-1]),
        "mean_abs_imbalance": float(sum(abs_d) / n),
        "mean_balance_probability": float(sum(zero_d) / n),
        "correct_guess_probability": float(cg / n),
        "deterministic_proportion_known_blocks": float(da / n),
        "allocation_entropy": entropy_f / n,
        "expected_max_imbalance": float(e_max),
    }


@pytest.fixture(scope="module")
def report():  # type: ignore[no-untyped-def]
    return quality_report(
        PermutedBlocks(SIZES), 4 * N, (), simulation_seed=1, simulations=100, stratum_sizes=(N, N, N, N)
    )


@pytest.mark.req("RND-01")
def test_per_stratum_figures_of_blocks_4_and_6_at_44_equal_independent_exact_values(report) -> None:  # type: ignore[no-untyped-def]
    [group] = report.per_stratum
    assert (group.size, group.strata) == (N, 4)
    figures = group.designs[0]
    assert figures.exact and figures.n == N
    expected = independent_figures(N)
    for name, value in expected.items():
        assert getattr(figures, name).value == pytest.approx(value, abs=TOL), name
    assert figures.max_possible_imbalance == 3
    # A check of the check: the independent values are not those of a one-sequence analysis of 176.
    whole = report.designs[0]
    assert (
        abs(whole.final_abs_imbalance.value - expected["final_abs_imbalance"]) > 1e-6
        or abs(whole.expected_max_imbalance.value - expected["expected_max_imbalance"]) > 1e-6
    )


@pytest.mark.req("RND-01")
def test_the_trial_total_averages_over_every_allocation_of_every_stratum() -> None:
    built = quality_report(
        PermutedBlocks((2, 4, 6)),
        170,
        (PermutedBlocks((6,)),),
        simulation_seed=1,
        simulations=100,
        stratum_sizes=(43, 43, 42, 42),
    )
    assert [(g.size, g.strata) for g in built.per_stratum] == [(43, 2), (42, 2)]
    for index in range(2):
        total = dict(built.trial_total(index))
        assert list(total) == list(PER_ALLOCATION_FIGURES)
        for name in PER_ALLOCATION_FIGURES:
            by_size = [getattr(g.designs[index], name).value for g in built.per_stratum]
            assert total[name].value == pytest.approx((86 * by_size[0] + 84 * by_size[1]) / 170, abs=1e-12)
    # The example: per stratum, blocks {2,4,6} are guessed right more often than fixed blocks of 6.
    cg = dict(built.trial_total(0))["correct_guess_probability"].value
    cg6 = dict(built.trial_total(1))["correct_guess_probability"].value
    assert cg > cg6


@pytest.mark.req("RND-01")
def test_the_report_names_which_guesser_each_deterministic_column_assumes(report) -> None:  # type: ignore[no-untyped-def]
    text = render_text(report)
    flat = " ".join(text.split())
    assert "DA = Det." not in flat and "DA = DA (bounds known)" in flat
    assert "Det. (bounds unknown)" in text and "block boundaries known (Zhao et al. 'DA')" in flat
    assert f"Per stratum: one stratum of n = {N} allocations (4 strata of this expected size):" in flat
    assert "Trial total over the 4 strata (n = 176)" in flat
    pdf = render_pdf(report, title="t", generated_at="now", software_version="1", test_mode=False)
    assert pdf.startswith(b"%PDF")
