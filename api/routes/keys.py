"""A workspace's keys: issue, list, scopes, rotation, revocation (admin keys only)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query
from starlette.convertors import Convertor, register_url_convertor

from api.context import Services
from api.deps import AdminCaller, ServicesDep
from api.schemas import (
    CreditsBody,
    KeyImport,
    KeyImported,
    KeyIssue,
    KeyLimitsBody,
    KeyList,
    KeyPatch,
    KeyPublic,
    KeyWithSecret,
    OwnerId,
    Revoke,
    Rotate,
    Scope,
    ScopeGrant,
    Suspend,
)
from domain.errors import KeyNotFound, SecretAlreadyImported
from domain.imports import import_digest
from domain.keys import ApiKey, KeyState
from domain.plans import Limits


class KeyIdConvertor(Convertor[str]):
    """A path segment naming a key: anything but `import`, so `GET .../keys/import` is 405 (only POST), not a
    malformed key id (422). The value is still checked as a UUID by the route's parameter."""

    regex = "(?!import$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("keyid", KeyIdConvertor())

router = APIRouter(prefix="/v1/workspaces/{ws}/keys", tags=["keys"])


def _plan(services: Services, ws: UUID) -> Limits:
    return services.ledger.get_workspace(ws).limits


def key_shape(services: Services, state: KeyState) -> KeyPublic:
    """The key shape, with what remains of a usage-limited key's credits read from the counters."""
    public = KeyPublic.of(state)
    if state.credits is not None and public.credits is not None:
        c = state.credits
        public.credits.remaining = services.verification.credits.left(state.id, c.generation, c.period, c.remaining)
    return public


def _public(services: Services, key: ApiKey) -> KeyPublic:
    ledger = services.ledger
    return key_shape(services, key.state(ledger.clock(), ledger.catalog, _plan(services, key.workspace_id)))


@router.post("", status_code=201, response_model=KeyWithSecret)
def issue_key(ws: UUID, body: KeyIssue, services: ServicesDep, caller: AdminCaller) -> KeyWithSecret:
    issued = services.ledger.issue_key(
        ws,
        body.name,
        body.scopes,
        caller.actor,
        body.expires_at,
        meta=body.meta,
        owner_id=body.owner_id,
        credits=body.credits.values() if body.credits else None,
    )
    return KeyWithSecret(key=_public(services, issued.key), secret=issued.secret)


@router.post("/import", status_code=201, response_model=KeyImported)
def import_key(ws: UUID, body: KeyImport, services: ServicesDep, caller: AdminCaller) -> KeyImported:
    """Import a key issued by another system, by its secret or the secret's SHA-256; the answer holds no secret.

    The secret then verifies like a native key, found through its digest (only the digest is kept).
    """
    digest = import_digest(body.secret, body.sha256)
    services.ledger.catalog.parse_all(body.scopes)  # bad input first: 422 before 409
    if services.read_models.digest_held(digest):  # a native key's (an import's own claim is checked atomically)
        raise SecretAlreadyImported("a key holds this secret already")
    imported = services.ledger.import_key(
        ws,
        body.name,
        body.scopes,
        digest,
        caller.actor,
        body.expires_at,
        meta=body.meta,
        owner_id=body.owner_id,
    )
    return KeyImported(key=_public(services, imported.key))


@router.get("", response_model=KeyList)
def list_keys(
    ws: UUID,
    services: ServicesDep,
    caller: AdminCaller,
    status: Literal["active", "suspended", "expired", "revoked"] | None = None,
    rotation_due: Annotated[bool | None, Query()] = None,
    owner_id: Annotated[OwnerId | None, Query(max_length=200)] = None,
) -> KeyList:
    states = services.read_models.list_keys(
        ws, services.ledger.clock(), status, rotation_due, owner_id, plan=_plan(services, ws)
    )
    return KeyList(items=[key_shape(services, s) for s in states])


@router.get("/{key:keyid}", response_model=KeyPublic)
def get_key(ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    state = services.read_models.get_key(ws, key, services.ledger.clock(), _plan(services, ws))
    if state is None:
        raise KeyNotFound(f"key {key} not found")
    return key_shape(services, state)


@router.patch("/{key:keyid}", response_model=KeyPublic)
def change_key(ws: UUID, key: UUID, body: KeyPatch, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    """Change the key's name, meta or owner_id: the fields given (`null` clears meta or owner_id), in one event."""
    update = services.ledger.change_details(key, body.changes(), caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.post("/{key}/scopes", response_model=KeyPublic)
def grant_scopes(ws: UUID, key: UUID, body: ScopeGrant, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    update = services.ledger.grant_scopes(key, body.scopes, caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.put("/{key}/scopes", response_model=KeyPublic)
def set_scopes(ws: UUID, key: UUID, body: ScopeGrant, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    """Make the key's granted scopes exactly `scopes`, in one change (SPEC 8.1)."""
    update = services.ledger.set_scopes(key, body.scopes, caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.delete("/{key}/scopes/{scope}", response_model=KeyPublic)
def revoke_scope(
    ws: UUID,
    key: UUID,
    scope: Annotated[Scope, Path(max_length=100)],
    services: ServicesDep,
    caller: AdminCaller,
) -> KeyPublic:
    update = services.ledger.revoke_scopes(key, [scope], caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.put("/{key}/limits", response_model=KeyPublic)
def set_limits(ws: UUID, key: UUID, body: KeyLimitsBody, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    """Limit the key below its plan: each number from 1 to the plan's; the lower of the two is enforced."""
    update = services.ledger.set_key_limits(
        key, body.requests_per_minute, body.requests_per_day, caller.actor, workspace_id=ws
    )
    return _public(services, update.key)


@router.delete("/{key}/limits", response_model=KeyPublic)
def clear_limits(ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    """Back to the plan's limits."""
    update = services.ledger.clear_key_limits(key, caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.put("/{key}/credits", response_model=KeyPublic)
def set_credits(ws: UUID, key: UUID, body: CreditsBody, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    """Make the key usage-limited: what it may spend from now on (a fresh count) and an optional refill."""
    update = services.ledger.set_credits(key, *body.values(), actor=caller.actor, workspace_id=ws)
    return _public(services, update.key)


@router.post("/{key}/rotate", response_model=KeyWithSecret)
def rotate_key(
    ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller, body: Rotate | None = None
) -> KeyWithSecret:
    grace = (body or Rotate()).grace_seconds
    rotated = services.ledger.rotate_key(key, caller.actor, grace, workspace_id=ws)
    return KeyWithSecret(key=_public(services, rotated.key), secret=rotated.secret)


@router.post("/{key}/revoke", response_model=KeyPublic)
def revoke_key(
    ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller, body: Revoke | None = None
) -> KeyPublic:
    update = services.ledger.revoke_key(key, caller.actor, (body or Revoke()).reason, workspace_id=ws)
    return _public(services, update.key)


@router.post("/{key}/suspend", response_model=KeyPublic)
def suspend_key(
    ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller, body: Suspend | None = None
) -> KeyPublic:
    """Refuse the key as SUSPENDED until it is resumed (unlike revoke, reversible; its secrets are kept)."""
    update = services.ledger.suspend_key(key, caller.actor, (body or Suspend()).reason, workspace_id=ws)
    return _public(services, update.key)


@router.post("/{key}/resume", response_model=KeyPublic)
def resume_key(ws: UUID, key: UUID, services: ServicesDep, caller: AdminCaller) -> KeyPublic:
    update = services.ledger.resume_key(key, caller.actor, workspace_id=ws)
    return _public(services, update.key)
