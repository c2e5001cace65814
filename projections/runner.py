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
from projections.base import Projection
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

# A building generation whose heartbeat is older than this was abandoned (its process died).
REBUILD_LEASE = timedelta(seconds=60)

Progress = Callable[[int, int], None]


class Runner:
    def __init__(
        self,
        engine: Engine,
        ledger: KeyLedger,
        projections: Sequence[Projection],
        batch_size: int = 1000,
        rebuild_batch_size: int = 2000,
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

    def step(self) -> int:
        """Apply the next batch to the active generations no other process is applying.

        Returns how many events were read (0: nothing new, or someone else is on it).
        """
        with write_transaction(self.engine) as conn:
            generations = [
                g
                for g in select_generations(conn, self.projections, active=True, lock=True, skip_locked=True)
                if g.version == self.projections[g.name].VERSION  # never write rows of another definition
            ]
            if not generations:
                return 0
            count, _ = self._apply_batch(conn, generations, self.batch_size)
        return count

    def _apply_batch(
        self, conn: Connection, generations: Sequence[Generation], limit: int
    ) -> tuple[int, list[Generation]]:
        """Read the next events once and apply them to each generation still before them."""
        start = min(g.position for g in generations)
        notifications = self.recorder.select_notifications(start=start, limit=limit, inclusive_of_start=False)
        if not notifications:
            return 0, list(generations)
        last = notifications[-1].id
        events = [(n.id, self.mapper.to_domain_event(n)) for n in notifications]
        now = self.clock()
        advanced = []
        for generation in generations:
            if generation.position >= last:
                advanced.append(generation)
                continue
            projection = self.projections[generation.name]
            wanted = [(p, e) for p, e in events if p > generation.position and projection.handles(e)]
            if wanted:
                projection.apply(conn, projection.tables(generation.generation), wanted)
            advanced.append(advance(conn, generation, last, now))
        return len(notifications), advanced

    # --- rebuild ------------------------------------------------------------

    def rebuild(self, names: Sequence[str], progress: Progress | None = None) -> list[Generation]:
        """Replay the stream from position 0 into new generations, then switch to them atomically.

        The active generations keep serving (and being kept caught up) meanwhile.
        """
        building = self._start_generations(names)
        log.info("rebuilding %s into generation(s) %s", names, [g.generation for g in building])
        while True:
            with write_transaction(self.engine) as conn:
                count, building = self._apply_batch(conn, self._relock(conn, building), self.rebuild_batch_size)
            if progress is not None:
                done = min(g.position for g in building)
                progress(done, max(done, self.head()))
            if count < self.rebuild_batch_size:
                break
        return self._switch(building)

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

    def _switch(self, building: Sequence[Generation]) -> list[Generation]:
        names = [g.name for g in building]
        with write_transaction(self.engine) as conn:
            # Locking the active rows waits for a runner's batch in flight and keeps new ones
            # out, so the last events are applied here and the switch misses none.
            retired = select_generations(conn, names, active=True, lock=True)
            generations = self._relock(conn, building)
            while True:
                count, generations = self._apply_batch(conn, generations, self.rebuild_batch_size)
                if count < self.rebuild_batch_size:
                    break
            activate(conn, generations)
        with write_transaction(self.engine) as conn:
            for generation in retired:
                self._drop(conn, generation)
        log.info("switched %s to generation(s) %s", names, [g.generation for g in generations])
        return generations

    def _drop(self, conn: Connection, generation: Generation) -> None:
        projection = self.projections.get(generation.name)
        if projection is not None:
            for table in projection.tables(generation.generation).values():
                table.drop(conn, checkfirst=True)
            projection.forget(generation.generation)
        delete_generation(conn, generation)


def positions_reached(positions: dict[str, int], position: int, names: Collection[str]) -> bool:
    return all(positions.get(name, -1) >= position for name in names)
