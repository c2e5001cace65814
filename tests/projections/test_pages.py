"""Pages of events are bounded in stored bytes too: fat usage events never make a page of gigabytes."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from adapters.database import read_transaction
from domain.application import KeyLedger
from domain.usage import UsageCount
from keyledger.settings import Settings
from projections import ReadModels, bulk
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


def page_bytes(ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the stored bytes of each page the recorder returns."""
    pages: list[int] = []
    select = ledger.recorder.select_notifications

    def selecting(*args: Any, **kwargs: Any) -> Any:
        page = select(*args, **kwargs)
        if page:
            pages.append(sum(len(n.state) for n in page))
        return page

    monkeypatch.setattr(ledger.recorder, "select_notifications", selecting)
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
    pages = page_bytes(ledger, monkeypatch)
    models = ReadModels(settings, ledger, batch_size=1000, rebuild_batch_size=1000, rebuild_workers=False)
    models.rebuild()
    rebuilt = list(pages)
    assert dump(models) == expected
    # Following the stream: fat events recorded after the rebuild come in bounded pages too.
    pages.clear()
    record_fat_usage(ledger, work, 20, seed=44)
    models.catch_up()
    following = list(pages)
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


def test_a_worker_reading_only_its_topics_reads_bounded_pages_too(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    work = run_commands(ledger, 40, seed=45)
    record_fat_usage(ledger, work, 25, seed=46)
    run_commands(ledger, 40, seed=47)
    models = ReadModels(settings, ledger, rebuild_batch_size=1000, rebuild_workers=False)
    models.ensure_current()
    expected = dump(models)["usage.minute"]
    runner = models.runner
    monkeypatch.setattr(runner_module, "MAX_PAGE_BYTES", MAX_PAGE_BYTES)
    pages = page_bytes(ledger, monkeypatch)

    building = runner._start_generations(["usage"])  # as a rebuild worker fills its share
    (topics,) = bulk.stored_topics(runner, [["usage"]])
    filled = bulk.fill(runner, building, runner.head(), None, topics)

    table = models.projections["usage"].tables(filled[0].generation)["minute"]
    with read_transaction(models.engine) as conn:
        rows = [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]
    assert rows == expected
    assert filled[0].position == runner.head()
    assert len(pages) >= 12 and max(pages) <= MAX_PAGE_BYTES
    models.runner._abandon(building)
    models.close()
