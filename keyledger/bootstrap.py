"""Opens the event store and the application service from settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg import sql

from adapters.auditchain.postgres import ChainedPostgresRecorder
from adapters.auditchain.sqlite import ChainedSQLiteRecorder
from adapters.auditchain.writer import ENV_STARTUP_CHECK, chain_env
from domain.application import KeyLedger
from keyledger.settings import Settings, StartupError


def event_store_env(settings: Settings) -> dict[str, str]:
    """The `eventsourcing` library's environment for the configured database."""
    url = settings.url
    audit_key = settings.audit_key.get_secret_value() if settings.audit_key else None
    if not settings.is_postgres:
        path = url.database or ""
        if path in ("", ":memory:"):
            # Threads share one in-memory database only through a named, shared cache.
            path = f"file:keyledger-{os.getpid()}-{id(settings)}?mode=memory&cache=shared"
        return {
            # eventsourcing.sqlite, plus the audit chain (adapters/auditchain)
            "PERSISTENCE_MODULE": "adapters.auditchain.sqlite:Factory",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
            **chain_env(audit_key),
        }
    env = {
        "PERSISTENCE_MODULE": "adapters.auditchain.postgres:Factory",
        "POSTGRES_DBNAME": url.database or "postgres",
        # TCP, not the unix socket: large saves can hang over the socket (EVENTSOURCING-NOTES).
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "10",
        # Also how long a call waits for a pooled connection: an outage must answer 503 within 5 s.
        "POSTGRES_CONNECT_TIMEOUT": "2",
        "POSTGRES_PRE_PING": "y",  # after an outage, pooled connections are checked, not failed on
        **chain_env(audit_key),
    }
    if settings.database_schema:
        env["POSTGRES_SCHEMA"] = settings.database_schema
    return env


# Any constant works: it only has to be the same in every keyledger process.
_SETUP_LOCK = 0x6B6C5F7365747570  # "kl_setup"


@contextmanager
def _setup_lock(settings: Settings) -> Iterator[None]:
    """Serialise start-up DDL between processes on one PostgreSQL.

    The library creates its tables and runs `CREATE OR REPLACE FUNCTION` on every start;
    two processes doing that at once fail with "tuple concurrently updated".
    """
    if not settings.is_postgres:
        yield
        return
    url = settings.url
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=url.database or "postgres",
        connect_timeout=5,
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            if settings.database_schema:
                schema = sql.Identifier(settings.database_schema)
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def open_ledger(
    settings: Settings,
    extra_env: dict[str, str] | None = None,
    tree_progress: Callable[[int, int], None] | None = None,
) -> KeyLedger:
    """The application over the configured store.

    A process that writes first gives a store written by older code its Merkle tree (the audit log);
    `tree_progress(position, last position)` follows that work. Audit tools, which only read, skip it.
    """
    env = {**event_store_env(settings), **(extra_env or {})}
    try:
        with _setup_lock(settings):
            ledger = KeyLedger(env=env, catalog=settings.catalog)
        if env.get(f"KEYLEDGER_{ENV_STARTUP_CHECK}", "y") != "n":
            build_tree(ledger, tree_progress)
        return ledger
    except (psycopg.OperationalError, OSError, PersistenceError) as error:
        # The library wraps driver errors in its own PersistenceError family.
        where = settings.url.render_as_string(hide_password=True)
        reason = str(error).strip()[:200]
        raise StartupError(f"KEYLEDGER_DATABASE_URL: cannot open {where}: {reason}") from None


def build_tree(ledger: KeyLedger, progress: Callable[[int, int], None] | None = None) -> None:
    """Give a store written before the tree existed its tree, built from the events it holds."""
    recorder = ledger.recorder
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        return
    last = recorder.max_notification_id() or 0
    if not last or recorder.tree_head() is not None:
        return
    if progress is None:
        recorder.build_tree()
        return
    progress(0, last)
    recorder.build_tree(lambda position: progress(position, last))
