"""Least-privilege findings from recorded usage (SPEC 8.2): pure rules, no I/O.

A finding covers the window (`days` back from now) or the time since the key (or
the scope) was granted, whichever is shorter, and says how long in whole days
(`observed_days`, 0 for less than a day: findings are reported however short).
The scopes a key needed are those of its allowed answers; its refused answers
(the key lacked the scope) are `denied_scope`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from domain.errors import InvalidInput
from domain.scopes import ADMIN
from domain.timefmt import to_rfc3339

MIN_DAYS, MAX_DAYS, DEFAULT_DAYS = 1, 365, 90
EXPIRING_WITHIN = timedelta(days=14)
KINDS = ("unused_key", "unused_scope", "denied_scope", "rotation_due", "expiring_soon")


@dataclass(frozen=True)
class KeyFacts:
    """What the rules need of a key: its state now and when each held scope was (last) granted."""

    key_id: UUID
    name: str
    status: str  # active, suspended, expired, revoked
    created_at: datetime
    scopes: Sequence[str]  # granted now
    granted_at: Mapping[str, datetime]  # held scope -> when it was last added (issue, grant or exact set)
    expires_at: datetime | None = None
    rotation_due: bool = False
    secret_since: datetime | None = None  # when the current secret was issued (rotation or issue)


@dataclass(frozen=True)
class ScopeUse:
    """Answers of one key that needed one scope, over the window's UTC days."""

    scope: str
    allowed: int
    refused: int
    last_allowed: datetime | None
    last_refused: datetime | None


@dataclass(frozen=True)
class KeyUse:
    last_answer: date | datetime | None = None  # the latest UTC day (or moment) the key got an answer
    scopes: Sequence[ScopeUse] = ()


@dataclass(frozen=True)
class Finding:
    kind: str
    key_id: UUID
    key_name: str
    observed_days: int
    detail: dict[str, Any] = field(default_factory=dict)
    suggestion: dict[str, Any] | None = None


def check_days(days: int) -> int:
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise InvalidInput(f"days must be from {MIN_DAYS} to {MAX_DAYS}")
    return days


def smallest_covering(
    granted: Iterable[str], needed: Iterable[str], resources: Iterable[str] | None = None
) -> list[str]:
    """The least privilege that still allows every `needed` scope the `granted` set allows now (SPEC 8.2).

    Each need is kept as itself (`write:nodes` used only to read gives `read:nodes`), a `read:R`
    beside `write:R` folded into it; `admin` only when a need calls for it (`admin` itself, or a
    resource outside the catalog `resources` that only `admin` allows), and then `admin` alone.
    A need the granted set no longer allows (a scope revoked since) is left out.
    """
    held = set(granted)
    known = set(resources) if resources is not None else None
    chosen: set[str] = set()
    for scope in set(needed):
        action, _, resource = scope.partition(":")
        allowed = ADMIN in held or scope in held or (action == "read" and f"write:{resource}" in held)
        if not allowed:
            continue
        if scope == ADMIN or (known is not None and resource not in known):
            return [ADMIN]
        chosen.add(scope)
    return sorted(s for s in chosen if not (s.startswith("read:") and f"write:{s[5:]}" in chosen))


def _observed(now: datetime, since: datetime) -> int:
    return max(0, int((now - since).total_seconds() // 86_400))


def _answered_since(last_answer: date | datetime | None, since: datetime) -> bool:
    if last_answer is None:
        return False
    if isinstance(last_answer, datetime):
        return last_answer >= since
    return last_answer >= since.date()  # a day row: the key answered some time that UTC day


def findings(
    keys: Iterable[KeyFacts],
    use: Mapping[UUID, KeyUse],
    now: datetime,
    days: int,
    resources: Iterable[str] | None = None,
) -> list[Finding]:
    """Every finding about the workspace's keys not revoked, by kind then key name (`resources`: the catalog)."""
    resources = tuple(resources) if resources is not None else None
    window_start = now - timedelta(days=check_days(days))
    found: list[Finding] = []
    for key in keys:
        if key.status == "revoked":
            continue
        usage = use.get(key.key_id, KeyUse())
        since = max(window_start, key.created_at)
        observed = _observed(now, since)
        used = _answered_since(usage.last_answer, since)
        if not used:
            last = usage.last_answer
            detail: dict[str, Any] = {"last_answer": last.isoformat() if last is not None else None}
            found.append(Finding("unused_key", key.key_id, key.name, observed, detail, {"action": "revoke"}))
        elif usage.scopes:  # answers recorded without their scope (older code) say nothing about what was needed
            found.extend(_unused_scope(key, usage, now, window_start, resources))
        denied: list[dict[str, Any]] = [
            {"scope": s.scope, "count": s.refused, "last_seen": to_rfc3339(s.last_refused)}
            for s in usage.scopes
            if s.refused and s.last_refused is not None and s.last_refused >= _minute(since)
        ]
        if denied:
            detail = {"scopes": sorted(denied, key=lambda d: (-int(d["count"] or 0), str(d["scope"])))}
            found.append(Finding("denied_scope", key.key_id, key.name, observed, detail))
        if key.rotation_due:
            secret_since = key.secret_since or key.created_at
            detail = {"secret_since": to_rfc3339(secret_since), "secret_age_days": _observed(now, secret_since)}
            found.append(Finding("rotation_due", key.key_id, key.name, observed, detail, {"action": "rotate"}))
        if key.expires_at is not None and now < key.expires_at <= now + EXPIRING_WITHIN:
            detail = {"expires_at": to_rfc3339(key.expires_at), "expires_in_days": _observed(key.expires_at, now)}
            found.append(Finding("expiring_soon", key.key_id, key.name, observed, detail))
    return sorted(found, key=lambda f: (KINDS.index(f.kind), f.key_name, str(f.key_id)))


def _minute(moment: datetime) -> datetime:
    # Usage is kept per UTC minute: an answer in the minute a scope was granted counts for it.
    return moment.replace(second=0, microsecond=0)


def _unused_scope(
    key: KeyFacts, usage: KeyUse, now: datetime, window_start: datetime, resources: tuple[str, ...] | None
) -> list[Finding]:
    needed = [
        s.scope
        for s in usage.scopes
        if s.allowed and s.last_allowed is not None and s.last_allowed >= _minute(max(window_start, key.created_at))
    ]
    keep = smallest_covering(key.scopes, needed, resources)
    unused = sorted(set(key.scopes) - set(keep))  # dropped, or narrowed (write:R kept as read:R)
    if not unused:
        return []
    # Observed since the latest grant among the unused scopes (the shortest time any of them had).
    granted = max((key.granted_at.get(s, key.created_at) for s in unused), default=key.created_at)
    detail = {"granted": sorted(key.scopes), "needed": sorted(set(needed)), "unused": unused}
    observed = _observed(now, max(window_start, granted))
    return [Finding("unused_scope", key.key_id, key.name, observed, detail, {"scopes": keep})]
