"""UsageRecorder: answers counted in memory, recorded as batched UsageRecorded events."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from adapters.usage_recorder import KeyIds, UsageRecorder
from domain.application import KeyLedger
from domain.usage import MAX_ENTRIES_PER_BATCH, UsageBatch
from projections import ReadModels
from tests.projections.conftest import all_events

MINUTE = datetime(2027, 3, 3, 14, 7, tzinfo=UTC)


def usage_events(ledger: KeyLedger) -> list[UsageBatch.UsageRecorded]:
    return [e for _, e in all_events(ledger) if isinstance(e, UsageBatch.UsageRecorded)]


def test_answers_are_counted_per_key_minute_endpoint_and_status(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    key, workspace = created.admin_key.id, created.workspace.id
    recorder = UsageRecorder(ledger, actor="api:test")
    for second in range(50):
        recorder.record(key, workspace, "GET /nodes", 200, MINUTE + timedelta(seconds=second))
        recorder.record(key, workspace, "GET /nodes", 429, MINUTE + timedelta(seconds=second))
    recorder.record(key, workspace, "POST /edges", 201, MINUTE + timedelta(minutes=1))

    position = recorder.flush()

    [event] = usage_events(ledger)
    assert position == ledger.max_position()
    assert sorted((e["minute"], e["endpoint"], e["status"], e["count"]) for e in event.entries) == [
        (MINUTE.isoformat(), "GET /nodes", 200, 50),
        (MINUTE.isoformat(), "GET /nodes", 429, 50),
        ((MINUTE + timedelta(minutes=1)).isoformat(), "POST /edges", 201, 1),
    ]
    assert event.actor == "api:test" and recorder.pending == 0 and recorder.flush() is None
    models.catch_up()
    [usage] = models.usage(workspace)
    assert (usage.total, usage.successes, usage.rate_limited) == (101, 51, 50)
    assert models.consumed_quota(MINUTE, MINUTE.date()) == {key: (50, 51)}


def test_many_distinct_counts_are_recorded_in_events_of_at_most_a_thousand(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")
    recorder = UsageRecorder(ledger)
    for i in range(2500):
        recorder.record(created.admin_key.id, created.workspace.id, f"GET /nodes/{i}", 200, MINUTE)

    recorder.flush()

    sizes = [len(e.entries) for e in usage_events(ledger)]
    assert sorted(sizes) == [500, MAX_ENTRIES_PER_BATCH, MAX_ENTRIES_PER_BATCH]


def test_the_flusher_records_every_n_answers_and_stop_records_the_rest(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")
    flushed: list[int] = []
    recorder = UsageRecorder(ledger, flush_interval=60, flush_every=100, on_flush=flushed.append)
    recorder.start()
    for _ in range(100):
        recorder.record(created.admin_key.id, created.workspace.id, "GET /nodes", 200, MINUTE)
    deadline = time.monotonic() + 5
    while not flushed and time.monotonic() < deadline:
        time.sleep(0.01)
    recorder.record(created.admin_key.id, created.workspace.id, "GET /nodes", 200, MINUTE)

    recorder.stop()

    assert len(flushed) == 2 and flushed[-1] == ledger.max_position()
    assert [sum(e["count"] for e in event.entries) for event in usage_events(ledger)] == [100, 1]


def test_concurrent_answers_are_all_counted(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")
    recorder = UsageRecorder(ledger, flush_interval=0.01)
    recorder.start()

    def answer() -> None:
        for _ in range(2000):
            recorder.record(created.admin_key.id, created.workspace.id, "GET /nodes", 200)

    threads = [threading.Thread(target=answer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.stop()

    assert sum(e["count"] for event in usage_events(ledger) for e in event.entries) == 12_000


def test_hot_path_counts_from_threads_merge_with_recorded_answers_exactly(ledger: KeyLedger):
    """The hot path counts by `KeyIds` (hashed by identity): two entries of one key, counted from six threads while
    the flusher runs, and the step-by-step path's `record` of the same answer end up as one exact count per slot."""
    created = ledger.create_workspace("acme", "pro")
    key, workspace = created.admin_key.id, created.workspace.id
    recorder = UsageRecorder(ledger, flush_interval=0.01)
    recorder.start()
    minute = int(MINUTE.timestamp()) // 60
    entries = [KeyIds(key, workspace), KeyIds(key, workspace)]

    def answer(ids: KeyIds) -> None:
        for _ in range(2000):
            recorder.count(ids, minute, "GET /nodes", 200, "read:nodes", "192.0.2.1")
            recorder.count(ids, minute, "GET /nodes", 429, "read:nodes", None)

    threads = [threading.Thread(target=answer, args=(entries[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    recorder.record(key, workspace, "GET /nodes", 200, MINUTE, needed_scope="read:nodes", client="192.0.2.1")
    for thread in threads:
        thread.join()
    recorder.stop()

    totals: dict[tuple[object, ...], int] = {}
    for event in usage_events(ledger):
        for e in event.entries:
            slot = (e["key_id"], e["minute"], e["endpoint"], e["status"], e.get("scope"), e.get("client"))
            totals[slot] = totals.get(slot, 0) + e["count"]
    at = MINUTE.isoformat()
    assert totals == {
        (str(key), at, "GET /nodes", 200, "read:nodes", "192.0.2.1"): 12_001,
        (str(key), at, "GET /nodes", 429, "read:nodes", None): 12_000,
    }
    assert recorder.pending == 0


def test_counts_of_a_failed_flush_are_kept_for_the_next(ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch):
    created = ledger.create_workspace("acme", "pro")
    recorder = UsageRecorder(ledger)
    recorder.record(created.admin_key.id, created.workspace.id, "GET /nodes", 200, MINUTE)
    record_usage = ledger.record_usage
    monkeypatch.setattr(ledger, "record_usage", lambda *a: (_ for _ in ()).throw(ConnectionError("store down")))

    with pytest.raises(ConnectionError):
        recorder.flush()
    monkeypatch.setattr(ledger, "record_usage", record_usage)
    recorder.record(created.admin_key.id, created.workspace.id, "GET /nodes", 200, MINUTE)
    recorder.flush()

    [event] = usage_events(ledger)
    assert [e["count"] for e in event.entries] == [2]


def test_an_endpoint_name_is_capped(ledger: KeyLedger):
    recorder = UsageRecorder(ledger)
    recorder.record(uuid4(), uuid4(), "GET /" + "x" * 1000, 200, MINUTE)

    recorder.flush()

    [event] = usage_events(ledger)
    assert len(event.entries[0]["endpoint"]) == 200
