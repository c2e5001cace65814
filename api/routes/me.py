"""`/v1/me`: the presented key's own state and workspace, so a client (the dashboard) learns where it stands."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import KeyCaller, ServicesDep
from api.routes.keys import key_shape
from api.schemas import Me, WorkspaceRef

router = APIRouter(tags=["keys"])


@router.get("/v1/me", response_model=Me)
def me(services: ServicesDep, caller: KeyCaller) -> Me:
    """Any valid key, whatever its scopes; consumes no quota and records no usage.

    The workspace is named only: its limits and key count stay with its admins.
    """
    ledger = services.ledger
    key = ledger.get_key(caller.key_id, caller.workspace_id)
    workspace = ledger.get_workspace(caller.workspace_id)
    return Me(
        key=key_shape(services, key.state(ledger.clock(), ledger.catalog, workspace.limits)),
        workspace=WorkspaceRef(id=workspace.id, name=workspace.name),
    )
