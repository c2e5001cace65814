"""A database outage fails fast and heals: cached keys keep being answered, everything else gets 503
with Retry-After within 5 s (never a hang, never a 500), `/healthz` answers at once, `/readyz` says
degraded, and service resumes by itself when the database returns (PostgreSQL, a database of the test's own)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest
from psycopg import sql

from keyledger.settings import Settings
from tests.api.server import OPERATOR_TOKEN, Server, create_workspace
from tests.backends import POSTGRES_URL, postgres_problem, require

pytestmark = pytest.mark.slow


def admin_sql(statement: sql.Composable) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def cut_off(database: str, allow: bool) -> None:
    """ALLOW_CONNECTIONS false and every session of the database ended: as if the server went away."""
    name = sql.Identifier(database)
    admin_sql(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(name, sql.SQL("true" if allow else "false")))
    if not allow:
        admin_sql(
            sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}").format(
                sql.Literal(database)
            )
        )


@pytest.fixture
def database() -> Iterator[str]:
    require("PostgreSQL", postgres_problem())
    name = f"kl_outage_{uuid4().hex[:12]}"
    admin_sql(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        cut_off(name, allow=True)
        admin_sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_a_database_outage_fails_fast_keeps_cached_keys_and_heals(database: str, tmp_path):
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}"
    server = Server(Settings(database_url=url), tmp_path / "server.log").start()
    try:
        created = create_workspace(server)
        ws, secret = created["workspace"]["id"], created["admin_key"]["secret"]
        with server.client(secret) as client:
            assert client.post("/v1/verify", json={"key": secret, "scope": "admin"}).json()["code"] == "VALID"
            changed = client.post(f"/v1/workspaces/{ws}/keys", json={"name": "c", "scopes": ["read:nodes"]}).json()
            client.post(f"/v1/workspaces/{ws}/keys/{changed['key']['id']}/scopes", json={"scopes": ["read:edges"]})
            cut_off(database, allow=False)
            # Changed by this process just before: reloaded by the command itself, answered without the store.
            fresh = client.post("/v1/verify", json={"key": changed["secret"], "scope": "read:edges"})

            cached, cached_took = timed(lambda: client.post("/v1/verify", json={"key": secret, "scope": "admin"}))
            issued, issued_took = timed(
                lambda: client.post(f"/v1/workspaces/{ws}/keys", json={"name": "x", "scopes": []})
            )
            listed, listed_took = timed(lambda: client.get(f"/v1/workspaces/{ws}/keys"))
            health, health_took = timed(lambda: client.get("/healthz"))
            ready = client.get("/readyz")

            cut_off(database, allow=True)
            deadline = time.monotonic() + 20
            while True:
                healed, healed_took = timed(
                    lambda: client.post(f"/v1/workspaces/{ws}/keys", json={"name": "y", "scopes": []})
                )
                if healed.status_code == 201 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            ready_after = client.get("/readyz")
        with server.client(OPERATOR_TOKEN) as operator:
            plan = operator.put(f"/v1/workspaces/{ws}/plan", json={"plan": "pro"})
    finally:
        server.stop()

    assert cached.json()["code"] == "VALID" and cached_took < 1.0
    assert fresh.status_code == 200 and fresh.json()["code"] == "VALID"
    for response, took in ((issued, issued_took), (listed, listed_took)):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["Retry-After"]) > 0
        assert took < 5.0
    assert health.status_code == 200 and health_took < 0.5
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"]["status"] == "unreachable"
    # The pool reconnects with its own back-off: the first command after recovery took 1-5.4 s here (under load).
    assert healed.status_code == 201 and healed_took < 8.0
    assert ready_after.json()["checks"]["database"]["status"] == "ok"
    assert plan.status_code == 200
    assert 'HTTP/1.1" 500' not in server.log()  # no answer was a 500
