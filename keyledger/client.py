"""A Python client of keyledger's HTTP API (SPEC 8.6): `Client` and `AsyncClient`, the same methods.

    from keyledger.client import Client, ProblemError

    with Client("http://127.0.0.1:8000", token=admin_secret) as kl:
        key = kl.issue_key(ws, "ci", ["read:nodes"])
        answer = kl.verify(key["secret"], "read:nodes")   # answer.valid, answer.code, answer.ratelimit ...

A refusal of the call itself raises `ProblemError` with the problem+json fields. Calls that can be
repeated safely (reads, PUT and DELETE, verify) are retried on a connection failure or a 503 with a
growing delay (honouring `Retry-After`); commands that create something are sent once. Only httpx is
imported: a service using the client needs none of keyledger's server packages.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypedDict, TypeVar, cast
from uuid import UUID

import httpx

T = TypeVar("T")
Id = UUID | str
Params = Mapping[str, str | int | bool | Sequence[str]]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
RETRIES = 3
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
RETRY_AFTER_MAX = 5.0


# --- shapes (SPEC section 5; more fields may come, these are fixed) -----------------------------


class Workspace(TypedDict):
    id: str
    name: str
    plan: str
    requests_per_minute: int
    requests_per_day: int
    live_keys: int
    max_live_keys: int


class Key(TypedDict):
    id: str
    workspace_id: str
    name: str
    status: str
    scopes: list[str]
    effective_scopes: list[str]
    created_at: str
    expires_at: str | None
    rotated_at: str | None
    previous_secret_valid_until: str | None
    revoked_at: str | None
    rotation_due: bool


class KeyWithSecret(TypedDict):
    key: Key
    secret: str


class WorkspaceCreated(TypedDict):
    workspace: Workspace
    admin_key: KeyWithSecret


class AuditEntry(TypedDict):
    position: int
    occurred_at: str
    type: str
    key_id: str | None
    actor: str
    data: dict[str, Any]


class AuditPage(TypedDict):
    items: list[AuditEntry]
    next_cursor: str | None


class KeyStateAt(TypedDict):
    at: str
    key: Key
    version: int
    last_event_at: str
    current_secret: str
    previous_secret: str | None
    valid_secrets: list[str]


class Me(TypedDict):
    key: Key
    workspace: dict[str, str]


class Finding(TypedDict):
    kind: str  # unused_key, unused_scope, denied_scope, rotation_due, expiring_soon
    key_id: str
    key_name: str
    observed_days: int
    detail: dict[str, Any]
    suggestion: dict[str, Any] | None


class Insights(TypedDict):
    window_days: int
    generated_at: str
    findings: list[Finding]


ScopesFrom = TypedDict("ScopesFrom", {"from": str, "scopes": list[str]})


class Exposure(TypedDict):
    key_id: str
    since: str
    until: str
    secrets: list[dict[str, Any]]  # {fingerprint, valid_from, valid_until}
    scopes: list[ScopesFrom]
    requests: dict[str, Any]  # {total, allowed, refused, first, last}
    endpoints: list[dict[str, Any]]  # {endpoint, count, allowed}
    sources: list[dict[str, Any]]  # {address, count, first, last}


@dataclass(frozen=True)
class RateLimit:
    limit: int
    remaining: int
    reset: int


@dataclass(frozen=True)
class Verdict:
    """The answer of `/v1/verify`; fields named as in its JSON (`raw` holds all of it)."""

    valid: bool
    code: str
    key_id: str | None
    workspace_id: str | None
    scopes: list[str] | None
    ratelimit: RateLimit | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    name: str | None = None
    owner_id: str | None = None
    meta: dict[str, Any] | None = None
    credits: dict[str, int] | None = None  # {remaining} for a usage-limited key

    @classmethod
    def of(cls, body: dict[str, Any]) -> Verdict:
        limit = body.get("ratelimit")
        return cls(
            valid=bool(body["valid"]),
            code=str(body["code"]),
            key_id=body.get("key_id"),
            workspace_id=body.get("workspace_id"),
            scopes=body.get("scopes"),
            ratelimit=RateLimit(limit["limit"], limit["remaining"], limit["reset"]) if limit else None,
            raw=body,
            name=body.get("name"),
            owner_id=body.get("owner_id"),
            meta=body.get("meta"),
            credits=body.get("credits"),
        )


@dataclass(frozen=True)
class StreamEvent:
    """One Server-Sent Event of a change stream: `id` the position, `event` the type, `data` the entry."""

    id: int
    event: str
    data: dict[str, Any]


class ProblemError(Exception):
    """keyledger refused the call: the RFC 9457 problem it answered."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        self.status = status
        self.type: str = str(body.get("type", "about:blank"))
        self.title: str = str(body.get("title", ""))
        self.detail: str = str(body.get("detail", ""))
        self.code: str | None = body.get("code")
        self.body = body
        self.headers = dict(headers)
        super().__init__(f"{status} {self.title}: {self.detail}" if self.detail else f"{status} {self.title}")

    @property
    def retry_after(self) -> int | None:
        value = self.headers.get("retry-after")
        return int(value) if value and value.isdigit() else None


# --- one call, built once for both clients ----------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params | None = None
    body: dict[str, Any] | None = None
    repeatable: bool = True  # safe to send again after a failure

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request(self.method, self.path, params=self.params, json=self.body)


class _Unset:
    """A field left out of a PATCH (None sends null, which clears `meta` or `owner_id`)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _json(response: httpx.Response) -> Any:
    return response.json()


def _none(_: httpx.Response) -> None:
    return None


def _get(path: str, params: Params | None = None) -> _Call[Any]:
    return _Call("GET", path, _json, params)


def _command(method: str, path: str, body: dict[str, Any] | None = None) -> _Call[Any]:
    return _Call(method, path, _json, body=body, repeatable=method != "POST")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _time(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def _problem(response: httpx.Response) -> ProblemError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    return ProblemError(response.status_code, body, response.headers)


def _delay(attempt: int, response: httpx.Response | None) -> float:
    if response is not None:
        after = response.headers.get("retry-after", "")
        if after.isdigit():
            return min(float(after), RETRY_AFTER_MAX)
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt))


def _retry(call: _Call[Any], attempt: int, retries: int, response: httpx.Response | None) -> bool:
    if attempt >= retries or not call.repeatable:
        return False
    return response is None or response.status_code == 503


def _result(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        raise _problem(response)
    return call.parse(response)


class _Api:
    """Every endpoint as a `_Call`: what to send and how to read the answer."""

    @staticmethod
    def verify(key: str, scope: str, endpoint: str | None, client_ip: str | None) -> _Call[Verdict]:
        body = _drop_none({"key": key, "scope": scope, "endpoint": endpoint, "client_ip": client_ip})
        return _Call("POST", "/v1/verify", lambda r: Verdict.of(r.json()), body=body)  # repeatable: it decides

    @staticmethod
    def create_workspace(name: str, plan: str, rpm: int | None, rpd: int | None) -> _Call[WorkspaceCreated]:
        body = _drop_none({"name": name, "plan": plan, "requests_per_minute": rpm, "requests_per_day": rpd})
        return _command("POST", "/v1/workspaces", body)

    @staticmethod
    def change_plan(ws: Id, plan: str, rpm: int | None, rpd: int | None) -> _Call[Workspace]:
        body = _drop_none({"plan": plan, "requests_per_minute": rpm, "requests_per_day": rpd})
        return _command("PUT", f"/v1/workspaces/{ws}/plan", body)

    @staticmethod
    def issue_key(ws: Id, name: str, scopes: Sequence[str], expires_at: datetime | str | None,
                  extra: dict[str, Any]) -> _Call[KeyWithSecret]:  # fmt: skip
        body = {"name": name, "scopes": list(scopes), "expires_at": expires_at and _time(expires_at), **extra}
        return _command("POST", f"/v1/workspaces/{ws}/keys", _drop_none(body))

    @staticmethod
    def import_key(ws: Id, name: str, scopes: Sequence[str], expires_at: datetime | str | None,
                   extra: dict[str, Any]) -> _Call[Key]:  # fmt: skip
        body = _drop_none(
            {"name": name, "scopes": list(scopes), "expires_at": expires_at and _time(expires_at), **extra}
        )
        return _Call("POST", f"/v1/workspaces/{ws}/keys/import", lambda r: cast(Key, r.json()["key"]), body=body,
                     repeatable=False)  # fmt: skip

    @staticmethod
    def update_key(ws: Id, key: Id, fields: dict[str, Any]) -> _Call[Key]:
        return _command("PATCH", f"/v1/workspaces/{ws}/keys/{key}", {k: v for k, v in fields.items() if v is not UNSET})

    @staticmethod
    def set_limits(ws: Id, key: Id, rpm: int | None, rpd: int | None) -> _Call[Key]:
        body = _drop_none({"requests_per_minute": rpm, "requests_per_day": rpd})
        return _command("PUT", f"/v1/workspaces/{ws}/keys/{key}/limits", body)

    @staticmethod
    def set_credits(ws: Id, key: Id, remaining: int, refill_amount: int | None, interval: str | None) -> _Call[Key]:
        refill = {"amount": refill_amount, "interval": interval} if refill_amount is not None else None
        return _command("PUT", f"/v1/workspaces/{ws}/keys/{key}/credits", _drop_none({"remaining": remaining,
                                                                                      "refill": refill}))  # fmt: skip

    @staticmethod
    def create_webhook(ws: Id, url: str, types: Sequence[str] | None, description: str | None) -> _Call[Any]:
        body = _drop_none({"url": url, "types": list(types) if types else None, "description": description})
        return _command("POST", f"/v1/workspaces/{ws}/webhooks", body)

    @staticmethod
    def inclusion_proof(position: int, tree_size: int | None) -> _Call[Any]:
        return _get("/v1/audit/proof/inclusion", _drop_none({"position": position, "tree_size": tree_size}))

    @staticmethod
    def list_keys(ws: Id, status: str | None, rotation_due: bool | None, owner_id: str | None) -> _Call[list[Key]]:
        params = _drop_none({"status": status, "rotation_due": rotation_due, "owner_id": owner_id})
        return _Call("GET", f"/v1/workspaces/{ws}/keys", lambda r: cast(list[Key], r.json()["items"]), params)

    @staticmethod
    def key_command(ws: Id, key: Id, action: str, body: dict[str, Any] | None = None) -> _Call[Key]:
        return _command("POST", f"/v1/workspaces/{ws}/keys/{key}/{action}", body)

    @staticmethod
    def audit(ws: Id, key: Id | None, types: Sequence[str] | None, since: datetime | str | None,
              until: datetime | str | None, cursor: str | None, limit: int) -> _Call[AuditPage]:  # fmt: skip
        params = _drop_none(
            {
                "key": key and str(key),
                "type": list(types) if types else None,
                "since": since and _time(since),
                "until": until and _time(until),
                "cursor": cursor,
                "limit": limit,
            }
        )
        return _get(f"/v1/workspaces/{ws}/audit", params)


def _frames(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-Sent Events from lines; comments (heartbeats) skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields and "id" in fields:
                yield StreamEvent(int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")


class _Base:
    def __init__(self, base_url: str, token: str | None, retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries

    @staticmethod
    def _stream_params(after: int | None) -> dict[str, int]:
        return {} if after is None else {"after": after}


class Client(_Base):
    """keyledger over HTTP, blocking. `token`: an admin key, a key with `read:events`, or the operator token."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: int = RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.send(call.request(self._http))
            except httpx.TransportError:
                if not _retry(call, attempt, self.retries, None):
                    raise
            if response is not None and not _retry(call, attempt, self.retries, response):
                return _result(call, response)
            time.sleep(_delay(attempt, response))
            attempt += 1

    # verification
    def verify(self, key: str, scope: str, endpoint: str | None = None, client_ip: str | None = None) -> Verdict:
        return self._send(_Api.verify(key, scope, endpoint, client_ip))

    def me(self) -> Me:
        return cast(Me, self._send(_get("/v1/me")))

    # workspaces (operator token, then admin)
    def create_workspace(
        self, name: str, plan: str, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> WorkspaceCreated:
        return self._send(_Api.create_workspace(name, plan, requests_per_minute, requests_per_day))

    def change_plan(
        self, ws: Id, plan: str, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> Workspace:
        return self._send(_Api.change_plan(ws, plan, requests_per_minute, requests_per_day))

    def get_workspace(self, ws: Id) -> Workspace:
        return cast(Workspace, self._send(_get(f"/v1/workspaces/{ws}")))

    # keys (admin)
    def issue_key(
        self,
        ws: Id,
        name: str,
        scopes: Sequence[str] = (),
        expires_at: datetime | str | None = None,
        *,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
        credits: dict[str, Any] | None = None,
    ) -> KeyWithSecret:
        extra = {"meta": meta, "owner_id": owner_id, "credits": credits}
        return self._send(_Api.issue_key(ws, name, scopes, expires_at, extra))

    def list_keys(
        self, ws: Id, status: str | None = None, rotation_due: bool | None = None, owner_id: str | None = None
    ) -> list[Key]:
        return self._send(_Api.list_keys(ws, status, rotation_due, owner_id))

    def get_key(self, ws: Id, key: Id) -> Key:
        return cast(Key, self._send(_get(f"/v1/workspaces/{ws}/keys/{key}")))

    def grant_scopes(self, ws: Id, key: Id, scopes: Sequence[str]) -> Key:
        return self._send(_Api.key_command(ws, key, "scopes", {"scopes": list(scopes)}))

    def set_scopes(self, ws: Id, key: Id, scopes: Sequence[str]) -> Key:
        return cast(Key, self._send(_command("PUT", f"/v1/workspaces/{ws}/keys/{key}/scopes", {"scopes": [*scopes]})))

    def revoke_scope(self, ws: Id, key: Id, scope: str) -> Key:
        return cast(Key, self._send(_command("DELETE", f"/v1/workspaces/{ws}/keys/{key}/scopes/{scope}")))

    def rotate_key(self, ws: Id, key: Id, grace_seconds: int | None = None) -> KeyWithSecret:
        body = _drop_none({"grace_seconds": grace_seconds})
        return cast(KeyWithSecret, self._send(_Api.key_command(ws, key, "rotate", body)))

    def revoke_key(self, ws: Id, key: Id, reason: str | None = None) -> Key:
        return self._send(_Api.key_command(ws, key, "revoke", _drop_none({"reason": reason})))

    def suspend_key(self, ws: Id, key: Id, reason: str | None = None) -> Key:
        return self._send(_Api.key_command(ws, key, "suspend", _drop_none({"reason": reason})))

    def resume_key(self, ws: Id, key: Id) -> Key:
        return self._send(_Api.key_command(ws, key, "resume"))

    # keys beyond issue (SPEC 8.1)
    def import_key(
        self,
        ws: Id,
        name: str,
        scopes: Sequence[str] = (),
        *,
        secret: str | None = None,
        sha256: str | None = None,
        expires_at: datetime | str | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> Key:
        extra = {"secret": secret, "sha256": sha256, "meta": meta, "owner_id": owner_id}
        return self._send(_Api.import_key(ws, name, scopes, expires_at, extra))

    def update_key(self, ws: Id, key: Id, *, name: Any = UNSET, meta: Any = UNSET, owner_id: Any = UNSET) -> Key:
        """Change what is given; `None` clears `meta` or `owner_id`."""
        return self._send(_Api.update_key(ws, key, {"name": name, "meta": meta, "owner_id": owner_id}))

    def set_limits(
        self, ws: Id, key: Id, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> Key:
        return self._send(_Api.set_limits(ws, key, requests_per_minute, requests_per_day))

    def clear_limits(self, ws: Id, key: Id) -> Key:
        return cast(Key, self._send(_command("DELETE", f"/v1/workspaces/{ws}/keys/{key}/limits")))

    def set_credits(
        self, ws: Id, key: Id, remaining: int, refill_amount: int | None = None, refill_interval: str | None = None
    ) -> Key:
        return self._send(_Api.set_credits(ws, key, remaining, refill_amount, refill_interval))

    # webhooks (SPEC 8.3)
    def create_webhook(
        self, ws: Id, url: str, types: Sequence[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """`{webhook, secret}`: the signing secret is shown this once."""
        return cast(dict[str, Any], self._send(_Api.create_webhook(ws, url, types, description)))

    def list_webhooks(self, ws: Id) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], (self._send(_get(f"/v1/workspaces/{ws}/webhooks")))["items"])

    def get_webhook(self, ws: Id, webhook: Id) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(_get(f"/v1/workspaces/{ws}/webhooks/{webhook}")))

    def delete_webhook(self, ws: Id, webhook: Id) -> None:
        self._send(_Call("DELETE", f"/v1/workspaces/{ws}/webhooks/{webhook}", _none))

    def deliveries(self, ws: Id, webhook: Id) -> list[dict[str, Any]]:
        path = f"/v1/workspaces/{ws}/webhooks/{webhook}/deliveries"
        return cast(list[dict[str, Any]], (self._send(_get(path)))["items"])

    def retry_delivery(self, ws: Id, webhook: Id, position: int) -> dict[str, Any]:
        path = f"/v1/workspaces/{ws}/webhooks/{webhook}/deliveries/{position}/retry"
        return cast(dict[str, Any], self._send(_Call("POST", path, _json)))

    # the verifiable audit log (SPEC 8.4)
    def audit_public_key(self) -> dict[str, str]:
        return cast(dict[str, str], self._send(_get("/v1/audit/public-key")))

    def checkpoint(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(_get("/v1/audit/checkpoint")))

    def make_checkpoint(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(_Call("POST", "/v1/audit/checkpoint", _json)))

    def inclusion_proof(self, position: int, tree_size: int | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], self._send(_Api.inclusion_proof(position, tree_size)))

    def consistency_proof(self, from_size: int, to_size: int) -> dict[str, Any]:
        params = {"from": from_size, "to": to_size}
        return cast(dict[str, Any], self._send(_get("/v1/audit/proof/consistency", params)))

    # usage (admin) and audit (read:events)
    def usage(self, ws: Id, key: Id | None = None, bucket: str | None = None) -> dict[str, Any]:
        params = _drop_none({"key": key and str(key), "bucket": bucket})
        return cast(dict[str, Any], self._send(_get(f"/v1/workspaces/{ws}/usage", params)))

    def history(self, ws: Id, key: Id) -> list[AuditEntry]:
        return cast(list[AuditEntry], self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/history"))["items"])

    def state_at(self, ws: Id, key: Id, at: datetime | str) -> KeyStateAt:
        return cast(KeyStateAt, self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/state", {"at": _time(at)})))

    def audit(
        self,
        ws: Id,
        key: Id | None = None,
        types: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AuditPage:
        return self._send(_Api.audit(ws, key, types, since, until, cursor, limit))

    def access_at(self, ws: Id, scope: str, at: datetime | str) -> dict[str, Any]:
        params = {"scope": scope, "at": _time(at)}
        return cast(dict[str, Any], self._send(_get(f"/v1/workspaces/{ws}/audit/access", params)))

    # least privilege and leak response (SPEC 8.2)
    def insights(self, ws: Id, days: int | None = None) -> Insights:
        """Findings about the workspace's keys over the last `days` (1-365; the server's default 90)."""
        return cast(Insights, self._send(_get(f"/v1/workspaces/{ws}/insights", _drop_none({"days": days}))))

    def exposure(self, ws: Id, key: Id, since: datetime | str) -> Exposure:
        """What the key could do and did since `since`: secrets, scopes, requests, endpoints, sources."""
        params = {"since": _time(since)}
        return cast(Exposure, self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/exposure", params)))

    # change streams: iterators that resume from the last event after a dropped connection
    def events(self, ws: Id, after: int | None = None) -> Iterator[StreamEvent]:
        return self._stream(f"/v1/workspaces/{ws}/events/stream", after)

    def changes(self, after: int | None = None) -> Iterator[StreamEvent]:
        return self._stream("/v1/changes/stream", after)

    def _stream(self, path: str, after: int | None) -> Iterator[StreamEvent]:
        attempt = 0
        while True:
            try:
                with self._http.stream(
                    "GET", path, params=self._stream_params(after), timeout=httpx.Timeout(10.0, read=30.0)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _problem(response)
                    for event in _frames(response.iter_lines()):
                        attempt = 0
                        after = event.id
                        yield event
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            time.sleep(_delay(attempt, None))
            attempt += 1


class AsyncClient(_Base):
    """keyledger over HTTP for asyncio: the methods of `Client`, awaitable."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: int = RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.TransportError:
                if not _retry(call, attempt, self.retries, None):
                    raise
            if response is not None and not _retry(call, attempt, self.retries, response):
                return _result(call, response)
            await asyncio.sleep(_delay(attempt, response))
            attempt += 1

    async def verify(self, key: str, scope: str, endpoint: str | None = None, client_ip: str | None = None) -> Verdict:
        return await self._send(_Api.verify(key, scope, endpoint, client_ip))

    async def me(self) -> Me:
        return cast(Me, await self._send(_get("/v1/me")))

    async def create_workspace(
        self, name: str, plan: str, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> WorkspaceCreated:
        return await self._send(_Api.create_workspace(name, plan, requests_per_minute, requests_per_day))

    async def change_plan(
        self, ws: Id, plan: str, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> Workspace:
        return await self._send(_Api.change_plan(ws, plan, requests_per_minute, requests_per_day))

    async def get_workspace(self, ws: Id) -> Workspace:
        return cast(Workspace, await self._send(_get(f"/v1/workspaces/{ws}")))

    async def issue_key(
        self,
        ws: Id,
        name: str,
        scopes: Sequence[str] = (),
        expires_at: datetime | str | None = None,
        *,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
        credits: dict[str, Any] | None = None,
    ) -> KeyWithSecret:
        extra = {"meta": meta, "owner_id": owner_id, "credits": credits}
        return await self._send(_Api.issue_key(ws, name, scopes, expires_at, extra))

    async def list_keys(
        self, ws: Id, status: str | None = None, rotation_due: bool | None = None, owner_id: str | None = None
    ) -> list[Key]:
        return await self._send(_Api.list_keys(ws, status, rotation_due, owner_id))

    async def get_key(self, ws: Id, key: Id) -> Key:
        return cast(Key, await self._send(_get(f"/v1/workspaces/{ws}/keys/{key}")))

    async def grant_scopes(self, ws: Id, key: Id, scopes: Sequence[str]) -> Key:
        return await self._send(_Api.key_command(ws, key, "scopes", {"scopes": list(scopes)}))

    async def set_scopes(self, ws: Id, key: Id, scopes: Sequence[str]) -> Key:
        call = _command("PUT", f"/v1/workspaces/{ws}/keys/{key}/scopes", {"scopes": [*scopes]})
        return cast(Key, await self._send(call))

    async def revoke_scope(self, ws: Id, key: Id, scope: str) -> Key:
        return cast(Key, await self._send(_command("DELETE", f"/v1/workspaces/{ws}/keys/{key}/scopes/{scope}")))

    async def rotate_key(self, ws: Id, key: Id, grace_seconds: int | None = None) -> KeyWithSecret:
        body = _drop_none({"grace_seconds": grace_seconds})
        return cast(KeyWithSecret, await self._send(_Api.key_command(ws, key, "rotate", body)))

    async def revoke_key(self, ws: Id, key: Id, reason: str | None = None) -> Key:
        return await self._send(_Api.key_command(ws, key, "revoke", _drop_none({"reason": reason})))

    async def suspend_key(self, ws: Id, key: Id, reason: str | None = None) -> Key:
        return await self._send(_Api.key_command(ws, key, "suspend", _drop_none({"reason": reason})))

    async def resume_key(self, ws: Id, key: Id) -> Key:
        return await self._send(_Api.key_command(ws, key, "resume"))

    # keys beyond issue (SPEC 8.1)
    async def import_key(
        self,
        ws: Id,
        name: str,
        scopes: Sequence[str] = (),
        *,
        secret: str | None = None,
        sha256: str | None = None,
        expires_at: datetime | str | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> Key:
        extra = {"secret": secret, "sha256": sha256, "meta": meta, "owner_id": owner_id}
        return await self._send(_Api.import_key(ws, name, scopes, expires_at, extra))

    async def update_key(self, ws: Id, key: Id, *, name: Any = UNSET, meta: Any = UNSET, owner_id: Any = UNSET) -> Key:
        """Change what is given; `None` clears `meta` or `owner_id`."""
        return await self._send(_Api.update_key(ws, key, {"name": name, "meta": meta, "owner_id": owner_id}))

    async def set_limits(
        self, ws: Id, key: Id, requests_per_minute: int | None = None, requests_per_day: int | None = None
    ) -> Key:
        return await self._send(_Api.set_limits(ws, key, requests_per_minute, requests_per_day))

    async def clear_limits(self, ws: Id, key: Id) -> Key:
        return cast(Key, await self._send(_command("DELETE", f"/v1/workspaces/{ws}/keys/{key}/limits")))

    async def set_credits(
        self, ws: Id, key: Id, remaining: int, refill_amount: int | None = None, refill_interval: str | None = None
    ) -> Key:
        return await self._send(_Api.set_credits(ws, key, remaining, refill_amount, refill_interval))

    # webhooks (SPEC 8.3)
    async def create_webhook(
        self, ws: Id, url: str, types: Sequence[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """`{webhook, secret}`: the signing secret is shown this once."""
        return cast(dict[str, Any], await self._send(_Api.create_webhook(ws, url, types, description)))

    async def list_webhooks(self, ws: Id) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], (await self._send(_get(f"/v1/workspaces/{ws}/webhooks")))["items"])

    async def get_webhook(self, ws: Id, webhook: Id) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(_get(f"/v1/workspaces/{ws}/webhooks/{webhook}")))

    async def delete_webhook(self, ws: Id, webhook: Id) -> None:
        await self._send(_Call("DELETE", f"/v1/workspaces/{ws}/webhooks/{webhook}", _none))

    async def deliveries(self, ws: Id, webhook: Id) -> list[dict[str, Any]]:
        path = f"/v1/workspaces/{ws}/webhooks/{webhook}/deliveries"
        return cast(list[dict[str, Any]], (await self._send(_get(path)))["items"])

    async def retry_delivery(self, ws: Id, webhook: Id, position: int) -> dict[str, Any]:
        path = f"/v1/workspaces/{ws}/webhooks/{webhook}/deliveries/{position}/retry"
        return cast(dict[str, Any], await self._send(_Call("POST", path, _json)))

    # the verifiable audit log (SPEC 8.4)
    async def audit_public_key(self) -> dict[str, str]:
        return cast(dict[str, str], await self._send(_get("/v1/audit/public-key")))

    async def checkpoint(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(_get("/v1/audit/checkpoint")))

    async def make_checkpoint(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(_Call("POST", "/v1/audit/checkpoint", _json)))

    async def inclusion_proof(self, position: int, tree_size: int | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self._send(_Api.inclusion_proof(position, tree_size)))

    async def consistency_proof(self, from_size: int, to_size: int) -> dict[str, Any]:
        params = {"from": from_size, "to": to_size}
        return cast(dict[str, Any], await self._send(_get("/v1/audit/proof/consistency", params)))

    async def usage(self, ws: Id, key: Id | None = None, bucket: str | None = None) -> dict[str, Any]:
        params = _drop_none({"key": key and str(key), "bucket": bucket})
        return cast(dict[str, Any], await self._send(_get(f"/v1/workspaces/{ws}/usage", params)))

    async def history(self, ws: Id, key: Id) -> list[AuditEntry]:
        return cast(list[AuditEntry], (await self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/history")))["items"])

    async def state_at(self, ws: Id, key: Id, at: datetime | str) -> KeyStateAt:
        return cast(KeyStateAt, await self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/state", {"at": _time(at)})))

    async def audit(
        self,
        ws: Id,
        key: Id | None = None,
        types: Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> AuditPage:
        return await self._send(_Api.audit(ws, key, types, since, until, cursor, limit))

    async def access_at(self, ws: Id, scope: str, at: datetime | str) -> dict[str, Any]:
        params = {"scope": scope, "at": _time(at)}
        return cast(dict[str, Any], await self._send(_get(f"/v1/workspaces/{ws}/audit/access", params)))

    async def insights(self, ws: Id, days: int | None = None) -> Insights:
        return cast(Insights, await self._send(_get(f"/v1/workspaces/{ws}/insights", _drop_none({"days": days}))))

    async def exposure(self, ws: Id, key: Id, since: datetime | str) -> Exposure:
        params = {"since": _time(since)}
        return cast(Exposure, await self._send(_get(f"/v1/workspaces/{ws}/keys/{key}/exposure", params)))

    def events(self, ws: Id, after: int | None = None) -> AsyncIterator[StreamEvent]:
        return self._stream(f"/v1/workspaces/{ws}/events/stream", after)

    def changes(self, after: int | None = None) -> AsyncIterator[StreamEvent]:
        return self._stream("/v1/changes/stream", after)

    async def _stream(self, path: str, after: int | None) -> AsyncIterator[StreamEvent]:
        attempt = 0
        while True:
            try:
                async with self._http.stream(
                    "GET", path, params=self._stream_params(after), timeout=httpx.Timeout(10.0, read=30.0)
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _problem(response)
                    lines: list[str] = []
                    async for line in response.aiter_lines():
                        lines.append(line)
                        if line == "":
                            for event in _frames(iter(lines)):
                                attempt = 0
                                after = event.id
                                yield event
                            lines = []
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            await asyncio.sleep(_delay(attempt, None))
            attempt += 1
