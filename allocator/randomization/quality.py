"""Randomization design quality report: treatment balance and allocation predictability.

Why this module exists
----------------------
ICH E9 §2.3.2 asks for blocks "short enough to limit imbalance, long enough to avoid
predictability" and for several randomly chosen block lengths; RND-01 makes that the design of
this service (stratified permuted blocks, sizes drawn uniformly at random from a configured set,
e.g. {2, 4, 6}). This module quantifies that trade-off so that the unblinded statistician can
document the choice (REP-01, RND-15): for the configured design and for the usual alternatives it
computes balance figures (how far |N_A - N_B| strays) and predictability figures (how often a
guesser who sees every past allocation would be right).

The trial is double-blind, so a site normally sees no allocation at all. Predictability matters
when allocations become known all the same: emergency or pharmacovigilance unblinding, or
functional unblinding by the treatment's side effects. The report is unblinded material: it
discloses the block sizes, which RND-12 keeps from every blinded role.

Designs (two arms A and B, target ratio 1:1)
--------------------------------------------
* `PermutedBlocks`: consecutive blocks, each of a size drawn uniformly at random from
  ``block_sizes``, each a uniformly random arrangement of size/2 A and size/2 B. A single size is
  the classic fixed permuted-block design.
* `RandomAllocationRule` (RAR): a uniformly random balanced sequence of the whole n (one block of
  size n). For odd n: the first n allocations of a RAR of n + 1.
* `CompleteRandomization` (CR): a fair coin for every allocation; the reference.
* `BigStick` (Soares & Wu 1983): a fair coin while |D| < b; the arm that reduces |D| when |D| = b.
* `MaximalProcedure` (Berger, Ivanova & Knoll 2003): uniform over all sequences of length n whose
  imbalance never exceeds b and that end balanced (|D_n| = 1 when n is odd).
* `EfronBiasedCoin` (Efron 1971): P(under-represented arm) = p (2/3 by default); 1/2 on a tie.

Notation: D_i = N_A(i) - N_B(i) after i allocations, D_0 = 0. "Exact" means computed by dynamic
programming over the allocation states in IEEE double precision, with no sampling error.

Figures (see `DesignFigures` for the precise definitions)
---------------------------------------------------------
Balance: E|D_n|; (1/n) sum_i E|D_i|; the largest possible max_i |D_i| and E[max_i |D_i|];
P(D_n = 0); (1/n) sum_i P(D_i = 0); sqrt(E[D_n^2]). Predictability: the expected proportion of
deterministic allocations, and the expected proportion of correct guesses under the convergence
strategy of Blackwell & Hodges (1957); the mean Shannon entropy of the allocation. Series for plots:
E|D_i| by step, the distribution of D_n and of max_i |D_i|.

Method
------
Each design is a Markov chain on a finite state space (`_WalkChain` when the state is D and the
step count, `_BlockChain` for permuted blocks, whose state also holds the current block's size, the
position in it and the set of block states a guesser could still consider). Expectations are
accumulated by propagating the state distribution n times. The distribution of the running maximum
comes from "killed" chains: P(max_i |D_i| < m) is the mass that never touches |D| = m.
Monte Carlo (`simulate_figures`, `numpy.random.Generator(PCG64(seed))`) is used only when a block
set is so large that the exact state space exceeds ``max_exact_states``, and by the tests as an
independent cross-check. Simulation seeds are not secret: they make the report reproducible (the
list seed is a different matter, RND-04).

References
----------
* Blackwell D, Hodges JL. Design for the control of selection bias. Ann Math Stat 1957;28:449-460.
* Efron B. Forcing a sequential experiment to be balanced. Biometrika 1971;58:403-417.
* Soares JF, Wu CFJ. Some restricted randomization rules in sequential designs.
  Commun Stat Theory Methods 1983;12:2017-2034.
* Berger VW, Ivanova A, Knoll MD. Minimizing predictability while retaining balance through the
  use of less restrictive randomization procedures. Stat Med 2003;22:3017-3028.
* Zhao W, Weng Y, Wu Q, Palesch Y. Quantitative comparison of randomization designs in sequential
  clinical trials based on treatment balance and allocation randomness. Pharm Stat 2012;11:39-48
  (the tests reproduce its Tables III and IV).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_EXACT_STATES",
    "BigStick",
    "CompleteRandomization",
    "Design",
    "DesignFigures",
    "EfronBiasedCoin",
    "ExactComputationInfeasible",
    "Figure",
    "MaximalProcedure",
    "PermutedBlocks",
    "QualityReport",
    "RandomAllocationRule",
    "StratifiedFigures",
    "StratumSizeFigures",
    "design_figures",
    "exact_figures",
    "quality_report",
    "simulate_figures",
    "standard_alternatives",
    "stratum_sizes_for",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
IntArray: TypeAlias = npt.NDArray[np.int64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

DEFAULT_MAX_EXACT_STATES: Final = 200_000
"""Above this many chain states a design is simulated instead of computed exactly."""

# The running-maximum computation truncates unbounded designs (CR, RAR, Efron) at the first level m
# with P(max_i |D_i| >= m) below this; the neglected part of E[max] is at most n times it.
_MAX_TAIL: Final = 1e-13


# --------------------------------------------------------------------------------------------------
# Design specifications
# --------------------------------------------------------------------------------------------------


def _check_int(kind: str, value: object, minimum: int) -> int:
    # bool is an int subclass; a True block size is a programming error, not a size of 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{kind} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{kind} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class PermutedBlocks:
    """Permuted blocks, each block's size drawn uniformly at random from ``block_sizes`` (RND-01).

    Each block holds size/2 allocations to each arm in a uniformly random order. The sizes are
    stored sorted and without duplicates; every size must be even (1:1 ratio).
    """

    block_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = tuple(self.block_sizes)
        if not sizes:
            raise ValueError("block_sizes must not be empty")
        for size in sizes:
            _check_int("block size", size, 2)
            if size % 2:
                raise ValueError(f"block size {size} is odd; a 1:1 block needs an even size")
        object.__setattr__(self, "block_sizes", tuple(sorted(set(sizes))))

    @property
    def name(self) -> str:
        """Display name (cp1252-safe)."""
        if len(self.block_sizes) == 1:
            return f"Permuted blocks, fixed size {self.block_sizes[0]}"
        sizes = ", ".join(str(size) for size in self.block_sizes)
        return f"Permuted blocks, sizes {{{sizes}}} drawn at random"

    @property
    def short_name(self) -> str:
        """Abbreviation for tables and chart legends."""
        if len(self.block_sizes) == 1:
            return f"PB({self.block_sizes[0]})"
        return "PB{" + ",".join(str(size) for size in self.block_sizes) + "}"


@dataclass(frozen=True, slots=True)
class RandomAllocationRule:
    """A uniformly random balanced sequence of the whole sample (for odd n, of n + 1, truncated)."""

    @property
    def name(self) -> str:
        """Display name."""
        return "Random allocation rule"

    @property
    def short_name(self) -> str:
        """Abbreviation."""
        return "RAR"


@dataclass(frozen=True, slots=True)
class CompleteRandomization:
    """A fair coin for every allocation: the unpredictable, unbalanced reference."""

    @property
    def name(self) -> str:
        """Display name."""
        return "Complete randomization"

    @property
    def short_name(self) -> str:
        """Abbreviation."""
        return "CR"


@dataclass(frozen=True, slots=True)
class BigStick:
    """Big-stick design (Soares & Wu 1983): fair coin while |D| < bound, forced back at |D| = bound."""

    bound: int

    def __post_init__(self) -> None:
        _check_int("bound", self.bound, 1)

    @property
    def name(self) -> str:
        """Display name."""
        return f"Big stick design, b = {self.bound}"

    @property
    def short_name(self) -> str:
        """Abbreviation."""
        return f"BSD({self.bound})"


@dataclass(frozen=True, slots=True)
class MaximalProcedure:
    """Maximal procedure (Berger, Ivanova & Knoll 2003) with maximum tolerated imbalance ``bound``.

    Every sequence of length n with max_i |D_i| <= bound and D_n = 0 (|D_n| = 1 for odd n) is
    equally likely.
    """

    bound: int

    def __post_init__(self) -> None:
        _check_int("bound", self.bound, 1)

    @property
    def name(self) -> str:
        """Display name."""
        return f"Maximal procedure, MTI = {self.bound}"

    @property
    def short_name(self) -> str:
        """Abbreviation."""
        return f"MP({self.bound})"


@dataclass(frozen=True, slots=True)
class EfronBiasedCoin:
    """Efron's (1971) biased coin: the under-represented arm with probability p, 1/2 on a tie."""

    p: float = 2 / 3

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, int | float):
            raise TypeError(f"p must be a float, not {type(self.p).__name__}")
        if not 0.5 <= self.p <= 1.0:
            raise ValueError(f"p must lie in [0.5, 1], got {self.p}")
        object.__setattr__(self, "p", float(self.p))

    def _p_text(self) -> str:
        return "2/3" if self.p == 2 / 3 else f"{self.p:g}"

    @property
    def name(self) -> str:
        """Display name."""
        return f"Efron's biased coin, p = {self._p_text()}"

    @property
    def short_name(self) -> str:
        """Abbreviation."""
        return f"BCD({self._p_text()})"


Design: TypeAlias = (
    PermutedBlocks
    | RandomAllocationRule
    | CompleteRandomization
    | BigStick
    | MaximalProcedure
    | EfronBiasedCoin
)
_DESIGN_TYPES: Final = (
    PermutedBlocks,
    RandomAllocationRule,
    CompleteRandomization,
    BigStick,
    MaximalProcedure,
    EfronBiasedCoin,
)


def _check_design(design: object) -> Design:
    if not isinstance(design, _DESIGN_TYPES):
        raise TypeError(f"not a randomization design: {type(design).__name__}")
    return design


def standard_alternatives(
    design: Design,
    *,
    fixed_block_sizes: Sequence[int] = (2, 4, 6, 8),
    efron: bool = True,
) -> tuple[Design, ...]:
    """The comparison designs for ``design``: fixed blocks, RAR, CR, BSD, MP and Efron's coin.

    The big-stick design and the maximal procedure get the configured design's maximum possible
    imbalance as their bound (half its largest block for permuted blocks), so that they are
    compared with it at equal worst-case balance, as Berger, Ivanova & Knoll (2003) propose.
    Designs equal to ``design`` are left out.
    """
    design = _check_design(design)
    if isinstance(design, PermutedBlocks):
        bound = max(design.block_sizes) // 2
    elif isinstance(design, BigStick | MaximalProcedure):
        bound = design.bound
    else:
        bound = 3
    candidates: list[Design] = [PermutedBlocks((size,)) for size in fixed_block_sizes]
    candidates += [RandomAllocationRule(), CompleteRandomization(), BigStick(bound), MaximalProcedure(bound)]
    if efron:
        candidates.append(EfronBiasedCoin())
    result: list[Design] = []
    for candidate in candidates:
        if candidate != design and candidate not in result:
            result.append(candidate)
    return tuple(result)


def stratum_sizes_for(n: int, strata: int) -> tuple[int, ...]:
    """Split ``n`` subjects over ``strata`` strata as evenly as possible (170 over 4: 43, 43, 42, 42).

    Actual stratum sizes are random; this is the planning assumption the report states.
    """
    _check_int("n", n, 1)
    _check_int("strata", strata, 1)
    base, extra = divmod(n, strata)
    return tuple(base + 1 if k < extra else base for k in range(strata))


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure: its value, its standard error (0.0 when exact) and whether it is exact."""

    value: float
    standard_error: float
    exact: bool


@dataclass(frozen=True, slots=True)
class StratifiedFigures:
    """Trial-level balance when each stratum runs its own sequence of the design (RND-01).

    Strata are independent, so the trial's final imbalance is the sum of the strata's final
    imbalances and its distribution is their convolution (exact) or is simulated.

    Attributes:
        stratum_sizes: the assumed number of subjects per stratum.
        total_abs_imbalance: E|sum_k D^(k)|, the expected absolute trial-level imbalance at the end.
        total_balance_probability: P(sum_k D^(k) = 0).
        worst_total_imbalance: the largest possible |sum_k D^(k)|.
        total_imbalance_distribution: (d, P(sum_k D^(k) = d)) for every d with positive probability.
    """

    stratum_sizes: tuple[int, ...]
    total_abs_imbalance: Figure
    total_balance_probability: Figure
    worst_total_imbalance: int
    total_imbalance_distribution: tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class DesignFigures:
    """The quality figures of one design for a sequence of n allocations.

    D_i = N_A(i) - N_B(i) after i allocations. "Past" means every earlier allocation of the same
    sequence (stratum).

    Attributes:
        design: the design.
        n: the number of allocations.
        final_abs_imbalance: E|D_n|, the expected |N_A - N_B| at the end.
        mean_abs_imbalance: (1/n) sum_{i=1..n} E|D_i|, the imbalance averaged over the trial.
        max_possible_imbalance: the largest value of max_{1<=i<=n} |D_i| that has positive
            probability (for a simulated design: the largest observed).
        expected_max_imbalance: E[max_{1<=i<=n} |D_i|] (Zhao et al. 2012: "MI").
        final_balance_probability: P(D_n = 0).
        mean_balance_probability: (1/n) sum_{i=1..n} P(D_i = 0) (Zhao et al.: "EB").
        final_imbalance_sd: sqrt(E[D_n^2]); all the designs here are symmetric in A and B, so
            E[D_n] = 0 and this is the standard deviation of D_n (Zhao et al.: "Dn").
        deterministic_proportion: (1/n) sum_i P(allocation i is determined by the past), for a
            guesser who knows the design and every past allocation but not the list itself: the
            allocation is deterministic when every list of positive probability that agrees with
            the past continues with the same arm. For random block sizes the guesser does not know
            where blocks end (RND-12 keeps the sizes confidential). This is NOT Zhao et al.'s "DA",
            which assumes known boundaries; for random block sizes it is much lower than DA.
        deterministic_proportion_known_blocks: the same for a guesser who also knows the realized
            block boundaries (what leaked block sizes would give away); equal to
            ``deterministic_proportion`` for every design but random-size blocks. Zhao et al.: "DA".
        correct_guess_probability: expected proportion of correct guesses, (1/n) sum_i P(guess i
            right), under the convergence strategy (Blackwell & Hodges 1957): guess the arm with
            fewer allocations so far; a tie (D_{i-1} = 0) counts 1/2. Zhao et al.: "CG".
        allocation_entropy: (1/n) sum_i E[H(p_i)] in nats, where p_i is the probability that
            allocation i is A given the generator's state and H(p) = -p ln p - (1-p) ln(1-p)
            (Zhao et al.: "ET"). For random block sizes the state includes the block boundaries,
            so this is a lower bound on the guesser's uncertainty.
        abs_imbalance_by_step: E|D_i| for i = 1..n.
        final_imbalance_distribution: (d, P(D_n = d)) for every d with positive probability
            (simulated: observed relative frequencies).
        max_imbalance_distribution: (m, P(max_i |D_i| = m)) for m = 1..; an unbounded design's
            tail below 1e-13 is cut off.
        exact: True when computed by dynamic programming, False when simulated.
        simulations: number of simulated sequences (0 when exact).
        stratified: trial-level figures over strata, when stratum sizes were given.
    """

    design: Design
    n: int
    final_abs_imbalance: Figure
    mean_abs_imbalance: Figure
    max_possible_imbalance: int
    expected_max_imbalance: Figure
    final_balance_probability: Figure
    mean_balance_probability: Figure
    final_imbalance_sd: Figure
    deterministic_proportion: Figure
    deterministic_proportion_known_blocks: Figure
    correct_guess_probability: Figure
    allocation_entropy: Figure
    abs_imbalance_by_step: tuple[float, ...]
    final_imbalance_distribution: tuple[tuple[int, float], ...]
    max_imbalance_distribution: tuple[tuple[int, float], ...]
    exact: bool
    simulations: int
    stratified: StratifiedFigures | None = None

    @property
    def excess_correct_guess(self) -> Figure:
        """Correct-guess probability minus 1/2: the guesser's advantage over a coin toss."""
        cg = self.correct_guess_probability
        return Figure(cg.value - 0.5, cg.standard_error, cg.exact)

    def figures(self) -> tuple[tuple[str, Figure], ...]:
        """Every `Figure` of this design with its field name, in report order."""
        return (
            ("final_abs_imbalance", self.final_abs_imbalance),
            ("mean_abs_imbalance", self.mean_abs_imbalance),
            ("expected_max_imbalance", self.expected_max_imbalance),
            ("final_balance_probability", self.final_balance_probability),
            ("mean_balance_probability", self.mean_balance_probability),
            ("final_imbalance_sd", self.final_imbalance_sd),
            ("deterministic_proportion", self.deterministic_proportion),
            ("deterministic_proportion_known_blocks", self.deterministic_proportion_known_blocks),
            ("correct_guess_probability", self.correct_guess_probability),
            ("excess_correct_guess", self.excess_correct_guess),
            ("allocation_entropy", self.allocation_entropy),
        )


# Figures that are averages over the allocations of a sequence: their trial total over strata is the
# average over every allocation of the trial, (1/n) sum_k n_k * figure_k.
PER_ALLOCATION_FIGURES: Final = (
    "mean_abs_imbalance",
    "mean_balance_probability",
    "deterministic_proportion",
    "deterministic_proportion_known_blocks",
    "correct_guess_probability",
    "excess_correct_guess",
    "allocation_entropy",
)


@dataclass(frozen=True, slots=True)
class StratumSizeFigures:
    """Every design's figures for one stratum of an expected size: each stratum runs its own
    sequence (RND-01), so these are the figures a stratum of the trial actually has.

    Attributes:
        size: the expected number of subjects of the stratum.
        strata: how many of the trial's strata are expected to have this size.
        designs: figures per design at n = size, in the report's design order.
    """

    size: int
    strata: int
    designs: tuple[DesignFigures, ...]


@dataclass(frozen=True, slots=True)
class QualityReport:
    """The design quality report: the configured design first, then the alternatives.

    Attributes:
        n: the trial's sample size (one unstratified sequence of n allocations).
        designs: figures per design; ``designs[0]`` is the configured design.
        stratum_sizes: assumed subjects per stratum (empty when not stratified).
        simulation_seed: the seed simulations would use (reproducibility; not secret).
        simulations: sequences per simulated design.
        per_stratum: every design's figures at each expected stratum size, largest first (empty
            when not stratified).
    """

    n: int
    designs: tuple[DesignFigures, ...]
    stratum_sizes: tuple[int, ...]
    simulation_seed: int
    simulations: int
    per_stratum: tuple[StratumSizeFigures, ...] = ()

    def trial_total(self, index: int) -> tuple[tuple[str, Figure], ...]:
        """Design ``index``'s per-allocation figures for the whole stratified trial: the average over
        every allocation of every stratum, (1/n) sum_k n_k * figure_k (strata are independent). The
        final-balance figures of the trial are in `DesignFigures.stratified`."""
        if not self.per_stratum:
            return ()
        total = sum(group.size * group.strata for group in self.per_stratum)
        out = []
        for name in PER_ALLOCATION_FIGURES:
            parts = [
                (group.size * group.strata / total, getattr(group.designs[index], name))
                for group in self.per_stratum
            ]
            value = sum(w * f.value for w, f in parts)
            error = math.sqrt(sum((w * f.standard_error) ** 2 for w, f in parts))
            out.append((name, Figure(value, error, all(f.exact for _, f in parts))))
        return tuple(out)

    @property
    def configured(self) -> DesignFigures:
        """The configured design's figures."""
        return self.designs[0]

    @property
    def alternatives(self) -> tuple[DesignFigures, ...]:
        """The comparison designs' figures."""
        return self.designs[1:]

    @property
    def all_exact(self) -> bool:
        """True when no figure was simulated."""
        return all(figures.exact for figures in self.designs)


class ExactComputationInfeasible(RuntimeError):
    """The exact state space of a design exceeds the configured limit."""


# --------------------------------------------------------------------------------------------------
# Markov chains
# --------------------------------------------------------------------------------------------------


def _entropy(p: FloatArray) -> FloatArray:
    """Binary Shannon entropy in nats, with H(0) = H(1) = 0."""
    inside = (p > 0.0) & (p < 1.0)
    # Logarithms only where defined; the zero elsewhere makes p ln p + q ln q vanish at 0 and 1.
    log_p = np.log(p, out=np.zeros(p.shape), where=inside)
    log_q = np.log1p(-p, out=np.zeros(p.shape), where=inside)
    h: FloatArray = -(p * log_p + (1.0 - p) * log_q)
    return h


class _Chain(ABC):
    """A design as a Markov chain; the state before each allocation determines its probability."""

    imbalance: IntArray
    """D for each state."""
    initial: FloatArray
    """State distribution before the first allocation."""

    @abstractmethod
    def p_a(self, step: int) -> FloatArray:
        """P(next allocation is A | state) when ``step`` allocations have been made."""

    @abstractmethod
    def forced(self, step: int) -> BoolArray:
        """Whether the informed guesser's prediction of the next allocation is certain."""

    @abstractmethod
    def advance(self, x: FloatArray, step: int) -> FloatArray:
        """Propagate each row of ``x`` (distributions over states) by one allocation."""

    @abstractmethod
    def reach(self, r: BoolArray, step: int) -> BoolArray:
        """States reachable with positive probability in one allocation from the states in ``r``."""

    @abstractmethod
    def window(self, half: int) -> _Chain:
        """A chain keeping only what happens while |D| <= half (mass leaving it is dropped)."""


class _WalkChain(_Chain):
    """A chain whose state is D alone (index D + offset); the step count is passed in."""

    def __init__(self, offset: int, table: FloatArray | None, rule: _WalkRule, lo: int = 0) -> None:
        self.offset = offset
        self.imbalance = np.arange(-offset, offset + 1, dtype=np.int64)
        self.initial = np.zeros(2 * offset + 1)
        self.initial[offset] = 1.0
        self._table = table
        self._rule = rule
        self._lo = lo  # first column of the full chain kept by this window

    def p_a(self, step: int) -> FloatArray:
        full = self._rule(step) if self._table is None else self._table[step]
        return full[self._lo : self._lo + self.imbalance.size]

    def forced(self, step: int) -> BoolArray:
        p = self.p_a(step)
        forced: BoolArray = (p == 0.0) | (p == 1.0)
        return forced

    def advance(self, x: FloatArray, step: int) -> FloatArray:
        p = self.p_a(step)
        up = x * p
        down = x - up
        out = np.zeros_like(x)
        out[:, 1:] += up[:, :-1]
        out[:, :-1] += down[:, 1:]
        return out

    def reach(self, r: BoolArray, step: int) -> BoolArray:
        p = self.p_a(step)
        out = np.zeros_like(r)
        out[1:] |= (r & (p > 0.0))[:-1]
        out[:-1] |= (r & (p < 1.0))[1:]
        return out

    def window(self, half: int) -> _WalkChain:
        half = min(half, self.offset)
        return _WalkChain(half, self._table, self._rule, self._lo + self.offset - half)


class _WalkRule:
    """P(A | step, D) for every D in -offset..offset, as a callable object."""

    def __init__(self, offset: int, design: Design, n: int) -> None:
        self.offset = offset
        self.design = design
        self.n = n
        self.d = np.arange(-offset, offset + 1, dtype=np.int64)
        self._constant: FloatArray | None = None
        if isinstance(design, CompleteRandomization):
            self._constant = np.full(self.d.size, 0.5)
        elif isinstance(design, EfronBiasedCoin):
            self._constant = np.where(self.d == 0, 0.5, np.where(self.d < 0, design.p, 1.0 - design.p))
        elif isinstance(design, BigStick):
            b = design.bound
            self._constant = np.where(self.d >= b, 0.0, np.where(self.d <= -b, 1.0, 0.5))

    def __call__(self, step: int) -> FloatArray:
        if self._constant is not None:
            return self._constant
        # Random allocation rule: an urn with total/2 balls of each arm, drawn without replacement.
        total = self.n + (self.n % 2)
        a = (step + self.d) // 2  # A allocations so far (meaningful where step + D is even)
        remaining_a = total // 2 - a
        remaining = total - step
        valid = ((step + self.d) % 2 == 0) & (remaining_a >= 0) & (remaining_a <= remaining)
        p = np.where(valid, remaining_a / max(remaining, 1), 0.5)
        return np.asarray(p, dtype=np.float64)


def _mp_counts(n: int, bound: int) -> list[list[int]]:
    """Number of admissible completions N[i][D + bound] of the maximal procedure from (i, D).

    Admissible: |D_j| <= bound for every j and D_n = 0 (|D_n| = 1 when n is odd). Python integers
    keep the counts exact; they reach about 2^n.
    """
    width = 2 * bound + 1
    counts = [[0] * width for _ in range(n + 1)]
    for k in range(width):
        counts[n][k] = 1 if abs(k - bound) == n % 2 else 0
    for i in range(n - 1, -1, -1):
        row, nxt = counts[i], counts[i + 1]
        for k in range(width):
            up = nxt[k + 1] if k + 1 < width else 0
            down = nxt[k - 1] if k >= 1 else 0
            row[k] = up + down
    return counts


def _mp_table(n: int, bound: int) -> FloatArray:
    """P(A | i, D) of the maximal procedure: the share of admissible completions that start with A."""
    counts = _mp_counts(n, bound)
    width = 2 * bound + 1
    table = np.full((n, width), 0.5)
    for i in range(n):
        for k in range(width):
            total = counts[i][k]
            if total:
                up = counts[i + 1][k + 1] if k + 1 < width else 0
                # int / int of Python integers is correctly rounded, even for 1000-bit counts.
                table[i, k] = up / total
    return table


_Hidden: TypeAlias = tuple[int, int]  # (block size, allocations already made in the block)


def _hidden_p_a(hidden: _Hidden, d: int) -> Fraction | None:
    """P(A | block state, D), or None if the block state cannot hold imbalance D."""
    size, pos = hidden
    if (pos + d) % 2:
        return None
    a = (pos + d) // 2
    remaining_a, remaining_b = size // 2 - a, size // 2 - (pos - a)
    if a < 0 or pos - a < 0 or remaining_a < 0 or remaining_b < 0:
        return None
    return Fraction(remaining_a, size - pos)


class _BlockChain(_Chain):
    """Permuted blocks with random sizes; composite state (size, position, D, guesser's support).

    The guesser's support is the set of block states (size, position) that agree with every past
    allocation; the true state is always in it. The guesser's next allocation is certain exactly
    when every state of the support forces the same arm, because every consistent list has
    positive posterior probability.
    """

    def __init__(self, sizes: tuple[int, ...], max_states: int) -> None:
        fresh = tuple((size, 0) for size in sizes)
        share = 1.0 / len(sizes)
        start_support = frozenset(fresh)
        Key = tuple[int, int, int, frozenset[_Hidden]]
        index: dict[Key, int] = {}
        keys: list[Key] = []

        def state(key: Key) -> int:
            found = index.get(key)
            if found is None:
                if len(keys) >= max_states:
                    raise ExactComputationInfeasible(
                        f"permuted blocks {sizes}: more than {max_states} exact states"
                    )
                found = index[key] = len(keys)
                keys.append(key)
            return found

        def successors(hidden: _Hidden) -> tuple[_Hidden, ...]:
            size, pos = hidden
            return ((size, pos + 1),) if pos + 1 < size else fresh

        for hidden in fresh:
            state((hidden[0], hidden[1], 0, start_support))
        src: list[int] = []
        dst: list[int] = []
        weight: list[float] = []
        p_a: list[float] = []
        forced: list[bool] = []
        done = 0
        while done < len(keys):  # breadth-first; `keys` grows while we walk it
            size, pos, d, support = keys[done]
            p = _hidden_p_a((size, pos), d)
            if p is None:  # pragma: no cover - the true state always agrees with its D
                raise AssertionError("inconsistent block state")
            p_a.append(float(p))
            support_p = [_hidden_p_a(h, d) for h in sorted(support)]
            forced.append(all(q == 1 for q in support_p) or all(q == 0 for q in support_p))
            for arm_p, step_d in ((p, 1), (1 - p, -1)):
                if arm_p == 0:
                    continue
                moved: set[_Hidden] = set()
                for h in support:
                    q = _hidden_p_a(h, d)
                    if q is not None and (q if step_d == 1 else 1 - q) > 0:
                        moved.update(successors(h))
                new_support = frozenset(moved)
                nexts = successors((size, pos))
                for nxt in nexts:
                    src.append(done)
                    dst.append(state((nxt[0], nxt[1], d + step_d, new_support)))
                    weight.append(float(arm_p) / len(nexts))
            done += 1
        count = len(keys)
        self.imbalance = np.array([key[2] for key in keys], dtype=np.int64)
        self.initial = np.zeros(count)
        self.initial[: len(fresh)] = share
        self._p_a = np.array(p_a)
        self._forced = np.array(forced, dtype=np.bool_)
        self._src = np.array(src, dtype=np.int64)
        self._dst = np.array(dst, dtype=np.int64)
        self._weight = np.array(weight)

    @property
    def state_count(self) -> int:
        """Number of composite states."""
        return int(self.imbalance.size)

    def p_a(self, step: int) -> FloatArray:
        return self._p_a

    def forced(self, step: int) -> BoolArray:
        return self._forced

    def advance(self, x: FloatArray, step: int) -> FloatArray:
        rows, count = x.shape
        values = x[:, self._src] * self._weight
        flat = (np.arange(rows, dtype=np.int64)[:, None] * count + self._dst).ravel()
        out = np.bincount(flat, weights=values.ravel(), minlength=rows * count)
        return np.asarray(out, dtype=np.float64).reshape(rows, count)

    def reach(self, r: BoolArray, step: int) -> BoolArray:
        out = np.zeros_like(r)
        out[self._dst[r[self._src]]] = True
        return out

    def window(self, half: int) -> _BlockChain:
        return self  # already small; the killed pass masks |D| >= m itself


def _chain_for(design: Design, n: int, max_states: int) -> _Chain:
    if isinstance(design, PermutedBlocks):
        return _BlockChain(design.block_sizes, max_states)
    if isinstance(design, BigStick | MaximalProcedure):
        offset = min(design.bound, n)
    elif isinstance(design, RandomAllocationRule):
        offset = (n + 1) // 2
    else:
        offset = n
    if 2 * offset + 1 > max_states:
        raise ExactComputationInfeasible(f"{design.name}: more than {max_states} exact states")
    rule = _WalkRule(offset, design, n)
    if isinstance(design, MaximalProcedure):
        if design.bound > n:  # the bound cannot bind; keep the table's width equal to the chain's
            return _WalkChain(offset, _mp_table(n, n), rule)
        return _WalkChain(offset, _mp_table(n, design.bound), rule)
    return _WalkChain(offset, None, rule)


# --------------------------------------------------------------------------------------------------
# Exact computation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MainPass:
    cg: float
    det: float
    det_known: float
    entropy: float
    abs_by_step: tuple[float, ...]
    balance_mean: float
    final: tuple[tuple[int, float], ...]
    rms_peak: float  # max_i sqrt(E[D_i^2]): the scale of the imbalance, to size the max computation


def _main_pass(chain: _Chain, n: int) -> _MainPass:
    d = chain.imbalance
    abs_d = np.abs(d).astype(np.float64)
    zero = (d == 0).astype(np.float64)
    tie = d == 0
    below = d < 0
    x = chain.initial.copy()
    square = (d * d).astype(np.float64)
    cg = det = det_known = entropy = balance = peak = 0.0
    abs_by_step: list[float] = []
    for step in range(n):
        p = chain.p_a(step)
        # Convergence strategy: guess A when A is behind (D < 0), B when ahead; a tie scores 1/2.
        right = np.where(tie, 0.5, np.where(below, p, 1.0 - p))
        cg += float(x @ right)
        det += float(x @ chain.forced(step))
        det_known += float(x @ ((p == 0.0) | (p == 1.0)))
        entropy += float(x @ _entropy(p))
        x = chain.advance(x[None, :], step)[0]
        abs_by_step.append(float(x @ abs_d))
        balance += float(x @ zero)
        peak = max(peak, float(x @ square))
    low = int(d.min())
    final = np.bincount(d - low, weights=x)
    dist = tuple((k + low, float(q)) for k, q in enumerate(final) if q > 0.0)
    return _MainPass(
        cg / n, det / n, det_known / n, entropy / n, tuple(abs_by_step), balance / n, dist, math.sqrt(peak)
    )


def _max_possible(chain: _Chain, n: int) -> int:
    """Largest |D_i| reachable with positive probability (exact; no floating-point underflow)."""
    reach = chain.initial > 0.0
    abs_d = np.abs(chain.imbalance)
    best = 0
    for step in range(n):
        reach = chain.reach(reach, step)
        best = max(best, int(abs_d[reach].max()))
    return best


def _survival(chain: _Chain, n: int, levels: int) -> FloatArray:
    """P(max_i |D_i| < m) for m = 1..levels, by one killed chain per level."""
    window = chain.window(levels - 1)
    abs_d = np.abs(window.imbalance)
    alive = (abs_d[None, :] < np.arange(1, levels + 1)[:, None]).astype(np.float64)
    x = np.tile(window.initial, (levels, 1)) * alive
    for step in range(n):
        x = window.advance(x, step) * alive
    survival: FloatArray = x.sum(axis=1)
    return survival


def _max_distribution(chain: _Chain, n: int, possible: int, rms_peak: float) -> FloatArray:
    """P(max_i |D_i| >= m) for m = 1..M, M = ``possible`` or the level where the tail is negligible.

    Each level costs a killed chain, so an unbounded design (CR, RAR, Efron) starts at 8.5 times
    its largest root-mean-square imbalance (for complete randomization the reflection principle and
    Hoeffding's inequality put the tail beyond it below 4 exp(-36)) and doubles the number of levels
    until the computed tail P(max >= M) is below _MAX_TAIL, so the truncation is checked, not
    assumed.
    """
    levels = possible
    if possible > 64:
        levels = min(possible, max(16, math.ceil(8.5 * rms_peak) + 4))
    while True:
        at_least = 1.0 - _survival(chain, n, levels)
        if levels == possible or at_least[-1] <= _MAX_TAIL:
            break
        levels = min(possible, 2 * levels)
    return np.clip(at_least, 0.0, 1.0)


def _exact_figures(design: Design, n: int, max_states: int) -> DesignFigures:
    chain = _chain_for(design, n, max_states)
    main = _main_pass(chain, n)
    possible = _max_possible(chain, n)
    at_least = _max_distribution(chain, n, possible, main.rms_peak)
    tail = np.append(at_least, 0.0)
    max_dist = tuple(
        (m + 1, float(tail[m] - tail[m + 1])) for m in range(at_least.size) if tail[m] > tail[m + 1]
    )
    second = sum(d * d * q for d, q in main.final)
    balanced = sum(q for d, q in main.final if d == 0)
    final_abs = sum(abs(d) * q for d, q in main.final)

    def exact(value: float) -> Figure:
        return Figure(float(value), 0.0, True)

    return DesignFigures(
        design=design,
        n=n,
        final_abs_imbalance=exact(final_abs),
        mean_abs_imbalance=exact(sum(main.abs_by_step) / n),
        max_possible_imbalance=possible,
        expected_max_imbalance=exact(float(at_least.sum())),
        final_balance_probability=exact(balanced),
        mean_balance_probability=exact(main.balance_mean),
        final_imbalance_sd=exact(math.sqrt(second)),
        deterministic_proportion=exact(main.det),
        deterministic_proportion_known_blocks=exact(main.det_known),
        correct_guess_probability=exact(main.cg),
        allocation_entropy=exact(main.entropy),
        abs_imbalance_by_step=main.abs_by_step,
        final_imbalance_distribution=main.final,
        max_imbalance_distribution=max_dist,
        exact=True,
        simulations=0,
    )


def _check_n(n: object) -> int:
    return _check_int("n", n, 1)


def exact_figures(design: Design, n: int, *, max_states: int = DEFAULT_MAX_EXACT_STATES) -> DesignFigures:
    """The design's figures for n allocations by dynamic programming (no sampling error).

    Raises:
        ExactComputationInfeasible: the state space exceeds ``max_states``.
    """
    return _exact_figures(_check_design(design), _check_n(n), max_states)


# --------------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------------


class _Sampler(ABC):
    """Generates allocation sequences of one design, ``sims`` at a time, one allocation per call."""

    @abstractmethod
    def probabilities(self, step: int, d: IntArray) -> tuple[FloatArray, BoolArray]:
        """(P(A | generator state), whether the informed guesser's prediction is certain)."""

    def update(self, arm_a: BoolArray) -> None:  # noqa: B027 - most samplers keep no extra state
        """Record the allocations just drawn."""


class _WalkSampler(_Sampler):
    """Designs whose probability depends on D (and the step) only."""

    def __init__(self, design: Design, n: int, sims: int) -> None:
        self.design = design
        self.n = n
        self.count_a = np.zeros(sims, dtype=np.int64)
        self.table: FloatArray | None = None
        if isinstance(design, MaximalProcedure):
            self.bound = min(design.bound, n)
            self.table = _mp_table(n, self.bound)

    def probabilities(self, step: int, d: IntArray) -> tuple[FloatArray, BoolArray]:
        design = self.design
        if isinstance(design, CompleteRandomization):
            p = np.full(d.size, 0.5)
        elif isinstance(design, EfronBiasedCoin):
            p = np.where(d == 0, 0.5, np.where(d < 0, design.p, 1.0 - design.p))
        elif isinstance(design, BigStick):
            p = np.where(d >= design.bound, 0.0, np.where(d <= -design.bound, 1.0, 0.5))
        elif isinstance(design, RandomAllocationRule):
            total = self.n + self.n % 2
            p = (total // 2 - self.count_a) / (total - step)
        else:
            assert self.table is not None  # noqa: S101 - set in __init__ for the maximal procedure
            p = self.table[step][d + self.bound]
        p = np.asarray(p, dtype=np.float64)
        return p, (p == 0.0) | (p == 1.0)

    def update(self, arm_a: BoolArray) -> None:
        self.count_a += arm_a


class _BlockSampler(_Sampler):
    """Permuted blocks with random sizes, drawn block by block as a list generator would.

    The guesser's support (the block states that agree with the past) is kept per sequence as an
    id of a bit mask over the block states; its transitions are filled in lazily from bit
    operations, independently of `_BlockChain`.
    """

    def __init__(self, sizes: tuple[int, ...], sims: int, rng: np.random.Generator) -> None:
        self.sizes = np.array(sizes, dtype=np.int64)
        self.rng = rng
        self.size = np.zeros(sims, dtype=np.int64)
        self.pos = np.zeros(sims, dtype=np.int64)
        self.count_a = np.zeros(sims, dtype=np.int64)
        self.hidden: list[_Hidden] = [(s, j) for s in sizes for j in range(s)]
        self.bit = {h: 1 << k for k, h in enumerate(self.hidden)}
        self.fresh_mask = sum(self.bit[(s, 0)] for s in sizes)
        self.half = max(sizes) // 2
        width = 2 * self.half + 1
        self.mask_ids: dict[int, int] = {self.fresh_mask: 0}
        self.masks: list[int] = [self.fresh_mask]
        self.forced_table = np.full((1, width), -1, dtype=np.int8)  # -1: not computed yet
        self.next_table = np.full((1, width, 2), -1, dtype=np.int64)
        self.support = np.zeros(sims, dtype=np.int64)  # mask id per sequence
        self.column = np.zeros(sims, dtype=np.int64)

    def _mask_id(self, mask: int) -> int:
        found = self.mask_ids.get(mask)
        if found is None:
            found = self.mask_ids[mask] = len(self.masks)
            self.masks.append(mask)
            self.forced_table = np.vstack(
                [self.forced_table, np.full((1, self.forced_table.shape[1]), -1, np.int8)]
            )
            self.next_table = np.vstack(
                [self.next_table, np.full((1, *self.next_table.shape[1:]), -1, np.int64)]
            )
        return found

    def _fill(self, mask_id: int, column: int) -> None:
        d = column - self.half
        mask = self.masks[mask_id]
        next_a = next_b = 0
        for h in self.hidden:
            if not mask & self.bit[h]:
                continue
            size, pos = h
            twice_a = pos + d
            a = twice_a // 2
            if twice_a % 2 or a < 0 or a > size // 2 or pos - a > size // 2:
                continue
            successors = self.bit[(size, pos + 1)] if pos + 1 < size else self.fresh_mask
            if a < size // 2:
                next_a |= successors
            if pos - a < size // 2:
                next_b |= successors
        self.forced_table[mask_id, column] = 0 if next_a and next_b else 1
        self.next_table[mask_id, column, 0] = self._mask_id(next_a) if next_a else -2
        self.next_table[mask_id, column, 1] = self._mask_id(next_b) if next_b else -2

    def probabilities(self, step: int, d: IntArray) -> tuple[FloatArray, BoolArray]:
        new = self.pos == self.size  # block finished (or none started): draw the next block size
        if new.any():
            self.size[new] = self.sizes[self.rng.integers(0, self.sizes.size, int(new.sum()))]
            self.pos[new] = 0
            self.count_a[new] = 0
        p = (self.size // 2 - self.count_a) / (self.size - self.pos)
        self.column = d + self.half
        forced = self.forced_table[self.support, self.column]
        missing = forced < 0
        if missing.any():
            keys = np.unique(self.support[missing] * (2 * self.half + 1) + self.column[missing])
            for key in keys.tolist():
                self._fill(*divmod(key, 2 * self.half + 1))
            forced = self.forced_table[self.support, self.column]
        return np.asarray(p, dtype=np.float64), forced == 1

    def update(self, arm_a: BoolArray) -> None:
        self.support = self.next_table[self.support, self.column, np.where(arm_a, 0, 1)]
        self.count_a += arm_a
        self.pos += 1


@dataclass(frozen=True, slots=True)
class _SimRaw:
    final: IntArray
    abs_mean: FloatArray
    zero_mean: FloatArray
    max_abs: IntArray
    cg: FloatArray
    det: FloatArray
    det_known: FloatArray
    entropy: FloatArray
    abs_by_step: FloatArray


def _simulate_raw(design: Design, n: int, rng: np.random.Generator, sims: int) -> _SimRaw:
    sampler: _Sampler
    if isinstance(design, PermutedBlocks):
        sampler = _BlockSampler(design.block_sizes, sims, rng)
    else:
        sampler = _WalkSampler(design, n, sims)
    d = np.zeros(sims, dtype=np.int64)
    # Integer counters per sequence: cheaper than float accumulation and exact.
    counts = {key: np.zeros(sims, dtype=np.int64) for key in ("abs", "zero", "right", "tie", "det", "known")}
    entropy = np.zeros(sims)
    max_abs = np.zeros(sims, dtype=np.int64)
    abs_by_step = np.zeros(n)
    for step in range(n):
        p, forced = sampler.probabilities(step, d)
        arm_a = rng.random(sims) < p
        # The realized guess outcome (not its conditional expectation): an independent estimator.
        # Convergence strategy: A is guessed when behind (D < 0), B when ahead; a tie scores 1/2.
        counts["right"] += ((d < 0) & arm_a) | ((d > 0) & ~arm_a)
        counts["tie"] += d == 0
        counts["det"] += forced
        counts["known"] += (p == 0.0) | (p == 1.0)
        entropy += _entropy(p)
        sampler.update(arm_a)
        d += 2 * arm_a - 1
        abs_d = np.abs(d)
        counts["abs"] += abs_d
        counts["zero"] += d == 0
        np.maximum(max_abs, abs_d, out=max_abs)
        abs_by_step[step] = abs_d.mean()
    return _SimRaw(
        final=d,
        abs_mean=counts["abs"] / n,
        zero_mean=counts["zero"] / n,
        max_abs=max_abs,
        cg=(counts["right"] + 0.5 * counts["tie"]) / n,
        det=counts["det"] / n,
        det_known=counts["known"] / n,
        entropy=entropy / n,
        abs_by_step=abs_by_step,
    )


def _mean_figure(values: npt.NDArray[np.float64] | IntArray) -> Figure:
    data = np.asarray(values, dtype=np.float64)
    se = float(data.std(ddof=1) / math.sqrt(data.size)) if data.size > 1 else math.inf
    return Figure(float(data.mean()), se, False)


def _distribution(values: IntArray) -> tuple[tuple[int, float], ...]:
    keys, counts = np.unique(values, return_counts=True)
    return tuple((int(k), float(c) / values.size) for k, c in zip(keys, counts, strict=True))


def _check_simulations(simulations: object) -> int:
    return _check_int("simulations", simulations, 2)


def _figures_from_raw(design: Design, n: int, raw: _SimRaw) -> DesignFigures:
    sims = raw.final.size
    square = raw.final.astype(np.float64) ** 2
    m2 = _mean_figure(square)
    sd = math.sqrt(m2.value)
    # Delta method: se(sqrt(m2)) = se(m2) / (2 sqrt(m2)).
    sd_se = m2.standard_error / (2.0 * sd) if sd > 0.0 else 0.0
    return DesignFigures(
        design=design,
        n=n,
        final_abs_imbalance=_mean_figure(np.abs(raw.final)),
        mean_abs_imbalance=_mean_figure(raw.abs_mean),
        max_possible_imbalance=int(raw.max_abs.max()),
        expected_max_imbalance=_mean_figure(raw.max_abs),
        final_balance_probability=_mean_figure((raw.final == 0).astype(np.float64)),
        mean_balance_probability=_mean_figure(raw.zero_mean),
        final_imbalance_sd=Figure(sd, sd_se, False),
        deterministic_proportion=_mean_figure(raw.det),
        deterministic_proportion_known_blocks=_mean_figure(raw.det_known),
        correct_guess_probability=_mean_figure(raw.cg),
        allocation_entropy=_mean_figure(raw.entropy),
        abs_imbalance_by_step=tuple(float(v) for v in raw.abs_by_step),
        final_imbalance_distribution=_distribution(raw.final),
        max_imbalance_distribution=_distribution(raw.max_abs),
        exact=False,
        simulations=sims,
    )


def simulate_figures(design: Design, n: int, *, seed: int, simulations: int) -> DesignFigures:
    """The design's figures estimated from ``simulations`` simulated sequences, with standard errors.

    The generator is ``numpy.random.Generator(PCG64(seed))``: same seed, same figures. Each figure's
    standard error is the sample standard deviation of its per-sequence value over sqrt(simulations)
    (delta method for ``final_imbalance_sd``). This implementation shares no propagation code with
    `exact_figures`, which makes it a cross-check of the dynamic programming.
    """
    design = _check_design(design)
    n = _check_n(n)
    rng = np.random.Generator(np.random.PCG64(_check_int("seed", seed, 0)))
    raw = _simulate_raw(design, n, rng, _check_simulations(simulations))
    return _figures_from_raw(design, n, raw)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _seed_for(seed: int, *key: int) -> np.random.Generator:
    # One independent stream per design and purpose, all derived from the report's seed.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _stratified_exact(design: Design, sizes: tuple[int, ...], max_states: int) -> StratifiedFigures:
    total = np.ones(1)
    low = 0
    for size in sizes:
        final = _main_pass(_chain_for(design, size, max_states), size).final
        stratum_low = final[0][0]
        probs = np.zeros(final[-1][0] - stratum_low + 1)
        for d, q in final:
            probs[d - stratum_low] = q
        total = np.convolve(total, probs)
        low += stratum_low
    values = np.arange(low, low + total.size)
    dist = tuple((int(d), float(q)) for d, q in zip(values, total, strict=True) if q > 0.0)
    return StratifiedFigures(
        stratum_sizes=sizes,
        total_abs_imbalance=Figure(float(np.abs(values) @ total), 0.0, True),
        total_balance_probability=Figure(float(total[values == 0].sum()), 0.0, True),
        worst_total_imbalance=max(abs(d) for d, _ in dist),
        total_imbalance_distribution=dist,
    )


def _stratified_simulated(
    design: Design, sizes: tuple[int, ...], seed: int, index: int, simulations: int
) -> StratifiedFigures:
    total = np.zeros(simulations, dtype=np.int64)
    for k, size in enumerate(sizes):
        total += _simulate_raw(design, size, _seed_for(seed, index, 1, k), simulations).final
    return StratifiedFigures(
        stratum_sizes=sizes,
        total_abs_imbalance=_mean_figure(np.abs(total)),
        total_balance_probability=_mean_figure((total == 0).astype(np.float64)),
        worst_total_imbalance=int(np.abs(total).max()),
        total_imbalance_distribution=_distribution(total),
    )


def design_figures(
    design: Design,
    n: int,
    *,
    simulation_seed: int,
    simulations: int,
    max_exact_states: int = DEFAULT_MAX_EXACT_STATES,
    stratum_sizes: Sequence[int] = (),
    index: int = 0,
) -> DesignFigures:
    """Exact figures when the state space allows, simulated ones (with standard errors) otherwise.

    ``index`` selects the design's own simulation stream under ``simulation_seed``.
    """
    design = _check_design(design)
    n = _check_n(n)
    sizes = tuple(_check_int("stratum size", size, 1) for size in stratum_sizes)
    try:
        figures = _exact_figures(design, n, max_exact_states)
        stratified = _stratified_exact(design, sizes, max_exact_states) if sizes else None
    except ExactComputationInfeasible:
        raw = _simulate_raw(design, n, _seed_for(simulation_seed, index, 0), simulations)
        figures = _figures_from_raw(design, n, raw)
        stratified = (
            _stratified_simulated(design, sizes, simulation_seed, index, simulations) if sizes else None
        )
    if stratified is None:
        return figures
    return DesignFigures(
        **{
            name: getattr(figures, name)
            for name in DesignFigures.__dataclass_fields__
            if name != "stratified"
        },
        stratified=stratified,
    )


def quality_report(
    design: Design,
    n: int,
    alternatives: Sequence[Design],
    *,
    simulation_seed: int,
    simulations: int,
    stratum_sizes: Sequence[int] = (),
    max_exact_states: int = DEFAULT_MAX_EXACT_STATES,
) -> QualityReport:
    """The quality report of ``design`` for a trial of ``n`` subjects, compared with ``alternatives``.

    Args:
        design: the configured design (RND-01), e.g. ``PermutedBlocks((2, 4, 6))``.
        n: the sample size, analysed as one sequence of n allocations.
        alternatives: the comparison designs, e.g. `standard_alternatives` of ``design``.
        simulation_seed: seed of the Monte Carlo fallback (reproducible reports; not secret).
        simulations: sequences simulated per design that cannot be computed exactly.
        stratum_sizes: subjects per stratum; when given, each design also gets the trial-level
            balance of independent per-stratum sequences (`StratifiedFigures`), and every design is
            computed again at each distinct stratum size (`QualityReport.per_stratum`).
        max_exact_states: state-space limit above which a design is simulated.
    """
    n = _check_n(n)
    seed = _check_int("simulation_seed", simulation_seed, 0)
    sims = _check_simulations(simulations)
    _check_int("max_exact_states", max_exact_states, 1)
    sizes = tuple(_check_int("stratum size", size, 1) for size in stratum_sizes)
    designs = [_check_design(design), *(_check_design(alt) for alt in alternatives)]
    results = tuple(
        design_figures(
            item,
            n,
            simulation_seed=seed,
            simulations=sims,
            max_exact_states=max_exact_states,
            stratum_sizes=sizes,
            index=k,
        )
        for k, item in enumerate(designs)
    )
    per_stratum = tuple(
        StratumSizeFigures(
            size=size,
            strata=sizes.count(size),
            designs=tuple(
                design_figures(
                    item,
                    size,
                    simulation_seed=seed,
                    simulations=sims,
                    max_exact_states=max_exact_states,
                    index=k,
                )
                for k, item in enumerate(designs)
            ),
        )
        for size in sorted(set(sizes), reverse=True)
    )
    return QualityReport(
        n=n,
        designs=results,
        stratum_sizes=sizes,
        simulation_seed=seed,
        simulations=sims,
        per_stratum=per_stratum,
    )
