"""The auditor's endpoints: a key's history and its state at a moment, the audit log, access queries.

History and the audit log come from the audit read model; `state?at=` and the
access query are rebuilt from the events themselves.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import AuditorCaller, ServicesDep
from api.schemas import (
    AccessList,
    AuditEntryPublic,
    AuditPage,
    Cursor,
    EventType,
    KeyAccessPublic,
    KeyPublic,
    KeyStateAtPublic,
    Scope,
    UtcTime,
)
from domain.access import keys_with_access
from domain.errors import InvalidInput, KeyNotFound
from domain.history import KeyStateAt, state_at
from projections.audit import AuditEntry

router = APIRouter(prefix="/v1/workspaces/{ws}", tags=["audit"])


def _entry(entry: AuditEntry) -> AuditEntryPublic:
    return AuditEntryPublic.model_validate(entry, from_attributes=True)


def _state(state: KeyStateAt) -> KeyStateAtPublic:
    return KeyStateAtPublic(
        at=state.at,
        key=KeyPublic.of(state.key),
        version=state.version,
        last_event_at=state.last_event_at,
        current_secret=state.current_secret,
        previous_secret=state.previous_secret,
        valid_secrets=state.valid_secrets,
    )


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidInput("cursor must be a value of next_cursor from an earlier page")
    return int(cursor)


@router.get("/keys/{key}/history", response_model=AuditPage)
def key_history(ws: UUID, key: UUID, services: ServicesDep, caller: AuditorCaller) -> AuditPage:
    """The key's events, oldest first."""
    entries = services.read_models.history(ws, key)
    if not entries:
        raise KeyNotFound(f"key {key} not found")
    return AuditPage(items=[_entry(e) for e in entries], next_cursor=None)


@router.get("/keys/{key}/state", response_model=KeyStateAtPublic)
def key_state_at(
    ws: UUID,
    key: UUID,
    at: Annotated[UtcTime, Query(description="RFC 3339 time, e.g. 2027-03-03T14:00:00Z")],
    services: ServicesDep,
    caller: AuditorCaller,
) -> KeyStateAtPublic:
    """The key as it stood at `at`, rebuilt from its events (404 before it was issued)."""
    return _state(state_at(services.ledger, key, at, workspace_id=ws))


@router.get("/audit", response_model=AuditPage)
def audit_log(
    ws: UUID,
    services: ServicesDep,
    caller: AuditorCaller,
    key: UUID | None = None,
    type: Annotated[list[EventType] | None, Query(description="event type, e.g. KeyIssued; repeat for several")] = None,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    cursor: Cursor | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """The workspace's audit history in stream order.

    `next_cursor` is the position of the page's last entry: pass it back as `cursor` for the
    next page, also later to follow new entries. It is null when the page is empty.
    """
    entries, _ = services.read_models.audit(ws, key, type, since, until, after=_cursor(cursor), limit=limit)
    return AuditPage(items=[_entry(e) for e in entries], next_cursor=str(entries[-1].position) if entries else None)


@router.get("/audit/access", response_model=AccessList)
def access_at(
    ws: UUID,
    scope: Scope,
    at: UtcTime,
    services: ServicesDep,
    caller: AuditorCaller,
) -> AccessList:
    """The keys whose effective permissions included `scope` at `at`."""
    found = keys_with_access(services.ledger, ws, scope, at)
    items = [
        KeyAccessPublic(key_id=a.key_id, name=a.name, granted_by=a.granted_by, state=_state(a.state)) for a in found
    ]
    return AccessList(scope=scope, at=at, items=items)
