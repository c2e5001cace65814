"""Alerts (SPEC 8.3) with a controllable clock: each raised once per key, condition and period, also when two
processes (two applications with their own read models on one store) notice it at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from domain.alerts import Alert
from domain.application import KeyLedger
from domain.timefmt import floor_minute
from domain.usage import UsageCount
from keyledger.alerts import AlertScheduler
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from tests.projections.conftest import all_events


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pair(settings: Settings, ledger: KeyLedger, models: ReadModels) -> Iterator[list[AlertScheduler]]:
    """Two schedulers, each with its own application and read models, as two API processes have."""
    other = open_ledger(settings)
    other_models = ReadModels(settings, other)
    try:
        yield [AlertScheduler(ledger, models), AlertScheduler(other, other_models)]
    finally:
        other_models.close()
        other.close()


def race(schedulers: list[AlertScheduler], now: datetime) -> list[str]:
    """Both check at once; the types of the alerts this recorded (each raised by exactly one of them)."""
    ledger = schedulers[0].ledger
    before = len(alerts_in(ledger))
    raised: list[list[Alert]] = [[], []]
    start = threading.Barrier(len(schedulers))

    def run(i: int) -> None:
        schedulers[i].read_models.catch_up()
        start.wait()
        raised[i] = schedulers[i].check(now)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(schedulers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = [kind for kind, _ in alerts_in(ledger)[before:]]
    assert len(raised[0]) + len(raised[1]) == len(recorded)
    return recorded


def alerts_in(ledger: KeyLedger) -> list[tuple[str, object]]:
    return [(type(e).__name__, e.key_id) for _, e in all_events(ledger) if isinstance(e, Alert.Event)]


def test_time_based_alerts_are_raised_once_when_due(ledger: KeyLedger, pair: list[AlertScheduler]):
    start = datetime.now(UTC)
    created = ledger.create_workspace("acme", "pro")
    expiring = ledger.issue_key(created.workspace.id, "ci", ["read:nodes"], expires_at=start + timedelta(days=10)).key
    admin = created.admin_key

    assert race(pair, start) == []  # 10 days to expiry, secrets new
    assert race(pair, start + timedelta(days=3, minutes=1)) == ["AlertKeyExpiring"]  # 7 days before expiry
    assert race(pair, start + timedelta(days=4)) == []  # the same expiry: raised already
    assert alerts_in(ledger) == [("AlertKeyExpiring", expiring.id)]

    later = start + timedelta(days=91)  # the admin key's secret is older than 90 days; the other key expired
    assert race(pair, later) == ["AlertRotationDue"]
    assert race(pair, later + timedelta(hours=1)) == []
    assert alerts_in(ledger)[1:] == [("AlertRotationDue", admin.id)]

    rotated = ledger.rotate_key(admin.id).key  # a new secret: due again 90 days after it
    assert rotated.rotated_at is not None
    assert race(pair, rotated.rotated_at + timedelta(days=91)) == ["AlertRotationDue"]
    assert alerts_in(ledger)[2:] == [("AlertRotationDue", admin.id)]

    [event] = [e for _, e in all_events(ledger) if isinstance(e, Alert.AlertKeyExpiring)]
    assert (event.workspace_id, event.expires_at, event.actor) == (
        created.workspace.id,
        expiring.expires_at,
        "keyledger",
    )


def test_usage_alerts_are_raised_once_per_day_threshold_and_minute(ledger: KeyLedger, pair: list[AlertScheduler]):
    created = ledger.create_workspace("acme", "enterprise", requests_per_minute=100, requests_per_day=100)
    ws, key = created.workspace.id, created.admin_key.id
    now = floor_minute(datetime.now(UTC))

    def answered(count: int, status: int, minute: datetime = now) -> None:
        ledger.record_usage([UsageCount(key, ws, minute, "POST /v1/verify", status, count)], "test")

    answered(79, 200)
    answered(19, 403)  # refused, and not consumed by 429: counts against the day too
    assert race(pair, now) == ["AlertQuotaThreshold"]  # 98 %: 80 % due; 19: no burst
    assert [t for t, _ in alerts_in(ledger)] == ["AlertQuotaThreshold"]
    answered(1, 401)  # the 20th refusal within the minute
    assert race(pair, now + timedelta(seconds=30)) == ["AlertDeniedBurst"]
    answered(10, 429)  # rate limited: consumes nothing, refused: still the same minute's burst
    answered(5, 200, now + timedelta(minutes=1))  # 100 + 5 consumed: 100 % reached
    assert race(pair, now + timedelta(minutes=1)) == ["AlertQuotaThreshold"]
    assert race(pair, now + timedelta(minutes=1, seconds=30)) == []

    quota = [e for _, e in all_events(ledger) if isinstance(e, Alert.AlertQuotaThreshold)]
    assert [(e.threshold_percent, e.requests_per_day, e.day) for e in quota] == [
        (80, 100, now.date().isoformat()),
        (100, 100, now.date().isoformat()),
    ]
    [burst] = [e for _, e in all_events(ledger) if isinstance(e, Alert.AlertDeniedBurst)]
    assert (burst.key_id, burst.minute, burst.refused) == (key, now, 20)
    models = pair[0].read_models
    models.catch_up()
    entries, _ = models.audit(ws, types=["AlertQuotaThreshold", "AlertDeniedBurst"])
    assert [(e.type, e.key_id) for e in entries] == [
        ("AlertQuotaThreshold", key),
        ("AlertDeniedBurst", key),
        ("AlertQuotaThreshold", key),
    ]
