"""`keyledger audit ...`: the auditor's tools, working from the raw events alone.

They need neither the API nor any read model: replay rebuilds one key, export
streams every event as JSON lines (with --proofs, each with its inclusion proof
and a signed tree head at the end), verify checks the Merkle tree against the
signed checkpoints (and the HMAC chain where configured), checkpoint signs the
tree now, and verify-export checks an export offline. Progress goes
to stderr (rich), data to stdout. Bad input raises a DomainError, which
`scripts.cli.main` turns into one line on stderr and exit status 2; a failed
verification exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from adapters.auditchain.checkpoints import Checkpoint, parse_public_key
from adapters.auditchain.exportfile import ProofWriter, trailer, verify_export
from adapters.auditchain.exportrows import Describer, Entry, StoredRow, entry_of, reference
from adapters.auditchain.links import MAC_SIZE, ChainKey, Link
from adapters.auditchain.postgres import ChainedPostgresRecorder
from adapters.auditchain.snapshots import check_snapshots
from adapters.auditchain.sqlite import ChainedSQLiteRecorder
from adapters.auditchain.treeverify import TreeVerdict, verify_tree
from adapters.auditchain.verify import Verdict, verify_chain
from adapters.auditchain.writer import ENV_STARTUP_CHECK
from domain.application import KeyLedger
from domain.errors import InvalidInput
from domain.history import replay
from domain.timefmt import parse_rfc3339
from keyledger.audit import configured_public_key, open_audit_log
from keyledger.bootstrap import build_tree, open_ledger
from keyledger.settings import Settings
from scripts.cli_output import emit, json_default

TAMPERED = 1
EXPORT_BATCH = 500
_encode_line = json.JSONEncoder(default=json_default).encode  # one encoder, not one per line

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
        "timeline": [entry_of(t.position, t.event) for t in result.timeline],
        "state": dataclasses.asdict(result.state),
    }
    emit(payload)


@audit_app.command("export")
def export_command(
    workspace: Annotated[str | None, typer.Option(help="only this workspace's events")] = None,
    since: Annotated[str | None, typer.Option(help="only events at or after this RFC 3339 time")] = None,
    proofs: Annotated[
        bool,
        typer.Option("--proofs", help="each line with its leaf and inclusion proof; ends with the signed tree head"),
    ] = False,
) -> None:
    """Stream every event as one JSON line on stdout (position order), without secrets or digests."""
    workspace_id = _uuid(workspace, "workspace") if workspace else None
    moment = parse_rfc3339(since, "--since") if since else None
    settings = _settings()
    ledger = _ledger(settings)
    console = Console(stderr=True)
    written = 0
    try:
        checkpoint, writer, bound = None, None, 2**63 - 1
        if proofs:
            audit = open_audit_log(settings, ledger)
            ledger_tree(ledger, console)  # a store written before the tree: build it first
            # Events stored before the checkpoint but not in its tree were put there behind keyledger's
            # back: they are exported too, for verify-export to name. Later ones are not in this export.
            bound = ledger.recorder.max_notification_id() or 0
            checkpoint = audit.checkpoint_if_grown() or audit.latest() or audit.checkpoint()
            writer = ProofWriter(audit.recorder, checkpoint)
            bound = max(bound, writer.last_position)
        total = ledger.recorder.max_notification_id() or 0
        complete = workspace_id is None and moment is None
        with _progress(console) as progress:
            task = progress.add_task("export", total=total)
            for batch in _export_batches(ledger, bound, workspace_id, moment, keep_all=proofs and complete):
                lines = writer.lines(batch) if writer is not None else [_encode_line(entry) for _, entry in batch]
                sys.stdout.write("".join(f"{line}\n" for line in lines))
                written += len(batch)
                progress.advance(task, EXPORT_BATCH)
            if checkpoint is not None:
                sys.stdout.write(json.dumps(trailer(checkpoint, complete)) + "\n")
        sys.stdout.flush()
    finally:
        ledger.close()
    signed = f"; signed tree of {checkpoint.tree_size} events" if checkpoint else ""
    typer.echo(f"exported {written} events{signed}", err=True)


def _rows(ledger: KeyLedger, stop: int) -> Iterator[list[StoredRow]]:
    """The stored events up to position `stop`, a page at a time, as plain rows (no domain event objects)."""
    recorder = ledger.recorder
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        raise InvalidInput("this store's recorder cannot be exported")
    after = 0
    while batch := recorder.stored_rows(after, stop, EXPORT_BATCH):
        yield batch
        after = batch[-1].position


def _export_batches(
    ledger: KeyLedger, stop: int, workspace_id: UUID | None, since: datetime | None, keep_all: bool
) -> Iterator[list[tuple[StoredRow, Entry]]]:
    """The export's entries, a batch of stored events at a time; `keep_all` keeps empty usage batches too."""
    describer = Describer(reference(ledger.mapper))
    workspace = None if workspace_id is None else str(workspace_id)
    key_workspaces: dict[str, str] = {}  # from each KeyIssued, for later events stored by v1 code (no workspace)
    for batch in _rows(ledger, stop):
        entries: list[tuple[StoredRow, Entry]] = []
        for row in batch:
            entry, occurred_at = describer.entry(row)
            kind, key_id = entry["type"], entry["key_id"]
            if kind == "KeyIssued" and key_id and entry["workspace_id"]:
                key_workspaces[key_id] = entry["workspace_id"]
            if entry["workspace_id"] is None and key_id is not None:
                entry["workspace_id"] = key_workspaces.get(key_id)
            if kind == "UsageRecorded" and workspace is not None:
                _usage_of(entry, workspace)
            elif workspace is not None and entry["workspace_id"] != workspace:
                continue
            if since is not None and occurred_at < since:
                continue
            data = entry["data"]
            if kind == "UsageRecorded" and not data.get("entries") and not data.get("credits") and not keep_all:
                continue
            entries.append((row, entry))
        yield entries


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _usage_of(entry: Entry, workspace: str) -> None:
    """A usage batch mixes workspaces: keep only the entries of the one exported."""
    data = entry["data"]
    entries = [e for e in data.get("entries", []) if e.get("workspace_id") == workspace]
    credits = [c for c in data.get("credits", []) if c.get("workspace_id") == workspace]
    entry["workspace_id"] = workspace
    entry["data"] = {**data, "entries": entries} | ({"credits": credits} if "credits" in data else {})


@audit_app.command("verify")
def verify_command(
    public_key: Annotated[
        str | None,
        typer.Option(help="base64 public key (GET /v1/audit/public-key) or a file; default: the configured key's"),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(help="an earlier checkpoint (JSON or a file holding it) the log must still extend"),
    ] = None,
    anchor: Annotated[
        str | None,
        typer.Option(help="POSITION:MAC of an HMAC chain head printed by an earlier verify; detects a removed tail"),
    ] = None,
) -> None:
    """Check every stored event against the Merkle tree and the signed checkpoints, then the HMAC chain
    (with KEYLEDGER_AUDIT_KEY) and every snapshot against its events.

    Names the first bad position and exits 1.
    """
    settings = _settings()
    key = parse_public_key(public_key) if public_key else configured_public_key(settings)
    earlier = _checkpoint(after) if after else None
    chain_key = ChainKey.from_setting(settings.audit_key.get_secret_value()) if settings.audit_key else None
    if anchor and chain_key is None:
        raise InvalidInput("--anchor checks the HMAC chain: it needs KEYLEDGER_AUDIT_KEY")
    expected = _anchor(anchor) if anchor else None
    ledger = _ledger(settings)
    try:
        tree, chain = _verify(ledger, key, earlier, chain_key, expected, Console(stderr=True))
    finally:
        ledger.close()
    findings = [f for f in (tree.finding, chain.finding if chain else None) if f is not None]
    head = {"position": chain.head.position, "mac": chain.head.mac.hex()} if chain and chain.head else None
    signed = tree.checkpoint.to_json() if tree.checkpoint else None
    if not findings:
        report: dict[str, Any] = {"ok": True, "events": tree.events, "checkpoint": signed}
        if chain is not None:
            report["head"] = head
        typer.echo(json.dumps(report, indent=2))
        size = tree.checkpoint.tree_size if tree.checkpoint else 0
        chained = f"; chain head {_format_head(chain.head)}" if chain else ""
        typer.echo(f"verified {tree.events} events; latest checkpoint signs {size}{chained}", err=True)
        return
    finding = min(findings, key=lambda f: f.position)
    report = {
        "ok": False,
        "first_bad_position": finding.position,
        "problem": finding.problem.value,
        "detail": finding.detail,
        "events_verified": tree.events,
        "checkpoint": signed,
    }
    if chain is not None:
        report["last_good"] = head
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"keyledger: audit verify failed at position {finding.position}: {finding.detail}", err=True)
    raise typer.Exit(TAMPERED)


def _verify(
    ledger: KeyLedger,
    public_key: bytes | None,
    after: Checkpoint | None,
    chain_key: ChainKey | None,
    anchor: Link | None,
    console: Console,
) -> tuple[TreeVerdict, Verdict | None]:
    recorder = ledger.recorder
    if not isinstance(recorder, ChainedSQLiteRecorder | ChainedPostgresRecorder):
        raise InvalidInput("this store's recorder keeps no audit tree")
    if public_key is None and (after is not None or recorder.checkpoints(latest_only=True)):
        raise InvalidInput(
            "no public key to check the checkpoints with: pass --public-key (GET /v1/audit/public-key) "
            "or set KEYLEDGER_AUDIT_SIGNING_KEY"
        )
    with _progress(console) as progress:
        total = recorder.max_notification_id() or 0
        events = progress.add_task("events", total=total)
        tree = verify_tree(recorder, public_key or b"", after, lambda p: progress.update(events, completed=p))
        chain = None
        if chain_key is not None:
            links = progress.add_task("chain", total=total)
            chain = verify_chain(recorder, chain_key, anchor, lambda p: progress.update(links, completed=p))
        if tree.finding is not None or (chain is not None and not chain.ok):
            return tree, chain
        ids = recorder.select_snapshot_ids()
        snapshots = progress.add_task("snapshots", total=len(ids))
        finding = check_snapshots(ledger, ids, recorder.select_positions, lambda: progress.advance(snapshots))
        return dataclasses.replace(tree, finding=finding), chain


@audit_app.command("checkpoint")
def checkpoint_command() -> None:
    """Sign the audit tree as it stands now (a checkpoint) and print it."""
    settings = _settings()
    console = Console(stderr=True)
    ledger = _ledger(settings)
    try:
        ledger_tree(ledger, console)
        made = open_audit_log(settings, ledger).checkpoint()
    finally:
        ledger.close()
    emit(made.to_json())


@audit_app.command("verify-export")
def verify_export_command(
    file: Annotated[Path, typer.Argument(help="the output of `keyledger audit export --proofs`")],
    public_key: Annotated[str, typer.Option(help="base64 public key (GET /v1/audit/public-key) or a file")],
    after: Annotated[
        str | None,
        typer.Option(help="an earlier checkpoint (JSON or a file holding it) the exported log must extend"),
    ] = None,
) -> None:
    """Check an export with proofs offline: no database, no setting, no secret.

    Every line must be in the signed tree, the signature must hold and the tree must extend the
    earlier checkpoint. Names the first bad line and exits 1.
    """
    key = parse_public_key(public_key)
    earlier = _checkpoint(after) if after else None
    verdict = verify_export(file, key, earlier)
    signed = verdict.checkpoint.to_json() if verdict.checkpoint else None
    if verdict.ok:
        typer.echo(json.dumps({"ok": True, "lines": verdict.lines, "checkpoint": signed}, indent=2))
        typer.echo(f"verified {verdict.lines} events in the signed tree", err=True)
        return
    report = {
        "ok": False,
        "first_bad_line": verdict.bad_line,
        "detail": verdict.detail,
        "lines_verified": verdict.lines,
    }
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"keyledger: verify-export failed at line {verdict.bad_line}: {verdict.detail}", err=True)
    raise typer.Exit(TAMPERED)


def _checkpoint(text: str) -> Checkpoint:
    candidate = text.strip()
    if not candidate.startswith("{"):
        try:
            candidate = Path(candidate).read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidInput(f"--after: cannot read {text}: {error.strerror}") from None
    try:
        document = json.loads(candidate)
    except ValueError:
        raise InvalidInput("--after must be a checkpoint (JSON) or a file holding one") from None
    if isinstance(document, dict) and "checkpoint" in document:  # an export's last line
        document = document["checkpoint"]
    return Checkpoint.from_json(document)


def ledger_tree(ledger: KeyLedger, console: Console) -> None:
    """Build the tree of a store written before it existed, with a progress bar."""
    with tree_progress(console) as update:
        build_tree(ledger, update)


@contextmanager
def tree_progress(console: Console | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress callback for building the audit tree: a bar on a terminal, silent elsewhere."""
    with _progress(console or Console(stderr=True)) as progress:
        task: TaskID | None = None

        def update(position: int, last: int) -> None:
            nonlocal task
            if task is None:
                task = progress.add_task("building the audit tree", total=last)
            progress.update(task, completed=position)

        yield update


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
