"""Which keys could use scope S at T: the access query, from the events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from domain.access import keys_with_access
from domain.application import KeyLedger
from domain.errors import UnknownResource, WorkspaceNotFound

TICK = timedelta(microseconds=1)


def last_event_time(ledger: KeyLedger, key_id: UUID) -> datetime:
    return next(iter(ledger.events.get(key_id, desc=True, limit=1))).timestamp  # type: ignore[attr-defined]


def holders(ledger: KeyLedger, ws: UUID, scope: str, at: datetime) -> dict[str, list[str]]:
    return {a.name: a.granted_by for a in keys_with_access(ledger, ws, scope, at)}


def test_access_follows_grants_revocations_and_the_scope_rules(audited: KeyLedger):
    created = audited.create_workspace("acme", "pro")
    ws = created.workspace.id
    reader = audited.issue_key(ws, "reader", ["read:edges"]).key.id
    issued_at = last_event_time(audited, reader)
    writer = audited.issue_key(ws, "writer", []).key.id
    audited.grant_scopes(writer, ["write:edges"])
    granted_at = last_event_time(audited, writer)
    audited.revoke_scopes(reader, ["read:edges"])
    scope_revoked_at = last_event_time(audited, reader)
    audited.revoke_key(writer)
    key_revoked_at = last_event_time(audited, writer)

    assert holders(audited, ws, "read:edges", issued_at - TICK) == {"admin": ["admin"]}
    assert holders(audited, ws, "read:edges", issued_at) == {"admin": ["admin"], "reader": ["read:edges"]}
    assert holders(audited, ws, "read:edges", granted_at) == {
        "admin": ["admin"],
        "reader": ["read:edges"],
        "writer": ["write:edges"],  # write:R includes read:R
    }
    assert "reader" not in holders(audited, ws, "read:edges", scope_revoked_at)
    assert "writer" in holders(audited, ws, "read:edges", key_revoked_at - TICK)
    assert holders(audited, ws, "read:edges", key_revoked_at) == {"admin": ["admin"]}
    assert holders(audited, ws, "write:edges", granted_at - TICK) == {"admin": ["admin"]}


def test_an_expired_key_has_no_access(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    audited.issue_key(ws, "temp", ["read:nodes"], expires_at=expires_at)

    assert "temp" in holders(audited, ws, "read:nodes", expires_at - TICK)
    assert "temp" not in holders(audited, ws, "read:nodes", expires_at)


def test_access_is_per_workspace_and_checks_its_input(audited: KeyLedger):
    a = audited.create_workspace("a", "pro")
    b = audited.create_workspace("b", "pro")
    now = datetime.now(UTC)

    assert [x.key_id for x in keys_with_access(audited, b.workspace.id, "admin", now)] == [b.admin_key.id]
    with pytest.raises(UnknownResource):
        keys_with_access(audited, a.workspace.id, "read:datasets", now)
    with pytest.raises(WorkspaceNotFound):
        keys_with_access(audited, a.admin_key.id, "admin", now)
