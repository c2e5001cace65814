"""Database plumbing of the read models: the engine, transactions, a portable UTC time type, bulk writes.

Read models live in the event store's database: the same SQLite file, or the
configured PostgreSQL schema (through `search_path`, so table names stay bare).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, Protocol, cast
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Uuid,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.types import TypeDecorator

from domain.errors import InvalidInput
from domain.text import storable_text
from domain.timefmt import clamp_utc

SQLITE_LOCK_TIMEOUT = 30.0
_SQLITE_BUSY = 5

# SQLite table layouts (ignored elsewhere). A table keyed by its primary key is stored in
# that key's order, with no separate rowid tree and key index to update per row; a
# position column is the rowid itself (only INTEGER PRIMARY KEY is). Rebuilds write
# every row, and these halve the b-trees each insert touches.
CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}
POSITION = BigInteger().with_variant(Integer(), "sqlite")


class DatabaseSettings(Protocol):
    """Where the read models live: what the composition root hands this package (keyledger.settings fits)."""

    @property
    def url(self) -> URL: ...

    @property
    def is_postgres(self) -> bool: ...

    @property
    def database_schema(self) -> str | None: ...


def create_read_engine(settings: DatabaseSettings, sqlite_dbname: str | None = None) -> Engine:
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
            connect_args={"options": f"-c search_path={schema}", "connect_timeout": 2},
            pool_size=5,
            max_overflow=10,
            pool_timeout=2,  # an outage answers 503 within seconds rather than queueing for 30
            pool_pre_ping=True,
            hide_parameters=True,  # errors and logs must never show a digest
        )
    name = sqlite_dbname or settings.url.database or ""
    if name in ("", ":memory:") or "mode=memory" in name:
        # A shared in-memory database locks whole tables without waiting: the event store's
        # own saves would fail while a read model is written.
        raise InvalidInput(
            "bad setting KEYLEDGER_DATABASE_URL: read models need a SQLite file (sqlite:///FILE) "
            "or PostgreSQL, not an in-memory database"
        )
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
    # Rebuilds touch index pages all over; the 2 MB default cache made them ~10% slower.
    cursor.execute("PRAGMA cache_size=-32768")
    # Debian's SQLite zeroes every freed page (SECURE_DELETE): dropping a retired generation
    # rewrote all its pages, half a second per 100 MB. FAST zeroes only what it writes anyway;
    # nothing is lost, as every value of a read model is also in the (never deleted) events.
    cursor.execute("PRAGMA secure_delete=FAST")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another writer committed in between; IMMEDIATE takes the write lock up front, waiting.
    options = connection.get_execution_options()
    if not options.get("kl_write", False):
        connection.exec_driver_sql("BEGIN")
    elif options.get("kl_wait", True):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("PRAGMA busy_timeout = 0")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(SQLITE_LOCK_TIMEOUT * 1000)}")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed on success, rolled back on any error."""
    with engine.connect() as conn:
        conn.execution_options(kl_write=True)
        with conn.begin():
            yield conn


@contextmanager
def write_transaction_if_free(engine: Engine) -> Iterator[Connection | None]:
    """As `write_transaction`, but None at once when another connection holds SQLite's write lock.

    Lets a rebuild go on with other work instead of waiting. PostgreSQL locks rows, not the
    database: there the transaction always begins.
    """
    with engine.connect() as conn:
        conn.execution_options(kl_write=True, kl_wait=False)
        try:
            transaction = conn.begin()
        except OperationalError as error:
            if getattr(error.orig, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:  # extended codes too
                raise
            yield None
            return
        with transaction:
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction whose statements all see one snapshot (several queries, one answer)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def refresh_statistics(conn: Connection, table: str, stale: float = 0.1) -> None:
    """ANALYZE a PostgreSQL table that was never analyzed or changed by more than `stale` since.

    Without statistics (a fresh bulk load, autovacuum off or not yet run) the planner read
    each topic-filtered page of a rebuild by sorting the whole rest of the events table:
    pages took 15x longer. Needs to own the table; otherwise PostgreSQL only warns.
    """
    row = conn.execute(
        text(
            "SELECT n_live_tup, n_mod_since_analyze, coalesce(last_analyze, last_autoanalyze) IS NULL"
            " FROM pg_stat_user_tables WHERE relid = to_regclass(quote_ident(:table))"
        ),
        {"table": table},
    ).first()
    if row is not None and (row[2] or row[1] > stale * max(row[0], 1)):
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}")


def stored_sizes(conn: Connection, table: str, after: int, limit: int, topics: Sequence[str] | None) -> list[int]:
    """Stored bytes of the next `limit` events after notification id `after` (of `topics` only, if given).

    Reads the library's events table directly (its recorder has no such query), without
    transferring the data: about a third of the cost of reading the same page.
    """
    # Driver-level SQL: one value per event, and SQLAlchemy's per-row work cost more than the query.
    quoted = conn.dialect.identifier_preparer.quote(table)
    params: list[Any] = [after]
    if conn.dialect.name == "postgresql":
        where = "notification_id > %s"
        if topics:
            where += " AND topic = ANY(%s)"
            params.append(list(topics))
        sql = f"SELECT length(state) FROM {quoted} WHERE {where} ORDER BY notification_id LIMIT %s"  # noqa: S608
    else:
        where = "rowid > ?"
        if topics:
            where += f" AND topic IN ({', '.join('?' * len(topics))})"
            params += topics
        sql = f"SELECT length(state) FROM {quoted} WHERE {where} ORDER BY rowid LIMIT ?"  # noqa: S608
    return [size for (size,) in conn.exec_driver_sql(sql, (*params, limit)).fetchall()]


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


Rows = Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]


def insert_rows(conn: Connection, table: Table, rows: Rows) -> None:
    """Insert rows: value tuples in the table's column order, or mappings by column name."""
    if rows:
        _bulk(conn.dialect, table, "insert", ()).run(conn, rows)


def upsert(conn: Connection, table: Table, rows: Rows, key: Sequence[str], add: Sequence[str]) -> None:
    """Insert rows (as `insert_rows`); on a key conflict add the `add` columns to the stored ones.

    Rows must have distinct keys (PostgreSQL refuses to update one row twice in one statement).
    """
    if rows:
        _bulk(conn.dialect, table, "upsert", (tuple(key), tuple(add))).run(conn, rows)


class _BulkStatement:
    """One statement compiled once, fed every row of a batch.

    SQLAlchemy processes every row's parameters in Python and cannot cache ON CONFLICT
    statements at all, and psycopg's executemany costs a round trip per row: that made
    rebuilds several times slower than reading the events. Here each value goes through
    its column's converter (`_converter`) and nothing else; SQLite gets one executemany,
    PostgreSQL one statement over arrays (`INSERT ... SELECT FROM unnest(...)`).
    """

    def __init__(self, dialect: Dialect, table: Table, statement: Any) -> None:
        self.names = [c.name for c in table.c]
        self.converters = [_converter(dialect, c.type) for c in table.c]
        self.arrays = dialect.name == "postgresql"
        if self.arrays:
            self.sql = _unnest_sql(dialect, table, statement)
            self.order: list[int] = []
            return
        compiled = statement.compile(dialect=dialect)
        if not compiled.positional:
            raise NotImplementedError(f"bulk writes on {dialect.name}")
        self.sql = str(compiled)
        order = [self.names.index(n) for n in compiled.positiontup or ()]
        self.order = [] if order == list(range(len(self.names))) else order

    def run(self, conn: Connection, rows: Rows) -> None:
        if isinstance(rows[0], Mapping):
            rows = [[row[name] for name in self.names] for row in cast(Sequence[Mapping[str, Any]], rows)]
        # Column by column: one C-level map per column rather than a Python loop per value.
        columns = [
            list(map(convert, column)) if convert else list(column)
            for convert, column in zip(self.converters, zip(*rows, strict=True), strict=True)
        ]
        if self.arrays:
            conn.exec_driver_sql(self.sql, tuple(columns))  # one parameter set: the arrays
            return
        if self.order:
            columns = [columns[i] for i in self.order]
        conn.exec_driver_sql(self.sql, list(zip(*columns, strict=True)))


def _converter(dialect: Dialect, type_: Any) -> Callable[[Any], Any] | None:
    """What turns a value into the driver's parameter: the dialect's own bind processor.

    Except for the three hottest on SQLite, which take the same text through C-level
    formatting (the tests check they match SQLAlchemy's byte for byte).
    """
    if dialect.name == "sqlite" and isinstance(type_, UTCDateTime):
        return _sqlite_utc_text
    if dialect.name == "sqlite" and isinstance(type_, Uuid):
        return _uuid_hex
    if dialect.name == "sqlite" and isinstance(type_, Date):
        return _sqlite_date_text
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _sqlite_utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime: read models store aware UTC times only")
        value = clamp_utc(value)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_date_text(value: date | None) -> str | None:
    # date's own method, also for a datetime: SQLAlchemy stores a datetime's date part in a Date column.
    return None if value is None else date.isoformat(value)


def _uuid_hex(value: UUID | None) -> str | None:
    return None if value is None else value.hex


def _unnest_sql(dialect: Dialect, table: Table, statement: Any) -> str:
    """`INSERT INTO t (...) SELECT ... FROM unnest(%b::type[], ...)`, plus the statement's ON CONFLICT."""
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(c.name) for c in table.c)
    # %b: psycopg sends the arrays in binary, far cheaper than escaping each element as text.
    # JSON travels as text (what its bind processor makes) and is cast back per row.
    arrays = ", ".join(
        "%b::text[]" if isinstance(c.type, JSON) else f"%b::{c.type.compile(dialect=dialect)}[]" for c in table.c
    )
    values = ", ".join(
        f"v.{quote(c.name)}::json" if isinstance(c.type, JSON) else f"v.{quote(c.name)}" for c in table.c
    )
    # Only our own table and column names, quoted by the dialect: no input reaches this text.
    sql = f"INSERT INTO {quote(table.name)} ({columns}) SELECT {values} FROM unnest({arrays}) AS v({columns})"  # noqa: S608
    compiled = str(statement.compile(dialect=dialect))
    if " ON CONFLICT " in compiled:
        sql += compiled[compiled.index(" ON CONFLICT ") :]
    return sql


@functools.lru_cache(maxsize=256)
def _bulk(dialect: Dialect, table: Table, kind: str, conflict: tuple[Any, ...]) -> _BulkStatement:
    if kind == "insert":
        return _BulkStatement(dialect, table, table.insert())
    key, add = conflict
    insert: Any = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)
    changes = {name: table.c[name] + insert.excluded[name] for name in add}
    return _BulkStatement(dialect, table, insert.on_conflict_do_update(index_elements=list(key), set_=changes))
