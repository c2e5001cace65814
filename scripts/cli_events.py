"""`keyledger events tail WS`: a workspace's audit entries as JSON lines, then new ones as they happen.

It works without a running API: each turn it brings the read models up to the store's head
(exactly once, alongside any API process) and prints what is new, the same entries
`GET /v1/workspaces/{ws}/events/stream` sends.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType
from typing import Annotated
from uuid import UUID

import typer

from domain.errors import InvalidInput
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from scripts.cli_output import json_default

PAGE = 1000
IDLE_SECONDS = 0.25

events_app = typer.Typer(help="The change feed: a workspace's audit entries as they happen.", no_args_is_help=True)


@events_app.command("tail")
def tail(
    workspace: str,
    after: Annotated[int, typer.Option(min=0, help="start after this position (a `position` printed earlier)")] = 0,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="keep printing new entries until Ctrl-C")] = True,
) -> None:
    """Print the workspace's audit entries after --after as JSON lines (oldest first), then follow new ones."""
    try:
        workspace_id = UUID(workspace)
    except ValueError:
        raise InvalidInput(f"workspace {workspace!r} is not a UUID") from None
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    settings = Settings()
    ledger = open_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        ledger.get_workspace(workspace_id)  # an unknown workspace is bad input, not an empty feed
        last = after
        while not stop.is_set():
            models.catch_up()
            entries, _ = models.audit(workspace_id, after=last, limit=PAGE)
            for entry in entries:
                line = {
                    "position": entry.position,
                    "occurred_at": entry.occurred_at,
                    "type": entry.type,
                    "key_id": entry.key_id,
                    "actor": entry.actor,
                    "data": entry.data,
                }
                sys.stdout.write(json.dumps(line, default=json_default) + "\n")
                last = entry.position
            sys.stdout.flush()
            if len(entries) < PAGE:
                if not follow:
                    break
                stop.wait(IDLE_SECONDS)
    except KeyboardInterrupt:  # the usual way to stop following
        pass
    finally:
        models.close()
        ledger.close()
