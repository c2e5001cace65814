"""SPEC section 5: every endpoint with the shapes given there."""

from __future__ import annotations

import time

from tests.api.server import OPERATOR_TOKEN, Server, create_workspace
from tests.api.test_answers import assert_problem, forward, issue, verify

KEY_FIELDS = {
    "id",
    "workspace_id",
    "name",
    "status",
    "scopes",
    "created_at",
    "expires_at",
    "rotated_at",
    "previous_secret_valid_until",
    "revoked_at",
    "rotation_due",
}
WORKSPACE_FIELDS = {"id", "name", "plan", "requests_per_minute", "requests_per_day", "live_keys"}


def test_operator_creates_a_workspace_with_its_first_admin_key(server: Server):
    created = create_workspace(server, "starter")

    assert created["workspace"].keys() >= WORKSPACE_FIELDS
    assert created["workspace"]["requests_per_minute"] == 60
    assert created["workspace"]["live_keys"] == 1
    assert created["admin_key"]["key"].keys() >= KEY_FIELDS
    assert created["admin_key"]["key"]["scopes"] == ["admin"]
    assert created["admin_key"]["secret"].startswith("kl_")


def test_workspace_endpoints_need_the_operator_token(server: Server):
    with server.client("klop_wrong") as client:
        refused = client.post("/v1/workspaces", json={"name": "x", "plan": "starter"})
    created = create_workspace(server)
    with server.client(created["admin_key"]["secret"]) as client:
        admin_tries_plan = client.put(f"/v1/workspaces/{created['workspace']['id']}/plan", json={"plan": "pro"})

    assert_problem(refused, 401)
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(admin_tries_plan, 401)


def test_plan_changes_apply_to_the_next_request(server: Server):
    created = create_workspace(server, "starter")
    ws = created["workspace"]["id"]
    key = issue(server, created["admin_key"], ["read:nodes"])
    assert verify(server, key["secret"])["ratelimit"]["limit"] == 60

    with server.client(OPERATOR_TOKEN) as client:
        changed = client.put(
            f"/v1/workspaces/{ws}/plan",
            json={"plan": "enterprise", "requests_per_minute": 1000, "requests_per_day": 500_000},
        )
        bad = client.put(f"/v1/workspaces/{ws}/plan", json={"plan": "pro", "requests_per_minute": 5})

    assert changed.status_code == 200, changed.text
    assert changed.json()["requests_per_minute"] == 1000
    assert verify(server, key["secret"])["ratelimit"]["limit"] == 1000
    assert_problem(bad, 422)


def test_admin_reads_the_workspace_and_its_keys(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    reader = issue(server, admin, ["read:nodes"])
    revoked = issue(server, admin, ["read:edges"])

    with server.client(admin["secret"]) as client:
        client.post(f"/v1/workspaces/{ws}/keys/{revoked['key']['id']}/revoke", json={"reason": "test"})
        workspace = client.get(f"/v1/workspaces/{ws}").json()
        everything = client.get(f"/v1/workspaces/{ws}/keys").json()["items"]
        active = client.get(f"/v1/workspaces/{ws}/keys", params={"status": "active"}).json()["items"]
        gone = client.get(f"/v1/workspaces/{ws}/keys", params={"status": "revoked"}).json()["items"]
        due = client.get(f"/v1/workspaces/{ws}/keys", params={"rotation_due": "true"}).json()["items"]
        one = client.get(f"/v1/workspaces/{ws}/keys/{reader['key']['id']}").json()
        missing = client.get(f"/v1/workspaces/{ws}/keys/00000000-0000-4000-8000-000000000000")

    assert workspace.keys() >= WORKSPACE_FIELDS and workspace["live_keys"] == 2
    assert {k["id"] for k in everything} == {admin["key"]["id"], reader["key"]["id"], revoked["key"]["id"]}
    assert {k["id"] for k in active} == {admin["key"]["id"], reader["key"]["id"]}
    assert [k["id"] for k in gone] == [revoked["key"]["id"]]
    assert due == []
    assert one.keys() >= KEY_FIELDS and one["scopes"] == ["read:nodes"] and one["status"] == "active"
    assert_problem(missing, 404)


def test_scopes_are_granted_and_revoked_one_at_a_time(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"

    with server.client(admin["secret"]) as client:
        granted = client.post(f"{path}/scopes", json={"scopes": ["write:edges", "read:nodes"]})
        assert verify(server, key["secret"], "read:edges")["code"] == "VALID"
        revoked = client.delete(f"{path}/scopes/write:edges")
        bad = client.delete(f"{path}/scopes/write-edges")

    assert granted.status_code == 200 and granted.json()["scopes"] == ["read:nodes", "write:edges"]
    assert revoked.status_code == 200 and revoked.json()["scopes"] == ["read:nodes"]
    assert verify(server, key["secret"], "read:edges")["code"] == "INSUFFICIENT_SCOPE"
    assert_problem(bad, 422)


def test_rotation_returns_the_new_secret_and_when_the_old_one_stops(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])

    with server.client(admin["secret"]) as client:
        rotated = client.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/rotate", json={"grace_seconds": 600})
        default = client.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/rotate")

    first, second = rotated.json(), default.json()
    assert rotated.status_code == 200 and first["secret"] != key["secret"]
    assert first["key"]["previous_secret_valid_until"] is not None
    assert first["key"]["rotated_at"] is not None
    # The second rotation ended the first grace at once: the original secret no longer works.
    assert verify(server, key["secret"])["code"] == "NOT_FOUND"
    assert verify(server, first["secret"])["code"] == "VALID"
    assert verify(server, second["secret"])["code"] == "VALID"
    assert second["key"]["id"] == key["key"]["id"]


def test_revoked_is_final_over_http(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"

    with server.client(admin["secret"]) as client:
        client.post(f"{path}/revoke")
        responses = [
            client.post(f"{path}/scopes", json={"scopes": ["read:edges"]}),
            client.post(f"{path}/rotate"),
            client.post(f"{path}/revoke"),
        ]

    for response in responses:
        assert_problem(response, 409)


def test_the_fifty_first_live_key_is_refused(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    for _ in range(49):
        issue(server, admin, [])

    with server.client(admin["secret"]) as client:
        refused = client.post(f"/v1/workspaces/{created['workspace']['id']}/keys", json={"name": "x"})

    assert_problem(refused, 409)
    assert "50" in refused.json()["detail"]


def test_usage_counts_answers_per_key_and_endpoint(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    for _ in range(3):
        verify(server, key["secret"], "read:nodes", endpoint="GET /nodes")
    verify(server, key["secret"], "write:nodes", endpoint="POST /nodes")
    forward(server, key["secret"], "GET", "/nodes/7?secret=shh")

    with server.client(admin["secret"]) as client:
        body = {}
        for _ in range(50):  # usage is flushed about every second
            body = client.get(f"/v1/workspaces/{ws}/usage", params={"key": key["key"]["id"]}).json()
            if body["items"] and body["items"][0]["total"] == 5:
                break
            time.sleep(0.1)

    (usage,) = body["items"]
    assert usage["key_id"] == key["key"]["id"]
    assert usage["total"] == 5 and usage["successes"] == 4
    assert usage["success_rate"] == 0.8
    assert {"endpoint": "GET /nodes", "count": 3} in usage["top_endpoints"]
    assert {"endpoint": "GET /nodes/7", "count": 1} in usage["top_endpoints"]
    assert sum(p["requests"] for p in usage["per_minute"]) == 5
    assert sum(p["requests"] for p in usage["per_day"]) == 5


def test_health_metrics_and_openapi(server: Server):
    with server.client() as client:
        health = client.get("/healthz")
        metrics = client.get("/metrics")
        docs = client.get("/docs")
        openapi = client.get("/openapi.json")

    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "keyledger_verify_seconds_bucket" in metrics.text
    assert "keyledger_answers_total" in metrics.text
    assert "keyledger_projection_lag_events" in metrics.text
    assert docs.status_code == 200
    assert "/v1/verify" in openapi.json()["paths"]
