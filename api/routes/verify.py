"""Answers to presented keys: `/v1/verify` for services, `/v1/auth` for gateways' forward-auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from api.context import Services
from api.deps import bearer_token, services_of
from api.problems import ApiProblem, refusal_for
from api.schemas import (
    RateLimitInfo,
    UsageReport,
    UsageReportAccepted,
    VerifyCredits,
    VerifyRequest,
    VerifyResponse,
)
from api.verification import Answer, needed_scope
from domain.addresses import forwarded_client
from domain.errors import DomainError
from domain.text import MAX_ENDPOINT_LENGTH
from domain.verification import VerifyCode

router = APIRouter(tags=["verification"])


def forwarded_request(method: str, uri: str) -> tuple[str, str]:
    """The scope a forwarded request needs, and the endpoint it is recorded as (no query string)."""
    scope, path = needed_scope(method, uri)
    if scope is None:
        raise ApiProblem("X-Forwarded-Uri names no resource (its first path segment is empty)")
    return scope, f"{method.upper()} {path}"[:MAX_ENDPOINT_LENGTH]


async def _decide(
    services: Services,
    request: Request,
    secret: str | None,
    scope: str | None,
    endpoint: str,
    via: str,
    record: bool = True,
    address: str | None = None,
) -> Answer:
    client = request.client.host if request.client else None
    verify = services.verification.verify
    # With shared (Redis) counters a decision does network I/O: keep it off the event loop.
    if services.quotas.shared:
        return await run_in_threadpool(verify, secret, scope, endpoint, via, record, client, address)
    return verify(secret, scope, endpoint, via, record, client, address)


@router.post("/v1/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest, request: Request, response: Response) -> VerifyResponse:
    """Always 200: the verdict is in `code`. A valid answer consumes quota."""
    services = services_of(request)  # not a dependency: resolving one costs more than the decision
    scope = services.ledger.catalog.parse(body.scope)
    endpoint = body.endpoint or "POST /v1/verify"
    # The address recorded is the one the calling service names (`client_ip`), never the caller's own.
    answer = await _decide(services, request, body.key, scope, endpoint, "verify", body.record, body.client_ip)
    key = answer.key
    limited = answer.code in (VerifyCode.RATE_LIMITED, VerifyCode.USAGE_EXCEEDED)
    refusal = refusal_for(answer) if limited else None
    if refusal is not None:  # the headers /v1/auth's 429 carries (RateLimit, Retry-After when one is due)
        response.headers.update(refusal.headers)
    elif answer.quota is not None:  # as every answer about a known key: RateLimit headers
        response.headers.update(answer.quota.headers())
    window = answer.quota.binding if answer.quota else None
    return VerifyResponse(
        valid=answer.allowed,
        code=answer.code.value,
        key_id=key.credentials.key_id if key else None,
        workspace_id=key.credentials.workspace_id if key else None,
        scopes=key.scopes if key else None,
        ratelimit=RateLimitInfo(limit=window.limit, remaining=window.remaining, reset=window.reset) if window else None,
        name=key.name if key else None,
        owner_id=key.owner_id if key else None,
        meta=key.meta if key else None,
        credits=VerifyCredits(remaining=answer.credits_remaining) if answer.credits_remaining is not None else None,
    )


@router.get("/v1/auth", status_code=204, response_class=Response)
async def forward_auth(
    request: Request,
    x_forwarded_method: Annotated[str | None, Header()] = None,
    x_forwarded_uri: Annotated[str | None, Header()] = None,
    x_forwarded_for: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_real_ip: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Forward-auth for nginx `auth_request` and Traefik ForwardAuth: 204 or the refusal's status."""
    services = services_of(request)
    if not x_forwarded_method or not x_forwarded_uri:
        raise ApiProblem("forward-auth needs the X-Forwarded-Method and X-Forwarded-Uri headers")
    scope, endpoint = forwarded_request(x_forwarded_method, x_forwarded_uri)
    # The gateway names the client (SPEC 8.2); asked directly, the caller is the client.
    address = forwarded_client(x_forwarded_for, x_real_ip) or (request.client.host if request.client else None)
    answer = await _decide(services, request, bearer_token(request), scope, endpoint, "auth", True, address)
    refusal = refusal_for(answer, services.insufficient_scope_status)
    if refusal is not None:
        raise refusal
    headers = answer.quota.headers() if answer.quota else {}
    if answer.key is not None:
        headers["X-Keyledger-Key-Id"] = str(answer.key.credentials.key_id)
        headers["X-Keyledger-Workspace-Id"] = str(answer.key.credentials.workspace_id)
    return Response(status_code=204, headers=headers)


def _scope(services: Services, scope: str | None) -> str | None:
    """A reported scope as the catalog spells it; one the catalog refuses is recorded as none (no 422 for a report)."""
    if scope is None:
        return None
    try:
        return services.ledger.catalog.parse(scope)
    except DomainError:
        return None


@router.post("/v1/usage/report", status_code=202, response_model=UsageReportAccepted)
async def report_usage(body: UsageReport, request: Request) -> UsageReportAccepted:
    """Usage a service recorded itself (the remote guard: each request's real status, after `record: false`).

    Each item names its key by the secret presented, so no credential is needed and a caller can add
    usage only to keys it holds. The answer does not say which items named a key (no guessing oracle).
    """
    services = services_of(request)
    verification = services.verification

    def record() -> None:
        for item in body.items:
            # The key rules alone: found keys, whatever their state; with the scope, whether the key held it.
            answer = verification.judge(item.key, _scope(services, item.scope))
            if answer.key is not None:
                verification.record(answer, item.endpoint, item.status, item.client_ip)

    await run_in_threadpool(record)  # a key seen first may be loaded from the store
    return UsageReportAccepted(accepted=len(body.items))
