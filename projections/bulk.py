"""The fast rebuild, an optional strategy of `Runner.rebuild` on the runner's fold and commit: many batches folded
per commit, projections spread over processes, rows written in bulk (DEVELOPERS.md, "Read models")."""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from eventsourcing.utils import get_topic, resolve_topic
from sqlalchemy import JSON, Date, Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect

from domain.application import KeyLedger
from domain.timefmt import clamp_utc
from projections import db
from projections.db import DatabaseSettings, LockTaken, read_transaction, write_transaction
from projections.runner import Generation, Pending, Progress, Runner
from projections.schema import UTCDateTime

MAX_PENDING = 100_000  # rows of one projection's pending changes: about 30 MB, written in one transaction
HEARTBEAT_INTERVAL = 5.0  # at least this often every building generation's position is written
MIN_EVENTS = 50_000  # below this backlog, starting processes (a second: imports) costs more than it saves
Rows = Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]
Names = Sequence[str]


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


def insert_rows(
    conn: Connection, table: Table, rows: Rows, add: Names = (), latest: Names = (), earliest: Names = ()
) -> None:
    """Insert rows: value tuples in the table's column order, or mappings by column name.

    With `add`, a row whose primary key is stored adds its `add` columns to the stored ones and keeps the greater
    of the stored and new `latest` values and the lesser of the `earliest` ones (NULL: the other); the rows must
    then have distinct keys (PostgreSQL refuses to update one row twice in one statement).
    """
    if not rows:
        return
    sql, converters = _statement(conn.dialect, table, tuple(add), tuple(latest), tuple(earliest))
    if isinstance(rows[0], Mapping):
        rows = [[row[c.name] for c in table.c] for row in rows]  # type: ignore[call-overload]
    # Column by column: one C-level map per column rather than a Python loop per value.
    columns = [
        list(map(convert, column)) if convert else list(column)
        for convert, column in zip(converters, zip(*rows, strict=True), strict=True)
    ]
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(sql, tuple(columns))  # one parameter set: the arrays
    else:
        conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


@functools.lru_cache(maxsize=256)
def _statement(
    dialect: Dialect, table: Table, add: Names, latest: Names, earliest: Names
) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """A Core insert's text, compiled once per table, and each column's converter: one executemany on SQLite, one
    `INSERT ... SELECT FROM unnest(%b::type[])` on PostgreSQL.

    Not `conn.execute(insert, rows)`: a one-process rebuild took 43 % longer on PostgreSQL and 16 % on SQLite (its
    ratio to read+decode 15 % lower when measured again, December 2026), where it must not slow down (DEVELOPERS.md).
    """
    insert: Any = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(table)
    if add:
        changes = {name: table.c[name] + insert.excluded[name] for name in add}
        for names, postgres, lite in ((latest, func.greatest, func.max), (earliest, func.least, func.min)):
            for name in names:
                stored, new = table.c[name], insert.excluded[name]
                # PostgreSQL's greatest/least skip NULLs; SQLite's two-argument max/min answer NULL for one.
                changes[name] = (
                    postgres(stored, new)
                    if dialect.name == "postgresql"
                    else lite(func.coalesce(stored, new), func.coalesce(new, stored))
                )
        insert = insert.on_conflict_do_update(index_elements=list(table.primary_key), set_=changes)
    sql = str(insert.compile(dialect=dialect))  # on SQLite its parameters are the columns in order
    if dialect.name == "postgresql":  # %b: binary arrays, far cheaper than text; JSON travels as text, cast back
        quote, json = dialect.identifier_preparer.quote, [isinstance(c.type, JSON) for c in table.c]
        columns = ", ".join(quote(c.name) for c in table.c)
        types = ["text" if j else c.type.compile(dialect=dialect) for c, j in zip(table.c, json, strict=True)]
        values = ", ".join(f"v.{quote(c.name)}{'::json' if j else ''}" for c, j in zip(table.c, json, strict=True))
        _, on, conflict = sql.partition(" ON CONFLICT ")
        # Only our own table and column names, quoted by the dialect: no input reaches this text.
        source = f"SELECT {values} FROM unnest({', '.join(f'%b::{t}[]' for t in types)}) AS v({columns})"  # noqa: S608
        sql = f"INSERT INTO {quote(table.name)} ({columns}) {source}{on}{conflict}"
    return sql, [_converter(dialect, c.type) for c in table.c]


def _converter(dialect: Dialect, type_: Any) -> Callable[[Any], Any] | None:
    """The dialect's own bind processor, but for times and days on SQLite: the same text, formatted in C (2-3x faster
    per value; SQLAlchemy's UUID processor is as fast as one can be)."""
    fast: dict[type, Callable[[Any], Any]] = {UTCDateTime: sqlite_utc_text, Date: sqlite_date_text}
    kind = next((k for k in fast if isinstance(type_, k)), None) if dialect.name == "sqlite" else None
    return fast[kind] if kind else type_.dialect_impl(dialect).bind_processor(dialect)


def sqlite_utc_text(value: datetime | None) -> str | None:
    if value is not None and value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime: read models store aware UTC times only")
        value = clamp_utc(value)
    return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_date_text(value: date | None) -> str | None:
    # date's own method, also for a datetime: SQLAlchemy stores a datetime's date part in a Date column.
    return None if value is None else date.isoformat(value)
