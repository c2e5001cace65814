"""RFC 9457 problem responses: every error the API answers is mapped here, in one place.

Routes raise domain errors or the auth errors below and never build error
responses themselves. No problem body echoes request input: a body that
failed validation may contain a secret.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy.exc
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from adapters.database import LockTaken
from adapters.quotas import QuotaDecision, RedisUnavailable
from api.forwarded_path import AmbiguousPath
from api.guesses import GuessingThrottled
from api.verification import Answer
from domain.errors import Conflict, DomainError, InvalidInput, NotFound
from domain.verification import VerifyCode
from projections.errors import ProjectionNotReady

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem(
    status: int, title: str, detail: str, kind: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": f"/problems/{kind}", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class ApiProblem(Exception):
    """An HTTP-level refusal (authentication, authorisation, quota, lagging read models)."""

    status = 400
    title = "Bad request"
    kind = "bad-request"

    def __init__(self, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


@dataclass(frozen=True)
class KeyRefusal:
    """How a refused answer to a presented key reads as a problem: one table for /v1/auth, the fast path,
    the management endpoints and both guards (`keyledger.guard` builds the same bodies from /v1/verify)."""

    status: int  # INSUFFICIENT_SCOPE: the deployment's status replaces it (403 unless configured)
    title: str
    kind: str
    detail: str = ""  # the fixed detail of a 401; the others depend on the answer (the functions below)


INVALID_TOKEN_CHALLENGE = 'Bearer error="invalid_token"'  # noqa: S105 (a WWW-Authenticate challenge)
KEY_REFUSALS: dict[VerifyCode, KeyRefusal] = {
    VerifyCode.NOT_FOUND: KeyRefusal(
        401, "Unauthorized", "unauthorized", "the presented key is missing, malformed or unknown"
    ),
    VerifyCode.REVOKED: KeyRefusal(401, "Unauthorized", "unauthorized", "the presented key is revoked"),
    VerifyCode.SUSPENDED: KeyRefusal(401, "Unauthorized", "unauthorized", "the presented key is suspended"),
    VerifyCode.EXPIRED: KeyRefusal(401, "Unauthorized", "unauthorized", "the presented key or secret has expired"),
    VerifyCode.INSUFFICIENT_SCOPE: KeyRefusal(403, "Insufficient scope", "insufficient-scope"),
    VerifyCode.RATE_LIMITED: KeyRefusal(429, "Too many requests", "rate-limited"),
    VerifyCode.USAGE_EXCEEDED: KeyRefusal(429, "Usage exceeded", "usage-exceeded"),
}


def insufficient_scope_detail(scope: str | None) -> str:
    return f"the key lacks the scope {scope!r}"


def insufficient_scope_challenge(scope: str | None) -> str:
    return f'Bearer error="insufficient_scope", scope="{scope}"'


def rate_limited_detail(limit: int | str, window: str, retry_after: int) -> str:
    return f"the key used its {limit} requests per {window}; retry in {retry_after} s"


def usage_exceeded_detail(retry_after: int | str | None) -> str:
    refill = f"; refilled in {retry_after} s" if retry_after is not None else "; no refill is due"
    return f"the key has no credits left{refill}"


class Unauthorized(ApiProblem):
    status = 401
    title = KEY_REFUSALS[VerifyCode.NOT_FOUND].title
    kind = KEY_REFUSALS[VerifyCode.NOT_FOUND].kind

    def __init__(self, detail: str, code: str = "NOT_FOUND") -> None:
        super().__init__(detail, {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}, code=code)


class InsufficientScope(ApiProblem):
    status = 403
    title = KEY_REFUSALS[VerifyCode.INSUFFICIENT_SCOPE].title
    kind = KEY_REFUSALS[VerifyCode.INSUFFICIENT_SCOPE].kind

    def __init__(self, scope: str, status: int = 403) -> None:
        super().__init__(
            insufficient_scope_detail(scope),
            {"WWW-Authenticate": insufficient_scope_challenge(scope)},
            code="INSUFFICIENT_SCOPE",
            scope=scope,
        )
        self.status = status


class RateLimited(ApiProblem):
    status = 429
    title = KEY_REFUSALS[VerifyCode.RATE_LIMITED].title
    kind = KEY_REFUSALS[VerifyCode.RATE_LIMITED].kind

    def __init__(self, decision: QuotaDecision) -> None:
        window = decision.binding
        super().__init__(
            rate_limited_detail(window.limit, window.name, decision.retry_after),
            decision.headers(),
            code="RATE_LIMITED",
        )


class UsageExceeded(ApiProblem):
    status = 429
    title = KEY_REFUSALS[VerifyCode.USAGE_EXCEEDED].title
    kind = KEY_REFUSALS[VerifyCode.USAGE_EXCEEDED].kind

    def __init__(self, quota: QuotaDecision | None, retry_after: int | None) -> None:
        headers = {k: v for k, v in (quota.headers() if quota else {}).items() if k != "Retry-After"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        super().__init__(usage_exceeded_detail(retry_after), headers, code="USAGE_EXCEEDED")


class OperatorOnly(ApiProblem):
    status = 401
    title = "Unauthorized"
    kind = "unauthorized"

    def __init__(self) -> None:
        super().__init__(
            "this endpoint needs the operator token as a Bearer token", {"WWW-Authenticate": INVALID_TOKEN_CHALLENGE}
        )


def refusal_for(answer: Answer, insufficient_scope_status: int = 403) -> ApiProblem | None:
    """The problem an answer to a presented key means (401, 403 or 429), or None when allowed."""
    if answer.code is VerifyCode.VALID:
        return None
    if answer.code is VerifyCode.RATE_LIMITED and answer.quota is not None:
        return RateLimited(answer.quota)
    if answer.code is VerifyCode.USAGE_EXCEEDED:
        return UsageExceeded(answer.quota, answer.credits_retry_after)
    if answer.code is VerifyCode.INSUFFICIENT_SCOPE:
        return InsufficientScope(answer.needed_scope or "", insufficient_scope_status)
    refusal = KEY_REFUSALS.get(answer.code)
    if refusal is None or refusal.status != 401:
        return Unauthorized(KEY_REFUSALS[VerifyCode.NOT_FOUND].detail)
    return Unauthorized(refusal.detail, answer.code.value)


_FAMILIES: list[tuple[type[DomainError], int]] = [(InvalidInput, 422), (NotFound, 404), (Conflict, 409)]


def _domain_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    status = next((code for family, code in _FAMILIES if isinstance(error, family)), 400)
    return problem(status, error.title, str(error), _slug(type(error).__name__))


def problem_response(error: ApiProblem) -> JSONResponse:
    return problem(error.status, error.title, error.detail, error.kind, error.headers, **error.extra)


def _api_problem(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiProblem)
    return problem_response(error)


def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # Location and message only: `input` may hold a secret.
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in error.errors()]
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem(422, "Invalid request", f"the request is not valid: {where}", "invalid-request", errors=errors)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path: Starlette's 405 names the first route's only."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    titles = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}
    detail = error.detail if isinstance(error.detail, str) else "request refused"
    headers = dict(error.headers or {})
    if error.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    return problem(
        error.status_code, titles.get(error.status_code, "HTTP error"), detail, f"http-{error.status_code}", headers
    )


def _ambiguous_path(_: Request, error: Exception) -> JSONResponse:
    return ambiguous_path_response(error)


def ambiguous_path_response(error: Exception) -> JSONResponse:
    return problem(400, "Ambiguous path", str(error), "ambiguous-path")


def _throttled(_: Request, error: Exception) -> JSONResponse:
    return throttled_response(error)


def throttled_response(error: Exception) -> JSONResponse:
    assert isinstance(error, GuessingThrottled)
    headers = {"Retry-After": str(error.retry_after)}
    return problem(429, "Too many unknown keys", str(error), "too-many-unknown-keys", headers)


# The store or a database unreachable: eventsourcing's wrapped driver errors, SQLAlchemy's, the pools' timeouts.
UNAVAILABLE: tuple[type[Exception], ...] = (
    StoreOperationalError,
    StoreInterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    RedisUnavailable,
    LockTaken,
)


def _unavailable(_: Request, error: Exception) -> JSONResponse:
    log.warning("a dependency is unreachable: %s", type(error).__name__)
    return problem(
        503, "Service unavailable", "a dependency is unreachable; retry shortly", "unavailable", {"Retry-After": "5"}
    )


def _not_ready(_: Request, error: Exception) -> JSONResponse:
    # A read model not built yet (a first start still building it): come back shortly.
    return problem(503, "Not ready", str(error), "not-ready", {"Retry-After": "5"})


def _unexpected(_: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error: %s", type(error).__name__, exc_info=error)
    # The server closes the connection after a 500 (Starlette re-raises the error): say so.
    return problem(
        500, "Internal error", "the server failed; the error was logged", "internal-error", {"Connection": "close"}
    )


Handler = Callable[[Request, Exception], Response]
HANDLERS: list[tuple[type[Exception], Handler]] = [
    (DomainError, _domain_error),
    (ApiProblem, _api_problem),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (ProjectionNotReady, _not_ready),
    (AmbiguousPath, _ambiguous_path),
    (GuessingThrottled, _throttled),
    *((unavailable, _unavailable) for unavailable in UNAVAILABLE),
    (Exception, _unexpected),
]


def response_for(request: Request, error: Exception) -> Response:
    """The answer the app's handlers give to `error`, found as Starlette finds them (the error's classes in
    order): for the hot path (`api.hotpath`), which answers ahead of FastAPI's handlers."""
    handlers = dict(HANDLERS)
    handler = next(handlers[cls] for cls in type(error).__mro__ if cls in handlers)
    return handler(request, error)


def install(app: FastAPI) -> None:
    for kind, handler in HANDLERS:
        app.add_exception_handler(kind, handler)
