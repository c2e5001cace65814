"""Benchmark of `GET /v1/workspaces/{ws}/insights` (SPEC 8.2) on a generated workspace, SQLite and PostgreSQL.

A workspace of --keys keys (default 50, the most a workspace holds) with --days days (default 90)
of per-minute usage: every key answered every minute (a few needed scopes, some refused, a few
client addresses). The usage rows are written through the usage read model's own `write` (one UTC
day at a time) rather than replayed from events, which would take far longer to generate than to
measure; the keys, grants and the other read models come from real commands.

Then the median of --repeat (default 20) calls of the endpoint over HTTP (the API in process,
FastAPI's TestClient), window 90 days; target: under 200 ms. A baseline in the same run:
`GET /v1/workspaces/{ws}` (one read of the workspace), alternating with it.

    scripts/bench_insights [--keys 50] [--days 90] [--repeat 20] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import psycopg
from fastapi.testclient import TestClient
from psycopg import sql
from pydantic import SecretStr

from adapters.database import write_transaction
from api.app import create_app
from keyledger.services import build_services
from keyledger.settings import Settings
from projections.runner import select_generations
from projections.usage import UsageProjection, UsageSums

POSTGRES_URL = os.environ.get("KEYLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TOKEN = "bench-operator-token"
NEEDED = [["read:nodes"], ["read:nodes", "write:edges"], ["read:edges"], ["read:nodes", "read:events"]]
GRANTED = [["write:nodes", "read:edges"], ["write:nodes", "write:edges"], ["admin"], ["read:nodes", "read:events"]]


@contextmanager
def store(backend: str) -> Iterator[Settings]:
    token = SecretStr(TOKEN)
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield Settings(database_url=f"sqlite:///{Path(directory) / 'bench.db'}", operator_token=token)
        return
    schema = f"bench_{uuid4().hex[:12]}"
    try:
        with tempfile.TemporaryDirectory() as directory:  # the audit signing key's file, kept out of the tree
            key = SecretStr(str(Path(directory) / "audit-signing.key"))
            yield Settings(
                database_url=POSTGRES_URL, database_schema=schema, operator_token=token, audit_signing_key=key
            )
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def generate(services: object, ws: str, key_ids: list[str], days: int, now: datetime) -> int:
    """Per-minute usage of every key over `days` UTC days before `now`, written day by day; answers written."""
    models = services.read_models  # type: ignore[attr-defined]
    projection = models.projections["usage"]
    assert isinstance(projection, UsageProjection)
    with write_transaction(models.engine) as conn:
        [active] = select_generations(conn, ["usage"], active=True)
        tables = projection.tables(active.generation)
    first = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    answers = 0
    for d in range(days + 1):
        day_start = first + timedelta(days=d)
        day = day_start.date()
        minutes = [day_start + timedelta(minutes=m) for m in range(1440)]
        minutes = [m for m in minutes if m < now]
        if not minutes:
            break
        n, last, sums = len(minutes), minutes[-1], UsageSums()
        for k, key in enumerate(key_ids):
            sums.workspace_of[key] = ws
            needed = NEEDED[k % len(NEEDED)]
            for moment in minutes:
                sums.minutes[key, moment.isoformat()] = [3, 2, 1, 0, 0]  # 3 answers a minute: two 2xx, one 403
            sums.endpoints[key, day, f"GET /{needed[0].split(':')[1]}"] = [2 * n, 2 * n]
            sums.endpoints[key, day, "POST /livedata"] = [n, 0]
            for scope in needed:
                sums.scopes[key, day, scope] = [2 * n // len(needed), 0, last, None]
            sums.scopes[key, day, "write:livedata"] = [0, n, None, last]
            for a in range(4):
                sums.addresses[key, day, f"10.{k}.0.{a}"] = [3 * n // 4, n // 2, day_start, last]
            answers += 3 * n
        with write_transaction(models.engine) as conn:
            projection.write(conn, tables, sums)
    return answers


def bench(backend: str, keys: int, days: int, repeat: int) -> None:
    with store(backend) as settings:
        services = build_services(settings)
        with TestClient(create_app(services)) as client:
            operator = {"Authorization": f"Bearer {TOKEN}"}
            created = client.post("/v1/workspaces", json={"name": "bench", "plan": "pro"}, headers=operator).json()
            ws, admin = created["workspace"]["id"], {"Authorization": f"Bearer {created['admin_key']['secret']}"}
            key_ids = [created["admin_key"]["key"]["id"]]
            for i in range(keys - 1):
                body = {"name": f"svc-{i}", "scopes": GRANTED[i % len(GRANTED)]}
                key_ids.append(client.post(f"/v1/workspaces/{ws}/keys", json=body, headers=admin).json()["key"]["id"])
            services.read_models.catch_up()
            started = time.perf_counter()
            answers = generate(services, ws, key_ids, days, datetime.now(UTC))
            generated = time.perf_counter() - started

            def timed(path: str) -> float:
                begun = time.perf_counter()
                response = client.get(path, headers=admin)
                elapsed = time.perf_counter() - begun
                assert response.status_code == 200, response.text
                return elapsed

            insights_path, baseline_path = f"/v1/workspaces/{ws}/insights?days=90", f"/v1/workspaces/{ws}"
            findings = client.get(insights_path, headers=admin).json()["findings"]
            timed(insights_path), timed(baseline_path)  # warm both
            insights, baseline = [], []
            for _ in range(repeat):  # alternating rounds
                insights.append(timed(insights_path))
                baseline.append(timed(baseline_path))
        median, base = statistics.median(insights), statistics.median(baseline)
        print(
            f"{backend:<8} {keys} keys x {days} days per-minute usage ({answers:,} answers, generated in "
            f"{generated:.0f} s): insights median {median * 1000:.1f} ms of {repeat} (min {min(insights) * 1000:.1f}, "
            f"max {max(insights) * 1000:.1f}), {len(findings)} findings; GET workspace {base * 1000:.1f} ms "
            f"(ratio {median / base:.1f}x); target < 200 ms: {'ok' if median < 0.2 else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    for backend in ("sqlite", "postgres") if args.backend == "both" else (args.backend,):
        bench(backend, args.keys, args.days, args.repeat)


if __name__ == "__main__":
    main()
