"""The export's entries from stored rows (adapters/auditchain/exportrows.py) against the per-event path.

The reference is what the export wrote before: the library's notifications, its mapper's domain event
and `describe`. Every entry must encode to the same bytes, and the CLI's output must be the same
whether the fast path or only the reference describes the events.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from adapters.auditchain import exportrows
from adapters.auditchain.exportrows import Describer, StoredRow, entry_of, reference
from domain.alerts import Alert
from domain.application import EVENT_CLASSES, KeyLedger
from domain.auditlog import describe
from domain.imports import import_digest
from domain.keys import ApiKey
from domain.usage import CreditSpend, UsageCount
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from scripts.cli import app
from tests.audit.cli import env_of

FIXTURES = Path(__file__).parent.parent / "fixtures"
_encode = json.JSONEncoder().encode  # as the export encodes a line


def every_event(ledger: KeyLedger) -> None:
    """At least one event of every type the domain defines (the test checks that it is so)."""
    ws = ledger.create_workspace("acme", "starter").workspace.id
    ledger.change_plan(ws, "enterprise", requests_per_minute=1000, requests_per_day=50_000)
    key = ledger.issue_key(
        ws, "ci", ["read:nodes"], expires_at=datetime.now(UTC) + timedelta(days=3), meta={"a": [1.5]}, owner_id="u1"
    ).key.id
    ledger.change_details(key, {"name": "ci2", "meta": {"b": {"_type_": "x", "_data_": 2}, "é": "\u2603"}})
    ledger.set_key_limits(key, 10, None)
    ledger.set_credits(key, 5, 3, "day")
    ledger.record_refill(key, ledger.get_key(key).version, "d2999-01-01", "api:test")
    ledger.clear_key_limits(key)
    ledger.grant_scopes(key, ["write:edges", "read:events"])
    ledger.revoke_scopes(key, ["read:events"])
    ledger.set_scopes(key, ["read:nodes", "read:edges"])
    ledger.rotate_key(key, grace_seconds=120)
    ledger.suspend_key(key, reason="investigating")
    ledger.resume_key(key)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    ledger.record_usage(
        [UsageCount(key, ws, minute, "GET /nodes", 200, 3)], "api", [CreditSpend(key, ws, 1, "d2999-01-01", 2)]
    )
    ledger.revoke_key(key, reason="rotated out")
    hook = ledger.create_webhook(ws, "https://hooks.example.com/k", ["KeyIssued"], "siem").webhook
    ledger.create_webhook(ws, "https://hooks.example.com/all")
    ledger.delete_webhook(ws, hook.id)
    ledger.import_key(ws, "legacy", ["read:nodes"], import_digest(sha256="ab" * 32), meta={"from": "old"})
    now = datetime.now(UTC)
    for alert in (
        Alert.key_expiring(key, ws, now + timedelta(days=3)),
        Alert.rotation_due(key, ws, now),
        Alert.quota_threshold(key, ws, now.date(), 80, 50_000, 40_000),
        Alert.denied_burst(key, ws, now.replace(second=0, microsecond=0), 20),
    ):
        ledger.raise_alert(alert)


def _rows(ledger: KeyLedger) -> list[StoredRow]:
    return ledger.recorder.stored_rows(0, 2**63 - 1, 100_000)  # type: ignore[attr-defined,no-any-return]


def _counting(ledger: KeyLedger) -> tuple[Describer, list[int]]:
    slow = reference(ledger.mapper)
    used: list[int] = []

    def counted(row: StoredRow) -> tuple[dict[str, Any], datetime]:
        used.append(row.position)
        return slow(row)

    return Describer(counted), used


def test_every_event_type_gives_the_entry_of_the_per_event_path(settings: Settings):
    ledger = open_ledger(settings)
    try:
        every_event(ledger)
        notifications = list(ledger.recorder.select_notifications(0, 100_000))
        rows = _rows(ledger)
        describer, slow = _counting(ledger)
        for notification, row in zip(notifications, rows, strict=True):
            assert row.position == notification.id
            expected = describe(ledger.mapper.to_domain_event(notification))
            entry, moment = describer.entry(row)
            assert _encode(entry) == _encode(entry_of(notification.id, expected))
            assert moment == expected.occurred_at
    finally:
        ledger.close()
    stored = {row.topic.rsplit(".", 1)[-1] for row in rows}
    assert stored == {cls.__name__ for cls in EVENT_CLASSES}, "the test must store every event type"
    assert slow == [], "events written by today's code take the fast path"


def test_an_older_store_upcast_by_the_mapper_gives_the_same_entries(tmp_path: Path):
    shutil.copy(FIXTURES / "store-v1.sqlite", tmp_path / "store.sqlite")
    ledger = open_ledger(Settings(database_url=f"sqlite:///{tmp_path / 'store.sqlite'}"))
    try:
        describer, slow = _counting(ledger)
        notifications = list(ledger.recorder.select_notifications(0, 100_000))
        for notification, row in zip(notifications, _rows(ledger), strict=True):
            expected = entry_of(notification.id, describe(ledger.mapper.to_domain_event(notification)))
            assert _encode(describer.entry(row)[0]) == _encode(expected)
    finally:
        ledger.close()
    assert slow, "v1 events are upcast: the reference describes them"


def _state(timestamp: str, **fields: Any) -> bytes:
    return json.dumps({"timestamp": {"_type_": "datetime_iso", "_data_": timestamp}, **fields}).encode()


WORKSPACE = "domain.workspace:Workspace.KeySlotTaken"
REVOKED_VERSION = ApiKey.KeyRevoked.class_version
KEY_ID = {"_type_": "uuid_hex", "_data_": uuid4().hex}


@pytest.mark.parametrize(
    ("topic", "state"),
    [
        (WORKSPACE, _state("2026-12-02T16:39:08.585270+00:00", key_id=KEY_ID, actor="op")),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id=KEY_ID, actor="op")),
        (WORKSPACE, _state("2026-12-02T16:39:08.000000+00:00", key_id=KEY_ID, actor="op")),  # zero fraction
        (WORKSPACE, _state("2026-12-02T18:39:08.5+02:00", key_id=KEY_ID, actor="op")),  # not UTC
        (WORKSPACE, _state("2026-12-02 16:39:08.585270+00:00", key_id=KEY_ID, actor="op")),  # another separator
        (WORKSPACE, _state("1969-12-31T23:59:59+00:00", key_id=KEY_ID, actor="op")),  # clamped
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id={"_type_": "uuid_hex", "_data_": str(uuid4())})),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id=None, actor=None, extra={"_type_": "decimal_str"})),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id=None, n=float("nan"), big=10**30)),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id=None, text="\ud800", listed=[{"a": KEY_ID}])),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", key_id=None, class_version=7, secret_digest="ab")),
        ("domain.keys:ApiKey.KeyRevoked", _state("2026-12-02T16:39:08+00:00", actor="op", reason=None)),  # v1
        (
            "domain.keys:ApiKey.KeyRevoked",
            _state("2026-12-02T16:39:08+00:00", reason=None, workspace_id=None, class_version=REVOKED_VERSION),
        ),
        (WORKSPACE, _state("2026-12-02T16:39:08+00:00", workspace_id=None, key_id=KEY_ID, actor=7)),
    ],
)
def test_unusual_rows_give_the_entry_or_the_error_of_the_reference(settings: Settings, topic: str, state: bytes):
    ledger = open_ledger(settings)
    try:
        row = StoredRow(9, str(uuid4()), 3, topic, state)
        slow = reference(ledger.mapper)
        try:
            expected: Any = _encode(slow(row)[0])
        except Exception as error:
            expected = type(error)
        try:
            got: Any = _encode(Describer(slow).entry(row)[0])
        except Exception as error:
            got = type(error)
    finally:
        ledger.close()
    assert got == expected


def test_the_cli_writes_the_same_bytes_as_the_per_event_path(audit_settings: Settings, monkeypatch: pytest.MonkeyPatch):
    ledger = open_ledger(audit_settings)
    try:
        every_event(ledger)
    finally:
        ledger.close()
    runner = CliRunner()

    def export(*args: str) -> str:
        result = runner.invoke(app, ["audit", "export", *args], env=env_of(audit_settings))
        assert result.exit_code == 0, result.output
        return result.stdout

    fast, fast_plain = export("--proofs"), export()

    def unusual(row: StoredRow, topic: object) -> Any:
        raise exportrows._Unusual

    monkeypatch.setattr(Describer, "_fast", staticmethod(unusual))  # every row through the reference
    slow, slow_plain = export("--proofs"), export()
    assert fast.count("\n") > len(EVENT_CLASSES)
    assert fast == slow
    assert fast_plain == slow_plain
    assert all(UUID(json.loads(line)["leaf"]["originator_id"]) for line in fast.splitlines()[:-1])
