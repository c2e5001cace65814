"""The fast rebuild: many batches folded per write, projections spread over processes, rows written in bulk.

An optional strategy of `Runner.rebuild` that uses the runner's own apply path
(`Runner.fold`, `Runner.commit`): it only folds many batches before it commits, so
rows that every batch would update (counters, key states) are written once, and the
pending changes and positions still commit together. The pending changes are written
once they hold MAX_PENDING rows (about 30 MB: how long one transaction holds SQLite's
write lock), or at least every HEARTBEAT_INTERVAL, so nobody takes the rebuild for
abandoned (`runner.REBUILD_LEASE`). While another process holds SQLite's write lock
the changes keep growing, up to twice the bound (`write_transaction_if_free`).

Decoding is most of a rebuild's work and Python runs it on one core: with enough events,
each share of projections that decode the same events (keys and audit; usage) gets its
own process (`spawn`: nothing of a threaded parent is inherited) reading only the events
it applies, while this process fills the first share. A worker that fails fails the
rebuild. The rows are written with SQLAlchemy Core (`insert_rows`, `upsert`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic, resolve_topic
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from domain.application import KeyLedger
from projections.db import (
    DatabaseSettings,
    create_read_engine,
    read_transaction,
    refresh_statistics,
    write_transaction,
    write_transaction_if_free,
)
from projections.runner import Pending, Progress, Runner
from projections.tracking import Generation, select_generations

MAX_PENDING = 100_000
HEARTBEAT_INTERVAL = 5.0
MIN_EVENTS = 50_000  # below this backlog, starting processes (about a second: imports) costs more than it saves
PROGRESS_INTERVAL = 0.25

Rows = Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]


def insert_rows(conn: Connection, table: Table, rows: Rows) -> None:
    """Insert rows (value tuples in the table's column order, or mappings by column name): one executemany."""
    if rows:
        conn.execute(table.insert(), _mappings(table, rows))


def upsert(conn: Connection, table: Table, rows: Rows, key: Sequence[str], add: Sequence[str]) -> None:
    """Insert rows (as `insert_rows`); on a key conflict add the `add` columns to the stored ones.

    Rows must have distinct keys (PostgreSQL refuses to update one row twice in one statement).
    """
    if rows:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
        added = {name: table.c[name] + insert.excluded[name] for name in add}
        conn.execute(insert.on_conflict_do_update(index_elements=list(key), set_=added), _mappings(table, rows))


def _mappings(table: Table, rows: Rows) -> Sequence[Mapping[str, Any]]:
    if isinstance(rows[0], Mapping):
        return rows  # type: ignore[return-value]
    names = table.c.keys()
    return [dict(zip(names, row, strict=True)) for row in rows]


def fill(
    runner: Runner,
    building: Sequence[Generation],
    stop: int,
    progress: Progress | None = None,
    topics: Sequence[str] | None = None,
) -> list[Generation]:
    """Apply the stream up to `stop` to building generations at one position, folding many batches per write."""
    pending = [Pending(g) for g in building]
    names = [g.name for g in building]
    position = min(g.position for g in building)
    beat = time.monotonic()
    while position < stop:
        batch = runner.read(position, runner.rebuild_batch_size, names, stop, topics)
        if batch.last <= position:
            break
        position = batch.last
        with read_transaction(runner.engine) as conn:  # building generations: only we write them
            runner.fold(conn, pending, batch)
        sizes = [
            runner.projections[p.generation.name].pending_size(p.changes) for p in pending if p.changes is not None
        ]
        size = max(sizes, default=0)
        late = time.monotonic() - beat
        if (size >= MAX_PENDING or late >= HEARTBEAT_INTERVAL) and _commit(
            runner, pending, wait=size >= 2 * MAX_PENDING or late >= 1.5 * HEARTBEAT_INTERVAL
        ):
            beat = time.monotonic()
        if progress is not None:
            progress(position, stop)
    _commit(runner, pending, wait=True)
    return [p.generation for p in pending]


def _commit(runner: Runner, pending: Sequence[Pending], wait: bool) -> bool:
    """Write every pending change; without `wait`, not while another connection holds SQLite's write lock."""
    with write_transaction(runner.engine) if wait else write_transaction_if_free(runner.engine) as conn:
        if conn is None:
            return False
        runner.relock(conn, [p.generation for p in pending])
        runner.commit(conn, pending)
        return True


@dataclass(frozen=True)
class _Job:
    """One worker's share: fill `building` (generations of the projection classes named) up to `stop`."""

    settings: DatabaseSettings
    store_env: dict[str, str]
    projections: list[str]  # the classes' topics: the worker makes its own instances
    topics: list[str]  # of the events they apply: the worker reads no others
    building: list[Generation]
    stop: int
    batch_size: int


def _work(job: _Job) -> list[Generation]:
    """A worker process's entry point."""
    # The parent created every table already: the worker only reads events and writes rows.
    ledger = KeyLedger(env={**job.store_env, "CREATE_TABLE": "n"})
    engine = create_read_engine(job.settings, ledger.env.get("SQLITE_DBNAME"))
    try:
        projections = [resolve_topic(topic)() for topic in job.projections]
        runner = Runner(engine, ledger, projections, rebuild_batch_size=job.batch_size)
        return runner.index(fill(runner, job.building, job.stop, topics=job.topics))
    finally:
        engine.dispose()
        ledger.close()


class Bulk:
    def __init__(
        self, settings: DatabaseSettings, ledger: KeyLedger, workers: bool = True, min_events: int = MIN_EVENTS
    ) -> None:
        self.settings = settings
        self.store_env = dict(ledger.env)
        self.workers = workers and (os.cpu_count() or 1) > 1
        self.min_events = min_events

    def fill(
        self, runner: Runner, building: Sequence[Generation], stop: int, progress: Progress | None
    ) -> list[Generation]:
        """Fill and index every building generation up to `stop`; returns them advanced."""
        own, *others = shares = self.shares(runner, building)
        backlog = stop - min(g.position for g in building)
        if not (others and self.workers and backlog >= self.min_events):
            return runner.index(fill(runner, building, stop, progress))
        # The pool first: its processes take most of a second to start while we read the topics.
        with multiprocessing.get_context("spawn").Pool(len(others)) as pool:  # leaving it ends what still runs
            own_topics, *topics = stored_topics(runner, [[g.name for g in share] for share in shares])
            jobs = [
                _Job(
                    self.settings,
                    self.store_env,
                    [get_topic(type(runner.projections[g.name])) for g in share],
                    share_topics,
                    share,
                    stop,
                    runner.rebuild_batch_size,
                )
                for share, share_topics in zip(others, topics, strict=True)
            ]
            results = [pool.apply_async(_work, (job,)) for job in jobs]

            def report(_position: int = 0, _stop: int = 0) -> None:
                for failed in (r for r in results if r.ready() and not r.successful()):
                    failed.get()  # raises the worker's exception
                if progress is not None:
                    progress(_reached(runner, building), stop)

            filled = runner.index(fill(runner, own, stop, report, own_topics))
            while not all(r.ready() for r in results):
                report()
                time.sleep(PROGRESS_INTERVAL)
            return filled + [g for r in results for g in r.get()]

    @staticmethod
    def shares(runner: Runner, building: Sequence[Generation]) -> list[list[Generation]]:
        """Building generations grouped so that no event class is decoded in two processes."""
        groups: list[tuple[set[type], list[Generation]]] = []
        for generation in sorted(building, key=lambda g: g.position):
            types = set(runner.projections[generation.name].event_types)
            joined = [g for g in groups if _overlap(g[0], types) and g[1][0].position == generation.position]
            if joined:
                joined[0][0].update(types)
                joined[0][1].append(generation)
            else:
                groups.append((types, [generation]))
        return [members for _, members in groups]


def stored_topics(runner: Runner, shares: Sequence[Collection[str]]) -> list[list[str]]:
    """Per share of projection names: the topics of stored events they apply (renamed topics included).

    One scan of the library's events table, read directly: its recorder has no query for it.
    On PostgreSQL the table's statistics are refreshed first: topic-filtered pages need them.
    """
    table = runner.events_table
    if runner.engine.dialect.name == "postgresql":
        with write_transaction(runner.engine) as conn:
            refresh_statistics(conn, table)
    with read_transaction(runner.engine) as conn:
        stored = conn.exec_driver_sql(f"SELECT DISTINCT topic FROM {table}").scalars().all()  # noqa: S608
    return [sorted(t for t in stored if not runner.projections_of(t).isdisjoint(names)) for names in shares]


def _overlap(these: set[type], those: set[type]) -> bool:
    return any(issubclass(a, b) or issubclass(b, a) for a in these for b in those)


def _reached(runner: Runner, building: Sequence[Generation]) -> int:
    """How far the slowest of our building generations got."""
    ours = {(g.name, g.generation) for g in building}
    with read_transaction(runner.engine) as conn:
        found = select_generations(conn, [g.name for g in building], active=False)
    return min((g.position for g in found if (g.name, g.generation) in ours), default=0)
