"""The deterministic stream: seed, domain encoding, HMAC counter layout, unbiased draws (RND-03, RND-04)."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from allocator.randomization.stream import (
    DOMAIN_TAG,
    WORD_RANGE,
    Domain,
    Stream,
    accept_limit,
    new_seed,
    reduce_word,
)

SEED = bytes(range(32))
DOMAIN = Domain("TRIAL", "LIST", "test")


class ScriptedStream(Stream):
    """A stream whose words are given by the test, to check the draw rules word by word."""

    def __init__(self, words: list[int]) -> None:
        super().__init__(SEED, DOMAIN)
        self.script = list(words)
        self.consumed = 0

    def next_word(self) -> int:
        self.consumed += 1
        return self.script.pop(0)


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


@pytest.mark.req("RND-04")
@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_seed_of_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        Stream(bytes(length), DOMAIN)


@pytest.mark.req("RND-04")
@pytest.mark.parametrize("seed", ["0" * 32, bytearray(32), 12345])
def test_seed_must_be_bytes(seed: object) -> None:
    with pytest.raises(TypeError, match="seed must be bytes"):
        Stream(seed, DOMAIN)  # type: ignore[arg-type]


@pytest.mark.req("RND-04")
def test_new_seed_is_32_fresh_bytes() -> None:
    seeds = {new_seed() for _ in range(50)}
    assert len(seeds) == 50
    assert all(isinstance(seed, bytes) and len(seed) == 32 for seed in seeds)


@pytest.mark.req("RND-03")
def test_domain_encoding_is_length_prefixed_utf8() -> None:
    domain = Domain("IFN-γ", "L1", "blocks", ("site=01", ""))
    expected = (
        struct.pack(">I", 6)
        + _field(DOMAIN_TAG)
        + _field("IFN-γ")
        + _field("L1")
        + _field("blocks")
        + _field("site=01")
        + _field("")
    )
    assert domain.encode() == expected


@pytest.mark.req("RND-03")
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (Domain("AB", "C", "p"), Domain("A", "BC", "p")),
        (Domain("T", "L", "blocks", ("x",)), Domain("T", "L", "blocks", ("x", ""))),
        (Domain("T", "L", "blocks", ("a;b",)), Domain("T", "L", "blocks", ("a", "b"))),
        (Domain("T", "L", "kits"), Domain("T", "L", "blocks", ("kits",))),
    ],
)
def test_different_domains_never_share_encoding_or_stream(first: Domain, second: Domain) -> None:
    assert first.encode() != second.encode()
    a, b = Stream(SEED, first), Stream(SEED, second)
    assert [a.next_word() for _ in range(16)] != [b.next_word() for _ in range(16)]


@pytest.mark.req("RND-03")
@pytest.mark.parametrize("kwargs", [{"trial_code": ""}, {"list_label": ""}, {"purpose": ""}])
def test_domain_requires_non_empty_identifiers(kwargs: dict[str, str]) -> None:
    fields = {"trial_code": "T", "list_label": "L", "purpose": "p"} | kwargs
    with pytest.raises(ValueError, match="must not be empty"):
        Domain(**fields)


@pytest.mark.req("RND-03")
def test_domain_rejects_text_that_is_not_utf8_encodable() -> None:
    with pytest.raises(ValueError):
        Domain("T", "L", "p", ("\udc80",))


@pytest.mark.req("RND-03")
def test_stream_is_hmac_sha256_in_counter_mode_read_as_big_endian_words() -> None:
    stream = Stream(SEED, DOMAIN)
    words = [stream.next_word() for _ in range(24)]
    expected: list[int] = []
    for counter in range(3):
        block = hmac.new(SEED, DOMAIN.encode() + counter.to_bytes(8, "big"), hashlib.sha256).digest()
        expected.extend(int.from_bytes(block[i : i + 4], "big") for i in range(0, 32, 4))
    assert words == expected


@pytest.mark.req("RND-03")
def test_same_seed_and_domain_give_the_same_stream_and_another_seed_does_not() -> None:
    a, b = Stream(SEED, DOMAIN), Stream(SEED, DOMAIN)
    c = Stream(bytes(32), DOMAIN)
    first = [a.randbelow(1000) for _ in range(100)]
    assert first == [b.randbelow(1000) for _ in range(100)]
    assert first != [c.randbelow(1000) for _ in range(100)]


@pytest.mark.req("RND-04")
@given(st.integers(min_value=1, max_value=WORD_RANGE))
def test_accepted_word_range_is_the_largest_multiple_of_n(n: int) -> None:
    limit = accept_limit(n)
    assert limit % n == 0  # every residue has exactly limit / n accepted words: no modulo bias
    assert WORD_RANGE - n < limit <= WORD_RANGE
    assert reduce_word(limit - 1, n) == (limit - 1) % n
    if limit < WORD_RANGE:
        assert reduce_word(limit, n) is None
        assert reduce_word(WORD_RANGE - 1, n) is None


@pytest.mark.req("RND-04")
@pytest.mark.parametrize("n", range(1, 41))
def test_each_residue_is_hit_by_the_same_number_of_accepted_words(n: int) -> None:
    # Count accepted words per residue in closed form over the whole 32-bit range, and check the
    # boundary words one by one around the limit.
    limit = accept_limit(n)
    per_residue = Counter({r: (limit - r + n - 1) // n for r in range(n)})
    assert set(per_residue.values()) == {limit // n}
    near = range(max(0, limit - 2 * n), min(WORD_RANGE, limit + 2 * n))
    for word in near:
        assert (reduce_word(word, n) is None) == (word >= limit)


@pytest.mark.req("RND-04")
def test_randbelow_rejects_words_at_or_above_the_limit_and_reads_the_next_one() -> None:
    # n = 3: 2**32 mod 3 == 1, so the single word 0xFFFFFFFF is rejected.
    stream = ScriptedStream([0xFFFFFFFF, 0xFFFFFFFE, 7])
    assert stream.randbelow(3) == 0xFFFFFFFE % 3
    assert stream.consumed == 2
    assert stream.randbelow(3) == 1
    # n = 6: limit = 2**32 - 4; words 2**32-4 .. 2**32-1 are rejected.
    stream = ScriptedStream([WORD_RANGE - 4, WORD_RANGE - 1, WORD_RANGE - 5])
    assert stream.randbelow(6) == (WORD_RANGE - 5) % 6
    assert stream.consumed == 3


@pytest.mark.req("RND-04")
@pytest.mark.parametrize("n", [0, -1, WORD_RANGE + 1, True])
def test_randbelow_range_is_checked(n: int) -> None:
    with pytest.raises(ValueError, match=r"\[1, 2\*\*32\]"):
        Stream(SEED, DOMAIN).randbelow(n)


@pytest.mark.req("RND-04")
def test_randbelow_of_two_to_the_32_returns_the_word_itself() -> None:
    assert ScriptedStream([WORD_RANGE - 1]).randbelow(WORD_RANGE) == WORD_RANGE - 1


@pytest.mark.req("RND-04")
def test_randbelow_frequencies_are_uniform() -> None:
    stream = Stream(SEED, Domain("TRIAL", "LIST", "uniformity"))
    counts = Counter(stream.randbelow(7) for _ in range(70_000))
    assert set(counts) == set(range(7))
    assert stats.chisquare([counts[i] for i in range(7)]).pvalue > 0.001


@pytest.mark.req("RND-03")
def test_shuffle_goes_from_the_last_index_down_with_j_below_i_plus_one() -> None:
    # i=3: randbelow(4) <- 3 (no swap); i=2: randbelow(3) <- 0 (swap 2,0); i=1: randbelow(2) <- 5 -> 1.
    items = [0, 1, 2, 3]
    stream = ScriptedStream([3, 0, 5])
    stream.shuffle(items)
    assert items == [2, 1, 0, 3]
    assert stream.consumed == 3


@pytest.mark.req("RND-03")
@pytest.mark.parametrize("length", [0, 1])
def test_shuffle_of_zero_or_one_item_reads_nothing(length: int) -> None:
    stream = ScriptedStream([])
    items = list(range(length))
    stream.shuffle(items)
    assert items == list(range(length))
    assert stream.consumed == 0


@pytest.mark.req("RND-04")
def test_shuffle_gives_every_permutation_equally_often() -> None:
    stream = Stream(SEED, Domain("TRIAL", "LIST", "permutations"))
    counts: Counter[tuple[int, ...]] = Counter()
    for _ in range(24_000):
        items = [0, 1, 2, 3]
        stream.shuffle(items)
        counts[tuple(items)] += 1
    assert len(counts) == 24
    assert stats.chisquare(list(counts.values())).pvalue > 0.001


@pytest.mark.req("RND-03")
def test_bernoulli_succeeds_iff_the_draw_is_below_the_numerator() -> None:
    p = Fraction(4, 5)
    stream = ScriptedStream([3, 4, 0, 9])
    assert stream.bernoulli_draw(p) == (3, True)
    assert stream.bernoulli_draw(p) == (4, False)
    assert stream.bernoulli(p) is True
    assert stream.bernoulli(p) is False  # 9 mod 5 == 4


@pytest.mark.req("RND-03")
@pytest.mark.parametrize("p", [0.8, Fraction(-1, 2), Fraction(3, 2), Fraction(1, WORD_RANGE + 1)])
def test_bernoulli_requires_an_exact_probability(p: object) -> None:
    with pytest.raises(ValueError, match=r"p must be|denominator"):
        Stream(SEED, DOMAIN).bernoulli(p)  # type: ignore[arg-type]


@pytest.mark.req("RND-04")
def test_bernoulli_frequency_matches_p() -> None:
    stream = Stream(SEED, Domain("TRIAL", "LIST", "coin"))
    successes = sum(stream.bernoulli(Fraction(4, 5)) for _ in range(20_000))
    assert stats.binomtest(successes, 20_000, 0.8).pvalue > 0.001


@pytest.mark.req("RND-03")
@settings(max_examples=50)
@given(seed=st.binary(min_size=32, max_size=32), qualifier=st.text(max_size=10))
def test_stream_depends_only_on_seed_and_domain(seed: bytes, qualifier: str) -> None:
    domain = Domain("T", "L", "p", (qualifier,))
    a = Stream(seed, domain)
    b = Stream(seed, Domain("T", "L", "p", (qualifier,)))
    assert [a.next_word() for _ in range(10)] == [b.next_word() for _ in range(10)]
