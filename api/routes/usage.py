"""Per-key usage of a workspace, from the quota-usage read model."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Literal
from uuid import UUID

from fastapi import APIRouter

from api.deps import AdminCaller, ServicesDep
from api.schemas import EndpointCount, KeyUsagePublic, ScopeCount, UsageList, UsagePoint, UtcTime
from projections.usage import UsageBucket, rebucket

router = APIRouter(prefix="/v1/workspaces/{ws}", tags=["usage"])


def _start(start: datetime | date) -> datetime:
    """A day's bucket (a date) starts at its UTC midnight: sent as a date alone it would carry no offset."""
    return start if isinstance(start, datetime) else datetime.combine(start, time(), UTC)


def _points(rows: Iterable[UsageBucket]) -> list[UsagePoint]:
    return [
        UsagePoint(start=_start(start), requests=requests, successes=ok, client_errors=errors, rate_limited=limited)
        for start, requests, ok, errors, limited in rows
    ]


@router.get("/usage", response_model=UsageList)
def usage(
    ws: UUID,
    services: ServicesDep,
    caller: AdminCaller,
    key: UUID | None = None,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    bucket: Literal["minute", "hour", "day"] | None = None,
) -> UsageList:
    """`bucket` replaces the minute series by `series`, summed per UTC minute, hour or day (a chart's steps)."""
    items = [
        KeyUsagePublic(
            key_id=u.key_id,
            total=u.total,
            successes=u.successes,
            success_rate=u.success_rate,
            client_errors=u.client_errors,
            rate_limited=u.rate_limited,
            last_used=u.last_used,
            top_endpoints=[EndpointCount(endpoint=e, count=c) for e, c in u.top_endpoints],
            scopes=[
                ScopeCount(scope=s.scope, allowed=s.allowed, refused=s.refused, last_seen=s.last_seen) for s in u.scopes
            ],
            per_minute=_points(u.per_minute) if bucket is None else [],
            per_day=_points(u.per_day),
            series=_points(rebucket(u.per_minute, bucket)) if bucket is not None else None,
        )
        for u in services.read_models.usage(ws, key, since, until)
    ]
    return UsageList(bucket=bucket, items=items)
