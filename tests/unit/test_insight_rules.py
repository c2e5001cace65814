"""The pure rules behind insights and exposure (SPEC 8.2): smallest covering set, findings, secret periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import InvalidInput
from domain.exposure import HistoryEvent, scope_periods, secret_periods
from domain.insights import KeyFacts, KeyUse, ScopeUse, check_days, findings, smallest_covering

NOW = datetime(2027, 6, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
CATALOG = ("nodes", "edges", "events")


@pytest.mark.parametrize(
    ("granted", "needed", "expected"),
    [
        (["write:nodes", "read:edges"], ["read:nodes"], ["read:nodes"]),
        (["write:nodes"], ["read:nodes", "write:nodes"], ["write:nodes"]),
        (["read:nodes", "write:nodes"], ["read:nodes"], ["read:nodes"]),
        (["admin"], ["read:nodes", "write:edges"], ["read:nodes", "write:edges"]),
        (["admin", "read:nodes"], ["admin"], ["admin"]),
        (["admin"], ["read:jobs"], ["admin"]),  # outside the catalog: only admin allows it
        (["read:nodes"], ["write:nodes", "read:edges"], []),  # not allowed now: left out
        (["read:nodes", "read:edges"], [], []),
    ],
)
def test_smallest_covering(granted: list[str], needed: list[str], expected: list[str]):
    assert smallest_covering(granted, needed, CATALOG) == expected


def _key(created: datetime, scopes: list[str], expires_at: datetime | None = None) -> KeyFacts:
    return KeyFacts(uuid4(), "k", "active", created, scopes, {s: created for s in scopes}, expires_at)


def _use(*scopes: ScopeUse) -> KeyUse:
    times = [t for s in scopes for t in (s.last_allowed, s.last_refused) if t is not None]
    return KeyUse(max(times, default=None), scopes)


def test_unused_key_covers_the_window_or_the_key_lifetime():
    young, old = _key(NOW - 3 * DAY - timedelta(hours=2), ["read:nodes"]), _key(NOW - 400 * DAY, ["read:nodes"])
    found = {f.key_id: (f.kind, f.observed_days) for f in findings([young, old], {}, NOW, 30)}
    assert found == {young.key_id: ("unused_key", 3), old.key_id: ("unused_key", 30)}


def test_use_before_the_window_is_not_use():
    key = _key(NOW - 100 * DAY, ["read:nodes"])
    before = ScopeUse("read:nodes", 5, 0, NOW - 50 * DAY, None)
    [finding] = findings([key], {key.key_id: _use(before)}, NOW, 30)
    assert finding.kind == "unused_key"


def test_unused_scope_and_denied_scope_of_one_key():
    key = _key(NOW - 10 * DAY, ["write:nodes", "read:edges"])
    use = _use(ScopeUse("read:nodes", 3, 0, NOW - DAY, None), ScopeUse("write:edges", 0, 2, None, NOW - 2 * DAY))
    found = {f.kind: f for f in findings([key], {key.key_id: use}, NOW, 90, CATALOG)}
    assert set(found) == {"unused_scope", "denied_scope"}
    assert found["unused_scope"].suggestion == {"scopes": ["read:nodes"]}
    assert found["unused_scope"].observed_days == 10
    assert found["denied_scope"].detail["scopes"] == [
        {"scope": "write:edges", "count": 2, "last_seen": (NOW - 2 * DAY).isoformat().replace("+00:00", "Z")}
    ]


def test_revoked_keys_have_no_findings_and_expiring_is_within_14_days():
    revoked = KeyFacts(uuid4(), "r", "revoked", NOW - 200 * DAY, [], {}, rotation_due=True)
    soon = _key(NOW - DAY, ["read:nodes"], expires_at=NOW + 13 * DAY)
    later = _key(NOW - DAY, ["read:nodes"], expires_at=NOW + 15 * DAY)
    use = {k.key_id: _use(ScopeUse("read:nodes", 1, 0, NOW, None)) for k in (soon, later)}
    found = findings([revoked, soon, later], use, NOW, 90)
    assert [(f.kind, f.key_id) for f in found] == [("expiring_soon", soon.key_id)]


@pytest.mark.parametrize("days", [0, 366, -1])
def test_days_out_of_range(days: int):
    with pytest.raises(InvalidInput):
        check_days(days)


def _event(kind: str, at: datetime, **data: object) -> HistoryEvent:
    return HistoryEvent(kind, at, dict(data))


def test_secret_periods_follow_rotations_graces_revocation():
    t0 = NOW - 10 * DAY
    history = [
        _event("KeyIssued", t0, secret_fingerprint="a", scopes=["read:nodes"], expires_at=None),
        _event("KeyRotated", t0 + DAY, secret_fingerprint="b", previous_valid_until=(t0 + 2 * DAY).isoformat()),
        _event("KeyRotated", t0 + DAY + timedelta(hours=1), secret_fingerprint="c", previous_valid_until=None),
        _event("KeyRevoked", t0 + 5 * DAY),
    ]
    periods = [(p.fingerprint, p.valid_from, p.valid_until) for p in secret_periods(history, t0)]
    assert periods == [
        ("a", t0, t0 + DAY + timedelta(hours=1)),  # rotating again ends the earlier grace at once
        ("b", t0 + DAY, t0 + DAY + timedelta(hours=1)),
        ("c", t0 + DAY + timedelta(hours=1), t0 + 5 * DAY),
    ]
    assert [p.fingerprint for p in secret_periods(history, t0 + 3 * DAY)] == ["c"]


def test_scope_periods_start_with_the_set_in_force():
    t0 = NOW - 10 * DAY
    history = [
        _event("KeyIssued", t0, secret_fingerprint="a", scopes=["read:nodes"]),
        _event("ScopesGranted", t0 + DAY, scopes=["write:edges"]),
        _event("KeyRotated", t0 + 2 * DAY, secret_fingerprint="b"),
        _event("ScopesRevoked", t0 + 3 * DAY, scopes=["read:nodes"]),
        _event("ScopesSet", t0 + 4 * DAY, scopes=["read:events"]),
        _event("KeyRevoked", t0 + 5 * DAY),
    ]
    periods = [(p.start, p.scopes) for p in scope_periods(history, t0 + 2 * DAY)]
    assert periods == [
        (t0 + DAY, ["read:nodes", "write:edges"]),
        (t0 + 3 * DAY, ["write:edges"]),
        (t0 + 4 * DAY, ["read:events"]),
        (t0 + 5 * DAY, []),
    ]
