"""`keyledger projections ...`: follow the event stream, show where each read model is, rebuild them."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from domain.application import KeyLedger
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ProjectionNotReady, ReadModels
from scripts.cli_output import json_default

projections_app = typer.Typer(
    help="Read models: follow the event stream, show their status, rebuild them.", no_args_is_help=True
)


@contextmanager
def _read_models() -> Iterator[ReadModels]:
    settings = Settings()
    ledger: KeyLedger = open_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        yield models
    except ProjectionNotReady as error:  # environment, not input: exit 1
        print(f"keyledger: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        models.close()
        ledger.close()


class _EventsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>9,.0f} events/s" if speed else "        - events/s", style="progress.data.speed")


@contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, fed with (position reached, head position)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _EventsPerSecond(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@projections_app.command("run")
def run() -> None:
    """Keep every read model caught up until Ctrl-C (a worker, beside or instead of the API's runners)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    with _read_models() as models:
        with _progress_bar("building") as progress:
            models.ensure_current(progress)  # what is missing or outdated, before following
        models.start()
        typer.echo("following the event stream; Ctrl-C to stop", err=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    typer.echo("stopped", err=True)


@projections_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Each read model's version, position and lag (events in the store it has not applied)."""
    with _read_models() as models:
        rows = models.status()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dataclasses.asdict(row), default=json_default))
        return
    table = Table("name", "version", "position", "lag", "generation", "state")
    for row in rows:
        version = "-" if row.version is None else str(row.version)
        if row.version != row.code_version:
            version += f" (code: {row.code_version}, rebuild needed)"
        state = f"{row.state}: {row.error}" if row.error else row.state
        table.add_row(row.name, version, str(row.position), str(row.lag), str(row.generation or "-"), state)
    Console().print(table)


@projections_app.command("rebuild")
def rebuild(
    name: Annotated[str | None, typer.Argument(help="keys, usage or audit; all of them when omitted")] = None,
) -> None:
    """Replay the whole stream into fresh tables while the current ones serve, then switch."""
    with _read_models() as models:
        names = models.check_names([name]) if name is not None else models.names
        with _progress_bar(f"rebuilding {', '.join(names)}") as progress:
            models.rebuild(name, progress)
        for row in models.status():
            if row.name in names:
                typer.echo(f"{row.name}: generation {row.generation}, position {row.position}", err=True)
