"""SQLite's tree layout: nodes keyed by (ending, level), leaves found without an index, older stores re-keyed."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from pydantic import SecretStr

from adapters.auditchain import tree
from adapters.auditchain.sqlite import SQLiteTree
from keyledger.audit import open_audit_log
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests import rfc9162
from tests.audit.cli import run
from tests.audit.test_merkle_log import fill, reference_leaves


def _tree_of(positions: list[int]) -> tuple[SQLiteTree, sqlite3.Cursor, list[bytes]]:
    cursor = sqlite3.connect(":memory:").cursor()
    cursor.execute(
        "CREATE TABLE stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB)"
    )
    sql = SQLiteTree("audit_", "stored_events")
    for statement in sql.create_statements():
        cursor.execute(statement)
    events = [(p, StoredEvent(uuid4(), 1, "topic", p.to_bytes(4, "big"))) for p in positions]
    for chunk in (events[:100], events[100:101], events[101:]):  # saves of several events and of one
        tree.append(sql, cursor, chunk)
    hashes = [
        rfc9162.hash_leaf(rfc9162.leaf_bytes_from_readme(p, e.originator_id, 1, "topic", e.state))  # type: ignore[arg-type]
        for p, e in events
    ]
    return sql, cursor, hashes


def test_leaves_are_found_by_position_with_gaps_in_positions_and_removed_leaves():
    rng = random.Random(7)
    positions = sorted(rng.sample(range(1, 5000), 300))
    sql, cursor, _ = _tree_of(positions)

    assert [sql.leaf_index(cursor, p) for p in positions] == list(range(300))
    assert all(sql.leaf_index(cursor, p) is None for p in set(range(0, 5002)) - set(positions))
    removed = {0, 7, 150, 298, 299}
    cursor.execute(f"DELETE FROM audit_tree_nodes WHERE level = 0 AND ending IN ({', '.join(map(str, removed))})")
    assert [sql.leaf_index(cursor, p) for p in positions] == [None if i in removed else i for i in range(300)]


def test_a_levels_nodes_are_read_by_index_range_as_stored():
    sql, cursor, hashes = _tree_of(list(range(1, 301)))

    for level in range(9):
        count = 300 >> level
        expected = {i: rfc9162.mth(hashes[i << level : (i + 1) << level]) for i in range(count)}
        assert sql.level(cursor, level, 0, count - 1) == expected
        first, last = count // 3, max(count // 3, count - 2)
        assert sql.level(cursor, level, first, last) == {i: expected[i] for i in range(first, last + 1)}
    assert [leaf.index for leaf in sql.leaves(cursor, 10, 5)] == [11, 12, 13, 14, 15]
    assert [leaf.hash for leaf in sql.leaves(cursor, -1, 300)] == hashes


def _to_level_keyed(database: Path) -> None:
    """Rewrite the nodes as earlier code stored them: keyed by (level, idx), an index on the leaves' positions."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.executescript(
            """
            BEGIN;
            CREATE TABLE old_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                position INTEGER, PRIMARY KEY (level, idx)) WITHOUT ROWID;
            INSERT INTO old_nodes SELECT level, ((ending + 1) >> level) - 1, hash, position FROM audit_tree_nodes;
            DROP TABLE audit_tree_nodes;
            ALTER TABLE old_nodes RENAME TO audit_tree_nodes;
            CREATE UNIQUE INDEX audit_tree_nodes_position ON audit_tree_nodes (position) WHERE level = 0;
            COMMIT;
            """
        )
    finally:
        conn.close()


def test_a_tree_keyed_by_level_is_rekeyed_at_open_and_keeps_its_proofs(tmp_path: Path):
    database = tmp_path / "keyledger.db"
    settings = Settings(
        database_url=f"sqlite:///{database}", audit_signing_key=SecretStr(str(tmp_path / "signing.key"))
    )
    ledger = open_ledger(settings)
    try:
        fill(ledger, 300)
        size = open_audit_log(settings, ledger).checkpoint().tree_size
    finally:
        ledger.close()
    _to_level_keyed(database)

    ledger = open_ledger(settings)
    try:
        audit = open_audit_log(settings, ledger)
        leaves = reference_leaves(settings)
        hashes = [h for _, h in leaves]
        for m in (0, 1, 137, size - 1):
            proof = audit.inclusion(leaves[m][0], size)
            assert rfc9162.check_inclusion(m, size, hashes[m], proof.hashes, rfc9162.mth(hashes))
        fill(ledger, size + 50)  # the re-keyed tree grows on
        grown = audit.checkpoint()
    finally:
        ledger.close()

    assert grown.root_hash == rfc9162.mth([h for _, h in reference_leaves(settings)])
    assert grown.tree_size > size
    conn = sqlite3.connect(database)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    columns = [row[1] for row in conn.execute("PRAGMA table_info(audit_tree_nodes)")]
    conn.close()
    assert columns == ["ending", "level", "hash", "position"]
    assert "audit_tree_nodes_position" not in tables and "audit_tree_nodes_by_level" not in tables
    verified = run(settings, "verify")
    assert verified.returncode == 0, verified.stderr
