"""The read side's database (the event store's own): engine, transactions, the DDL lock, page sizes, statistics.

Used by the read models (`projections`), the webhooks' delivery state and the operator token."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from sqlalchemy import Engine, column, create_engine, event, func, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from domain.errors import InvalidInput

SQLITE_LOCK_TIMEOUT = 30.0


class DatabaseSettings(Protocol):
    """Where the read models live: what the composition root hands this package (keyledger.settings fits)."""

    @property
    def url(self) -> URL: ...
    @property
    def is_postgres(self) -> bool: ...
    @property
    def database_schema(self) -> str | None: ...


def create_read_engine(settings: DatabaseSettings, sqlite_dbname: str | None = None) -> Engine:
    """An engine on the event store's database (`sqlite_dbname`: the SQLite file the store itself opened)."""
    # Both pools alike; hide_parameters: errors and logs must never show a digest.
    pool: dict[str, Any] = {"pool_size": 5, "max_overflow": 10, "hide_parameters": True}
    if settings.is_postgres:
        url = settings.url.set(drivername="postgresql+psycopg")
        schema = settings.database_schema or "public"
        return create_engine(
            url.set(host=url.host or "127.0.0.1"),  # TCP, as the event store (EVENTSOURCING-NOTES)
            connect_args={"options": f"-c search_path={schema}", "connect_timeout": 2},
            pool_timeout=2,  # an outage answers 503 within seconds rather than queueing for 30
            pool_pre_ping=True,
            **pool,
        )
    name = sqlite_dbname or settings.url.database or ""
    if name in ("", ":memory:") or "mode=memory" in name:
        # A shared in-memory database locks whole tables without waiting: the store's saves would fail.
        raise InvalidInput(
            "bad setting KEYLEDGER_DATABASE_URL: read models need a SQLite file (sqlite:///FILE) "
            "or PostgreSQL, not an in-memory database"
        )
    engine = create_engine(
        "sqlite+pysqlite://",
        creator=lambda: sqlite3.connect(
            name,
            uri=name.startswith("file:"),
            timeout=SQLITE_LOCK_TIMEOUT,
            check_same_thread=False,
            isolation_level=None,  # we issue BEGIN ourselves (`_sqlite_on_begin`)
        ),
        poolclass=QueuePool,  # the URL names no file, which would otherwise pick a memory-only pool
        **pool,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # No fsync per commit (derived data: a lost commit is re-applied); a 32 MB cache (the 2 MB default
    # made rebuilds ~10% slower); secure_delete=FAST: Debian's build zeroes every freed page (DEVELOPERS.md).
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-32768", "secure_delete=FAST"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _sqlite_on_begin(connection: Connection) -> None:
    # A deferred transaction that reads, then writes fails at once with SQLITE_BUSY when another
    # writer committed in between; IMMEDIATE takes the write lock up front (waiting, or not: kl_wait).
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
def write_transaction(engine: Engine, wait: bool = True) -> Iterator[Connection]:
    """A transaction that will write; without `wait`, `LockTaken` at once while SQLite's write lock is taken."""
    with engine.connect() as conn:
        conn.execution_options(kl_write=True, kl_wait=wait)
        try:
            transaction = conn.begin()
        except OperationalError as error:
            if getattr(error.orig, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:  # extended codes too
                raise LockTaken("SQLite's write lock is taken by another connection") from error
            raise
        with transaction:
            yield conn


class LockTaken(Exception):
    """SQLite's write lock was not had (at once, or within the wait): the store is busy, not broken."""


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction whose statements all see one snapshot (several queries, one answer)."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def refresh_statistics(conn: Connection, table: str, stale: float = 0.1) -> None:
    """ANALYZE a PostgreSQL table never analyzed or changed by more than `stale` since (see DEVELOPERS.md)."""
    query = (
        "SELECT n_live_tup, n_mod_since_analyze, coalesce(last_analyze, last_autoanalyze) IS NULL"
        " FROM pg_stat_user_tables WHERE relid = to_regclass(quote_ident(:table))"
    )
    row = conn.execute(text(query), {"table": table}).first()
    if row is not None and (row[2] or row[1] > stale * max(row[0], 1)):
        conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(table)}")


def stored_sizes(conn: Connection, table: str, after: int, limit: int, topics: Sequence[str] | None) -> list[int]:
    """Stored bytes of the next `limit` events after `after` (of `topics` only): the library's table, no data."""
    position: Any = column("notification_id" if conn.dialect.name == "postgresql" else "rowid")
    events = sql_table(table, position, column("state"), column("topic"))
    query = select(func.length(events.c.state)).where(position > after).order_by(position).limit(limit)
    return list(conn.execute(query.where(events.c.topic.in_(topics)) if topics else query).scalars())


def lock_for_ddl(conn: Connection) -> None:
    """Serialise table creation between processes (PostgreSQL; SQLite writers are serial anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.kl_ddl'))"))
