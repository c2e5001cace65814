"""A key's exposure since a moment (SPEC 8.2), from its events: which secrets were valid when, its scopes over time.

Pure rules over the key's history as auditors see it (type, time, data; fingerprints, never
digests). What the key did (requests, endpoints, sources) comes from usage, not from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.timefmt import parse_rfc3339

ISSUES = ("KeyIssued", "KeyImported")
SCOPE_CHANGES = (*ISSUES, "ScopesGranted", "ScopesRevoked", "ScopesSet", "KeyRevoked")


@dataclass(frozen=True)
class HistoryEvent:
    type: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass
class SecretPeriod:
    fingerprint: str
    valid_from: datetime
    valid_until: datetime | None  # None: still valid


@dataclass(frozen=True)
class ScopePeriod:
    start: datetime
    scopes: list[str]


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_rfc3339(str(value))


def _end(period: SecretPeriod, moment: datetime) -> None:
    if period.valid_until is None or moment < period.valid_until:
        period.valid_until = moment


def secret_periods(history: Iterable[HistoryEvent], since: datetime) -> list[SecretPeriod]:
    """Each secret of the key with when it was valid, those valid at or after `since`, oldest first.

    A rotation starts the new secret and ends the previous one at its grace end (rotating again
    ends an earlier grace at once); revocation ends every secret; expiry ends them at the expiry.
    """
    periods: list[SecretPeriod] = []
    current: SecretPeriod | None = None
    previous: SecretPeriod | None = None
    expires_at: datetime | None = None
    for event in history:
        if event.type in ISSUES:
            current = SecretPeriod(event.data["secret_fingerprint"], event.occurred_at, None)
            periods.append(current)
            expires_at = _time(event.data.get("expires_at"))
        elif event.type == "KeyRotated" and current is not None:
            if previous is not None:
                _end(previous, event.occurred_at)
            grace_end = _time(event.data.get("previous_valid_until")) or event.occurred_at
            _end(current, max(grace_end, event.occurred_at))
            previous, current = current, SecretPeriod(event.data["secret_fingerprint"], event.occurred_at, None)
            periods.append(current)
        elif event.type == "KeyRevoked":
            for period in periods:
                _end(period, event.occurred_at)
    if expires_at is not None:
        for period in periods:
            _end(period, max(expires_at, period.valid_from))
    return [p for p in periods if p.valid_until is None or p.valid_until >= since]


def scope_periods(history: Iterable[HistoryEvent], since: datetime) -> list[ScopePeriod]:
    """The key's granted scopes over time: the set in force at `since` (from when it began), then each change.

    After revocation the key can do nothing: its last period has no scopes.
    """
    periods: list[ScopePeriod] = []
    held: set[str] = set()
    for event in history:
        if event.type not in SCOPE_CHANGES:
            continue
        scopes = set(event.data.get("scopes") or [])
        if event.type in ISSUES or event.type == "ScopesSet":
            held = scopes
        elif event.type == "ScopesGranted":
            held = held | scopes
        elif event.type == "ScopesRevoked":
            held = held - scopes
        else:  # KeyRevoked
            held = set()
        periods.append(ScopePeriod(event.occurred_at, sorted(held)))
    in_force = [i for i, p in enumerate(periods) if p.start <= since]
    return periods[in_force[-1] if in_force else 0 :]
