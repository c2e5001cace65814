"""The auditor's HTTP endpoints: history, state at a moment, the audit log with its cursor, access queries."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue


def test_history_lists_a_keys_events_oldest_first_without_secrets(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        client.post(f"{path}/scopes", json={"scopes": ["write:edges"]})
        client.delete(f"{path}/scopes/write:edges")
        rotated = client.post(f"{path}/rotate", json={"grace_seconds": 10}).json()
        client.post(f"{path}/revoke", json={"reason": "audit test"})
        history = client.get(f"{path}/history")

    items = history.json()["items"]
    assert [i["type"] for i in items] == ["KeyIssued", "ScopesGranted", "ScopesRevoked", "KeyRotated", "KeyRevoked"]
    assert [i["position"] for i in items] == sorted(i["position"] for i in items)
    assert {i["actor"] for i in items} == {admin["key"]["id"]}
    assert all(i["key_id"] == key["key"]["id"] for i in items)
    for secret in (key["secret"], rotated["secret"]):
        assert secret not in history.text
    assert "digest" not in history.text


def test_state_at_a_moment_is_rebuilt_from_events(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    before_issue = datetime.now(UTC) - timedelta(seconds=5)
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    with server.client(admin["secret"]) as client:
        client.post(f"{path}/scopes", json={"scopes": ["write:edges"]})
        client.post(f"{path}/revoke")
        then = client.get(f"{path}/state", params={"at": between.isoformat()})
        now = client.get(f"{path}/state", params={"at": datetime.now(UTC).isoformat()})
        too_early = client.get(f"{path}/state", params={"at": before_issue.isoformat()})
        naive = client.get(f"{path}/state", params={"at": "2027-01-01T00:00:00"})

    assert then.status_code == 200, then.text
    assert then.json()["key"]["status"] == "active" and then.json()["key"]["scopes"] == ["read:nodes"]
    assert len(then.json()["valid_secrets"]) == 1 and then.json()["valid_secrets"][0].startswith("fp_")
    assert now.json()["key"]["status"] == "revoked" and now.json()["valid_secrets"] == []
    assert now.json()["key"]["scopes"] == ["read:nodes", "write:edges"]
    assert "issued" in assert_problem(too_early, 404)["detail"]
    assert naive.status_code == 422


def test_audit_pages_return_every_entry_once_while_commands_append(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    stop = threading.Event()
    issued: list[str] = []

    def writer() -> None:
        while not stop.is_set() and len(issued) < 15:
            issued.append(issue(server, admin, ["read:nodes"])["key"]["id"])

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[dict[str, Any]] = []
    cursor = None
    with server.client(admin["secret"]) as client:
        for _ in range(200):
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/v1/workspaces/{ws}/audit", params=params).json()
            seen.extend(page["items"])
            cursor = page["next_cursor"] or cursor
            if page["next_cursor"] is None:  # caught up with the log for now
                if not thread.is_alive():
                    break
                time.sleep(0.02)
        stop.set()
        thread.join()
        rest = client.get(
            f"/v1/workspaces/{ws}/audit", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
        )
        seen.extend(rest.json()["items"])
        everything = client.get(f"/v1/workspaces/{ws}/audit", params={"limit": 1000}).json()["items"]

    positions = [e["position"] for e in seen]
    assert len(positions) == len(set(positions)), "an entry was returned twice"
    assert positions == sorted(positions)
    assert positions == [e["position"] for e in everything]
    issued_in_log = [e["key_id"] for e in everything if e["type"] == "KeyIssued"]
    assert set(issued) <= set(issued_in_log)


def test_audit_filters_by_key_type_and_time(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    a = issue(server, admin, ["read:nodes"])
    issue(server, admin, ["read:edges"])
    with server.client(admin["secret"]) as client:
        client.post(f"/v1/workspaces/{ws}/keys/{a['key']['id']}/revoke")
        by_key = client.get(f"/v1/workspaces/{ws}/audit", params={"key": a["key"]["id"]}).json()["items"]
        by_type = client.get(f"/v1/workspaces/{ws}/audit", params={"type": "KeyRevoked"}).json()["items"]
        future = client.get(f"/v1/workspaces/{ws}/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["items"]
        bad_cursor = client.get(f"/v1/workspaces/{ws}/audit", params={"cursor": "abc"})

    # The workspace records the key taking and freeing a slot: those entries name the key too.
    assert [e["type"] for e in by_key] == ["KeySlotTaken", "KeyIssued", "KeyRevoked", "KeySlotReleased"]
    assert [e["key_id"] for e in by_type] == [a["key"]["id"]]
    assert future == []
    assert_problem(bad_cursor, 422)


def test_audit_endpoints_need_read_events_and_admin_qualifies(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    auditor = issue(server, admin, ["read:events"])
    reader = issue(server, admin, ["read:nodes"])

    with server.client(auditor["secret"]) as client:
        allowed = client.get(f"/v1/workspaces/{ws}/audit")
        not_admin = client.get(f"/v1/workspaces/{ws}/keys")
    with server.client(reader["secret"]) as client:
        refused = client.get(f"/v1/workspaces/{ws}/audit")
    with server.client(admin["secret"]) as client:
        as_admin = client.get(f"/v1/workspaces/{ws}/audit")

    assert allowed.status_code == 200 and as_admin.status_code == 200
    assert_problem(not_admin, 403)
    assert refused.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="read:events"'


def test_access_query_names_the_keys_that_held_a_scope_at_a_moment(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    writer = issue(server, admin, ["write:nodes"])
    issue(server, admin, ["read:edges"])
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    with server.client(admin["secret"]) as client:
        client.post(f"/v1/workspaces/{ws}/keys/{writer['key']['id']}/revoke")
        then = client.get(f"/v1/workspaces/{ws}/audit/access", params={"scope": "read:nodes", "at": moment.isoformat()})
        now = client.get(
            f"/v1/workspaces/{ws}/audit/access", params={"scope": "read:nodes", "at": datetime.now(UTC).isoformat()}
        )
        bad = client.get(f"/v1/workspaces/{ws}/audit/access", params={"scope": "read-nodes", "at": moment.isoformat()})

    assert then.status_code == 200, then.text
    assert {i["key_id"] for i in then.json()["items"]} == {writer["key"]["id"], admin["key"]["id"]}
    assert {i["key_id"] for i in now.json()["items"]} == {admin["key"]["id"]}
    assert_problem(bad, 422)
