"""Benchmark of key verification: in process, and over HTTP against a bare FastAPI baseline.

Prints, in one run: the load average; in-process decisions per second; `/v1/verify`
requests per second and p50/p99 latency under wrk for keyledger (SQLite, in-process
counters), an imported key, a bare FastAPI endpoint and a raw ASGI app with the same
request and response shapes served the same way (uvicorn, one process, access log on),
keyledger with KEYLEDGER_REDIS_URL set with one and with two workers, the raw app plus the one Redis round
trip a decision makes (`bench_raw_redis`: the ceiling of the Redis lines); and the ratios.
Runs alternate and medians are quoted, since these machines are noisy.

    scripts/bench_verify [--seconds 8] [--rounds 3] [--connections 32] [--redis-url URL]
                         [--http auto|h11|httptools] [--loop auto|asyncio|uvloop] [--stub-logs uvicorn|keyledger]

The stubs log with uvicorn's own configuration (a write to stderr per line) unless `--stub-logs keyledger`:
then as `keyledger serve` does (lines written in batches), which takes that difference out of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx

from domain.imports import import_digest
from keyledger.bootstrap import open_ledger
from keyledger.logs import log_config
from keyledger.services import build_verification
from keyledger.settings import Settings

BIN = Path(sys.executable).parent
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
"""


@dataclass
class HttpResult:
    rps: float
    p50_ms: float
    p99_ms: float


def _millis(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, body: str, seconds: int, connections: int, folder: Path) -> HttpResult:
    script = folder / "post.lua"
    script.write_text(WRK_SCRIPT % body)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _millis(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _millis(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    if re.search(r"Non-2xx", out):
        raise RuntimeError(f"wrk saw non-2xx answers:\n{out}")
    return HttpResult(rps, p50, p99)


def start(command: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/verify", json={"key": "x", "scope": "read:nodes"}, timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server on port {port} did not start: {log.read_text()[-1000:]}")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _server_parts(http: str, loop: str) -> str:
    """The parser and loop every server runs (`auto`: the C ones when installed, as uvicorn picks)."""
    if http == "auto":
        http = "httptools" if _version("httptools") else "h11"
    if loop == "auto":
        loop = "uvloop" if _version("uvloop") else "asyncio"
    return f"{http} {_version(http)}, {loop} {_version(loop) or ''}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--inprocess-rounds", type=int, default=15, help="in-process rounds of 20,000 decisions")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("KEYLEDGER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="Redis for the lines with KEYLEDGER_REDIS_URL set ('' to leave them out)",
    )
    parser.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto", help="every server's parser")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="every server's loop")
    parser.add_argument(
        "--stub-logs",
        choices=["uvicorn", "keyledger"],
        default="uvicorn",
        help="the stubs' logging: uvicorn's own (a write per line) or keyledger serve's (lines written in batches)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_verify needs wrk (Debian package 'wrk'): apt-get install -y wrk")

    folder = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    settings = Settings(database_url=f"sqlite:///{folder / 'keyledger.db'}", redis_url=None)
    ledger = open_ledger(settings)
    created = ledger.create_workspace("bench", "enterprise", requests_per_minute=10**9, requests_per_day=10**9)
    secret = ledger.issue_key(created.workspace.id, "bench", ["read:nodes"]).secret
    # An imported key (SPEC 8.1): found through its secret's digest instead of the id in a keyledger secret.
    imported = "sk_bench_imported-0123456789abcdef0123456789"
    ledger.import_key(created.workspace.id, "bench-imported", ["read:nodes"], import_digest(imported))

    # In process: the full decision (cache, rules, quota, usage buffer, metrics), no HTTP; alternating rounds.
    stack = build_verification(settings, ledger)
    in_process: dict[str, list[float]] = {"native": [], "imported": []}
    stack.usage.start()  # as in a server: the flusher takes the buffered answers
    presented = {"native": secret, "imported": imported}
    for name in presented:
        assert stack.verification.verify(presented[name], "read:nodes", "GET /nodes").allowed, name
    for _ in range(args.inprocess_rounds):  # short alternating rounds: the best one shows the machine's own speed
        for name, key in presented.items():
            n, started = 20_000, time.perf_counter()
            for _ in range(n):
                stack.verification.verify(key, "read:nodes", "GET /nodes")
            in_process[name].append(n / (time.perf_counter() - started))
    stack.usage.stop()
    ledger.close()

    body = json.dumps({"key": secret, "scope": "read:nodes", "endpoint": "GET /nodes"})
    imported_body = json.dumps({"key": imported, "scope": "read:nodes", "endpoint": "GET /nodes"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env |= {"KEYLEDGER_DATABASE_URL": settings.database_url, "KEYLEDGER_OPERATOR_TOKEN": "klop_bench"}
    redis_env = env | {"KEYLEDGER_REDIS_URL": args.redis_url}
    parts = ["--http", args.http, "--loop", args.loop]
    keyledger = [str(BIN / "keyledger"), "serve", *parts]
    uvicorn = [str(BIN / "python"), "-m", "uvicorn", "--log-level", "info", *parts]
    if args.stub_logs == "keyledger":  # the stubs log as `keyledger serve` does
        (folder / "logs.json").write_text(json.dumps(log_config("text")))
        uvicorn += ["--log-config", str(folder / "logs.json")]
    # name: (command, port, environment, body); every server logs each request (uvicorn's access log).
    servers: dict[str, tuple[list[str], int, dict[str, str], str]] = {
        "keyledger": ([*keyledger, "--port", "18431"], 18431, env, body),
        "imported": ([*keyledger, "--port", "18431"], 18431, env, imported_body),  # the same server
        "bare": ([*uvicorn, "scripts.bench_bare:app", "--port", "18432"], 18432, env, body),
        "raw ASGI": ([*uvicorn, "scripts.bench_raw:app", "--port", "18433"], 18433, env, body),
    }
    if args.redis_url:
        servers["redis w1"] = ([*keyledger, "--port", "18434"], 18434, redis_env, body)
        servers["redis w2"] = ([*keyledger, "--port", "18435", "--workers", "2"], 18435, redis_env, body)
        # The raw stub plus the Redis round trip of a decision: the ceiling of any line making one per decision.
        servers["raw+Redis"] = ([*uvicorn, "scripts.bench_raw_redis:app", "--port", "18436"], 18436, redis_env, body)
    results: dict[str, list[HttpResult]] = {name: [] for name in servers}
    processes: list[subprocess.Popen[bytes]] = []
    load_before = os.getloadavg()
    try:
        running: set[int] = set()
        for cmd, port, server_env, _ in servers.values():
            if port not in running:
                processes.append(start(cmd, server_env, port, folder / f"{port}.log"))
                running.add(port)
        for _name, (_, port, _, request) in servers.items():  # warm up each
            run_wrk(f"http://127.0.0.1:{port}/v1/verify", request, 2, args.connections, folder)
        for _ in range(args.rounds):  # alternating: each server once per round
            for name, (_, port, _, request) in servers.items():
                url = f"http://127.0.0.1:{port}/v1/verify"
                results[name].append(run_wrk(url, request, args.seconds, args.connections, folder))
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
    load_after = os.getloadavg()

    def median(name: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in results[name]))

    native, by_digest = statistics.median(in_process["native"]), statistics.median(in_process["imported"])
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}"
    )
    print(
        f"every server: uvicorn {_version('uvicorn')} ({_server_parts(args.http, args.loop)}), access log on;"
        f" the stubs log as {args.stub_logs} does"
    )
    print(
        f"in-process decisions/s (median of {args.inprocess_rounds}): {native:,.0f}  (target >= 100,000);"
        f" best round {max(in_process['native']):,.0f} ({1e6 / max(in_process['native']):.1f} us a decision)"
    )
    print(f"  imported key (digest lookup): {by_digest:,.0f}  ratio imported / native {by_digest / native:.2f}")
    print(f"HTTP POST /v1/verify, wrk -t1 -c{args.connections}, {args.seconds}s x {args.rounds} alternating rounds:")
    for name in results:
        print(
            f"  {name:9s}  {median(name, 'rps'):8,.0f} req/s   p50 {median(name, 'p50_ms'):6.2f} ms"
            f"   p99 {median(name, 'p99_ms'):6.2f} ms   (rounds: {', '.join(f'{r.rps:,.0f}' for r in results[name])})"
        )
    for name in [n for n in ("keyledger", "redis w1") if n in results]:
        rps = median(name, "rps")
        print(
            f"ratio {name} / bare FastAPI: {rps / median('bare', 'rps'):.2f} (target >= 1.5);"
            f" / raw ASGI: {rps / median('raw ASGI', 'rps'):.2f} (target >= 0.8)"
        )
    if "raw+Redis" in results:
        ceiling = median("raw+Redis", "rps") / median("raw ASGI", "rps")
        print(
            f"ratio raw+Redis / raw ASGI: {ceiling:.2f} (the most a line with one Redis round trip per decision can"
            f" reach here); redis w1 / raw+Redis: {median('redis w1', 'rps') / median('raw+Redis', 'rps'):.2f}"
        )
    if "redis w2" in results:
        print(
            f"ratio --workers 2 / --workers 1, with Redis: {median('redis w2', 'rps') / median('redis w1', 'rps'):.2f}"
        )
    imported_ratio = median("imported", "rps") / median("keyledger", "rps")
    print(f"ratio imported / native key on keyledger (median req/s): {imported_ratio:.2f}  (target >= 0.90)")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
