"""Benchmarks of the audit log: `state_at` of a key with 10,000 events, and what auditing costs a command.

`state_at`:

Builds the key on a fresh SQLite file and a fresh PostgreSQL schema (grants and
revokes alternating, saved in chunks, audit chain on), then times `state_at` at
random moments of its life, in-process. Target: median under 50 ms.

`commands`: the latency of issuing and of revoking a key (in-process, median of
--commands each, HMAC chain off) on two fresh stores side by side, one with and
one without the Merkle tree's writes (leaf hashing and its statements left out),
commands alternating between them; --rounds such runs: what the tree adds to a
command (target: at most 10 %).

`proofs`: on a store of --store-events events (default 1,000,000), the median
time of an inclusion proof at a random position (in-process, target < 5 ms),
then `keyledger audit export --proofs` of the whole store: events/s and the
export process's peak RSS (targets >= 20,000 events/s, < 200 MB).

    scripts/bench_audit [--only state_at|commands|proofs] [--events 10000] [--samples 200] [--commands 1000]
                        [--rounds 3] [--store-events 1000000] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
from psycopg import sql
from pydantic import SecretStr

from adapters.auditchain import tree
from domain.application import KeyLedger
from domain.history import replay, state_at
from keyledger.audit import open_audit_log
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings

POSTGRES_URL = os.environ.get("KEYLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AUDIT_KEY = SecretStr("bench-audit-key-" + "0" * 32)
CHUNK = 500  # events per save: large PostgreSQL saves can hang (EVENTSOURCING-NOTES)


@contextmanager
def store(backend: str) -> Iterator[Settings]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield Settings(database_url=f"sqlite:///{Path(directory) / 'bench.db'}", audit_key=AUDIT_KEY)
        return
    schema = f"bench_{uuid4().hex[:12]}"
    try:
        yield Settings(database_url=POSTGRES_URL, database_schema=schema, audit_key=AUDIT_KEY)
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def build_key(ledger: KeyLedger, events: int, read_back: bool = True) -> tuple[object, list[datetime]]:
    ws = ledger.create_workspace("bench", "pro").workspace.id
    key = ledger.issue_key(ws, "busy", ["read:nodes"]).key
    for i in range(events - 1):
        if i % 2 == 0:
            key.grant(["write:edges"], "operator")
        else:
            key.revoke_scopes(["write:edges"], "operator")
        if (i + 1) % CHUNK == 0:
            ledger.save(key)
    ledger.save(key)
    if not read_back:  # the proofs benchmark needs no times: reading a million events back costs minutes
        return key.id, []
    times = [e.timestamp for e in ledger.events.get(key.id)]  # type: ignore[attr-defined]
    return key.id, times


def _load() -> str:
    """The 1-minute load average: the machine is shared, so every figure says how busy it was."""
    return f"load {os.getloadavg()[0]:.1f}"


def bench(backend: str, events: int, samples: int) -> None:
    with store(backend) as settings:
        ledger = open_ledger(settings)
        try:
            started = time.perf_counter()
            key_id, times = build_key(ledger, events)
            built = time.perf_counter() - started
            ledger.repository.cache = None
            rng = random.Random(1)
            durations = []
            for _ in range(samples):
                at = times[0] + (times[-1] - times[0]) * rng.random()
                t0 = time.perf_counter()
                state_at(ledger, key_id, at)  # type: ignore[arg-type]
                durations.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            replay(ledger, key_id, times[-1])  # type: ignore[arg-type]
            full_replay = (time.perf_counter() - t0) * 1000
        finally:
            ledger.close()
    durations.sort()
    median = statistics.median(durations)
    p95 = durations[int(len(durations) * 0.95) - 1]
    verdict = "OK" if median < 50 else "OVER TARGET"
    print(
        f"{backend:9} key with {len(times)} events (built in {built:.1f} s): "
        f"state_at median {median:.2f} ms, "
        f"p95 {p95:.2f} ms, max {durations[-1]:.2f} ms over {samples} random times [{verdict}]; "
        f"raw replay of all events {full_replay:.0f} ms ({_load()})"
    )


Medians = tuple[float, float, float, float]  # issue, revoke: wall ms; issue, revoke: CPU ms


def _commands_side_by_side(backend: str, commands: int, appends: list[float]) -> dict[bool, Medians]:
    """Issue and revoke medians on two fresh stores side by side, one writing the tree and one not: wall time, and
    this thread's CPU time (on SQLite a command is all CPU, on PostgreSQL the server's part is not in it).

    Each step issues and revokes a key on both stores, the side going first alternating, so both see the same
    moment's load: rounds of one side after the other differed by more than the tree's cost on a busy machine."""
    with store(backend) as with_tree, store(backend) as without_tree:
        ledgers = {
            side: open_ledger(settings.model_copy(update={"audit_key": None}))
            for side, settings in ((True, with_tree), (False, without_tree))
        }
        try:
            workspaces = {
                side: ledger.create_workspace("bench", "pro").workspace.id for side, ledger in ledgers.items()
            }
            times: dict[bool, list[list[float]]] = {True: [[], [], [], []], False: [[], [], [], []]}
            for i in range(commands):
                for side in (True, False) if i % 2 == 0 else (False, True):
                    ledger, ws = ledgers[side], workspaces[side]
                    with _timed_tree(appends) if side else _without_tree():
                        t0, c0 = time.perf_counter(), time.thread_time()
                        key = ledger.issue_key(ws, f"k{i}", ["read:nodes"]).key.id
                        t1, c1 = time.perf_counter(), time.thread_time()
                        ledger.revoke_key(key)
                        t2, c2 = time.perf_counter(), time.thread_time()
                    for kept, spent in zip(times[side], (t1 - t0, t2 - t1, c1 - c0, c2 - c1), strict=True):
                        kept.append(spent * 1000)
        finally:
            for ledger in ledgers.values():
                ledger.close()
    return {side: tuple(statistics.median(kept) for kept in kept_times) for side, kept_times in times.items()}  # type: ignore[misc]


@contextmanager
def _without_tree() -> Iterator[None]:
    """The same code with the Merkle tree's writes left out (its leaf hashing and its statements)."""
    kept = tree.append
    tree.append = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        tree.append = kept


@contextmanager
def _timed_tree(spent: list[float]) -> Iterator[None]:
    """The tree's writes timed one by one (ms): its cost apart from the rest of the command's noise."""
    kept = tree.append

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return kept(*args, **kwargs)
        finally:
            spent.append((time.perf_counter() - t0) * 1000)

    tree.append = timed
    try:
        yield
    finally:
        tree.append = kept


def bench_commands(backend: str, commands: int, rounds: int) -> None:
    """Rounds of the same code with and without the tree's writes, side by side: what leaf hashing adds."""
    runs: dict[bool, list[Medians]] = {True: [], False: []}
    appends: list[float] = []
    for _ in range(rounds):
        for side, medians in _commands_side_by_side(backend, commands, appends).items():
            runs[side].append(medians)
    for with_tree in (False, True):
        per_round = ", ".join(f"{m[0]:.3f}/{m[1]:.3f} (CPU {m[2]:.3f}/{m[3]:.3f})" for m in runs[with_tree])
        print(
            f"{backend:9} commands {'with' if with_tree else 'without'} the tree: issue/revoke medians per round "
            f"{per_round} ms over {commands} each"
        )
    for what, columns in (("wall", (0, 1)), ("CPU", (2, 3))):
        before, after = ([statistics.median(m[c] for m in runs[w]) for c in columns] for w in (False, True))
        added = [100 * (b / a - 1) for a, b in zip(before, after, strict=True)]
        verdict = "OK" if max(added) <= 10 else "OVER TARGET"
        print(
            f"{backend:9} commands, {what} time: the tree adds {added[0]:+.1f} % to issue "
            f"({before[0]:.3f} -> {after[0]:.3f} ms), {added[1]:+.1f} % to revoke ({before[1]:.3f} -> "
            f"{after[1]:.3f} ms), medians of {rounds} rounds [{verdict}] ({_load()})"
        )
    print(
        f"{backend:9} commands: the tree's write itself (leaf hashes and statements, one per save, each command "
        f"one save) median {statistics.median(appends) * 1000:.0f} us over {len(appends)} ({_load()})"
    )


def _high_water_kb(pid: int) -> int:
    """The process's peak RSS since its exec (VmHWM). Not rusage: a forked child's maxrss counts this
    benchmark's own memory (a million events read back) from before its exec."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # it has just ended
        pass
    return 0


def bench_proofs(backend: str, events: int, samples: int) -> None:
    with store(backend) as settings, tempfile.TemporaryDirectory() as directory:
        settings = settings.model_copy(
            update={"audit_key": None, "audit_signing_key": SecretStr(str(Path(directory) / "signing.key"))}
        )
        ledger = open_ledger(settings)
        try:
            started = time.perf_counter()
            build_key(ledger, events, read_back=False)
            built = time.perf_counter() - started
            audit = open_audit_log(settings, ledger)
            size = audit.checkpoint().tree_size
            rng = random.Random(1)
            durations = []
            for _ in range(samples):
                position = rng.randint(1, size)
                t0 = time.perf_counter()
                audit.inclusion(position)
                durations.append((time.perf_counter() - t0) * 1000)
        finally:
            ledger.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
        env |= {
            "KEYLEDGER_DATABASE_URL": settings.database_url,
            "KEYLEDGER_AUDIT_SIGNING_KEY": str(
                settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else ""
            ),
        }
        if settings.database_schema:
            env["KEYLEDGER_DATABASE_SCHEMA"] = settings.database_schema
        t0 = time.perf_counter()
        export = subprocess.Popen(
            [str(Path(sys.executable).parent / "keyledger"), "audit", "export", "--proofs"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak_kb = 0
        while export.poll() is None:
            peak_kb = max(peak_kb, _high_water_kb(export.pid))
            time.sleep(0.2)
        exported = time.perf_counter() - t0
        if export.returncode != 0:
            raise SystemExit(f"keyledger audit export --proofs failed ({export.returncode})")
        peak_mb = peak_kb / 1024
    median = statistics.median(durations)
    print(
        f"{backend:9} proofs: store of {size} events (written in {built:.0f} s); inclusion proof median "
        f"{median:.2f} ms, max {max(durations):.2f} ms over {samples} [{'OK' if median < 5 else 'OVER TARGET'}]; "
        f"export --proofs {size / exported:,.0f} events/s, peak RSS {peak_mb:.0f} MB "
        f"[{'OK' if size / exported >= 20_000 and peak_mb < 200 else 'OVER TARGET'}] ({_load()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of the two stores side by side")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--store-events", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["state_at", "commands", "proofs"], default=None)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if args.only in (None, "state_at"):
            bench(backend, args.events, args.samples)
        if args.only in (None, "commands"):
            bench_commands(backend, args.commands, args.rounds)
        if args.only in (None, "proofs"):
            bench_proofs(backend, args.store_events, args.samples)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
