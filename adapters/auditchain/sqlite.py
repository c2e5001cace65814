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

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as c:
            self.tree.migrate(c)
            self._create_table(c)

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
        """The stored nodes of a level from index `first` to `last` (an export's proofs)."""
        with self.datastore.transaction(commit=False) as c:
            return self.tree.level(c, level, first, last)

    def leaf_index(self, position: int) -> int | None:
        with self.datastore.transaction(commit=False) as c:
            return self.tree.leaf_index(c, position)

    def leaves(self, after_index: int, limit: int) -> list[tree.Leaf]:
        """Stored leaves from index after_index + 1: their positions and hashes."""
        with self.datastore.transaction(commit=False) as c:
            return self.tree.leaves(c, after_index, limit)

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
    """The tree's statements on SQLite (table names are constants of this module, never input).

    Nodes are keyed by the last leaf they cover and their level, (ending, level): the nodes one
    save adds all end at its leaves, so they go to one page at the table's right edge. Keyed by
    (level, idx) with an index on the leaves' positions, as before, a save wrote a page per level
    it reached plus the index's: most of what the tree added to a command was SQLite writing those
    pages at commit. An event's leaf is found without that index: leaves are in position order and
    SQLite hands out rowids without gaps, so the leaf of position p is at index p - 1 unless events
    were removed (then a binary search over the leaves).
    """

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
        self.insert_node = f"INSERT INTO {nodes} (ending, level, hash, position) VALUES (?, ?, ?, ?)"  # noqa: S608
        self.select_node = f"SELECT hash FROM {nodes} WHERE ending = ? AND level = ?"  # noqa: S608
        # A low level's nodes are most of the rows in their range of endings: one range scan. A higher level's
        # endings step by 2**level: generated in SQL, one lookup each.
        self.select_level_range = f"SELECT ending, hash FROM {nodes} WHERE ending BETWEEN ? AND ? AND level = ?"  # noqa: S608
        self.select_level = (
            "WITH RECURSIVE e(ending) AS (SELECT ? UNION ALL SELECT ending + ? FROM e WHERE ending + ? <= ?) "  # noqa: S608
            f"SELECT n.ending, n.hash FROM e JOIN {nodes} n ON n.ending = e.ending AND n.level = ?"
        )
        self.select_leaf_from = (
            f"SELECT ending, position FROM {nodes} WHERE ending >= ? AND level = 0 ORDER BY ending LIMIT 1"  # noqa: S608
        )
        self.select_last_leaf = f"SELECT max(ending) FROM {nodes}"  # noqa: S608
        self.select_leaves = (
            f"SELECT ending, position, hash FROM {nodes} WHERE ending > ? AND level = 0 ORDER BY ending LIMIT ?"  # noqa: S608
        )
        self.select_events_between = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {events} "  # noqa: S608
            "WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?"
        )
        self.insert_checkpoint = f"INSERT INTO {cps} (tree_size, document) VALUES (?, ?)"  # noqa: S608
        self.select_checkpoints = f"SELECT document FROM {cps} ORDER BY seq"  # noqa: S608
        self.select_latest_checkpoint = f"SELECT document FROM {cps} ORDER BY seq DESC LIMIT 1"  # noqa: S608

    def create_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.nodes_table} (ending INTEGER NOT NULL, level INTEGER NOT NULL, "
            "hash BLOB NOT NULL, position INTEGER, PRIMARY KEY (ending, level)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {self.head_table} (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "size INTEGER NOT NULL, last_position INTEGER NOT NULL, frontier BLOB NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints_table} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "tree_size INTEGER NOT NULL, document TEXT NOT NULL)",
        ]

    def migrate(self, cursor: Any) -> None:
        """Re-key the nodes of a store written with the (level, idx) layout, hashes untouched (one transaction)."""
        nodes, old = self.nodes_table, self.nodes_table + "_by_level"
        cursor.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = 'idx'", (nodes,))
        if cursor.fetchone() is None:
            return
        cursor.execute(f"ALTER TABLE {nodes} RENAME TO {old}")
        cursor.execute(self.create_statements()[0])
        cursor.execute(
            f"INSERT INTO {nodes} (ending, level, hash, position) "  # noqa: S608
            f"SELECT ((idx + 1) << level) - 1, level, hash, position FROM {old}"
        )
        cursor.execute(f"DROP TABLE {old}")  # and its index on the leaves' positions

    def read_head(self, cursor: Any) -> tree.Head | None:
        cursor.execute(self.select_head)
        row = cursor.fetchone()
        if row is None:
            return None
        return tree.Head(Frontier.unpack(row[0], bytes(row[2])), row[1])

    def write(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, new_head: bool) -> None:
        cursor.executemany(self.insert_node, _keyed(rows))
        cursor.execute(
            self.insert_head if new_head else self.update_head,
            head.row(),
        )

    def write_if_head(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, was: tree.Head) -> bool:
        cursor.execute(self.update_head_if, (*head.row(), *was.row()))
        # The library's cursor wraps sqlite3's, which counts the rows the update changed.
        if getattr(cursor, "sqlite_cursor", cursor).rowcount != 1:
            return False
        cursor.executemany(self.insert_node, _keyed(rows))
        return True

    def events_between(self, cursor: Any, after: int, before: int, limit: int) -> list[tuple[int, tree.Stored]]:
        cursor.execute(self.select_events_between, (after, before, limit))
        return [
            (row[0], StoredEvent(UUID(row[1]), row[2], row[3], tree.raw_state(row[4]))) for row in cursor.fetchall()
        ]

    def nodes(self, cursor: Any, wanted: Iterable[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = {}
        for level, idx in wanted:  # in-process reads: a few microseconds each
            cursor.execute(self.select_node, (_ending(level, idx), level))
            row = cursor.fetchone()
            if row is not None:
                found[(level, idx)] = bytes(row[0])
        return found

    def level(self, cursor: Any, level: int, first: int, last: int) -> dict[int, bytes]:
        step, start, end = 1 << level, _ending(level, first), _ending(level, last)
        if level <= 1:
            cursor.execute(self.select_level_range, (start, end, level))
        else:
            cursor.execute(self.select_level, (start, step, step, end, level))
        return {((row[0] + 1) >> level) - 1: bytes(row[1]) for row in cursor.fetchall()}

    def leaves(self, cursor: Any, after_index: int, limit: int) -> list[tree.Leaf]:
        cursor.execute(self.select_leaves, (after_index, limit))
        return [tree.Leaf(row[0], row[1], bytes(row[2])) for row in cursor.fetchall()]

    def leaf_index(self, cursor: Any, position: int) -> int | None:
        found = self._leaf_from(cursor, position - 1)
        if found is not None and found[1] == position:
            return found[0]
        cursor.execute(self.select_last_leaf)
        last = cursor.fetchone()[0]
        low, high = 0, -1 if last is None else last + 1
        while low < high:  # the first stored leaf whose position is not below `position`
            middle = (low + high) // 2
            found = self._leaf_from(cursor, middle)
            if found is None or found[1] >= position:
                high = middle
            else:
                low = found[0] + 1
        found = self._leaf_from(cursor, low)
        return found[0] if found is not None and found[1] == position else None

    def _leaf_from(self, cursor: Any, index: int) -> tuple[int, int] | None:
        """(index, position) of the first stored leaf at or after `index`: removed leaves do not stop a search."""
        cursor.execute(self.select_leaf_from, (max(index, 0),))
        row = cursor.fetchone()
        return None if row is None else (row[0], row[1])


def _ending(level: int, idx: int) -> int:
    """The index of the last leaf under node (level, idx)."""
    return ((idx + 1) << level) - 1


def _keyed(rows: list[tree.NodeRow]) -> list[tuple[int, int, bytes, int | None]]:
    return [(_ending(level, idx), level, hash_, position) for level, idx, hash_, position in rows]


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
