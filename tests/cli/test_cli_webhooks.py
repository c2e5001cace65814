"""`keyledger webhooks add|list|remove|deliveries WS`, run as a user runs it, on both backends."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from keyledger.settings import Settings
from tests.cli.test_cli import ok, run

TARGET = "https://93.184.215.14/hook"  # a public address: passes the guard without a name to resolve


def test_an_operator_manages_webhooks_from_the_command_line(settings: Settings, tmp_path: Path):
    ws = ok(settings, "workspace", "create", "acme")["workspace"]["id"]

    added = run(settings, "webhooks", "add", ws, TARGET, "--type", "KeyIssued", "--description", "siem", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    body = json.loads(added.stdout)
    hook = body["webhook"]
    assert body["secret"].startswith("whsec_") and "only this once" in added.stderr
    assert (hook["url"], hook["types"], hook["description"]) == (TARGET, ["KeyIssued"], "siem")
    key_file = tmp_path / "keyledger-webhook.key"  # no KEYLEDGER_WEBHOOK_KEY: generated beside, 0600
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600

    listed = run(settings, "webhooks", "list", ws, cwd=tmp_path)
    assert json.loads(listed.stdout) == {"items": [hook]}
    assert json.loads(run(settings, "webhooks", "deliveries", ws, hook["id"], cwd=tmp_path).stdout) == {"items": []}

    removed = run(settings, "webhooks", "remove", ws, hook["id"], cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["deleted"]["id"] == hook["id"]
    assert json.loads(run(settings, "webhooks", "list", ws, cwd=tmp_path).stdout) == {"items": []}
    assert body["secret"] not in removed.stdout + listed.stdout


def test_bad_webhooks_are_refused_with_one_line_and_status_2(settings: Settings, tmp_path: Path):
    ws = ok(settings, "workspace", "create", "acme")["workspace"]["id"]
    for args in (
        ("add", ws, "https://localhost/hook"),
        ("add", ws, "http://93.184.215.14/hook"),
        ("add", ws, TARGET, "--type", "Nope"),
        ("remove", ws, "6f1c0d7e-8c1e-4a7b-9a51-0c2b1b0e7d11"),
    ):
        result = run(settings, "webhooks", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("keyledger: error: ") and result.stdout == ""
    assert json.loads(run(settings, "webhooks", "list", ws, cwd=tmp_path).stdout) == {"items": []}
