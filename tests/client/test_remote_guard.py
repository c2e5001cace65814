"""`keyledger.guard.RemoteGuard` and `require_scope`: a FastAPI service in the test, guarded over HTTP by a real
`keyledger serve` (SQLite with in-process counters, PostgreSQL with Redis)."""

from __future__ import annotations

import hashlib
import re
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Response
from starlette.testclient import TestClient

from api.guard import KeyledgerGuard
from keyledger.guard import Guard, RemoteGuard, install, require_scope
from tests.api.server import OPERATOR_TOKEN, Server, create_workspace
from tests.api.test_answers import issue
from tests.timing import inside_one_minute

TRIALS = 50


def service() -> FastAPI:
    app = FastAPI()

    @app.get("/nodes/{node}")
    def read_node(node: str, response: Response) -> dict[str, str]:
        if node == "teapot":
            response.status_code = 418
        return {"node": node}

    @app.post("/nodes", status_code=201)
    def write_node() -> dict[str, str]:
        return {"written": "yes"}

    @app.get("/edges", dependencies=[Depends(require_scope("read:edges"))])
    def read_edges() -> dict[str, str]:
        return {"edges": "all"}

    return app


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def guarded(server: Server, request: pytest.FixtureRequest) -> Iterator[tuple[RemoteGuard, TestClient, dict[str, Any]]]:
    """A service behind a RemoteGuard following its workspace's stream (token: the admin key); long TTL."""
    admin = create_workspace(server, "pro")["admin_key"]
    options: dict[str, Any] = getattr(request, "param", {"token": "admin", "cache_ttl": 60.0})
    token = {"admin": admin["secret"], "operator": OPERATOR_TOKEN, None: None}[options.get("token")]
    app = service()
    guard = RemoteGuard(app, server.url, token=token, cache_ttl=options["cache_ttl"])
    install(app, guard)
    with TestClient(guard) as client:
        if token:
            client.get("/nodes/warm-up")  # starts following
            deadline = time.monotonic() + 10
            while not guard.following.is_set():
                assert time.monotonic() < deadline, "the guard did not connect to the change stream"
                time.sleep(0.01)
        yield guard, client, admin


def slot(secret: str, scope: str) -> tuple[str, str]:
    return hashlib.sha256(secret.encode()).hexdigest(), scope


def keyledger_auth(server: Server, secret: str | None, method: str, uri: str) -> httpx.Response:
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **(bearer(secret) if secret else {})}
    return httpx.get(f"{server.url}/v1/auth", headers=headers, timeout=10)


def usage_of(server: Server, admin: dict[str, Any], key_id: str, wanted: int) -> dict[str, Any]:
    ws = admin["key"]["workspace_id"]
    deadline = time.monotonic() + 8
    with server.client(admin["secret"]) as client:
        while True:
            items = client.get(f"/v1/workspaces/{ws}/usage", params={"key": key_id}).json()["items"]
            if (items and items[0]["total"] >= wanted) or time.monotonic() > deadline:
                return dict(items[0]) if items else {}
            time.sleep(0.1)


def test_allowed_requests_reach_the_service_and_its_real_statuses_are_usage(server: Server, guarded):
    _, client, admin = guarded
    key = issue(server, admin, ["read:nodes"])
    ok = client.get("/nodes/1", headers=bearer(key["secret"]))
    assert ok.status_code == 200 and ok.json() == {"node": "1"}
    assert "ratelimit" in ok.headers and "ratelimit-policy" in ok.headers
    assert client.get("/nodes/teapot", headers=bearer(key["secret"])).status_code == 418

    usage = usage_of(server, admin, key["key"]["id"], 2)
    assert usage["total"] == 2 and usage["successes"] == 1 and usage["client_errors"] == 1
    assert {e["endpoint"] for e in usage["top_endpoints"]} == {"GET /nodes/1", "GET /nodes/teapot"}


def _same_problem(guard_answer: httpx.Response, keyledger_answer: httpx.Response) -> None:
    assert guard_answer.status_code == keyledger_answer.status_code
    assert guard_answer.headers["content-type"] == keyledger_answer.headers["content-type"]
    ours, theirs = guard_answer.json(), keyledger_answer.json()
    seconds = re.compile(r"retry in \d+ s")
    assert seconds.sub("", ours.pop("detail")) == seconds.sub("", theirs.pop("detail"))
    assert ours == theirs
    for header in ("www-authenticate", "ratelimit-policy"):
        assert guard_answer.headers.get(header) == keyledger_answer.headers.get(header), header


@pytest.mark.parametrize("guarded", [{"token": None, "cache_ttl": 0.0}], indirect=True)
def test_refusals_are_keyledgers_own_answers(server: Server, guarded):
    _, client, admin = guarded
    key = issue(server, admin, ["read:nodes"])
    cases = [
        (None, "GET", "/nodes/1"),
        ("kl_not-a-key", "GET", "/nodes/1"),
        (key["secret"], "POST", "/nodes"),
    ]
    for secret, method, path in cases:
        ours = client.request(method, path, headers=bearer(secret) if secret else {})
        _same_problem(ours, keyledger_auth(server, secret, method, path))
    assert client.post("/nodes", headers=bearer(key["secret"])).json()["code"] == "INSUFFICIENT_SCOPE"

    limited = create_workspace(server, "enterprise", requests_per_minute=3, requests_per_day=100)["admin_key"]
    small = issue(server, limited, ["read:nodes"])
    inside_one_minute()
    answers = [client.get("/nodes/1", headers=bearer(small["secret"])) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # no cache: the quota is exact
    assert int(answers[-1].headers["retry-after"]) >= 1
    _same_problem(answers[-1], keyledger_auth(server, small["secret"], "GET", "/nodes/1"))

    metered = issue(server, admin, ["read:nodes"], credits={"remaining": 2})
    spent = [client.get("/nodes/1", headers=bearer(metered["secret"])) for _ in range(3)]
    assert [a.status_code for a in spent] == [200, 200, 429]
    assert spent[-1].json()["code"] == "USAGE_EXCEEDED" and "retry-after" not in spent[-1].headers  # no refill
    _same_problem(spent[-1], keyledger_auth(server, metered["secret"], "GET", "/nodes/1"))


@pytest.mark.slow
def test_a_revocation_reaches_the_guard_within_a_second_while_its_cache_holds_the_key(server: Server, guarded):
    guard, client, admin = guarded
    ws = admin["key"]["workspace_id"]
    delays = []
    keys: list[dict[str, Any]] = []
    with server.client(admin["secret"]) as keyledger:
        for trial in range(TRIALS):
            if not keys:  # issued ahead, so that their own issue events have passed the guard's stream
                keys = [issue(server, admin, ["read:nodes"]) for _ in range(min(10, TRIALS - trial))]
                time.sleep(0.5)
            key = keys.pop()
            assert client.get("/nodes/1", headers=bearer(key["secret"])).status_code == 200
            assert slot(key["secret"], "read:nodes") in guard.cache.entries  # cached for 60 s
            assert keyledger.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/revoke").status_code == 200
            revoked = time.monotonic()
            while slot(key["secret"], "read:nodes") in guard.cache.entries and time.monotonic() - revoked < 2:
                time.sleep(0.002)
            delays.append(time.monotonic() - revoked)
            refused = client.get("/nodes/1", headers=bearer(key["secret"]))
            assert refused.status_code == 401 and refused.json()["code"] == "REVOKED"
    print(
        f"\nrevocation reached the guard's cache: median {statistics.median(delays) * 1000:.0f} ms, "
        f"worst {max(delays) * 1000:.0f} ms over {TRIALS} trials"
    )
    assert max(delays) < 1.0


@pytest.mark.parametrize("guarded", [{"token": "operator", "cache_ttl": 60.0}], indirect=True)
def test_the_operator_token_follows_every_workspaces_changes(server: Server, guarded):
    guard, client, admin = guarded
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    time.sleep(0.5)  # its own issue events pass the stream first (they would drop it from the cache)
    assert client.get("/nodes/1", headers=bearer(key["secret"])).status_code == 200
    assert slot(key["secret"], "read:nodes") in guard.cache.entries
    with server.client(admin["secret"]) as keyledger:
        assert keyledger.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/revoke").status_code == 200
    revoked = time.monotonic()
    while slot(key["secret"], "read:nodes") in guard.cache.entries:
        assert time.monotonic() - revoked < 1.0, "the operator's change stream did not drop the key"
        time.sleep(0.005)


@pytest.mark.parametrize("guarded", [{"token": None, "cache_ttl": 1.0}], indirect=True)
def test_without_a_token_the_ttl_bounds_staleness(server: Server, guarded):
    _, client, admin = guarded
    key = issue(server, admin, ["read:nodes"])
    assert client.get("/nodes/1", headers=bearer(key["secret"])).status_code == 200
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as keyledger:
        assert keyledger.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/revoke").status_code == 200
    time.sleep(1.1)
    refused = client.get("/nodes/1", headers=bearer(key["secret"]))
    assert refused.status_code == 401 and refused.json()["code"] == "REVOKED"


@pytest.mark.parametrize("guarded", [{"token": None, "cache_ttl": 0.0}], indirect=True)
def test_require_scope_answers_like_the_guard_in_remote_mode(server: Server, guarded):
    _, client, admin = guarded
    reader = issue(server, admin, ["read:edges"])
    other = issue(server, admin, ["read:nodes"])
    assert client.get("/edges", headers=bearer(reader["secret"])).json() == {"edges": "all"}
    refused = client.get("/edges", headers=bearer(other["secret"]))
    assert refused.status_code == 403 and refused.json()["code"] == "INSUFFICIENT_SCOPE"
    assert refused.headers["content-type"] == "application/problem+json"


def test_require_scope_in_process(server: Server):
    """`Guard` on the store itself (the same store as the served keyledger), for the dependency alone."""
    admin = create_workspace(server, "pro")["admin_key"]
    reader = issue(server, admin, ["read:edges"])
    from keyledger.bootstrap import open_ledger
    from keyledger.services import build_verification

    ledger = open_ledger(server.settings)
    stack = build_verification(server.settings, ledger)
    stack.start()
    try:
        app = service()
        install(app, Guard(None, stack.verification))
        with TestClient(app) as client:
            assert client.get("/edges", headers=bearer(reader["secret"])).status_code == 200
            missing = client.get("/edges")
            assert missing.status_code == 401 and missing.json()["code"] == "NOT_FOUND"
            assert missing.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    finally:
        stack.stop()
        ledger.close()


def test_the_old_name_still_imports():
    assert issubclass(Guard, KeyledgerGuard)
