"""`keyledger insights WS [--days N] [--json]` as a user runs it, on both backends."""

from __future__ import annotations

import pytest

from domain.application import utc_now
from domain.timefmt import floor_minute
from domain.usage import UsageCount
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests.cli.test_cli import ok, run


@pytest.mark.slow  # three runs of the command, about 3 s each
def test_insights_print_findings_as_lines_and_as_json(settings: Settings):
    ledger = open_ledger(settings)
    try:  # a workspace, a key, and what the API records for three allowed answers that needed read:nodes
        created = ledger.create_workspace("acme", "pro")
        ws = created.workspace.id
        key = ledger.issue_key(ws, "reader", ["write:nodes", "read:edges"]).key
        ledger.record_usage([UsageCount(key.id, ws, floor_minute(utc_now()), "GET /nodes", 200, 3, "read:nodes")], "t")
    finally:
        ledger.close()

    report = ok(settings, "insights", str(ws), "--days", "30", "--json")
    lines = run(settings, "insights", str(ws))
    bad = run(settings, "insights", str(ws), "--days", "0")

    kinds = {(f["kind"], f["key_name"]) for f in report["findings"]}
    assert report["window_days"] == 30
    assert kinds == {("unused_scope", "reader"), ("unused_key", "admin")}
    [narrow] = [f for f in report["findings"] if f["kind"] == "unused_scope"]
    assert narrow["suggestion"] == {"scopes": ["read:nodes"]} and narrow["observed_days"] == 0
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout.startswith("2 findings over the last 90 days")
    assert "unused read:edges, write:nodes; keep read:nodes" in lines.stdout
    assert bad.returncode == 2 and "days must be from 1 to 365" in bad.stderr
