"""What the read models define their tables with: names, column types, SQLite layouts; and `chunks` for queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import BigInteger, DateTime, Integer, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from domain.text import storable_text
from domain.timefmt import clamp_utc

T = TypeVar("T")
# SQLite layouts (ignored elsewhere): tables in primary-key order, a position that is the rowid (DEVELOPERS.md).
CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}
POSITION = BigInteger().with_variant(Integer(), "sqlite")


def table_name(short: str, generation: int) -> str:
    return f"kl_{short}_g{generation}"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Keeps `IN (...)` lists well under every backend's bound-parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite stores naive text: UTC is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: read models store aware UTC times only")
        value = clamp_utc(value)  # older code stored times that overflow in UTC
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StorableText(TypeDecorator[str]):
    """Text as every backend stores it: NUL and unpaired surrogates (let in by older code) become U+FFFD."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else storable_text(value)
