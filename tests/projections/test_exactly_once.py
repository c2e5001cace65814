"""A runner that dies mid-batch and restarts equals a clean rebuild: no event applied twice, none skipped."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from adapters.database import write_transaction
from domain.application import KeyLedger
from keyledger.settings import Settings
from projections import ReadModels
from projections.base import Positioned, Tables
from projections.errors import ProjectionFailed, TrackingConflict
from projections.runner import advance, select_generations
from tests.projections.conftest import dump
from tests.projections.workload import run_commands


class InjectedFailure(Exception):
    pass


def fail_after(models: ReadModels, name: str, events: int) -> None:
    """Make projection `name` raise once it has been handed `events` events in total (mid-batch)."""
    projection = models.projections[name]
    fold = projection.fold
    seen = 0

    def failing_fold(conn: Connection, tables: Tables, pending: Any, batch: Sequence[Positioned]) -> Any:
        nonlocal seen
        if seen + len(batch) > events:
            fold(conn, tables, pending, batch[: events - seen])  # half folded, then the crash
            raise InjectedFailure(f"after {events} events")
        seen += len(batch)
        return fold(conn, tables, pending, batch)

    projection.fold = failing_fold  # type: ignore[method-assign]


def test_a_runner_failing_midway_and_restarted_equals_a_clean_rebuild(
    settings: Settings, ledger: KeyLedger, models: ReadModels
):
    models.ensure_current()  # built on the empty store: the runner, not a rebuild, meets the events
    run_commands(ledger, 250, seed=11)
    head = ledger.max_position()
    positions = []
    crashes = (("audit", 60), ("keys", 20), ("usage", 8))  # the last projection of a batch, then the first
    for name, events in crashes:
        crashing = ReadModels(settings, ledger, batch_size=25)
        fail_after(crashing, name, events)
        with pytest.raises(ProjectionFailed, match=f"{name}.*InjectedFailure"):
            crashing.catch_up()
        status = {s.name: s for s in crashing.status()}
        assert status[name].state == "failing" and "InjectedFailure" in (status[name].error or "")
        positions.append({s.name: s.position for s in status.values()})
        crashing.close()

    restarted = ReadModels(settings, ledger, batch_size=25)
    assert restarted.catch_up() == head
    caught_up = dump(restarted)
    restarted.rebuild()
    rebuilt = dump(restarted)
    restarted.close()

    assert 0 < min(positions[0].values()) < max(positions[-1].values()) < head  # each crash got further
    # The failing batch rolled back for the failing projection only: the others applied it alone.
    assert all(p[name] < max(p.values()) for (name, _), p in zip(crashes, positions, strict=True))
    assert caught_up == rebuilt
    assert len(rebuilt["audit.audit"]) > 100 and rebuilt["usage.minute"]


def test_a_position_that_does_not_advance_is_refused(settings: Settings, ledger: KeyLedger, models: ReadModels):
    run_commands(ledger, 5, seed=3)
    models.catch_up()

    with pytest.raises(TrackingConflict), write_transaction(models.engine) as conn:
        [generation] = select_generations(conn, ["audit"], active=True)
        advance(conn, generation, generation.position, generation.updated_at)
    with pytest.raises(TrackingConflict), write_transaction(models.engine) as conn:
        [generation] = select_generations(conn, ["audit"], active=True)
        stale = generation._replace(position=generation.position - 1)
        advance(conn, stale, generation.position + 1, generation.updated_at)  # another writer moved it


def test_two_processes_following_one_store_apply_each_event_once(settings: Settings, ledger: KeyLedger):
    first, second = ReadModels(settings, ledger, batch_size=10), ReadModels(settings, ledger, batch_size=10)
    first.start()
    second.start()
    errors: list[BaseException] = []

    def nudging(position: int) -> None:
        first.nudge()
        second.nudge()

    def work(seed: int) -> None:
        try:
            run_commands(ledger, 120, seed=seed, after_each=nudging)
        except BaseException as error:  # reported below
            errors.append(error)

    workers = [threading.Thread(target=work, args=(seed,)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    head = ledger.max_position()
    assert first.wait(head, timeout=30) and second.wait(head, timeout=30)
    first.stop()
    second.stop()

    followed = dump(first)
    second.rebuild()
    rebuilt = dump(first)
    first.close()
    second.close()

    assert not errors
    assert followed == rebuilt
    assert len(followed["audit.audit"]) > 200


def test_a_failed_rebuild_leaves_the_serving_generation_and_no_leftovers(
    settings: Settings, ledger: KeyLedger, models: ReadModels
):
    run_commands(ledger, 60, seed=5)
    models.catch_up()
    before = dump(models)
    failing = ReadModels(settings, ledger, rebuild_batch_size=10)
    fail_after(failing, "keys", 10)

    with pytest.raises(InjectedFailure):
        failing.rebuild()
    failing.close()

    assert dump(models) == before
    with write_transaction(models.engine) as conn:
        assert all(g.active for g in select_generations(conn, models.names))
    models.rebuild()  # no lease to wait for
    assert dump(models) == before
