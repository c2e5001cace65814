"""Rebuilds in bulk: worker processes per share of projections, sums folded in memory, indexes built last."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.pool import RemoteTraceback
from typing import Any

import pytest
from eventsourcing.utils import get_topic
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from adapters.database import LockTaken
from domain.application import KeyLedger
from domain.usage import UsageBatch
from keyledger.settings import Settings
from projections import ReadModels
from projections import bulk as bulk_module
from projections.audit import AuditProjection
from projections.base import Positioned, Tables
from projections.bulk import Bulk, stored_topics
from projections.keys import KeysProjection
from projections.usage import UsageProjection, UsageSums
from tests.projections.conftest import dump
from tests.projections.workload import run_commands


class InjectedFailure(Exception):
    pass


class FailingUsage(UsageProjection):
    """Fails in a worker process, which makes its own instance from this (importable) class."""

    def fold(self, conn: Connection, tables: Tables, pending: UsageSums | None, events: Sequence[Positioned]) -> Any:
        raise InjectedFailure("usage worker")


def table_names(models: ReadModels) -> set[str]:
    return {t for t in inspect(models.engine).get_table_names() if t.startswith("kl_")}


def index_names(models: ReadModels) -> set[str]:
    inspector = inspect(models.engine)
    return {i["name"] for t in table_names(models) for i in inspector.get_indexes(t) if i["name"]}


def test_worker_processes_rebuild_what_one_process_rebuilds(settings: Settings, ledger: KeyLedger):
    run_commands(ledger, 150, seed=31)
    alone = ReadModels(settings, ledger, rebuild_workers=False)
    alone.rebuild()
    expected, indexes = dump(alone), index_names(alone)
    [built] = {s.generation for s in alone.status()}
    alone.close()
    spread = ReadModels(settings, ledger, rebuild_workers_min_events=0)
    assert isinstance(spread.runner.bulk, Bulk)
    building = list(spread.runner.active().values())
    progress: list[tuple[int, int]] = []

    spread.rebuild(progress=lambda done, total: progress.append((done, total)))

    # Key events feed keys and audit: one process decodes them; usage gets its own.
    assert sorted(sorted(g.name for g in share) for share in Bulk.shares(spread.runner, building)) == [
        ["audit", "keys"],
        ["usage"],
    ]
    assert stored_topics(spread.runner, [["usage"]]) == [[get_topic(UsageBatch.UsageRecorded)]]
    assert dump(spread) == expected
    assert index_names(spread) == {i.replace(f"_g{built}_", f"_g{built + 1}_") for i in indexes}  # after the load
    assert progress and progress[-1][0] == progress[-1][1] == ledger.max_position()
    assert {s.generation for s in spread.status()} == {built + 1}
    spread.close()


def test_a_failing_worker_fails_the_rebuild_and_leaves_what_served(settings: Settings, ledger: KeyLedger):
    run_commands(ledger, 60, seed=32)
    serving = ReadModels(settings, ledger)
    serving.catch_up()
    before, tables = dump(serving), table_names(serving)
    failing = ReadModels(
        settings,
        ledger,
        projections=[KeysProjection(), FailingUsage(), AuditProjection()],
        rebuild_workers_min_events=0,
    )

    with pytest.raises(InjectedFailure) as raised:
        failing.rebuild()

    assert isinstance(raised.value.__cause__, RemoteTraceback)  # it failed in a worker process
    assert dump(serving) == before
    assert table_names(serving) == tables  # the new generations are gone
    assert {s.generation for s in serving.status()} == {1}
    failing.close()
    serving.close()


def spy_on_writes(models: ReadModels, monkeypatch: pytest.MonkeyPatch, seen: Callable[[Any, Any], object]) -> None:
    """Calls `seen(projection, pending)` before each folding projection writes its pending sums."""
    for projection in models.projections.values():
        write = projection.write  # type: ignore[attr-defined]

        def spying(conn: Connection, tables: Tables, pending: Any, write: Any = write, p: Any = projection) -> None:
            seen(p, pending)
            write(conn, tables, pending)

        monkeypatch.setattr(projection, "write", spying)


def test_sums_written_in_several_rounds_equal_one_round(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    run_commands(ledger, 120, seed=33)
    models = ReadModels(settings, ledger, rebuild_batch_size=7, rebuild_workers=False)
    models.rebuild()
    expected = dump(models)
    written: list[str] = []
    spy_on_writes(models, monkeypatch, lambda projection, _pending: written.append(projection.name))
    monkeypatch.setattr(bulk_module, "MAX_PENDING", 8)  # flush every few batches: keys reload stored rows

    models.rebuild()

    assert dump(models) == expected
    assert {name: written.count(name) > 3 for name in models.names} == {"keys": True, "usage": True, "audit": True}
    models.close()


def test_sums_grow_while_the_write_lock_is_taken_and_still_equal_a_clean_rebuild(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    run_commands(ledger, 120, seed=34)
    models = ReadModels(settings, ledger, rebuild_batch_size=7, rebuild_workers=False)
    models.rebuild()
    expected = dump(models)
    rounds: list[list[int]] = []  # per write transaction: the sizes of the sums written
    tries: list[None] = []
    spy_on_writes(models, monkeypatch, lambda projection, pending: rounds[-1].append(projection.pending_size(pending)))
    waiting = bulk_module.write_transaction

    @contextmanager
    def counted(engine: Any, wait: bool = True) -> Iterator[Connection]:
        if not wait:  # another process always holds the write lock when we try without waiting
            tries.append(None)
            raise LockTaken
        rounds.append([])
        with waiting(engine) as conn:
            yield conn

    monkeypatch.setattr(bulk_module, "MAX_PENDING", 40)
    monkeypatch.setattr(bulk_module, "write_transaction", counted)

    models.rebuild()

    assert dump(models) == expected
    written = [r for r in rounds if r]
    assert len(written) > 3 and len(tries) > len(written)
    # Every round but the last (what was left at the end) waited because some sums reached twice the bound.
    assert all(max(r) >= 80 for r in written[:-1])
    models.close()


def test_a_rebuild_without_the_bulk_strategy_applies_batch_by_batch_and_equals_one_with_it(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    run_commands(ledger, 80, seed=35)
    models = ReadModels(settings, ledger, rebuild_batch_size=9, rebuild_workers=False)
    written: list[str] = []
    spy_on_writes(models, monkeypatch, lambda projection, _pending: written.append(projection.name))
    models.rebuild()
    expected, in_bulk = dump(models), written.count("audit")
    written.clear()
    models.runner.bulk = None  # the tail's path from position 0: fold and commit per batch

    models.rebuild()

    assert dump(models) == expected
    assert in_bulk == 1 and written.count("audit") > 5  # a write per batch, not one large one
    models.close()
