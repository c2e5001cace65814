"""Keeping the Merkle tree in the store, inside the transaction that inserts the events.

Tables (each backend names them after its events table; `TreeSQL` runs the statements):
- nodes (level, idx, hash, position): every complete subtree, leaves at level 0 with the
  position of their event (a unique index on it finds an event's leaf);
- head (one row): size, last position and the frontier (right edge), so an insert
  reads one row, not the tree (none when the recorder's `HeadGuess` still holds);
- checkpoints: signed tree heads (adapters/auditchain/checkpoints.py).

A recorder holding the store's write lock calls `append` with the events it just
inserted; `build` fills the tree of a store written before it existed (only then:
an event without a leaf in a store that has a tree is tampering, not backlog).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from adapters.auditchain.links import AuditChainError
from adapters.auditchain.merkle import Frontier, Node, event_leaf_hash

BUILD_BATCH = 2000


class Stored(Protocol):
    @property
    def originator_id(self) -> Any: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


@dataclass(frozen=True)
class Leaf:
    index: int
    position: int
    hash: bytes


def raw_state(state: object) -> bytes:
    # An edit can change a column's type (SQLite's replace() turns a BLOB into TEXT): still bytes to hash.
    return bytes(state) if isinstance(state, bytes | bytearray | memoryview) else str(state).encode("utf-8")


@dataclass
class Head:
    frontier: Frontier
    last_position: int

    def row(self) -> tuple[int, int, bytes]:
        """The stored head row's values: size, last position, packed frontier."""
        return self.frontier.size, self.last_position, self.frontier.pack()


class Reading:
    """Reads of one proof, in one transaction of the backend (`recorder.reading()`)."""

    def __init__(self, sql: Any, cursor: Any) -> None:
        self.sql, self.cursor = sql, cursor

    def latest_checkpoint(self) -> str | None:
        self.cursor.execute(self.sql.select_latest_checkpoint)
        row = self.cursor.fetchone()
        return None if row is None else str(row["document"])

    def leaf_index(self, position: int) -> int | None:
        found: int | None = self.sql.leaf_index(self.cursor, position)
        return found

    def nodes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        found: dict[Node, bytes] = self.sql.nodes(self.cursor, wanted)
        return found


# (level, idx, hash, position of the event for a leaf, else None)
NodeRow = tuple[int, int, bytes, int | None]


class TreeSQL(Protocol):
    """The statements one backend runs on a cursor of its own transaction."""

    def read_head(self, cursor: Any) -> Head | None: ...

    def write(self, cursor: Any, rows: list[NodeRow], head: Head, new_head: bool) -> None: ...

    def write_if_head(self, cursor: Any, rows: list[NodeRow], head: Head, was: Head) -> bool:
        """`write` when the stored head is exactly `was`; else write nothing and answer False or, where the
        write goes unanswered with the commit (PostgreSQL), fail the transaction."""
        ...

    def events_between(self, cursor: Any, after: int, before: int, limit: int) -> list[tuple[int, Stored]]: ...

    def leaf_index(self, cursor: Any, position: int) -> int | None:
        """The index of the leaf of the event at `position` (None if it has none)."""
        ...

    def nodes(self, cursor: Any, wanted: Iterable[Node]) -> dict[Node, bytes]: ...

    def level(self, cursor: Any, level: int, first: int, last: int) -> dict[int, bytes]:
        """The stored nodes of `level` from index `first` to `last`, by index."""
        ...

    def leaves(self, cursor: Any, after_index: int, limit: int) -> list[Leaf]:
        """Stored leaves from index after_index + 1, in index order."""
        ...


class HeadGuess:
    """The head this process last wrote: most saves then skip reading it.

    Only a guess (the transaction that wrote it may have rolled back since, another process may have
    written after it): `write_if_head` checks it against the stored row, under the write lock, in the
    statement that writes the new head, and the save reads the head as before when it differs
    (on PostgreSQL: the save's transaction fails and the recorder runs it again, reading the head).
    After a miss the next READS_AFTER_MISS saves read the head: while other processes write between
    this one's saves most guesses would miss, and on PostgreSQL a miss costs the whole save again.
    """

    READS_AFTER_MISS = 32

    def __init__(self) -> None:
        self.head: Head | None = None
        self.reads_left = 0
        self.misses = 0

    def missed(self) -> None:
        """The guess did not hold, or the save failed: what it wrote is not stored."""
        self.head, self.reads_left = None, self.READS_AFTER_MISS
        self.misses += 1


def append(sql: TreeSQL, cursor: Any, new: Sequence[tuple[int, Stored]], guess: HeadGuess | None = None) -> Head:
    """Add events (ascending positions) as leaves; a store without a tree first gets one of what it holds.

    Only an empty tree catches up: an event that a tree-keeping store holds without a leaf was put
    there behind keyledger's back, and `keyledger audit verify` must find it, not the tree absorb it.
    """
    if guess is None:
        return _append_read(sql, cursor, new, sql.read_head(cursor))
    was, guess.head = guess.head, None  # kept only once this save's head is known
    if guess.reads_left:
        guess.reads_left -= 1
    elif was is not None and new and new[0][0] > was.last_position:
        head = _copy(was)
        rows: list[NodeRow] = []
        _add(head, new, rows)
        if sql.write_if_head(cursor, rows, head, was):
            guess.head = head
            return head
        guess.missed()
    head = _append_read(sql, cursor, new, sql.read_head(cursor))
    guess.head = _copy(head)
    return head


def _copy(head: Head) -> Head:
    return Head(Frontier(head.frontier.size, list(head.frontier.hashes)), head.last_position)


def _append_read(sql: TreeSQL, cursor: Any, new: Sequence[tuple[int, Stored]], head: Head | None) -> Head:
    """Append after `head`, the stored head just read (None: the store has no tree yet)."""
    if not new:
        return head or Head(Frontier.empty(), 0)
    rows: list[NodeRow] = []
    new_head = head is None
    if head is None:
        head = Head(Frontier.empty(), 0)
        while missed := sql.events_between(cursor, head.last_position, new[0][0], BUILD_BATCH):
            _add(head, missed, rows)
            if len(rows) > 4 * BUILD_BATCH:
                sql.write(cursor, rows, head, new_head)
                rows, new_head = [], False
    elif new[0][0] <= head.last_position:
        # SQLite reuses the rowid of a deleted last row: refuse rather than give two leaves one position.
        raise AuditChainError(
            f"the audit tree already reaches position {head.last_position} but a new event was stored at "
            f"position {new[0][0]}: stored events were removed; run `keyledger audit verify`"
        )
    _add(head, new, rows)
    sql.write(cursor, rows, head, new_head)
    return head


def _add(head: Head, events: Iterable[tuple[int, Stored]], rows: list[NodeRow]) -> None:
    frontier = head.frontier
    for position, e in events:
        leaf = event_leaf_hash(position, e.originator_id, e.originator_version, e.topic, e.state)
        made = frontier.append(leaf)
        rows.append((0, made[0][0][1], leaf, position))
        rows.extend((level, idx, h, None) for (level, idx), h in made[1:])
        head.last_position = position


def build(
    sql: TreeSQL,
    transaction: Callable[[], Any],
    progress: Callable[[int], None] = lambda position: None,
) -> None:
    """Give a store written by older code its tree, in one transaction (a one-time migration).

    `transaction()` opens a writing transaction holding the store's write lock and yields a cursor.
    A store that has a tree already is left alone (see `append`).
    """
    with transaction() as cursor:
        if sql.read_head(cursor) is not None:
            return
        head, new_head = Head(Frontier.empty(), 0), True
        while batch := sql.events_between(cursor, head.last_position, 2**63 - 1, BUILD_BATCH):
            rows: list[NodeRow] = []
            _add(head, batch, rows)
            sql.write(cursor, rows, head, new_head)
            new_head = False
            progress(head.last_position)
