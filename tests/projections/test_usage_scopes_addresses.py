"""The usage read model's counts per needed scope and per client address (SPEC 8.2), on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from adapters.database import read_transaction
from domain.application import KeyLedger
from domain.usage import UsageCount
from projections import ReadModels
from projections.runner import select_generations
from projections.usage import TOP_ADDRESSES

DAY = datetime(2027, 5, 3, tzinfo=UTC)


def _addresses(models: ReadModels) -> list[tuple[str, int, int, datetime, datetime]]:
    with read_transaction(models.engine) as conn:
        active = {g.name: g.generation for g in select_generations(conn, ["usage"], active=True)}
        table = models.projections["usage"].tables(active["usage"])["address"]
        query = select(table.c.address, table.c.requests, table.c.successes, table.c.first_seen, table.c.last_seen)
        return [tuple(row) for row in conn.execute(query.order_by(table.c.address))]  # type: ignore[misc]


def test_scope_counts_and_address_first_and_last_seen(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    ws, key = created.workspace.id, created.admin_key.id
    at = [DAY + timedelta(minutes=m) for m in (5, 50, 500)]
    ledger.record_usage(
        [
            UsageCount(key, ws, at[1], "GET /nodes", 200, 4, "read:nodes", False, "10.0.0.1"),
            UsageCount(key, ws, at[0], "GET /nodes", 200, 1, "read:nodes", False, "10.0.0.1"),
            UsageCount(key, ws, at[2], "POST /edges", 403, 2, "write:edges", True, "10.0.0.2"),
        ],
        "test",
    )
    ledger.record_usage([UsageCount(key, ws, at[2], "GET /nodes", 500, 1, None, False, "10.0.0.1")], "test")

    models.catch_up()
    [usage] = models.usage(ws)

    assert [(s.scope, s.allowed, s.refused, s.last_allowed, s.last_refused) for s in usage.scopes] == [
        ("read:nodes", 5, 0, at[1], None),
        ("write:edges", 0, 2, None, at[2]),
    ]
    assert usage.scopes[1].last_seen == at[2]
    assert _addresses(models) == [("10.0.0.1", 6, 5, at[0], at[2]), ("10.0.0.2", 2, 0, at[2], at[2])]


def test_at_most_the_top_addresses_are_kept_per_key_and_day(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    ws, key = created.workspace.id, created.admin_key.id
    busy = [UsageCount(key, ws, DAY, "GET /nodes", 200, 5, None, False, f"10.1.0.{i}") for i in range(TOP_ADDRESSES)]
    ledger.record_usage(busy, "test")
    models.catch_up()
    ledger.record_usage([UsageCount(key, ws, DAY, "GET /nodes", 200, 1, None, False, "10.2.0.1")], "test")
    ledger.record_usage([UsageCount(key, ws, DAY, "GET /nodes", 200, 9, None, False, "10.2.0.2")], "test")
    models.catch_up()

    kept = {row[0] for row in _addresses(models)}

    assert len(kept) == TOP_ADDRESSES
    assert "10.2.0.2" in kept and "10.2.0.1" not in kept
