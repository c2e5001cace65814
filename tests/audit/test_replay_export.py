"""`keyledger audit replay` and `export`: from raw events alone, no secrets, bad input refused."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from domain.application import KeyLedger
from domain.credentials import digest
from domain.errors import DomainError
from domain.keys import ApiKey
from domain.timefmt import to_rfc3339
from domain.usage import UsageCount
from keyledger.settings import Settings
from scripts.cli import app
from tests.audit.cli import env_of, run

SCOPES = ["read:nodes", "write:nodes", "read:edges", "write:edges", "read:events", "admin"]


def random_history(ledger: KeyLedger, seed: int, commands: int = 60) -> tuple[list[UUID], list[str]]:
    """Issue, grant, revoke scopes, rotate, revoke and change plans at random; returns keys and secrets."""
    rng = random.Random(seed)
    workspaces = [ledger.create_workspace(f"ws{i}", "starter") for i in range(2)]
    keys = [w.admin_key.id for w in workspaces]
    secrets = [w.secret for w in workspaces]
    for _ in range(commands):
        key = rng.choice(keys)
        action = rng.choice(["issue", "grant", "grant", "revoke-scope", "rotate", "revoke", "plan"])
        try:
            if action == "issue":
                ws = rng.choice(workspaces).workspace.id
                expiry = datetime.now(UTC) + timedelta(seconds=rng.choice([1, 3600])) if rng.random() < 0.3 else None
                issued = ledger.issue_key(ws, f"k{len(keys)}", rng.sample(SCOPES, 2), expires_at=expiry)
                keys.append(issued.key.id)
                secrets.append(issued.secret)
            elif action == "grant":
                ledger.grant_scopes(key, rng.sample(SCOPES, 2))
            elif action == "revoke-scope":
                ledger.revoke_scopes(key, rng.sample(SCOPES, 2))
            elif action == "rotate":
                secrets.append(ledger.rotate_key(key, grace_seconds=rng.choice([0, 2, 600])).secret)
            elif action == "revoke":
                ledger.revoke_key(key, reason=rng.choice([None, "rotated out"]))
            else:
                ledger.change_plan(rng.choice(workspaces).workspace.id, rng.choice(["starter", "pro"]))
        except DomainError:
            pass  # e.g. a revoked key: refused commands are part of a realistic sequence
    return keys, secrets


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: to_rfc3339(v) if isinstance(v, datetime) else str(v)))


def test_replay_rebuilds_every_key_as_the_aggregate_sees_it(audited: KeyLedger, audit_settings: Settings):
    keys, _ = random_history(audited, seed=20261123)
    at = datetime.now(UTC) + timedelta(seconds=1)
    runner = CliRunner()

    for key_id in keys:
        result = runner.invoke(
            app, ["audit", "replay", str(key_id), "--at", to_rfc3339(at) or ""], env=env_of(audit_settings)
        )
        assert result.exit_code == 0, result.output
        replayed = json.loads(result.stdout)
        key = audited.get_key(key_id)
        plan = audited.get_workspace(key.workspace_id).limits  # its limits are shown under its plan's then
        assert replayed["state"]["key"] == as_json(dataclasses.asdict(key.state(at, audited.catalog, plan)))
        assert replayed["state"]["version"] == key.version == len(replayed["timeline"])
        positions = [entry["position"] for entry in replayed["timeline"]]
        assert positions == sorted(positions) and None not in positions


def test_replay_runs_from_the_command_line_and_stops_at_the_time_asked(audited: KeyLedger, audit_settings: Settings):
    ws = audited.create_workspace("acme", "pro").workspace.id
    issued = audited.issue_key(ws, "ci", ["read:nodes"])
    audited.grant_scopes(issued.key.id, ["write:edges"])
    granted_at = next(iter(audited.events.get(issued.key.id, desc=True, limit=1))).timestamp  # type: ignore[attr-defined]
    audited.revoke_key(issued.key.id)

    before_grant = run(
        audit_settings,
        "replay",
        str(issued.key.id),
        "--at",
        to_rfc3339(granted_at - timedelta(microseconds=1)) or "",
    )

    assert before_grant.returncode == 0, before_grant.stderr
    replayed = json.loads(before_grant.stdout)
    assert [e["type"] for e in replayed["timeline"]] == ["KeyIssued"]
    assert (replayed["state"]["key"]["status"], replayed["state"]["key"]["scopes"]) == (
        "active",
        ["read:nodes"],
    )
    assert issued.secret not in before_grant.stdout


def test_export_streams_every_event_once_in_order_without_secrets(audited: KeyLedger, audit_settings: Settings):
    keys, secrets = random_history(audited, seed=5, commands=30)

    result = run(audit_settings, "export")

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["position"] for e in lines] == list(range(1, audited.max_position() + 1))
    assert {"position", "occurred_at", "type", "workspace_id", "key_id", "actor", "data"} <= set(lines[0])
    key_events = [e for e in lines if e["key_id"] in {str(k) for k in keys} and e["type"] != "KeySlotTaken"]
    assert all(e["workspace_id"] is not None for e in key_events)
    for secret in secrets:
        assert secret not in result.stdout and digest(secret) not in result.stdout
    assert "exported" in result.stderr


def test_export_filters_by_workspace_and_time(audited: KeyLedger, audit_settings: Settings):
    a = audited.create_workspace("a", "pro")
    b = audited.create_workspace("b", "pro")
    audited.grant_scopes(b.admin_key.id, ["read:nodes"])
    since = next(iter(audited.events.get(b.admin_key.id, desc=True, limit=1))).timestamp  # type: ignore[attr-defined]
    audited.grant_scopes(a.admin_key.id, ["read:nodes"])
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    audited.record_usage(
        [UsageCount(w.admin_key.id, w.workspace.id, minute, "GET /nodes", 200, 3) for w in (a, b)], "api"
    )

    only_b = run(audit_settings, "export", "--workspace", str(b.workspace.id))
    recent = run(audit_settings, "export", "--since", to_rfc3339(since) or "")

    b_lines = [json.loads(line) for line in only_b.stdout.splitlines()]
    assert {e["workspace_id"] for e in b_lines} == {str(b.workspace.id)}
    assert [e["type"] for e in b_lines] == [
        "WorkspaceCreated",
        "KeySlotTaken",
        "KeyIssued",
        "ScopesGranted",
        "UsageRecorded",
    ]
    assert [e["key_id"] for e in b_lines[-1]["data"]["entries"]] == [str(b.admin_key.id)]
    assert [json.loads(line)["type"] for line in recent.stdout.splitlines()] == [
        "ScopesGranted",
        "ScopesGranted",
        "UsageRecorded",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "not-a-uuid"),
        ("replay", "00000000-0000-4000-8000-000000000000"),
        ("export", "--since", "yesterday"),
        ("export", "--workspace", "acme"),
        ("verify", "--anchor", "12:nothex"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(audited: KeyLedger, audit_settings: Settings, args):
    audited.create_workspace("seed", "starter")

    result = run(audit_settings, *args)

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("keyledger: error: ")


def test_a_time_before_the_key_existed_is_refused(audited: KeyLedger, audit_settings: Settings):
    created = audited.create_workspace("seed", "starter")
    key: ApiKey = created.admin_key

    result = run(audit_settings, "replay", str(key.id), "--at", "2001-01-01T00:00:00Z")

    assert result.returncode == 2
    assert "did not exist at 2001-01-01T00:00:00Z" in result.stderr


def test_replay_gives_every_key_the_state_of_the_current_keys_read_model(audited: KeyLedger, audit_settings: Settings):
    from projections import ReadModels

    keys, _ = random_history(audited, seed=77)
    read_models = ReadModels(audit_settings, audited)
    read_models.catch_up()
    at = datetime.now(UTC) + timedelta(seconds=1)
    runner = CliRunner()

    try:
        for key_id in keys:
            result = runner.invoke(
                app, ["audit", "replay", str(key_id), "--at", to_rfc3339(at) or ""], env=env_of(audit_settings)
            )
            assert result.exit_code == 0, result.output
            workspace_id = audited.get_key(key_id).workspace_id
            plan = audited.get_workspace(workspace_id).limits
            from_read_model = read_models.get_key(workspace_id, key_id, at, plan)
            assert from_read_model is not None
            assert json.loads(result.stdout)["state"]["key"] == as_json(dataclasses.asdict(from_read_model))
    finally:
        read_models.close()
