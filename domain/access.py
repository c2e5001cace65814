"""Who could do S at T? The keys of a workspace whose effective permissions included a scope.

The workspace's own events name every key it ever issued (KeySlotTaken) and each
revocation (KeySlotReleased); each candidate is then rebuilt as of T.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.application import KeyLedger
from domain.errors import WorkspaceNotFound
from domain.history import KeyNotYetIssued, KeyStateAt, check_aware, state_at
from domain.workspace import Workspace


@dataclass(frozen=True)
class KeyAccess:
    key_id: UUID
    name: str
    granted_by: list[str]  # the key's granted scopes that include the one asked about
    state: KeyStateAt


def keys_with_access(ledger: KeyLedger, workspace_id: UUID, scope: str, at: datetime) -> list[KeyAccess]:
    """Keys of the workspace that were usable at `at` (active: issued, not revoked, not expired)
    with `scope` among their effective permissions, in order of issue.

    MalformedScope / UnknownResource for a bad scope; WorkspaceNotFound for an unknown workspace.
    """
    needed = ledger.catalog.parse(scope)
    check_aware(at)
    events = cast("list[Aggregate.Event]", list(ledger.events.get(workspace_id)))
    if not events or not isinstance(events[0], Workspace.WorkspaceCreated):
        raise WorkspaceNotFound(f"workspace {workspace_id} not found")
    # A release is recorded just after its key's revocation: released by T means revoked by T.
    released = {e.key_id for e in events if isinstance(e, Workspace.KeySlotReleased) and e.timestamp <= at}
    candidates = [e.key_id for e in events if isinstance(e, Workspace.KeySlotTaken) and e.key_id not in released]
    found: list[KeyAccess] = []
    for key_id in dict.fromkeys(candidates):
        try:
            state = state_at(ledger, key_id, at, workspace_id)
        except KeyNotYetIssued:
            continue
        if state.key.status != "active" or needed not in state.key.effective_scopes:
            continue
        via = [g for g in state.key.scopes if needed in ledger.catalog.effective([g])]
        found.append(KeyAccess(key_id, state.key.name, via, state))
    return found
