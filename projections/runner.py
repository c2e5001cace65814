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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from domain.application import KeyLedger, utc_now
from projections.base import Positioned, Projection
from projections.db import lock_for_ddl, read_transaction, write_transaction
from projections.errors import RebuildInProgress
from projections.tracking import (
    STATE,
    Generation,
    activate,
    advance,
    delete_generation,
    insert_generation,
    select_generations,
)

log = logging.getLogger(__name__)

# A building generation whose heartbeat (one per batch) is older than this was abandoned:
# its process died. A rebuild that fails with an exception abandons its generation at once.
REBUILD_LEASE = timedelta(seconds=20)

Progress = Callable[[int, int], None]


class Runner:
    def __init__(
        self,
        engine: Engine,
        ledger: KeyLedger,
        projections: Sequence[Projection],
        batch_size: int = 1000,
        rebuild_batch_size: int = 5000,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.engine = engine
        self.recorder = ledger.recorder
        self.mapper = ledger.mapper
        self.projections = {p.name: p for p in projections}
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        self.clock = clock

    def setup(self) -> None:
        with write_transaction(self.engine) as conn:
            lock_for_ddl(conn)
            STATE.create(conn, checkfirst=True)

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0

    def active(self) -> dict[str, Generation]:
        with read_transaction(self.engine) as conn:
            return {g.name: g for g in select_generations(conn, self.projections, active=True)}

    def step(self, known: Collection[Generation] = ()) -> tuple[int, list[Generation]]:
        """Apply the next batch to the active generations no other process is applying.

        `known` are the active generations as last seen, to spare reading them again
        (stale positions only mean reading a few events twice). Returns how many
        events were read and the generations advanced: none when there was nothing
        new or another process is applying it.
        """
        seen = self._applicable(list(known) or list(self.active().values()))
        if not seen:
            return 0, []
        start = min(g.position for g in seen)
        events = self._read_after(start, self.batch_size)
        if not events:
            return 0, []
        with write_transaction(self.engine) as conn:
            locked = select_generations(conn, self.projections, active=True, lock=True, skip_locked=True)
            advanced = self._apply(conn, self._applicable(locked), start, events)
        return len(events), advanced

    def _applicable(self, generations: Sequence[Generation]) -> list[Generation]:
        # Never write rows of another definition (a process running older or newer code).
        return [g for g in generations if g.version == self.projections[g.name].VERSION]

    def _read_after(self, position: int, limit: int) -> list[Positioned]:
        """The next events after `position`, decoded.

        Called before taking the write lock, never under it: the library's SQLite pool can
        make a reader wait for writers that themselves wait for our lock.
        """
        notifications = self.recorder.select_notifications(start=position, limit=limit, inclusive_of_start=False)
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def _apply(
        self, conn: Connection, generations: Sequence[Generation], start: int, events: Sequence[Positioned]
    ) -> list[Generation]:
        """Apply to each locked generation the events it has not applied; returns those advanced.

        `events` are every event after `start`, up to the last one. A generation that
        moved on meanwhile takes only the rest (or none); one before `start` (it
        appeared since we read) is left for the next round, as it would miss events.
        """
        last = events[-1][0]
        behind = [g for g in generations if start <= g.position < last]
        for generation in behind:
            projection = self.projections[generation.name]
            wanted = [(p, e) for p, e in events if p > generation.position and projection.handles(e)]
            if wanted:
                projection.apply(conn, projection.tables(generation.generation), wanted)
        return advance(conn, behind, last, self.clock())

    # --- rebuild ------------------------------------------------------------

    def rebuild(self, names: Sequence[str], progress: Progress | None = None) -> list[Generation]:
        """Replay the stream from position 0 into new generations, then switch to them atomically.

        The active generations keep serving (and being kept caught up) meanwhile.
        """
        building = self._start_generations(names)
        log.info("rebuilding %s into generation(s) %s", names, [g.generation for g in building])
        try:
            retired = None
            while retired is None:
                start = min(g.position for g in building)
                events = self._read_after(start, self.rebuild_batch_size)
                building, retired = self._rebuild_batch(names, building, start, events)
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
        self, names: Sequence[str], building: list[Generation], start: int, events: Sequence[Positioned]
    ) -> tuple[list[Generation], list[Generation] | None]:
        """Apply the events after `start` to the building generations; near the head, switch to them.

        Returns the building generations advanced and, once switched, the retired ones.
        """
        near_head = len(events) < self.rebuild_batch_size
        with write_transaction(self.engine) as conn:
            # Near the head, lock the serving generations too: that waits for a runner's batch
            # in flight and keeps the next one out. If ours are then at least as far, switching
            # in this transaction loses no event and moves no position backwards.
            serving = select_generations(conn, names, active=True, lock=True) if near_head else []
            building = self._relock(conn, building)
            if events:
                advanced = {g.name: g for g in self._apply(conn, building, start, events)}
                building = [advanced.get(g.name, g) for g in building]
            reached = {g.name: g.position for g in building}
            if not near_head or any(reached[g.name] < g.position for g in serving):
                return building, None
            activate(conn, building)
            return building, serving

    def _abandon(self, building: Sequence[Generation]) -> None:
        """Drop a failed rebuild's generations, so the next one need not wait for the lease to expire."""
        try:
            with write_transaction(self.engine) as conn:
                self._relock(conn, building)
                for generation in building:
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
                    table.create(conn)
                building.append(insert_generation(conn, name, number, projection.VERSION, now))
            return building

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
