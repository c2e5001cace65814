"""What the read models define their tables with: names and SQLite layouts (column types: `adapters.rows`); and
`chunks` for queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Integer

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
