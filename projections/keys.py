"""The current-keys read model: one row per key, the key's state after its last event.

The rows hold exactly the `ApiKey` aggregate's attributes, so applying an event
is the domain's own rule (`event.mutate(key)`) and a reader gets the domain's
`KeyState` back (`ApiKey.state(now, catalog)`): nothing about key lifecycle is
written twice. Time-dependent parts (status `expired`, `rotation_due`, whether
the previous secret still works) and the effective scopes (which depend on the
deployment's resource catalog) are derived when read, never stored stale.

The rows hold the current and previous secret digests only because they hold the
whole aggregate; they never leave this table. The API verifies presented secrets
from the aggregates themselves (`adapters/credential_cache.py`), not from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    delete,
    select,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql import Select

from adapters.rows import StorableText, UTCDateTime, insert_rows
from domain.errors import InvalidInput
from domain.keyinfo import check_owner_id
from domain.keys import KEY_STATUSES, ApiKey, KeyState
from domain.plans import Limits
from domain.scopes import ScopeCatalog
from projections.base import Positioned, Projection, Queries, Tables
from projections.schema import CLUSTERED, chunks, table_name

# ApiKey attribute -> column. An attribute the aggregate gains needs a column here and a new VERSION.
ATTRIBUTE_COLUMNS = {
    "_created_on": "created_at",
    "_modified_on": "modified_at",
    "workspace_id": "workspace_id",
    "name": "name",
    "scopes": "scopes",
    "expires_at": "expires_at",
    "secret_digest": "secret_digest",
    "previous_digest": "previous_digest",
    "previous_valid_until": "previous_valid_until",
    "rotated_at": "rotated_at",
    "revoked_at": "revoked_at",
    "revoked_reason": "revoked_reason",
    "suspended_at": "suspended_at",
    "suspended_reason": "suspended_reason",
    "issued_by": "issued_by",
    "meta_json": "meta",
    "owner_id": "owner_id",
    "limit_per_minute": "limit_per_minute",
    "limit_per_day": "limit_per_day",
    "credits_remaining": "credits_remaining",
    "refill_amount": "refill_amount",
    "refill_interval": "refill_interval",
    "credits_set_at": "credits_set_at",
    "credits_generation": "credits_generation",
    "last_refill": "last_refill",
    "imported_digest": "imported_digest",
}
_LIBRARY_ATTRIBUTES = {"_id", "_version", "_pending_events"}
_API_KEY_TOPIC = get_topic(ApiKey)


class KeysProjection(Projection["KeyChanges"]):
    name = "keys"
    # 2: suspension (suspended_at, suspended_reason); 3: meta, owner_id; 4: per-key limits; 5: credits;
    # 6: imported keys (the digest they were imported with)
    VERSION = 6
    event_types = (ApiKey.Event,)

    def define_tables(self, metadata: MetaData, generation: int) -> Tables:
        keys = Table(
            table_name("keys", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("workspace_id", Uuid, nullable=False, index=True),
            Column("name", StorableText(200), nullable=False),
            Column("scopes", JSON, nullable=False),  # granted; effective ones are derived when read
            Column("created_at", UTCDateTime, nullable=False),
            Column("modified_at", UTCDateTime, nullable=False),
            Column("expires_at", UTCDateTime),
            Column("rotated_at", UTCDateTime),
            Column("previous_valid_until", UTCDateTime),  # end of the previous secret's grace
            Column("revoked_at", UTCDateTime),
            Column("revoked_reason", StorableText),
            Column("suspended_at", UTCDateTime),
            Column("suspended_reason", StorableText),
            Column("issued_by", StorableText(200), nullable=False),
            Column("meta", Text),  # JSON text, as the key keeps it
            Column("owner_id", StorableText(200), index=True),
            Column("limit_per_minute", BigInteger),  # the key's own limits; None: its plan's
            Column("limit_per_day", BigInteger),
            Column("credits_remaining", BigInteger),  # credits as last set (what remains is counted by the API)
            Column("refill_amount", BigInteger),
            Column("refill_interval", String(8)),
            Column("credits_set_at", UTCDateTime),
            Column("credits_generation", Integer),
            Column("last_refill", String(16)),
            Column("imported_digest", String(64)),
            Column("secret_digest", String(64), nullable=False),
            Column("previous_digest", String(64)),
            Column("version", Integer, nullable=False),  # the aggregate's version
            Column("position", BigInteger, nullable=False),  # of its last event
            **CLUSTERED,
        )
        return {"keys": keys}

    def fold(
        self, conn: Connection, tables: Tables, pending: KeyChanges | None, events: Sequence[Positioned]
    ) -> KeyChanges:
        changes = pending or KeyChanges()
        keys, table = changes.keys, tables["keys"]
        missing = {e.originator_id for _, e in events if e.originator_id not in keys}
        missing -= {e.originator_id for _, e in events if isinstance(e, ApiKey.KeyIssued)}
        for ids in chunks(sorted(missing, key=str), 500):
            for row in conn.execute(select(table).where(table.c.key_id.in_(ids))).mappings():
                keys[row["key_id"]] = key_from_row(row)
                changes.stored.add(row["key_id"])
        for position, event in events:
            key = keys.get(event.originator_id)
            if key is None and not isinstance(event, ApiKey.KeyIssued):
                raise LookupError(f"event at position {position} is for a key the read model never saw")
            keys[event.originator_id] = event.mutate(key)  # checks the version sequence, too
            changes.positions[event.originator_id] = position
        return changes

    def pending_size(self, pending: KeyChanges) -> int:
        return len(pending.keys) * 4  # a key's state weighs about four usage counters

    def write(self, conn: Connection, tables: Tables, pending: KeyChanges) -> None:
        table = tables["keys"]
        # Replace rather than upsert: the stored rows are known, and this needs no ON CONFLICT.
        for ids in chunks(sorted(pending.stored, key=str), 500):
            conn.execute(delete(table).where(table.c.key_id.in_(ids)))
        insert_rows(conn, table, [row_from_key(pending.keys[i], p) for i, p in pending.positions.items()])


@dataclass
class KeyChanges:
    """Keys changed by events not yet written: their state after the last one and its position."""

    keys: dict[UUID, ApiKey] = field(default_factory=dict)
    positions: dict[UUID, int] = field(default_factory=dict)
    stored: set[UUID] = field(default_factory=set)  # those with a row already (replaced on write)


def row_from_key(key: ApiKey, position: int) -> dict[str, Any]:
    state = vars(key)
    unmapped = state.keys() - ATTRIBUTE_COLUMNS.keys() - _LIBRARY_ATTRIBUTES
    if unmapped:
        raise TypeError(f"ApiKey attributes {sorted(unmapped)} have no column in the keys read model")
    row = {column: state[attribute] for attribute, column in ATTRIBUTE_COLUMNS.items()}
    row.update(key_id=key.id, version=key.version, position=position)
    return row


def key_from_row(row: RowMapping) -> ApiKey:
    # The library's own way to rebuild an aggregate from stored state.
    snapshot = Snapshot(
        originator_id=row["key_id"],
        originator_version=row["version"],
        timestamp=row["modified_at"],
        topic=_API_KEY_TOPIC,
        state={attribute: row[column] for attribute, column in ATTRIBUTE_COLUMNS.items()},
    )
    return cast(ApiKey, snapshot.mutate(None))


class KeyQueries(Queries):
    """Queries of the keys read model (`ReadModels` inherits them)."""

    catalog: ScopeCatalog

    def get_key(self, workspace_id: UUID, key_id: UUID, now: datetime, plan: Limits | None = None) -> KeyState | None:
        key = self._read("keys", lambda conn, t: _keys(conn, select(t["keys"]).where(t["keys"].c.key_id == key_id)))
        if not key or key[0].workspace_id != workspace_id:
            return None
        return key[0].state(now, self.catalog, plan)

    def list_keys(
        self,
        workspace_id: UUID,
        now: datetime,
        status: str | None = None,
        rotation_due: bool | None = None,
        owner_id: str | None = None,
        plan: Limits | None = None,
    ) -> list[KeyState]:
        if status is not None and status not in KEY_STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(KEY_STATUSES)}")
        owner_id = check_owner_id(owner_id)

        def query(conn: Connection, tables: Tables) -> list[ApiKey]:
            table = tables["keys"]
            query = select(table).where(table.c.workspace_id == workspace_id).order_by(table.c.created_at)
            return _keys(conn, query if owner_id is None else query.where(table.c.owner_id == owner_id))

        states = [key.state(now, self.catalog, plan) for key in self._read("keys", query)]
        return [
            s
            for s in states
            if (status is None or s.status == status) and (rotation_due is None or s.rotation_due == rotation_due)
        ]

    def unrevoked_keys(self, now: datetime) -> list[KeyState]:
        """Every key not revoked, as of `now` (for the time-based alerts: expiry, rotation)."""
        keys = self._read(
            "keys", lambda conn, t: _keys(conn, select(t["keys"]).where(t["keys"].c.revoked_at.is_(None)))
        )
        return [key.state(now, self.catalog) for key in keys]

    def digest_held(self, digest: str) -> bool:
        """Whether any key's current or previous secret has this digest (an import of it is refused)."""

        def query(conn: Connection, tables: Tables) -> UUID | None:
            c = tables["keys"].c
            return conn.execute(
                select(c.key_id).where((c.secret_digest == digest) | (c.previous_digest == digest))
            ).scalar()

        return self._read("keys", query) is not None

    def imported_digests(self) -> dict[str, UUID]:
        """Each imported key by the digest it was imported with (the verifier's index)."""

        def query(conn: Connection, tables: Tables) -> dict[str, UUID]:
            c = tables["keys"].c
            rows = conn.execute(select(c.imported_digest, c.key_id).where(c.imported_digest.is_not(None)))
            return {digest: key_id for digest, key_id in rows}

        return self._read("keys", query)

    def key_ids(self) -> list[UUID]:
        """Every key's id (keys are never deleted): what a verifier knows to exist."""
        return self._read("keys", lambda conn, tables: list(conn.execute(select(tables["keys"].c.key_id)).scalars()))


def _keys(conn: Connection, query: Select[Any]) -> list[ApiKey]:
    return [key_from_row(row) for row in conn.execute(query).mappings()]
