"""A read model that fails on an event never stops the API from starting: `/readyz` reports it, commands
still answer at once, and it heals when the cause is gone (in process, SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Connection

from api.app import create_app
from domain.keys import ApiKey
from keyledger.bootstrap import open_ledger
from keyledger.services import build_services
from keyledger.settings import Settings
from projections.audit import AuditProjection
from projections.base import Positioned, Tables

POISON = "poison"
TOKEN = "klop_readiness-operator-token-0123456789"


def test_serve_starts_with_a_failing_read_model_reports_it_and_heals(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    fold = AuditProjection.fold
    broken = {"now": True}

    def fragile_fold(
        self: AuditProjection, conn: Connection, tables: Tables, pending: Any, events: Sequence[Positioned]
    ) -> Any:
        if broken["now"] and any(isinstance(e, ApiKey.KeyIssued) and e.name == POISON for _, e in events):
            raise RuntimeError("a bug in the audit read model")
        return fold(self, conn, tables, pending, events)

    monkeypatch.setattr(AuditProjection, "fold", fragile_fold)
    ledger = open_ledger(settings)  # an earlier process wrote the event that breaks it
    created = ledger.create_workspace("acme", "starter")
    ledger.issue_key(created.workspace.id, POISON, ["read:nodes"])
    ledger.close()
    settings = settings.model_copy(update={"operator_token": SecretStr(TOKEN)})

    with TestClient(create_app(build_services(settings))) as client:  # start-up runs here
        ready = client.get("/readyz")
        started = time.monotonic()
        issued = client.post(
            f"/v1/workspaces/{created.workspace.id}/keys",
            json={"name": "new", "scopes": ["read:nodes"]},
            headers={"Authorization": f"Bearer {created.secret}"},
        )
        answered_in = time.monotonic() - started
        verified = client.post("/v1/verify", json={"key": issued.json()["secret"], "scope": "read:nodes"})
        metrics = client.get("/metrics").text
        broken["now"] = False
        deadline = time.monotonic() + 20
        while client.get("/readyz").json()["checks"]["read_models"] != {"status": "ok", "lag": 0}:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.1)

    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded" and body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["read_models"]["status"] == "failing"
    assert "RuntimeError" in body["checks"]["read_models"]["failing"]["audit"]
    assert issued.status_code == 201 and answered_in < 3.0  # no 10 s wait for a read model that fails
    assert verified.json()["code"] == "VALID"
    assert 'keyledger_projection_failing{projection="audit"} 1.0' in metrics


def test_healthz_answers_without_touching_a_dependency(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    services = build_services(settings.model_copy(update={"operator_token": SecretStr(TOKEN)}))
    with TestClient(create_app(services)) as client:

        def unreachable() -> None:
            raise OSError("the database is unreachable")

        monkeypatch.setattr(services.read_models, "status", unreachable)

        health = client.get("/healthz")
        ready = client.get("/readyz")

    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"]["status"] == "unreachable"


def test_a_server_app_freezes_what_start_up_made_out_of_the_collectors_sight(settings: Settings):
    import gc

    settings = settings.model_copy(update={"operator_token": SecretStr(TOKEN)})
    gc.unfreeze()
    try:
        with TestClient(create_app(build_services(settings), freeze_gc=True)) as client:
            assert client.get("/readyz").status_code == 200
            frozen = gc.get_freeze_count()
        with TestClient(create_app(build_services(settings))):  # the tests' apps leave the collector alone
            grown = gc.get_freeze_count() - frozen  # frozen objects freed by reference counting shrink it
    finally:
        gc.unfreeze()

    assert frozen > 10_000  # the modules, schemas and services of the process
    assert grown <= 0
