"""Rebuilds replay into fresh tables while the current ones serve, then switch atomically."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from domain.application import KeyLedger, utc_now
from keyledger.settings import Settings
from projections import ProjectionNotReady, ReadModels, RebuildInProgress, UnknownProjection
from projections.audit import AuditProjection
from projections.keys import KeysProjection
from projections.runner import REBUILD_LEASE
from projections.usage import UsageProjection
from tests.projections.conftest import dump
from tests.projections.workload import START, run_commands


def observe(models: ReadModels, workspaces: list[Any]) -> tuple[Any, ...]:
    """What an API process would show: keys, usage and the whole audit trail of each workspace."""
    return tuple(
        (
            models.list_keys(w, START),
            models.usage(w),
            models.audit(w, limit=1000),
        )
        for w in workspaces
    )


def test_queries_during_a_rebuild_see_the_complete_read_models(settings: Settings, ledger: KeyLedger):
    work = run_commands(ledger, 200, seed=21)
    rebuilder = ReadModels(settings, ledger, rebuild_batch_size=15)  # many small transactions
    serving = ReadModels(settings, ledger)  # another process, answering queries
    serving.catch_up()
    expected = observe(serving, work.workspaces)
    stop = threading.Event()
    seen: list[bool] = []
    generations: set[int | None] = set()
    errors: list[BaseException] = []

    def query_in_a_loop() -> None:
        try:
            while not stop.is_set():
                seen.append(observe(serving, work.workspaces) == expected)
                generations.add(serving.status()[2].generation)
        except BaseException as error:  # reported below
            errors.append(error)

    reader = threading.Thread(target=query_in_a_loop)
    reader.start()
    rebuilds = 0
    while rebuilds < 3 or (len(seen) < 10 and rebuilds < 100):  # until the reader has looked often enough
        rebuilder.rebuild()
        rebuilds += 1
    stop.set()
    reader.join()
    serving_now = serving.status()[2].generation
    rebuilder.close()
    serving.close()

    assert not errors
    assert len(seen) >= 10 and all(seen)
    assert len(generations) >= 2  # the reader really read across switches
    assert serving_now == 1 + rebuilds


def test_a_rebuild_keeps_following_events_recorded_meanwhile(settings: Settings, ledger: KeyLedger):
    work = run_commands(ledger, 60, seed=8)
    models = ReadModels(settings, ledger, rebuild_batch_size=10)
    models.start()
    more = threading.Thread(target=run_commands, args=(ledger, 60, 9, lambda _: models.nudge()))
    more.start()
    models.rebuild()
    more.join()
    assert models.wait(ledger.max_position(), timeout=10)
    models.stop()
    followed = dump(models)

    models.rebuild()

    assert dump(models) == followed
    assert len(followed["audit.audit"]) > len(work.keys)
    models.close()


class KeysV2(KeysProjection):
    VERSION = KeysProjection.VERSION + 1


def test_a_raised_version_is_rebuilt_at_start_up_and_only_that_one(settings: Settings, ledger: KeyLedger):
    work = run_commands(ledger, 50, seed=4)
    old = ReadModels(settings, ledger)
    old.catch_up()
    before = {s.name: s for s in old.status()}
    new = ReadModels(settings, ledger, projections=[KeysV2(), UsageProjection(), AuditProjection()])

    new.start()
    new.stop()

    after = {s.name: s for s in new.status()}
    assert (after["keys"].version, after["keys"].generation) == (KeysV2.VERSION, before["keys"].generation + 1)
    assert after["usage"] == before["usage"] and after["audit"] == before["audit"]
    key_id, workspace = next(iter(work.keys.items()))
    assert new.get_key(workspace, key_id, START) == ledger.get_key(key_id).state(START, ledger.catalog)
    with pytest.raises(ProjectionNotReady):  # code of the older version never misreads the new tables
        old.get_key(workspace, key_id, START)
    with pytest.raises(ProjectionNotReady):
        old.ensure_current()
    assert new.ensure_current() == []
    old.close()
    new.close()


def test_a_second_rebuild_waits_for_the_first_unless_it_was_abandoned(
    settings: Settings, ledger: KeyLedger, models: ReadModels
):
    run_commands(ledger, 20, seed=2)
    models.catch_up()
    other = ReadModels(settings, ledger)
    other.runner._start_generations(["audit"])  # a rebuild in another process, still running

    with pytest.raises(RebuildInProgress):
        models.rebuild("audit")
    models.rebuild("keys")  # other read models are free
    models.runner.clock = lambda: utc_now() + REBUILD_LEASE + timedelta(seconds=1)  # its process died
    before = dump(models)
    models.rebuild("audit")

    assert dump(models) == before
    assert {s.name: s.generation for s in models.status()} == {"keys": 2, "usage": 1, "audit": 3}
    other.close()


def test_status_shows_version_position_and_lag(ledger: KeyLedger, models: ReadModels):
    run_commands(ledger, 10, seed=1)
    models.catch_up()
    head = ledger.max_position()
    run_commands(ledger, 5, seed=2)
    lag = ledger.max_position() - head

    status = models.status()

    versions = {name: projection.VERSION for name, projection in models.projections.items()}
    assert [(s.name, s.version, s.code_version, s.position, s.lag) for s in status] == [
        (name, versions[name], versions[name], head, lag) for name in ("keys", "usage", "audit")
    ]


def test_an_unknown_projection_is_refused(models: ReadModels):
    with pytest.raises(UnknownProjection, match="known projections: keys, usage, audit"):
        models.rebuild("nope")
    with pytest.raises(UnknownProjection):
        models.wait(1, ["nope"])


def test_read_models_that_were_never_built_are_not_served(models: ReadModels, ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")

    with pytest.raises(ProjectionNotReady):
        models.list_keys(created.workspace.id, START)


def test_a_process_of_older_code_rests_while_a_newer_version_serves(
    settings: Settings, ledger: KeyLedger, monkeypatch: pytest.MonkeyPatch
):
    run_commands(ledger, 30, seed=5)
    old = ReadModels(settings, ledger, batch_size=5)  # full pages: "more may follow" after each step
    steps: list[None] = []
    step = old.runner.step

    def counted(*args: Any, **kwargs: Any) -> Any:
        steps.append(None)
        return step(*args, **kwargs)

    monkeypatch.setattr(old.runner, "step", counted)
    old.start()  # running when a process of newer code switches keys to version 2
    new = ReadModels(settings, ledger, projections=[KeysV2(), UsageProjection(), AuditProjection()])
    new.ensure_current()
    run_commands(ledger, 30, seed=6)  # events old may no longer apply to keys
    steps.clear()
    time.sleep(1.0)
    old.stop()

    # Polling every 75 ms: about a dozen steps. Spinning made more than a thousand.
    assert 1 <= len(steps) <= 40
    old.close()
    new.close()
