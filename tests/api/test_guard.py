"""The guard a Python service mounts: key, scope and quota checked; the real status recorded as usage."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, HTTPException
from starlette.testclient import TestClient

from domain.application import KeyLedger
from domain.usage import UsageBatch
from keyledger.bootstrap import open_ledger
from keyledger.guard import Guard
from keyledger.services import VerificationStack, build_verification
from keyledger.settings import Settings
from tests.timing import inside_one_minute


def service_app() -> FastAPI:
    app = FastAPI()

    @app.get("/reports/{report}")
    def read_report(report: int) -> dict[str, int]:
        if report != 1:
            raise HTTPException(404)
        return {"report": report}

    @app.post("/reports", status_code=201)
    def write_report() -> dict[str, str]:
        return {"status": "created"}

    return app


@pytest.fixture
def guarded(settings: Settings) -> Iterator[tuple[KeyLedger, VerificationStack, TestClient]]:
    configured = settings.model_copy(update={"resources": "reports"})
    ledger = open_ledger(configured)
    stack = build_verification(configured, ledger)
    client = TestClient(Guard(service_app(), stack.verification))
    try:
        yield ledger, stack, client
    finally:
        stack.stop()
        ledger.close()


def recorded_usage(ledger: KeyLedger) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for notification in ledger.recorder.select_notifications(start=None, limit=10_000):
        event = ledger.mapper.to_domain_event(notification)
        if isinstance(event, UsageBatch.UsageRecorded):
            for entry in event.entries:
                counts[(entry["endpoint"], entry["status"])] += entry["count"]
    return counts


def test_the_guard_checks_keys_and_records_the_services_real_statuses(guarded):
    ledger, stack, client = guarded
    workspace = ledger.create_workspace("svc", "starter").workspace
    reader = ledger.issue_key(workspace.id, "reader", ["read:reports"]).secret
    bearer = {"Authorization": f"Bearer {reader}"}

    anonymous = client.get("/reports/1")
    found = client.get("/reports/1", headers=bearer)
    missing = client.get("/reports/2", headers=bearer)
    forbidden = client.post("/reports", headers=bearer)
    stack.usage.flush()

    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
    assert found.status_code == 200 and found.json() == {"report": 1}
    assert found.headers["RateLimit-Policy"] == '"minute";q=60;w=60, "day";q=10000;w=86400'
    assert missing.status_code == 404
    assert forbidden.status_code == 403
    assert forbidden.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="write:reports"'
    assert recorded_usage(ledger) == Counter(
        {("GET /reports/1", 200): 1, ("GET /reports/2", 404): 1, ("POST /reports", 403): 1}
    )


def test_the_guard_refuses_over_quota_without_calling_the_service(guarded):
    ledger, stack, client = guarded
    workspace = ledger.create_workspace("svc", "enterprise", requests_per_minute=2, requests_per_day=10).workspace
    writer = ledger.issue_key(workspace.id, "writer", ["write:reports"]).secret
    bearer = {"Authorization": f"Bearer {writer}"}
    inside_one_minute()

    statuses = [client.post("/reports", headers=bearer).status_code for _ in range(3)]
    stack.usage.flush()

    assert statuses == [201, 201, 429]
    assert recorded_usage(ledger) == Counter({("POST /reports", 201): 2, ("POST /reports", 429): 1})
