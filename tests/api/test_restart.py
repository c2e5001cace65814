"""A restart does not hand a key a fresh day: in-process counters come back from the usage read model."""

from __future__ import annotations

import time
from pathlib import Path

from tests.api.conftest import Backend
from tests.api.server import Server, create_workspace
from tests.api.test_answers import forward, issue, verify, windows


def test_a_restarted_api_still_counts_the_days_requests(backend: Backend, tmp_path: Path):
    server = Server(backend.settings, tmp_path / "server.log", backend.redis_url).start()
    created = create_workspace(server, "enterprise", requests_per_minute=3, requests_per_day=3)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    assert [verify(server, key["secret"])["code"] for _ in range(3)] == ["VALID"] * 3
    with server.client(admin["secret"]) as client:  # usage is flushed about every second
        for _ in range(100):
            items = client.get(f"/v1/workspaces/{ws}/usage", params={"key": key["key"]["id"]}).json()["items"]
            if items and items[0]["total"] == 3:
                break
            time.sleep(0.1)
    server.stop()

    restarted = Server(backend.settings, tmp_path / "restarted.log", backend.redis_url).start()
    try:
        refused = forward(restarted, key["secret"])
    finally:
        restarted.stop()

    assert refused.status_code == 429
    assert windows(refused)["day"] == 0  # the day's three requests were remembered
