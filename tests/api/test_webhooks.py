"""Webhooks (SPEC 8.3) on a real server, both backends, delivering to a real receiver on 127.0.0.1 that
verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyledger.settings import Settings
from tests.api.conftest import RESOURCES, Backend
from tests.api.receiver import Receiver, positions, running
from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue
from tests.api.test_event_stream import audit_items

WEBHOOK_KEY = "test-webhook-master-key-0123456789abcdef"
PRIVATE_OK = {
    "KEYLEDGER_RESOURCES": RESOURCES,
    "KEYLEDGER_WEBHOOK_ALLOW_PRIVATE": "true",
    "KEYLEDGER_WEBHOOK_KEY": WEBHOOK_KEY,
    "KEYLEDGER_ALERT_INTERVAL_SECONDS": "1",
}


def serve(backend: Backend, log: Path) -> Server:
    return Server(backend.settings, log, backend.redis_url, dict(PRIVATE_OK)).start()


@pytest.fixture(scope="module")
def hooks_server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running_server = serve(backend, tmp_path_factory.mktemp("hooks") / "server.log")
    try:
        yield running_server
    finally:
        running_server.stop()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the guard's default (no private targets), on a store of its own: a process on the hooks
    servers' store with other webhook settings would take part in their deliveries (and refuse them)."""
    folder = tmp_path_factory.mktemp("strict")
    settings = Settings(database_url=f"sqlite:///{folder / 'keyledger.db'}")
    running_server = Server(settings, folder / "server.log", None, {"KEYLEDGER_WEBHOOK_KEY": WEBHOOK_KEY}).start()
    try:
        yield running_server
    finally:
        running_server.stop()


def add_webhook(server: Server, admin: dict[str, Any], url: str, **extra: Any) -> dict[str, Any]:
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        response = client.post(f"/v1/workspaces/{ws}/webhooks", json={"url": url, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def change_scopes(server: Server, admin: dict[str, Any], key: dict[str, Any], count: int) -> None:
    """`count` key changes: scopes granted and taken back in turn."""
    path = f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{key['key']['id']}/scopes"
    with server.client(admin["secret"]) as client:
        for i in range(count):
            if i % 2 == 0:
                response = client.post(path, json={"scopes": ["write:nodes"]})
            else:
                response = client.delete(f"{path}/write:nodes")
            assert response.status_code == 200, response.text


def entries_after(server: Server, admin: dict[str, Any], position: int) -> list[dict[str, Any]]:
    return [e for e in audit_items(server, admin) if e["position"] > position]


def test_a_hundred_key_changes_arrive_signed_in_order_and_the_webhook_is_in_the_history(hooks_server: Server):
    server = hooks_server
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    with running(Receiver()) as receiver:
        created = add_webhook(server, admin, receiver.url, description="siem")
        receiver.secret = created["secret"]
        hook = created["webhook"]
        assert created["secret"].startswith("whsec_")
        assert hook.keys() == {"id", "url", "types", "description", "created_at"}
        assert (hook["url"], hook["types"], hook["description"]) == (receiver.url, None, "siem")
        start = audit_items(server, admin)[-1]["position"]  # the WebhookCreated entry

        change_scopes(server, admin, key, 100)

        arrived = receiver.wait_for(100, timeout=60)
        expected = entries_after(server, admin, start)
        assert len(expected) == 100
        assert positions(arrived) == [e["position"] for e in expected]  # in order, none missing, none twice
        assert [a.body["data"] for a in arrived] == expected  # the audit entry itself
        assert all(a.body["type"] == a.type == a.body["data"]["type"] for a in arrived)
        assert all(a.body["timestamp"] == a.body["data"]["occurred_at"] for a in arrived)
        assert len({a.msg_id for a in arrived}) == 100
        assert receiver.forged == []

        with server.client(admin["secret"]) as client:
            assert client.get(f"/v1/workspaces/{ws}/webhooks").json() == {"items": [hook]}
            assert client.get(f"/v1/workspaces/{ws}/webhooks/{hook['id']}").json() == hook
            deliveries = client.get(f"/v1/workspaces/{ws}/webhooks/{hook['id']}/deliveries").json()["items"]
            assert [d["position"] for d in deliveries] == [e["position"] for e in reversed(expected)]
            assert {(d["status"], d["attempts"], d["last_status_code"]) for d in deliveries} == {("delivered", 1, 200)}
            assert all(d["next_attempt_at"] is None and d["last_attempt_at"] for d in deliveries)

            # A retry asked for sends it again, with the same webhook-id.
            first = expected[0]["position"]
            retried = client.post(f"/v1/workspaces/{ws}/webhooks/{hook['id']}/deliveries/{first}/retry")
            assert retried.status_code == 200, retried.text
            again = receiver.wait_for(101, timeout=10)[-1]
            assert (again.position, again.msg_id) == (first, arrived[0].msg_id)
            missing = client.post(f"/v1/workspaces/{ws}/webhooks/{hook['id']}/deliveries/1/retry")
            assert_problem(missing, 404)

            assert client.delete(f"/v1/workspaces/{ws}/webhooks/{hook['id']}").status_code == 204
            assert_problem(client.get(f"/v1/workspaces/{ws}/webhooks/{hook['id']}"), 404)
            assert_problem(client.delete(f"/v1/workspaces/{ws}/webhooks/{hook['id']}"), 404)
            assert client.get(f"/v1/workspaces/{ws}/webhooks").json() == {"items": []}

        history = audit_items(server, admin)
        made = [e for e in history if e["type"] in ("WebhookCreated", "WebhookDeleted")]
        assert [(e["type"], e["actor"], e["data"]["webhook_id"]) for e in made] == [
            ("WebhookCreated", admin["key"]["id"], hook["id"]),
            ("WebhookDeleted", admin["key"]["id"], hook["id"]),
        ]
        assert made[0]["data"]["url"] == receiver.url
        assert created["secret"] not in json.dumps(history)
        assert created["secret"].removeprefix("whsec_") not in server.log()

        # Deleted: nothing more is delivered.
        change_scopes(server, admin, key, 2)
        time.sleep(1.5)
        assert len(receiver.delivered()) == 101


def test_a_webhook_gets_only_the_types_it_asked_for(hooks_server: Server):
    server = hooks_server
    admin = create_workspace(server)["admin_key"]
    with running(Receiver()) as receiver:
        created = add_webhook(server, admin, receiver.url, types=["KeyIssued", "KeyRevoked"])
        receiver.secret = created["secret"]
        assert created["webhook"]["types"] == ["KeyIssued", "KeyRevoked"]
        key = issue(server, admin, ["read:nodes"])
        change_scopes(server, admin, key, 2)
        with server.client(admin["secret"]) as client:
            ws = admin["key"]["workspace_id"]
            assert client.post(f"/v1/workspaces/{ws}/keys/{key['key']['id']}/revoke").status_code == 200
        arrived = receiver.wait_for(2, timeout=15)
        assert [a.type for a in arrived] == ["KeyIssued", "KeyRevoked"]
        assert all(a.body["data"]["key_id"] == key["key"]["id"] for a in arrived)


def test_webhook_input_is_checked(hooks_server: Server):
    server = hooks_server
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        for body in (
            {"url": "ftp://127.0.0.1/x"},
            {"url": "https://user:s3cr3tpw@127.0.0.1/x"},
            {"url": "not a url"},
            {"url": "https://127.0.0.1/x", "types": ["NoSuchEvent"]},
            {"url": "https://127.0.0.1/x", "types": []},
            {"url": "https://127.0.0.1/x", "secret": "mine"},
        ):
            body_text = assert_problem(client.post(f"/v1/workspaces/{ws}/webhooks", json=body), 422)
            assert "s3cr3tpw" not in json.dumps(body_text)
        for i in range(10):
            assert (
                client.post(f"/v1/workspaces/{ws}/webhooks", json={"url": f"https://127.0.0.1/{i}"}).status_code == 201
            )
        assert_problem(client.post(f"/v1/workspaces/{ws}/webhooks", json={"url": "https://127.0.0.1/x"}), 409)
        other = create_workspace(server)["admin_key"]
        hook = client.get(f"/v1/workspaces/{ws}/webhooks").json()["items"][0]["id"]
    with server.client(other["secret"]) as client:
        assert_problem(client.get(f"/v1/workspaces/{ws}/webhooks"), 404)
        assert_problem(client.get(f"/v1/workspaces/{other['key']['workspace_id']}/webhooks/{hook}"), 404)
        assert_problem(client.get(f"/v1/workspaces/{other['key']['workspace_id']}/webhooks/{hook}/deliveries"), 404)
    reader = issue(server, admin, ["read:events"])
    with server.client(reader["secret"]) as client:
        assert_problem(client.get(f"/v1/workspaces/{ws}/webhooks"), 403)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://localhost/hook",  # a name resolving to a private address
        "https://[::ffff:127.0.0.1]/hook",
        "http://example.com/hook",  # http: only with KEYLEDGER_WEBHOOK_ALLOW_PRIVATE=true
    ],
)
def test_private_targets_are_refused_when_not_allowed(strict_server: Server, url: str):
    server = strict_server
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        refused = client.post(f"/v1/workspaces/{ws}/webhooks", json={"url": url})
        assert assert_problem(refused, 422)["type"] == "/problems/invalid-webhook-target"
        assert client.get(f"/v1/workspaces/{ws}/webhooks").json() == {"items": []}


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'keyledger.db'}")
    running_server = serve(Backend("sqlite+memory", settings, None), tmp_path / "server.log")
    try:
        yield running_server
    finally:
        running_server.stop()


@pytest.mark.slow
def test_a_receiver_failing_for_30_s_gets_every_event_after(sqlite_server: Server):
    """On SQLite only, to keep the suite short: the schedule is the same on both backends."""
    server = sqlite_server
    admin = create_workspace(server)["admin_key"]
    until = time.monotonic() + 30
    with running(Receiver(answer=lambda: 500 if time.monotonic() < until else 200)) as receiver:
        created = add_webhook(server, admin, receiver.url)
        receiver.secret = created["secret"]
        start = audit_items(server, admin)[-1]["position"]
        key = issue(server, admin, ["read:nodes"])
        change_scopes(server, admin, key, 9)
        expected = [e["position"] for e in entries_after(server, admin, start)]
        assert len(expected) == 11  # the key and its slot, then 9 changes

        delivered = receiver.wait_for(len(expected), timeout=90)
        assert positions(delivered) == expected  # every event, in order, each delivered once
        with receiver._lock:
            tried = list(receiver.arrivals)
        failed = [a for a in tried if a.status == 500]
        assert failed and all(a.position == expected[0] for a in failed)  # the head waits; the rest queue behind
        ids = {a.position: a.msg_id for a in delivered}
        assert all(ids[a.position] == a.msg_id for a in tried)  # a retry carries the same webhook-id
        gaps = [b - a for a, b in zip(_times(failed), _times(failed)[1:], strict=False)]
        assert gaps and gaps[0] < 10 + 1 and gaps == sorted(gaps)  # first retry within 10 s, then growing
        with server.client(admin["secret"]) as client:
            ws = admin["key"]["workspace_id"]
            deliveries = client.get(f"/v1/workspaces/{ws}/webhooks/{created['webhook']['id']}/deliveries").json()
        head = next(d for d in deliveries["items"] if d["position"] == expected[0])
        assert head["status"] == "delivered" and head["attempts"] == len(failed) + 1


def _times(arrivals: list[Any]) -> list[float]:
    return [a.at for a in arrivals]


@pytest.mark.slow
def test_deliveries_survive_the_api_killed_mid_delivery(backend: Backend, tmp_path: Path):
    server = serve(backend, tmp_path / "server.log")
    try:
        admin = create_workspace(server)["admin_key"]
        with running(Receiver(delay=0.5)) as receiver:
            created = add_webhook(server, admin, receiver.url)
            receiver.secret = created["secret"]
            start = audit_items(server, admin)[-1]["position"]
            key = issue(server, admin, ["read:nodes"])
            change_scopes(server, admin, key, 18)
            expected = [e["position"] for e in entries_after(server, admin, start)]
            receiver.wait_for(3, timeout=15)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)  # mid-delivery: the receiver takes 0.5 s each
            server.process.wait()
            assert len(receiver.delivered()) < len(expected)

            server.start()
            delivered = receiver.wait_for_all(expected, timeout=60)
            assert sorted(set(positions(delivered))) == expected  # none missing
            ids = {}
            for arrival in delivered:  # duplicates only with the same webhook-id
                assert ids.setdefault(arrival.position, arrival.msg_id) == arrival.msg_id
            assert receiver.forged == []
    finally:
        server.stop()
