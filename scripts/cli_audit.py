"""`keyledger audit ...`: the auditor's tools, working from the raw events alone.

They need neither the API nor any read model: replay rebuilds one key, export
streams every event as JSON lines, verify checks the HMAC chain. Progress goes
to stderr (rich), data to stdout. Bad input raises a DomainError, which
`scripts.cli.main` turns into one line on stderr and exit status 2; a failed
verification exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from eventsourcing.persistence import Notification
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters.auditchain.links import MAC_SIZE, ChainKey, Link
from adapters.auditchain.postgres import ChainedPostgresRecorder
from adapters.auditchain.snapshots import check_snapshots
from adapters.auditchain.sqlite import ChainedSQLiteRecorder
from adapters.auditchain.verify import Verdict, verify_chain
from adapters.auditchain.writer import ENV_STARTUP_CHECK
from domain.application import KeyLedger
from domain.auditlog import EventInfo, describe
from domain.errors import InvalidInput
from domain.history import replay
from domain.timefmt import parse_rfc3339
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from scripts.cli_output import emit, json_default

TAMPERED = 1
EXPORT_BATCH = 500

audit_app = typer.Typer(
    help="Auditors' tools: replay a key, export events, verify the tamper-evident chain.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    settings = Settings()
    if not settings.is_postgres:
        path = settings.url.database or ""
        # Opening a missing SQLite file would create an empty store and "verify" it.
        if path not in ("", ":memory:") and not Path(path).exists():
            raise InvalidInput(f"no event store at {path} (KEYLEDGER_DATABASE_URL)")
    return settings


def _ledger(settings: Settings) -> KeyLedger:
    """The application over the store, without the write-path start-up check (auditing only reads)."""
    return open_ledger(settings, {f"KEYLEDGER_{ENV_STARTUP_CHECK}": "n"})


def _progress(console: Console) -> Progress:
    # stdout stays untouched: it carries the data.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        redirect_stdout=False,
        redirect_stderr=False,
        transient=True,
        disable=not console.is_terminal,  # a bar only where someone watches it
    )


def _entry(position: int | None, info: EventInfo) -> dict[str, Any]:
    return {
        "position": position,
        "occurred_at": info.occurred_at,
        "type": info.type,
        "workspace_id": info.workspace_id,
        "key_id": info.key_id,
        "actor": info.actor,
        "version": info.version,
        "data": info.data,
    }


@audit_app.command("replay")
def replay_command(
    key: str,
    at: Annotated[str | None, typer.Option(help="RFC 3339 time; default: now")] = None,
) -> None:
    """Rebuild a key from its raw events: its timeline up to T and its state at T."""
    key_id = _uuid(key, "key")
    moment = parse_rfc3339(at, "--at") if at else None
    ledger = _ledger(_settings())
    try:
        result = replay(ledger, key_id, moment)
    finally:
        ledger.close()
    payload = {
        "key_id": key_id,
        "at": result.state.at,
        "timeline": [_entry(t.position, t.event) for t in result.timeline],
        "state": dataclasses.asdict(result.state),
    }
    emit(payload)


@audit_app.command("export")
def export_command(
    workspace: Annotated[str | None, typer.Option(help="only this workspace's events")] = None,
    since: Annotated[str | None, typer.Option(help="only events at or after this RFC 3339 time")] = None,
) -> None:
    """Stream every event as one JSON line on stdout (position order), without secrets or digests."""
    workspace_id = _uuid(workspace, "workspace") if workspace else None
    moment = parse_rfc3339(since, "--since") if since else None
    ledger = _ledger(_settings())
    console = Console(stderr=True)
    written = 0
    try:
        total = ledger.recorder.max_notification_id() or 0
        with _progress(console) as progress:
            task = progress.add_task("export", total=total)
            for line in _export_lines(ledger, workspace_id, moment):
                if line is not None:
                    sys.stdout.write(line + "\n")
                    written += 1
                else:
                    progress.advance(task, EXPORT_BATCH)
        sys.stdout.flush()
    finally:
        ledger.close()
    typer.echo(f"exported {written} events", err=True)


def _notifications(ledger: KeyLedger) -> Iterator[list[Notification]]:
    after = 0
    while batch := list(ledger.recorder.select_notifications(after, EXPORT_BATCH, inclusive_of_start=False)):
        yield batch
        after = batch[-1].id


def _export_lines(ledger: KeyLedger, workspace_id: UUID | None, since: datetime | None) -> Iterator[str | None]:
    """JSON lines, with None after each batch (a progress tick)."""
    key_workspaces: dict[UUID, UUID] = {}  # from each KeyIssued, for later events stored by v1 code (no workspace)
    for batch in _notifications(ledger):
        for notification in batch:
            info = describe(ledger.mapper.to_domain_event(notification))
            if info.type == "KeyIssued" and info.key_id and info.workspace_id:
                key_workspaces[info.key_id] = info.workspace_id
            if info.workspace_id is None and info.key_id is not None:
                info = dataclasses.replace(info, workspace_id=key_workspaces.get(info.key_id))
            if info.type == "UsageRecorded" and workspace_id is not None:
                info = _usage_of(info, workspace_id)
            elif workspace_id is not None and info.workspace_id != workspace_id:
                continue
            if since is not None and info.occurred_at < since:
                continue
            if info.type == "UsageRecorded" and not info.data.get("entries") and not info.data.get("credits"):
                continue
            yield json.dumps(_entry(notification.id, info), default=json_default)
        yield None


def _usage_of(info: EventInfo, workspace_id: UUID) -> EventInfo:
    """A usage batch mixes workspaces: keep only the entries of the one exported."""
    entries = [e for e in info.data.get("entries", []) if e.get("workspace_id") == str(workspace_id)]
    credits = [c for c in info.data.get("credits", []) if c.get("workspace_id") == str(workspace_id)]
    data = {**info.data, "entries": entries} | ({"credits": credits} if "credits" in info.data else {})
    return dataclasses.replace(info, workspace_id=workspace_id, data=data)


@audit_app.command("verify")
def verify_command(
    anchor: Annotated[
        str | None,
        typer.Option(help="POSITION:MAC of a head printed by an earlier verify; detects a removed tail"),
    ] = None,
) -> None:
    """Check every stored event against the HMAC chain, then every snapshot against its events.

    Names the first bad position and exits 1; prints the chain head to anchor a later run.
    """
    settings = _settings()
    if settings.audit_key is None:
        raise InvalidInput("KEYLEDGER_AUDIT_KEY is not set: it is needed to check the audit chain")
    key = ChainKey.from_setting(settings.audit_key.get_secret_value())
    expected = _anchor(anchor) if anchor else None
    ledger = _ledger(settings)
    try:
        verdict = _verify(ledger, key, expected, Console(stderr=True))
    finally:
        ledger.close()
    head = {"position": verdict.head.position, "mac": verdict.head.mac.hex()} if verdict.head else None
    if verdict.finding is None:
        typer.echo(json.dumps({"ok": True, "events": verdict.events, "head": head}, indent=2))
        typer.echo(f"verified {verdict.events} events; chain head {_format_head(verdict.head)}", err=True)
        return
    finding = verdict.finding
    report = {
        "ok": False,
        "first_bad_position": finding.position,
        "problem": finding.problem.value,
        "detail": finding.detail,
        "events_verified": verdict.events,
        "last_good": head,
    }
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"keyledger: audit verify failed at position {finding.position}: {finding.detail}", err=True)
    raise typer.Exit(TAMPERED)


def _verify(ledger: KeyLedger, key: ChainKey, anchor: Link | None, console: Console) -> Verdict:
    recorder = ledger.recorder
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        raise InvalidInput("this store's recorder keeps no audit chain")
    with _progress(console) as progress:
        events = progress.add_task("events", total=recorder.max_notification_id() or 0)
        verdict = verify_chain(recorder, key, anchor, lambda p: progress.update(events, completed=p))
        if not verdict.ok:
            return verdict
        ids = recorder.select_snapshot_ids()
        snapshots = progress.add_task("snapshots", total=len(ids))
        finding = check_snapshots(ledger, ids, recorder.select_positions, lambda: progress.advance(snapshots))
        return dataclasses.replace(verdict, finding=finding)


def _format_head(head: Link | None) -> str:
    return f"{head.position}:{head.mac.hex()}" if head else "(empty store)"


def _anchor(text: str) -> Link:
    position, _, mac = text.partition(":")
    try:
        link = Link(int(position), bytes.fromhex(mac))
    except ValueError:
        link = Link(-1, b"")
    if link.position < 0 or len(link.mac) != MAC_SIZE:
        raise InvalidInput("--anchor must read POSITION:MAC as printed by `keyledger audit verify`")
    return link


def _uuid(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a UUID") from None
