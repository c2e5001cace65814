"""SPEC 8.1 credits: each allowed answer spends one; USAGE_EXCEEDED (429) at zero; PUT .../credits; refills."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Backend
from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, forward, issue, verify
from tests.timing import inside_one_minute


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    key: dict[str, Any] = create_workspace(server, "pro")["admin_key"]
    return key


def test_a_key_spends_its_credits_then_is_refused_as_usage_exceeded(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"], credits={"remaining": 3})
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"

    answers = [verify(server, key["secret"]) for _ in range(3)]
    refused = verify(server, key["secret"])
    refused_scope = verify(server, key["secret"], "write:nodes")  # refused by a key rule: spends nothing either
    gateway = forward(server, key["secret"])
    with server.client(admin["secret"]) as client:
        shown = client.get(path).json()
        listed = client.get(f"/v1/workspaces/{ws}/keys").json()["items"]
        history = client.get(f"{path}/history").json()["items"]
    with server.client(key["secret"]) as client:
        me = client.get("/v1/me").json()["key"]  # management answers spend nothing and show what remains

    assert key["key"]["credits"] == {"remaining": 3, "refill": None}
    assert me["credits"] == {"remaining": 0, "refill": None}
    assert [(a["code"], a["credits"]) for a in answers] == [("VALID", {"remaining": n}) for n in (2, 1, 0)]
    assert refused["code"] == "USAGE_EXCEEDED" and refused["valid"] is False and refused["credits"] == {"remaining": 0}
    assert refused_scope["code"] == "INSUFFICIENT_SCOPE"
    problem = assert_problem(gateway, 429)
    assert problem["code"] == "USAGE_EXCEEDED" and "Retry-After" not in gateway.headers  # no refill is due
    assert shown["credits"] == {"remaining": 0, "refill": None}
    assert next(k for k in listed if k["id"] == key["key"]["id"])["credits"]["remaining"] == 0
    assert history[0]["data"]["credits_remaining"] == 3
    assert verify(server, admin["secret"], "admin")["credits"] is None  # not usage-limited


def test_setting_credits_starts_a_fresh_count_and_a_due_refill_gives_retry_after(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    assert verify(server, key["secret"])["credits"] is None
    with server.client(admin["secret"]) as client:
        first = client.put(f"{path}/credits", json={"remaining": 1})
        spent = [verify(server, key["secret"])["code"] for _ in range(2)]
        second = client.put(f"{path}/credits", json={"remaining": 2, "refill": {"amount": 5, "interval": "day"}})
        spent += [verify(server, key["secret"])["code"] for _ in range(3)]
        gateway = forward(server, key["secret"])
        history = client.get(f"{path}/history").json()["items"]
        then = client.get(f"{path}/state", params={"at": history[1]["occurred_at"]}).json()
        audit = client.get(f"/v1/workspaces/{ws}/audit", params={"type": "CreditsSet"}).json()["items"]

    assert first.status_code == 200 and first.json()["credits"] == {"remaining": 1, "refill": None}
    assert second.json()["credits"] == {"remaining": 2, "refill": {"amount": 5, "interval": "day"}}
    assert spent == ["VALID", "USAGE_EXCEEDED", "VALID", "VALID", "USAGE_EXCEEDED"]
    assert_problem(gateway, 429)
    assert 1 <= int(gateway.headers["Retry-After"]) <= 86_400  # until the next UTC day's refill
    assert [e["type"] for e in history] == ["KeyIssued", "CreditsSet", "CreditsSet"]
    assert (
        history[2]["data"]
        == {
            "remaining": 2,
            "refill_amount": 5,
            "refill_interval": "day",
            "workspace_id": ws,
        }
        and history[2]["actor"] == admin["key"]["id"]
    )
    assert then["key"]["credits"]["refill"] is None
    assert len([e for e in audit if e["key_id"] == key["key"]["id"]]) == 2


def test_an_answer_over_the_rate_limit_spends_no_credit(server: Server):
    created = create_workspace(server, "enterprise", requests_per_minute=1, requests_per_day=100)
    key = issue(server, created["admin_key"], ["read:nodes"], credits={"remaining": 5})
    inside_one_minute(10)

    answers = [verify(server, key["secret"]) for _ in range(3)]

    assert [(a["code"], a["credits"]["remaining"]) for a in answers] == [
        ("VALID", 4),
        ("RATE_LIMITED", 4),
        ("RATE_LIMITED", 4),
    ]


BAD_CREDITS = [
    {"remaining": -1},
    {"remaining": "5"},
    {"remaining": 1.5},
    {},
    {"remaining": 5, "refill": {"amount": 5, "interval": "week"}},
    {"remaining": 5, "refill": {"amount": 0, "interval": "day"}},
    {"remaining": 5, "refill": {"amount": 5}},
    {"remaining": 5, "refill": {"interval": "month"}},
    {"remaining": 5, "rollover": True},
]


@pytest.mark.parametrize("body", BAD_CREDITS, ids=[str(b) for b in BAD_CREDITS])
def test_bad_credits_are_refused_with_422_and_change_nothing(server: Server, admin, body: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        refused = client.put(f"{path}/credits", json=body)
        issued = client.post(f"/v1/workspaces/{ws}/keys", json={"name": "n", "scopes": [], "credits": body})
        history = client.get(f"{path}/history").json()["items"]

    assert_problem(refused, 422)
    assert_problem(issued, 422)
    assert [e["type"] for e in history] == ["KeyIssued"]


def test_credits_of_a_revoked_key_cannot_change(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        client.post(f"{path}/revoke")
        assert_problem(client.put(f"{path}/credits", json={"remaining": 1}), 409)


def test_a_restart_keeps_what_remains(backend: Backend, tmp_path: Path):
    """In-process counters (SQLite) come back from the spends usage events recorded; Redis keeps its own."""
    server = Server(backend.settings, tmp_path / "server.log", backend.redis_url).start()
    admin = create_workspace(server, "pro")["admin_key"]
    key = issue(server, admin, ["read:nodes"], credits={"remaining": 10, "refill": {"amount": 20, "interval": "month"}})
    spent = [verify(server, key["secret"])["code"] for _ in range(4)]
    server.stop()  # flushes the usage (and the credits spent) it still holds

    restarted = Server(backend.settings, tmp_path / "restarted.log", backend.redis_url).start()
    try:
        after = verify(restarted, key["secret"])
    finally:
        restarted.stop()

    assert spent == ["VALID"] * 4
    assert after["code"] == "VALID" and after["credits"] == {"remaining": 5}
