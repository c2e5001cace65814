"""Checking snapshots against the events they summarise.

Snapshots are not chained: they are a cache the application derives from events,
and `state_at` starts from them. An edited or planted snapshot would make it lie
while every event still verifies, so `keyledger audit verify` rebuilds each
snapshotted aggregate from its raw events and compares it at every snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from adapters.auditchain.verify import Finding, Problem
from domain.application import KeyLedger


def check_snapshots(
    ledger: KeyLedger,
    originator_ids: Iterable[UUID],
    positions: Callable[[UUID], dict[int, int]],
    progress: Callable[[], None] = lambda: None,
) -> Finding | None:
    """The first snapshot (in aggregate order) that disagrees with its events, if any."""
    if ledger.snapshots is None:
        return None
    for originator_id in originator_ids:
        try:
            snapshots: dict[int, Any] = {s.originator_version: s for s in ledger.snapshots.get(originator_id)}
        except Exception:  # whatever a garbled row raises while decoding
            return _finding(originator_id, None, positions, "cannot be decoded")
        aggregate: Any = None
        for event in ledger.events.get(originator_id, lte=max(snapshots, default=0)):
            aggregate = event.mutate(aggregate)  # type: ignore[attr-defined]
            snapshot = snapshots.pop(event.originator_version, None)
            if snapshot is not None and not _same(snapshot, aggregate):
                return _finding(originator_id, event.originator_version, positions, "does not match its events")
        if snapshots:
            return _finding(originator_id, min(snapshots), positions, "is for a version with no event")
        progress()
    return None


def _same(snapshot: Any, aggregate: Any) -> bool:
    try:
        return bool(vars(snapshot.mutate(None)) == vars(aggregate))
    except Exception:  # a snapshot that cannot even be applied is as wrong as one that differs
        return False


def _finding(
    originator_id: UUID, version: int | None, positions: Callable[[UUID], dict[int, int]], problem: str
) -> Finding:
    position = positions(originator_id).get(version, 0) if version is not None else 0
    at = f" at version {version}" if version is not None else ""
    detail = (
        f"the snapshot of aggregate {originator_id}{at} {problem}: it was edited or planted "
        "(snapshots are a cache; deleting its rows makes keyledger rebuild from the events)"
    )
    return Finding(position, Problem.SNAPSHOT, detail)
