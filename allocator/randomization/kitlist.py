"""Arm sequence of a kit list, in balanced permuted blocks (BLD-04).

Kits are packed and shipped in runs of consecutive kit-list positions. Building the arm sequence from
balanced blocks (e.g. blocks of 4 for 1:1) means any shipment made of whole blocks holds each arm in
the allocation ratio, so the stock at a site says nothing about the arm of the next patient.

The construction is the permuted-block construction of `allocator.randomization.blocks` (block size
drawn from the design's sizes, filled in arm order, Fisher-Yates shuffled), drawn from its own stream
with the domain ``(trial_code, kit_list_label, "kits")``. The kit list's blocks are therefore
independent of the randomization list's blocks even under the same seed (BLD-03 industry practice:
kit blocks unrelated to randomization blocks). A single block size is advisable for kit lists.

Kit numbers are not decided here: they are random identifiers drawn elsewhere from the OS CSPRNG
(BLD-03). This module only says which arm the kit at each kit-list position contains.
"""

from __future__ import annotations

from typing import Final

from allocator.randomization.blocks import BlockDesign, Slot, blocks_from_stream
from allocator.randomization.stream import Domain, Stream

__all__ = ["PURPOSE_KITS", "kit_arm_sequence"]

PURPOSE_KITS: Final = "kits"


def kit_arm_sequence(
    seed: bytes, design: BlockDesign, *, trial_code: str, kit_list_label: str, count: int
) -> tuple[Slot, ...]:
    """Arms of the first ``count`` positions of a kit list.

    Inputs: the 32-byte secret seed, a block design (use one block size, a multiple of the ratio
    total, e.g. ``block_sizes=(4,)`` for 1:1), the trial code, the kit list's label (part of the
    stream domain), and the number of kits. Output: ``count`` slots (position 1..count, block
    number, block size, arm). Whole blocks are generated and the last one is cut at ``count``; make
    ``count`` a multiple of the block size to have every block complete. A longer list with the same
    inputs starts with the shorter one (an extension only appends kits).

    Raises:
        ValueError: ``count`` is not an integer >= 1, the seed is not 32 bytes, or the trial code or
            kit list label is empty. TypeError: the seed is not bytes.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    # BLD-04: a stream of its own ("kits"), independent of every randomization stratum's stream.
    blocks = blocks_from_stream(Stream(seed, Domain(trial_code, kit_list_label, PURPOSE_KITS)), design)
    slots: list[Slot] = []
    while len(slots) < count:
        slots.extend(next(blocks).slots())
    return tuple(slots[:count])
