"""The `keyledger` command, run as a user runs it: a subprocess on the configured store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from domain import credentials
from domain.usage import CreditSpend
from domain.verification import VerifyCode
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests.api.server import Server
from tests.api.test_answers import verify
from tests.verdicts import store_verdict

KEYLEDGER = str(Path(sys.executable).parent / "keyledger")


def run(
    settings: Settings, *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env["KEYLEDGER_DATABASE_URL"] = settings.database_url
    if settings.database_schema:
        env["KEYLEDGER_DATABASE_SCHEMA"] = settings.database_schema
    return subprocess.run(
        [KEYLEDGER, *args], capture_output=True, text=True, env=env, timeout=60, cwd=cwd, check=False, input=stdin
    )


def ok(settings: Settings, *args: str) -> Any:
    result = run(settings, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def max_position(settings: Settings) -> int:
    ledger = open_ledger(settings)
    try:
        return ledger.max_position()
    finally:
        ledger.close()


def test_an_operator_manages_a_key_from_the_command_line(settings: Settings):
    created = ok(settings, "workspace", "create", "acme", "--plan", "pro")
    ws = created["workspace"]["id"]
    assert created["workspace"]["requests_per_minute"] == 300
    assert created["admin_key"]["secret"].startswith("kl_")
    assert created["admin_key"]["key"]["scopes"] == ["admin"]

    issued = ok(settings, "key", "issue", ws, "--name", "ci", "--scope", "read:nodes")
    key = issued["key"]["id"]
    assert issued["secret"].startswith("kl_")

    assert ok(settings, "key", "grant", key, "write:edges", "read:events")["key"]["scopes"] == [
        "read:events",
        "read:nodes",
        "write:edges",
    ]
    assert "read:events" not in ok(settings, "key", "revoke-scope", key, "read:events")["key"]["scopes"]

    rotated = ok(settings, "key", "rotate", key, "--grace", "60")
    assert rotated["secret"] != issued["secret"]
    assert rotated["key"]["previous_secret_valid_until"] is not None

    revoked = ok(settings, "key", "revoke", key, "--reason", "done")
    assert revoked["key"]["status"] == "revoked"

    shown = ok(settings, "key", "show", key)
    assert shown["status"] == "revoked"
    assert issued["secret"] not in json.dumps(shown)
    assert ok(settings, "workspace", "show", ws)["live_keys"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ("workspace", "create", "acme", "--plan", "gold"),
        ("workspace", "create", "acme", "--plan", "enterprise"),
        ("key", "issue", "not-a-uuid", "--name", "x"),
        ("key", "issue"),
        ("key", "rotate", "00000000-0000-4000-8000-000000000000"),
        ("key", "frobnicate"),
    ],
)
def test_bad_input_prints_one_line_exits_2_and_changes_nothing(settings: Settings, args):
    ok(settings, "workspace", "create", "seed", "--plan", "starter")
    before = max_position(settings)

    result = run(settings, *args)

    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("keyledger: error: ")
    assert max_position(settings) == before


def test_bad_scope_on_an_existing_key_changes_nothing(settings: Settings):
    created = ok(settings, "workspace", "create", "acme", "--plan", "starter")
    key = created["admin_key"]["key"]["id"]
    before = max_position(settings)

    result = run(settings, "key", "grant", key, "read:datasets")

    assert result.returncode == 2
    assert "datasets" in result.stderr
    assert max_position(settings) == before


def test_a_bad_setting_is_named(tmp_path: Path):
    bad = Settings.model_construct(database_url="mysql://nope", database_schema=None)

    result = run(bad, "workspace", "show", "00000000-0000-4000-8000-000000000000", cwd=tmp_path)

    assert result.returncode == 2
    assert "KEYLEDGER_DATABASE_URL" in result.stderr


def test_an_operator_suspends_and_resumes_a_key(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
    issued = ok(settings, "key", "issue", ws, "--name", "ci", "--scope", "read:nodes")
    key = issued["key"]["id"]

    suspended = ok(settings, "key", "suspend", key, "--reason", "investigating")
    shown = ok(settings, "key", "show", key)
    resumed = ok(settings, "key", "resume", key)
    ok(settings, "key", "revoke", key)
    refused = run(settings, "key", "resume", key)

    assert suspended["key"]["status"] == "suspended" and suspended["position"] is not None
    assert shown["status"] == "suspended"
    assert resumed["key"]["status"] == "active"
    assert refused.returncode == 2 and "revoked" in refused.stderr


def test_an_operator_sets_a_keys_exact_scopes(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
    key = ok(settings, "key", "issue", ws, "--name", "ci", "--scope", "write:nodes", "--scope", "read:edges")["key"][
        "id"
    ]

    exact = ok(settings, "key", "set-scopes", key, "read:nodes", "read:events")
    bad = run(settings, "key", "set-scopes", key, "read:nope")

    assert exact["key"]["scopes"] == ["read:events", "read:nodes"]
    assert bad.returncode == 2 and ok(settings, "key", "show", key)["scopes"] == ["read:events", "read:nodes"]


def test_an_operator_keeps_meta_and_an_owner_with_a_key(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
    issued = ok(settings, "key", "issue", ws, "--name", "ci", "--meta", '{"team": "data"}', "--owner-id", "u1")
    key = issued["key"]["id"]

    renamed = ok(settings, "key", "update", key, "--name", "ci2", "--owner-id", "u2")
    cleared = ok(settings, "key", "update", key, "--clear-meta")
    bad_meta = run(settings, "key", "update", key, "--meta", "[1]")
    not_json = run(settings, "key", "update", key, "--meta", "{team")
    both = run(settings, "key", "update", key, "--owner-id", "u3", "--clear-owner")
    shown = ok(settings, "key", "show", key)
    replay = run(settings, "audit", "replay", key)

    assert issued["key"]["meta"] == {"team": "data"} and issued["key"]["owner_id"] == "u1"
    assert renamed["key"]["name"] == "ci2" and renamed["key"]["owner_id"] == "u2"
    assert renamed["key"]["meta"] == {"team": "data"} and cleared["key"]["meta"] is None
    assert bad_meta.returncode == 2 and "meta must be a JSON object" in bad_meta.stderr
    assert not_json.returncode == 2 and "JSON" in not_json.stderr and both.returncode == 2
    assert shown["name"] == "ci2" and shown["owner_id"] == "u2" and shown["meta"] is None
    assert replay.returncode == 0 and replay.stdout.count("KeyDetailsChanged") == 2


def test_an_operator_limits_a_key_below_its_plan(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "starter")["workspace"]["id"]
    key = ok(settings, "key", "issue", ws, "--name", "ci")["key"]["id"]

    limited = ok(settings, "key", "set-limits", key, "--rpm", "5")
    above = run(settings, "key", "set-limits", key, "--rpd", "10001")
    none = run(settings, "key", "set-limits", key)
    shown = ok(settings, "key", "show", key)
    cleared = ok(settings, "key", "clear-limits", key)

    assert limited["key"]["limits"] == {"requests_per_minute": 5, "requests_per_day": 10_000, "source": "key"}
    assert above.returncode == 2 and "requests_per_day must be an integer from 1 to the plan's 10000" in above.stderr
    assert none.returncode == 2 and "give requests_per_minute" in none.stderr
    assert shown["limits"]["requests_per_minute"] == 5
    assert cleared["key"]["limits"] == {"requests_per_minute": 60, "requests_per_day": 10_000, "source": "plan"}


def test_an_operator_gives_a_key_credits(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
    issued = ok(settings, "key", "issue", ws, "--name", "metered", "--credits", "100")
    key = issued["key"]["id"]

    refilled = ok(settings, "key", "set-credits", key, "5", "--refill-amount", "50", "--refill-interval", "month")
    negative = run(settings, "key", "set-credits", key, "--", "-1")
    weekly = run(settings, "key", "set-credits", key, "5", "--refill-amount", "5", "--refill-interval", "week")
    lone_refill = run(settings, "key", "issue", ws, "--name", "x", "--refill-amount", "5")
    replay = run(settings, "audit", "replay", key)

    assert issued["key"]["credits"]["remaining"] == 100 and issued["key"]["credits"]["refill"] is None
    assert refilled["key"]["credits"]["remaining"] == 5
    assert refilled["key"]["credits"]["refill"] == {"amount": 50, "interval": "month"}
    assert negative.returncode == 2 and "credits remaining must be an integer" in negative.stderr
    assert weekly.returncode == 2 and "interval must be one of day, month" in weekly.stderr
    assert lone_refill.returncode == 2 and "--credits" in lone_refill.stderr
    assert replay.returncode == 0 and "CreditsSet" in replay.stdout


def test_an_operator_imports_keys_by_secret_and_by_sha256(settings: Settings):
    ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
    by_secret = run(
        settings,
        "key",
        "import",
        ws,
        "--name",
        "a",
        "--scope",
        "read:nodes",
        "--secret-stdin",
        stdin="legacy-cli-secret-0123456789\n",
    )
    digest = hashlib.sha256(b"legacy-cli-hashed-0123456789").hexdigest()
    by_digest = ok(settings, "key", "import", ws, "--name", "b", "--sha256", digest, "--owner-id", "c1")
    again = run(settings, "key", "import", ws, "--name", "c", "--sha256", digest)
    native = run(settings, "key", "import", ws, "--name", "d", "--secret-stdin", stdin="kl_" + "a" * 30 + "\n")
    neither = run(settings, "key", "import", ws, "--name", "e")
    rotated = ok(settings, "key", "rotate", by_digest["key"]["id"], "--grace", "0")

    assert by_secret.returncode == 0, by_secret.stderr
    assert "legacy-cli-secret" not in by_secret.stdout + by_secret.stderr
    assert json.loads(by_secret.stdout)["key"]["imported"] is True
    assert by_digest["key"]["imported"] is True and by_digest["key"]["owner_id"] == "c1"
    assert again.returncode == 2 and "a key holds this secret already" in again.stderr
    assert native.returncode == 2 and "issue a key instead" in native.stderr
    assert neither.returncode == 2 and "exactly one of secret and sha256" in neither.stderr
    assert rotated["secret"].startswith("kl_")
    ledger = open_ledger(settings)
    try:
        assert ledger.claimed_key(credentials.digest("legacy-cli-secret-0123456789")) is not None
        assert store_verdict(ledger, rotated["secret"], "read:nodes") is VerifyCode.INSUFFICIENT_SCOPE
    finally:
        ledger.close()


def test_a_workspace_export_holds_only_its_own_credits_spent(settings: Settings):
    ledger = open_ledger(settings)
    try:
        ours = ledger.create_workspace("ours", "pro").workspace.id
        theirs = ledger.create_workspace("theirs", "pro").workspace.id
        a, b = uuid4(), uuid4()
        ledger.record_usage([], "api:test", [CreditSpend(a, ours, 1, "", 3), CreditSpend(b, theirs, 1, "", 4)])
    finally:
        ledger.close()

    exported = run(settings, "audit", "export", "--workspace", str(ours))

    assert exported.returncode == 0, exported.stderr
    usage = [json.loads(line) for line in exported.stdout.splitlines() if '"UsageRecorded"' in line]
    assert [entry["data"]["credits"] for entry in usage] == [
        [{"key_id": str(a), "workspace_id": str(ours), "generation": 1, "period": "", "count": 3}]
    ]
    assert str(b) not in exported.stdout


def test_a_key_imported_from_the_command_line_reaches_an_api_without_redis(tmp_path: Path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'keyledger.db'}")
    server = Server(settings, tmp_path / "server.log").start()
    original = "legacy-cli-to-api-0123456789"
    try:
        ws = ok(settings, "workspace", "create", "acme", "--plan", "pro")["workspace"]["id"]
        before = verify(server, original)["code"]  # the API remembers that no key has this digest
        result = run(
            settings,
            "key",
            "import",
            ws,
            "--name",
            "old",
            "--scope",
            "read:nodes",
            "--secret-stdin",
            stdin=original + "\n",
        )
        assert result.returncode == 0, result.stderr
        deadline, after = time.monotonic() + 3, "NOT_FOUND"
        while after != "VALID" and time.monotonic() < deadline:  # its stream follower sees the claim
            time.sleep(0.1)
            after = verify(server, original)["code"]
    finally:
        server.stop()

    assert before == "NOT_FOUND" and after == "VALID"
