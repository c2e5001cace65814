"""SPEC 8.1 per-key limits: PUT/DELETE .../keys/{key}/limits, the `limits` shape, the lower limit enforced."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.server import OPERATOR_TOKEN, Server, create_workspace
from tests.api.test_answers import assert_problem, forward, issue, verify
from tests.timing import inside_one_minute


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    key: dict[str, Any] = create_workspace(server, "pro")["admin_key"]
    return key


def test_a_key_limited_below_its_plan_gets_the_lower_limit_until_returned_to_the_plan(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    inside_one_minute(20)
    with server.client(admin["secret"]) as client:
        limited = client.put(f"{path}/limits", json={"requests_per_minute": 3})
        again = client.put(f"{path}/limits", json={"requests_per_minute": 3})
        answers = [verify(server, key["secret"])["code"] for _ in range(4)]
        gateway = forward(server, key["secret"])
        cleared = client.delete(f"{path}/limits")
        after = verify(server, key["secret"])
        history = client.get(f"{path}/history").json()["items"]
        then = client.get(f"{path}/state", params={"at": history[1]["occurred_at"]}).json()
        audit = client.get(f"/v1/workspaces/{ws}/audit", params={"key": key["key"]["id"]}).json()["items"]

    assert key["key"]["limits"] == {"requests_per_minute": 300, "requests_per_day": 100_000, "source": "plan"}
    assert limited.status_code == 200
    assert limited.json()["limits"] == {"requests_per_minute": 3, "requests_per_day": 100_000, "source": "key"}
    assert again.status_code == 200
    assert answers == ["VALID"] * 3 + ["RATE_LIMITED"]
    assert gateway.status_code == 429 and gateway.headers["RateLimit-Policy"].startswith('"minute";q=3;w=60')
    assert cleared.json()["limits"]["source"] == "plan"
    assert after["code"] == "VALID" and after["ratelimit"]["limit"] in (300, 100_000)
    assert [e["type"] for e in history] == ["KeyIssued", "KeyLimitsSet", "KeyLimitsCleared"]
    assert history[1]["actor"] == admin["key"]["id"]
    assert history[1]["data"] == {"requests_per_minute": 3, "requests_per_day": None, "workspace_id": ws}
    assert then["key"]["limits"]["requests_per_minute"] == 3
    assert [e["type"] for e in audit][-2:] == ["KeyLimitsSet", "KeyLimitsCleared"]


def test_a_plan_lowered_below_a_keys_own_limit_wins(server: Server):
    created = create_workspace(server, "enterprise", requests_per_minute=1000, requests_per_day=5000)
    admin = created["admin_key"]
    ws = created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    inside_one_minute(20)
    with server.client(admin["secret"]) as client:
        client.put(f"{path}/limits", json={"requests_per_minute": 500, "requests_per_day": 4000})
        with server.client(OPERATOR_TOKEN) as operator:
            plan = {"plan": "enterprise", "requests_per_minute": 2, "requests_per_day": 3000}
            assert operator.put(f"/v1/workspaces/{ws}/plan", json=plan).status_code == 200
        shown = client.get(path).json()
        answers = [verify(server, key["secret"])["code"] for _ in range(3)]

    assert shown["limits"] == {"requests_per_minute": 2, "requests_per_day": 3000, "source": "key"}
    assert answers == ["VALID", "VALID", "RATE_LIMITED"]


BAD_LIMITS = [
    {},
    {"requests_per_minute": 0},
    {"requests_per_minute": 301},
    {"requests_per_day": 100_001},
    {"requests_per_day": -1},
    {"requests_per_minute": "5"},
    {"requests_per_minute": 1.5},
    {"requests_per_minute": None, "requests_per_day": None},
    {"per_minute": 5},
]


@pytest.mark.parametrize("body", BAD_LIMITS, ids=[str(b) for b in BAD_LIMITS])
def test_bad_limits_are_refused_with_422_and_change_nothing(server: Server, admin, body: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        refused = client.put(f"{path}/limits", json=body)
        history = client.get(f"{path}/history").json()["items"]

    assert_problem(refused, 422)
    assert [e["type"] for e in history] == ["KeyIssued"]


def test_limits_of_a_revoked_key_cannot_change(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        client.post(f"{path}/revoke")
        assert_problem(client.put(f"{path}/limits", json={"requests_per_minute": 1}), 409)
        assert_problem(client.delete(f"{path}/limits"), 409)
