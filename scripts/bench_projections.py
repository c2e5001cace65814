"""Benchmark: rebuilding every read model from position 0 vs. reading and decoding the same events.

On a fresh SQLite file and a fresh PostgreSQL schema, writes EVENTS events (key
lifecycle and usage batches, saved in chunks of at most 1,000 events), then
measures (a) reading + decoding all of them from the store and (b) rebuilding
all read models from 0, and prints both rates and their ratio (target >= 0.5).
Medians of --repeat runs (default 3: about 6 minutes in all). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from domain import credentials
from domain.application import KeyLedger, utc_now
from domain.keys import ApiKey
from domain.plans import Plan
from domain.usage import UsageBatch, UsageCount
from domain.workspace import Workspace
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from tests.backends import POSTGRES_URL, drop_pg_schema, new_pg_schema, postgres_problem

SCOPES = ["read:nodes", "write:nodes", "read:edges", "write:edges", "read:livedata", "read:events"]
ENDPOINTS = [f"{m} /{r}" for m in ("GET", "POST") for r in ("nodes", "edges", "livedata", "events", "jobs")]
STATUSES = [200] * 8 + [201, 204, 400, 403, 404, 429, 429, 500]
MAX_SAVE_EVENTS = 1000  # EVENTSOURCING-NOTES: large PostgreSQL saves can hang
MAX_SAVE_BYTES = 1_000_000


@dataclass
class Mix:
    lifecycle: int = 0
    usage: int = 0
    usage_entries: int = 0


class Writer:
    """Saves aggregates' pending events in small atomic saves."""

    def __init__(self, ledger: KeyLedger) -> None:
        self.ledger = ledger
        self.pending: dict[UUID, Any] = {}
        self.events = 0
        self.bytes = 0

    def add(self, aggregate: Any, events: int, size: int) -> None:
        self.pending[aggregate.id] = aggregate
        self.events += events
        self.bytes += size
        if self.events >= MAX_SAVE_EVENTS - 10 or self.bytes >= MAX_SAVE_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.ledger.save(*self.pending.values())
        self.pending.clear()
        self.events = self.bytes = 0


def write_events(ledger: KeyLedger, args: argparse.Namespace) -> Mix:
    """Lifecycle events and usage flushes, in the proportions asked for.

    Usage events model UsageRecorder flushes: a simulated clock advances by
    60 / --flushes-per-minute seconds per flush, and each flush counts answers of
    that minute for keys drawn from a busy set that changes every minute. With
    --spread-minutes each count lands on a random minute of three days instead
    (the worst case for the usage read model: nearly every count its own row).
    """
    rng = random.Random(args.seed)
    writer, mix = Writer(ledger), Mix()
    workspaces = [Workspace.create(f"ws{i}", Plan.PRO, "operator") for i in range(40)]
    for workspace in workspaces:
        writer.add(workspace, 1, 300)
        mix.lifecycle += 1
    live: list[tuple[ApiKey, Workspace]] = []
    start = datetime(2027, 3, 1, tzinfo=UTC)
    flushes = 0
    busy: list[tuple[ApiKey, Workspace]] = []
    while mix.lifecycle + mix.usage < args.events:
        if live and mix.usage < args.usage_share * (mix.lifecycle + mix.usage + 1):
            now = start + timedelta(seconds=60 * flushes / args.flushes_per_minute)
            if flushes % args.flushes_per_minute == 0 or not busy:
                busy = rng.sample(live, min(len(live), 100))
            flushes += 1
            counts = []
            for _ in range(args.entries):
                key, workspace = rng.choice(busy)
                minute = now.replace(second=0, microsecond=0)
                if args.spread_minutes:
                    minute = start + timedelta(minutes=rng.randrange(3 * 24 * 60))
                endpoint, status = rng.choice(ENDPOINTS), rng.choice(STATUSES)
                counts.append(UsageCount(key.id, workspace.id, minute, endpoint, status, rng.randint(1, 20)))
            writer.add(UsageBatch.record(counts, "usage:bench"), 1, 150 * args.entries)
            mix.usage += 1
            mix.usage_entries += args.entries
            continue
        workspace = rng.choice(workspaces)
        if workspace.live_keys >= 45 or (live and rng.random() < 0.25):
            key, workspace = live.pop(rng.randrange(len(live)))
            key.revoke("bench", "operator")
            workspace.release_key_slot(key.id, "operator")
            writer.add(key, 1, 300)
            writer.add(workspace, 1, 300)
            mix.lifecycle += 2
            continue
        key_id = uuid4()
        key = ApiKey.issue(key_id, workspace.id, "bench", rng.sample(SCOPES, 2), _digest(key_id), "operator", utc_now())
        workspace.take_key_slot(key_id, "operator")
        key.grant(rng.sample(SCOPES, 2), "operator")
        key.revoke_scopes(rng.sample(key.scopes, 1), "operator")
        for _ in range(rng.randint(0, 2)):
            key.rotate(_digest(key_id), rng.choice([0, 3600, 86_400]), "operator")
        writer.add(key, key.version, 450 * key.version)
        writer.add(workspace, 1, 300)
        mix.lifecycle += key.version + 1
        live.append((key, workspace))
    writer.flush()
    return mix


def _digest(key_id: UUID) -> str:
    return credentials.digest(credentials.generate_secret(key_id))


def read_all(ledger: KeyLedger, page: int) -> int:
    position, count = 0, 0
    while True:
        notifications = ledger.recorder.select_notifications(start=position, limit=page, inclusive_of_start=False)
        if not notifications:
            return count
        for notification in notifications:
            ledger.mapper.to_domain_event(notification)
        count += len(notifications)
        position = notifications[-1].id


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench(name: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    ledger = open_ledger(settings)
    try:
        mixes: list[Mix] = []
        seconds = timed(lambda: mixes.append(write_events(ledger, args)))
        events, mix = ledger.max_position(), mixes[0]
        print(
            f"{name}: wrote {events:,} events in {seconds:.1f}s ({events / seconds:,.0f}/s): "
            f"{mix.lifecycle:,} lifecycle, {mix.usage:,} usage ({mix.usage_entries:,} counts)",
            flush=True,
        )
        reads, rebuilds = [], []
        models = ReadModels(settings, ledger, rebuild_batch_size=args.batch, rebuild_workers=args.workers)
        models.ensure_current()  # the first build, untimed: warms caches like the reads below
        for _ in range(args.repeat):
            reads.append(events / timed(lambda: read_all(ledger, args.batch)))
            rebuilds.append(events / timed(models.rebuild))
            print(
                f"  read+decode {reads[-1]:>9,.0f} events/s   rebuild {rebuilds[-1]:>9,.0f} events/s"
                f"   ratio {rebuilds[-1] / reads[-1]:.2f}",
                flush=True,
            )
        models.close()
        read, rebuild = statistics.median(reads), statistics.median(rebuilds)
        paired = statistics.median(b / r for b, r in zip(rebuilds, reads, strict=True))
        return {
            "backend": name,
            "events": events,
            "read": read,
            "rebuild": rebuild,
            "ratio": rebuild / read,
            "paired": paired,
        }
    finally:
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--usage-share", type=float, default=0.4, help="share of events that are usage batches")
    parser.add_argument("--entries", type=int, default=10, help="counts per usage event")
    parser.add_argument("--flushes-per-minute", type=int, default=240, help="usage events per simulated minute")
    parser.add_argument("--spread-minutes", action="store_true", help="each count on a random minute (worst case)")
    parser.add_argument("--batch", type=int, default=5000, help="events per read page and rebuild transaction")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (medians)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-workers", dest="workers", action="store_false", help="rebuild in one process (as on one core)"
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()

    results = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as directory:
            settings = Settings(database_url=f"sqlite:///{directory}/bench.db", database_schema=None)
            results.append(bench("sqlite", settings, args))
    if args.backend in ("postgres", "both"):
        problem = postgres_problem()
        if problem:
            print(f"postgres: skipped ({problem})")
        else:
            schema = new_pg_schema()
            try:
                results.append(bench("postgres", Settings(database_url=POSTGRES_URL, database_schema=schema), args))
            finally:
                drop_pg_schema(schema)

    spread = "random minutes" if args.spread_minutes else f"{args.flushes_per_minute} flushes per minute"
    processes = "worker processes" if args.workers else "one process"
    print(
        f"\nmedians of {args.repeat}; {args.usage_share:.0%} usage events of {args.entries} counts ({spread}); {processes}"
    )
    print("ratio: of the medians; paired: median of each run's rebuild/read (target >= 0.5)")
    print(f"{'backend':<10}{'events':>10}{'read+decode/s':>16}{'rebuild/s':>12}{'ratio':>8}{'paired':>8}")
    for r in results:
        print(
            f"{r['backend']:<10}{r['events']:>10,}{r['read']:>16,.0f}{r['rebuild']:>12,.0f}"
            f"{r['ratio']:>8.2f}{r['paired']:>8.2f}"
        )


if __name__ == "__main__":
    main()
