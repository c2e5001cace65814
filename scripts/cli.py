"""The `keyledger` command: operator commands on the configured store, actor `operator`.

Output is JSON on stdout, one object per command, so it can be piped to jq.
Bad input prints one line on stderr and exits with status 2, changing nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import pydantic
import typer
from typer.exceptions import TyperException

from domain.application import OPERATOR, IssuedSecret, KeyLedger
from domain.errors import DomainError, InvalidInput
from domain.imports import import_digest
from domain.keys import DEFAULT_GRACE_SECONDS, ApiKey
from domain.timefmt import parse_rfc3339
from domain.workspace import Workspace
from keyledger.services import open_command_ledger
from keyledger.settings import Settings, StartupError
from scripts.cli_audit import audit_app, tree_progress
from scripts.cli_events import events_app
from scripts.cli_insights import insights
from scripts.cli_output import emit
from scripts.cli_projections import projections_app
from scripts.cli_webhooks import webhooks_app

USAGE_ERROR = 2

app = typer.Typer(help="keyledger: event-sourced API-key lifecycle.", no_args_is_help=True, add_completion=False)
workspace_app = typer.Typer(help="Workspaces and their plans.", no_args_is_help=True)
key_app = typer.Typer(help="Keys: issue, scopes, rotation, revocation.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")
app.add_typer(key_app, name="key")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")
app.add_typer(events_app, name="events")
app.add_typer(webhooks_app, name="webhooks")
app.command("insights")(insights)


def _ledger() -> KeyLedger:
    with tree_progress() as progress:  # a store written by older code gets its audit tree first
        return open_command_ledger(Settings(), progress)


def _uuid(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a UUID") from None


def _json_object(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput(f'{what} must be JSON text, e.g. \'{{"team": "data"}}\'') from None


def _key_json(ledger: KeyLedger, key: ApiKey) -> dict[str, Any]:
    plan = ledger.get_workspace(key.workspace_id).limits
    return dataclasses.asdict(key.state(ledger.clock(), ledger.catalog, plan))


def _workspace_json(workspace: Workspace) -> dict[str, Any]:
    return {
        "id": workspace.id,
        "name": workspace.name,
        "plan": workspace.plan,
        "requests_per_minute": workspace.requests_per_minute,
        "requests_per_day": workspace.requests_per_day,
        "live_keys": workspace.live_keys,
    }


def _emit_secret(ledger: KeyLedger, issued: IssuedSecret) -> None:
    emit({"key": _key_json(ledger, issued.key), "secret": issued.secret, "position": issued.position})
    typer.echo("The secret is shown only this once; store it now.", err=True)


@workspace_app.command("create")
def workspace_create(
    name: str,
    plan: Annotated[str, typer.Option(help="starter, pro or enterprise")] = "starter",
    requests_per_minute: Annotated[int | None, typer.Option("--rpm", help="enterprise only")] = None,
    requests_per_day: Annotated[int | None, typer.Option("--rpd", help="enterprise only")] = None,
) -> None:
    """Create a workspace; prints its first admin key's secret once."""
    ledger = _ledger()
    created = ledger.create_workspace(name, plan, OPERATOR, requests_per_minute, requests_per_day)
    emit(
        {
            "workspace": _workspace_json(created.workspace),
            "admin_key": {"key": _key_json(ledger, created.admin_key), "secret": created.secret},
            "position": created.position,
        }
    )
    typer.echo("The admin secret is shown only this once; store it now.", err=True)


@workspace_app.command("show")
def workspace_show(workspace: str) -> None:
    """Show a workspace, its plan and live key count."""
    emit(_workspace_json(_ledger().get_workspace(_uuid(workspace, "workspace"))))


@workspace_app.command("plan")
def workspace_plan(
    workspace: str,
    plan: Annotated[str, typer.Option(help="starter, pro or enterprise")],
    requests_per_minute: Annotated[int | None, typer.Option("--rpm", help="enterprise only")] = None,
    requests_per_day: Annotated[int | None, typer.Option("--rpd", help="enterprise only")] = None,
) -> None:
    """Change a workspace's plan."""
    update = _ledger().change_plan(_uuid(workspace, "workspace"), plan, OPERATOR, requests_per_minute, requests_per_day)
    emit({**_workspace_json(update.workspace), "position": update.position})


@key_app.command("issue")
def key_issue(
    workspace: str,
    name: Annotated[str, typer.Option(help="what the key is for")],
    scope: Annotated[list[str] | None, typer.Option(help="a scope to grant; repeat for more")] = None,
    expires_at: Annotated[str | None, typer.Option(help="RFC 3339 expiry time")] = None,
    meta: Annotated[str | None, typer.Option(help="a JSON object (at most 4 KiB) to keep with the key")] = None,
    owner_id: Annotated[str | None, typer.Option(help="your own user or customer id (1-200 characters)")] = None,
    credits: Annotated[int | None, typer.Option(help="make it usage-limited: the credits it may spend")] = None,
    refill_amount: Annotated[int | None, typer.Option(help="reset what remains to this each interval")] = None,
    refill_interval: Annotated[str | None, typer.Option(help="day or month (UTC)")] = None,
) -> None:
    """Issue a key; prints its secret once."""
    ledger = _ledger()
    expiry = parse_rfc3339(expires_at, "expires_at") if expires_at else None
    issued = ledger.issue_key(
        _uuid(workspace, "workspace"),
        name,
        scope or [],
        OPERATOR,
        expiry,
        meta=_json_object(meta, "meta") if meta is not None else None,
        owner_id=owner_id,
        credits=_credits(credits, refill_amount, refill_interval),
    )
    _emit_secret(ledger, issued)


def _credits(
    remaining: int | None, refill_amount: int | None, refill_interval: str | None
) -> tuple[int, int | None, str | None] | None:
    if remaining is None:
        if refill_amount is not None or refill_interval is not None:
            raise InvalidInput("a refill needs --credits too")
        return None
    return remaining, refill_amount, refill_interval


@key_app.command("set-credits")
def key_set_credits(
    key: str,
    remaining: Annotated[int, typer.Argument(help="credits the key may spend from now on (a fresh count)")],
    refill_amount: Annotated[int | None, typer.Option(help="reset what remains to this each interval")] = None,
    refill_interval: Annotated[str | None, typer.Option(help="day or month (UTC)")] = None,
) -> None:
    """Make a key usage-limited: each allowed answer spends a credit; USAGE_EXCEEDED at zero."""
    ledger = _ledger()
    update = ledger.set_credits(_uuid(key, "key"), remaining, refill_amount, refill_interval, OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("import")
def key_import(
    workspace: str,
    name: Annotated[str, typer.Option(help="what the key is for")],
    sha256: Annotated[str | None, typer.Option(help="the hex SHA-256 of the secret issued elsewhere")] = None,
    secret_stdin: Annotated[
        bool, typer.Option("--secret-stdin", help="read the secret itself from stdin (never from the command line)")
    ] = False,
    scope: Annotated[list[str] | None, typer.Option(help="a scope to grant; repeat for more")] = None,
    expires_at: Annotated[str | None, typer.Option(help="RFC 3339 expiry time")] = None,
    meta: Annotated[str | None, typer.Option(help="a JSON object (at most 4 KiB) to keep with the key")] = None,
    owner_id: Annotated[str | None, typer.Option(help="your own user or customer id (1-200 characters)")] = None,
) -> None:
    """Import a key issued by another system: its secret then verifies like a native key (only its digest is kept)."""
    secret = sys.stdin.readline().rstrip("\r\n") if secret_stdin else None
    digest = import_digest(secret, sha256)
    ledger = _ledger()
    expiry = parse_rfc3339(expires_at, "expires_at") if expires_at else None
    imported = ledger.import_key(
        _uuid(workspace, "workspace"),
        name,
        scope or [],
        digest,
        OPERATOR,
        expiry,
        meta=_json_object(meta, "meta") if meta is not None else None,
        owner_id=owner_id,
    )
    emit({"key": _key_json(ledger, imported.key), "position": imported.position})


@key_app.command("update")
def key_update(
    key: str,
    name: Annotated[str | None, typer.Option(help="a new name")] = None,
    meta: Annotated[str | None, typer.Option(help="a new JSON object for meta")] = None,
    owner_id: Annotated[str | None, typer.Option(help="a new owner id")] = None,
    clear_meta: Annotated[bool, typer.Option("--clear-meta", help="remove meta")] = False,
    clear_owner: Annotated[bool, typer.Option("--clear-owner", help="remove the owner id")] = False,
) -> None:
    """Change a key's name, meta or owner id (the options given), in one event."""
    if (meta is not None and clear_meta) or (owner_id is not None and clear_owner):
        raise InvalidInput("give a new value or clear it, not both")
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if meta is not None or clear_meta:
        changes["meta"] = _json_object(meta, "meta") if meta is not None else None
    if owner_id is not None or clear_owner:
        changes["owner_id"] = owner_id
    ledger = _ledger()
    update = ledger.change_details(_uuid(key, "key"), changes, OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("grant")
def key_grant(key: str, scopes: list[str]) -> None:
    """Grant scopes to a key (already held scopes change nothing)."""
    ledger = _ledger()
    update = ledger.grant_scopes(_uuid(key, "key"), scopes, OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("revoke-scope")
def key_revoke_scope(key: str, scope: str) -> None:
    """Revoke one scope from a key."""
    ledger = _ledger()
    update = ledger.revoke_scopes(_uuid(key, "key"), [scope], OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("rotate")
def key_rotate(
    key: str,
    grace: Annotated[
        int, typer.Option(help="seconds the previous secret stays valid (0-86400)")
    ] = DEFAULT_GRACE_SECONDS,
) -> None:
    """Rotate a key's secret; prints the new secret once."""
    ledger = _ledger()
    _emit_secret(ledger, ledger.rotate_key(_uuid(key, "key"), OPERATOR, grace))


@key_app.command("revoke")
def key_revoke(key: str, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Revoke a key at once; final."""
    ledger = _ledger()
    update = ledger.revoke_key(_uuid(key, "key"), OPERATOR, reason)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("set-scopes")
def key_set_scopes(key: str, scopes: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """Make the key's granted scopes exactly these (none: no scope), in one change."""
    ledger = _ledger()
    update = ledger.set_scopes(_uuid(key, "key"), scopes or [], OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("set-limits")
def key_set_limits(
    key: str,
    requests_per_minute: Annotated[int | None, typer.Option("--rpm", help="at most the plan's per minute")] = None,
    requests_per_day: Annotated[int | None, typer.Option("--rpd", help="at most the plan's per day")] = None,
) -> None:
    """Limit a key below its plan (a window left out keeps the plan's); the lower limit is enforced."""
    ledger = _ledger()
    update = ledger.set_key_limits(_uuid(key, "key"), requests_per_minute, requests_per_day, OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("clear-limits")
def key_clear_limits(key: str) -> None:
    """Return a key to its plan's limits."""
    ledger = _ledger()
    update = ledger.clear_key_limits(_uuid(key, "key"), OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("suspend")
def key_suspend(key: str, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Suspend a key: refused as SUSPENDED until resumed (its secrets are kept)."""
    ledger = _ledger()
    update = ledger.suspend_key(_uuid(key, "key"), OPERATOR, reason)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("resume")
def key_resume(key: str) -> None:
    """Resume a suspended key."""
    ledger = _ledger()
    update = ledger.resume_key(_uuid(key, "key"), OPERATOR)
    emit({"key": _key_json(ledger, update.key), "position": update.position})


@key_app.command("show")
def key_show(key: str) -> None:
    """Show a key's current state (never its secret)."""
    ledger = _ledger()
    emit(_key_json(ledger, ledger.get_key(_uuid(key, "key"))))


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class HttpParser(StrEnum):
    auto = "auto"  # httptools when installed (it is, with keyledger), else h11
    h11 = "h11"
    httptools = "httptools"


class EventLoop(StrEnum):
    auto = "auto"  # uvloop when installed (it is, with keyledger), else asyncio
    asyncio = "asyncio"
    uvloop = "uvloop"


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="worker processes (more than 1 needs KEYLEDGER_REDIS_URL)", min=1, max=64)
    ] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="a log line per request")] = True,
    log_format: Annotated[LogFormat, typer.Option(help="text, or JSON lines")] = LogFormat.text,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(help="addresses of gateways whose X-Forwarded-For/-Proto to trust (comma-separated, or *)"),
    ] = None,
    http: Annotated[HttpParser, typer.Option(help="HTTP/1.1 implementation, as uvicorn's --http")] = HttpParser.auto,
    loop: Annotated[EventLoop, typer.Option(help="event loop, as uvicorn's --loop")] = EventLoop.auto,
) -> None:
    """Start the HTTP API (uvicorn) on the configured store."""
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from api.app import create_app
    from keyledger.logs import log_config
    from keyledger.services import build_services

    settings = Settings()
    if workers > 1 and not settings.redis_url:
        raise StartupError(
            "KEYLEDGER_REDIS_URL: --workers above 1 needs Redis (the processes share quota counters and changes)"
        )
    services = build_services(settings)
    if services.generated_operator_token:
        typer.echo(
            "No KEYLEDGER_OPERATOR_TOKEN was configured; generated one "
            "(shown only this once, stored as a digest):\n"
            f"  {services.generated_operator_token}"
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_config": log_config(log_format.value),
        "proxy_headers": forwarded_allow_ips is not None,
        "forwarded_allow_ips": forwarded_allow_ips,
        "http": http.value,
        "loop": loop.value,
    }
    if workers == 1:
        uvicorn.run(create_app(services, freeze_gc=True), **options)
        return
    services.stop()  # each worker builds its own from the same settings (the token is stored now)
    config = uvicorn.Config("keyledger.asgi:create", factory=True, workers=workers, **options)
    listening = config.bind_socket()
    # Workers accept on this shared socket, and their connections miss the TCP_NODELAY asyncio sets on a socket
    # it opened itself: Nagle's algorithm then held each answer's body behind its headers until the client's
    # delayed ACK, 40 ms a request. Accepted connections inherit the option from the listening socket (Linux).
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[listening]).run()


def _fail(message: str) -> None:
    print(f"keyledger: error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def main() -> None:
    """Entry point: turns every expected failure into one line on stderr and exit status 2."""
    try:
        status = app(standalone_mode=False)
    except TyperException as error:  # usage errors: missing or bad arguments
        message = str(getattr(error, "format_message", error.__str__)()).replace("\n", " ").strip()
        if not message:  # a command group called bare: its help was printed already
            sys.exit(USAGE_ERROR)
        _fail(message)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted")
    except DomainError as error:
        _fail(str(error))
    except StartupError as error:
        _fail(str(error))
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        setting = "KEYLEDGER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        _fail(f"bad setting {setting}: {first['msg']}")
    else:
        sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
