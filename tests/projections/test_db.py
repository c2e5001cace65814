"""Read-model storage details: SQLite text exactly as SQLAlchemy writes it; no in-memory SQLite."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from sqlalchemy import Date, Uuid
from sqlalchemy.dialects import sqlite

from domain.errors import InvalidInput
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from projections.db import UTCDateTime, _sqlite_date_text, _sqlite_utc_text, _uuid_hex

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

    assert _sqlite_utc_text(moment) == expected(moment)


def test_uuids_are_stored_as_sqlalchemy_stores_them():
    value = uuid4()
    expected = Uuid().dialect_impl(DIALECT).bind_processor(DIALECT)

    assert _uuid_hex(value) == expected(value) and _uuid_hex(None) is None


@pytest.mark.parametrize("day", [date(2027, 3, 1), date(987, 12, 31), datetime(2027, 3, 1, 23, 59, tzinfo=UTC), None])
def test_days_are_stored_as_sqlalchemy_stores_them(day: date | None):
    expected = Date().dialect_impl(DIALECT).bind_processor(DIALECT)

    assert _sqlite_date_text(day) == expected(day)


def test_a_naive_time_is_refused():
    with pytest.raises(ValueError, match="naive"):
        _sqlite_utc_text(datetime(2027, 3, 1))


def test_an_in_memory_sqlite_store_is_refused_with_the_setting_named():
    settings = Settings(database_url="sqlite://")
    ledger = open_ledger(settings)

    with pytest.raises(InvalidInput, match="KEYLEDGER_DATABASE_URL"):
        ReadModels(settings, ledger)
    ledger.close()
