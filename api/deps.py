"""FastAPI dependencies: the service container and who is calling."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

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


# The two Bearer schemes, as dependencies so that FastAPI documents which routes take which (and, through
# `Security(..., scopes=...)`, the scope a key needs there: `api.openapi` reads the errors off them).
# They refuse nothing themselves; the token is read by `bearer_token`.
operator_token = HTTPBearer(scheme_name="operatorToken", description="the operator token", auto_error=False)
api_key = HTTPBearer(scheme_name="apiKey", description="a key's secret (`kl_...`)", auto_error=False)
OperatorScheme = Annotated[HTTPAuthorizationCredentials | None, Depends(operator_token)]
KeyScheme = Annotated[HTTPAuthorizationCredentials | None, Depends(api_key)]


def require_operator(request: Request, services: ServicesDep, _: OperatorScheme) -> str:
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(credentials.digest(token), services.operator_digest):
        raise OperatorOnly()
    return "operator"


def require_key(request: Request, services: ServicesDep, _: KeyScheme) -> Caller:
    """A valid key of any workspace and any scopes (no quota, no usage): who is calling."""
    answer = services.verification.judge(bearer_token(request), None)
    refusal = refusal_for(answer)
    if refusal is not None or answer.key is None:
        raise refusal or Unauthorized("the presented key is not valid")
    return Caller(answer.key.credentials.key_id, answer.key.credentials.workspace_id)


def require_scope(
    request: Request,
    services: ServicesDep,
    needed: SecurityScopes,
    ws: Annotated[UUID, Path(description="workspace id")],
    _: KeyScheme,
) -> Caller:
    """A valid key of the path's workspace holding the scope of `Security(require_scope, scopes=[scope])`.

    A key of another workspace learns only that the workspace was not found.
    """
    (scope,) = needed.scopes
    return authorize(services, bearer_token(request), ws, scope)


def authorize(services: Services, token: str | None, ws: UUID, scope: str) -> Caller:
    """The caller, if `token` is a valid key of workspace `ws` holding `scope`; else the refusal, raised."""
    answer = services.verification.judge(token, None)
    refusal = refusal_for(answer)
    if refusal is not None or answer.key is None:
        raise refusal or Unauthorized("the presented key is not valid")
    creds = answer.key.credentials
    if creds.workspace_id != ws:
        raise WorkspaceNotFound(f"workspace {ws} not found")
    if not has_scope(creds.effective_scopes, scope):
        raise InsufficientScope(scope, services.insufficient_scope_status)
    return Caller(creds.key_id, creds.workspace_id)


def require_admin_or_operator(request: Request, services: ServicesDep) -> str:
    """The operator token, or an admin key of any workspace (the audit log's checkpoints and proofs)."""
    token = bearer_token(request)
    if token is not None and hmac.compare_digest(credentials.digest(token), services.operator_digest):
        return "operator"
    answer = services.verification.judge(token, None)
    refusal = refusal_for(answer)
    if refusal is not None or answer.key is None:
        raise refusal or Unauthorized("the presented key is not valid")
    if not has_scope(answer.key.credentials.effective_scopes, "admin"):
        raise InsufficientScope("admin", services.insufficient_scope_status)
    return str(answer.key.credentials.key_id)


KeyCaller = Annotated[Caller, Depends(require_key)]
AdminCaller = Annotated[Caller, Security(require_scope, scopes=["admin"])]
AuditorCaller = Annotated[Caller, Security(require_scope, scopes=["read:events"])]
OperatorDep = Annotated[str, Depends(require_operator)]
