"""A store written by an earlier release opens, verifies and rebuilds under today's code
(tests/fixtures/README.md says how the fixture was written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.application import KeyLedger
from domain.keys import ApiKey
from domain.verification import VerifyCode
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from projections import ReadModels
from projections.audit import AuditProjection
from projections.keys import KeysProjection
from projections.usage import UsageProjection
from tests.api.server import Server
from tests.verdicts import store_verdict

FIXTURES = Path(__file__).parent.parent / "fixtures"


def opened_copy(tmp_path: Path, store: str = "store-v1") -> tuple[Settings, dict[str, Any]]:
    shutil.copy(FIXTURES / f"{store}.sqlite", tmp_path / "keyledger.db")
    return Settings(database_url=f"sqlite:///{tmp_path / 'keyledger.db'}"), json.loads(
        (FIXTURES / f"{store}.json").read_text()
    )


def test_a_first_wave_store_opens_verifies_and_rebuilds(tmp_path: Path):
    settings, known = opened_copy(tmp_path)
    ledger: KeyLedger = open_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        rebuilt = models.ensure_current()
        head = models.catch_up()
        status = {s.name: s for s in models.status()}
        verdicts = {
            name: store_verdict(ledger, known[name], scope)
            for name, scope in (
                ("admin", "admin"),
                ("reader", "read:nodes"),
                ("writer", "write:edges"),
                ("writer_before_rotation", "write:edges"),
                ("gone", "read:nodes"),
            )
        }
        events = [
            e
            for n in ledger.recorder.select_notifications(0, 1000)
            if isinstance(e := ledger.mapper.to_domain_event(n), ApiKey.Event)
        ]
        models.rebuild()
        after = {s.name: (s.state, s.lag) for s in models.status()}
        workspace_id = events[0].workspace_id
        listed = models.list_keys(workspace_id, ledger.clock())
        usage = models.usage(workspace_id)
    finally:
        models.close()
        ledger.close()

    # Raised since: rebuilt at start.
    assert set(rebuilt) == raised_since(keys=1, usage=1, audit=1)
    assert (status["keys"].version, status["audit"].version) == (KeysProjection.VERSION, AuditProjection.VERSION)
    assert all(s.lag == 0 and s.state == "ok" for s in status.values()) and head > 0
    assert verdicts == {
        "admin": VerifyCode.VALID,
        "reader": VerifyCode.VALID,
        "writer": VerifyCode.VALID,
        "writer_before_rotation": VerifyCode.EXPIRED,
        "gone": VerifyCode.REVOKED,
    }
    issued = [e for e in events if isinstance(e, ApiKey.KeyIssued)]
    later = [e for e in events if not isinstance(e, ApiKey.KeyIssued)]
    assert all(e.workspace_id is not None for e in issued) and all(e.workspace_id is None for e in later)
    assert after == {"keys": ("ok", 0), "usage": ("ok", 0), "audit": ("ok", 0)}
    assert sorted((k.name, k.status) for k in listed) == [
        ("admin", "active"),
        ("gone", "revoked"),
        ("reader", "active"),
        ("writer", "active"),
    ]
    assert [u.total for u in usage] == [5]


def test_the_api_serves_a_first_wave_store(tmp_path: Path):
    settings, known = opened_copy(tmp_path)
    server = Server(settings, tmp_path / "server.log").start()
    try:
        with server.client() as client:
            reader = client.post("/v1/verify", json={"key": known["reader"], "scope": "read:nodes"}).json()
            gone = client.post("/v1/verify", json={"key": known["gone"], "scope": "read:nodes"}).json()
        with server.client(known["admin"]) as admin:
            ws = known["workspace_id"]
            history = admin.get(f"/v1/workspaces/{ws}/keys/{reader['key_id']}/history").json()
            grant = admin.post(f"/v1/workspaces/{ws}/keys/{reader['key_id']}/scopes", json={"scopes": ["read:edges"]})
    finally:
        server.stop()

    assert reader["code"] == "VALID" and gone["code"] == "REVOKED"
    assert [e["type"] for e in history["items"]] == ["KeyIssued"]
    assert grant.status_code == 200 and grant.json()["scopes"] == ["read:edges", "read:nodes"]


def raised_since(**stored: int) -> set[str]:
    """The read models whose version was raised since the store's (rebuilt at start)."""
    current = {"keys": KeysProjection.VERSION, "usage": UsageProjection.VERSION, "audit": AuditProjection.VERSION}
    return {name for name, version in stored.items() if current[name] > version}


V2_VERDICTS = {
    ("admin", "admin"): VerifyCode.VALID,
    ("reader", "read:nodes"): VerifyCode.VALID,
    ("writer", "write:edges"): VerifyCode.VALID,
    ("writer_before_rotation", "write:edges"): VerifyCode.EXPIRED,
    ("paused", "read:nodes"): VerifyCode.SUSPENDED,
    ("resumed", "write:nodes"): VerifyCode.VALID,
    ("resumed", "read:nodes"): VerifyCode.VALID,  # write:nodes includes it
    ("resumed", "read:events"): VerifyCode.INSUFFICIENT_SCOPE,
    ("gone", "read:nodes"): VerifyCode.REVOKED,
}


def test_a_store_written_before_the_keys_issue_opens_verifies_and_rebuilds(tmp_path: Path):
    """store-v2: written by main at 5861972 (suspend/resume and exact scopes, nothing later of issue 14)."""
    settings, known = opened_copy(tmp_path, "store-v2")
    ledger: KeyLedger = open_ledger(settings)
    models = ReadModels(settings, ledger)
    try:
        rebuilt = models.ensure_current()
        models.catch_up()
        verdicts = {(name, scope): store_verdict(ledger, known[name], scope) for name, scope in V2_VERDICTS}
        models.rebuild()
        after = {s.name: (s.state, s.lag) for s in models.status()}
        workspace_id = UUID(known["workspace_id"])
        listed = {k.name: k for k in models.list_keys(workspace_id, ledger.clock())}
        usage = models.usage(workspace_id)
    finally:
        models.close()
        ledger.close()

    # The keys read model is rebuilt at start only when its version was raised since.
    assert set(rebuilt) == raised_since(keys=2, usage=1, audit=1)
    assert verdicts == V2_VERDICTS
    assert after == {"keys": ("ok", 0), "usage": ("ok", 0), "audit": ("ok", 0)}
    assert {name: k.status for name, k in listed.items()} == {
        "admin": "active",
        "reader": "active",
        "writer": "active",
        "paused": "suspended",
        "resumed": "active",
        "gone": "revoked",
    }
    assert listed["resumed"].scopes == ["read:edges", "write:nodes"]
    assert sorted(u.total for u in usage) == [2, 5]


def test_the_api_serves_a_store_written_before_the_keys_issue(tmp_path: Path):
    settings, known = opened_copy(tmp_path, "store-v2")
    server = Server(settings, tmp_path / "server.log").start()
    try:
        with server.client() as client:
            answers = {
                name: client.post("/v1/verify", json={"key": known[name], "scope": "read:nodes"}).json()
                for name in ("reader", "paused", "gone")
            }
        with server.client(known["admin"]) as admin:
            ws, paused = known["workspace_id"], answers["paused"]["key_id"]
            history = admin.get(f"/v1/workspaces/{ws}/keys/{paused}/history").json()
            resumed = admin.post(f"/v1/workspaces/{ws}/keys/{paused}/resume")
        with server.client() as client:
            again = client.post("/v1/verify", json={"key": known["paused"], "scope": "read:nodes"}).json()
    finally:
        server.stop()

    assert {n: a["code"] for n, a in answers.items()} == {"reader": "VALID", "paused": "SUSPENDED", "gone": "REVOKED"}
    assert [e["type"] for e in history["items"]] == ["KeyIssued", "KeySuspended"]
    assert resumed.status_code == 200 and resumed.json()["status"] == "active" and again["code"] == "VALID"
