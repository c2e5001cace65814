"""`/usage?bucket=`: the minute counts summed per UTC minute, hour or day, in place of the minute series."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue, verify


def usage(server: Server, admin: dict[str, Any], **params: str) -> dict[str, Any]:
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        response = client.get(f"/v1/workspaces/{ws}/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_usage_series_per_bucket(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    key = issue(server, admin, ["read:nodes"])
    for _ in range(3):
        verify(server, key["secret"], "read:nodes", "GET /nodes")
    verify(server, key["secret"], "write:nodes", "POST /nodes")
    for _ in range(50):  # usage is flushed about every second
        if (items := usage(server, admin)["items"]) and items[0]["total"] == 4:
            break
        time.sleep(0.1)
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    plain = usage(server, admin, since=since)
    by = {bucket: usage(server, admin, since=since, bucket=bucket) for bucket in ("minute", "hour", "day")}

    assert plain["bucket"] is None and plain["items"][0]["series"] is None
    minutes = plain["items"][0]["per_minute"]
    assert by["minute"]["items"][0]["series"] == minutes
    for bucket, body in by.items():
        (item,) = body["items"]
        assert body["bucket"] == bucket
        assert item["per_minute"] == []  # the series replaces it
        assert item["total"] == 4 and item["successes"] == 3 and item["client_errors"] == 1
        assert sum(p["requests"] for p in item["series"]) == 4
        assert sum(p["client_errors"] for p in item["series"]) == 1
        for point in item["series"]:
            start = datetime.fromisoformat(point["start"].replace("Z", "+00:00"))
            assert start.second == 0
            if bucket != "minute":
                assert start.minute == 0
            if bucket == "day":
                assert start.hour == 0


def test_an_unknown_bucket_is_refused(server: Server):
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        refused = client.get(f"/v1/workspaces/{ws}/usage", params={"bucket": "week"})
    assert_problem(refused, 422)
