"""The library's SQLite recorder, extended to write the audit chain in the insert transaction.

SQLite serialises writers: once the events are inserted this transaction holds the
write lock, so reading the chain's head and appending to it cannot interleave with
another writer, and rowid order (the position) is commit order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore, SQLiteFactory
from eventsourcing.utils import strtobool

from adapters.auditchain import tree, writer
from adapters.auditchain.exportrows import StoredRow
from adapters.auditchain.links import GENESIS_POSITION, ChainKey, Link
from adapters.auditchain.merkle import Frontier, Node

BACKFILL_BATCH = 1000


class ChainedSQLiteRecorder(SQLiteApplicationRecorder):
    def __init__(
        self,
        datastore: SQLiteDatastore,
        events_table_name: str = "stored_events",
        chain_key: ChainKey | None = None,
        chain_table_name: str = "audit_chain",
        snapshots_table_name: str = "stored_snapshots",
        tree_prefix: str = "audit_",
    ) -> None:
        self.chain_table_name = chain_table_name  # the base constructor builds the CREATE statements
        self.chain_key = chain_key
        self.tree = SQLiteTree(tree_prefix, events_table_name)
        self.head_guess = tree.HeadGuess()
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
        self.select_rows_statement = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {events} "  # noqa: S608
            "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        )
        self.take_write_lock = f"DELETE FROM {chain} WHERE 0"  # noqa: S608
        self.select_snapshot_ids_statement = f"SELECT DISTINCT originator_id FROM {snapshots_table_name}"  # noqa: S608

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} (position INTEGER PRIMARY KEY, mac BLOB NOT NULL)",
            *self.tree.create_statements(),
        ]

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        positions: Sequence[int] | None = super()._insert_events(c, stored_events, **kwargs)
        if positions:
            new = sorted(zip(positions, stored_events, strict=True), key=lambda pair: pair[0])
            tree.append(self.tree, c, new, self.head_guess)
            if self.chain_key is not None:
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

    def stored_rows(self, after: int, stop: int, limit: int) -> list[StoredRow]:
        """Stored events after position `after` up to `stop`, as plain rows (an export's page: no mapper)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_rows_statement, (after, stop, limit))
            return list(map(StoredRow._make, c.fetchall()))  # no Python call per row

    def select_snapshot_ids(self) -> list[UUID]:
        """Every aggregate that has a snapshot (the snapshots table is the library's)."""
        with self.datastore.transaction(commit=False) as c:
            try:
                c.execute(self.select_snapshot_ids_statement)
            except sqlite3.OperationalError:  # no snapshots table: snapshotting never enabled
                return []
            return [UUID(row[0]) for row in c.fetchall()]

    # --- the Merkle tree ----------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[SQLiteCursor]:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.take_write_lock)
            yield c

    def build_tree(self, progress: Callable[[int], None] = lambda position: None) -> None:
        tree.build(self.tree, self._writing, progress)

    @contextmanager
    def reading(self) -> Iterator[tree.Reading]:
        """The reads of one proof, in one transaction."""
        with self.datastore.transaction(commit=False) as cursor:
            yield tree.Reading(self.tree, cursor)

    def tree_head(self) -> tree.Head | None:
        with self.datastore.transaction(commit=False) as c:
            return self.tree.read_head(c)

    def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        with self.datastore.transaction(commit=False) as c:
            return self.tree.nodes(c, nodes)

    def tree_level(self, level: int, first: int, last: int) -> dict[int, bytes]:
        """The stored nodes of a level from index `first` to `last`: one range read (an export's proofs)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.tree.select_level, (level, first, last))
            return {row[0]: bytes(row[1]) for row in c.fetchall()}

    def leaf_index(self, position: int) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.tree.select_leaf_index, (position,))
            row = c.fetchone()
            return None if row is None else int(row[0])

    def leaves(self, after_index: int, limit: int) -> list[tree.Leaf]:
        """Stored leaves from index after_index + 1: their positions and hashes."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.tree.select_leaves, (after_index, limit))
            return [tree.Leaf(row[0], row[1], bytes(row[2])) for row in c.fetchall()]

    def insert_checkpoint(self, tree_size: int, document: str) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.tree.insert_checkpoint, (tree_size, document))

    def checkpoints(self, latest_only: bool = False) -> list[str]:
        """Stored checkpoints (JSON), oldest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.tree.select_latest_checkpoint if latest_only else self.tree.select_checkpoints)
            return [row[0] for row in c.fetchall()]

    def seal(self) -> None:
        """Start the chain (genesis, then links for events already stored)."""
        if self.chain_key is None:
            return
        with self.datastore.transaction(commit=True) as c:
            # A no-op write takes the write lock first, so no writer slips in between the reads below.
            c.execute(self.take_write_lock)
            self._extend_chain(c, self.chain_key, [])


class SQLiteTree:
    """The tree's statements on SQLite (table names are constants of this module, never input)."""

    def __init__(self, prefix: str, events: str) -> None:
        self.nodes_table, self.head_table = prefix + "tree_nodes", prefix + "tree_head"
        self.checkpoints_table = prefix + "checkpoints"
        nodes, head, cps = self.nodes_table, self.head_table, self.checkpoints_table
        self.select_head = f"SELECT size, last_position, frontier FROM {head} WHERE id = 1"  # noqa: S608
        self.insert_head = f"INSERT INTO {head} (id, size, last_position, frontier) VALUES (1, ?, ?, ?)"  # noqa: S608
        self.update_head = f"UPDATE {head} SET size = ?, last_position = ?, frontier = ? WHERE id = 1"  # noqa: S608
        self.update_head_if = (
            f"UPDATE {head} SET size = ?, last_position = ?, frontier = ? "  # noqa: S608
            "WHERE id = 1 AND size = ? AND last_position = ? AND frontier = ?"
        )
        self.insert_node = f"INSERT INTO {nodes} (level, idx, hash, position) VALUES (?, ?, ?, ?)"  # noqa: S608
        self.select_node = f"SELECT hash FROM {nodes} WHERE level = ? AND idx = ?"  # noqa: S608
        self.select_level = f"SELECT idx, hash FROM {nodes} WHERE level = ? AND idx BETWEEN ? AND ?"  # noqa: S608
        self.select_leaf_index = f"SELECT idx FROM {nodes} WHERE level = 0 AND position = ?"  # noqa: S608
        self.select_leaves = f"SELECT idx, position, hash FROM {nodes} WHERE level = 0 AND idx > ? ORDER BY idx LIMIT ?"  # noqa: S608
        self.select_events_between = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {events} "  # noqa: S608
            "WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?"
        )
        self.insert_checkpoint = f"INSERT INTO {cps} (tree_size, document) VALUES (?, ?)"  # noqa: S608
        self.select_checkpoints = f"SELECT document FROM {cps} ORDER BY seq"  # noqa: S608
        self.select_latest_checkpoint = f"SELECT document FROM {cps} ORDER BY seq DESC LIMIT 1"  # noqa: S608

    def create_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.nodes_table} (level INTEGER NOT NULL, idx INTEGER NOT NULL, "
            "hash BLOB NOT NULL, position INTEGER, PRIMARY KEY (level, idx)) WITHOUT ROWID",
            f"CREATE UNIQUE INDEX IF NOT EXISTS {self.nodes_table}_position ON {self.nodes_table} (position) "
            "WHERE level = 0",
            f"CREATE TABLE IF NOT EXISTS {self.head_table} (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "size INTEGER NOT NULL, last_position INTEGER NOT NULL, frontier BLOB NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints_table} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "tree_size INTEGER NOT NULL, document TEXT NOT NULL)",
        ]

    def read_head(self, cursor: Any) -> tree.Head | None:
        cursor.execute(self.select_head)
        row = cursor.fetchone()
        if row is None:
            return None
        return tree.Head(Frontier.unpack(row[0], bytes(row[2])), row[1])

    def write(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, new_head: bool) -> None:
        cursor.executemany(self.insert_node, rows)
        cursor.execute(
            self.insert_head if new_head else self.update_head,
            head.row(),
        )

    def write_if_head(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, was: tree.Head) -> bool:
        cursor.execute(self.update_head_if, (*head.row(), *was.row()))
        # The library's cursor wraps sqlite3's, which counts the rows the update changed.
        if getattr(cursor, "sqlite_cursor", cursor).rowcount != 1:
            return False
        cursor.executemany(self.insert_node, rows)
        return True

    def events_between(self, cursor: Any, after: int, before: int, limit: int) -> list[tuple[int, tree.Stored]]:
        cursor.execute(self.select_events_between, (after, before, limit))
        return [
            (row[0], StoredEvent(UUID(row[1]), row[2], row[3], tree.raw_state(row[4]))) for row in cursor.fetchall()
        ]

    def nodes(self, cursor: Any, wanted: Iterable[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = {}
        for node in wanted:  # in-process reads: a few microseconds each
            cursor.execute(self.select_node, node)
            row = cursor.fetchone()
            if row is not None:
                found[node] = bytes(row[0])
        return found


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
