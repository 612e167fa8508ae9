"""Pure randomization core: permuted-block lists, minimization and kit-list arm sequences.

Everything here is a deterministic function of explicit inputs (a 32-byte secret seed and the
design parameters) built on one documented stream construction (HMAC-SHA256 in counter mode,
domain-separated); see docs/randomization.md for the specification (RND-01 to RND-04). The package
imports neither Flask nor SQLAlchemy nor any other part of the application.
"""

from allocator.randomization.blocks import (
    ALGORITHM,
    ALGORITHM_VERSION,
    Block,
    BlockDesign,
    ListRow,
    ProgressCallback,
    RandomizationList,
    Slot,
    StratumSequence,
    canonical_line,
    digest_rows,
    generate_list,
    generate_stratum,
    iter_blocks,
    iter_slots,
)
from allocator.randomization.kitlist import kit_arm_sequence
from allocator.randomization.minimization import (
    DEFAULT_P,
    MINIMIZATION_ALGORITHM,
    MINIMIZATION_VERSION,
    Factor,
    ImbalanceMeasure,
    MinimizationDecision,
    MinimizationDesign,
    MinimizationState,
    allocate,
    replay,
)
from allocator.randomization.stream import SEED_BYTES, Domain, Stream, new_seed

__all__ = [
    "ALGORITHM",
    "ALGORITHM_VERSION",
    "DEFAULT_P",
    "MINIMIZATION_ALGORITHM",
    "MINIMIZATION_VERSION",
    "SEED_BYTES",
    "Block",
    "BlockDesign",
    "Domain",
    "Factor",
    "ImbalanceMeasure",
    "ListRow",
    "MinimizationDecision",
    "MinimizationDesign",
    "MinimizationState",
    "ProgressCallback",
    "RandomizationList",
    "Slot",
    "StratumSequence",
    "Stream",
    "allocate",
    "canonical_line",
    "digest_rows",
    "generate_list",
    "generate_stratum",
    "iter_blocks",
    "iter_slots",
    "kit_arm_sequence",
    "new_seed",
    "replay",
]
