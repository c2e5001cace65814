"""Rebuilding several read models on every core: one worker process per projection.

Decoding events is most of a rebuild's work and Python runs it on one core. A
rebuild of several projections therefore hands each one to its own process
(`spawn`, so nothing of a threaded parent is inherited), which reads the raw
notifications and decodes only the events its projection applies. Each worker
fills its generation up to the head seen at the start, batch by batch as the
single-process rebuild does (rows and position in one transaction; each batch
is the generation's heartbeat); the parent then applies the tail in lock-step
and switches atomically (`Runner.rebuild`). A worker that fails fails the
rebuild: the others are stopped and every new generation is dropped.

Workers cost about a second to start (imports), so small backlogs stay in-process.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult

from eventsourcing.utils import get_topic, resolve_topic
from sqlalchemy import Engine

from domain.application import KeyLedger
from projections.base import Projection
from projections.db import DatabaseSettings, create_read_engine, read_transaction
from projections.runner import Progress, Runner
from projections.tracking import Generation, select_generations

MIN_EVENTS = 50_000  # below this backlog, starting the processes costs more than they save
PROGRESS_INTERVAL = 0.25


@dataclass(frozen=True)
class FillJob:
    """One worker's share: fill `building` (generations of the projection classes `projections`) up to `stop`."""

    settings: DatabaseSettings
    store_env: dict[str, str]
    projections: list[str]  # the classes' topics: the worker makes its own instances
    topics: list[str]  # of the events they apply: the worker reads no others
    building: list[Generation]
    stop: int
    batch_size: int


def fill(job: FillJob) -> list[Generation]:
    """A worker process's entry point."""
    # The parent created every table already: the worker only reads events and writes rows.
    ledger = KeyLedger(env={**job.store_env, "CREATE_TABLE": "n"})
    engine = create_read_engine(job.settings, ledger.env.get("SQLITE_DBNAME"))
    try:
        projections: list[Projection] = [resolve_topic(topic)() for topic in job.projections]
        runner = Runner(engine, ledger, projections, rebuild_batch_size=job.batch_size)
        return runner.index(runner.fill(job.building, job.stop, topics=job.topics))
    finally:
        engine.dispose()
        ledger.close()


class Workers:
    def __init__(
        self,
        settings: DatabaseSettings,
        ledger: KeyLedger,
        projections: Sequence[Projection],
        batch_size: int,
        cores: int | None = None,
        min_events: int = MIN_EVENTS,
    ) -> None:
        self.settings = settings
        self.store_env = dict(ledger.env)
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.cores = cores if cores is not None else (os.cpu_count() or 1)
        self.min_events = min_events

    def worth_it(self, building: Sequence[Generation], head: int) -> bool:
        backlog = head - min((g.position for g in building), default=head)
        return len(self.shares(building)) > 1 and self.cores > 1 and backlog >= self.min_events

    def shares(self, building: Sequence[Generation]) -> list[list[Generation]]:
        """Building generations grouped so that no event class is decoded in two processes.

        Projections that apply some event class in common (keys and audit: key events) share a
        worker; the others get one each.
        """
        groups: list[tuple[set[type], list[Generation]]] = []
        for generation in sorted(building, key=lambda g: g.position):
            types = set(self.projections[generation.name].event_types)
            joined = [g for g in groups if _overlap(g[0], types) and g[1][0].position == generation.position]
            if joined:
                joined[0][0].update(types)
                joined[0][1].append(generation)
            else:
                groups.append((types, [generation]))
        return [members for _, members in groups]

    def fill(
        self, runner: Runner, building: Sequence[Generation], stop: int, progress: Progress | None
    ) -> list[Generation]:
        """Fill and index every building generation up to `stop`, a share per process; returns them advanced.

        This process takes the first share itself while the others' processes start.
        """
        own, *others = shares = self.shares(building)
        context = multiprocessing.get_context("spawn")
        # The pool first: its processes take most of a second to start (imports) while we read the topics.
        with context.Pool(len(others)) as pool:  # leaving the block terminates whatever still runs
            own_topics, *topics = runner.stored_topics([[g.name for g in share] for share in shares])
            jobs = [
                FillJob(
                    self.settings,
                    self.store_env,
                    [get_topic(type(self.projections[g.name])) for g in share],
                    share_topics,
                    share,
                    stop,
                    self.batch_size,
                )
                for share, share_topics in zip(others, topics, strict=True)
            ]
            results: list[AsyncResult[list[Generation]]] = [pool.apply_async(fill, (job,)) for job in jobs]

            def report(_position: int, _stop: int) -> None:
                failed = [r for r in results if r.ready() and not r.successful()]
                if failed:
                    failed[0].get()  # raises the worker's exception
                if progress is not None:
                    progress(_reached(runner.engine, building), stop)

            filled = runner.index(runner.fill(own, stop, report, own_topics))
            while not all(r.ready() for r in results):
                report(0, stop)
                time.sleep(PROGRESS_INTERVAL)
            return filled + [g for r in results for g in r.get()]


def _overlap(these: set[type], those: set[type]) -> bool:
    return any(issubclass(a, b) or issubclass(b, a) for a in these for b in those)


def _reached(engine: Engine, building: Sequence[Generation]) -> int:
    """How far the slowest of our building generations got."""
    ours = {(g.name, g.generation) for g in building}
    with read_transaction(engine) as conn:
        positions = [
            g.position
            for g in select_generations(conn, [g.name for g in building], active=False)
            if (g.name, g.generation) in ours
        ]
    return min(positions, default=0)
