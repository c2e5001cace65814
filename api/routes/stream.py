"""Change streams as Server-Sent Events: a workspace's audit entries, and every key change for the operator.

Both start with what is already recorded after the client's position and then push what comes,
within a second of its commit in any process (`api.event_stream`). A reconnecting client sends
`Last-Event-ID` and misses nothing.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AuditorCaller, OperatorDep, ServicesDep, authorize, bearer_token
from api.event_stream import HEADERS, PAGE, Pulse, follow, frame, start_position
from api.problems import ApiProblem
from api.schemas import AuditEntryPublic
from projections.audit import AuditEntry, Change

router = APIRouter(tags=["audit"])

EVENT_STREAM = "text/event-stream"
POSITION = Query(ge=0, le=10**18 - 1, description="start after this position (a `Last-Event-ID` header wins)")
LAST_EVENT_ID = Header(alias="Last-Event-ID", description="the id of the last event received (resuming)")


def _stream_doc(summary: str, example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {"description": summary, "content": {EVENT_STREAM: {"schema": {"type": "string"}, "example": example}}}
    }


def _pulse(request: Request) -> Pulse:
    app = request.app
    if not hasattr(app.state, "audit_pulse"):
        read_models = app.state.services.read_models
        app.state.audit_pulse = Pulse(lambda: read_models.applied("audit"))
    pulse: Pulse = app.state.audit_pulse
    return pulse


def _entry_frame(entry: AuditEntry) -> bytes:
    return frame(entry.position, entry.type, AuditEntryPublic.model_validate(entry, from_attributes=True))


def _change_frame(change: Change) -> bytes:
    return frame(
        change.position,
        "change",
        {"position": change.position, "workspace_id": change.workspace_id, "key_id": change.key_id},
    )


@router.get(
    "/v1/workspaces/{ws}/events/stream",
    response_class=StreamingResponse,
    responses=_stream_doc(
        "the workspace's audit entries as Server-Sent Events: `id` the position, `event` the type, `data` the "
        "entry (as in the audit log); a comment line at least every 15 s; the stream ends when the presented key "
        "stops being valid or loses `read:events`",
        'id: 42\nevent: KeyIssued\ndata: {"position":42,"type":"KeyIssued",...}\n\n',
    ),
)
async def workspace_events(
    ws: UUID,
    request: Request,
    services: ServicesDep,
    caller: AuditorCaller,
    after: Annotated[int | None, POSITION] = None,
    last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
) -> StreamingResponse:
    """The workspace's audit entries from its first (or after the client's position), then as they happen."""
    start = start_position(last_event_id, after)
    token = bearer_token(request)

    def read(position: int) -> list[AuditEntry]:
        return services.read_models.audit(ws, after=position, limit=PAGE)[0]

    async def still_allowed() -> bool:  # a revoked or narrowed key stops reading at once
        try:
            authorize(services, token, ws, "read:events")
        except ApiProblem:
            return False
        return True

    first = await run_in_threadpool(read, start)  # before the headers: a failure is still a problem answer
    body = follow(_pulse(request), read, lambda e: e.position, _entry_frame, start, first, still_allowed)
    return StreamingResponse(body, media_type=EVENT_STREAM, headers=HEADERS)


@router.get(
    "/v1/changes/stream",
    response_class=StreamingResponse,
    responses=_stream_doc(
        "every change as Server-Sent Events `change` with `{position, workspace_id, key_id}` (`key_id` null for a "
        "change of the whole workspace, e.g. its plan): ids and positions, nothing else",
        'id: 42\nevent: change\ndata: {"position":42,"workspace_id":"...","key_id":"..."}\n\n',
    ),
)
async def changes(
    request: Request,
    services: ServicesDep,
    _: OperatorDep,
    after: Annotated[int | None, POSITION] = None,
    last_event_id: Annotated[str | None, LAST_EVENT_ID] = None,
) -> StreamingResponse:
    """Which keys changed, across workspaces (operator token): for caches in other services to drop them."""
    start = start_position(last_event_id, after)

    def read(position: int) -> list[Change]:
        return services.read_models.changes(position, PAGE)

    first = await run_in_threadpool(read, start)
    body = follow(_pulse(request), read, lambda c: c.position, _change_frame, start, first)
    return StreamingResponse(body, media_type=EVENT_STREAM, headers=HEADERS)
