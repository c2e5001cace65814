"""Queries behind insights and exposure (SPEC 8.2) on the usage and audit read models.

The finding rules are `domain.insights`; the exposure rules over events `domain.exposure`.
Every query here reads per-day rows (or, for a key's request totals, its per-minute rows),
indexed by key or workspace and day, so insights over 50 keys and 90 days read a few
thousand rows rather than the per-minute series.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from domain.exposure import ISSUES
from domain.insights import KeyUse, ScopeUse
from domain.timefmt import floor_minute
from projections.base import Queries, Tables
from projections.schema import chunks
from projections.usage import aggregate_time

GRANTS = (*ISSUES, "ScopesGranted", "ScopesSet")


def select_key_use(conn: Connection, tables: Tables, key_ids: Sequence[UUID], first_day: date) -> dict[UUID, KeyUse]:
    """Per key with answers from `first_day`: its last UTC day with one, its answers per needed scope.

    By key id, not workspace: the day and scope rows are clustered by key, so each key is one range.
    """
    day, scope = tables["day"], tables["scope"]
    last: dict[UUID, date] = {}
    sums: dict[UUID, list[ScopeUse]] = defaultdict(list)
    for part in chunks(list(key_ids), 500):
        query = (
            select(day.c.key_id, func.max(day.c.day))
            .where(day.c.key_id.in_(list(part)), day.c.day >= first_day, day.c.requests > 0)
            .group_by(day.c.key_id)
        )
        last.update({key: _date(value) for key, value in conn.execute(query)})
        query = (
            select(
                scope.c.key_id,
                scope.c.scope,
                func.sum(scope.c.allowed),
                func.sum(scope.c.refused),
                func.max(scope.c.last_allowed),
                func.max(scope.c.last_refused),
            )
            .where(scope.c.key_id.in_(list(part)), scope.c.day >= first_day)
            .group_by(scope.c.key_id, scope.c.scope)
        )
        for key, name, allowed, refused, last_allowed, last_refused in conn.execute(query):
            found = ScopeUse(
                name, int(allowed), int(refused), aggregate_time(last_allowed), aggregate_time(last_refused)
            )
            sums[key].append(found)
    return {key: KeyUse(last.get(key), sums.get(key, [])) for key in last.keys() | sums.keys()}


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def select_grant_times(conn: Connection, tables: Tables, workspace_id: UUID) -> dict[UUID, dict[str, datetime]]:
    """Per key of the workspace: each scope it holds now and when it was last added (audit entries)."""
    audit = tables["audit"]
    query = (
        select(audit.c.key_id, audit.c.type, audit.c.occurred_at, audit.c.data)
        .where(audit.c.workspace_id == workspace_id, audit.c.type.in_([*GRANTS, "ScopesRevoked"]))
        .order_by(audit.c.position)
    )
    granted: dict[UUID, dict[str, datetime]] = defaultdict(dict)
    for key_id, kind, occurred_at, data in conn.execute(query):
        held, scopes = granted[key_id], list((data or {}).get("scopes") or [])
        if kind == "ScopesRevoked":
            for scope in scopes:
                held.pop(scope, None)
            continue
        if kind != "ScopesGranted":  # issue or exact set: what it names is the whole set
            for scope in set(held) - set(scopes):
                del held[scope]
        for scope in scopes:
            if kind == "ScopesGranted" or scope not in held:  # an exact set keeps a held scope's time
                held[scope] = occurred_at
    return granted


@dataclass(frozen=True)
class Requests:
    total: int
    allowed: int  # 2xx answers
    refused: int
    first: datetime | None
    last: datetime | None  # UTC minutes


@dataclass(frozen=True)
class EndpointUse:
    endpoint: str
    count: int
    allowed: int


@dataclass(frozen=True)
class Source:
    address: str
    count: int
    first: datetime
    last: datetime


def select_exposure_usage(
    conn: Connection, tables: Tables, key_id: UUID, since: datetime
) -> tuple[Requests, list[EndpointUse], list[Source]]:
    """A key's answers from `since`: totals from its minutes; endpoints and sources over whole UTC days."""
    minute, endpoint, address = tables["minute"], tables["endpoint"], tables["address"]
    query = select(
        func.coalesce(func.sum(minute.c.requests), 0),
        func.coalesce(func.sum(minute.c.successes), 0),
        func.min(minute.c.minute),
        func.max(minute.c.minute),
    ).where(minute.c.key_id == key_id, minute.c.minute >= floor_minute(since))
    total, allowed, first, last = conn.execute(query).one()
    requests = Requests(
        int(total), int(allowed), int(total) - int(allowed), aggregate_time(first), aggregate_time(last)
    )
    first_day = since.date()
    count = func.sum(endpoint.c.requests)
    query = (
        select(endpoint.c.endpoint, count, func.sum(endpoint.c.successes))
        .where(endpoint.c.key_id == key_id, endpoint.c.day >= first_day)
        .group_by(endpoint.c.endpoint)
        .order_by(count.desc(), endpoint.c.endpoint)
    )
    endpoints = [EndpointUse(name, int(n), int(ok)) for name, n, ok in conn.execute(query)]
    count = func.sum(address.c.requests)
    query = (
        select(address.c.address, count, func.min(address.c.first_seen), func.max(address.c.last_seen))
        .where(address.c.key_id == key_id, address.c.day >= first_day)
        .group_by(address.c.address)
        .order_by(count.desc(), address.c.address)
    )
    sources = [
        Source(a, int(n), aggregate_time(f) or since, aggregate_time(la) or since)
        for a, n, f, la in conn.execute(query)
    ]
    return requests, endpoints, sources


class InsightsQueries(Queries):
    """The queries above, each run on its read model's active generation (`ReadModels` inherits them)."""

    def key_use(self, key_ids: Sequence[UUID], first_day: date) -> dict[UUID, KeyUse]:
        return self._read("usage", lambda conn, tables: select_key_use(conn, tables, key_ids, first_day))

    def grant_times(self, workspace_id: UUID) -> dict[UUID, dict[str, datetime]]:
        return self._read("audit", lambda conn, tables: select_grant_times(conn, tables, workspace_id))

    def exposure_usage(self, key_id: UUID, since: datetime) -> tuple[Requests, list[EndpointUse], list[Source]]:
        return self._read("usage", lambda conn, tables: select_exposure_usage(conn, tables, key_id, since))
