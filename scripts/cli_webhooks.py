"""`keyledger webhooks add|list|remove|deliveries WS`: a workspace's webhooks, as the operator (SPEC 8.3).

The same checks and events as the API's (actor `operator`); the signing secret `add` prints is shown
only then. Deliveries are made by running API processes (`keyledger serve`), not by these commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import typer

from adapters.webhooks.dispatcher import Webhooks
from domain.application import OPERATOR, KeyLedger
from domain.errors import InvalidInput
from domain.workspace import Webhook
from keyledger.services import open_command_ledger, open_webhooks
from keyledger.settings import Settings
from projections import ReadModels
from scripts.cli_output import emit

webhooks_app = typer.Typer(help="Webhooks: a workspace's audit entries pushed to a URL.", no_args_is_help=True)


def _uuid(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a UUID") from None


@contextmanager
def _opened() -> Iterator[tuple[KeyLedger, Webhooks]]:
    settings = Settings()
    ledger = open_command_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        yield ledger, open_webhooks(settings, ledger, models)
    finally:
        models.close()
        ledger.close()


def _webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "types": webhook.types,
        "description": webhook.description,
        "created_at": webhook.created_at,
    }


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@webhooks_app.command("add")
def add(
    workspace: str,
    url: str,
    types: Annotated[
        list[str] | None, typer.Option("--type", help="an event type to deliver (repeat; default all)")
    ] = None,
    description: Annotated[str | None, typer.Option(help="a note for people")] = None,
) -> None:
    """Subscribe URL to the workspace's audit entries; prints the webhook and its signing secret (once)."""
    ws = _uuid(workspace, "workspace")
    with _opened() as (ledger, webhooks):
        webhooks.check_target(url)
        update = ledger.create_webhook(ws, url, types, description, OPERATOR)
        emit({"webhook": _webhook_json(update.webhook), "secret": webhooks.secret(update.webhook.id)})
    typer.echo("The signing secret is shown only this once; store it now.", err=True)


@webhooks_app.command("list")
def list_(workspace: str) -> None:
    """The workspace's webhooks."""
    ws = _uuid(workspace, "workspace")
    with _opened() as (ledger, _):
        emit({"items": [_webhook_json(w) for w in ledger.get_workspace(ws).list_webhooks()]})


@webhooks_app.command("remove")
def remove(workspace: str, webhook: str) -> None:
    """Delete a webhook: nothing more is delivered to it."""
    ws, webhook_id = _uuid(workspace, "workspace"), _uuid(webhook, "webhook")
    with _opened() as (ledger, _):
        update = ledger.delete_webhook(ws, webhook_id, OPERATOR)
        emit({"deleted": _webhook_json(update.webhook), "position": update.position})


@webhooks_app.command("deliveries")
def deliveries(workspace: str, webhook: str) -> None:
    """The webhook's latest 100 deliveries, newest first."""
    ws, webhook_id = _uuid(workspace, "workspace"), _uuid(webhook, "webhook")
    with _opened() as (ledger, webhooks):
        ledger.get_workspace(ws).webhook(webhook_id)
        items = [
            {
                "position": d.position,
                "type": d.type,
                "attempts": d.attempts,
                "status": d.status,
                "last_status_code": d.last_status_code,
                "last_attempt_at": _time(d.last_attempt_at),
                "next_attempt_at": _time(d.next_attempt_at),
            }
            for d in webhooks.deliveries(webhook_id)
        ]
        emit({"items": items})
