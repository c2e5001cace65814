from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from domain.application import KeyLedger
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests.backends import POSTGRES_URL, drop_pg_schema, new_pg_schema, postgres_problem, require


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a fresh, empty store on each backend: a SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield Settings(database_url=f"sqlite:///{tmp_path / 'keyledger.db'}", database_schema=None)
        return
    require("PostgreSQL", postgres_problem())
    schema = new_pg_schema()
    try:
        # The signing key's default with PostgreSQL is the working directory: keep it in the test's folder.
        key = SecretStr(str(tmp_path / "audit-signing.key"))
        yield Settings(database_url=POSTGRES_URL, database_schema=schema, audit_signing_key=key)
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[KeyLedger]:
    app = open_ledger(settings)
    try:
        yield app
    finally:
        app.close()
