"""Read-your-writes: a command's position is visible in the read models a few milliseconds after a nudge."""

from __future__ import annotations

import statistics
import time

from domain.application import KeyLedger
from keyledger.settings import Settings
from projections import ReadModels
from tests.projections.workload import START


def test_a_revoked_key_reads_as_revoked_as_soon_as_wait_returns(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    models.start()
    latencies = []
    for i in range(15):
        issued = ledger.issue_key(created.workspace.id, f"k{i}", ["read:nodes"])
        revoked = ledger.revoke_key(issued.key.id)
        models.nudge()
        started = time.perf_counter()

        assert revoked.position is not None and models.wait(revoked.position, ["keys"], timeout=5)

        latencies.append(time.perf_counter() - started)
        state = models.get_key(created.workspace.id, issued.key.id, START)
        assert state is not None and state.status == "revoked"
    models.stop()
    assert statistics.median(latencies) < 0.05  # the library's own wait() polls every 100-800 ms


def test_wait_without_a_background_runner_applies_in_the_caller(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")

    assert models.wait(created.position, timeout=5)

    assert [k.id for k in models.list_keys(created.workspace.id, START)] == [created.admin_key.id]


def test_wait_for_a_position_not_recorded_yet_times_out(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    models.start()

    started = time.perf_counter()
    assert not models.wait(created.position + 1, timeout=0.3)
    assert 0.3 <= time.perf_counter() - started < 2
    models.stop()


def test_a_process_sees_positions_another_process_applied(settings: Settings, ledger: KeyLedger):
    applier, reader = ReadModels(settings, ledger), ReadModels(settings, ledger)
    applier.start()
    reader.ensure_current()
    created = ledger.create_workspace("acme", "pro")
    applier.nudge()

    assert applier.wait(created.position, timeout=5)
    assert reader.wait(created.position, timeout=5)
    assert reader.list_keys(created.workspace.id, START)
    applier.close()
    reader.close()
