"""The library's SQLite recorder, extended to write the audit chain in the insert transaction.

SQLite serialises writers: once the events are inserted this transaction holds the
write lock, so reading the chain's head and appending to it cannot interleave with
another writer, and rowid order (the position) is commit order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore, SQLiteFactory
from eventsourcing.utils import strtobool

from adapters.auditchain import writer
from adapters.auditchain.links import GENESIS_POSITION, ChainKey, Link

BACKFILL_BATCH = 1000


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    def __init__(
        self,
        datastore: SQLiteDatastore,
        events_table_name: str = "stored_events",
        chain_key: ChainKey | None = None,
        chain_table_name: str = "audit_chain",
        snapshots_table_name: str = "stored_snapshots",
    ) -> None:
        self.chain_table_name = chain_table_name  # the base constructor builds the CREATE statements
        self.chain_key = chain_key
        super().__init__(datastore, events_table_name)
        # Table names are constants of this class, never input.
        chain, events = chain_table_name, events_table_name
        self.select_chain_ends = (
            f"SELECT position, mac FROM {chain} WHERE position = ? UNION ALL "  # noqa: S608
            f"SELECT * FROM (SELECT position, mac FROM {chain} ORDER BY position DESC LIMIT 1)"
        )
        self.select_events_between = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {events} "  # noqa: S608
            "WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?"
        )
        self.insert_link = f"INSERT INTO {chain} (position, mac) VALUES (?, ?)"  # noqa: S608
        self.select_links_statement = f"SELECT position, mac FROM {chain} WHERE position > ? ORDER BY position LIMIT ?"  # noqa: S608
        self.select_positions_statement = f"SELECT originator_version, rowid FROM {events} WHERE originator_id = ?"  # noqa: S608
        self.take_write_lock = f"DELETE FROM {chain} WHERE 0"  # noqa: S608
        self.select_snapshot_ids_statement = f"SELECT DISTINCT originator_id FROM {snapshots_table_name}"  # noqa: S608

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} (position INTEGER PRIMARY KEY, mac BLOB NOT NULL)",
        ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        positions: Sequence[int] | None = super()._insert_events(c, stored_events, **kwargs)
        if self.chain_key is not None and positions:
            new = sorted(zip(positions, stored_events, strict=True), key=lambda pair: pair[0])
            self._extend_chain(c, self.chain_key, new)
        return positions

    def _extend_chain(self, c: SQLiteCursor, key: ChainKey, new: list[tuple[int, StoredEvent]]) -> None:
        c.execute(self.select_chain_ends, (GENESIS_POSITION,))
        ends = [Link(row[0], bytes(row[1])) for row in c.fetchall()]
        genesis = ends[0] if ends and ends[0].position == GENESIS_POSITION else None
        start = writer.start(key, genesis, ends[-1] if ends else None)
        self._write_links(c, start.new_links)
        previous = start.previous
        if start.needs_backfill:
            for batch in self._events_before(c, new[0][0] if new else None):
                links = writer.extend(key, previous, batch)
                self._write_links(c, links)
                previous = links[-1]
        self._write_links(c, writer.extend(key, previous, new))

    def _events_before(self, c: SQLiteCursor, stop: int | None) -> Iterator[list[tuple[int, StoredEvent]]]:
        after = 0
        while True:
            c.execute(self.select_events_between, (after, stop if stop is not None else 2**63 - 1, BACKFILL_BATCH))
            rows = c.fetchall()
            if not rows:
                return
            yield [
                (
                    row[0],
                    StoredEvent(self.convert_originator_id(row[1]), row[2], row[3], bytes(row[4])),
                )
                for row in rows
            ]
            after = rows[-1][0]

    def _write_links(self, c: SQLiteCursor, links: list[Link]) -> None:
        if links:
            c.executemany(self.insert_link, [(link.position, link.mac) for link in links])

    # --- what the audit tools read -------------------------------------

    def select_links(self, gt: int, limit: int) -> list[Link]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_links_statement, (gt, limit))
            return [Link(row[0], bytes(row[1])) for row in c.fetchall()]

    def select_positions(self, originator_id: UUID) -> dict[int, int]:
        """Stream position of each version of one aggregate."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_positions_statement, (originator_id.hex,))
            return {row[0]: row[1] for row in c.fetchall()}

    def select_snapshot_ids(self) -> list[UUID]:
        """Every aggregate that has a snapshot (the snapshots table is the library's)."""
        with self.datastore.transaction(commit=False) as c:
            try:
                c.execute(self.select_snapshot_ids_statement)
            except sqlite3.OperationalError:  # no snapshots table: snapshotting never enabled
                return []
            return [UUID(row[0]) for row in c.fetchall()]

    def seal(self) -> None:
        """Start the chain (genesis, then links for events already stored)."""
        if self.chain_key is None:
            return
        with self.datastore.transaction(commit=True) as c:
            # A no-op write takes the write lock first, so no writer slips in between the reads below.
            c.execute(self.take_write_lock)
            self._extend_chain(c, self.chain_key, [])


class Factory(SQLiteFactory):
    """`eventsourcing.sqlite`'s factory, with the chained application recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        recorder = ChainedSQLiteRecorder(
            datastore=self.datastore, chain_key=writer.key_from_env(self.env.get(writer.ENV_KEY))
        )
        if self.env_create_table():
            recorder.create_table()
        writer.open_chain(recorder, writes=bool(strtobool(self.env.get(writer.ENV_STARTUP_CHECK, "y"))))
        return recorder
