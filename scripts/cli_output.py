"""What every CLI command prints on stdout: JSON, times as RFC 3339, UUIDs as text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import typer

from domain.timefmt import to_rfc3339


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, default=json_default, indent=2))
