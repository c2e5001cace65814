"""The hot routes at the ASGI layer: `POST /v1/verify` and `GET /v1/auth` answered ahead of FastAPI.

A well-formed request is decided and answered here, without FastAPI's routing, dependency resolution
and pydantic validation (SPEC 4 and 5: same statuses, bodies and headers). Whatever this handler is not
sure of (a body that is not a JSON object of the known fields with their JSON types, a content type
other than JSON, a scope or endpoint the rules refuse, a body over `MAX_BODY`) goes on to the FastAPI
route with the body read so far, so a malformed request is answered exactly as before
(tests/api/test_hot_path.py sends each such request to both and compares). The routes stay declared in
FastAPI, which is how `/openapi.json` still describes them.

A decision answered from memory runs on the event loop, and so does the one Redis round trip of a key
decided on before (`VerificationService.decide`); one that may read the store runs in the thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import Services
from api.problems import ApiProblem, problem_response, refusal_for, response_for
from api.schemas import VerifyRequest
from api.verification import Answer, needed_scope
from domain.addresses import canonical_address, forwarded_client
from domain.errors import InvalidInput
from domain.text import MAX_ENDPOINT_LENGTH, check_text
from domain.verification import VerifyCode

log = logging.getLogger(__name__)

# A request body larger than this is left to FastAPI (which reads any size, as it always did): a
# well-formed verify body is a secret, a scope and an endpoint of at most MAX_ENDPOINT_LENGTH characters.
MAX_BODY = 8 * 1024


class _VerifyBody(msgspec.Struct, forbid_unknown_fields=True):
    """`api.schemas.VerifyRequest` as JSON types: anything else is left to pydantic's validation."""

    key: str
    scope: str
    endpoint: str | None = None
    client_ip: str | None = None
    record: bool = True


# The fast path must refuse no less than the route: a field the route's model gained is left to it.
assert set(VerifyRequest.model_fields) == set(_VerifyBody.__struct_fields__), "api.hotpath lags VerifyRequest"

_decode_verify = msgspec.json.Decoder(_VerifyBody).decode
MAX_CLIENT_IP = 64  # `api.schemas.ClientIp`'s longest text
MAX_SCOPES = 4096  # parsed scopes remembered (the catalog's scopes, as callers spell them)
_JSON_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class HotPath:
    """Answers the two hot routes of `services`; hands everything else, and any doubt, to `app`."""

    def __init__(self, services: Services, app: ASGIApp) -> None:
        self.services = services
        self.app = app
        self._scopes: dict[str, str] = {}  # scopes as asked, parsed (the catalog is fixed while running)
        self.answered = 0  # requests answered here, not handed to FastAPI (tests check the path is taken)

    def handles(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        path, method = scope["path"], scope["method"]
        if path == "/v1/verify" and method == "POST":
            return self.verify
        if path == "/v1/auth" and method == "GET":
            return self.auth
        return None

    # --- POST /v1/verify ------------------------------------------------------------------------

    async def verify(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left: FastAPI ends it as it would
                await self._fallback(scope, receive, send, chunks, True, message)
                return
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if more and size > MAX_BODY:
                await self._fallback(scope, receive, send, chunks, True)
                return
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        parsed = self._parse_verify(scope, body) if size <= MAX_BODY else None
        if parsed is None:
            await self._fallback(scope, receive, send, [body], False)
            return
        secret, needed, endpoint, record, address = parsed
        try:
            # The address recorded is the one the calling service names (`client_ip`), never the caller's own.
            answer = self._decide(scope, secret, needed, endpoint, "verify", record, address)
            if not isinstance(answer, Answer):
                answer = await answer
        except Exception as error:
            await self._error(scope, receive, send, error)
            return
        headers = list(_JSON_HEADERS)
        if answer.code is VerifyCode.RATE_LIMITED or answer.code is VerifyCode.USAGE_EXCEEDED:
            refusal = refusal_for(answer)  # the headers /v1/auth's 429 carries (RateLimit, Retry-After if due)
            extra = refusal.headers if refusal is not None else {}
            headers.extend((name.lower().encode(), value.encode()) for name, value in extra.items())
        elif answer.quota is not None:
            headers += answer.quota.header_pairs()
        content = self.services.verification.answer_json(answer)
        headers.append((b"content-length", str(len(content)).encode()))
        self.answered += 1
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _parse_verify(self, scope: Scope, body: bytes) -> tuple[str, str, str, bool, str | None] | None:
        """The request's fields when nothing about them needs the route's validation, else None."""
        content_type = _header(scope, b"content-type")
        if content_type is None or content_type.lower() not in _JSON_TYPES:  # FastAPI reads no JSON without one
            return None
        try:
            fields = _decode_verify(body)
            needed = self._scopes.get(fields.scope)
            if needed is None:
                needed = self.services.ledger.catalog.parse(fields.scope)
                if len(self._scopes) < MAX_SCOPES:
                    self._scopes[fields.scope] = needed
            endpoint = fields.endpoint
            if endpoint is not None:
                check_text(endpoint, "endpoint", MAX_ENDPOINT_LENGTH, controls=True)
            address = fields.client_ip
            if address is not None:  # as `api.schemas.ClientIp` reads it
                address = canonical_address(address) if len(address) <= MAX_CLIENT_IP else None
                if address is None:
                    return None
        except (ValueError, InvalidInput):  # msgspec: DecodeError, ValidationError, UnicodeDecodeError
            return None
        return fields.key, needed, endpoint or "POST /v1/verify", fields.record, address

    # --- GET /v1/auth ---------------------------------------------------------------------------

    async def auth(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            method = _header(scope, b"x-forwarded-method")
            uri = _header(scope, b"x-forwarded-uri")
            if not method or not uri:
                raise ApiProblem("forward-auth needs the X-Forwarded-Method and X-Forwarded-Uri headers")
            forwarded_method, forwarded_uri = method.decode("latin-1"), uri.decode("latin-1")
            needed, path = needed_scope(forwarded_method, forwarded_uri)
            if needed is None:
                raise ApiProblem("X-Forwarded-Uri names no resource (its first path segment is empty)")
            endpoint = f"{forwarded_method.upper()} {path}"[:MAX_ENDPOINT_LENGTH]
            # The gateway names the client (SPEC 8.2); asked directly, the caller is the client.
            forwarded_for, real_ip = _header(scope, b"x-forwarded-for"), _header(scope, b"x-real-ip")
            address = forwarded_client(
                forwarded_for.decode("latin-1") if forwarded_for is not None else None,
                real_ip.decode("latin-1") if real_ip is not None else None,
            )
            if address is None:
                client = scope.get("client")
                address = client[0] if client else None
            answer = self._decide(scope, _bearer(scope), needed, endpoint, "auth", True, address)
            if not isinstance(answer, Answer):
                answer = await answer
            refusal = refusal_for(answer, self.services.insufficient_scope_status)
            if refusal is not None:
                raise refusal
        except Exception as error:
            await self._error(scope, receive, send, error)
            return
        headers = answer.quota.header_pairs() if answer.quota is not None else []
        if answer.key is not None:
            headers += self.services.verification.auth_headers(answer.key)
        self.answered += 1
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    # --- shared ---------------------------------------------------------------------------------

    def _decide(
        self, scope: Scope, secret: str | None, needed: str, endpoint: str, via: str, record: bool, address: str | None
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """The answer when it is known at once, else the coroutine that will know it (no coroutine per decision
        answered from memory)."""
        client = scope.get("client")  # the connection's address: the guessing throttle counts by it
        connection = client[0] if client else None
        verification = self.services.verification
        answer = verification.decide_now(secret, needed, endpoint, via, record, connection, address)
        return answer or verification.decide_later(secret, needed, endpoint, via, record, connection, address)

    async def _error(self, scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
        """The answer FastAPI's handlers (`api.problems`) give; an unexpected error is raised on after it."""
        self.answered += 1
        if isinstance(error, ApiProblem):
            await problem_response(error)(scope, receive, send)
            return
        response = response_for(Request(scope), error)
        await response(scope, receive, send)
        if response.status_code == 500:
            raise error

    async def _fallback(
        self, scope: Scope, receive: Receive, send: Send, chunks: list[bytes], more: bool, last: Message | None = None
    ) -> None:
        """The FastAPI route, as if nothing had been read: the body read so far first, then the rest."""
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]
        if last is not None:
            pending.append(last)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    key: bytes
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            return value  # the first, as Starlette's `Headers.get` reads it
    return None


def _bearer(scope: Scope) -> str | None:
    header = _header(scope, b"authorization")
    if header is None:
        return None
    kind, _, token = header.decode("latin-1").partition(" ")
    return (token.strip() or None) if kind.lower() == "bearer" else None
