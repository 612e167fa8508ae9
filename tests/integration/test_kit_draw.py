"""Issue 16, point 2: the kit draw finds usable kits in a uniformly random order without reading
the site's whole stock (rejection sampling over the id range, then a fallback read of the ids not
yet probed when the stock is sparse), and the order stays uniform on both paths (BLD-04). On
PostgreSQL one statement finds and locks the first usable kits among the candidates; the same
properties are checked for that form."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from scipy import stats
from sqlalchemy import Integer, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql

from allocator.models.base import IntegerArrayText
from allocator.services.context import ServiceContext
from allocator.services.supply import stock as supply_stock


class _Result:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def one(self) -> Any:
        return self.rows[0]

    def all(self) -> list[Any]:
        return list(self.rows)

    def scalars(self) -> Iterator[Any]:
        return iter(self.rows)


class _Dialect:
    name = "sqlite"


class FakeConnection:
    """Answers the draw's three statements from a set of usable ids, counting them."""

    dialect = _Dialect()

    def __init__(self, usable: set[int], lo: int, hi: int) -> None:
        self.usable, self.lo, self.hi = usable, lo, hi
        self.calls: Counter[str] = Counter()

    def execute(self, statement: object, params: dict[str, Any]) -> _Result:
        if statement is supply_stock._AVAILABLE_ID_RANGE.statement:
            self.calls["range"] += 1
            return _Result([(self.lo, self.hi)])
        if statement is supply_stock._USABLE_AMONG["sqlite"]:
            self.calls["probe"] += 1
            assert len(params["ids"]) <= max(supply_stock._PROBES)
            return _Result([i for i in params["ids"] if i in self.usable])
        if statement is supply_stock._USABLE_IDS:
            self.calls["whole stock"] += 1
            return _Result(sorted(self.usable))
        raise AssertionError(statement)


def _order(usable: set[int], lo: int, hi: int) -> tuple[list[int], FakeConnection]:
    connection = FakeConnection(usable, lo, hi)
    where = {"trial_id": 1, "site_id": 1, "needed": None}
    return list(supply_stock._usable_in_random_order(connection, where)), connection  # type: ignore[arg-type]


def test_a_dense_stock_is_drawn_without_reading_it_whole() -> None:
    usable = set(range(1_000, 101_000, 2))  # 50,000 usable kits, one id in two
    connection = FakeConnection(usable, 1_000, 100_999)
    where = {"trial_id": 1, "site_id": 1, "needed": None}
    order = supply_stock._usable_in_random_order(connection, where)  # type: ignore[arg-type]
    first = [next(order) for _ in range(12)]  # what an allocation takes
    assert len(set(first)) == 12 and set(first) <= usable
    assert connection.calls == Counter({"range": 1, "probe": 1})


@pytest.mark.parametrize(
    ("usable", "lo", "hi"),
    [
        (set(range(1, 51)), 1, 50),  # the whole range is probed: no fallback needed
        ({5, 900, 1_700, 40_000, 70_001, 99_999}, 5, 99_999),  # sparse: the probes end, fallback
        (set(), None, None),  # no kit available at the site
    ],
)
def test_every_usable_kit_comes_exactly_once(usable: set[int], lo: int, hi: int) -> None:
    order, connection = _order(usable, lo, hi)
    assert sorted(order) == sorted(usable)
    if hi is not None and hi - lo + 1 > sum(supply_stock._PROBES):
        assert connection.calls["whole stock"] == 1


@pytest.mark.req("BLD-04")
@pytest.mark.parametrize(
    ("usable", "lo", "hi"),
    [
        ({2, 3, 5, 7, 11}, 2, 11),  # dense: probes only
        ({1, 400, 700, 1_500, 1_999}, 1, 1_999),  # sparse: probes, then the fallback, mixed
    ],
)
def test_the_order_is_uniform_on_both_paths(usable: set[int], lo: int, hi: int) -> None:
    kits = sorted(usable)
    first = Counter()
    second = Counter()
    for _ in range(3_000):
        order, _ = _order(usable, lo, hi)
        first[order[0]] += 1
        second[order[1]] += 1
    for counts in (first, second):
        assert stats.chisquare([counts[k] for k in kits]).pvalue > 1e-7, counts


class _Row:
    def __init__(self, kit_id: int, ord_: int) -> None:
        self.id, self.kit_number, self.sealed_arm, self.ord = kit_id, f"K{kit_id}", b"", ord_

    def __iter__(self) -> Iterator[Any]:
        return iter((self.id, self.kit_number, self.sealed_arm))


class _RowsResult(_Result):
    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class _PostgreSQL:
    name = "postgresql"


class FakePostgreSQL(FakeConnection):
    """The PostgreSQL form of the draw: one statement finds and locks the first usable kits among
    the candidates (`_LOCK_FIRST_USABLE`); the fallback locks batches with `_LOCK_USABLE`."""

    dialect = _PostgreSQL()  # type: ignore[assignment]

    def execute(self, statement: object, params: dict[str, Any]) -> _Result:
        if statement is supply_stock._LOCK_FIRST_USABLE.statement:
            self.calls["lock first usable"] += 1
            found = [_Row(i, n) for n, i in enumerate(params["ids"], start=1) if i in self.usable]
            return _RowsResult(found[: params["size"]])
        if statement is supply_stock._LOCK_USABLE["postgresql"]:
            self.calls["lock batch"] += 1
            return _RowsResult([_Row(i, 0) for i in params["ids"] if i in self.usable])
        return super().execute(statement, params)


def _locked_order(usable: set[int], lo: int, hi: int, size: int = 12) -> tuple[list[int], FakePostgreSQL]:
    connection = FakePostgreSQL(usable, lo, hi)
    where = {"trial_id": 1, "site_id": 1, "needed": None}
    batches = supply_stock._locked_in_random_order(connection, where, size)  # type: ignore[arg-type]
    return [kit.id for batch in batches for kit in batch], connection


def test_postgresql_draws_a_dense_stock_in_two_statements() -> None:
    usable = set(range(1_000, 101_000, 2))
    connection = FakePostgreSQL(usable, 1_000, 100_999)
    where = {"trial_id": 1, "site_id": 1, "needed": None}
    batches = supply_stock._locked_in_random_order(connection, where, 12)  # type: ignore[arg-type]
    first = next(batches)  # what an allocation usually takes
    assert len({kit.id for kit in first}) == 12 and {kit.id for kit in first} <= usable
    assert connection.calls == Counter({"range": 1, "lock first usable": 1})


def test_an_allocation_that_read_the_id_range_already_draws_in_one_statement() -> None:
    """The allocation reads the range with its screening check, under the site's lock (issue 16):
    the draw then sends only the locking statement, and still yields every usable kit once."""
    usable = set(range(1_000, 101_000, 2))
    connection = FakePostgreSQL(usable, 1_000, 100_999)
    where = {"trial_id": 1, "site_id": 1, "needed": None}
    batches = supply_stock._locked_in_random_order(connection, where, 12, (1_000, 100_999))  # type: ignore[arg-type]
    first = next(batches)
    assert len({kit.id for kit in first}) == 12 and {kit.id for kit in first} <= usable
    assert connection.calls == Counter({"lock first usable": 1})
    small = {3, 8, 9, 40}
    connection = FakePostgreSQL(small, 3, 40)
    drawn = [
        kit.id
        for batch in supply_stock._locked_in_random_order(connection, where, 2, (3, 40))
        for kit in batch
    ]  # type: ignore[arg-type]
    assert sorted(drawn) == sorted(small) and connection.calls["range"] == 0
    connection = FakePostgreSQL(set(), None, None)
    assert list(supply_stock._locked_in_random_order(connection, where, 12, (None, None))) == []  # type: ignore[arg-type]
    assert connection.calls["range"] == 0


@pytest.mark.parametrize(
    ("usable", "lo", "hi", "size"),
    [
        (set(range(1, 51)), 1, 50, 12),  # the whole range is probed: no fallback
        (set(range(1, 3_000, 3)), 1, 2_998, 5),  # several statements within one probe
        ({5, 900, 1_700, 40_000, 70_001, 99_999}, 5, 99_999, 12),  # sparse: fallback
        (set(), None, None, 12),  # no kit available at the site
    ],
)
def test_postgresql_yields_every_usable_kit_exactly_once(
    usable: set[int], lo: int, hi: int, size: int
) -> None:
    order, connection = _locked_order(usable, lo, hi, size)
    assert len(order) == len(set(order)) and set(order) == usable
    if hi is not None and hi - lo + 1 > sum(supply_stock._PROBES):
        assert connection.calls["whole stock"] == 1


@pytest.mark.req("BLD-04")
@pytest.mark.parametrize(
    ("usable", "lo", "hi", "size"),
    [
        ({2, 3, 5, 7, 11}, 2, 11, 2),  # dense: probes only, two statements
        ({1, 400, 700, 1_500, 1_999}, 1, 1_999, 12),  # sparse: probes, then the fallback, mixed
    ],
)
def test_postgresql_order_is_uniform_on_both_paths(usable: set[int], lo: int, hi: int, size: int) -> None:
    kits = sorted(usable)
    first: Counter[int] = Counter()
    second: Counter[int] = Counter()
    third: Counter[int] = Counter()
    for _ in range(3_000):
        order, _ = _locked_order(usable, lo, hi, size)
        first[order[0]] += 1
        second[order[1]] += 1
        third[order[2]] += 1
    for counts in (first, second, third):
        assert stats.chisquare([counts[k] for k in kits]).pvalue > 1e-7, counts


def test_the_lazy_shuffle_of_a_range_is_a_uniform_permutation() -> None:
    counts = Counter(tuple(supply_stock._random_order_of_range(10, 13)) for _ in range(12_000))
    assert len(counts) == 24 and all(sorted(p) == [10, 11, 12, 13] for p in counts)
    assert stats.chisquare(list(counts.values())).pvalue > 1e-7


def test_the_draws_below_a_bound_are_uniform() -> None:
    draws = supply_stock._below()
    next(draws)
    counts = Counter(draws.send(6) for _ in range(12_000))
    assert sorted(counts) == [0, 1, 2, 3, 4, 5]
    assert stats.chisquare([counts[i] for i in range(6)]).pvalue > 1e-7
    assert {draws.send(1) for _ in range(50)} == {0}


# --- the ids reach PostgreSQL as the text of an array (issue 16) ---------------------------------


@pytest.mark.parametrize("ids", [[], [7], [1, 2, 3], [2**31 - 1, -5, 0, 42, 42]])
def test_an_id_array_bound_as_text_arrives_whole_and_in_order(ctx: ServiceContext, ids: list[int]) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("the ids go as an array on PostgreSQL only (SQLite expands an IN list)")
    ids_param = cast(bindparam("ids", type_=IntegerArrayText()), postgresql.ARRAY(Integer))
    with ctx.db.reading() as session:
        assert session.execute(select(ids_param), {"ids": ids}).scalar_one() == ids
        unnested = select(func.unnest(ids_param).table_valued("id", with_ordinality="ord").render_derived())
        assert [row.id for row in session.execute(unnested, {"ids": ids})] == ids


@pytest.mark.parametrize("bad", [["1}"], [1.5], ["7"], [None], ["1,2"]])
def test_only_integers_go_into_an_id_array(bad: list[Any]) -> None:
    with pytest.raises(TypeError):
        IntegerArrayText().process_bind_param(bad, postgresql.dialect())


def test_an_id_array_is_digits_and_commas() -> None:
    bound = IntegerArrayText().process_bind_param(iter([3, -1, True, 10**20]), postgresql.dialect())
    assert bound == "{3,-1,1,100000000000000000000}"
