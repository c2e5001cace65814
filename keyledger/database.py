"""SQLAlchemy engines for the configured database (read models and operator state)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

from keyledger.settings import Settings


def sqlalchemy_url(settings: Settings) -> URL:
    """`postgresql://` works as written: it is driven by psycopg 3."""
    url = settings.url
    if settings.is_postgres:
        return url.set(drivername="postgresql+psycopg")
    return url


def create_db_engine(settings: Settings) -> Engine:
    url = sqlalchemy_url(settings)
    if settings.is_postgres:
        options = {}
        if settings.database_schema:
            options["options"] = f"-csearch_path={settings.database_schema}"
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=options)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
