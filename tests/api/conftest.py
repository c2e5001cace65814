from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keyledger.settings import Settings
from tests.api.server import Server
from tests.backends import (
    POSTGRES_URL,
    REDIS_URL,
    drop_pg_schema,
    new_pg_schema,
    postgres_problem,
    redis_problem,
    require,
)

# A catalog larger than the default, so that eleven distinct scopes can be asked for.
RESOURCES = "nodes,edges,livedata,events,datasets"


@dataclass
class Backend:
    name: str
    settings: Settings
    redis_url: str | None


@pytest.fixture(scope="module", params=["sqlite+memory", "postgres+redis"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One store per test module and backend: SQLite with in-process counters, or PostgreSQL with Redis."""
    if request.param == "sqlite+memory":
        folder = tmp_path_factory.mktemp("sqlite")
        yield Backend(request.param, Settings(database_url=f"sqlite:///{folder / 'keyledger.db'}"), None)
        return
    require("PostgreSQL", postgres_problem())
    require("Redis", redis_problem())
    schema = new_pg_schema()
    try:
        yield Backend(request.param, Settings(database_url=POSTGRES_URL, database_schema=schema), REDIS_URL)
    finally:
        drop_pg_schema(schema)


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("server")
    running = Server(
        backend.settings, folder / "server.log", backend.redis_url, {"KEYLEDGER_RESOURCES": RESOURCES}
    ).start()
    try:
        yield running
    finally:
        running.stop()
