"""The baseline of `bench_verify`: a bare FastAPI endpoint taking and answering the same shapes.

It does no verification at all, so the ratio against it measures what keyledger adds.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.schemas import RateLimitInfo, VerifyRequest, VerifyResponse

app = FastAPI()


@app.post("/v1/verify", response_model=VerifyResponse)
async def verify(body: VerifyRequest) -> VerifyResponse:
    return VerifyResponse(
        valid=True,
        code="VALID",
        key_id=None,
        workspace_id=None,
        scopes=[body.scope],
        ratelimit=RateLimitInfo(limit=1, remaining=1, reset=1),
    )
