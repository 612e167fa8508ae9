"""Pocock-Simon minimization with a random element, exact (rational) arithmetic and full records.

For the arrival number ``k`` (1-based) with one level per factor:

* for each factor ``f``, take the counts ``n[f][level][arm]`` of earlier arrivals at this arrival's
  level (marginal totals);
* for each candidate arm ``t``, add 1 to arm ``t``, divide each arm's count by its ratio weight, and
  measure the spread across arms: range (max - min) or population variance; ``G(t)`` is the sum of
  these spreads weighted by the factor weights;
* the preferred arms are those with the least ``G``; if several, one is picked with
  ``randbelow(number of preferred arms)``;
* a Bernoulli(p) draw decides whether the preferred arm is taken; otherwise one of the other arms
  is picked with ``randbelow(number of arms - 1)``, in arm order.

All draws of arrival ``k`` come from a stream with the domain ``(trial_code, list_label,
"minimization", str(k))``, so a decision depends only on the seed, the design, the order of arrivals
and their levels, and every decision can be reproduced (`replay`, RND-03). Each decision returns a
`MinimizationDecision` with the figures that led to it, for the sealed statistician record.

Pure: values in, values out, no global state; the seed is an explicit input (RND-04).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from allocator.randomization.blocks import check_arms_and_ratio, check_text
from allocator.randomization.stream import WORD_RANGE, Domain, Stream

__all__ = [
    "DEFAULT_P",
    "MINIMIZATION_ALGORITHM",
    "MINIMIZATION_VERSION",
    "PURPOSE_MINIMIZATION",
    "Factor",
    "ImbalanceMeasure",
    "MinimizationDecision",
    "MinimizationDesign",
    "MinimizationState",
    "allocate",
    "replay",
]

# RND-02: recorded with the design; bump the version on any change of decisions for given inputs.
MINIMIZATION_ALGORITHM: Final = "allocator.pocock-simon-minimization"
MINIMIZATION_VERSION: Final = "1"
PURPOSE_MINIMIZATION: Final = "minimization"
DEFAULT_P: Final = Fraction(4, 5)


class ImbalanceMeasure(enum.StrEnum):
    """How the spread of ratio-adjusted counts across arms is measured for one factor."""

    RANGE = "range"  # max - min
    VARIANCE = "variance"  # population variance: sum((x - mean)^2) / number of arms


@dataclass(frozen=True, slots=True)
class Factor:
    """A minimization factor: its name, its allowed levels, and its weight in ``G``.

    Raises:
        ValueError: empty or control-character name or level, no level, a repeated level, or a
            weight that is not a positive rational.
    """

    name: str
    levels: tuple[str, ...]
    weight: Fraction = Fraction(1)

    def __post_init__(self) -> None:
        check_text("factor name", self.name)
        if not isinstance(self.levels, tuple) or not self.levels:
            raise ValueError(f"factor {self.name!r} needs a non-empty tuple of levels")
        for level in self.levels:
            check_text(f"level of factor {self.name!r}", level)
        repeated = sorted({level for level in self.levels if self.levels.count(level) > 1})
        if repeated:
            raise ValueError(f"factor {self.name!r} repeats the level(s) {', '.join(repeated)}")
        weight: object = self.weight  # callers may pass an int; it is stored as a Fraction
        if isinstance(weight, int) and not isinstance(weight, bool):
            weight = Fraction(weight)
        if not isinstance(weight, Fraction) or weight <= 0:
            raise ValueError(
                f"weight of factor {self.name!r} must be a positive Fraction, got {self.weight!r}"
            )
        object.__setattr__(self, "weight", weight)


@dataclass(frozen=True, slots=True)
class MinimizationDesign:
    """Arms, integer allocation ratio, factors, imbalance measure and the probability ``p`` of taking
    the preferred arm.

    Raises:
        ValueError: invalid arms or ratio (see `check_arms_and_ratio`), no factor, repeated factor
            names, an unknown measure, or ``p`` not a Fraction in (0, 1] with denominator <= 2**32.
    """

    arms: tuple[str, ...]
    ratio: tuple[int, ...]
    factors: tuple[Factor, ...]
    measure: ImbalanceMeasure = ImbalanceMeasure.RANGE
    p: Fraction = field(default=DEFAULT_P)

    def __post_init__(self) -> None:
        check_arms_and_ratio(self.arms, self.ratio)
        if not isinstance(self.factors, tuple) or not self.factors:
            raise ValueError("minimization needs at least one factor")
        for factor in self.factors:
            if not isinstance(factor, Factor):
                raise TypeError(f"factors must be Factor values, not {type(factor).__name__}")
        names = [factor.name for factor in self.factors]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"factor names must be unique; repeated: {', '.join(repeated)}")
        try:
            object.__setattr__(self, "measure", ImbalanceMeasure(self.measure))
        except ValueError:
            raise ValueError(
                f"unknown imbalance measure {self.measure!r}; use 'range' or 'variance'"
            ) from None
        p = self.p
        if not isinstance(p, Fraction) or not 0 < p <= 1:
            raise ValueError(f"p must be a Fraction in (0, 1], got {p!r}")
        if p.denominator > WORD_RANGE:
            raise ValueError(f"the denominator of p must be at most 2**32, got {p.denominator}")

    def level_indices(self, levels: Mapping[str, str]) -> tuple[int, ...]:
        """Index of the given level of each factor, in factor order.

        Raises:
            ValueError: a factor name that the design does not have, a missing factor, or a level
                that is not allowed for its factor; the message names it.
        """
        known = {factor.name for factor in self.factors}
        for name in levels:
            if name not in known:
                raise ValueError(f"unknown minimization factor {name!r}; expected {sorted(known)}")
        indices: list[int] = []
        for factor in self.factors:
            if factor.name not in levels:
                raise ValueError(f"missing level for minimization factor {factor.name!r}")
            level = levels[factor.name]
            if level not in factor.levels:
                allowed = ", ".join(factor.levels)
                raise ValueError(
                    f"unknown level {level!r} for minimization factor {factor.name!r} (allowed: {allowed})"
                )
            indices.append(factor.levels.index(level))
        return tuple(indices)


Counts = tuple[tuple[tuple[int, ...], ...], ...]
"""``counts[f][level][arm]``: earlier arrivals per factor level and arm."""


@dataclass(frozen=True, slots=True)
class MinimizationState:
    """Marginal totals after ``arrivals`` allocations. Immutable: `with_allocation` returns a new one."""

    design: MinimizationDesign
    arrivals: int
    counts: Counts

    @classmethod
    def start(cls, design: MinimizationDesign) -> MinimizationState:
        """The state before the first arrival: every count zero."""
        zero = tuple(0 for _ in design.arms)
        counts = tuple(tuple(zero for _ in factor.levels) for factor in design.factors)
        return cls(design, 0, counts)

    @classmethod
    def from_history(
        cls, design: MinimizationDesign, history: Iterable[tuple[Mapping[str, str], str]]
    ) -> MinimizationState:
        """Rebuild the state from the stored ``(levels, arm)`` of every earlier arrival, in order.

        Arrivals randomised in error still count (they stay in every analysis, RND-07).

        Raises:
            ValueError: an unknown factor, level or arm.
        """
        state = cls.start(design)
        for levels, arm in history:
            state = state.with_allocation(levels, arm)
        return state

    def with_allocation(self, levels: Mapping[str, str], arm: str) -> MinimizationState:
        """The state after one more arrival with ``levels`` allocated to ``arm``.

        Raises:
            ValueError: an unknown factor, level or arm.
        """
        if arm not in self.design.arms:
            raise ValueError(f"unknown arm {arm!r}; expected one of {self.design.arms}")
        return self._add(self.design.level_indices(levels), self.design.arms.index(arm))

    def _add(self, level_indices: tuple[int, ...], arm_index: int) -> MinimizationState:
        counts = list(self.counts)
        for f, level in enumerate(level_indices):
            per_level = list(counts[f])
            row = list(per_level[level])
            row[arm_index] += 1
            per_level[level] = tuple(row)
            counts[f] = tuple(per_level)
        return MinimizationState(self.design, self.arrivals + 1, tuple(counts))

    def count(self, factor: str, level: str, arm: str) -> int:
        """Earlier arrivals at ``level`` of ``factor`` allocated to ``arm``.

        Raises:
            ValueError: unknown factor, level or arm.
        """
        names = [f.name for f in self.design.factors]
        if factor not in names:
            raise ValueError(f"unknown minimization factor {factor!r}")
        f = names.index(factor)
        if level not in self.design.factors[f].levels:
            raise ValueError(f"unknown level {level!r} for minimization factor {factor!r}")
        if arm not in self.design.arms:
            raise ValueError(f"unknown arm {arm!r}")
        return self.counts[f][self.design.factors[f].levels.index(level)][self.design.arms.index(arm)]


def _fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


@dataclass(frozen=True, slots=True)
class MinimizationDecision:
    """Everything that led to one allocation, to be stored sealed for the unblinded statistician.

    * ``arrival``: k, 1-based; ``levels``: (factor, level) pairs in factor order.
    * ``counts_before[f]``: counts per arm at the arrival's level of factor f, before allocation.
    * ``factor_imbalance[f][t]``: spread for factor f if the arrival went to arm t (arm order).
    * ``total_imbalance[t]``: ``G(t)``, the weighted sum over factors.
    * ``preferred``: arms with the least ``G`` (arm order); ``tie_draw``: index drawn among them,
      None when there was a single one; ``preferred_arm``: the preferred arm retained.
    * ``p``, ``coin_draw`` (u in [0, denominator of p)) and ``followed`` (u < numerator of p).
    * ``other_draw``: index among the other arms (arm order) when not followed, else None.
    * ``arm``: the allocation; ``deterministic``: True when no draw could have changed it (a single
      preferred arm and p = 1).
    """

    arrival: int
    levels: tuple[tuple[str, str], ...]
    counts_before: tuple[tuple[int, ...], ...]
    factor_imbalance: tuple[tuple[Fraction, ...], ...]
    total_imbalance: tuple[Fraction, ...]
    preferred: tuple[str, ...]
    tie_draw: int | None
    preferred_arm: str
    p: Fraction
    coin_draw: int
    followed: bool
    other_draw: int | None
    arm: str
    deterministic: bool

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: fractions as ``"numerator/denominator"`` strings, tuples as lists."""
        return {
            "algorithm": MINIMIZATION_ALGORITHM,
            "algorithm_version": MINIMIZATION_VERSION,
            "arrival": self.arrival,
            "levels": dict(self.levels),
            "counts_before": [list(row) for row in self.counts_before],
            "factor_imbalance": [[_fraction_text(v) for v in row] for row in self.factor_imbalance],
            "total_imbalance": [_fraction_text(v) for v in self.total_imbalance],
            "preferred": list(self.preferred),
            "tie_draw": self.tie_draw,
            "preferred_arm": self.preferred_arm,
            "p": _fraction_text(self.p),
            "coin_draw": self.coin_draw,
            "followed": self.followed,
            "other_draw": self.other_draw,
            "arm": self.arm,
            "deterministic": self.deterministic,
        }


def _spread(values: list[Fraction], measure: ImbalanceMeasure) -> Fraction:
    if measure is ImbalanceMeasure.RANGE:
        return max(values) - min(values)
    mean = sum(values, Fraction(0)) / len(values)
    return sum(((v - mean) ** 2 for v in values), Fraction(0)) / len(values)


def allocate(
    seed: bytes, state: MinimizationState, levels: Mapping[str, str], *, trial_code: str, list_label: str
) -> tuple[MinimizationDecision, MinimizationState]:
    """Allocate the next arrival (number ``state.arrivals + 1``) by minimization.

    Inputs: the 32-byte secret seed, the state before this arrival, the arrival's level of every
    factor, and the trial code and list label of the stream domain. Output: the decision record and
    the new state. Nothing else is read or changed.

    Raises:
        ValueError: unknown or missing factor, unknown level (named in the message), or a seed that
            is not 32 bytes; TypeError: a seed that is not bytes.
    """
    design = state.design
    level_indices = design.level_indices(levels)
    arrival = state.arrivals + 1
    # RND-03: the domain includes the arrival number, so arrival k's draws do not depend on how many
    # draws earlier arrivals used; replaying the same arrivals in the same order gives the same arms.
    stream = Stream(seed, Domain(trial_code, list_label, PURPOSE_MINIMIZATION, (str(arrival),)))

    n_arms = len(design.arms)
    counts_before = tuple(state.counts[f][level] for f, level in enumerate(level_indices))
    factor_imbalance: list[tuple[Fraction, ...]] = []
    for counts in counts_before:
        per_candidate: list[Fraction] = []
        for t in range(n_arms):
            # Ratio-adjusted: an arm meant to get twice as many patients is balanced at twice the count.
            adjusted = [Fraction(counts[a] + (a == t), design.ratio[a]) for a in range(n_arms)]
            per_candidate.append(_spread(adjusted, design.measure))
        factor_imbalance.append(tuple(per_candidate))
    total = tuple(
        sum((factor.weight * factor_imbalance[f][t] for f, factor in enumerate(design.factors)), Fraction(0))
        for t in range(n_arms)
    )
    least = min(total)
    preferred = tuple(arm for arm, g in zip(design.arms, total, strict=True) if g == least)

    tie_draw: int | None = None
    if len(preferred) > 1:
        tie_draw = stream.randbelow(len(preferred))
        preferred_arm = preferred[tie_draw]
    else:
        preferred_arm = preferred[0]
    coin_draw, followed = stream.bernoulli_draw(design.p)
    other_draw: int | None = None
    if followed:
        arm = preferred_arm
    else:
        others = tuple(a for a in design.arms if a != preferred_arm)
        other_draw = stream.randbelow(len(others))
        arm = others[other_draw]

    decision = MinimizationDecision(
        arrival=arrival,
        levels=tuple((factor.name, levels[factor.name]) for factor in design.factors),
        counts_before=counts_before,
        factor_imbalance=tuple(factor_imbalance),
        total_imbalance=total,
        preferred=preferred,
        tie_draw=tie_draw,
        preferred_arm=preferred_arm,
        p=design.p,
        coin_draw=coin_draw,
        followed=followed,
        other_draw=other_draw,
        arm=arm,
        deterministic=len(preferred) == 1 and design.p == 1,
    )
    return decision, state._add(level_indices, design.arms.index(arm))


def replay(
    seed: bytes,
    design: MinimizationDesign,
    arrivals: Iterable[Mapping[str, str]],
    *,
    trial_code: str,
    list_label: str,
) -> tuple[MinimizationDecision, ...]:
    """Reproduce every decision from the seed, the design and the ordered arrivals' levels (RND-03).

    Raises:
        ValueError: as `allocate`, for the first arrival whose levels are invalid.
    """
    state = MinimizationState.start(design)
    decisions: list[MinimizationDecision] = []
    for levels in arrivals:
        decision, state = allocate(seed, state, levels, trial_code=trial_code, list_label=list_label)
        decisions.append(decision)
    return tuple(decisions)
