"""Editing the stored rows behind keyledger's back, as an attacker with database access would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from keyledger.settings import Settings
from tests.backends import POSTGRES_URL


class Store:
    """The events and chain tables of one test store, addressed by position."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres = settings.is_postgres
        self.events = "keyledger_events" if self.postgres else "stored_events"
        self.chain = "keyledger_audit_chain" if self.postgres else "audit_chain"
        self.snapshots = "keyledger_snapshots" if self.postgres else "stored_snapshots"
        self.position = "notification_id" if self.postgres else "rowid"
        tree = "keyledger_audit_" if self.postgres else "audit_"
        self.tree_tables = [tree + name for name in ("tree_nodes", "tree_head", "checkpoints")]

    @contextmanager
    def _execute(self) -> Iterator[Any]:
        if self.postgres:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self.settings.database_schema or ""))
                )

                def execute(query: str, params: tuple[Any, ...] = ()) -> list[Any]:
                    cursor = conn.execute(query.replace("?", "%s"), params)  # type: ignore[call-overload]
                    return cursor.fetchall() if cursor.description else []

                yield execute
        else:
            conn = sqlite3.connect(self.settings.url.database or "", isolation_level=None)
            try:
                yield lambda query, params=(): conn.execute(query, params).fetchall()
            finally:
                conn.close()

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._execute() as execute:
            return list(
                execute(
                    query.format(events=self.events, chain=self.chain, snapshots=self.snapshots, pos=self.position),
                    params,
                )
            )

    def state(self, position: int) -> bytes:
        return bytes(self.sql("SELECT state FROM {events} WHERE {pos} = ?", (position,))[0][0])

    def set_state(self, position: int, state: bytes) -> None:
        self.sql("UPDATE {events} SET state = ? WHERE {pos} = ?", (state, position))

    def delete_event(self, position: int) -> None:
        self.sql("DELETE FROM {events} WHERE {pos} = ?", (position,))

    def delete_link(self, position: int) -> None:
        self.sql("DELETE FROM {chain} WHERE position = ?", (position,))

    def max_position(self) -> int:
        return int(self.sql("SELECT MAX({pos}) FROM {events}")[0][0])

    def move_event(self, position: int, to: int) -> None:
        self.sql("UPDATE {events} SET {pos} = ? WHERE {pos} = ?", (to, position))

    def drop_tree(self, checkpoints: bool = True) -> None:
        """Empty the Merkle tree's tables (and the stored checkpoints), as a forger rebuilding them would."""
        for table in self.tree_tables if checkpoints else self.tree_tables[:-1]:
            self.sql(f"DELETE FROM {table}")
