"""Workspaces: created and re-planned by the operator, read by their admins."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from api.deps import AdminCaller, OperatorDep, ServicesDep
from api.schemas import (
    KeyPublic,
    KeyWithSecret,
    PlanChange,
    WorkspaceCreate,
    WorkspaceCreated,
    WorkspacePublic,
)

router = APIRouter(prefix="/v1/workspaces", tags=["workspaces"])


@router.post("", status_code=201, response_model=WorkspaceCreated)
def create_workspace(body: WorkspaceCreate, services: ServicesDep, actor: OperatorDep) -> WorkspaceCreated:
    ledger = services.ledger
    created = ledger.create_workspace(body.name, body.plan, actor, body.requests_per_minute, body.requests_per_day)
    state = created.admin_key.state(ledger.clock(), ledger.catalog, created.workspace.limits)
    return WorkspaceCreated(
        workspace=WorkspacePublic.of(created.workspace),
        admin_key=KeyWithSecret(key=KeyPublic.of(state), secret=created.secret),
    )


@router.put("/{ws}/plan", response_model=WorkspacePublic)
def change_plan(ws: UUID, body: PlanChange, services: ServicesDep, actor: OperatorDep) -> WorkspacePublic:
    update = services.ledger.change_plan(ws, body.plan, actor, body.requests_per_minute, body.requests_per_day)
    return WorkspacePublic.of(update.workspace)


@router.get("/{ws}", response_model=WorkspacePublic)
def get_workspace(ws: UUID, services: ServicesDep, caller: AdminCaller) -> WorkspacePublic:
    return WorkspacePublic.of(services.ledger.get_workspace(caller.workspace_id))
