"""The audit-history read model: one row per lifecycle event, in stream order.

Every event of a key or a workspace becomes a row (`UsageRecorded` events feed
the quota model only): its global position, time, workspace, key, type, actor, and its data with
the envelope removed. Digests never enter a row: a `*_digest` field becomes a
`*_fingerprint` (`domain.credentials.fingerprint`), which tells auditors which
secret was in use when without revealing anything usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import JSON, Column, Index, MetaData, String, Table, Uuid, select
from sqlalchemy.engine import Connection

from adapters.rows import StorableText, UTCDateTime, insert_rows
from domain.alerts import Alert
from domain.auditlog import safe_data
from domain.errors import InvalidInput
from domain.keys import ApiKey
from domain.workspace import Workspace
from projections.base import Positioned, Projection, Queries, Tables
from projections.schema import POSITION, chunks, table_name

MAX_PAGE = 1000


@dataclass(frozen=True)
class AuditEntry:
    position: int
    occurred_at: datetime
    type: str
    key_id: UUID | None
    actor: str
    data: dict[str, Any]
    workspace_id: UUID


class AuditProjection(Projection[list[tuple[Any, ...]]]):
    name = "audit"
    VERSION = 2  # 2: alerts (SPEC 8.3) are entries too
    event_types = (ApiKey.Event, Workspace.Event, Alert.Event)  # lifecycle and alerts; usage feeds the quota model

    def __init__(self) -> None:
        super().__init__()
        # key id -> workspace id: fixed at issue, so a cache entry never goes stale (even
        # one learnt in a batch that rolled back: the replay learns the same pair).
        self._workspace_of_key: dict[UUID, UUID] = {}

    def define_tables(self, metadata: MetaData, generation: int) -> Tables:
        name = table_name("audit", generation)
        audit = Table(
            name,
            metadata,
            Column("position", POSITION, primary_key=True, autoincrement=False),
            Column("occurred_at", UTCDateTime, nullable=False),
            Column("workspace_id", Uuid, nullable=False),
            Column("key_id", Uuid),
            Column("originator_id", Uuid, nullable=False),
            Column("type", String(100), nullable=False),
            Column("actor", StorableText(200), nullable=False),
            Column("data", JSON, nullable=False),
        )
        for column in ("workspace_id", "key_id"):
            Index(f"ix_{name}_{column}", audit.c[column], audit.c.position)
        return {"audit": audit}

    def fold(
        self, conn: Connection, tables: Tables, pending: list[tuple[Any, ...]] | None, events: Sequence[Positioned]
    ) -> list[tuple[Any, ...]]:
        table = tables["audit"]
        for _, event in events:
            if isinstance(event, ApiKey.KeyIssued):
                self._workspace_of_key[event.originator_id] = event.workspace_id
        unknown = sorted(
            {
                e.originator_id
                for _, e in events
                # Key events name their workspace since v2; only those stored by v1 code need the lookup.
                if isinstance(e, ApiKey.Event)
                and e.workspace_id is None
                and e.originator_id not in self._workspace_of_key
            },
            key=str,
        )
        for ids in chunks(unknown, 500):
            query = select(table.c.key_id, table.c.workspace_id).where(table.c.key_id.in_(ids))
            self._workspace_of_key.update({k: w for k, w in conn.execute(query)})
        rows = pending if pending is not None else []
        rows += [self._row(position, event) for position, event in events]
        return rows

    def pending_size(self, pending: list[tuple[Any, ...]]) -> int:
        return len(pending) * 4  # a row with its data weighs about four counters or keys

    def write(self, conn: Connection, tables: Tables, pending: list[tuple[Any, ...]]) -> None:
        insert_rows(conn, tables["audit"], pending)

    def _row(self, position: int, event: Any) -> tuple[Any, ...]:
        # A value tuple in the table's column order (see define_tables): a rebuild makes one per
        # lifecycle event, and mappings cost a dict and a lookup per column more.
        workspace_id: UUID
        key_id: UUID | None
        if isinstance(event, ApiKey.Event):
            workspace_id = event.workspace_id or self._workspace_of_key[event.originator_id]
            key_id = event.originator_id
        elif isinstance(event, Alert.Event):  # about a key, in its workspace
            workspace_id, key_id = event.workspace_id, event.key_id
        else:  # a workspace event; slot events name the key they count
            workspace_id, key_id = event.originator_id, getattr(event, "key_id", None)
        return (
            position,
            event.timestamp,
            workspace_id,
            key_id,
            event.originator_id,
            type(event).__name__,
            event.actor,
            safe_data(vars(event)),
        )


@dataclass(frozen=True)
class Change:
    """Where a key (or, with no key, a whole workspace) changed: ids and position, nothing else."""

    position: int
    workspace_id: UUID
    key_id: UUID | None


class AuditQueries(Queries):
    """Queries of the audit read model (`ReadModels` inherits them)."""

    def audit(
        self,
        workspace_id: UUID,
        key_id: UUID | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> tuple[list[AuditEntry], int | None]:
        """A page of a workspace's entries in stream order (`since` <= time < `until`) after cursor `after`;
        the next cursor or None at the end."""
        _check_limit(limit)

        def query(conn: Connection, tables: Tables) -> tuple[list[AuditEntry], int | None]:
            table = tables["audit"]
            query = select(table).where(table.c.workspace_id == workspace_id)
            if key_id is not None:
                query = query.where(table.c.key_id == key_id)
            if types is not None:
                query = query.where(table.c.type.in_(list(types)))
            if since is not None:
                query = query.where(table.c.occurred_at >= since)
            if until is not None:
                query = query.where(table.c.occurred_at < until)
            if after is not None:
                query = query.where(table.c.position > after)
            rows = conn.execute(query.order_by(table.c.position).limit(limit + 1)).mappings().all()
            entries = [_entry(row) for row in rows[:limit]]
            return entries, entries[-1].position if len(rows) > limit else None

        return self._read("audit", query)

    def changes(self, after: int, limit: int = 100) -> list[Change]:
        """Which keys and workspaces changed after position `after`, across workspaces, in stream order."""
        _check_limit(limit)

        def query(conn: Connection, tables: Tables) -> list[Change]:
            c = tables["audit"].c
            rows = conn.execute(
                select(c.position, c.workspace_id, c.key_id).where(c.position > after).order_by(c.position).limit(limit)
            )
            return [Change(*row) for row in rows]

        return self._read("audit", query)

    def history(self, workspace_id: UUID, key_id: UUID) -> list[AuditEntry]:
        """The key's own events, oldest first (none when the key belongs to another workspace)."""

        def query(conn: Connection, tables: Tables) -> list[AuditEntry]:
            c = tables["audit"].c
            ours = (c.key_id == key_id, c.originator_id == key_id, c.workspace_id == workspace_id)
            return [
                _entry(row)
                for row in conn.execute(select(tables["audit"]).where(*ours).order_by(c.position)).mappings()
            ]

        return self._read("audit", query)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE}")


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        position=row["position"],
        occurred_at=row["occurred_at"],
        type=row["type"],
        key_id=row["key_id"],
        actor=row["actor"],
        data=dict(row["data"]),
        workspace_id=row["workspace_id"],
    )
