"""Stratified permuted-block randomization lists with randomly chosen block sizes.

One independent sequence per stratum (RND-01). Each block of a stratum's sequence:

1. its size is drawn uniformly from the design's block sizes, sorted ascending
   (``size = block_sizes[randbelow(len(block_sizes))]``);
2. it is filled with ``size / ratio_total * ratio[a]`` copies of each arm ``a``, in arm order;
3. it is shuffled with the stream's Fisher-Yates shuffle.

The stratum's stream has the domain ``(trial_code, list_label, "blocks", stratum_key)`` and does not
depend on the requested length, so a longer list of the same stratum starts with exactly the
shorter one (prefix stability: an extension appends blocks and never changes used slots, RND-10).

The list digest is SHA-256 over a canonical text serialization (one line per slot, strata in code
point order, positions ascending); see `canonical_line` and docs/randomization.md (RND-02, RND-10).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from allocator.randomization.stream import Domain, Stream

__all__ = [
    "ALGORITHM",
    "ALGORITHM_VERSION",
    "PURPOSE_BLOCKS",
    "Block",
    "BlockDesign",
    "ListRow",
    "ProgressCallback",
    "RandomizationList",
    "Slot",
    "StratumSequence",
    "blocks_from_stream",
    "canonical_line",
    "check_arms_and_ratio",
    "check_text",
    "digest_rows",
    "generate_list",
    "generate_stratum",
    "iter_blocks",
    "iter_slots",
]

# RND-02: recorded with every list. Bump ALGORITHM_VERSION on any change of output for a given
# (seed, parameters); the pinned reference test (RND-03) fails until that is done deliberately.
ALGORITHM: Final = "allocator.stratified-permuted-blocks"
ALGORITHM_VERSION: Final = "1"
PURPOSE_BLOCKS: Final = "blocks"

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(strata_done, strata_total)`` after each stratum is generated."""


def check_text(kind: str, value: object) -> str:
    """Validate an identifier that is hashed or serialized: a non-empty `str`, no control characters.

    Control characters (Unicode category Cc: U+0000-U+001F, U+007F-U+009F) are refused so that the
    tab/newline-separated canonical serialization stays unambiguous (RND-10).

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: it is empty, contains a control character, or is not encodable as UTF-8.
    """
    if not isinstance(value, str):
        raise TypeError(f"{kind} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{kind} must not be empty")
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise ValueError(f"{kind} {value!r} contains the control character U+{ord(char):04X}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{kind} {value!r} is not valid Unicode text: {exc.reason}") from exc
    return value


def check_arms_and_ratio(arms: tuple[str, ...], ratio: tuple[int, ...]) -> None:
    """Validate arm codes and the integer allocation ratio shared by every design type.

    Raises:
        ValueError: fewer than two arms, an empty, duplicate or control-character arm code, a ratio
            whose length differs from the number of arms, or a ratio entry that is not an int >= 1.
        TypeError: ``arms`` or ``ratio`` is not a tuple, or an arm code is not a str.
    """
    if not isinstance(arms, tuple) or not isinstance(ratio, tuple):
        raise TypeError("arms and ratio must be tuples")
    if len(arms) < 2:
        raise ValueError(f"a randomized design needs at least two arms, got {len(arms)}")
    for arm in arms:
        check_text("arm code", arm)
    duplicates = sorted({arm for arm in arms if arms.count(arm) > 1})
    if duplicates:
        raise ValueError(f"arm codes must be unique; repeated: {', '.join(duplicates)}")
    if len(ratio) != len(arms):
        raise ValueError(f"the ratio has {len(ratio)} entries but there are {len(arms)} arms")
    for arm, weight in zip(arms, ratio, strict=True):
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"ratio entry for arm {arm!r} must be an integer >= 1, got {weight!r}")


@dataclass(frozen=True, slots=True)
class BlockDesign:
    """Arms, integer allocation ratio and allowed block sizes of a permuted-block list.

    ``block_sizes`` is normalized to ascending order (the block-size draw indexes the sorted tuple,
    so the list does not depend on how the set was written down).

    Raises:
        ValueError: see `check_arms_and_ratio`; also no block size, a repeated block size, or a size
            that is not a positive multiple of the ratio total (e.g. 3 for 1:1).
    """

    arms: tuple[str, ...]
    ratio: tuple[int, ...]
    block_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        check_arms_and_ratio(self.arms, self.ratio)
        sizes = tuple(self.block_sizes)
        if not sizes:
            raise ValueError("at least one block size is required")
        total = sum(self.ratio)
        for size in sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"block size {size!r} must be a positive integer")
            if size % total:
                raise ValueError(
                    f"block size {size} is not a multiple of the ratio total {total} "
                    f"({':'.join(map(str, self.ratio))}), so its blocks cannot be balanced"
                )
        repeated = sorted({size for size in sizes if sizes.count(size) > 1})
        if repeated:
            raise ValueError(f"block sizes must be distinct; repeated: {', '.join(map(str, repeated))}")
        object.__setattr__(self, "block_sizes", tuple(sorted(sizes)))

    @property
    def ratio_total(self) -> int:
        """Sum of the ratio entries (the smallest balanced block)."""
        return sum(self.ratio)

    @property
    def max_block_size(self) -> int:
        """Largest allowed block size."""
        return self.block_sizes[-1]

    def block_template(self, size: int) -> tuple[str, ...]:
        """The unshuffled content of a block of ``size``: each arm's copies, in arm order.

        Raises:
            ValueError: ``size`` is not one of the design's block sizes.
        """
        if size not in self.block_sizes:
            raise ValueError(f"{size} is not an allowed block size {self.block_sizes}")
        multiple = size // self.ratio_total
        return tuple(
            arm for arm, weight in zip(self.arms, self.ratio, strict=True) for _ in range(multiple * weight)
        )


@dataclass(frozen=True, slots=True)
class Slot:
    """One allocation slot: 1-based ``position`` in its stratum, 1-based ``block`` number, the
    block's size and the arm."""

    position: int
    block: int
    block_size: int
    arm: str


@dataclass(frozen=True, slots=True)
class Block:
    """One shuffled block: its 1-based number, the position of its first slot, and its arms."""

    number: int
    first_position: int
    arms: tuple[str, ...]

    @property
    def size(self) -> int:
        """Number of slots in the block."""
        return len(self.arms)

    def slots(self) -> Iterator[Slot]:
        """The block's slots in position order."""
        size = len(self.arms)
        for offset, arm in enumerate(self.arms):
            yield Slot(self.first_position + offset, self.number, size, arm)


@dataclass(frozen=True, slots=True)
class ListRow:
    """A slot together with its stratum key: the unit of the canonical serialization."""

    stratum: str
    position: int
    block: int
    block_size: int
    arm: str


def canonical_line(row: ListRow) -> str:
    """One line of the canonical serialization (RND-10).

    ``stratum TAB position TAB block TAB block_size TAB arm LF``; integers in decimal, no sign, no
    leading zeros. Keys and arm codes contain no control characters, so the line is unambiguous.
    """
    return f"{row.stratum}\t{row.position}\t{row.block}\t{row.block_size}\t{row.arm}\n"


@dataclass(frozen=True, slots=True)
class StratumSequence:
    """The generated sequence of one stratum: whole blocks covering at least ``min_slots`` slots."""

    stratum: str
    min_slots: int
    blocks: tuple[Block, ...]

    def __len__(self) -> int:
        return sum(len(block.arms) for block in self.blocks)

    def slots(self) -> Iterator[Slot]:
        """Every slot of the stratum in position order."""
        for block in self.blocks:
            yield from block.slots()

    def arms(self) -> tuple[str, ...]:
        """The arm of every slot in position order."""
        return tuple(arm for block in self.blocks for arm in block.arms)

    def rows(self) -> Iterator[ListRow]:
        """The stratum's slots as `ListRow` values, in position order."""
        key = self.stratum
        for block in self.blocks:
            size = len(block.arms)
            for offset, arm in enumerate(block.arms):
                yield ListRow(key, block.first_position + offset, block.number, size, arm)

    def canonical_bytes(self) -> bytes:
        """The stratum's part of the canonical serialization, UTF-8 encoded."""
        key = self.stratum
        return "".join(
            f"{key}\t{block.first_position + offset}\t{block.number}\t{len(block.arms)}\t{arm}\n"
            for block in self.blocks
            for offset, arm in enumerate(block.arms)
        ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class RandomizationList:
    """A complete stratified list, with everything RND-02 asks to record except who and when.

    ``strata`` are in canonical order (by Unicode code point of the key, which equals UTF-8 byte
    order); ``digest`` is the lowercase hex SHA-256 of `serialize`.
    """

    algorithm: str
    algorithm_version: str
    trial_code: str
    list_label: str
    design: BlockDesign
    strata: tuple[StratumSequence, ...]
    digest: str

    @property
    def total_slots(self) -> int:
        """Number of slots over all strata."""
        return sum(len(stratum) for stratum in self.strata)

    def stratum(self, key: str) -> StratumSequence:
        """The sequence of stratum ``key``.

        Raises:
            KeyError: no such stratum in this list.
        """
        for sequence in self.strata:
            if sequence.stratum == key:
                return sequence
        raise KeyError(key)

    def rows(self) -> Iterator[ListRow]:
        """Every slot of the list, in canonical order."""
        for sequence in self.strata:
            yield from sequence.rows()

    def serialize(self) -> bytes:
        """The canonical serialization whose SHA-256 is `digest` (RND-10)."""
        return b"".join(sequence.canonical_bytes() for sequence in self.strata)


def blocks_from_stream(stream: Stream, design: BlockDesign) -> Iterator[Block]:
    """Endless permuted blocks drawn from ``stream`` (the caller chooses the domain).

    Per block: ``size = block_sizes[randbelow(len(block_sizes))]``, the block template of that size
    (arm order), then `Stream.shuffle`. Blocks are numbered from 1, positions from 1.
    """
    templates = [list(design.block_template(size)) for size in design.block_sizes]
    n_sizes = len(templates)
    number = 0
    first_position = 1
    while True:
        # RND-01: the size of every block is drawn at random, so the end of a block is unpredictable.
        arms = templates[stream.randbelow(n_sizes)].copy()
        stream.shuffle(arms)
        number += 1
        yield Block(number, first_position, tuple(arms))
        first_position += len(arms)


def iter_blocks(
    seed: bytes, design: BlockDesign, *, trial_code: str, list_label: str, stratum: str
) -> Iterator[Block]:
    """Endless sequence of blocks of one stratum.

    Inputs: the 32-byte secret seed, the design, the trial code and list label (both part of the
    stream's domain) and the opaque stratum key. Output: an iterator that never ends; take as many
    blocks as needed. The same inputs always give the same blocks (RND-03).

    Raises (immediately, not at the first ``next``):
        TypeError, ValueError: invalid seed (not 32 bytes), empty trial code or list label, or an
            invalid stratum key (empty, control characters).
    """
    check_text("stratum key", stratum)
    stream = Stream(seed, Domain(trial_code, list_label, PURPOSE_BLOCKS, (stratum,)))
    return blocks_from_stream(stream, design)


def iter_slots(
    seed: bytes, design: BlockDesign, *, trial_code: str, list_label: str, stratum: str
) -> Iterator[Slot]:
    """Endless sequence of slots of one stratum; the flattening of `iter_blocks` (same errors)."""
    blocks = iter_blocks(seed, design, trial_code=trial_code, list_label=list_label, stratum=stratum)
    return (slot for block in blocks for slot in block.slots())


def _check_min_slots(stratum: str, min_slots: object) -> int:
    if isinstance(min_slots, bool) or not isinstance(min_slots, int) or min_slots < 1:
        raise ValueError(f"min_slots for stratum {stratum!r} must be an integer >= 1, got {min_slots!r}")
    return min_slots


def _take_blocks(blocks: Iterator[Block], min_slots: int) -> tuple[Block, ...]:
    taken: list[Block] = []
    covered = 0
    while covered < min_slots:  # whole blocks only: the last block is never cut
        block = next(blocks)
        taken.append(block)
        covered += len(block.arms)
    return tuple(taken)


def generate_stratum(
    seed: bytes, design: BlockDesign, *, trial_code: str, list_label: str, stratum: str, min_slots: int
) -> StratumSequence:
    """The shortest run of whole blocks of one stratum that has at least ``min_slots`` slots.

    Raises:
        ValueError: ``min_slots`` is not an integer >= 1; and the errors of `iter_blocks`.
    """
    _check_min_slots(stratum, min_slots)
    blocks = iter_blocks(seed, design, trial_code=trial_code, list_label=list_label, stratum=stratum)
    return StratumSequence(stratum, min_slots, _take_blocks(blocks, min_slots))


def generate_list(
    seed: bytes,
    design: BlockDesign,
    *,
    trial_code: str,
    list_label: str,
    strata: Mapping[str, int],
    progress: ProgressCallback | None = None,
) -> RandomizationList:
    """Generate the whole stratified list and its digest.

    Inputs: the 32-byte secret seed; the design; the trial code and list label; ``strata`` maps each
    opaque stratum key (e.g. ``"site=PARIS-01;admission_cause=septic"``) to the minimum number of
    slots it needs; ``progress`` is called after each stratum. Output: a `RandomizationList` with the
    strata in canonical order and the SHA-256 of the canonical serialization. The seed is not kept in
    the result (RND-12).

    Raises:
        ValueError: no stratum, an invalid stratum key, a ``min_slots`` below 1; and the errors of
            `iter_blocks`.
    """
    if not strata:
        raise ValueError("at least one stratum is required")
    for key, min_slots in strata.items():
        check_text("stratum key", key)
        _check_min_slots(key, min_slots)
    keys = sorted(strata)  # code point order == UTF-8 byte order: the canonical stratum order
    hasher = hashlib.sha256()
    sequences: list[StratumSequence] = []
    for done, key in enumerate(keys, start=1):
        sequence = generate_stratum(
            seed, design, trial_code=trial_code, list_label=list_label, stratum=key, min_slots=strata[key]
        )
        hasher.update(sequence.canonical_bytes())
        sequences.append(sequence)
        if progress is not None:
            progress(done, len(keys))
    return RandomizationList(
        algorithm=ALGORITHM,
        algorithm_version=ALGORITHM_VERSION,
        trial_code=trial_code,
        list_label=list_label,
        design=design,
        strata=tuple(sequences),
        digest=hasher.hexdigest(),
    )


def digest_rows(rows: Iterable[ListRow]) -> str:
    """SHA-256 (lowercase hex) of the canonical serialization of ``rows``, given in any order.

    This is what the integrity check recomputes from stored rows (RND-10). Rows are sorted by
    (stratum, position) before hashing, so storage order does not matter.

    Raises:
        ValueError: two rows share a stratum and position, a position, block or block size is not an
            integer >= 1, or a stratum key or arm code is invalid (empty, control characters) so the
            serialization would be ambiguous.
    """
    ordered = sorted(rows, key=lambda row: (row.stratum, row.position))
    hasher = hashlib.sha256()
    previous: tuple[str, int] | None = None
    checked: set[str] = set()  # keys and arm codes repeat on every row: validate each once
    for row in ordered:
        for kind, text in (("stratum key", row.stratum), ("arm code", row.arm)):
            if text not in checked:
                checked.add(check_text(kind, text))
        for kind, number in (
            ("position", row.position),
            ("block", row.block),
            ("block size", row.block_size),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{kind} of stratum {row.stratum!r} must be an integer >= 1, got {number!r}")
        current = (row.stratum, row.position)
        if current == previous:
            raise ValueError(f"duplicate slot: stratum {row.stratum!r} position {row.position}")
        previous = current
        hasher.update(canonical_line(row).encode("utf-8"))
    return hasher.hexdigest()
