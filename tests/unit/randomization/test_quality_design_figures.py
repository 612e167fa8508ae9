"""Design quality figures (allocator.randomization.quality): closed forms and brute-force enumeration.

The dynamic programming is checked two independent ways:

* closed forms derived below (Blackwell & Hodges 1957 for the convergence strategy);
* for small n, a brute-force enumeration of every allocation sequence with its exact probability in
  rational arithmetic, written from each design's definition and sharing no code with the module.

Closed forms used (a block of size 2m holds m A and m B in uniformly random order):

* Correct guesses in one block under the convergence strategy: every excursion of D away from 0
  that lasts 2k allocations starts with a tie (scored 1/2) and then has k moves towards 0 (guessed
  right) and k - 1 away (guessed wrong), so E[right] = m + E[ties]/2, where E[ties] = sum_{j<m}
  P(D_2j = 0) = 4^m / C(2m, m) - 1 (Vandermonde-type identity sum_j C(2j,j) C(2m-2j,m-j) = 4^m).
  Hence CG = 1/2 + (4^m / C(2m, m) - 1) / (4m): m = 1: 3/4, m = 2: 17/24, m = 3: 41/60,
  m = 4: 373/560. The random allocation rule of even n is one block with 2m = n.
* Deterministic allocations in one block are those after one arm has used its m slots; the number
  of them is the length L of the final run, with P(L >= k) = 2 C(2m-k, m) / C(2m, m), so
  E[L] = 2 C(2m, m+1) / C(2m, m) = 2m / (m+1) (hockey-stick identity) and the proportion is
  1 / (m + 1): 1/2, 1/3, 1/4, 1/5 for block sizes 2, 4, 6, 8.
* Complete randomization: E|D_n| = n C(n, n/2) / 2^n and P(D_n = 0) = C(n, n/2) / 2^n for even n,
  E[D_n^2] = n; the convergence strategy is right half of the time.
* Fixed blocks of 4 over n = 4k: a block reaches |D| = 2 iff it is AABB or BBAA (probability 1/3),
  so E[max_i |D_i|] = 2 - (2/3)^k.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import pytest

from allocator.randomization.quality import (
    BigStick,
    CompleteRandomization,
    Design,
    DesignFigures,
    EfronBiasedCoin,
    MaximalProcedure,
    PermutedBlocks,
    RandomAllocationRule,
    design_figures,
    exact_figures,
    quality_report,
    simulate_figures,
    standard_alternatives,
    stratum_sizes_for,
)

TOL = 1e-12


# --------------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------------


def block_cg(m: int) -> Fraction:
    """Convergence-strategy correct-guess probability of one balanced block of size 2m."""
    return Fraction(1, 2) + (Fraction(4**m, math.comb(2 * m, m)) - 1) / (4 * m)


@pytest.mark.req("RND-01")
def test_closed_form_values_used_below_are_the_stated_ones() -> None:
    # Guards the helper itself: if block_cg were wrong, every test using it would be meaningless.
    assert [block_cg(m) for m in (1, 2, 3, 4)] == [
        Fraction(3, 4),
        Fraction(17, 24),
        Fraction(41, 60),
        Fraction(373, 560),
    ]


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("blocks", [1, 2, 5, 25, 42])
def test_block_of_four_correct_guess_probability_is_17_24(blocks: int) -> None:
    figures = exact_figures(PermutedBlocks((4,)), 4 * blocks)
    assert figures.correct_guess_probability.value == pytest.approx(17 / 24, abs=TOL)
    assert figures.correct_guess_probability.exact
    assert figures.correct_guess_probability.standard_error == 0.0
    assert figures.excess_correct_guess.value == pytest.approx(5 / 24, abs=TOL)


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("n", [2, 10, 170])
def test_block_of_two_correct_guess_probability_is_3_4(n: int) -> None:
    assert exact_figures(PermutedBlocks((2,)), n).correct_guess_probability.value == pytest.approx(
        0.75, abs=TOL
    )


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("n", [1, 2, 7, 170])
def test_complete_randomization_is_unpredictable(n: int) -> None:
    figures = exact_figures(CompleteRandomization(), n)
    assert figures.correct_guess_probability.value == pytest.approx(0.5, abs=TOL)
    assert figures.deterministic_proportion.value == 0.0
    assert figures.allocation_entropy.value == pytest.approx(math.log(2), abs=TOL)
    assert figures.max_possible_imbalance == n


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("blocks", [1, 3, 10])
def test_fixed_block_of_size_2m_guess_and_determinism_closed_forms(m: int, blocks: int) -> None:
    figures = exact_figures(PermutedBlocks((2 * m,)), 2 * m * blocks)
    assert figures.correct_guess_probability.value == pytest.approx(float(block_cg(m)), abs=TOL)
    assert figures.deterministic_proportion.value == pytest.approx(1 / (m + 1), abs=TOL)
    assert figures.deterministic_proportion_known_blocks.value == pytest.approx(1 / (m + 1), abs=TOL)
    assert figures.final_balance_probability.value == pytest.approx(1.0, abs=TOL)
    assert figures.max_possible_imbalance == m


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("n", [2, 4, 6, 10, 20, 100, 170])
def test_random_allocation_rule_closed_forms(n: int) -> None:
    figures = exact_figures(RandomAllocationRule(), n)
    cg = Fraction(1, 2) + (Fraction(2**n, math.comb(n, n // 2)) - 1) / (2 * n)
    assert figures.correct_guess_probability.value == pytest.approx(float(cg), abs=TOL)
    assert figures.deterministic_proportion.value == pytest.approx(1 / (n // 2 + 1), abs=TOL)
    assert figures.final_abs_imbalance.value == pytest.approx(0.0, abs=TOL)
    assert figures.max_possible_imbalance == n // 2


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("n", [2, 10, 170])
def test_complete_randomization_balance_closed_forms(n: int) -> None:
    figures = exact_figures(CompleteRandomization(), n)
    central = Fraction(math.comb(n, n // 2), 2**n)
    assert figures.final_abs_imbalance.value == pytest.approx(float(n * central), rel=TOL)
    assert figures.final_balance_probability.value == pytest.approx(float(central), rel=TOL)
    assert figures.final_imbalance_sd.value == pytest.approx(math.sqrt(n), rel=TOL)


@pytest.mark.req("RND-01")
@pytest.mark.parametrize("blocks", [1, 2, 10, 42])
def test_block_of_four_expected_maximum_imbalance(blocks: int) -> None:
    figures = exact_figures(PermutedBlocks((4,)), 4 * blocks)
    assert figures.expected_max_imbalance.value == pytest.approx(2 - (2 / 3) ** blocks, abs=1e-12)
    assert dict(figures.max_imbalance_distribution)[1] == pytest.approx((2 / 3) ** blocks, abs=1e-12)


@pytest.mark.req("RND-01", "RND-12")
def test_random_sizes_hide_block_ends_hand_derived_example() -> None:
    """Sizes {2, 4}, n = 3, derived by hand.

    Position 2 is forced only if the size drawn was 2, which the guesser does not know (after "A",
    a block of 4 may continue with A): never deterministic for the guesser, deterministic with
    probability 1/2 if the sizes leak. Position 3 is forced after AA or BB (size 4 and one of its 2
    of 6 arrangements: 1/2 * 1/3 = 1/6) for both guessers; after AB or BA a new block may start.
    Proportions over 3 allocations: 1/18 (guesser) and (1/2 + 1/6) / 3 = 2/9 (sizes leaked).
    """
    figures = exact_figures(PermutedBlocks((2, 4)), 3)
    assert figures.deterministic_proportion.value == pytest.approx(1 / 18, abs=TOL)
    assert figures.deterministic_proportion_known_blocks.value == pytest.approx(2 / 9, abs=TOL)


# --------------------------------------------------------------------------------------------------
# Brute force: every sequence, exact probabilities
# --------------------------------------------------------------------------------------------------

A, B = 1, 0


@dataclass(frozen=True)
class Path:
    probability: Fraction
    arms: tuple[int, ...]
    generator_p: tuple[Fraction, ...]  # P(A at i | the generator's full state before i)


def _sequential(n: int, rule: object) -> Iterator[Path]:
    """Designs defined by P(A | D): complete randomization, Efron's coin, big stick."""
    assert callable(rule)
    for arms in itertools.product((A, B), repeat=n):
        probability, d, ps = Fraction(1), 0, []
        for arm in arms:
            p = rule(d)
            ps.append(p)
            probability *= p if arm == A else 1 - p
            d += 1 if arm == A else -1
        if probability:
            yield Path(probability, arms, tuple(ps))


def _uniform_over(n: int, admissible: list[tuple[int, ...]]) -> Iterator[Path]:
    """Uniform over ``admissible`` full sequences, truncated to n; P(A | prefix) by counting."""
    weight = Fraction(1, len(admissible))
    prefix_mass: dict[tuple[int, ...], Fraction] = {}
    for seq in admissible:
        for k in range(len(seq) + 1):
            prefix_mass[seq[:k]] = prefix_mass.get(seq[:k], Fraction(0)) + weight
    for seq in sorted({s[:n] for s in admissible}):
        ps = tuple(prefix_mass.get((*seq[:i], A), Fraction(0)) / prefix_mass[seq[:i]] for i in range(n))
        yield Path(prefix_mass[seq], seq, ps)


def _blocks(n: int, sizes: tuple[int, ...]) -> Iterator[Path]:
    """Joint enumeration of block sizes and arrangements, truncated to n allocations."""

    def fill(
        start: int, probability: Fraction, arms: tuple[int, ...], ps: tuple[Fraction, ...]
    ) -> Iterator[Path]:
        if start >= n:
            yield Path(probability, arms, ps)
            return
        for size in sizes:
            half, room = size // 2, min(size, n - start)
            for part in itertools.product((A, B), repeat=room):
                a = sum(part)
                if a > half or room - a > half:
                    continue
                # Arrangements of the whole block that start with `part`, over all C(size, half).
                share = Fraction(math.comb(size - room, half - a), math.comb(size, half))
                block_ps, seen_a = [], 0
                for j, arm in enumerate(part):
                    block_ps.append(Fraction(half - seen_a, size - j))
                    seen_a += arm
                yield from fill(
                    start + room,
                    probability * Fraction(1, len(sizes)) * share,
                    arms + part,
                    ps + tuple(block_ps),
                )

    yield from fill(0, Fraction(1), (), ())


def enumerate_design(design: Design, n: int) -> list[Path]:
    if isinstance(design, PermutedBlocks):
        return list(_blocks(n, design.block_sizes))
    if isinstance(design, CompleteRandomization):
        return list(_sequential(n, lambda d: Fraction(1, 2)))
    if isinstance(design, EfronBiasedCoin):
        p = Fraction(2, 3)
        assert design.p == 2 / 3
        return list(_sequential(n, lambda d: Fraction(1, 2) if d == 0 else p if d < 0 else 1 - p))
    if isinstance(design, BigStick):
        b = design.bound
        return list(
            _sequential(n, lambda d: Fraction(0) if d >= b else Fraction(1) if d <= -b else Fraction(1, 2))
        )
    if isinstance(design, RandomAllocationRule):
        total = n + n % 2
        balanced = [s for s in itertools.product((A, B), repeat=total) if sum(s) == total // 2]
        return list(_uniform_over(n, balanced))
    assert isinstance(design, MaximalProcedure)

    def admissible(seq: tuple[int, ...]) -> bool:
        walk = list(itertools.accumulate(1 if arm == A else -1 for arm in seq))
        return max(abs(d) for d in walk) <= design.bound and abs(walk[-1]) == n % 2

    return list(_uniform_over(n, [s for s in itertools.product((A, B), repeat=n) if admissible(s)]))


def brute_force(design: Design, n: int) -> dict[str, object]:
    paths = enumerate_design(design, n)
    assert sum(p.probability for p in paths) == 1
    mass: dict[tuple[int, ...], Fraction] = {}
    for path in paths:
        for k in range(n + 1):
            mass[path.arms[:k]] = mass.get(path.arms[:k], Fraction(0)) + path.probability
    zero = Fraction(0)
    acc = dict.fromkeys(
        ("final_abs", "abs", "balance_end", "balance", "sq", "det", "known", "cg", "max"), zero
    )
    entropy = 0.0
    by_step = [zero] * n
    final: dict[int, Fraction] = {}
    maxima: dict[int, Fraction] = {}
    largest = 0
    for path in paths:
        w = path.probability
        d, top = 0, 0
        for i, arm in enumerate(path.arms):
            prefix = path.arms[:i]
            if mass.get((*prefix, 1 - arm), zero) == 0:  # the other arm is impossible after this past
                acc["det"] += w
            q = path.generator_p[i]
            if q in (0, 1):
                acc["known"] += w
            else:
                entropy += float(w) * -(float(q) * math.log(q) + float(1 - q) * math.log(1 - q))
            if d == 0:
                acc["cg"] += w / 2
            elif (d < 0) == (arm == A):
                acc["cg"] += w
            d += 1 if arm == A else -1
            top = max(top, abs(d))
            by_step[i] += w * abs(d)
            acc["abs"] += w * abs(d)
            acc["balance"] += w if d == 0 else zero
        acc["final_abs"] += w * abs(d)
        acc["balance_end"] += w if d == 0 else zero
        acc["sq"] += w * d * d
        acc["max"] += w * top
        final[d] = final.get(d, zero) + w
        maxima[top] = maxima.get(top, zero) + w
        largest = max(largest, top)
    return {
        "final_abs_imbalance": acc["final_abs"],
        "mean_abs_imbalance": acc["abs"] / n,
        "expected_max_imbalance": acc["max"],
        "final_balance_probability": acc["balance_end"],
        "mean_balance_probability": acc["balance"] / n,
        "final_imbalance_sd": math.sqrt(acc["sq"]),
        "deterministic_proportion": acc["det"] / n,
        "deterministic_proportion_known_blocks": acc["known"] / n,
        "correct_guess_probability": acc["cg"] / n,
        "excess_correct_guess": acc["cg"] / n - Fraction(1, 2),
        "allocation_entropy": entropy / n,
        "by_step": by_step,
        "final": final,
        "maxima": maxima,
        "largest": largest,
    }


BRUTE_CASES: list[tuple[Design, int]] = [
    (PermutedBlocks((2, 4, 6)), 9),
    (PermutedBlocks((2, 4, 6)), 11),
    (PermutedBlocks((2, 4)), 11),
    (PermutedBlocks((4, 6)), 10),
    (PermutedBlocks((6,)), 8),
    (PermutedBlocks((4,)), 10),
    (RandomAllocationRule(), 10),
    (RandomAllocationRule(), 9),
    (CompleteRandomization(), 9),
    (BigStick(2), 10),
    (BigStick(3), 11),
    (MaximalProcedure(2), 10),
    (MaximalProcedure(2), 9),
    (MaximalProcedure(3), 12),
    (EfronBiasedCoin(), 9),
]


@pytest.mark.req("RND-01")
@pytest.mark.parametrize(("design", "n"), BRUTE_CASES, ids=[f"{d.short_name}-n{n}" for d, n in BRUTE_CASES])
def test_dynamic_programming_equals_brute_force_enumeration(design: Design, n: int) -> None:
    truth = brute_force(design, n)
    figures = exact_figures(design, n)
    for name, figure in figures.figures():
        expected = float(truth[name])  # type: ignore[arg-type]
        assert figure.value == pytest.approx(expected, abs=TOL), name
        assert figure.exact and figure.standard_error == 0.0
    assert figures.max_possible_imbalance == truth["largest"]
    assert figures.abs_imbalance_by_step == pytest.approx([float(v) for v in truth["by_step"]], abs=TOL)  # type: ignore[attr-defined]
    final = truth["final"]
    assert isinstance(final, dict)
    assert dict(figures.final_imbalance_distribution) == pytest.approx(
        {d: float(q) for d, q in final.items()}, abs=TOL
    )
    maxima = truth["maxima"]
    assert isinstance(maxima, dict)
    assert dict(figures.max_imbalance_distribution) == pytest.approx(
        {m: float(q) for m, q in maxima.items()}, abs=TOL
    )


# --------------------------------------------------------------------------------------------------
# Report assembly, stratification, fallback, validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.req("RND-01")
def test_standard_alternatives_of_the_configured_design() -> None:
    design = PermutedBlocks((2, 4, 6))
    assert standard_alternatives(design) == (
        PermutedBlocks((2,)),
        PermutedBlocks((4,)),
        PermutedBlocks((6,)),
        PermutedBlocks((8,)),
        RandomAllocationRule(),
        CompleteRandomization(),
        BigStick(3),
        MaximalProcedure(3),
        EfronBiasedCoin(),
    )
    # The configured design itself is not repeated among its alternatives.
    assert PermutedBlocks((4,)) not in standard_alternatives(PermutedBlocks((4,)))
    assert EfronBiasedCoin() not in standard_alternatives(design, efron=False)


@pytest.mark.req("RND-01")
def test_block_sizes_are_normalized_and_named() -> None:
    design = PermutedBlocks((6, 2, 4, 2))
    assert design.block_sizes == (2, 4, 6)
    assert design == PermutedBlocks((2, 4, 6))
    assert design.short_name == "PB{2,4,6}"
    assert "2, 4, 6" in design.name
    assert PermutedBlocks((4,)).short_name == "PB(4)"


@pytest.mark.req("RND-01")
def test_stratum_sizes_split_evenly() -> None:
    assert stratum_sizes_for(170, 4) == (43, 43, 42, 42)
    assert stratum_sizes_for(8, 3) == (3, 3, 2)
    assert sum(stratum_sizes_for(1001, 7)) == 1001


@pytest.mark.req("RND-01", "RND-15")
def test_stratified_trial_level_balance() -> None:
    sizes = (43, 43, 42, 42)
    report = quality_report(
        PermutedBlocks((2, 4, 6)),
        170,
        [CompleteRandomization(), RandomAllocationRule(), PermutedBlocks((2,))],
        simulation_seed=1,
        simulations=100,
        stratum_sizes=sizes,
    )
    assert report.stratum_sizes == sizes
    configured, cr, rar, pb2 = report.designs
    # Complete randomization ignores strata: the sum over strata is CR over all 170 subjects.
    assert cr.stratified is not None
    assert cr.stratified.total_abs_imbalance.value == pytest.approx(cr.final_abs_imbalance.value, rel=1e-12)
    # RAR per stratum: the two odd strata end at +-1 each, the even ones at 0.
    assert rar.stratified is not None
    assert rar.stratified.total_abs_imbalance.value == pytest.approx(1.0, abs=TOL)
    assert rar.stratified.total_balance_probability.value == pytest.approx(0.5, abs=TOL)
    assert rar.stratified.worst_total_imbalance == 2
    assert pb2.stratified is not None and pb2.stratified.worst_total_imbalance == 2
    # The configured design: the convolution of the four strata's final distributions.
    assert configured.stratified is not None
    parts = [
        dict(exact_figures(PermutedBlocks((2, 4, 6)), size).final_imbalance_distribution) for size in sizes
    ]
    total: dict[int, float] = {0: 1.0}
    for part in parts:
        step: dict[int, float] = {}
        for d1, q1 in total.items():
            for d2, q2 in part.items():
                step[d1 + d2] = step.get(d1 + d2, 0.0) + q1 * q2
        total = step
    assert dict(configured.stratified.total_imbalance_distribution) == pytest.approx(total, abs=TOL)
    # A stratum of 43 can stop 3 allocations into a block of 6 (|D| = 3); one of 42 can stop 2 or 4
    # allocations into a block (|D| <= 2): 3 + 3 + 2 + 2.
    assert configured.stratified.worst_total_imbalance == 10


@pytest.mark.req("RND-01")
def test_simulation_fallback_when_the_exact_state_space_is_too_large() -> None:
    design = PermutedBlocks((2, 4, 6))
    exact = exact_figures(design, 60)
    first = design_figures(design, 60, simulation_seed=7, simulations=20_000, max_exact_states=10)
    again = design_figures(design, 60, simulation_seed=7, simulations=20_000, max_exact_states=10)
    other = design_figures(design, 60, simulation_seed=8, simulations=20_000, max_exact_states=10)
    assert not first.exact and first.simulations == 20_000
    assert first == again  # reproducible from the seed
    assert other.correct_guess_probability != first.correct_guess_probability
    for (name, sim), (_, truth) in zip(first.figures(), exact.figures(), strict=True):
        assert not sim.exact
        assert abs(sim.value - truth.value) <= 4 * sim.standard_error + 1e-9, name
    assert first.correct_guess_probability.standard_error > 0
    report = quality_report(
        design,
        60,
        [BigStick(3)],
        simulation_seed=7,
        simulations=2_000,
        max_exact_states=10,
        stratum_sizes=(30, 30),
    )
    assert not report.configured.exact and not report.all_exact
    assert report.designs[1].exact  # BigStick(3) needs only 7 states
    assert report.configured.stratified is not None
    assert not report.configured.stratified.total_abs_imbalance.exact


@pytest.mark.req("RND-01")
def test_simulate_figures_is_seeded() -> None:
    a = simulate_figures(BigStick(2), 30, seed=3, simulations=500)
    b = simulate_figures(BigStick(2), 30, seed=3, simulations=500)
    c = simulate_figures(BigStick(2), 30, seed=4, simulations=500)
    assert a == b
    assert a != c


@pytest.mark.req("RND-01")
@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: PermutedBlocks(()), ValueError),
        (lambda: PermutedBlocks((3,)), ValueError),
        (lambda: PermutedBlocks((0,)), ValueError),
        (lambda: PermutedBlocks((True,)), TypeError),
        (lambda: BigStick(0), ValueError),
        (lambda: MaximalProcedure(0), ValueError),
        (lambda: EfronBiasedCoin(0.4), ValueError),
        (lambda: EfronBiasedCoin(1.5), ValueError),
        (lambda: exact_figures(BigStick(1), 0), ValueError),
        (lambda: exact_figures("blocks", 10), TypeError),  # type: ignore[arg-type]
        (lambda: simulate_figures(BigStick(1), 10, seed=1, simulations=1), ValueError),
        (lambda: simulate_figures(BigStick(1), 10, seed=-1, simulations=10), ValueError),
        (
            lambda: quality_report(
                BigStick(1), 10, [], simulation_seed=1, simulations=10, stratum_sizes=(5, 0)
            ),
            ValueError,
        ),
    ],
)
def test_invalid_parameters_are_refused(factory: object, error: type[Exception]) -> None:
    assert callable(factory)
    with pytest.raises(error):
        factory()


@pytest.mark.req("RND-01")
def test_report_keeps_the_configured_design_first() -> None:
    report = quality_report(
        PermutedBlocks((2, 4, 6)), 20, [CompleteRandomization()], simulation_seed=0, simulations=10
    )
    assert report.configured.design == PermutedBlocks((2, 4, 6))
    assert [f.design for f in report.alternatives] == [CompleteRandomization()]
    assert report.all_exact
    assert all(isinstance(f, DesignFigures) and f.n == 20 for f in report.designs)
