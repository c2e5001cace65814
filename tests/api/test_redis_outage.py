"""A Redis outage degrades, it does not fail: answers go on with per-process counters, a revocation is
honoured by another process within 1 s through its stream follower, `/readyz` says degraded, shared
counters resume by themselves; with KEYLEDGER_REDIS_OUTAGE=closed the answers are 503 instead
(PostgreSQL, a Redis the test starts and shuts down itself)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from keyledger.settings import Settings
from tests.api.server import Server, create_workspace, free_port
from tests.backends import POSTGRES_URL, drop_pg_schema, new_pg_schema, postgres_problem, require

pytestmark = pytest.mark.slow


class OwnRedis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require("redis-server", "not installed")
            return
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def store() -> Iterator[Settings]:
    require("PostgreSQL", postgres_problem())
    schema = new_pg_schema()
    try:
        yield Settings(database_url=POSTGRES_URL, database_schema=schema)
    finally:
        drop_pg_schema(schema)


def verify(client: httpx.Client, secret: str, scope: str = "admin") -> httpx.Response:
    return client.post("/v1/verify", json={"key": secret, "scope": scope})


def test_a_redis_outage_degrades_and_heals(store: Settings, tmp_path: Path):
    own = OwnRedis(tmp_path)
    own.start()
    a = Server(store, tmp_path / "a.log", own.url).start()
    b = Server(store, tmp_path / "b.log", own.url).start()
    closed = Server(store, tmp_path / "closed.log", own.url, {"KEYLEDGER_REDIS_OUTAGE": "closed"}).start()
    try:
        created = create_workspace(a)
        ws, admin = created["workspace"]["id"], created["admin_key"]["secret"]
        with a.client(admin) as ca, b.client() as cb, closed.client() as cc:
            doomed = ca.post(f"/v1/workspaces/{ws}/keys", json={"name": "doomed", "scopes": ["read:nodes"]}).json()
            for client in (ca, cb, cc):  # every process has both keys cached
                assert verify(client, doomed["secret"], "read:nodes").json()["code"] == "VALID"
                assert verify(client, admin).json()["code"] == "VALID"
            own.stop()

            started = time.monotonic()
            during = [verify(cb, admin) for _ in range(3)]
            took = time.monotonic() - started
            revoked = ca.post(f"/v1/workspaces/{ws}/keys/{doomed['key']['id']}/revoke")
            revoked_at = time.monotonic()
            while verify(cb, doomed["secret"], "read:nodes").json()["code"] != "REVOKED":
                assert time.monotonic() - revoked_at < 1.0, "process B still honours the revoked key"
                time.sleep(0.05)
            honoured_in = time.monotonic() - revoked_at
            ready = cb.get("/readyz").json()
            metrics = cb.get("/metrics").text
            refused = verify(cc, admin)

            own.start()  # same port: the shared counters resume
            deadline = time.monotonic() + 10
            while cb.get("/readyz").json()["status"] != "ok":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            after = verify(cb, admin)
    finally:
        for server in (a, b, closed):
            server.stop()
        own.stop()

    assert [r.json()["code"] for r in during] == ["VALID"] * 3 and took < 3.0
    assert revoked.status_code == 200
    assert honoured_in < 1.0
    assert ready["status"] == "degraded" and ready["checks"]["redis"]["status"] == "unreachable"
    assert "keyledger_redis_unreachable_calls_total" in metrics
    assert refused.status_code == 503 and refused.headers["content-type"].startswith("application/problem+json")
    assert after.json()["code"] == "VALID"
