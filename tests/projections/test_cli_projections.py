"""`keyledger projections run|status|rebuild` as a user runs them: subprocesses on the configured store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from domain.application import KeyLedger
from keyledger.settings import Settings
from projections.audit import AuditProjection
from projections.keys import KeysProjection
from projections.usage import UsageProjection
from tests.cli.test_cli import KEYLEDGER, run


def status(settings: Settings) -> dict[str, dict[str, int]]:
    result = run(settings, "projections", "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}


def test_rebuild_shows_progress_and_status_shows_the_new_generation(settings: Settings, ledger: KeyLedger):
    ledger.create_workspace("acme", "pro")
    head = ledger.max_position()
    assert {row["lag"] for row in status(settings).values()} == {head}

    rebuilt = run(settings, "projections", "rebuild")
    again = run(settings, "projections", "rebuild", "audit")

    assert rebuilt.returncode == 0 and again.returncode == 0, rebuilt.stderr + again.stderr
    assert "events/s" in rebuilt.stderr and "audit: generation 2" in again.stderr
    rows = status(settings)
    assert [(r["version"], r["position"], r["lag"], r["generation"]) for r in rows.values()] == [
        (KeysProjection.VERSION, head, 0, 1),
        (UsageProjection.VERSION, head, 0, 1),
        (AuditProjection.VERSION, head, 0, 2),
    ]
    table = run(settings, "projections", "status").stdout
    assert all(name in table for name in ("keys", "usage", "audit", "position", "lag"))


def test_an_unknown_projection_is_one_line_and_exit_status_2(settings: Settings):
    result = run(settings, "projections", "rebuild", "nope")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "keyledger: error: unknown projection 'nope'; known projections: keys, usage, audit"
    ]


def test_the_worker_follows_new_events_until_interrupted(settings: Settings, ledger: KeyLedger):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env["KEYLEDGER_DATABASE_URL"] = settings.database_url
    if settings.database_schema:
        env["KEYLEDGER_DATABASE_SCHEMA"] = settings.database_schema
    worker = subprocess.Popen([KEYLEDGER, "projections", "run"], env=env, stderr=subprocess.PIPE, text=True)
    assert worker.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(worker.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("following the event stream" in line for line in lines):
            assert worker.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        created = ledger.create_workspace("acme", "pro")
        while not all(r["position"] >= created.position for r in status(settings).values()):
            assert worker.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=30)
        reader.join(timeout=5)

    assert worker.returncode == 0, "".join(lines)
    assert lines[-1].strip() == "stopped"
