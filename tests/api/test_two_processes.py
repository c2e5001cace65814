"""Two API processes on one PostgreSQL and one Redis behave as one service."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyledger.settings import Settings
from tests.api.server import Server, create_workspace
from tests.api.test_answers import issue, verify
from tests.backends import (
    POSTGRES_URL,
    REDIS_URL,
    drop_pg_schema,
    new_pg_schema,
    postgres_problem,
    redis_problem,
    require,
)
from tests.timing import inside_one_minute


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    require("PostgreSQL", postgres_problem())
    require("Redis", redis_problem())
    schema = new_pg_schema()
    settings = Settings(database_url=POSTGRES_URL, database_schema=schema)
    a = Server(settings, tmp_path / "a.log", REDIS_URL).start()
    b = Server(settings, tmp_path / "b.log", REDIS_URL).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        drop_pg_schema(schema)


def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(pair):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    key = issue(a, admin, ["read:nodes"])
    assert verify(b, key["secret"])["code"] == "VALID"  # b now holds the key in memory

    with a.client(admin["secret"]) as client:
        revoked = client.post(f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{key['key']['id']}/revoke")
    assert revoked.status_code == 200

    assert verify(b, key["secret"])["code"] == "REVOKED"


def test_a_rotation_through_one_process_is_honoured_by_the_other_at_once(pair):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    key = issue(a, admin, ["read:nodes"])
    assert verify(b, key["secret"])["code"] == "VALID"

    with a.client(admin["secret"]) as client:
        ws = admin["key"]["workspace_id"]
        rotated = client.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/rotate", json={"grace_seconds": 0})

    assert verify(b, key["secret"])["code"] == "EXPIRED"
    assert verify(b, rotated.json()["secret"])["code"] == "VALID"


def test_sixty_requests_over_both_processes_exhaust_a_starter_minute(pair):
    a, b = pair
    admin = create_workspace(a, "starter")["admin_key"]
    key = issue(a, admin, ["read:nodes"])
    inside_one_minute(25)

    codes = [verify(a if i % 2 else b, key["secret"])["code"] for i in range(60)]
    sixty_first = verify(a, key["secret"])

    assert codes == ["VALID"] * 60
    assert sixty_first["code"] == "RATE_LIMITED"
    assert verify(b, key["secret"])["code"] == "RATE_LIMITED"


def test_a_key_suspended_through_one_process_is_refused_by_the_other_at_once_and_resumes(pair):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    key = issue(a, admin, ["read:nodes"])
    assert verify(b, key["secret"])["code"] == "VALID"
    path = f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{key['key']['id']}"

    with a.client(admin["secret"]) as client:
        suspended = client.post(f"{path}/suspend", json={"reason": "investigating"})
    refused = verify(b, key["secret"])
    with a.client(admin["secret"]) as client:
        resumed = client.post(f"{path}/resume")

    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert refused["code"] == "SUSPENDED" and refused["valid"] is False
    assert resumed.json()["status"] == "active"
    assert verify(b, key["secret"])["code"] == "VALID"


def test_eight_threads_over_both_processes_spend_exactly_a_keys_hundred_credits_and_a_restart_keeps_the_rest(
    pair, tmp_path: Path
):
    a, b = pair
    admin = create_workspace(a, "pro")["admin_key"]
    key = issue(a, admin, ["read:nodes"], credits={"remaining": 100})
    other = issue(a, admin, ["read:nodes"], credits={"remaining": 30})
    barrier = threading.Barrier(8)
    codes: list[str] = []
    lock = threading.Lock()

    def spender(n: int) -> None:
        server = a if n % 2 else b
        barrier.wait()
        with server.client() as client:
            for _ in range(15):  # 120 requests for 100 credits
                answer = client.post("/v1/verify", json={"key": key["secret"], "scope": "read:nodes"}).json()
                with lock:
                    codes.append(answer["code"])

    threads = [threading.Thread(target=spender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent_other = [verify(a if i % 2 else b, other["secret"])["code"] for i in range(12)]
    a.stop()
    b.stop()
    restarted = Server(a.settings, tmp_path / "restarted.log", REDIS_URL).start()
    try:
        after = verify(restarted, key["secret"])
        after_other = verify(restarted, other["secret"])
    finally:
        restarted.stop()

    assert sorted(codes) == ["USAGE_EXCEEDED"] * 20 + ["VALID"] * 100
    assert spent_other == ["VALID"] * 12
    assert after["code"] == "USAGE_EXCEEDED"
    assert after_other["code"] == "VALID" and after_other["credits"] == {"remaining": 17}


def test_a_key_imported_through_one_process_verifies_through_the_other_at_once(pair):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    ws = admin["key"]["workspace_id"]
    original = "legacy-two-processes-0123456789"
    unknown = verify(b, original)  # b now remembers the digest names no key

    with a.client(admin["secret"]) as client:
        imported = client.post(
            f"/v1/workspaces/{ws}/keys/import", json={"name": "old", "scopes": ["read:nodes"], "secret": original}
        )

    answer = verify(b, original)
    assert unknown["code"] == "NOT_FOUND" and imported.status_code == 201
    assert answer["code"] == "VALID" and answer["key_id"] == imported.json()["key"]["id"]
