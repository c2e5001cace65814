"""How read-model rows are stored: the column types both backends agree on, and rows inserted in bulk.

Dialect code only: which tables and rows there are is the read models' business (`projections`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, String, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator

from domain.text import storable_text
from domain.timefmt import clamp_utc

Rows = Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]
Names = Sequence[str]


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


def insert_rows(
    conn: Connection, table: Table, rows: Rows, add: Names = (), latest: Names = (), earliest: Names = ()
) -> None:
    """Insert rows: value tuples in the table's column order, or mappings by column name.

    With `add`, a row whose primary key is stored adds its `add` columns to the stored ones and keeps the greater
    of the stored and new `latest` values and the lesser of the `earliest` ones (NULL: the other); the rows must
    then have distinct keys (PostgreSQL refuses to update one row twice in one statement).
    """
    if not rows:
        return
    sql, converters = _statement(conn.dialect, table, tuple(add), tuple(latest), tuple(earliest))
    if isinstance(rows[0], Mapping):
        rows = [[row[c.name] for c in table.c] for row in rows]  # type: ignore[call-overload]
    # Column by column: one C-level map per column rather than a Python loop per value.
    columns = [
        list(map(convert, column)) if convert else list(column)
        for convert, column in zip(converters, zip(*rows, strict=True), strict=True)
    ]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(sql, tuple(columns))  # one parameter set: the arrays
    else:
        conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


@functools.lru_cache(maxsize=256)
def _statement(
    dialect: Dialect, table: Table, add: Names, latest: Names, earliest: Names
) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """A Core insert's text, compiled once per table, and each column's converter: one executemany on SQLite, one
    `INSERT ... SELECT FROM unnest(%b::type[])` on PostgreSQL.

    Not `conn.execute(insert, rows)`: a one-process rebuild took 43 % longer on PostgreSQL and 16 % on SQLite (its
    ratio to read+decode 15 % lower when measured again, December 2026), where it must not slow down (DEVELOPERS.md).
    """
    insert: Any = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)
    if add:
        changes = {name: table.c[name] + insert.excluded[name] for name in add}
        for names, postgres, lite in ((latest, func.greatest, func.max), (earliest, func.least, func.min)):
            for name in names:
                stored, new = table.c[name], insert.excluded[name]
                # PostgreSQL's greatest/least skip NULLs; SQLite's two-argument max/min answer NULL for one.
                changes[name] = (
                    postgres(stored, new)
                    if dialect.name == "postgresql"
                    else lite(func.coalesce(stored, new), func.coalesce(new, stored))
                )
        insert = insert.on_conflict_do_update(index_elements=list(table.primary_key), set_=changes)
    sql = str(insert.compile(dialect=dialect))  # on SQLite its parameters are the columns in order
    if dialect.name == "postgresql":  # %b: binary arrays, far cheaper than text; JSON travels as text, cast back
        quote, json = dialect.identifier_preparer.quote, [isinstance(c.type, JSON) for c in table.c]
        columns = ", ".join(quote(c.name) for c in table.c)
        types = ["text" if j else c.type.compile(dialect=dialect) for c, j in zip(table.c, json, strict=True)]
        values = ", ".join(f"v.{quote(c.name)}{'::json' if j else ''}" for c, j in zip(table.c, json, strict=True))
        _, on, conflict = sql.partition(" ON CONFLICT ")
        # Only our own table and column names, quoted by the dialect: no input reaches this text.
        source = f"SELECT {values} FROM unnest({', '.join(f'%b::{t}[]' for t in types)}) AS v({columns})"  # noqa: S608
        sql = f"INSERT INTO {quote(table.name)} ({columns}) {source}{on}{conflict}"
    return sql, [_converter(dialect, c.type) for c in table.c]


def _converter(dialect: Dialect, type_: Any) -> Callable[[Any], Any] | None:
    """The dialect's own bind processor, but for times and days on SQLite: the same text, formatted in C (2-3x faster
    per value; SQLAlchemy's UUID processor is as fast as one can be)."""
    fast: dict[type, Callable[[Any], Any]] = {UTCDateTime: sqlite_utc_text, Date: sqlite_date_text}
    kind = next((k for k in fast if isinstance(type_, k)), None) if dialect.name == "sqlite" else None
    return fast[kind] if kind else type_.dialect_impl(dialect).bind_processor(dialect)


def sqlite_utc_text(value: datetime | None) -> str | None:
    if value is not None and value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime: read models store aware UTC times only")
        value = clamp_utc(value)
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_date_text(value: date | None) -> str | None:
    # date's own method, also for a datetime: SQLAlchemy stores a datetime's date part in a Date column.
    return None if value is None else date.isoformat(value)
