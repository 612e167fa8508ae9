"""Cross-check: every exact figure agrees with an independent Monte Carlo simulation.

`simulate_figures` draws sequences the way a list generator does (block sizes drawn per block,
urn draws for the random allocation rule, coins for the sequential designs) and scores the realized
guesses, sharing no propagation code with the dynamic programming. For the trial's size (n = 170)
and every design of the standard comparison, each exact figure must lie within 4 Monte Carlo
standard errors of the simulated one (200,000 sequences, fixed seed). A standard error estimated
as 0 (no variation among the sequences: e.g. the maximum imbalance of blocks of 4, which misses 2
only with probability (2/3)^42) is floored at 1/N, since events rarer than about 1/N are unlikely
to occur in N sequences at all; an absolute 1e-9 absorbs rounding.
"""

from __future__ import annotations

import pytest

from allocator.randomization.quality import (
    Design,
    DesignFigures,
    PermutedBlocks,
    exact_figures,
    simulate_figures,
    standard_alternatives,
)

N = 170
SIMULATIONS = 200_000
CONFIGURED = PermutedBlocks((2, 4, 6))
DESIGNS: list[Design] = [CONFIGURED, *standard_alternatives(CONFIGURED), PermutedBlocks((2, 4, 6, 8))]


def _disagreements(exact: DesignFigures, simulated: DesignFigures) -> list[str]:
    out = []
    for (name, truth), (_, estimate) in zip(exact.figures(), simulated.figures(), strict=True):
        se = max(estimate.standard_error, 1 / simulated.simulations)
        if abs(truth.value - estimate.value) > 4 * se + 1e-9:
            out.append(f"{name}: exact {truth.value:.6f}, simulated {estimate.value:.6f} +- {se:.6f}")
    return out


@pytest.mark.slow
@pytest.mark.req("RND-01")
@pytest.mark.parametrize("design", DESIGNS, ids=[d.short_name for d in DESIGNS])
def test_exact_figures_agree_with_monte_carlo(design: Design) -> None:
    exact = exact_figures(design, N)
    simulated = simulate_figures(design, N, seed=20_251_122, simulations=SIMULATIONS)
    assert exact.exact and not simulated.exact
    assert _disagreements(exact, simulated) == []
    # Nothing simulated may exceed what the exact computation calls possible.
    assert simulated.max_possible_imbalance <= exact.max_possible_imbalance
    assert max(abs(d) for d, _ in simulated.final_imbalance_distribution) <= exact.max_possible_imbalance
    # The by-step series agree too (checked at the end, where the sampling error is largest).
    assert simulated.abs_imbalance_by_step[-1] == pytest.approx(
        exact.abs_imbalance_by_step[-1], abs=4 * simulated.final_abs_imbalance.standard_error + 1e-9
    )


@pytest.mark.req("RND-01")
def test_the_cross_check_can_fail() -> None:
    """A different design's simulation must be flagged (blocks of 4 and 6 are close, yet differ)."""
    exact = exact_figures(PermutedBlocks((4,)), N)
    simulated = simulate_figures(PermutedBlocks((6,)), N, seed=1, simulations=20_000)
    assert _disagreements(exact, simulated)
