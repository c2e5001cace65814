"""Pages of events are bounded in stored bytes too: fat usage events never make a page of gigabytes."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from domain.application import KeyLedger
from domain.usage import UsageCount
from keyledger.settings import Settings
from projections import ReadModels
from projections import runner as runner_module
from tests.projections.conftest import dump
from tests.projections.workload import ENDPOINTS, START, STATUSES, Workload, run_commands

MAX_PAGE_BYTES = 60_000


def record_fat_usage(ledger: KeyLedger, work: Workload, events: int, seed: int) -> None:
    """`events` usage events of 200 counts each (about 30 KB stored)."""
    rng = random.Random(seed)
    for _ in range(events):
        counts = []
        for _ in range(200):
            key = rng.choice(list(work.keys))
            minute = START + timedelta(minutes=rng.randint(0, 600))
            endpoint, status = rng.choice(ENDPOINTS), rng.choice(STATUSES)
            counts.append(UsageCount(key, work.keys[key], minute, endpoint, status, rng.randint(1, 20)))
        ledger.record_usage(counts, actor="usage:test")


def decoded_per_page(ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, per page read from the recorder: the stored bytes of the events decoded from it."""
    pages: list[int] = []
    select, decode = ledger.recorder.select_notifications, ledger.mapper.to_domain_event

    def selecting(*args: Any, **kwargs: Any) -> Any:
        pages.append(0)
        return select(*args, **kwargs)

    def decoding(notification: Any) -> Any:
        pages[-1] += len(notification.state)
        return decode(notification)

    monkeypatch.setattr(ledger.recorder, "select_notifications", selecting)
    monkeypatch.setattr(ledger.mapper, "to_domain_event", decoding)
    return pages


def test_fat_events_are_read_in_pages_bounded_in_bytes(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    work = run_commands(ledger, 60, seed=41)
    record_fat_usage(ledger, work, 30, seed=42)
    run_commands(ledger, 20, seed=43)
    unbounded = ReadModels(settings, ledger, batch_size=1000, rebuild_batch_size=1000, rebuild_workers=False)
    unbounded.rebuild()
    expected = dump(unbounded)
    unbounded.close()

    monkeypatch.setattr(runner_module, "MAX_PAGE_BYTES", MAX_PAGE_BYTES)
    pages = decoded_per_page(ledger, monkeypatch)
    models = ReadModels(settings, ledger, batch_size=1000, rebuild_batch_size=1000, rebuild_workers=False)
    models.rebuild()
    rebuilt = [p for p in pages if p]
    assert dump(models) == expected
    # Following the stream: fat events recorded after the rebuild come in bounded pages too.
    pages.clear()
    record_fat_usage(ledger, work, 20, seed=44)
    models.catch_up()
    following = [p for p in pages if p]
    followed = dump(models)
    models.close()
    monkeypatch.undo()
    fresh = ReadModels(settings, ledger, rebuild_workers=False)
    fresh.rebuild()

    assert followed == dump(fresh)
    fresh.close()
    # 30 and 20 events of ~30 KB: without the bound, one or two pages each.
    assert len(rebuilt) >= 15 and len(following) >= 10
    assert max(rebuilt + following) <= MAX_PAGE_BYTES
