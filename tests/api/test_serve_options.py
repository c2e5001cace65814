"""`keyledger serve` options (SPEC 8.5): worker processes, access log, log format, trusted gateways."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from keyledger.settings import Settings
from tests.api.server import KEYLEDGER, Server, create_workspace
from tests.backends import (
    POSTGRES_URL,
    REDIS_URL,
    drop_pg_schema,
    new_pg_schema,
    postgres_problem,
    redis_problem,
    require,
)


def test_more_workers_without_redis_stop_start_up_naming_the_setting(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env["KEYLEDGER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'k.db'}"

    result = subprocess.run(
        [KEYLEDGER, "serve", "--workers", "2"], capture_output=True, text=True, env=env, timeout=60, check=False
    )

    assert result.returncode == 2
    assert "KEYLEDGER_REDIS_URL" in result.stderr


@pytest.mark.slow
def test_two_workers_on_postgres_and_redis_serve_one_service(tmp_path: Path):
    require("PostgreSQL", postgres_problem())
    require("Redis", redis_problem())
    schema = new_pg_schema()
    server = Server(
        Settings(database_url=POSTGRES_URL, database_schema=schema),
        tmp_path / "server.log",
        REDIS_URL,
        args=["--workers", "2", "--log-format", "json", "--no-access-log"],
    )
    try:
        server.start(timeout=60)
        created = create_workspace(server)
        secret = created["admin_key"]["secret"]
        answers = []
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            with server.client() as client:
                answers.append(client.post("/v1/verify", json={"key": secret, "scope": "admin"}).json()["code"])
        with server.client() as client:  # one kept-alive connection, as a service or gateway holds
            latencies = []
            for _ in range(30):
                started = time.perf_counter()
                client.post("/v1/verify", json={"key": secret, "scope": "admin"})
                latencies.append(time.perf_counter() - started)
    finally:
        server.stop()
        drop_pg_schema(schema)

    assert answers == ["VALID"] * 20
    # Without TCP_NODELAY on the workers' shared socket every answer waited for the client's delayed ACK:
    # 40 ms or more each (the same requests to one worker take 1-2 ms here).
    assert statistics.median(latencies) < 0.035, f"median {statistics.median(latencies) * 1000:.1f} ms"
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert sum("Started server process" in r["message"] for r in records) >= 2  # two workers
    assert not any(r["logger"] == "uvicorn.access" for r in records)


def test_text_logs_with_the_access_log_by_default_written_while_it_runs(tmp_path: Path):
    line = '"POST /v1/workspaces HTTP/1.1" 201'
    server = Server(Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}"), tmp_path / "server.log").start()
    try:
        create_workspace(server)
        deadline = time.monotonic() + 3  # lines are written in batches, at most 0.1 s after (keyledger.logs)
        while line not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        written_while_running = line in server.log()
    finally:
        server.stop()

    assert written_while_running
    assert line in server.log()


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("args", "loaded", "absent"),
    [([], ["httptools", "uvloop"], []), (["--http", "h11", "--loop", "asyncio"], [], ["httptools", "uvloop"])],
    ids=["auto", "pure-python"],
)
def test_http_parser_and_event_loop_are_the_ones_chosen(
    tmp_path: Path, args: list[str], loaded: list[str], absent: list[str]
):
    if not Path("/proc/self/maps").exists():
        pytest.skip("reads the server's loaded libraries from /proc (Linux)")
    server = Server(Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}"), tmp_path / "server.log", args=args)
    server.start()
    try:
        create_workspace(server)  # answered: the chosen parser and loop serve
        assert server.process is not None
        libraries = _mapped_libraries(server.process.pid)
    finally:
        server.stop()

    assert all(f"/{name}/" in libraries for name in loaded), loaded
    assert not any(f"/{name}/" in libraries for name in absent), absent
