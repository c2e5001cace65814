"""How far each read model has read (`kl_projection_state`) and where it is stuck (`kl_projection_failures`).

A row per projection generation: its position (the last notification id applied) moves only
forward and only from the value its writer read (`advance`), committed with the rows; `active`
marks the generation queries read. The same statements serve SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, Boolean, Column, Integer, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Row

from projections.db import UTCDateTime
from projections.errors import TrackingConflict

STATE = Table(
    "kl_projection_state",
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
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
    conn: Connection, names: Collection[str] | None = None, *, active: bool | None = None, lock: bool | str = False
) -> list[Generation]:
    """Generations, optionally locked (`"skip"`: leaving out rows another process holds; SQLite writers are serial)."""
    query = select(STATE).order_by(STATE.c.name, STATE.c.generation)
    if names is not None:
        query = query.where(STATE.c.name.in_(list(names)))
    if active is not None:
        query = query.where(STATE.c.active == active)
    if lock:
        query = query.with_for_update(skip_locked=lock == "skip")
    return [Generation(*row) for row in conn.execute(query)]


def insert_generation(conn: Connection, name: str, generation: int, version: int, now: datetime) -> Generation:
    new = Generation(name, generation, version, 0, False, now)
    conn.execute(insert(STATE).values(**new._asdict()))
    return new


def advance(conn: Connection, generation: Generation, position: int, now: datetime) -> Generation:
    """Record that `generation` applied everything up to `position`: refused unless its row is where we read it."""
    if position <= generation.position:
        raise TrackingConflict(f"{generation.name}: position {position} is not after {generation.position}")
    moved = update(STATE).where(generation.where(), STATE.c.position == generation.position)
    if conn.execute(moved.values(position=position, updated_at=now)).rowcount != 1:
        raise TrackingConflict(f"{generation.name}: another writer moved its position")
    return generation._replace(position=position, updated_at=now)


def activate(conn: Connection, generations: Collection[Generation]) -> None:
    """Make these generations the active ones of their projections (in one transaction: an atomic switch)."""
    for new in generations:
        conn.execute(update(STATE).where(STATE.c.name == new.name).values(active=STATE.c.generation == new.generation))


def delete_generation(conn: Connection, generation: Generation) -> None:
    conn.execute(delete(STATE).where(generation.where()))


def record_failure(conn: Connection, generation: Generation, error: str, now: datetime) -> None:
    """Record (or count again) that `generation` failed to apply the events after its position."""
    row = conn.execute(select(FAILURES).where(FAILURES.c.name == generation.name).with_for_update()).first()
    again = row is not None and (row.generation, row.position) == (generation.generation, generation.position)
    attempts, since = (row.attempts + 1, row.first_failed_at) if again and row is not None else (1, now)
    conn.execute(delete(FAILURES).where(FAILURES.c.name == generation.name))
    at = {"name": generation.name, "generation": generation.generation, "position": generation.position}
    conn.execute(
        insert(FAILURES).values(**at, error=error[:300], attempts=attempts, first_failed_at=since, last_failed_at=now)
    )


def current_failures(conn: Connection, active: Collection[Generation]) -> dict[str, Row[Any]]:
    """The failures of the active generations still stuck where they failed (rows of FAILURES)."""
    at = {(g.name, g.generation): g.position for g in active}
    return {f.name: f for f in conn.execute(select(FAILURES)) if at.get((f.name, f.generation)) == f.position}
