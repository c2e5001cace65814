"""FastAPI dependencies: the service container and who is calling."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path, Request

from api.context import Services
from api.problems import InsufficientScope, OperatorOnly, Unauthorized, refusal_for
from domain import credentials
from domain.errors import WorkspaceNotFound
from domain.scopes import has_scope


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    # async: a plain def dependency would hop to the thread pool on every request.
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Caller:
    """An authenticated key acting in its own workspace."""

    key_id: UUID
    workspace_id: UUID

    @property
    def actor(self) -> str:
        return str(self.key_id)


def require_operator(request: Request, services: ServicesDep) -> str:
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(credentials.digest(token), services.operator_digest):
        raise OperatorOnly()
    return "operator"


def require_key(request: Request, services: ServicesDep) -> Caller:
    """A valid key of any workspace and any scopes (no quota, no usage): who is calling."""
    answer = services.verification.judge(bearer_token(request), None)
    refusal = refusal_for(answer)
    if refusal is not None or answer.key is None:
        raise refusal or Unauthorized("the presented key is not valid")
    return Caller(answer.key.credentials.key_id, answer.key.credentials.workspace_id)


def require_scope(scope: str) -> object:
    """A dependency admitting a valid key of the path's workspace that holds `scope`.

    A key of another workspace learns only that the workspace was not found.
    """

    def dependency(
        request: Request, services: ServicesDep, ws: Annotated[UUID, Path(description="workspace id")]
    ) -> Caller:
        answer = services.verification.judge(bearer_token(request), None)
        refusal = refusal_for(answer)
        if refusal is not None or answer.key is None:
            raise refusal or Unauthorized("the presented key is not valid")
        creds = answer.key.credentials
        if creds.workspace_id != ws:
            raise WorkspaceNotFound(f"workspace {ws} not found")
        if not has_scope(creds.effective_scopes, scope):
            raise InsufficientScope(scope, services.insufficient_scope_status)
        return Caller(creds.key_id, creds.workspace_id)

    return Depends(dependency)


KeyCaller = Annotated[Caller, Depends(require_key)]
AdminCaller = Annotated[Caller, require_scope("admin")]
AuditorCaller = Annotated[Caller, require_scope("read:events")]
OperatorDep = Annotated[str, Depends(require_operator)]
