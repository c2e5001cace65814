"""Events as auditors see them: name, time, actor, subject and data, never a digest.

Shared by point-in-time replay, the export and (through the API) the history
endpoints, so every audit output hides secrets in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.alerts import Alert
from domain.credentials import fingerprint
from domain.imports import SecretClaim
from domain.keyinfo import parse_meta
from domain.keys import ApiKey
from domain.timefmt import to_rfc3339
from domain.workspace import Workspace

_PLAIN = frozenset({str, int, float, bool})
# Fields every event has, shown apart from `data`.
ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic", "timestamp", "actor"})


@dataclass(frozen=True)
class EventInfo:
    type: str
    version: int  # the event's place in its aggregate's sequence
    occurred_at: datetime
    actor: str | None
    key_id: UUID | None
    workspace_id: UUID | None  # None for a v1 key event after issue: the caller knows it from KeyIssued
    data: dict[str, Any]  # JSON-ready


def describe(event: Any) -> EventInfo:
    """What an auditor may see of one domain event."""
    key_id: UUID | None = None
    workspace_id: UUID | None = None
    if isinstance(event, ApiKey.Event):
        key_id = event.originator_id
        workspace_id = event.workspace_id  # None in events stored by v1 code after KeyIssued
    elif isinstance(event, Alert.Event):
        key_id, workspace_id = event.key_id, event.workspace_id
    elif isinstance(event, Workspace.Event):
        workspace_id = event.originator_id
        key_id = getattr(event, "key_id", None)  # slot taken or released
    elif isinstance(event, SecretClaim.SecretClaimed):  # an imported digest's claim: never the digest itself
        workspace_id, key_id = event.workspace_id, event.key_id
    return EventInfo(
        type=type(event).__name__,
        version=event.originator_version,
        occurred_at=event.timestamp,
        actor=getattr(event, "actor", None),
        key_id=key_id,
        workspace_id=workspace_id,
        data=safe_data(vars(event)),
    )


def safe_data(fields: dict[str, Any]) -> dict[str, Any]:
    """An event's own fields, JSON-ready; a digest becomes its public fingerprint."""
    data: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ENVELOPE or (name == "workspace_id" and value is None):  # not recorded by v1 key events
            continue
        if name == "secret_digest":
            data["secret_fingerprint"] = fingerprint(value)
        elif name == "meta" and isinstance(value, str):  # kept as its JSON text (domain.keyinfo)
            data[name] = parse_meta(value)
        elif "digest" in name or "secret" in name:
            continue  # anything else secret-like stays out, whatever a future event adds
        else:
            data[name] = _jsonable(value)
    return data


def _jsonable(value: Any) -> Any:
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, datetime):
        return to_rfc3339(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value
