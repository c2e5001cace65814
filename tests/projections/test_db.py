"""Read-model storage details: SQLite text exactly as SQLAlchemy writes it; no in-memory SQLite; SQLite locks."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Date
from sqlalchemy.dialects import sqlite

from adapters.database import (
    SQLITE_LOCK_TIMEOUT,
    LockTaken,
    create_read_engine,
    read_transaction,
    refresh_statistics,
    write_transaction,
)
from adapters.rows import UTCDateTime, sqlite_date_text, sqlite_utc_text
from domain.errors import InvalidInput
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from tests.backends import POSTGRES_URL, drop_pg_schema, new_pg_schema, postgres_problem, require

DIALECT = sqlite.pysqlite.dialect()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2027, 3, 1, 20, 0, tzinfo=UTC),  # whole seconds: sqlite3's own adapter drops ".000000"
        datetime(2027, 3, 1, 20, 0, 0, 123, tzinfo=UTC),
        datetime(2027, 3, 1, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5))),
        None,
    ],
)
def test_times_are_stored_as_sqlalchemy_stores_them(moment: datetime | None):
    expected = UTCDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)

    assert sqlite_utc_text(moment) == expected(moment)


@pytest.mark.parametrize("day", [date(2027, 3, 1), date(987, 12, 31), datetime(2027, 3, 1, 23, 59, tzinfo=UTC), None])
def test_days_are_stored_as_sqlalchemy_stores_them(day: date | None):
    expected = Date().dialect_impl(DIALECT).bind_processor(DIALECT)

    assert sqlite_date_text(day) == expected(day)


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="naive"):
        sqlite_utc_text(datetime(2027, 3, 1))


def test_an_in_memory_sqlite_store_is_refused_with_the_setting_named():
    settings = Settings(database_url="sqlite://")
    ledger = open_ledger(settings)

    with pytest.raises(InvalidInput, match="KEYLEDGER_DATABASE_URL"):
        ReadModels(settings, ledger)
    ledger.close()


def test_a_write_transaction_without_waiting_does_not_wait_for_sqlites_write_lock(settings: Settings):
    engine = create_read_engine(settings)
    try:
        with write_transaction(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE kl_lock_test (n INTEGER)")
        with write_transaction(engine) as holder:
            holder.exec_driver_sql("INSERT INTO kl_lock_test VALUES (1)")
            started = time.monotonic()
            if settings.is_postgres:  # row locks only: the transaction begins
                with write_transaction(engine, wait=False) as conn:
                    conn.exec_driver_sql("INSERT INTO kl_lock_test VALUES (2)")
            else:
                with pytest.raises(LockTaken), write_transaction(engine, wait=False):
                    pass
            assert time.monotonic() - started < 1
        with write_transaction(engine, wait=False) as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM kl_lock_test").scalar() == (
                2 if settings.is_postgres else 1
            )
            if not settings.is_postgres:  # waiting again for later transactions on this pooled connection
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_LOCK_TIMEOUT * 1000
    finally:
        engine.dispose()


def test_freed_sqlite_pages_are_not_zeroed_one_by_one(tmp_path: Path):
    # Debian's SQLite defaults to secure_delete=ON, which made dropping a retired generation rewrite it.
    engine = create_read_engine(Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}", database_schema=None))
    try:
        with read_transaction(engine) as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 2  # FAST
    finally:
        engine.dispose()


def test_a_postgres_table_without_statistics_is_analyzed_once():
    require("PostgreSQL", postgres_problem())
    schema = new_pg_schema()
    engine = create_read_engine(Settings(database_url=POSTGRES_URL, database_schema=schema))
    analyzed = "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = to_regclass('kl_stats_test')"
    try:
        with write_transaction(engine) as conn:
            # Autovacuum kept off this table: its own ANALYZE would make ours unneeded.
            conn.exec_driver_sql("CREATE TABLE kl_stats_test (n INTEGER) WITH (autovacuum_enabled = false)")
            conn.exec_driver_sql("INSERT INTO kl_stats_test SELECT generate_series(1, 1000)")
        counts = []
        for _ in range(2):
            with write_transaction(engine) as conn:
                refresh_statistics(conn, "kl_stats_test")
            with read_transaction(engine) as conn:
                counts.append(conn.exec_driver_sql(analyzed).scalar())
        assert counts == [1, 1]  # the second call found fresh statistics
    finally:
        engine.dispose()
        drop_pg_schema(schema)
