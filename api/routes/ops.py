"""Liveness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep
from api.problems import problem

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    """Liveness: answers at once, whatever the dependencies (those are `/readyz`'s)."""
    return {"status": "ok"}


@router.get("/readyz")  # its 503 is documented by `api.openapi`
def readyz(services: ServicesDep) -> Response:
    """Readiness: 503 until start-up is done, then 200 with each dependency's state (`degraded` while one is down).

    A shared outage leaves every process `degraded` but in the load balancer: each still answers what it can.
    """
    if not services.ready:
        return problem(
            503, "Not ready", "starting up: opening the store, catching up", "not-ready", {"Retry-After": "1"}
        )
    return JSONResponse(services.readiness())


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
