"""Input no backend can store is refused at the boundary with 422, changes nothing, and never stops the
read models: after each, their lag returns to 0 and a restart succeeds (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.api.server import OPERATOR_TOKEN, Server, create_workspace


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    return create_workspace(server)


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def lag_returns_to_zero(client: httpx.Client, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ready = client.get("/readyz").json()
        if ready["checks"]["read_models"] == {"status": "ok", "lag": 0}:
            return
        assert time.monotonic() < deadline, ready
        time.sleep(0.1)


def test_unstorable_text_and_times_are_refused_and_the_read_models_keep_up(server: Server, admin: dict[str, Any]):
    ws = admin["workspace"]["id"]
    secret = admin["admin_key"]["secret"]
    key_id = admin["admin_key"]["key"]["id"]
    keys = f"/v1/workspaces/{ws}/keys"
    refused: list[tuple[str, str, str, dict[str, Any], str]] = [
        (
            "POST",
            keys,
            secret,
            {"name": "far", "scopes": [], "expires_at": "9999-12-31T23:59:59-14:00"},
            "invalid-expiry",
        ),
        ("POST", keys, secret, {"name": "nul\u0000name", "scopes": []}, "invalid-name"),
        ("POST", keys, secret, {"name": "lone\ud800surrogate", "scopes": []}, "invalid-name"),
        ("POST", keys, secret, {"name": "typo", "scopes": [], "expire_at": "2030-01-01T00:00:00Z"}, "invalid-request"),
        (
            "POST",
            "/v1/verify",
            secret,
            {"key": secret, "scope": "read:nodes", "endpoint": "GET /x\u0000y"},
            "invalid-request",
        ),
        ("POST", f"{keys}/{key_id}/revoke", secret, {"reason": "leak\u0000ed"}, "invalid-reason"),
        ("POST", "/v1/workspaces", OPERATOR_TOKEN, {"name": "nul\u0000ws", "plan": "starter"}, "invalid-name"),
    ]
    with server.client() as client:  # one connection throughout: no answer may drop it
        for method, path, token, body, kind in refused:
            # Sent as JSON text, so that a lone surrogate travels as its \\ud800 escape.
            content = json.dumps(body).encode()  # ensure_ascii: escapes, never raw surrogates
            response = client.request(
                method,
                path,
                content=content,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert problem_of(response, 422)["type"] == f"/problems/{kind}", (path, body)
            assert "connection" not in response.headers
        me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"})
        listed = client.get(keys, headers={"Authorization": f"Bearer {secret}"})
        lag_returns_to_zero(client)

    assert me.status_code == 200 and me.json()["key"]["status"] == "active"  # the revoke changed nothing
    assert [k["name"] for k in listed.json()["items"]] == ["admin"]  # nothing was issued


@pytest.mark.parametrize(
    "query",
    [
        {"since": "2026-01-01T00:00:00"},  # no offset
        {"since": "2026-01-01"},  # a date alone
        {"until": "9999-12-31T23:59:59-14:00"},  # past year 9999 in UTC
        {"until": "0001-01-01T00:00:00Z"},
        {"cursor": "\u00b2"},  # a digit to isdigit(), not to int()
    ],
)
def test_malformed_times_and_cursors_get_422_not_500(server: Server, admin: dict[str, Any], query: dict[str, str]):
    ws = admin["workspace"]["id"]
    with server.client(admin["admin_key"]["secret"]) as client:
        audit = client.get(f"/v1/workspaces/{ws}/audit", params=query)
        usage = client.get(f"/v1/workspaces/{ws}/usage", params={k: v for k, v in query.items() if k != "cursor"})
        after = client.get(f"/v1/workspaces/{ws}")  # the same connection still serves

    assert problem_of(audit, 422)["status"] == 422
    if "cursor" not in query:
        assert problem_of(usage, 422)["status"] == 422
    assert after.status_code == 200


def test_an_unknown_plan_is_not_echoed_in_full(server: Server):
    with server.client(OPERATOR_TOKEN) as client:
        response = client.post("/v1/workspaces", json={"name": "big", "plan": "x" * 100_000})

    assert len(problem_of(response, 422)["detail"]) < 300


def test_the_service_restarts_after_refused_input(server: Server, admin: dict[str, Any]):
    server.stop()
    server.start()

    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        lag_returns_to_zero(client)
