"""Database plumbing of the read models: the engine, transactions, portable column types.

Read models live in the event store's database: the same SQLite file, or the
configured PostgreSQL schema (through `search_path`, so table names stay bare).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import BigInteger, DateTime, Engine, Integer, String, column, create_engine, event, func, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.sql.expression import ColumnClause
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
    position: ColumnClause[int] = column("notification_id" if conn.dialect.name == "postgresql" else "rowid")
    events = sql_table(table, position, column("state"), column("topic"))
    query = select(func.length(events.c.state)).where(position > after).order_by(position).limit(limit)
    if topics:
        query = query.where(events.c.topic.in_(topics))
    return list(conn.execute(query).scalars())


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
