"""The fast rebuild, an optional strategy of `Runner.rebuild` on the runner's fold and commit: many batches folded
per commit, projections spread over processes, rows written in bulk (DEVELOPERS.md, "Read models")."""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections.abc import Collection, Sequence
from typing import Any

from eventsourcing.utils import get_topic, resolve_topic

from adapters import database as db
from adapters.database import DatabaseSettings, LockTaken, read_transaction, write_transaction
from domain.application import KeyLedger
from projections.runner import Generation, Pending, Progress, Runner

MAX_PENDING = 100_000  # rows of one projection's pending changes: about 30 MB, written in one transaction
HEARTBEAT_INTERVAL = 5.0  # at least this often every building generation's position is written
MIN_EVENTS = 50_000  # below this backlog, starting processes (a second: imports) costs more than it saves


def fill(
    runner: Runner, building: Sequence[Generation], stop: int, progress: Progress | None = None, topics: Any = None
) -> list[Generation]:
    """Apply the stream up to `stop` to building generations at one position (only `topics`' events, if given),
    with the garbage collector paused (DEVELOPERS.md)."""
    pending, names = [Pending(g, g.position) for g in building], [g.name for g in building]
    position, beat, collecting = min(g.position for g in building), time.monotonic(), gc.isenabled()
    gc.disable()
    try:
        while position < stop:
            batch = runner.read(position, runner.rebuild_batch_size, names, stop, topics)
            if batch.last <= position:
                break
            position = batch.last
            with read_transaction(runner.engine) as conn:  # building generations: only we write them
                runner.fold(conn, pending, batch)
            sizes = [runner.projections[p.generation.name].pending_size(p.changes) if p.changes else 0 for p in pending]
            due, late = [p for p, n in zip(pending, sizes, strict=True) if n >= MAX_PENDING], time.monotonic() - beat
            # Large changes are written alone; all, as a heartbeat, when it is due. Waiting for SQLite's
            # write lock only at twice the bound, or when the heartbeat is getting late.
            wait = max(sizes) >= 2 * MAX_PENDING or late >= 1.5 * HEARTBEAT_INTERVAL
            if late >= HEARTBEAT_INTERVAL and _commit(runner, pending, wait):
                beat = time.monotonic()
            elif due and late < HEARTBEAT_INTERVAL:
                _commit(runner, due, wait)
            if progress is not None:
                progress(position, stop)
        _commit(runner, pending, True)
    finally:
        if collecting:
            gc.enable()
    return [p.generation for p in pending]


def _work(settings: DatabaseSettings, env: dict[str, str], classes: list[str], *job: Any) -> list[Generation]:
    """A worker process: fills and indexes `building` (of projections of these class topics) up to `stop`."""
    building, stop, topics, batch_size = job
    ledger = KeyLedger(env={**env, "CREATE_TABLE": "n"})
    engine = db.create_read_engine(settings, ledger.env.get("SQLITE_DBNAME"))
    try:
        runner = Runner(engine, ledger, [resolve_topic(t)() for t in classes], rebuild_batch_size=batch_size)
        return runner.index(fill(runner, building, stop, topics=topics))
    finally:
        engine.dispose()
        ledger.close()


def _commit(runner: Runner, pending: Sequence[Pending], wait: bool) -> bool:
    try:
        with write_transaction(runner.engine, wait) as conn:
            runner.relock(conn, [p.generation for p in pending])
            runner.commit(conn, pending)
        return True
    except LockTaken:
        return False


class Bulk:
    def __init__(self, settings: DatabaseSettings, ledger: KeyLedger, workers: bool, min_events: int = MIN_EVENTS):
        self.settings, self.store_env, self.min_events = settings, dict(ledger.env), min_events
        self.workers = workers and (os.cpu_count() or 1) > 1

    def fill(
        self, runner: Runner, building: Sequence[Generation], stop: int, progress: Progress | None
    ) -> list[Generation]:
        """Fill and index every building generation up to `stop`; returns them advanced."""
        own, *others = shares = self.shares(runner, building)
        if not (others and self.workers and stop - min(g.position for g in building) >= self.min_events):
            return runner.index(fill(runner, building, stop, progress))
        with multiprocessing.get_context("spawn").Pool(len(others)) as pool:  # leaving it ends what still runs
            own_topics, *topics = stored_topics(runner, [[g.name for g in share] for share in shares])
            classes = [[get_topic(type(runner.projections[g.name])) for g in share] for share in others]
            results = [
                pool.apply_async(
                    _work, (self.settings, self.store_env, names, share, stop, mine, runner.rebuild_batch_size)
                )
                for share, names, mine in zip(others, classes, topics, strict=True)
            ]

            def report(_position: int = 0, _stop: int = 0) -> None:
                for failed in (r for r in results if r.ready() and not r.successful()):
                    failed.get()  # raises the worker's exception
                if progress is not None:
                    with read_transaction(runner.engine) as conn:
                        progress(min((g.position for g in runner.building(conn, building)), default=0), stop)

            filled = runner.index(fill(runner, own, stop, report, own_topics))
            while not all(r.ready() for r in results):
                report()
                time.sleep(0.25)
            return filled + [g for r in results for g in r.get()]

    @staticmethod
    def shares(runner: Runner, building: Sequence[Generation]) -> list[list[Generation]]:
        """Building generations grouped so that no event class is decoded in two processes."""
        groups: list[tuple[set[type], list[Generation]]] = []
        for generation in building:  # all at position 0, as `Runner.rebuild` made them
            kinds = set(runner.projections[generation.name].event_types)
            overlap = (g for g in groups if any(issubclass(a, b) or issubclass(b, a) for a in kinds for b in g[0]))
            if (group := next(overlap, None)) is None:
                groups.append((kinds, [generation]))
            else:
                group[0].update(kinds)
                group[1].append(generation)
        return [members for _, members in groups]


def stored_topics(runner: Runner, shares: Sequence[Collection[str]]) -> list[list[str]]:
    """Per share of projection names: the topics of stored events they apply (renamed ones too).

    On PostgreSQL the events table's statistics first: topic-filtered pages need them.
    """
    if runner.engine.dialect.name == "postgresql":
        with write_transaction(runner.engine) as conn:
            db.refresh_statistics(conn, runner.events_table)
    with read_transaction(runner.engine) as conn:
        stored = conn.exec_driver_sql(f"SELECT DISTINCT topic FROM {runner.events_table}").scalars().all()  # noqa: S608
    return [sorted(t for t in stored if not runner.projections_of(t).isdisjoint(names)) for names in shares]
