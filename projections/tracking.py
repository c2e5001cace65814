"""How far each read model has read: one row per projection generation, written with its rows.

`kl_projection_state` holds (name, generation, version, position, active). The
active generation of a projection is the one queries read and the runner keeps
caught up; a rebuild fills a new, inactive generation and then flips `active`
in one transaction. `position` is the last notification id applied: it only
moves forward and only from the value the writer read (see `advance`), like the
library's tracking records.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)
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
    # A building generation's heartbeat: a rebuild whose heartbeat stopped was abandoned.
    Column("updated_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    version: int
    position: int
    active: bool
    updated_at: datetime


def _generation(row: Row[tuple[str, int, int, int, bool, datetime]]) -> Generation:
    return Generation(*row)


def select_generations(
    conn: Connection,
    names: Collection[str] | None = None,
    *,
    active: bool | None = None,
    lock: bool = False,
    skip_locked: bool = False,
) -> list[Generation]:
    """Generations, optionally locked for this transaction.

    On PostgreSQL `skip_locked` leaves out rows another process is writing
    right now, so several runners never apply the same batch; SQLite has no row
    locks but serialises writers (BEGIN IMMEDIATE).
    """
    query = select(STATE).order_by(STATE.c.name, STATE.c.generation)
    if names is not None:
        query = query.where(STATE.c.name.in_(list(names)))
    if active is not None:
        query = query.where(STATE.c.active == active)
    if lock:
        query = query.with_for_update(skip_locked=skip_locked)
    return [_generation(row) for row in conn.execute(query)]


def insert_generation(conn: Connection, name: str, generation: int, version: int, now: datetime) -> Generation:
    new = Generation(name, generation, version, 0, False, now)
    conn.execute(insert(STATE).values(**vars(new)))
    return new


def advance(conn: Connection, generations: Sequence[Generation], position: int, now: datetime) -> list[Generation]:
    """Record that these generations applied everything up to `position`, in the caller's transaction.

    One statement for all of them; each row must still hold the position its writer read.
    """
    if not generations:
        return []
    behind = [g for g in generations if g.position >= position]
    if behind:
        raise TrackingConflict(f"{behind[0].name}: position {position} is not after {behind[0].position}")
    result = conn.execute(
        update(STATE)
        .where(
            or_(
                *(
                    and_(
                        STATE.c.name == g.name,
                        STATE.c.generation == g.generation,
                        STATE.c.position == g.position,
                    )
                    for g in generations
                )
            )
        )
        .values(position=position, updated_at=now)
    )
    if result.rowcount != len(generations):
        raise TrackingConflict("another writer moved a position")
    return [replace(g, position=position, updated_at=now) for g in generations]


def touch(conn: Connection, generations: Sequence[Generation], now: datetime) -> None:
    """A building generation's heartbeat, without moving its position."""
    for g in generations:
        conn.execute(
            update(STATE).where(and_(STATE.c.name == g.name, STATE.c.generation == g.generation)).values(updated_at=now)
        )


def activate(conn: Connection, generations: Collection[Generation]) -> None:
    """Make these generations the active ones of their projections (one transaction: an atomic switch)."""
    for new in generations:
        conn.execute(update(STATE).where(STATE.c.name == new.name).values(active=False))
        conn.execute(
            update(STATE)
            .where(and_(STATE.c.name == new.name, STATE.c.generation == new.generation))
            .values(active=True)
        )


def delete_generation(conn: Connection, generation: Generation) -> None:
    conn.execute(
        delete(STATE).where(and_(STATE.c.name == generation.name, STATE.c.generation == generation.generation))
    )


# A read model that cannot apply an event: reported by whichever process tried, read by every
# process's status. Current only while its generation is still at `position` (once it moves on,
# the row is stale and dropped), so a process running fixed code clears it by advancing.
FAILURES = Table(
    "kl_projection_failures",
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),  # the last one applied: the failing event is after it
    Column("error", String(300), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", UTCDateTime, nullable=False),
    Column("last_failed_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class Failure:
    name: str
    generation: int
    position: int
    error: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


def record_failure(conn: Connection, generation: Generation, error: str, now: datetime) -> Failure:
    """Record (or count again) that `generation` failed to apply the events after its position."""
    row = conn.execute(select(FAILURES).where(FAILURES.c.name == generation.name).with_for_update()).first()
    same = row is not None and (row.generation, row.position) == (generation.generation, generation.position)
    failure = Failure(
        generation.name,
        generation.generation,
        generation.position,
        error[:300],
        row.attempts + 1 if same and row is not None else 1,
        row.first_failed_at if same and row is not None else now,
        now,
    )
    conn.execute(delete(FAILURES).where(FAILURES.c.name == generation.name))
    conn.execute(insert(FAILURES).values(**vars(failure)))
    return failure


def current_failures(conn: Connection, active: Collection[Generation]) -> dict[str, Failure]:
    """The failures of the active generations still stuck where they failed."""
    at = {(g.name, g.generation): g.position for g in active}
    failures = [Failure(*row) for row in conn.execute(select(FAILURES))]
    return {f.name: f for f in failures if at.get((f.name, f.generation)) == f.position}
