"""Applying the event stream to read models, exactly once: following it (`step`) and rebuilding (`rebuild`), both
folding batches of events and committing them with their generation's position (DEVELOPERS.md, "Read models")."""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from eventsourcing.utils import resolve_topic
from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.schema import CreateTable

from adapters.database import LockTaken, lock_for_ddl, read_transaction, stored_sizes, write_transaction
from adapters.rows import UTCDateTime
from domain.application import KeyLedger, utc_now
from projections.base import Positioned, Projection
from projections.errors import RebuildInProgress, TrackingConflict

if TYPE_CHECKING:
    from projections.bulk import Bulk

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]

# A building generation whose heartbeat (`updated_at`) is older was abandoned (a failing rebuild drops its own).
REBUILD_LEASE = timedelta(seconds=20)
# Pages are bounded in stored bytes too: a usage event holds up to 1,000 counts (~150 KB).
MAX_PAGE_BYTES = 8_000_000
# Errors of the store as a whole are retried as a whole rather than blamed on one projection.
_STORE_ERRORS = (OperationalError, InterfaceError, PoolTimeout, TrackingConflict, LockTaken)

STATE = Table(
    "kl_projection_state",
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),  # the generation queries read
    Column("updated_at", UTCDateTime, nullable=False),  # a building generation's heartbeat
)
# Reported by whichever process failed to apply an event, read by every process's status; current
# only while the generation is still at `position`, so a process running fixed code clears it.
FAILURES = Table(
    "kl_projection_failures",
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("error", String(300), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", UTCDateTime, nullable=False),
    Column("last_failed_at", UTCDateTime, nullable=False),
)


class Generation(NamedTuple):
    name: str
    generation: int
    version: int
    position: int
    active: bool
    updated_at: datetime

    def where(self) -> Any:
        return (STATE.c.name == self.name) & (STATE.c.generation == self.generation)


def select_generations(
    conn: Connection, names: Collection[str], *, active: bool | None = None, lock: bool | str = False
) -> list[Generation]:
    """Generations, optionally locked (`"skip"`: leaving out rows another process holds; SQLite writers are serial)."""
    query = select(STATE).where(STATE.c.name.in_(list(names))).order_by(STATE.c.name, STATE.c.generation)
    if active is not None:
        query = query.where(STATE.c.active == active)
    if lock:
        query = query.with_for_update(skip_locked=lock == "skip")
    return [Generation(*row) for row in conn.execute(query)]


def advance(conn: Connection, generation: Generation, position: int, now: datetime) -> Generation:
    """Record that `generation` applied everything up to `position`: refused unless its row is where we read it."""
    if position <= generation.position:
        raise TrackingConflict(f"{generation.name}: position {position} is not after {generation.position}")
    moved = update(STATE).where(generation.where(), STATE.c.position == generation.position)
    if conn.execute(moved.values(position=position, updated_at=now)).rowcount != 1:
        raise TrackingConflict(f"{generation.name}: another writer moved its position")
    return generation._replace(position=position, updated_at=now)


def describe_error(error: BaseException) -> str:
    """An error as status shows it: its type and first line (statement parameters are hidden)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


class Batch(NamedTuple):
    events: list[Positioned]  # those some projection applies, decoded
    last: int  # id of the last notification read, wanted or not (the start position when none)
    more: bool = False  # the page was full: more may follow at once


@dataclass
class Pending:
    """A generation's folded changes not yet written: of the events after its position up to `position`."""

    generation: Generation
    position: int
    changes: Any = None


class Step(NamedTuple):
    advanced: list[Generation]
    more: bool  # its page was full: more events may wait already
    failed: Mapping[str, Exception]  # projections that could not apply the batch


class Runner:
    def __init__(
        self,
        engine: Engine,
        ledger: KeyLedger,
        projections: Sequence[Projection[Any]],
        batch_size: int = 1000,
        rebuild_batch_size: int = 5000,
        bulk: Bulk | None = None,  # the fast rebuild; without it, batch by batch
    ) -> None:
        self.engine, self.ledger, self.bulk = engine, ledger, bulk
        self.projections = {p.name: p for p in projections}
        self.batch_size, self.rebuild_batch_size = batch_size, rebuild_batch_size
        self.clock: Callable[[], datetime] = utc_now
        self.events_table: str = ledger.recorder.events_table_name  # type: ignore[attr-defined]
        self._wanting: dict[str, frozenset[str]] = {}  # event topic -> projections applying it

    def setup(self) -> None:
        with write_transaction(self.engine) as conn:
            lock_for_ddl(conn)
            STATE.create(conn, checkfirst=True)
            FAILURES.create(conn, checkfirst=True)

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def active(self) -> dict[str, Generation]:
        with read_transaction(self.engine) as conn:
            return {g.name: g for g in select_generations(conn, self.projections, active=True)}

    def applicable(self, generations: Sequence[Generation]) -> list[Generation]:
        """Never write rows of another definition (a process running older or newer code)."""
        return [g for g in generations if g.version == self.projections[g.name].VERSION]

    def failures(self, active: Mapping[str, Generation]) -> dict[str, Any]:
        """The recorded failures still current: their generation is where it failed."""
        with read_transaction(self.engine) as conn:
            rows = conn.execute(select(FAILURES)).all()
        at = {(g.name, g.generation): g.position for g in active.values()}
        return {f.name: f for f in rows if at.get((f.name, f.generation)) == f.position}

    def record_failure(self, name: str, error: Exception) -> None:
        """Record (or count again), for every process's status, that the active generation failed at its position."""
        with write_transaction(self.engine) as conn:
            for g in select_generations(conn, [name], active=True):
                now, where = self.clock(), FAILURES.c.name == name
                stored = conn.execute(select(FAILURES).where(where).with_for_update()).first()
                attempts, since = 1, now
                if stored is not None and (stored.generation, stored.position) == (g.generation, g.position):
                    attempts, since = stored.attempts + 1, stored.first_failed_at
                conn.execute(delete(FAILURES).where(where))
                failure = (name, g.generation, g.position, describe_error(error), attempts, since, now)
                conn.execute(insert(FAILURES).values(failure))

    def fold(self, conn: Connection, pending: Sequence[Pending], batch: Batch) -> None:
        """Fold into each pending the events of `batch` after its position (`batch` starts at or before it)."""
        for each in pending:
            projection = self.projections[each.generation.name]
            kinds, after = projection.event_types, each.position
            events = [(p, e) for p, e in batch.events if p > after and isinstance(e, kinds)]
            if events:
                each.changes = projection.fold(
                    conn, projection.tables(each.generation.generation), each.changes, events
                )
            each.position = max(after, batch.last)

    def commit(self, conn: Connection, pending: Sequence[Pending]) -> list[Generation]:
        """Write the pending changes and advance their generations, in the caller's transaction; returns those."""
        now, advanced = self.clock(), []
        for each in (p for p in pending if p.position > p.generation.position):
            projection = self.projections[each.generation.name]
            if each.changes is not None:
                projection.write(conn, projection.tables(each.generation.generation), each.changes)
            each.generation, each.changes = advance(conn, each.generation, each.position, now), None
            advanced.append(each.generation)
        return advanced

    def step(self, known: Collection[Generation] = (), skip: Collection[str] = ()) -> Step:
        """Apply the next batch to the active generations (last seen: `known`; not `skip`) no other process holds;
        when it fails, each projection tries it alone (those that fail: `failed`)."""
        seen = [g for g in self.applicable(list(known) or list(self.active().values())) if g.name not in skip]
        start = min((g.position for g in seen), default=0)
        batch = self.read(start, self.batch_size) if seen else Batch([], start)
        if batch.last <= start:
            return Step([], False, {})
        names = sorted({g.name for g in seen})
        advanced: list[Generation] = []
        failed: dict[str, Exception] = {}
        for group in [names, *([n] for n in names)] if len(names) > 1 else [names]:
            try:
                with write_transaction(self.engine) as conn:
                    locked = self.applicable(select_generations(conn, group, active=True, lock="skip"))
                    # Only those from `start` on: the batch holds no event before it.
                    pending = [Pending(g, g.position) for g in locked if start <= g.position < batch.last]
                    self.fold(conn, pending, batch)
                    advanced += self.commit(conn, pending)
                if group is names:
                    break
            except _STORE_ERRORS:
                raise
            except Exception as error:
                failed.update(dict.fromkeys(group, error) if len(group) == 1 else {})
        return Step(advanced, batch.more, failed)

    def read(
        self,
        position: int,
        limit: int,
        names: Collection[str] = (),
        stop: int | None = None,
        topics: Sequence[str] | None = None,
    ) -> Batch:
        """The next notifications after `position` (up to `stop`; of `topics` only), decoding those `names` apply;
        never under our write lock (the library's SQLite pool, DEVELOPERS.md)."""
        if topics is not None and (stop is None or not topics):
            return Batch([], position if stop is None else stop)  # no topic, nothing to read
        with read_transaction(self.engine) as conn:
            sizes = stored_sizes(conn, self.events_table, position, limit, topics)
        # Only events whose sizes were read, as many as fit in MAX_PAGE_BYTES (at least one). `stop` applied here,
        # not in SQL: with an upper bound, the generic plan PostgreSQL makes for the prepared query (psycopg
        # prepares it after a few calls) read pages 3x slower.
        count = max(1, bisect.bisect_right(list(itertools.accumulate(sizes)), MAX_PAGE_BYTES))
        page = self.ledger.recorder.select_notifications(position, count, topics=topics or (), inclusive_of_start=False)
        notifications = [n for n in page if n.id <= stop] if stop is not None else page
        more = (count < len(sizes) or len(sizes) == limit) and len(notifications) == len(page)
        if not notifications and (topics is None or stop is None):
            return Batch([], position)
        last = stop if stop is not None and topics is not None and not more else notifications[-1].id
        wanted = set(names or self.projections)
        decode = self.ledger.mapper.to_domain_event
        events = [(n.id, decode(n)) for n in notifications if not wanted.isdisjoint(self.projections_of(n.topic))]
        return Batch(events, last, more)

    def projections_of(self, topic: str) -> frozenset[str]:
        if topic not in self._wanting:  # resolve_topic follows renamed topics: old events find their class
            kind = resolve_topic(topic)
            self._wanting[topic] = frozenset(n for n, p in self.projections.items() if issubclass(kind, p.event_types))
        return self._wanting[topic]

    def rebuild(self, names: Sequence[str], progress: Progress | None = None) -> list[Generation]:
        """Replay the stream from 0 into new generations while the active ones serve, then switch atomically."""
        building = self._start_generations(names)
        log.info("rebuilding %s into generation(s) %s", names, [g.generation for g in building])
        try:
            # The bulk of the stream, then the indexes; without the bulk strategy, only the indexes.
            building = self.bulk.fill(self, building, self.head(), progress) if self.bulk else self.index(building)
            pending, retired = [Pending(g, g.position) for g in building], None
            while retired is None:  # the tail, then the switch: folded and committed as in `bulk.fill`
                batch = self.read(min(p.position for p in pending), self.rebuild_batch_size, names)
                with read_transaction(self.engine) as conn:  # building generations: only we write them
                    self.fold(conn, pending, batch)
                with write_transaction(self.engine) as conn:
                    # Near the head, lock the serving generations too: that waits for a runner's batch in
                    # flight and keeps the next one out. If ours are then as far, switching loses no event.
                    serving = select_generations(conn, names, active=True, lock=True) if not batch.more else []
                    self.relock(conn, [p.generation for p in pending])
                    self.commit(conn, pending)
                    building = [p.generation for p in pending]
                    reached = {g.name: g.position for g in building}
                    if not batch.more and all(reached[g.name] >= g.position for g in serving):
                        for new in building:  # in one transaction: an atomic switch
                            switch = update(STATE).where(STATE.c.name == new.name)
                            conn.execute(switch.values(active=STATE.c.generation == new.generation))
                        retired = serving
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

    def building(self, conn: Connection, building: Sequence[Generation], lock: bool = False) -> list[Generation]:
        """The stored rows of these building generations (found by number: workers may have moved them on)."""
        ours = {(g.name, g.generation) for g in building}
        found = select_generations(conn, [g.name for g in building], active=False, lock=lock)
        return [g for g in found if (g.name, g.generation) in ours]

    def relock(self, conn: Connection, building: Sequence[Generation]) -> None:
        """Lock our building generations, checking nobody took them over meanwhile."""
        found = self.building(conn, building, lock=True)
        for g in building:
            if g not in found:
                raise RebuildInProgress(f"the rebuild of {g.name!r} was taken over by another process")

    def _start_generations(self, names: Sequence[str]) -> list[Generation]:
        with write_transaction(self.engine) as conn:
            lock_for_ddl(conn)  # two rebuilds starting at once: the second sees the first's rows
            existing = select_generations(conn, names, lock=True)
            now = self.clock()
            for generation in (g for g in existing if not g.active):
                if now - generation.updated_at < REBUILD_LEASE:
                    raise RebuildInProgress(
                        f"projection {generation.name!r} is being rebuilt (generation {generation.generation})"
                        " by another process; try again when it is done"
                    )
                log.warning("dropping abandoned generation %d of %s", generation.generation, generation.name)
                self._drop(conn, generation)
            building = []
            for name in names:
                number = max((g.generation for g in existing if g.name == name), default=0) + 1
                for table in self.projections[name].tables(number).values():
                    table.drop(conn, checkfirst=True)  # a leftover of a crash before the state row
                    conn.execute(CreateTable(table))  # its indexes come after the load (`index`)
                building.append(Generation(name, number, self.projections[name].VERSION, 0, False, now))
                conn.execute(insert(STATE).values(**building[-1]._asdict()))
            return building

    def index(self, building: Sequence[Generation]) -> list[Generation]:
        """Create the building generations' secondary indexes: cheaper from loaded rows than row by row."""
        for generation in building:
            with write_transaction(self.engine) as conn:  # one at a time: SQLite's write lock is shared
                self.relock(conn, [generation])
                for table in self.projections[generation.name].tables(generation.generation).values():
                    for index in table.indexes:
                        index.create(conn)
        return list(building)

    def _abandon(self, building: Sequence[Generation]) -> None:
        try:
            with write_transaction(self.engine) as conn:
                for generation in self.building(conn, building, lock=True):
                    self._drop(conn, generation)
        except Exception:
            log.warning("could not drop the failed rebuild's generations; they expire with the lease")

    def _drop(self, conn: Connection, generation: Generation) -> None:
        projection = self.projections[generation.name]  # only ours are ever selected to drop
        for table in projection.tables(generation.generation).values():
            table.drop(conn, checkfirst=True)
        projection.forget(generation.generation)
        conn.execute(delete(STATE).where(generation.where()))
