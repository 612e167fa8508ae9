"""Acceptance: an independent implementation written only from docs/randomization.md gives the same
lists, digests, kit sequences and minimization decisions as the package (RND-02, RND-03).

The `spec_*` functions below use the Python standard library only and do not import the package's
generator; they follow the document section by section. The package is imported only to compare.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

# --- re-implementation from the specification (stdlib only) ------------------------------------------

TAG = "allocator.randomization/1"  # section 2


def spec_encode(fields: list[str]) -> bytes:
    # Section 2: u32be(F) || for each field u32be(len(utf8)) || utf8.
    out = len(fields).to_bytes(4, "big")
    for text in fields:
        raw = text.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return out


class SpecStream:
    # Sections 3 and 4.
    def __init__(self, seed: bytes, fields: list[str]) -> None:
        assert len(seed) == 32
        self.seed = seed
        self.message = spec_encode([TAG, *fields])
        self.counter = 0
        self.buffer = b""

    def word(self) -> int:
        if not self.buffer:
            self.buffer = hmac.new(
                self.seed, self.message + self.counter.to_bytes(8, "big"), hashlib.sha256
            ).digest()
            self.counter += 1
        word, self.buffer = int.from_bytes(self.buffer[:4], "big"), self.buffer[4:]
        return word

    def randbelow(self, n: int) -> int:
        limit = 2**32 - (2**32 % n)
        while True:
            w = self.word()
            if w < limit:
                return w % n

    def shuffle(self, a: list[str]) -> None:
        for i in range(len(a) - 1, 0, -1):
            j = self.randbelow(i + 1)
            a[i], a[j] = a[j], a[i]


@dataclass
class SpecDesign:
    arms: list[str]
    ratio: list[int]
    sizes: list[int]


def spec_stratum(
    seed: bytes, design: SpecDesign, domain_fields: list[str], min_slots: int
) -> list[tuple[int, int, int, str]]:
    # Sections 5 and 6: (position, block, block_size, arm) for whole blocks covering min_slots.
    arms, ratio = design.arms, design.ratio
    s = sorted(design.sizes)
    t = sum(ratio)
    stream = SpecStream(seed, domain_fields)
    slots: list[tuple[int, int, int, str]] = []
    block = 0
    while len(slots) < min_slots:
        size = s[stream.randbelow(len(s))]
        a = [arm for arm, r in zip(arms, ratio, strict=True) for _ in range(size // t * r)]
        stream.shuffle(a)
        block += 1
        first = len(slots) + 1
        slots.extend([(first + k, block, size, arm) for k, arm in enumerate(a)])
    return slots


def spec_list(
    seed: bytes, design: SpecDesign, trial: str, label: str, strata: dict[str, int]
) -> tuple[bytes, str]:
    # Section 7: serialization sorted by UTF-8 bytes of the key, then position; SHA-256 hex.
    text = ""
    for key in sorted(strata, key=lambda k: k.encode("utf-8")):
        for position, block, size, arm in spec_stratum(
            seed, design, [trial, label, "blocks", key], strata[key]
        ):
            text += f"{key}\t{position}\t{block}\t{size}\t{arm}\n"
    data = text.encode("utf-8")
    return data, hashlib.sha256(data).hexdigest()


def spec_kits(seed: bytes, design: SpecDesign, trial: str, kit_label: str, count: int) -> list[str]:
    # Section 8.
    return [arm for _, _, _, arm in spec_stratum(seed, design, [trial, kit_label, "kits"], count)][:count]


@dataclass
class SpecMinimization:
    arms: list[str]
    ratio: list[int]
    factors: list[tuple[str, list[str], Fraction]]
    measure: str
    p: Fraction


def spec_minimization(
    seed: bytes, design: SpecMinimization, domain_fields: list[str], arrivals: list[dict[str, str]]
) -> list[str]:
    # Section 9.
    arms, ratio, factors, measure, p = design.arms, design.ratio, design.factors, design.measure, design.p
    n = {(f, lv, a): 0 for f, levels, _ in factors for lv in levels for a in arms}
    out: list[str] = []
    for k, levels in enumerate(arrivals, start=1):
        g = []
        for t in arms:
            total = Fraction(0)
            for f, _, w in factors:
                x = [Fraction(n[(f, levels[f], a)] + (a == t), r) for a, r in zip(arms, ratio, strict=True)]
                if measure == "range":
                    d = max(x) - min(x)
                else:
                    mean = sum(x, Fraction(0)) / len(x)
                    d = sum(((v - mean) ** 2 for v in x), Fraction(0)) / len(x)
                total += w * d
            g.append(total)
        preferred = [a for a, v in zip(arms, g, strict=True) if v == min(g)]
        stream = SpecStream(seed, [*domain_fields, "minimization", str(k)])
        chosen = preferred[stream.randbelow(len(preferred))] if len(preferred) > 1 else preferred[0]
        if not stream.randbelow(p.denominator) < p.numerator:
            others = [a for a in arms if a != chosen]
            chosen = others[stream.randbelow(len(others))]
        for f, _, _ in factors:
            n[(f, levels[f], chosen)] += 1
        out.append(chosen)
    return out


# --- comparison with the package ---------------------------------------------------------------------

from allocator.randomization import (  # noqa: E402  (imported only after the independent code above)
    BlockDesign,
    Domain,
    Factor,
    ImbalanceMeasure,
    MinimizationDesign,
    Stream,
    generate_list,
    kit_arm_sequence,
    replay,
)

TEST_SEED = bytes(range(32))
SEEDS = [TEST_SEED, bytes(32), bytes.fromhex("ff" * 32), hashlib.sha256(b"another public test seed").digest()]

CASES = [
    pytest.param(["A", "B"], [1, 1], [2, 4], {"site=01": 8, "site=02": 6}, id="worked-example"),
    pytest.param(
        ["IFNG", "PLACEBO"],
        [1, 1],
        [6, 2, 4],
        {f"site=PARIS-0{s};admission_cause={c}": 85 for s in (1, 2) for c in ("septic", "trauma")},
        id="first-trial",
    ),
    pytest.param(["ACT", "PBO"], [2, 1], [3, 6, 9], {"x": 50, "y": 1, "z": 31}, id="2:1"),
    pytest.param(["A", "B", "C"], [1, 1, 1], [3, 6], {"s1": 40, "s2": 40}, id="1:1:1"),
    pytest.param(
        ["hi", "lo"], [3, 2], [5, 10], {"Zürich": 30, "zeta": 30, "Ωmega": 30, "Z": 1}, id="3:2-unicode"
    ),
]


@pytest.mark.req("RND-03")
@pytest.mark.parametrize("seed", SEEDS, ids=["0..1f", "zeros", "ff", "sha"])
@pytest.mark.parametrize(("arms", "ratio", "sizes", "strata"), CASES)
def test_independent_implementation_gives_the_identical_list_and_digest(
    seed: bytes, arms: list[str], ratio: list[int], sizes: list[int], strata: dict[str, int]
) -> None:
    expected_bytes, expected_digest = spec_list(
        seed, SpecDesign(arms, ratio, sizes), "IFNG-ICU", "LIST-1", strata
    )
    design = BlockDesign(tuple(arms), tuple(ratio), tuple(sizes))
    lst = generate_list(seed, design, trial_code="IFNG-ICU", list_label="LIST-1", strata=strata)
    assert lst.serialize() == expected_bytes
    assert lst.digest == expected_digest


@pytest.mark.req("RND-03")
def test_independent_implementation_reproduces_the_documented_and_pinned_digests() -> None:
    example = SpecDesign(["A", "B"], [1, 1], [2, 4])
    _, worked = spec_list(TEST_SEED, example, "EXAMPLE", "LIST-1", {"site=01": 8, "site=02": 6})
    assert worked == "1b8d9dddb0b5b02839d7ae249d5502294c67b0b8c0969b5874080c3588f4c373"
    strata = {
        f"site={s};admission_cause={c}": 60
        for s in ("PARIS-01", "PARIS-02")
        for c in ("septic", "trauma", "other")
    }
    _, reference = spec_list(
        TEST_SEED, SpecDesign(["IFNG", "PLACEBO"], [1, 1], [2, 4, 6]), "IFNG-ICU", "REF", strata
    )
    assert reference == "6765f4fe0f25e500fc836b4866390d48db4f7f9fbdcd18fa58f4db08c20e0562"


@pytest.mark.req("BLD-04")
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize(
    ("ratio", "sizes", "count"), [([1, 1], [4], 24), ([1, 1], [4], 403), ([2, 1], [3, 6], 100)]
)
def test_independent_implementation_gives_the_identical_kit_sequence(
    seed: bytes, ratio: list[int], sizes: list[int], count: int
) -> None:
    expected = spec_kits(seed, SpecDesign(["IFNG", "PLACEBO"], ratio, sizes), "IFNG-ICU", "KITS-1", count)
    design = BlockDesign(("IFNG", "PLACEBO"), tuple(ratio), tuple(sizes))
    actual = kit_arm_sequence(seed, design, trial_code="IFNG-ICU", kit_list_label="KITS-1", count=count)
    assert [s.arm for s in actual] == expected
    if seed == TEST_SEED and count == 24:
        assert "".join(a[0] for a in expected) == "PIPIIIPPPPIIIPIPPIPIIPIP"


def _arrivals(count: int) -> list[dict[str, str]]:
    # A fixed, irregular arrival pattern derived from SHA-256, so no random module is needed.
    out = []
    for i in range(count):
        h = hashlib.sha256(i.to_bytes(4, "big")).digest()
        out.append({"site": ("01", "02", "03")[h[0] % 3], "cause": ("septic", "trauma", "other")[h[1] % 3]})
    return out


MINIMIZATION_CASES = [
    pytest.param(["A", "B"], [1, 1], "range", Fraction(4, 5), (1, 1), id="1:1-range"),
    pytest.param(["A", "B"], [2, 1], "variance", Fraction(3, 4), (2, 1), id="2:1-variance"),
    pytest.param(["A", "B", "C"], [1, 1, 1], "range", Fraction(2, 3), (1, Fraction(1, 2)), id="3-arms"),
    pytest.param(["A", "B"], [1, 1], "variance", Fraction(1), (1, 3), id="p=1"),
]


@pytest.mark.req("RND-03")
@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("case", [pytest.param(c.values, id=c.id) for c in MINIMIZATION_CASES])
def test_independent_implementation_gives_the_identical_minimization_decisions(
    seed: bytes, case: tuple[list[str], list[int], str, Fraction, tuple[int | Fraction, ...]]
) -> None:
    arms, ratio, measure, p, weights = case
    levels = {"site": ["01", "02", "03"], "cause": ["septic", "trauma", "other"]}
    factors = [(name, levels[name], Fraction(w)) for name, w in zip(("site", "cause"), weights, strict=True)]
    arrivals = _arrivals(200)
    spec = SpecMinimization(arms, ratio, factors, measure, p)
    expected = spec_minimization(seed, spec, ["IFNG-ICU", "MIN-1"], arrivals)
    design = MinimizationDesign(
        tuple(arms),
        tuple(ratio),
        tuple(Factor(name, tuple(lv), w) for name, lv, w in factors),
        measure=ImbalanceMeasure(measure),
        p=p,
    )
    decisions = replay(seed, design, arrivals, trial_code="IFNG-ICU", list_label="MIN-1")
    assert [d.arm for d in decisions] == expected


# --- the extended worked examples of docs/randomization.md section 10 (issue 18) -----------------------

SPEC = Path(__file__).resolve().parents[3] / "docs" / "randomization.md"
SECOND_EXAMPLE_DIGEST = "93385235b0edafb8e8fe0ae53142fe3ab27629baaabb532c78416dae820516dd"
SECOND_EXAMPLE_BLOCKS = {
    "site=01": ["A B A B A A"],
    "site=Créteil": [
        "A A B B A A",
        "B A B A A A",
        "A B B A A A",
        "A B A A B A",
        "A A B A B A",
        "B A A A A B",
        "A A A B A B",
    ],
}


@pytest.mark.req("RND-03")
def test_the_second_worked_example_2_to_1_one_block_size_42_slots_non_ascii_key() -> None:
    strata = {"site=01": 3, "site=Créteil": 40}
    spec_bytes, spec_digest = spec_list(
        TEST_SEED, SpecDesign(["A", "B"], [2, 1], [6]), "EXAMPLE", "LIST-2", strata
    )
    real = generate_list(
        TEST_SEED,
        BlockDesign(("A", "B"), (2, 1), (6,)),
        trial_code="EXAMPLE",
        list_label="LIST-2",
        strata=strata,
    )
    assert real.serialize() == spec_bytes and real.digest == spec_digest == SECOND_EXAMPLE_DIGEST
    for key, blocks in SECOND_EXAMPLE_BLOCKS.items():
        arms = real.stratum(key).arms()
        assert [" ".join(arms[k : k + 6]) for k in range(0, len(arms), 6)] == blocks
    assert len(real.stratum("site=Créteil")) == 42
    # 42 words: the counter reaches 5; a little-endian counter would differ from B_1 on.
    stream = SpecStream(TEST_SEED, ["EXAMPLE", "LIST-2", "blocks", "site=Créteil"])
    assert (
        spec_encode([TAG, "EXAMPLE", "LIST-2", "blocks", "site=Créteil"])
        .hex()
        .endswith("0000000d736974653d4372c3a97465696c")
    )
    words = [stream.word() for _ in range(42)]
    assert stream.counter == 6 and words[8] == 2521784988
    spec = " ".join(SPEC.read_text(encoding="utf-8").split())
    assert SECOND_EXAMPLE_DIGEST in spec and "0000000d 736974653d4372c3a97465696c" in spec
    for key, blocks in SECOND_EXAMPLE_BLOCKS.items():
        for number, arms in enumerate(blocks, start=1):
            assert f"| `{key}` | {number} |" in spec and f"| `{arms}` |" in spec


@pytest.mark.req("RND-03")
def test_the_third_worked_example_a_rejected_word() -> None:
    fields = ["EXAMPLE", "LIST-1", "blocks", "site=01"]
    spec_stream = SpecStream(TEST_SEED, fields)
    first = spec_stream.word()
    assert first == 3086200499 and first >= 2**32 - (2**32 % 3_000_000_000) == 3_000_000_000
    spec_stream = SpecStream(TEST_SEED, fields)
    assert spec_stream.randbelow(3_000_000_000) == 1877527243 and spec_stream.word() == 4265769690
    real = Stream(TEST_SEED, Domain("EXAMPLE", "LIST-1", "blocks", ("site=01",)))
    assert real.randbelow(3_000_000_000) == 1877527243 and real.next_word() == 4265769690
    spec = " ".join(SPEC.read_text(encoding="utf-8").split())
    for number in ("3086200499", "1877527243", "4265769690", "randbelow(3000000000)"):
        assert number in spec
