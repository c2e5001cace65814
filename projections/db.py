"""Database plumbing of the read models: the engine, transactions, a portable UTC time type, upserts.

Read models live in the event store's database: the same SQLite file, or the
configured PostgreSQL schema (through `search_path`, so table names stay bare).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.types import TypeDecorator

from keyledger.settings import Settings

SQLITE_LOCK_TIMEOUT = 30.0


def create_read_engine(settings: Settings, sqlite_dbname: str | None = None) -> Engine:
    """An engine on the event store's database.

    `sqlite_dbname` is the name the event store itself opened (a file path, or a
    shared in-memory URI), so both always use the same SQLite database.
    """
    if settings.is_postgres:
        url = settings.url.set(drivername="postgresql+psycopg")
        if url.host is None:  # TCP, as the event store does (EVENTSOURCING-NOTES)
            url = url.set(host="127.0.0.1")
        schema = settings.database_schema or "public"
        return create_engine(
            url,
            connect_args={"options": f"-c search_path={schema}", "connect_timeout": 5},
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,
            hide_parameters=True,  # errors and logs must never show a digest
        )
    name = sqlite_dbname or settings.url.database or ""
    engine = create_engine(
        "sqlite+pysqlite://",
        creator=lambda: _sqlite_connect(name),
        poolclass=QueuePool,  # the URL names no file, which would otherwise pick a memory-only pool
        pool_size=5,
        max_overflow=10,
        hide_parameters=True,  # errors and logs must never show a digest
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_connect(name: str) -> Any:
    import sqlite3

    return sqlite3.connect(
        name,
        uri=name.startswith("file:"),
        timeout=SQLITE_LOCK_TIMEOUT,
        check_same_thread=False,
        isolation_level=None,  # we issue BEGIN ourselves (see _sqlite_on_begin)
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # Read models are derived data and commit rows with their position: losing the last
    # commits on power loss only means re-applying them, so skip the fsync per commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another writer committed in between; IMMEDIATE takes the write lock up front, waiting.
    writes = connection.get_execution_options().get("kl_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        conn.execution_options(kl_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction whose statements all see one snapshot (several queries, one answer)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def lock_for_ddl(conn: Connection) -> None:
    """Serialise table creation between processes (PostgreSQL; SQLite writers are serial anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.kl_ddl'))"))


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends (SQLite stores naive text: UTC is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: read models store aware UTC times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    add: Sequence[str] = (),
) -> None:
    """Insert rows; on a key conflict add the `add` columns to the stored ones, or else replace the row.

    Rows must have distinct keys (PostgreSQL refuses to update one row twice in one statement).
    """
    if rows:
        conn.execute(_upsert_statement(conn.dialect.name, table, tuple(key), tuple(add)), list(rows))


@functools.lru_cache(maxsize=256)
def _upsert_statement(dialect: str, table: Table, key: tuple[str, ...], add: tuple[str, ...]) -> Any:
    # Built once per table: a statement rebuilt per batch costs a compilation each time.
    insert: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    if add:
        changes = {name: table.c[name] + insert.excluded[name] for name in add}
    else:
        changes = {c.name: insert.excluded[c.name] for c in table.c if c.name not in key}
    return insert.on_conflict_do_update(index_elements=list(key), set_=changes)
