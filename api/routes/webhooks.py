"""A workspace's webhooks (SPEC 8.3, admin keys): subscribe, list, delete, and see or retry deliveries.

Subscriptions are events of the workspace (in its history, audit trail and stream); the signing
secret is derived from the webhook's id (`adapters.webhooks.signing`) and shown once, at creation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from adapters.webhooks.state import Delivery
from api.deps import AdminCaller, ServicesDep
from api.schemas import DeliveryList, DeliveryPublic, WebhookCreate, WebhookList, WebhookPublic, WebhookWithSecret

router = APIRouter(prefix="/v1/workspaces/{ws}/webhooks", tags=["webhooks"])
POSITION = Path(ge=1, le=10**18 - 1, description="the audit position the delivery carries")


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _delivery(delivery: Delivery) -> DeliveryPublic:
    return DeliveryPublic(
        position=delivery.position,
        type=delivery.type,
        attempts=delivery.attempts,
        status=delivery.status,  # one of the three (adapters.webhooks.state)
        last_status_code=delivery.last_status_code,
        last_attempt_at=_time(delivery.last_attempt_at),
        next_attempt_at=_time(delivery.next_attempt_at),
    )


@router.post("", status_code=201, response_model=WebhookWithSecret)
async def create_webhook(
    ws: UUID, body: WebhookCreate, services: ServicesDep, caller: AdminCaller
) -> WebhookWithSecret:
    # The target check resolves the host name: off the event loop.
    await run_in_threadpool(services.webhooks.check_target, body.url)
    update = await run_in_threadpool(
        services.ledger.create_webhook, ws, body.url, body.types, body.description, caller.actor
    )
    secret = services.webhooks.secret(update.webhook.id)
    return WebhookWithSecret(webhook=WebhookPublic.of(update.webhook), secret=secret)


@router.get("", response_model=WebhookList)
def list_webhooks(ws: UUID, services: ServicesDep, caller: AdminCaller) -> WebhookList:
    workspace = services.ledger.get_workspace(ws)
    return WebhookList(items=[WebhookPublic.of(w) for w in workspace.list_webhooks()])


@router.get("/{webhook}", response_model=WebhookPublic)
def get_webhook(ws: UUID, webhook: UUID, services: ServicesDep, caller: AdminCaller) -> WebhookPublic:
    return WebhookPublic.of(services.ledger.get_workspace(ws).webhook(webhook))


@router.delete("/{webhook}", status_code=204)
def delete_webhook(ws: UUID, webhook: UUID, services: ServicesDep, caller: AdminCaller) -> None:
    services.ledger.delete_webhook(ws, webhook, caller.actor)


@router.get("/{webhook}/deliveries", response_model=DeliveryList)
def list_deliveries(ws: UUID, webhook: UUID, services: ServicesDep, caller: AdminCaller) -> DeliveryList:
    services.ledger.get_workspace(ws).webhook(webhook)  # another workspace's, or a deleted one: 404
    return DeliveryList(items=[_delivery(d) for d in services.webhooks.deliveries(webhook)])


@router.post("/{webhook}/deliveries/{position}/retry", response_model=DeliveryPublic)
def retry_delivery(
    ws: UUID,
    webhook: UUID,
    position: Annotated[int, POSITION],
    services: ServicesDep,
    caller: AdminCaller,
) -> DeliveryPublic:
    """Send the delivery again as soon as it is the webhook's oldest pending one (at once, usually)."""
    services.ledger.get_workspace(ws).webhook(webhook)
    return _delivery(services.webhooks.retry(webhook, position))
