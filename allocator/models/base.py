"""Declarative base, naming convention and column types shared by every model."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Explicit constraint names: Alembic can then alter and drop them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, always UTC (AUD-01, ICH E6(R3) §4.2.2: times in UTC).

    Stored without zone (SQLite has none) and returned as an aware UTC datetime. Naive datetimes
    are refused on the way in: a naive time in an audit trail is a bug waiting to be misread."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class IntegerArrayText(TypeDecorator[Iterable[int]]):
    """A list of integers bound as the text of a PostgreSQL array ('{1,2,3}'), to be cast to
    INTEGER[] in the statement (`CAST(:ids AS INTEGER[])`). psycopg dumps a list element by element
    in Python (about 40 µs for 64 ids, issue 16); the text is built in C and dumped as one string.
    Still a bound parameter: only integers are accepted (`operator.index` refuses anything else),
    so the text holds nothing but digits, signs and commas."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Iterable[int] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return "{" + ",".join(map(str, map(operator.index, value))) + "}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        str: String(200),
    }


# BigInteger primary keys that are still INTEGER PRIMARY KEY (rowid) on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
LongText = Text
