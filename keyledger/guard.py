"""keyledger's guards for Python services (SPEC 8.6): ASGI middlewares and a FastAPI dependency.

- `Guard(app, settings=None)`: in process, on keyledger's store and Redis (the same verification as the API).
- `RemoteGuard(app, base_url, token=None, cache_ttl=5.0)`: over HTTP through `POST /v1/verify`, with a small
  answer cache. Given a token it follows a change stream (an admin key: its workspace's `events/stream`; the
  operator token: `/v1/changes/stream`) and drops a changed key from the cache at once; without one,
  `cache_ttl` bounds how stale an answer can be (0: no cache, every request asks keyledger).
- `require_scope("read:nodes")`: the FastAPI dependency form, on whichever guard `install(app, guard)` names.

Both guards take the scope from method and first path segment (`GET`/`HEAD` read, others write) unless
`scope_for(method, path)` is given, refuse with keyledger's problem+json answers, and record each request's
real response status as the key's usage.

A cached allowed answer lets the request through at once and asks keyledger again in the background (the quota
is counted there; its answer replaces the cached one): so with a cache, a key can exceed its quota by the
requests that arrive during one round trip. `cache_ttl=0` keeps quotas exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.forwarded_path import AmbiguousPath
from api.guard import KeyledgerGuard, ScopeFor, bearer_of, pass_through, scope_from_method_and_path
from api.problems import (
    INVALID_TOKEN_CHALLENGE,
    KEY_REFUSALS,
    PROBLEM_JSON,
    ambiguous_path_response,
    insufficient_scope_challenge,
    insufficient_scope_detail,
    rate_limited_detail,
    usage_exceeded_detail,
)
from api.verification import VerificationService
from domain.addresses import canonical_address
from domain.text import MAX_ENDPOINT_LENGTH
from domain.verification import VerifyCode

log = logging.getLogger("keyledger.guard")

CACHE_SIZE = 10_000
REPORT_EVERY = 0.5  # seconds between usage reports to keyledger
REPORT_BATCH = 1000
STREAM_RETRY_MAX = 5.0
_FORWARDED = ("ratelimit", "ratelimit-policy", "retry-after")


class Guard(KeyledgerGuard):
    """The in-process guard: keyledger's verification on its store (`Settings()` from KEYLEDGER_* variables
    unless a `VerificationService` is handed in). `close()` stops what it started."""

    def __init__(
        self,
        app: ASGIApp | None = None,  # None: for `require_scope` alone (see `install`)
        verification: VerificationService | None = None,
        scope_for: ScopeFor = scope_from_method_and_path,
        exempt: tuple[str, ...] = (),
        insufficient_scope_status: int = 403,
    ) -> None:
        self._stack: Any = None
        if verification is None:
            from keyledger.bootstrap import open_ledger
            from keyledger.services import build_verification
            from keyledger.settings import Settings

            settings = Settings()
            self._stack = build_verification(settings, open_ledger(settings))
            self._stack.start()
            verification = self._stack.verification
            insufficient_scope_status = settings.insufficient_scope_status
        super().__init__(app or _no_app, verification, scope_for, exempt, insufficient_scope_status)

    def close(self) -> None:
        if self._stack is not None:
            self._stack.stop()


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("this guard was made for require_scope only: it wraps no app")


# --- the remote guard ---------------------------------------------------------------------------


@dataclass
class _Entry:
    answer: dict[str, Any]
    headers: dict[str, str]
    expires: float  # monotonic


@dataclass
class _Verdict:
    """What keyledger answered for a request: the body of /v1/verify and its RateLimit headers, or a problem
    of its own (the verify call itself refused, or keyledger unreachable) to hand on as it is."""

    answer: dict[str, Any]
    headers: dict[str, str]
    scope: str | None
    problem: Response | None = None

    @property
    def allowed(self) -> bool:
        return self.problem is None and bool(self.answer.get("valid"))

    def refusal(self, insufficient_scope_status: int) -> Response:
        """keyledger's own problem answer for this verdict (as /v1/auth and the in-process guard answer)."""
        if self.problem is not None:
            return self.problem
        code = str(self.answer.get("code"))
        known = VerifyCode(code) if code in VerifyCode.__members__ else VerifyCode.NOT_FOUND
        refusal = KEY_REFUSALS.get(known, KEY_REFUSALS[VerifyCode.NOT_FOUND])
        extra: dict[str, Any] = {}
        status, title, kind = refusal.status, refusal.title, refusal.kind
        if known is VerifyCode.INSUFFICIENT_SCOPE:
            status, detail, extra = (
                insufficient_scope_status,
                insufficient_scope_detail(self.scope),
                {"scope": self.scope},
            )
            headers = {"WWW-Authenticate": insufficient_scope_challenge(self.scope)}
        elif known is VerifyCode.USAGE_EXCEEDED:
            detail, headers = usage_exceeded_detail(self.headers.get("retry-after")), dict(self.headers)
        elif known is VerifyCode.RATE_LIMITED:
            detail, headers = _rate_limited_detail(self.headers), dict(self.headers)
        else:
            if refusal.status != 401:  # VALID never reaches here; anything else is refused as unknown
                refusal = KEY_REFUSALS[VerifyCode.NOT_FOUND]
                known = VerifyCode.NOT_FOUND
            detail, headers = refusal.detail, {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}
        code = known.value
        return _problem(status, title, kind, detail, headers, code=code, **extra)


def _problem(status: int, title: str, kind: str, detail: str, headers: dict[str, str], **extra: Any) -> Response:
    body = {"type": f"/problems/{kind}", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _rate_limited_detail(headers: dict[str, str]) -> str:
    """The detail keyledger writes, from its RateLimit headers: which window ran out, and when it resets."""
    limits = dict(_windows(headers.get("ratelimit-policy", ""), "q"))
    for name, remaining, reset in ((n, r, _field(part, "t")) for n, r, part in _remaining(headers)):
        if remaining == 0:
            return rate_limited_detail(limits.get(name, "?"), name, max(1, reset))
    return "the key used its quota"


def _field(part: str, name: str) -> int:
    for item in part.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key == name and value.isdigit():
            return int(value)
    return 0


def _windows(header: str, name: str) -> list[tuple[str, int]]:
    return [(part.split(";")[0].strip().strip('"'), _field(part, name)) for part in header.split(",") if part.strip()]


def _remaining(headers: dict[str, str]) -> list[tuple[str, int, str]]:
    parts = [p for p in headers.get("ratelimit", "").split(",") if p.strip()]
    return [(p.split(";")[0].strip().strip('"'), _field(p, "r"), p) for p in parts]


@dataclass
class _Cache:
    """Bounded answers by (secret digest, scope), and which entries belong to which key and workspace."""

    size: int
    entries: OrderedDict[tuple[str, str | None], _Entry] = field(default_factory=OrderedDict)
    by_key: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)
    by_workspace: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)

    def get(self, slot: tuple[str, str | None]) -> _Entry | None:
        entry = self.entries.get(slot)
        if entry is None or entry.expires <= time.monotonic():
            return None
        self.entries.move_to_end(slot)
        return entry

    def put(self, slot: tuple[str, str | None], entry: _Entry) -> None:
        self.entries[slot] = entry
        self.entries.move_to_end(slot)
        for index, name in ((self.by_key, "key_id"), (self.by_workspace, "workspace_id")):
            if entry.answer.get(name):
                index.setdefault(str(entry.answer[name]), set()).add(slot)
        while len(self.entries) > self.size:
            self._forget(*self.entries.popitem(last=False))

    def drop(self, key_id: str | None, workspace_id: str | None) -> None:
        """Forget a changed key's answers (no key: every answer about the workspace, e.g. its plan changed)."""
        slots = self.by_key.get(key_id, set()) if key_id else self.by_workspace.get(workspace_id or "", set())
        for slot in list(slots):
            entry = self.entries.pop(slot, None)
            if entry is not None:
                self._forget(slot, entry)

    def _forget(self, slot: tuple[str, str | None], entry: _Entry) -> None:
        for index, name in ((self.by_key, "key_id"), (self.by_workspace, "workspace_id")):
            owner = str(entry.answer.get(name))
            if owner in index:
                index[owner].discard(slot)
                if not index[owner]:
                    del index[owner]

    def clear(self) -> None:
        self.entries.clear()
        self.by_key.clear()
        self.by_workspace.clear()


class RemoteGuard:
    """The guard over HTTP: `POST /v1/verify` decides, `POST /v1/usage/report` records real statuses."""

    def __init__(
        self,
        app: ASGIApp | None,
        base_url: str,
        token: str | None = None,
        cache_ttl: float = 5.0,
        scope_for: ScopeFor = scope_from_method_and_path,
        exempt: tuple[str, ...] = (),
        insufficient_scope_status: int = 403,
        cache_size: int = CACHE_SIZE,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app = app or _no_app
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.cache_ttl = cache_ttl
        self.scope_for = scope_for
        self.exempt = exempt
        self.insufficient_scope_status = insufficient_scope_status
        self.cache = _Cache(cache_size)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        self._reports: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.following = asyncio.Event()  # set while the change stream is connected

    # ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        self._start()
        method, path = scope["method"], scope["path"]
        secret = bearer_of(scope)
        try:
            needed = self.scope_for(method, path)
        except AmbiguousPath as error:
            await ambiguous_path_response(error)(scope, receive, send)
            return
        endpoint = f"{method} {path}"[:MAX_ENDPOINT_LENGTH]
        verdict = await self.decide(secret, needed, endpoint)
        address = _address(scope)
        if not verdict.allowed:
            refusal = verdict.refusal(self.insufficient_scope_status)
            self._report(secret, endpoint, refusal.status_code, address, needed)
            await refusal(scope, receive, send)
            return
        extra = [(k.encode(), v.encode()) for k, v in verdict.headers.items() if k != "retry-after"]
        report = self._report
        await pass_through(
            self.app, scope, receive, send, extra, lambda status: report(secret, endpoint, status, address, needed)
        )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_and_watch() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.aclose()
            return message

        await self.app(scope, receive_and_watch, send)

    # deciding ---------------------------------------------------------------------------------

    async def decide(self, secret: str | None, scope: str | None, endpoint: str) -> _Verdict:
        """keyledger's answer for this request: from the cache when it holds one (asking again in the
        background, which counts the quota), else from `/v1/verify`."""
        if not secret:
            return _Verdict({"valid": False, "code": "NOT_FOUND"}, {}, scope)
        slot = (hashlib.sha256(secret.encode()).hexdigest(), scope)
        entry = self.cache.get(slot) if self.cache_ttl > 0 else None
        if entry is not None:
            if entry.answer.get("valid"):
                self._spawn(self._ask(secret, scope, endpoint, slot))
            return _Verdict(entry.answer, entry.headers, scope)
        return await self._ask(secret, scope, endpoint, slot)

    async def _ask(self, secret: str, scope: str | None, endpoint: str, slot: tuple[str, str | None]) -> _Verdict:
        if scope is None:  # as forward-auth answers a URI naming no resource
            problem = _problem(400, "Bad request", "bad-request", "the request names no resource", {})
            return _Verdict({}, {}, scope, problem)
        body = {"key": secret, "scope": scope, "endpoint": endpoint, "record": False}
        try:
            response = await self._http.post("/v1/verify", json=body)
        except httpx.HTTPError as error:
            log.warning("keyledger did not answer: %s", error)
            detail = "keyledger, which decides about keys here, did not answer; retry shortly"
            return _Verdict({}, {}, scope, _problem(503, "Service unavailable", "unavailable", detail, {}))
        if response.status_code != 200:  # keyledger refused the question itself (throttled, bad scope, down)
            headers = {k: v for k, v in response.headers.items() if k in (*_FORWARDED, "www-authenticate")}
            passed = Response(response.content, response.status_code, headers, response.headers.get("content-type"))
            return _Verdict({}, {}, scope, passed)
        answer = response.json()
        headers = {k: v for k, v in response.headers.items() if k in _FORWARDED}
        if self.cache_ttl > 0:
            ttl = self.cache_ttl
            if answer.get("code") == "RATE_LIMITED":  # until the window resets, at most the TTL
                ttl = min(ttl, float(headers.get("retry-after", "1")))
            self.cache.put(slot, _Entry(answer, headers, time.monotonic() + ttl))
        return _Verdict(answer, headers, scope)

    # usage ------------------------------------------------------------------------------------

    def _report(
        self, secret: str | None, endpoint: str, status: int, address: str | None = None, scope: str | None = None
    ) -> None:
        if secret:
            item: dict[str, Any] = {"key": secret, "endpoint": endpoint, "status": status}
            if address is not None:
                item["client_ip"] = address
            if scope is not None:  # the scope the request needed: keyledger's insights count it (SPEC 8.2)
                item["scope"] = scope
            self._reports.append(item)

    async def _flush_reports(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            await self.flush()

    async def flush(self) -> None:
        """Send the recorded statuses to keyledger now (also at shutdown)."""
        while self._reports:
            batch, self._reports = self._reports[:REPORT_BATCH], self._reports[REPORT_BATCH:]
            try:
                response = await self._http.post("/v1/usage/report", json={"items": batch})
                response.raise_for_status()
            except httpx.HTTPError as error:  # kept for the next round
                self._reports[:0] = batch
                log.warning("usage report failed (%s); %d items kept", error, len(self._reports))
                return

    # following changes -------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Drop changed keys from the cache as the change stream names them; reconnect when it drops."""
        assert self.token is not None
        headers = {"Authorization": f"Bearer {self.token}"}
        path, after, attempt = await self._stream_path(headers), None, 0
        while True:
            params: dict[str, int] = {} if after is None else {"after": after}
            try:
                async with self._http.stream(
                    "GET", path, params=params, headers=headers, timeout=httpx.Timeout(5.0, read=30.0)
                ) as response:
                    response.raise_for_status()
                    if after is None:  # missed changes while disconnected, or none seen yet: start clean
                        self.cache.clear()
                    self.following.set()
                    attempt = 0
                    async for position, data in _events(response.aiter_lines()):
                        after = position
                        self.cache.drop(data.get("key_id"), data.get("workspace_id"))
            except (httpx.HTTPError, ValueError) as error:
                log.warning("change stream %s: %s", path, error)
            self.following.clear()
            await asyncio.sleep(min(STREAM_RETRY_MAX, 0.1 * 2**attempt))
            attempt += 1

    async def _stream_path(self, headers: dict[str, str]) -> str:
        """An admin key follows its workspace's stream; anything else is taken for the operator token."""
        me = await self._http.get("/v1/me", headers=headers)
        if me.status_code == 200:
            return f"/v1/workspaces/{me.json()['key']['workspace_id']}/events/stream"
        return "/v1/changes/stream"

    # lifetime ----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._spawn(self._flush_reports())
        if self.token:
            self._spawn(self._follow())

    async def start(self) -> None:
        """Start reporting and following now (otherwise at the first request); returns once following."""
        self._start()
        if self.token:
            await asyncio.wait_for(self.following.wait(), 10)

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.flush()
        await self._http.aclose()


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """(position, data) of each Server-Sent Event; comments skipped."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if "id" in fields and "data" in fields:
                data = json.loads(fields["data"])
                yield int(fields["id"]), {"key_id": data.get("key_id"), "workspace_id": data.get("workspace_id")}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


# --- the FastAPI dependency -------------------------------------------------------------------


class Refused(Exception):
    """A refusal raised by `require_scope`; `install` answers it as keyledger's problem response."""

    def __init__(self, response: Response) -> None:
        self.response = response


Verifier = Guard | RemoteGuard


def install(app: Any, guard: Verifier) -> None:
    """Make `require_scope` work on this FastAPI app with this guard (`app` need not be wrapped by it)."""
    app.state.keyledger_guard = guard

    async def refused(_: Request, error: Exception) -> Response:
        assert isinstance(error, Refused)
        return error.response

    app.add_exception_handler(Refused, refused)


def require_scope(scope: str) -> Callable[[Request], Awaitable[str]]:
    """A FastAPI dependency: the presented key must hold `scope`; returns the key's id.

    `Depends(require_scope("read:nodes"))`. The answer is recorded as usage with the dependency's
    verdict (200 or the refusal's status): a dependency does not see the route's own status.
    """

    async def dependency(request: Request) -> str:
        guard: Verifier = request.app.state.keyledger_guard
        secret = bearer_of(request.scope)
        endpoint = f"{request.method} {request.url.path}"[:MAX_ENDPOINT_LENGTH]
        if isinstance(guard, RemoteGuard):
            guard._start()
            verdict = await guard.decide(secret, scope, endpoint)
            address = _address(request.scope)
            if not verdict.allowed:
                refusal = verdict.refusal(guard.insufficient_scope_status)
                guard._report(secret, endpoint, refusal.status_code, address, scope)
                raise Refused(refusal)
            guard._report(secret, endpoint, 200, address, scope)
            return str(verdict.answer["key_id"])
        return await _local(guard, secret, scope, endpoint, request.scope)

    return dependency


def _address(scope: Scope) -> str | None:
    """The connection's address (SPEC 8.2: the guard's client), when it is an IP address."""
    client = scope.get("client")
    return canonical_address(client[0]) if client else None


async def _local(guard: Guard, secret: str | None, scope: str, endpoint: str, request_scope: Scope) -> str:
    from starlette.concurrency import run_in_threadpool

    from api.problems import problem_response, refusal_for

    verify = guard.verification.verify
    answer = await run_in_threadpool(verify, secret, scope, endpoint, "guard", True, None, _address(request_scope))
    refusal = refusal_for(answer, guard.insufficient_scope_status)
    if refusal is not None or answer.key is None:
        assert refusal is not None
        raise Refused(problem_response(refusal))
    return str(answer.key.credentials.key_id)


__all__: Sequence[str] = ["Guard", "Refused", "RemoteGuard", "install", "require_scope"]
