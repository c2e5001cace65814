"""Delivery state, in tables of the read models' database (SPEC 8.3: kept across restarts).

- `kl_webhook_subscriptions`: every webhook, followed from the store's WebhookCreated/WebhookDeleted
  events (`kl_webhook_follow` holds how far), with `enqueued`: the last audit position turned into a delivery.
- `kl_webhook_deliveries`: one row per (webhook, audit position): attempts, status, next attempt.
- `kl_webhook_leases`: which process delivers for a webhook, until when. Only the holder enqueues and
  sends, so each webhook's deliveries go out in position order, and once each unless a holder dies
  mid-delivery (its successor sends that one again: at least once).

Times are seconds since the epoch (floats): leases and schedules compare them, nothing else reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from adapters.database import lock_for_ddl, write_transaction

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
FOLLOW = "registry"

metadata = MetaData()
subscriptions = Table(
    "kl_webhook_subscriptions",
    metadata,
    Column("webhook_id", Uuid, primary_key=True),
    Column("workspace_id", Uuid, nullable=False),
    Column("url", Text, nullable=False),
    Column("types", JSON),  # null: every type
    Column("enqueued", BigInteger, nullable=False),  # starts at the WebhookCreated position
    Column("deleted", Boolean, nullable=False, default=False),
)
follow = Table(
    "kl_webhook_follow",
    metadata,
    Column("name", String(20), primary_key=True),
    Column("position", BigInteger, nullable=False),
)
deliveries = Table(
    "kl_webhook_deliveries",
    metadata,
    Column("webhook_id", Uuid, primary_key=True),
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("type", String(100), nullable=False),
    Column("body", Text, nullable=False),  # the audit entry as sent: it holds no secret
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_status_code", Integer),
    Column("error", String(200)),
    Column("created_at", Double, nullable=False),
    Column("last_attempt_at", Double),
    Column("next_attempt_at", Double),
    Index("ix_kl_webhook_deliveries_due", "status", "next_attempt_at"),  # what is due, looked for every second
)
leases = Table(
    "kl_webhook_leases",
    metadata,
    Column("webhook_id", Uuid, primary_key=True),
    Column("holder", String(100), nullable=False),
    Column("expires_at", Double, nullable=False),
)


@dataclass(frozen=True)
class Subscription:
    webhook_id: UUID
    workspace_id: UUID
    url: str
    types: list[str] | None
    enqueued: int


@dataclass(frozen=True)
class Delivery:
    webhook_id: UUID
    position: int
    type: str
    body: str
    status: str
    attempts: int
    last_status_code: int | None
    error: str | None
    created_at: float
    last_attempt_at: float | None
    next_attempt_at: float | None


def create_tables(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        lock_for_ddl(conn)  # two processes starting at once must not race to create them
        metadata.create_all(conn)
        _insert_ignoring(conn, follow, [{"name": FOLLOW, "position": 0}])


def _insert_ignoring(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).on_conflict_do_nothing(), list(rows))


# --- the registry -------------------------------------------------------------


def followed(conn: Connection) -> int:
    return int(conn.execute(select(follow.c.position).where(follow.c.name == FOLLOW)).scalar_one())


def record_registry(
    conn: Connection, seen: int, last: int, created: Sequence[Subscription], deleted: Sequence[UUID]
) -> bool:
    """Apply what the store says after `seen` up to `last`, unless another process did first (False)."""
    moved = conn.execute(
        update(follow).where(follow.c.name == FOLLOW, follow.c.position == seen).values(position=last)
    ).rowcount
    if moved != 1:
        return False
    rows = [
        {
            "webhook_id": s.webhook_id,
            "workspace_id": s.workspace_id,
            "url": s.url,
            "types": s.types,
            "enqueued": s.enqueued,
            "deleted": False,
        }
        for s in created
    ]
    _insert_ignoring(conn, subscriptions, rows)
    for webhook_id in deleted:
        conn.execute(update(subscriptions).where(subscriptions.c.webhook_id == webhook_id).values(deleted=True))
    return True


def live_subscriptions(conn: Connection) -> list[Subscription]:
    rows = conn.execute(select(subscriptions).where(subscriptions.c.deleted.is_(False)))
    return [Subscription(r.webhook_id, r.workspace_id, r.url, r.types, r.enqueued) for r in rows]


def subscription(conn: Connection, webhook_id: UUID) -> Subscription | None:
    r = conn.execute(
        select(subscriptions).where(subscriptions.c.webhook_id == webhook_id, subscriptions.c.deleted.is_(False))
    ).first()
    return None if r is None else Subscription(r.webhook_id, r.workspace_id, r.url, r.types, r.enqueued)


# --- leases -------------------------------------------------------------------


def take_lease(conn: Connection, webhook_id: UUID, holder: str, now: float, seconds: float) -> bool:
    """Take or renew the webhook's lease: True if `holder` has it until now + seconds."""
    taken = conn.execute(
        update(leases)
        .where(leases.c.webhook_id == webhook_id, (leases.c.holder == holder) | (leases.c.expires_at < now))
        .values(holder=holder, expires_at=now + seconds)
    ).rowcount
    if taken == 1:
        return True
    if conn.execute(select(leases.c.holder).where(leases.c.webhook_id == webhook_id)).first() is not None:
        return False
    _insert_ignoring(conn, leases, [{"webhook_id": webhook_id, "holder": holder, "expires_at": now + seconds}])
    found = conn.execute(select(leases.c.holder).where(leases.c.webhook_id == webhook_id)).scalar_one()
    return bool(found == holder)


def lease_holders(conn: Connection) -> dict[UUID, tuple[str, float]]:
    """Every lease: webhook id -> (holder, expires_at)."""
    return {r.webhook_id: (r.holder, r.expires_at) for r in conn.execute(select(leases))}


def release_leases(conn: Connection, holder: str) -> None:
    conn.execute(update(leases).where(leases.c.holder == holder).values(expires_at=0.0))


# --- deliveries ---------------------------------------------------------------


def enqueue(conn: Connection, webhook_id: UUID, seen: int, rows: Sequence[Delivery]) -> bool:
    """Add deliveries after position `seen`, unless another process enqueued them first (False)."""
    last = rows[-1].position
    moved = conn.execute(
        update(subscriptions)
        .where(subscriptions.c.webhook_id == webhook_id, subscriptions.c.enqueued == seen)
        .values(enqueued=last)
    ).rowcount
    if moved != 1:
        return False
    conn.execute(insert(deliveries), [vars(d) for d in rows])
    return True


def due_webhooks(conn: Connection, now: float) -> set[UUID]:
    """Webhooks with a pending delivery due by `now`."""
    query = select(deliveries.c.webhook_id).where(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now)
    return set(conn.execute(query.distinct()).scalars())


def head(conn: Connection, webhook_id: UUID) -> Delivery | None:
    """The webhook's oldest pending delivery: the only one that may go out (position order)."""
    row = conn.execute(
        select(deliveries)
        .where(deliveries.c.webhook_id == webhook_id, deliveries.c.status == PENDING)
        .order_by(deliveries.c.position)
        .limit(1)
    ).first()
    return None if row is None else Delivery(**row._mapping)


def record_attempt(
    conn: Connection,
    delivery: Delivery,
    status: str,
    status_code: int | None,
    error: str | None,
    at: float,
    next_at: float | None,
) -> None:
    conn.execute(
        update(deliveries)
        .where(deliveries.c.webhook_id == delivery.webhook_id, deliveries.c.position == delivery.position)
        .values(
            status=status,
            attempts=deliveries.c.attempts + 1,
            last_status_code=status_code,
            error=error[:200] if error else None,
            last_attempt_at=at,
            next_attempt_at=next_at,
        )
    )


def list_deliveries(conn: Connection, webhook_id: UUID, limit: int) -> list[Delivery]:
    """The webhook's latest deliveries, newest first."""
    rows = conn.execute(
        select(deliveries)
        .where(deliveries.c.webhook_id == webhook_id)
        .order_by(deliveries.c.position.desc())
        .limit(limit)
    )
    return [Delivery(**r._mapping) for r in rows]


def reschedule(conn: Connection, webhook_id: UUID, position: int, now: float) -> Delivery | None:
    """Make a delivery pending again, due now (an operator's retry); None if there is none."""
    done = conn.execute(
        update(deliveries)
        .where(deliveries.c.webhook_id == webhook_id, deliveries.c.position == position)
        .values(status=PENDING, next_attempt_at=now)
    ).rowcount
    if not done:
        return None
    row = conn.execute(
        select(deliveries).where(deliveries.c.webhook_id == webhook_id, deliveries.c.position == position)
    ).first()
    return None if row is None else Delivery(**row._mapping)
