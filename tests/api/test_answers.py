"""SPEC section 4: every answer to a presented key, via /v1/verify, /v1/auth and management endpoints."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.server import Server, create_workspace
from tests.timing import inside_one_minute

PROBLEM = "application/problem+json"
# Eleven distinct scopes of the test servers' catalog (see conftest.RESOURCES).
ELEVEN_SCOPES = [
    "read:nodes",
    "write:nodes",
    "read:edges",
    "write:edges",
    "read:livedata",
    "write:livedata",
    "read:events",
    "write:events",
    "admin",
    "read:datasets",
    "write:datasets",
]


def issue(server: Server, admin: dict[str, Any], scopes: list[str], **extra: Any) -> dict[str, Any]:
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        response = client.post(f"/v1/workspaces/{ws}/keys", json={"name": "k", "scopes": scopes, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def verify(server: Server, secret: str, scope: str = "read:nodes", endpoint: str | None = None) -> dict[str, Any]:
    with server.client() as client:
        response = client.post("/v1/verify", json={"key": secret, "scope": scope, "endpoint": endpoint})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def forward(server: Server, secret: str | None, method: str = "GET", uri: str = "/nodes/1") -> httpx.Response:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}".strip()
    with server.client() as client:
        return client.get("/v1/auth", headers=headers)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


@pytest.fixture(scope="module")
def workspace(server: Server) -> dict[str, Any]:
    return create_workspace(server, "pro")


@pytest.fixture(scope="module")
def admin(workspace: dict[str, Any]) -> dict[str, Any]:
    admin: dict[str, Any] = workspace["admin_key"]
    return admin


def test_an_allowed_key_is_valid_everywhere(server: Server, admin):
    key = issue(server, admin, ["write:nodes"])

    body = verify(server, key["secret"], "read:nodes")
    response = forward(server, key["secret"], "POST", "/nodes/42?x=1")

    assert body["valid"] is True and body["code"] == "VALID"
    assert body["key_id"] == key["key"]["id"] and body["workspace_id"] == key["key"]["workspace_id"]
    assert body["scopes"] == ["write:nodes"]
    assert body["ratelimit"]["limit"] == 300 and 0 <= body["ratelimit"]["remaining"] < 300
    assert response.status_code == 204
    assert response.headers["RateLimit-Policy"] == '"minute";q=300;w=60, "day";q=100000;w=86400'
    assert '"minute";r=' in response.headers["RateLimit"]


@pytest.mark.parametrize(
    "presented",
    [None, "", "Bearer-less", "kl_short", "kl_" + "A" * 71],
    ids=["missing", "empty", "malformed", "truncated", "bad-checksum"],
)
def test_missing_malformed_or_mistyped_keys_are_not_found(server: Server, presented):
    response = forward(server, presented)

    body = assert_problem(response, 401)
    assert body["code"] == "NOT_FOUND"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    if presented is not None:
        answer = verify(server, presented)
        assert answer == {
            "valid": False,
            "code": "NOT_FOUND",
            "key_id": None,
            "workspace_id": None,
            "scopes": None,
            "ratelimit": None,
            "name": None,
            "owner_id": None,
            "meta": None,
            "credits": None,
        }


def test_a_mistyped_real_key_and_an_unknown_key_are_not_found(server: Server, admin):
    key = issue(server, admin, ["read:nodes"])
    secret = key["secret"]
    mistyped = secret[:20] + ("B" if secret[20] != "B" else "C") + secret[21:]
    other = issue(server, admin, ["read:nodes"])["secret"]
    forged = secret[:25] + other[25:]  # right key id, wrong secret: the checksum catches it first

    for presented in (mistyped, forged):
        assert verify(server, presented)["code"] == "NOT_FOUND"
        assert_problem(forward(server, presented), 401)


def test_a_revoked_key_is_refused_as_revoked(server: Server, admin):
    key = issue(server, admin, ["read:nodes"])
    with server.client(admin["secret"]) as client:
        revoke = client.post(f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{key['key']['id']}/revoke")
    assert revoke.status_code == 200 and revoke.json()["status"] == "revoked"

    assert verify(server, key["secret"])["code"] == "REVOKED"
    assert assert_problem(forward(server, key["secret"]), 401)["code"] == "REVOKED"


def test_an_expired_key_and_a_previous_secret_past_grace_are_expired(server: Server, admin):
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = issue(server, admin, ["read:nodes"], expires_at=soon)
    rotating = issue(server, admin, ["read:nodes"])
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        rotated = client.post(f"/v1/workspaces/{ws}/keys/{rotating['key']['id']}/rotate", json={"grace_seconds": 0})
    assert rotated.status_code == 200

    assert verify(server, rotating["secret"])["code"] == "EXPIRED"
    assert verify(server, rotated.json()["secret"])["code"] == "VALID"
    assert verify(server, expiring["secret"])["code"] == "VALID"
    time.sleep(2.1)
    assert verify(server, expiring["secret"])["code"] == "EXPIRED"
    assert assert_problem(forward(server, expiring["secret"]), 401)["code"] == "EXPIRED"


def test_a_key_without_the_scope_gets_403_naming_it(server: Server, admin):
    key = issue(server, admin, ["read:nodes"])

    answer = verify(server, key["secret"], "write:nodes")
    response = forward(server, key["secret"], "DELETE", "/nodes/1")

    assert answer["code"] == "INSUFFICIENT_SCOPE" and answer["valid"] is False
    assert assert_problem(response, 403)["code"] == "INSUFFICIENT_SCOPE"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="write:nodes"'


def test_over_the_minute_limit_gets_429_with_retry_after(server: Server):
    workspace = create_workspace(server, "enterprise", requests_per_minute=3, requests_per_day=100)
    key = issue(server, workspace["admin_key"], ["read:nodes"])
    inside_one_minute()

    answers = [verify(server, key["secret"]) for _ in range(3)]
    refused = forward(server, key["secret"])
    over = verify(server, key["secret"])

    assert [a["code"] for a in answers] == ["VALID"] * 3
    assert [a["ratelimit"]["remaining"] for a in answers] == [2, 1, 0]
    assert assert_problem(refused, 429)["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"minute";q=3;w=60, "day";q=100;w=86400'
    assert over["code"] == "RATE_LIMITED" and over["ratelimit"]["remaining"] == 0


def windows(response: httpx.Response) -> dict[str, int]:
    """Remaining requests per window, from the RateLimit header."""
    remaining = {}
    for item in response.headers["RateLimit"].split(","):
        name, *params = item.strip().split(";")
        remaining[name.strip('"')] = int(dict(p.split("=") for p in params)["r"])
    return remaining


def test_refused_requests_consume_no_quota(server: Server):
    # The day-limit case (which must also leave the minute untouched) is in tests/unit/test_quotas.py.
    per_minute, per_day, exhausted = 2, 10, "minute"
    workspace = create_workspace(server, "enterprise", requests_per_minute=per_minute, requests_per_day=per_day)
    key = issue(server, workspace["admin_key"], ["read:nodes"])
    inside_one_minute()
    allowed = min(per_minute, per_day)
    for _ in range(allowed):
        assert forward(server, key["secret"]).status_code == 204

    refusals = [forward(server, key["secret"]) for _ in range(4)]

    assert [r.status_code for r in refusals] == [429] * 4
    expected = {"minute": per_minute - allowed, "day": per_day - allowed}
    assert expected[exhausted] == 0
    assert all(windows(r) == expected for r in refusals)
    assert verify(server, key["secret"], "write:nodes")["code"] == "INSUFFICIENT_SCOPE"
    assert windows(refusals[-1]) == windows(forward(server, key["secret"]))


def test_management_endpoints_refuse_keys_like_the_answers_say(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    reader = issue(server, admin, ["read:nodes"])
    other_workspace = create_workspace(server)

    with server.client() as anonymous:
        missing = anonymous.get(f"/v1/workspaces/{ws}/keys")
    with server.client(reader["secret"]) as client:
        not_admin = client.get(f"/v1/workspaces/{ws}/keys")
    with server.client(other_workspace["admin_key"]["secret"]) as client:
        foreign = client.get(f"/v1/workspaces/{ws}/keys")

    assert assert_problem(missing, 401)["code"] == "NOT_FOUND"
    assert missing.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert not_admin.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope", scope="admin"'
    assert_problem(not_admin, 403)
    assert_problem(foreign, 404)
    assert ws not in foreign.text or "not found" in foreign.json()["detail"]


def test_malformed_input_gets_a_clear_problem_never_500(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        cases = [
            client.post("/v1/verify", content=b"{not json", headers={"content-type": "application/json"}),
            client.post("/v1/verify", json={"key": "kl_x"}),
            client.post("/v1/verify", json={"key": admin["secret"], "scope": "read-nodes"}),
            client.post(f"/v1/workspaces/{ws}/keys", json={"name": "x", "scopes": ["read:widgets"]}),
            client.post(f"/v1/workspaces/{ws}/keys", json={"name": "x", "scopes": ELEVEN_SCOPES}),
            client.post(f"/v1/workspaces/{ws}/keys", json={"name": "", "scopes": []}),
            client.post(f"/v1/workspaces/{ws}/keys", json={"name": "x", "expires_at": "yesterday"}),
            client.post(f"/v1/workspaces/{ws}/keys/{admin['key']['id']}/rotate", json={"grace_seconds": 86_401}),
            client.get("/v1/workspaces/not-a-uuid/keys"),
            client.get(f"/v1/workspaces/{ws}/keys", params={"status": "sleeping"}),
        ]
    for response in cases:
        assert response.status_code in (400, 422), response.text
        body = assert_problem(response, response.status_code)
        assert admin["secret"] not in response.text
        assert body["detail"]


def test_insufficient_scope_status_is_configurable_to_401(backend, tmp_path):
    server = Server(
        backend.settings,
        tmp_path / "server.log",
        backend.redis_url,
        {"KEYLEDGER_INSUFFICIENT_SCOPE_STATUS": "401"},
    ).start()
    try:
        admin = create_workspace(server)["admin_key"]
        key = issue(server, admin, ["read:nodes"])

        response = forward(server, key["secret"], "POST", "/nodes")

        assert assert_problem(response, 401)["code"] == "INSUFFICIENT_SCOPE"
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "uri",
    ["/nodes/../events", "/nodes/./../events", "/nodes/%2e%2e/events", "/nodes/%2E%2E/events", "/nodes/..;/events"],
)
def test_forward_auth_judges_the_path_the_backend_will_serve(server: Server, admin, uri: str):
    reader = issue(server, admin, ["read:nodes"])

    response = forward(server, reader["secret"], "GET", uri)

    assert_problem(response, 403)
    assert response.json()["scope"] == "read:events"


@pytest.mark.parametrize(
    "uri", ["/nodes/..%2Fevents", "/nodes/..%2fevents", "/nodes/..%5Cevents", "/nodes\\..\\events"]
)
def test_forward_auth_refuses_an_encoded_separator_that_would_change_the_resource(server: Server, admin, uri: str):
    reader = issue(server, admin, ["read:nodes", "read:events"])

    response = forward(server, reader["secret"], "GET", uri)

    assert assert_problem(response, 400)["type"] == "/problems/ambiguous-path"


def test_forward_auth_allows_normalised_paths_within_the_resource(server: Server, admin):
    reader = issue(server, admin, ["read:nodes"])

    assert forward(server, reader["secret"], "GET", "/nodes/a/../b?x=/../events").status_code == 204
    assert forward(server, reader["secret"], "GET", "/nodes/a%2Fb").status_code == 204  # stays in /nodes
    assert forward(server, reader["secret"], "GET", "/%6Eodes/7").status_code == 204  # %6E is n


def test_the_last_admin_key_cannot_be_revoked_or_lose_admin(server: Server):
    created = create_workspace(server)
    ws, admin = created["workspace"]["id"], created["admin_key"]
    with server.client(admin["secret"]) as client:
        revoke = client.post(f"/v1/workspaces/{ws}/keys/{admin['key']['id']}/revoke")
        demote = client.delete(f"/v1/workspaces/{ws}/keys/{admin['key']['id']}/scopes/admin")
        me = client.get("/v1/me")

    assert assert_problem(revoke, 409)["type"] == "/problems/last-admin-key"
    assert assert_problem(demote, 409)["type"] == "/problems/last-admin-key"
    assert me.json()["key"]["status"] == "active" and me.json()["key"]["scopes"] == ["admin"]


def forged(key_id: str | None = None) -> str:
    """A secret in keyledger's format with a valid checksum, naming a key that does not exist."""
    from uuid import UUID, uuid4

    from domain.credentials import generate_secret

    return generate_secret(UUID(key_id) if key_id else uuid4())


def test_guessing_keys_is_throttled_per_address_while_known_keys_still_verify(backend, tmp_path):
    limited = Server(
        backend.settings, tmp_path / "server.log", backend.redis_url, {"KEYLEDGER_NOT_FOUND_PER_MINUTE": "5"}
    ).start()
    try:
        created = create_workspace(limited)
        real = created["admin_key"]["secret"]
        assert verify(limited, real, "admin")["code"] == "VALID"  # cached from now on
        with limited.client() as client:
            guesses = [client.post("/v1/verify", json={"key": forged(), "scope": "read:nodes"}) for _ in range(5)]
            throttled = client.post("/v1/verify", json={"key": forged(), "scope": "read:nodes"})
            known = client.post("/v1/verify", json={"key": real, "scope": "admin"})
            ws = created["workspace"]["id"]
            newer = client.post(
                f"/v1/workspaces/{ws}/keys",
                json={"name": "n", "scopes": []},
                headers={"Authorization": f"Bearer {real}"},
            ).json()["secret"]
            fresh = client.post("/v1/verify", json={"key": newer, "scope": "admin"})
            gateway = client.get(
                "/v1/auth",
                headers={
                    "Authorization": f"Bearer {forged()}",
                    "X-Forwarded-Method": "GET",
                    "X-Forwarded-Uri": "/nodes",
                },
            )
    finally:
        limited.stop()

    assert [g.json()["code"] for g in guesses] == ["NOT_FOUND"] * 5
    assert assert_problem(throttled, 429)["type"] == "/problems/too-many-unknown-keys"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert known.json()["code"] == "VALID"
    assert fresh.json()["code"] == "INSUFFICIENT_SCOPE"  # a real key issued since: answered, not throttled
    assert assert_problem(gateway, 429)["type"] == "/problems/too-many-unknown-keys"


def test_a_suspended_key_is_refused_as_suspended_until_resumed(server: Server, admin):
    key = issue(server, admin, ["read:nodes"])
    ws, key_id = admin["key"]["workspace_id"], key["key"]["id"]
    with server.client(admin["secret"]) as client:
        suspended = client.post(f"/v1/workspaces/{ws}/keys/{key_id}/suspend", json={"reason": "leak?"})
        again = client.post(f"/v1/workspaces/{ws}/keys/{key_id}/suspend")
        listed = client.get(f"/v1/workspaces/{ws}/keys", params={"status": "suspended"})
        gateway = forward(server, key["secret"])
        answer = verify(server, key["secret"])
        history = client.get(f"/v1/workspaces/{ws}/keys/{key_id}/history")
        resumed = client.post(f"/v1/workspaces/{ws}/keys/{key_id}/resume")
        after = verify(server, key["secret"])
        client.post(f"/v1/workspaces/{ws}/keys/{key_id}/revoke")
        on_revoked = client.post(f"/v1/workspaces/{ws}/keys/{key_id}/resume")

    assert suspended.json()["status"] == "suspended" and suspended.json()["suspended_at"] is not None
    assert again.status_code == 200  # already suspended: nothing recorded
    assert [k["id"] for k in listed.json()["items"]] == [key_id]
    problem = assert_problem(gateway, 401)
    assert problem["code"] == "SUSPENDED" and gateway.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer["code"] == "SUSPENDED" and answer["valid"] is False
    types = [e["type"] for e in history.json()["items"]]
    assert types.count("KeySuspended") == 1 and "KeyResumed" not in types
    assert history.json()["items"][-1]["data"]["reason"] == "leak?"
    assert resumed.json()["status"] == "active" and after["code"] == "VALID"
    assert assert_problem(on_revoked, 409)["status"] == 409


def test_the_last_admin_key_cannot_be_suspended(server: Server):
    created = create_workspace(server)
    ws, admin = created["workspace"]["id"], created["admin_key"]
    with server.client(admin["secret"]) as client:
        response = client.post(f"/v1/workspaces/{ws}/keys/{admin['key']['id']}/suspend")

    assert assert_problem(response, 409)["type"] == "/problems/last-admin-key"


def test_put_scopes_sets_the_exact_granted_set_in_one_change(server: Server, admin):
    key = issue(server, admin, ["write:nodes", "read:edges"])
    ws, key_id = admin["key"]["workspace_id"], key["key"]["id"]
    with server.client(admin["secret"]) as client:
        exact = client.put(f"/v1/workspaces/{ws}/keys/{key_id}/scopes", json={"scopes": ["read:nodes"]})
        bad = client.put(f"/v1/workspaces/{ws}/keys/{key_id}/scopes", json={"scopes": ["read:nope"]})
        history = client.get(f"/v1/workspaces/{ws}/keys/{key_id}/history").json()["items"]

    assert exact.status_code == 200 and exact.json()["scopes"] == ["read:nodes"]
    assert assert_problem(bad, 422)["status"] == 422
    assert [e["type"] for e in history] == ["KeyIssued", "ScopesSet"]
    assert verify(server, key["secret"], "write:nodes")["code"] == "INSUFFICIENT_SCOPE"
    assert verify(server, key["secret"], "read:nodes")["code"] == "VALID"
