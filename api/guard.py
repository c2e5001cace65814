"""keyledger's guard for Python services: an ASGI middleware (the in-process one).

Its public name is now `keyledger.guard.Guard` (with `RemoteGuard` and `require_scope` beside it);
`api.guard.KeyledgerGuard` stays importable for this release.

Mount it in front of a service's own ASGI app; each request must present a
key (Bearer) holding the scope its method and path need (or what `scope_for`
declares for it) and within its quota. The real response status is recorded as
the key's usage. It runs keyledger's verification in-process, on the same
event store and Redis as the keyledger API, so revocations reach it the same way.

    from keyledger.bootstrap import open_ledger
    from keyledger.services import build_verification
    stack = build_verification(settings, open_ledger(settings))
    stack.start()
    app = KeyledgerGuard(service_app, stack.verification)
    # scopes declared per route instead:
    # KeyledgerGuard(app, v, scope_for=lambda method, path: ROUTE_SCOPES.get(path))
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.forwarded_path import AmbiguousPath
from api.problems import ambiguous_path_response, problem_response, refusal_for
from api.verification import VerificationService, needed_scope
from domain.text import MAX_ENDPOINT_LENGTH

ScopeFor = Callable[[str, str], str | None]


def scope_from_method_and_path(method: str, path: str) -> str | None:
    return needed_scope(method, path)[0]


class KeyledgerGuard:
    def __init__(
        self,
        app: ASGIApp,
        verification: VerificationService,
        scope_for: ScopeFor = scope_from_method_and_path,
        exempt: tuple[str, ...] = (),
        insufficient_scope_status: int = 403,
    ) -> None:
        self.app = app
        self.verification = verification
        self.scope_for = scope_for
        self.exempt = exempt
        self.insufficient_scope_status = insufficient_scope_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        secret = bearer_of(scope)
        try:
            needed = self.scope_for(method, path)
        except AmbiguousPath as error:
            await ambiguous_path_response(error)(scope, receive, send)
            return
        endpoint = f"{method} {path}"[:MAX_ENDPOINT_LENGTH]
        address = scope["client"][0] if scope.get("client") else None  # the guard's connection (SPEC 8.2)
        # No address for the guessing throttle: the guard answers its service's callers, as it always did.
        answer = await self.verification.decide(secret, needed, endpoint, "guard", False, None)
        refusal = refusal_for(answer, self.insufficient_scope_status)
        if refusal is not None:
            self.verification.record(answer, endpoint, refusal.status, address)
            await problem_response(refusal)(scope, receive, send)
            return

        headers = answer.quota.headers() if answer.quota else {}
        extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        record = self.verification.record
        done = lambda status: record(answer, endpoint, status, address)  # noqa: E731
        await pass_through(self.app, scope, receive, send, extra, done)


def bearer_of(scope: Scope) -> str | None:
    """The Bearer token of an ASGI request, if any."""
    kind, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    return (token.strip() or None) if kind.lower() == "bearer" else None


async def pass_through(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    extra: list[tuple[bytes, bytes]],
    done: Callable[[int], None],
) -> None:
    """Run the guarded app with `extra` headers on its answer; `done(status)` with the status it answered."""
    status = 500  # what an app that fails before answering amounts to

    async def send_and_watch(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    try:
        await app(scope, receive, send_and_watch)
    finally:
        done(status)
