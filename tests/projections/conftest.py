from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.database import read_transaction
from domain.application import KeyLedger
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from projections.runner import select_generations
from tests.backends import POSTGRES_URL, drop_pg_schema, new_pg_schema, postgres_problem, require


@pytest.fixture
def models(settings: Settings, ledger: KeyLedger) -> Iterator[ReadModels]:
    read_models = ReadModels(settings, ledger)
    try:
        yield read_models
    finally:
        read_models.close()


def dump(models: ReadModels) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every active read-model table, in key order, by `<projection>.<table>`."""
    result = {}
    with read_transaction(models.engine) as conn:
        active = {g.name: g.generation for g in select_generations(conn, models.names, active=True)}
        for name, projection in models.projections.items():
            tables = projection.tables(active[name])
            for short, table in tables.items():
                query = select(table).order_by(*table.primary_key.columns)
                result[f"{name}.{short}"] = [tuple(row) for row in conn.execute(query)]
    return result


def all_events(ledger: KeyLedger) -> list[tuple[int, Any]]:
    notifications = ledger.recorder.select_notifications(start=0, limit=1_000_000, inclusive_of_start=False)
    return [(n.id, ledger.mapper.to_domain_event(n)) for n in notifications]


@contextmanager
def opened(backend: str, directory: Path) -> Iterator[tuple[Settings, KeyLedger, ReadModels]]:
    """A fresh store on `backend`, its ledger and read models (for module-scoped fixtures)."""
    schema = None
    if backend == "sqlite":
        settings = Settings(database_url=f"sqlite:///{directory / 'keyledger.db'}", database_schema=None)
    else:
        require("PostgreSQL", postgres_problem())
        schema = new_pg_schema()
        settings = Settings(database_url=POSTGRES_URL, database_schema=schema)
    ledger = open_ledger(settings)
    read_models = ReadModels(settings, ledger)
    try:
        yield settings, ledger, read_models
    finally:
        read_models.close()
        ledger.close()
        if schema is not None:
            drop_pg_schema(schema)
