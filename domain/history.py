"""A key as it stood at any moment, rebuilt from its events (never from a read model).

`state_at` is the fast path: it finds the key's last version at or before T by
binary search over the stored versions (per-key timestamps only grow), then lets
the repository rebuild that version from the nearest snapshot. `replay` folds
every raw event from version 1 instead, without snapshots: slower, and
independent of them, which is what an auditor replaying a key wants.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast, runtime_checkable
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.application import KeyLedger
from domain.auditlog import EventInfo, describe
from domain.credentials import fingerprint
from domain.errors import InvalidInput, KeyNotFound, NotFound
from domain.keys import ApiKey, KeyState
from domain.plans import Limits
from domain.timefmt import to_rfc3339
from domain.workspace import Workspace


class KeyNotYetIssued(NotFound):
    """The key exists, but was issued after the moment asked about."""

    title = "Key not yet issued"


@dataclass(frozen=True)
class KeyStateAt:
    """A key at moment `at`: its state then, and which secrets (by fingerprint) were good then."""

    at: datetime
    version: int  # how many of the key's events had happened by `at`
    last_event_at: datetime
    key: KeyState  # status, scopes, effective scopes... as of `at`
    current_secret: str  # fingerprint of the secret current at `at`
    previous_secret: str | None  # fingerprint of the previous secret, while its grace lasted at `at`
    valid_secrets: list[str]  # fingerprints a verification at `at` would have accepted


@dataclass(frozen=True)
class TimelineEntry:
    position: int | None  # in the whole stream; None when the recorder cannot tell
    event: EventInfo


@dataclass(frozen=True)
class Replay:
    timeline: list[TimelineEntry]
    state: KeyStateAt


@runtime_checkable
class KnowsPositions(Protocol):
    """The chained recorders (adapters.auditchain) can map versions to stream positions."""

    def select_positions(self, originator_id: UUID) -> dict[int, int]: ...


def state_at(ledger: KeyLedger, key_id: UUID, at: datetime, workspace_id: UUID | None = None) -> KeyStateAt:
    """The key as it stood at `at`. KeyNotFound for a missing key or one of another workspace;
    KeyNotYetIssued when `at` is before its issue."""
    check_aware(at)
    issued = _issued_event(ledger, key_id, workspace_id)
    _check_issued_by(issued, at)
    version, last_event_at = _version_at(ledger, key_id, at)
    key: object = ledger.repository.get(key_id, version=version)
    if not isinstance(key, ApiKey):
        raise KeyNotFound(f"key {key_id} not found")
    return _state_of(ledger, key, at, version, last_event_at)


def replay(ledger: KeyLedger, key_id: UUID, at: datetime | None = None, workspace_id: UUID | None = None) -> Replay:
    """The key's timeline up to `at` (default: now) and its state then, from raw events alone."""
    at = at or ledger.clock()
    check_aware(at)
    issued = _issued_event(ledger, key_id, workspace_id)
    _check_issued_by(issued, at)
    positions = _positions(ledger, key_id)
    key: Any = None
    timeline: list[TimelineEntry] = []
    last: Any = None
    for event in _events(ledger, key_id):
        if event.timestamp > at:
            break
        key = event.mutate(key)
        timeline.append(TimelineEntry(positions.get(event.originator_version), describe(event)))
        last = event
    return Replay(timeline, _state_of(ledger, key, at, last.originator_version, last.timestamp))


# --- helpers ---------------------------------------------------------------


def _events(
    ledger: KeyLedger,
    key_id: UUID,
    *,
    gt: int | None = None,
    lte: int | None = None,
    desc: bool = False,
    limit: int | None = None,
) -> Iterator[Aggregate.Event]:
    """The key's stored events, decoded (typed: the library's protocol lacks `timestamp`)."""
    return cast("Iterator[Aggregate.Event]", ledger.events.get(key_id, gt=gt, lte=lte, desc=desc, limit=limit))


def check_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInput("the time must carry a time zone (RFC 3339, e.g. 2027-03-03T14:00:00Z)")


def _issued_event(ledger: KeyLedger, key_id: UUID, workspace_id: UUID | None) -> ApiKey.KeyIssued:
    first = next(iter(_events(ledger, key_id, lte=1)), None)
    if not isinstance(first, ApiKey.KeyIssued) or (workspace_id is not None and first.workspace_id != workspace_id):
        raise KeyNotFound(f"key {key_id} not found")
    return first


def _check_issued_by(issued: ApiKey.KeyIssued, at: datetime) -> None:
    if issued.timestamp > at:
        raise KeyNotYetIssued(
            f"key {issued.originator_id} did not exist at {to_rfc3339(at)}: "
            f"it was issued at {to_rfc3339(issued.timestamp)}"
        )


def _timestamp(ledger: KeyLedger, key_id: UUID, version: int) -> datetime:
    event = next(iter(_events(ledger, key_id, gt=version - 1, lte=version)))
    return event.timestamp


def _version_at(ledger: KeyLedger, key_id: UUID, at: datetime) -> tuple[int, datetime]:
    """The key's last version whose event happened at or before `at` (version 1 did)."""
    newest = next(iter(_events(ledger, key_id, desc=True, limit=1)))
    if newest.timestamp <= at:
        return newest.originator_version, newest.timestamp
    low, high = 1, newest.originator_version  # invariant: event `low` at or before `at`, `high` after
    low_time = _timestamp(ledger, key_id, low)
    while high - low > 1:
        middle = (low + high) // 2
        middle_time = _timestamp(ledger, key_id, middle)
        if middle_time <= at:
            low, low_time = middle, middle_time
        else:
            high = middle
    return low, low_time


def _positions(ledger: KeyLedger, key_id: UUID) -> dict[int, int]:
    recorder = ledger.recorder
    return recorder.select_positions(key_id) if isinstance(recorder, KnowsPositions) else {}


def _plan_at(ledger: KeyLedger, workspace_id: UUID, at: datetime) -> Limits | None:
    """The workspace's plan limits at `at` (its key's limits are enforced below them)."""
    version, _ = _version_at(ledger, workspace_id, at)
    workspace: object = ledger.repository.get(workspace_id, version=version)
    return workspace.limits if isinstance(workspace, Workspace) else None


def _state_of(ledger: KeyLedger, key: ApiKey, at: datetime, version: int, last_event_at: datetime) -> KeyStateAt:
    state = key.state(at, ledger.catalog, _plan_at(ledger, key.workspace_id, at))
    current = fingerprint(key.secret_digest)
    previous = (
        fingerprint(key.previous_digest)
        if key.previous_digest is not None and key.previous_secret_valid_until(at) is not None
        else None
    )
    valid = [] if state.status != "active" else [current] + ([previous] if previous else [])
    return KeyStateAt(
        at=at,
        version=version,
        last_event_at=last_event_at,
        key=state,
        current_secret=current,
        previous_secret=previous,
        valid_secrets=valid,
    )
