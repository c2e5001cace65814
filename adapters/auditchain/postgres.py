"""The library's PostgreSQL recorder, extended to write the audit chain in the insert transaction.

The library serialises inserting transactions with an EXCLUSIVE lock on the events
table, so positions are handed out in commit order. The chain is read and extended
after that lock is taken, in the same transaction: chain order is commit order, and
a rolled-back insert leaves neither events nor links (only a gap in positions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, DataError, InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, retry, strtobool
from psycopg import Connection, Cursor, errors
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composable, Composed, Identifier
from psycopg_pool import PoolTimeout

from adapters.auditchain import tree, writer
from adapters.auditchain.exportrows import StoredRow
from adapters.auditchain.links import GENESIS_POSITION, ChainKey, Link
from adapters.auditchain.merkle import Frontier, Node

BACKFILL_BATCH = 1000
# A page "after P, in order, LIMIT n" must walk the index from P, whatever the statistics say: freshly
# written tables (no ANALYZE yet) got a bitmap scan of every later row and a sort, per page (quadratic).
IN_INDEX_ORDER = "SET LOCAL enable_sort = off"
SMALL_WRITE = 32  # tree nodes a save writes as a VALUES list (see PostgresTree._write_statement)


class ChainedPostgresRecorder(PostgresApplicationRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        chain_key: ChainKey | None = None,
        snapshots_table_name: str = "stored_snapshots",
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_key = chain_key
        self.chain_table_name = events_table_name.removesuffix("_events") + "_audit_chain"
        self.check_identifier_length(self.chain_table_name)
        self.tree = PostgresTree(
            self.datastore.schema, events_table_name.removesuffix("_events") + "_audit_", events_table_name
        )
        self.sql_create_statements.extend(self.tree.create_statements())
        self.head_guess = tree.HeadGuess()
        schema, chain, events = (
            Identifier(self.datastore.schema),
            Identifier(self.chain_table_name),
            Identifier(self.events_table_name),
        )
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {}.{} (position bigint PRIMARY KEY, mac bytea NOT NULL)").format(
                schema, chain
            )
        )
        # Which row got which position, whatever order RETURNING lists them in.
        self.insert_events_statement += SQL(", originator_id, originator_version")
        self.select_chain_ends = SQL(
            "SELECT position, mac FROM {0}.{1} WHERE position = %s "
            "UNION ALL (SELECT position, mac FROM {0}.{1} ORDER BY position DESC LIMIT 1)"
        ).format(schema, chain)
        self.insert_links = SQL(
            "INSERT INTO {}.{} (position, mac) SELECT * FROM unnest(%s::bigint[], %s::bytea[])"
        ).format(schema, chain)
        self.select_links_statement = SQL(
            "SELECT position, mac FROM {}.{} WHERE position > %s ORDER BY position LIMIT %s"
        ).format(schema, chain)
        self.select_events_between = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s AND notification_id < %s ORDER BY notification_id LIMIT %s"
        ).format(schema, events)
        self.select_rows_statement = SQL(
            "SELECT notification_id, originator_id::text, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id LIMIT %s"
        ).format(schema, events)
        self.select_snapshot_ids_statement = SQL("SELECT DISTINCT originator_id FROM {}.{}").format(
            schema, Identifier(snapshots_table_name)
        )
        self.snapshots_regclass = f'"{self.datastore.schema}"."{snapshots_table_name}"'
        self.select_positions_statement = SQL(
            "SELECT originator_version, notification_id FROM {}.{} WHERE originator_id = %s"
        ).format(schema, events)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        positions: Sequence[int] | None
        if not stored_events:
            positions = super().insert_events(stored_events, **kwargs)
        else:
            positions = self._insert_audited(stored_events, **kwargs)
        return positions

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as the library's insert
    def _insert_audited(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        try:
            return self._insert_pipelined(stored_events, **kwargs)
        except BaseException as error:
            self.head_guess.missed()  # whatever this save's head was, it is not stored
            if not isinstance(error, DataError) or not isinstance(error.__cause__, errors.DivisionByZero):
                raise
        # The tree's guarded write failed: the head had moved (nothing was written). Read it this time.
        return self._insert_pipelined(stored_events, **kwargs)

    def _insert_pipelined(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        """Insert, add leaves (and links) and commit in one transaction, pipelined as the library's insert is.

        Two round trips when the head guess holds: the insert (its positions are needed for the leaves),
        then the tree's write with the commit. An error while adding leaves or links rolls the events back too.
        """
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._insert_stored_events(curs, stored_events, **kwargs)  # locks the table, then inserts
            pipeline.sync()
            rows = curs.fetchall()
            by_version = {(r["originator_id"], r["originator_version"]): r["notification_id"] for r in rows}
            new = sorted(
                ((by_version[(e.originator_id, e.originator_version)], e) for e in stored_events),
                key=lambda pair: pair[0],
            )
            tree.append(self.tree, curs, new, self.head_guess)
            if self.chain_key is not None:
                self._extend_chain(curs, self.chain_key, new)
        return [r["notification_id"] for r in rows]

    def _extend_chain(self, curs: Cursor[DictRow], key: ChainKey, new: list[tuple[int, StoredEvent]]) -> None:
        curs.execute(self.select_chain_ends, (GENESIS_POSITION,))
        ends = [Link(r["position"], bytes(r["mac"])) for r in curs.fetchall()]
        genesis = ends[0] if ends and ends[0].position == GENESIS_POSITION else None
        start = writer.start(key, genesis, ends[-1] if ends else None)
        self._write_links(curs, start.new_links)
        previous = start.previous
        if start.needs_backfill:
            for batch in self._events_before(curs, new[0][0] if new else None):
                links = writer.extend(key, previous, batch)
                self._write_links(curs, links)
                previous = links[-1]
        self._write_links(curs, writer.extend(key, previous, new))

    def _events_before(self, curs: Cursor[DictRow], stop: int | None) -> Iterator[list[tuple[int, StoredEvent]]]:
        after = 0
        while True:
            curs.execute(self.select_events_between, (after, stop or 2**63 - 1, BACKFILL_BATCH))
            rows = curs.fetchall()
            if not rows:
                return
            yield [
                (
                    r["notification_id"],
                    StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"])),
                )
                for r in rows
            ]
            after = rows[-1]["notification_id"]

    def _write_links(self, curs: Cursor[DictRow], links: list[Link]) -> None:
        if links:
            curs.execute(self.insert_links, ([link.position for link in links], [link.mac for link in links]))

    # --- what the audit tools read -------------------------------------

    def select_links(self, gt: int, limit: int) -> list[Link]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_links_statement, (gt, limit))
            return [Link(r["position"], bytes(r["mac"])) for r in curs.fetchall()]

    def stored_rows(self, after: int, stop: int, limit: int) -> list[StoredRow]:
        """Stored events after position `after` up to `stop`, as plain rows (an export's page: no mapper)."""
        # Tuples, not the library's dict rows: no Python call per row.
        with self.datastore.transaction(commit=False) as curs, curs.connection.cursor(row_factory=tuple_row) as rows:
            rows.execute(IN_INDEX_ORDER)
            rows.execute(self.select_rows_statement, (after, stop, limit))
            return list(map(StoredRow._make, rows.fetchall()))

    def select_positions(self, originator_id: UUID) -> dict[int, int]:
        """Stream position of each version of one aggregate."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_positions_statement, (originator_id,))
            return {r["originator_version"]: r["notification_id"] for r in curs.fetchall()}

    def select_snapshot_ids(self) -> list[UUID]:
        """Every aggregate that has a snapshot (the snapshots table is the library's)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT to_regclass(%s) AS t", (self.snapshots_regclass,))
            found = curs.fetchone()
            if found is None or found["t"] is None:  # snapshotting never enabled
                return []
            curs.execute(self.select_snapshot_ids_statement)
            return [r["originator_id"] for r in curs.fetchall()]

    # --- the Merkle tree ----------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[Cursor[DictRow]]:
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            yield curs

    def build_tree(self, progress: Callable[[int], None] = lambda position: None) -> None:
        tree.build(self.tree, self._writing, progress)

    @contextmanager
    def reading(self) -> Iterator[tree.Reading]:
        """The reads of one proof, in one transaction."""
        with self.datastore.transaction(commit=False) as cursor:
            yield tree.Reading(self.tree, cursor)

    def tree_head(self) -> tree.Head | None:
        with self.datastore.transaction(commit=False) as curs:
            return self.tree.read_head(curs)

    def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        with self.datastore.transaction(commit=False) as curs:
            return self.tree.nodes(curs, nodes)

    def leaf_index(self, position: int) -> int | None:
        with self.datastore.transaction(commit=False) as curs:
            return self.tree.leaf_index(curs, position)

    def tree_level(self, level: int, first: int, last: int) -> dict[int, bytes]:
        """The stored nodes of a level from index `first` to `last`: one range read (an export's proofs)."""
        with self.datastore.transaction(commit=False) as curs:
            return self.tree.level(curs, level, first, last)

    def leaves(self, after_index: int, limit: int) -> list[tree.Leaf]:
        """Stored leaves from index after_index + 1: their positions and hashes."""
        with self.datastore.transaction(commit=False) as curs:
            return self.tree.leaves(curs, after_index, limit)

    def insert_checkpoint(self, tree_size: int, document: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.tree.insert_checkpoint, (tree_size, document))

    def checkpoints(self, latest_only: bool = False) -> list[str]:
        """Stored checkpoints (JSON), oldest first."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.tree.select_latest_checkpoint if latest_only else self.tree.select_checkpoints)
            return [r["document"] for r in curs.fetchall()]

    def seal(self) -> None:
        """Start the chain (genesis, then links for events already stored), under the table lock."""
        if self.chain_key is None:
            return
        with self.datastore.transaction(commit=True) as curs:
            self._lock_table(curs)
            self._extend_chain(curs, self.chain_key, [])


class PostgresTree:
    """The tree's statements on PostgreSQL."""

    def __init__(self, schema: str, prefix: str, events: str) -> None:
        s = Identifier(schema)
        nodes, head = Identifier(prefix + "tree_nodes"), Identifier(prefix + "tree_head")
        cps, ev = Identifier(prefix + "checkpoints"), Identifier(events)
        self.create = [
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (level smallint NOT NULL, idx bigint NOT NULL, "
                "hash bytea NOT NULL, position bigint, PRIMARY KEY (level, idx))"
            ).format(s, nodes),
            SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {}.{} (position) WHERE level = 0").format(
                Identifier(prefix + "tree_nodes_position"), s, nodes
            ),
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (id int PRIMARY KEY CHECK (id = 1), size bigint NOT NULL, "
                "last_position bigint NOT NULL, frontier bytea NOT NULL)"
            ).format(s, head),
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (seq bigserial PRIMARY KEY, tree_size bigint NOT NULL, "
                "document text NOT NULL)"
            ).format(s, cps),
        ]
        self.select_head = SQL("SELECT size, last_position, frontier FROM {}.{} WHERE id = 1").format(s, head)
        self.nodes_identifier, self.head_identifier = nodes, head
        self.schema_identifier = s
        self._writes: dict[tuple[bool, int], str] = {}
        self.select_nodes = SQL(
            "SELECT n.level, n.idx, n.hash FROM {}.{} n JOIN unnest(%s::smallint[], %s::bigint[]) AS w(level, idx) "
            "ON n.level = w.level AND n.idx = w.idx"
        ).format(s, nodes)
        self.select_level = SQL("SELECT idx, hash FROM {}.{} WHERE level = %s AND idx BETWEEN %s AND %s").format(
            s, nodes
        )
        self.select_leaf_index = SQL("SELECT idx FROM {}.{} WHERE level = 0 AND position = %s").format(s, nodes)
        self.select_leaves = SQL(
            "SELECT idx, position, hash FROM {}.{} WHERE level = 0 AND idx > %s ORDER BY idx LIMIT %s"
        ).format(s, nodes)
        self.select_events_between = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id > %s AND notification_id < %s ORDER BY notification_id LIMIT %s"
        ).format(s, ev)
        self.insert_checkpoint = SQL("INSERT INTO {}.{} (tree_size, document) VALUES (%s, %s)").format(s, cps)
        self.select_checkpoints = SQL("SELECT document FROM {}.{} ORDER BY seq").format(s, cps)
        self.select_latest_checkpoint = SQL("SELECT document FROM {}.{} ORDER BY seq DESC LIMIT 1").format(s, cps)

    def create_statements(self) -> list[Composed]:
        return self.create

    def read_head(self, cursor: Any) -> tree.Head | None:
        cursor.execute(self.select_head)
        row = cursor.fetchone()
        if row is None:
            return None
        return tree.Head(Frontier.unpack(row["size"], bytes(row["frontier"])), row["last_position"])

    def write(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, new_head: bool) -> None:
        cursor.execute(self._write_statement(False, len(rows)), (*_node_params(rows), *head.row()))

    def write_if_head(self, cursor: Any, rows: list[tree.NodeRow], head: tree.Head, was: tree.Head) -> bool:
        # Sent with the commit, no answer awaited: a head that moved fails the statement (1 / 0), which
        # rolls the whole insert back, and the recorder inserts again reading the head.
        # Size and last position name a head: positions come from a sequence and are never handed out twice.
        cursor.execute(
            self._write_statement(True, len(rows)),
            (*head.row(), was.frontier.size, was.last_position, *_node_params(rows)),
        )
        return True

    def _write_statement(self, guarded: bool, count: int) -> str:
        """The whole write in one statement: the nodes, then the head (`guarded`: only if the head is still `was`).

        A save's few nodes go as a VALUES list, a statement per count (psycopg prepares each after a few
        uses): the same rows sent as arrays to unnest took 100-150 us more a save on the server. A
        tree's build writes thousands of rows at once: arrays then (fewer parameters than the protocol's limit).
        Kept as text: composing it again for every save cost tens of microseconds.
        """
        key = (guarded, 0 if _as_arrays(count) else count)
        if key not in self._writes:
            rows: Composable
            if _as_arrays(count):
                rows = SQL("SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[], %s::bigint[])")
            else:
                one = SQL("(%s::smallint, %s::bigint, %s::bytea, %s::bigint)")
                rows = SQL("SELECT * FROM (VALUES {}) AS v").format(SQL(", ").join([one] * count))
            names = (self.schema_identifier, self.nodes_identifier, self.head_identifier)
            if guarded:
                statement = SQL(
                    "WITH h AS (UPDATE {0}.{2} SET size = %s, last_position = %s, frontier = %s "
                    "WHERE id = 1 AND size = %s AND last_position = %s RETURNING 1), "
                    "n AS (INSERT INTO {0}.{1} (level, idx, hash, position) {3} WHERE EXISTS (SELECT 1 FROM h)) "
                    "SELECT 1 / count(*) FROM h"
                ).format(*names, rows)
            else:
                statement = SQL(
                    "WITH n AS (INSERT INTO {0}.{1} (level, idx, hash, position) {3}) "
                    "INSERT INTO {0}.{2} (id, size, last_position, frontier) VALUES (1, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET size = excluded.size, last_position = excluded.last_position, "
                    "frontier = excluded.frontier"
                ).format(*names, rows)
            self._writes[key] = statement.as_string(None)
        return self._writes[key]

    def events_between(self, cursor: Any, after: int, before: int, limit: int) -> list[tuple[int, tree.Stored]]:
        cursor.execute(self.select_events_between, (after, before, limit))
        return [
            (
                r["notification_id"],
                StoredEvent(r["originator_id"], r["originator_version"], r["topic"], tree.raw_state(r["state"])),
            )
            for r in cursor.fetchall()
        ]

    def nodes(self, cursor: Any, wanted: Iterable[Node]) -> dict[Node, bytes]:
        keys = list(wanted)
        cursor.execute(self.select_nodes, ([level for level, _ in keys], [idx for _, idx in keys]))
        return {(r["level"], r["idx"]): bytes(r["hash"]) for r in cursor.fetchall()}

    def level(self, cursor: Any, level: int, first: int, last: int) -> dict[int, bytes]:
        cursor.execute(self.select_level, (level, first, last))
        return {r["idx"]: bytes(r["hash"]) for r in cursor.fetchall()}

    def leaves(self, cursor: Any, after_index: int, limit: int) -> list[tree.Leaf]:
        cursor.execute(IN_INDEX_ORDER)
        cursor.execute(self.select_leaves, (after_index, limit))
        return [tree.Leaf(r["idx"], r["position"], bytes(r["hash"])) for r in cursor.fetchall()]

    def leaf_index(self, cursor: Any, position: int) -> int | None:
        cursor.execute(self.select_leaf_index, (position,))
        row = cursor.fetchone()
        return None if row is None else int(row["idx"])


def _as_arrays(count: int) -> bool:
    return not 0 < count <= SMALL_WRITE


def _node_params(rows: list[tree.NodeRow]) -> list[Any]:
    if _as_arrays(len(rows)):
        return [[row[column] for row in rows] for column in range(4)]
    return [value for row in rows for value in row]


class FailFastDatastore(PostgresDatastore):
    """The library's datastore, failing at once for a while after the database was unreachable.

    Every recorder call is retried 10 times by the library, each attempt waiting up to the pool's
    timeout for a connection: in an outage a request hung for tens of seconds. After one attempt
    found no connection (the pool timed out: POSTGRES_CONNECT_TIMEOUT, 2 s), calls fail at once for
    DOWN_FOR seconds, longer than the library's retries of one call last (10 x 0.2 s), so a call
    waits for one pool timeout at most: an outage answers within about 4 s. The first call after
    that tries again, so service resumes by itself.
    """

    DOWN_FOR = 2.5
    down_until = 0.0

    @contextmanager
    def get_connection(self) -> Iterator[Connection[DictRow]]:
        if time.monotonic() < self.down_until:
            raise OperationalError("the database is unreachable")
        try:
            with super().get_connection() as conn:
                yield conn
        except OperationalError as error:
            if isinstance(error.__cause__, PoolTimeout):
                self.down_until = time.monotonic() + self.DOWN_FOR
            raise


class Factory(PostgresFactory):
    """`eventsourcing.postgres`'s factory, with the chained application recorder and a datastore failing fast."""

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        # The library builds its datastore itself: give this one the fail-fast behaviour (it adds no state).
        self.datastore.__class__ = FailFastDatastore

    def application_recorder(self) -> ApplicationRecorder:
        prefix = self.env.name.lower() or "stored"  # the library's table naming
        recorder = ChainedPostgresRecorder(
            datastore=self.datastore,
            events_table_name=prefix + "_events",
            snapshots_table_name=prefix + "_snapshots",
            chain_key=writer.key_from_env(self.env.get(writer.ENV_KEY)),
        )
        if self.env_create_table():
            recorder.create_table()
        writer.open_chain(recorder, writes=bool(strtobool(self.env.get(writer.ENV_STARTUP_CHECK, "y"))))
        return recorder
