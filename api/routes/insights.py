"""Least privilege and leak response (SPEC 8.2): a workspace's findings, a key's exposure since a moment.

The rules are the domain's (`domain.insights`, `domain.exposure`); the rows come from the usage,
keys and audit read models (`projections.insights`).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import AdminCaller, AuditorCaller, ServicesDep
from api.insights import workspace_findings
from api.schemas import (
    ExposureEndpoint,
    ExposureReport,
    ExposureRequests,
    ExposureSource,
    FindingPublic,
    InsightsReport,
    ScopesFrom,
    SecretValidity,
    UtcTime,
)
from domain.errors import KeyNotFound
from domain.exposure import HistoryEvent, scope_periods, secret_periods
from domain.insights import DEFAULT_DAYS, MAX_DAYS, MIN_DAYS

router = APIRouter(prefix="/v1/workspaces/{ws}", tags=["insights"])


@router.get("/insights", response_model=InsightsReport)
def insights(
    ws: UUID,
    services: ServicesDep,
    caller: AdminCaller,
    days: Annotated[int, Query(ge=MIN_DAYS, le=MAX_DAYS, description="the window, in days back from now")] = (
        DEFAULT_DAYS
    ),
) -> InsightsReport:
    """Findings about the workspace's keys not revoked, from their recorded usage and their events."""
    now = services.ledger.clock()
    found = workspace_findings(services.read_models, ws, now, days)
    return InsightsReport(
        window_days=days,
        generated_at=now,
        findings=[FindingPublic.model_validate(f, from_attributes=True) for f in found],
    )


@router.get("/keys/{key}/exposure", response_model=ExposureReport)
def exposure(
    ws: UUID,
    key: UUID,
    since: Annotated[UtcTime, Query(description="RFC 3339 time the key is believed leaked since")],
    services: ServicesDep,
    caller: AuditorCaller,
) -> ExposureReport:
    """What a key believed leaked since `since` could do and did: secrets, scopes, requests, endpoints, sources."""
    until = services.ledger.clock()
    entries = services.read_models.history(ws, key)
    if not entries:
        raise KeyNotFound(f"key {key} not found")
    history = [HistoryEvent(e.type, e.occurred_at, e.data) for e in entries]
    requests, endpoints, sources = services.read_models.exposure_usage(key, since)
    return ExposureReport(
        key_id=key,
        since=since,
        until=until,
        secrets=[
            SecretValidity(fingerprint=p.fingerprint, valid_from=p.valid_from, valid_until=p.valid_until)
            for p in secret_periods(history, since)
        ],
        scopes=[ScopesFrom(start=p.start, scopes=p.scopes) for p in scope_periods(history, since)],
        requests=ExposureRequests.model_validate(requests, from_attributes=True),
        endpoints=[ExposureEndpoint.model_validate(e, from_attributes=True) for e in endpoints],
        sources=[ExposureSource.model_validate(s, from_attributes=True) for s in sources],
    )
