"""Applying the event stream to read models: batched, exactly once, and rebuilt beside the live ones.

The library's `ProjectionRunner` needs a recorder that can subscribe, which
SQLite's cannot; and it commits one event per transaction (30-80x slower than
reading). This runner polls `select_notifications` instead and applies a whole
batch per transaction: every projection's rows and its new position are
committed together, so a crash re-applies a batch at most as a whole, never
half of it, and never skips one.

Several processes may run runners on one PostgreSQL: each locks the state rows
of the generations it applies (`FOR UPDATE SKIP LOCKED`), so one applies a
batch while the others skip it and just read the position. Notification ids may
have gaps (rolled-back sequence values): the runner reads "everything after my
position", so it never waits for a missing id.

A rebuild fills its new generations in bulk first (`fill`: folding projections
sum many batches before writing, secondary indexes come after the load, and
`projections.workers` spreads the projections over processes), then applies
the tail in lock-step with the serving generations and switches atomically.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from eventsourcing.utils import resolve_topic
from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.schema import CreateTable

from domain.application import KeyLedger, utc_now
from projections.base import FoldingProjection, Positioned, Projection
from projections.db import (
    lock_for_ddl,
    read_transaction,
    refresh_statistics,
    stored_sizes,
    write_transaction,
    write_transaction_if_free,
)
from projections.errors import RebuildInProgress, TrackingConflict
from projections.tracking import (
    FAILURES,
    STATE,
    Failure,
    Generation,
    activate,
    advance,
    current_failures,
    delete_generation,
    insert_generation,
    record_failure,
    select_generations,
    touch,
)

if TYPE_CHECKING:
    from projections.workers import Workers

log = logging.getLogger(__name__)

# A building generation whose heartbeat (one per batch) is older than this was abandoned:
# its process died. A rebuild that fails with an exception abandons its generation at once.
REBUILD_LEASE = timedelta(seconds=20)

Progress = Callable[[int, int], None]

# A rebuild's folding projections write their sums once `pending_size` reaches this (about
# 30 MB each: how long one transaction holds SQLite's write lock), or, while another process
# holds that lock, at twice this (the memory a rebuild takes). Their heartbeat is written at
# least every HEARTBEAT_INTERVAL, and waited for at 1.5 times that (see REBUILD_LEASE).
HEARTBEAT_INTERVAL = 5.0
MAX_PENDING = 100_000

# Pages of events are bounded in stored bytes as well as in events: a usage event holds up to
# 1,000 counts (~150 KB), and a page of 5,000 of them would decode into gigabytes. The sizes of
# the next events are read first (`stored_sizes`, no data), and a page asks for those that fit.
MAX_PAGE_BYTES = 8_000_000

# Errors of the store as a whole (unreachable, a lost race for a position): every projection
# would fail alike, so they are retried as a whole rather than blamed on one projection.
_STORE_ERRORS = (OperationalError, InterfaceError, PoolTimeout, TrackingConflict)


def describe_error(error: BaseException) -> str:
    """An error as status shows it: its type and the first line of its message, short.

    The read models' engine hides statement parameters, so no digest reaches the text.
    """
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


@dataclass(frozen=True)
class Batch:
    """What one read after a position brought: the events some projection wants, decoded, and how far it read."""

    events: list[Positioned]
    read: int  # notifications read, wanted or not
    last: int  # id of the last one read (the start position when none)
    more: bool = False  # the page was full: more may follow at once


class Step(NamedTuple):
    advanced: list[Generation]  # the generations this step moved on
    more: bool  # its page was full: more events may wait already
    failed: Mapping[str, Exception] = MappingProxyType({})  # projections that could not apply the batch


class Runner:
    def __init__(
        self,
        engine: Engine,
        ledger: KeyLedger,
        projections: Sequence[Projection],
        batch_size: int = 1000,
        rebuild_batch_size: int = 5000,
        clock: Callable[[], datetime] = utc_now,
        workers: Workers | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = ledger.recorder
        self.mapper = ledger.mapper
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        self.clock = clock
        self.workers = workers
        self._wanting: dict[str, frozenset[str]] = {}  # event topic -> projections that apply it
        # The library's own table, read directly for what its recorder cannot answer (sizes, topics).
        self._events_table: str = ledger.recorder.events_table_name  # type: ignore[attr-defined]

    def setup(self) -> None:
        with write_transaction(self.engine) as conn:
            lock_for_ddl(conn)
            STATE.create(conn, checkfirst=True)
            FAILURES.create(conn, checkfirst=True)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def active(self) -> dict[str, Generation]:
        with read_transaction(self.engine) as conn:
            return {g.name: g for g in select_generations(conn, self.projections, active=True)}

    def step(self, known: Collection[Generation] = (), skip: Collection[str] = ()) -> Step:
        """Apply the next batch to the active generations no other process is applying.

        `known` are the active generations as last seen, to spare reading them again
        (stale positions only mean reading a few events twice); `skip` names projections
        to leave alone (failing ones waiting for their retry). Advances none when there was
        nothing new or another process is applying it.

        One projection failing on an event must not stop the others: when the batch fails,
        each projection tries it in its own transaction and those that fail are reported
        in `failed` (unless the store itself is unreachable: that is raised).
        """
        seen = [g for g in self._applicable(list(known) or list(self.active().values())) if g.name not in skip]
        if not seen:
            return Step([], False)
        names = sorted({g.name for g in seen})
        start = min(g.position for g in seen)
        batch = self._read_after(start, self.batch_size)
        if not batch.read:
            return Step([], False)
        try:
            return Step(self._apply_locked(names, start, batch), batch.more)
        except _STORE_ERRORS:
            raise
        except Exception as error:
            if len(names) == 1:
                return Step([], False, {names[0]: error})
        advanced: list[Generation] = []
        failed: dict[str, Exception] = {}
        for name in names:
            try:
                advanced += self._apply_locked([name], start, batch)
            except _STORE_ERRORS:
                raise
            except Exception as error:
                failed[name] = error
        return Step(advanced, batch.more, failed)

    def _apply_locked(self, names: Collection[str], start: int, batch: Batch) -> list[Generation]:
        with write_transaction(self.engine) as conn:
            locked = select_generations(conn, names, active=True, lock=True, skip_locked=True)
            return self._apply(conn, self._applicable(locked), start, batch)

    def record_failure(self, name: str, error: Exception) -> Failure | None:
        """Report (in the store, for every process's status) that a projection failed at its position."""
        with write_transaction(self.engine) as conn:
            active = select_generations(conn, [name], active=True)
            return record_failure(conn, active[0], describe_error(error), self.clock()) if active else None

    def failures(self, active: Collection[Generation]) -> dict[str, Failure]:
        with read_transaction(self.engine) as conn:
            return current_failures(conn, active)

    def _applicable(self, generations: Sequence[Generation]) -> list[Generation]:
        # Never write rows of another definition (a process running older or newer code).
        return [g for g in generations if g.version == self.projections[g.name].VERSION]

    def _read_after(
        self,
        position: int,
        limit: int,
        names: Collection[str] | None = None,
        stop: int | None = None,
        topics: Sequence[str] | None = None,
    ) -> Batch:
        """The next notifications after `position` (up to `stop`), decoding those that `names` apply.

        With `topics` (and `stop`), only notifications of those topics are read at all, and
        the batch reaches `stop` once a page comes back short.
        Called before taking the write lock, never under it: the library's SQLite pool can
        make a reader wait for writers that themselves wait for our lock.
        """
        if topics is not None and (stop is None or not topics):
            return Batch([], 0, position if stop is None else stop)  # no topic, nothing to read
        with read_transaction(self.engine) as conn:  # ask only for as many events as fit MAX_PAGE_BYTES
            sizes = stored_sizes(conn, self._events_table, position, limit, topics)
        fitting = _fitting(sizes)
        if fitting < len(sizes):
            limit = fitting
        # `stop` is applied here, not in SQL: with an upper bound, PostgreSQL's generic plan for
        # the prepared query (psycopg prepares it after a few calls) read pages 3x slower.
        page = self.recorder.select_notifications(
            start=position, limit=limit, topics=topics or (), inclusive_of_start=False
        )
        notifications = [n for n in page if n.id <= stop] if stop is not None else page
        more = len(page) == limit and len(notifications) == len(page)
        # Events committed since the sizes were read came in unmeasured: decode only what fits.
        within = _fitting([len(n.state) for n in notifications])
        if within < len(notifications):
            notifications, more = notifications[:within], True
        if topics is not None:
            last = notifications[-1].id if more else cast(int, stop)
        elif notifications:
            last = notifications[-1].id
        else:
            return Batch([], 0, position)
        wanted = set(self.projections if names is None else names)
        decode = self.mapper.to_domain_event
        events = [(n.id, decode(n)) for n in notifications if not wanted.isdisjoint(self._projections_of(n.topic))]
        return Batch(events, len(notifications), last, more)

    def stored_topics(self, shares: Sequence[Collection[str]]) -> list[list[str]]:
        """Per share of projection names: the topics of stored events they apply (renamed topics included).

        Lets each rebuild process read only its own events. One scan of the library's
        events table, read directly: the recorder has no query for it. On PostgreSQL the
        table's statistics are refreshed first: topic-filtered pages need them (`refresh_statistics`).
        """
        table = self._events_table
        if self.engine.dialect.name == "postgresql":
            with write_transaction(self.engine) as conn:
                refresh_statistics(conn, table)
        with read_transaction(self.engine) as conn:
            stored = conn.exec_driver_sql(f"SELECT DISTINCT topic FROM {table}").scalars().all()  # noqa: S608
        return [sorted(t for t in stored if not self._projections_of(t).isdisjoint(names)) for names in shares]

    def _projections_of(self, topic: str) -> frozenset[str]:
        names = self._wanting.get(topic)
        if names is None:  # resolve_topic follows renamed topics, so old events still find their class
            event_class = resolve_topic(topic)
            names = frozenset(n for n, p in self.projections.items() if issubclass(event_class, p.event_types))
            self._wanting[topic] = names
        return names

    def _apply(self, conn: Connection, generations: Sequence[Generation], start: int, batch: Batch) -> list[Generation]:
        """Apply to each locked generation the events it has not applied; returns those advanced.

        `batch` holds every event after `start` up to `batch.last`. A generation that
        moved on meanwhile takes only the rest (or none); one before `start` (it
        appeared since we read) is left for the next round, as it would miss events.
        """
        behind = [g for g in generations if start <= g.position < batch.last]
        for generation in behind:
            projection = self.projections[generation.name]
            types = projection.event_types
            wanted = [(p, e) for p, e in batch.events if p > generation.position and isinstance(e, types)]
            if wanted:
                projection.apply(conn, projection.tables(generation.generation), wanted)
        return advance(conn, behind, batch.last, self.clock())

    # --- rebuild ------------------------------------------------------------

    def rebuild(self, names: Sequence[str], progress: Progress | None = None) -> list[Generation]:
        """Replay the stream from position 0 into new generations, then switch to them atomically.

        The active generations keep serving (and being kept caught up) meanwhile.
        """
        building = self._start_generations(names)
        log.info("rebuilding %s into generation(s) %s", names, [g.generation for g in building])
        try:
            # The bulk of the stream (on every core when worth it), then the tail and the switch.
            head = self.head()
            if self.workers is not None and self.workers.worth_it(building, head):
                building = self.workers.fill(self, building, head, progress)
            else:
                building = self.index(self.fill(building, head, progress))
            retired = None
            while retired is None:
                start = min(g.position for g in building)
                batch = self._read_after(start, self.rebuild_batch_size, names)
                building, retired = self._rebuild_batch(names, building, start, batch)
                if progress is not None:
                    done = min(g.position for g in building)
                    progress(done, max(done, self.head()))
        except BaseException:
            self._abandon(building)
            raise
        with write_transaction(self.engine) as conn:
            for generation in retired:
                self._drop(conn, generation)
        log.info("switched %s to generation(s) %s", names, [g.generation for g in building])
        return building

    def _rebuild_batch(
        self, names: Sequence[str], building: list[Generation], start: int, batch: Batch
    ) -> tuple[list[Generation], list[Generation] | None]:
        """Apply the events after `start` to the building generations; near the head, switch to them.

        Returns the building generations advanced and, once switched, the retired ones.
        """
        near_head = not batch.more
        with write_transaction(self.engine) as conn:
            # Near the head, lock the serving generations too: that waits for a runner's batch
            # in flight and keeps the next one out. If ours are then at least as far, switching
            # in this transaction loses no event and moves no position backwards.
            serving = select_generations(conn, names, active=True, lock=True) if near_head else []
            building = self._relock(conn, building)
            if batch.read:
                advanced = {g.name: g for g in self._apply(conn, building, start, batch)}
                building = [advanced.get(g.name, g) for g in building]
            reached = {g.name: g.position for g in building}
            if not near_head or any(reached[g.name] < g.position for g in serving):
                return building, None
            activate(conn, building)
            return building, serving

    def fill(
        self,
        building: Sequence[Generation],
        stop: int,
        progress: Progress | None = None,
        topics: Sequence[str] | None = None,
    ) -> list[Generation]:
        """Apply the stream up to `stop` to building generations at one position: the bulk of a rebuild.

        Folding projections sum batch after batch in memory and write once they hold
        MAX_PENDING rows, and at the end; the others write each batch. A generation's
        rows and position still commit together; a folding one's heartbeat is kept
        meanwhile, so nobody takes it for abandoned.
        """
        generations = {g.name: g for g in building}
        folding = {n: p for n in generations if isinstance(p := self.projections[n], FoldingProjection)}
        pending: dict[str, Any] = {}
        position = min(g.position for g in building)
        beat = time.monotonic()
        with _collector_paused():
            while position < stop:
                batch = self._read_after(position, self.rebuild_batch_size, list(generations), stop, topics)
                if batch.last <= position:
                    break
                position = batch.last
                if folding:
                    with read_transaction(self.engine) as conn:  # a building generation: only we write it
                        for name, projection in folding.items():
                            events = [(p, e) for p, e in batch.events if isinstance(e, projection.event_types)]
                            if events:
                                tables = projection.tables(generations[name].generation)
                                pending[name] = projection.fold(conn, tables, pending.get(name), events)
                sizes = {n: folding[n].pending_size(p) for n, p in pending.items()}
                due = [g for g in generations.values() if sizes.get(g.name, 0) >= MAX_PENDING or g.name not in folding]
                late = time.monotonic() - beat
                if due or late >= HEARTBEAT_INTERVAL:
                    idle = [g for g in generations.values() if g not in due] if late >= HEARTBEAT_INTERVAL else []
                    # Sums can grow while another process holds SQLite's write lock: wait for it only
                    # at twice the bound, or when the heartbeat is getting late (see REBUILD_LEASE).
                    wait = late >= 1.5 * HEARTBEAT_INTERVAL or any(
                        g.name not in folding or sizes[g.name] >= 2 * MAX_PENDING for g in due
                    )
                    written = self._write_fill(due, idle, batch, pending, position, wait)
                    if written is not None:
                        generations.update((g.name, g) for g in written)
                        if idle or len(due) == len(generations):  # every generation showed it is alive
                            beat = time.monotonic()
                if progress is not None:
                    progress(position, stop)
            behind = [g for g in generations.values() if g.position < position or g.name in pending]
            if behind:
                written = self._write_fill(behind, [], None, pending, position, wait=True)
                generations.update((g.name, g) for g in written or ())
        return list(generations.values())

    def _write_fill(
        self,
        due: Sequence[Generation],
        idle: Sequence[Generation],
        batch: Batch | None,
        pending: dict[str, Any],
        position: int,
        wait: bool,
    ) -> list[Generation] | None:
        """One transaction of `fill`: `due` write their batch or pending sums and move to `position`.

        `idle` (folding generations still summing) only show they are alive. Without `wait`,
        does nothing and returns None when another connection holds SQLite's write lock.
        """
        with write_transaction(self.engine) if wait else write_transaction_if_free(self.engine) as conn:
            if conn is None:
                return None
            due = self._relock(conn, due)
            for generation in due:
                projection = self.projections[generation.name]
                tables = projection.tables(generation.generation)
                if isinstance(projection, FoldingProjection):
                    if generation.name in pending:
                        projection.write(conn, tables, pending.pop(generation.name))
                elif batch is not None:
                    types = projection.event_types
                    events = [(p, e) for p, e in batch.events if p > generation.position and isinstance(e, types)]
                    if events:
                        projection.apply(conn, tables, events)
            now = self.clock()
            touch(conn, self._relock(conn, idle), now)
            return advance(conn, [g for g in due if g.position < position], position, now)

    def _abandon(self, building: Sequence[Generation]) -> None:
        """Drop a failed rebuild's generations, so the next one need not wait for the lease to expire."""
        ours = {(g.name, g.generation) for g in building}
        try:
            with write_transaction(self.engine) as conn:
                # By number, not position: our worker processes may have moved the positions on.
                for generation in select_generations(conn, [g.name for g in building], active=False, lock=True):
                    if (generation.name, generation.generation) in ours:
                        self._drop(conn, generation)
        except Exception:
            log.warning("could not drop the failed rebuild's generations; they expire with the lease")

    def _start_generations(self, names: Sequence[str]) -> list[Generation]:
        with write_transaction(self.engine) as conn:
            lock_for_ddl(conn)  # two rebuilds starting at once: the second sees the first's rows
            existing = select_generations(conn, names, lock=True)
            now = self.clock()
            for generation in existing:
                if generation.active:
                    continue
                if now - generation.updated_at < REBUILD_LEASE:
                    raise RebuildInProgress(
                        f"projection {generation.name!r} is being rebuilt (generation "
                        f"{generation.generation}) by another process; try again when it is done"
                    )
                log.warning("dropping abandoned generation %d of %s", generation.generation, generation.name)
                self._drop(conn, generation)
            building = []
            for name in names:
                number = max((g.generation for g in existing if g.name == name), default=0) + 1
                projection = self.projections[name]
                for table in projection.tables(number).values():
                    table.drop(conn, checkfirst=True)  # a leftover of a crash before the state row
                    # Secondary indexes come after the bulk load (`_index`): building one from
                    # sorted rows is cheaper than updating it row by row.
                    conn.execute(CreateTable(table))
                building.append(insert_generation(conn, name, number, projection.VERSION, now))
            return building

    def index(self, building: Sequence[Generation]) -> list[Generation]:
        """Create the secondary indexes of the building generations' tables (after `fill`)."""
        for generation in building:
            with write_transaction(self.engine) as conn:  # one at a time: SQLite's write lock is shared
                self._relock(conn, [generation])
                for table in self.projections[generation.name].tables(generation.generation).values():
                    for index in table.indexes:
                        index.create(conn)
        return list(building)

    def _relock(self, conn: Connection, building: Sequence[Generation]) -> list[Generation]:
        """Lock our building generations, checking nobody else took them over meanwhile."""
        current = {
            (g.name, g.generation): g
            for g in select_generations(conn, [g.name for g in building], active=False, lock=True)
        }
        for generation in building:
            found = current.get((generation.name, generation.generation))
            if found is None or found.position != generation.position:
                raise RebuildInProgress(f"the rebuild of {generation.name!r} was taken over by another process")
        return list(building)

    def _drop(self, conn: Connection, generation: Generation) -> None:
        projection = self.projections.get(generation.name)
        if projection is not None:
            for table in projection.tables(generation.generation).values():
                table.drop(conn, checkfirst=True)
            projection.forget(generation.generation)
        delete_generation(conn, generation)


def _fitting(sizes: Sequence[int]) -> int:
    """How many of the first events, of these stored sizes, fit in MAX_PAGE_BYTES (at least one)."""
    return max(1, bisect.bisect_right(list(itertools.accumulate(sizes)), MAX_PAGE_BYTES))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (process-wide) for the bulk of a rebuild.

    Decoding makes containers by the million, none of them cyclic, while the pending sums
    grow: the collector's passes over that heap made a one-process rebuild of 200,000
    events 2x slower. Whatever cyclic garbage other threads make meanwhile waits.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
