"""The change feed served by two API processes on one PostgreSQL and one Redis (SPEC 8.3): each webhook
delivery made by one of them, and an SSE client that sees every command of both, resuming exactly."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keyledger.settings import Settings
from tests.api.receiver import Receiver, running
from tests.api.server import Server, create_workspace
from tests.api.test_answers import issue, verify
from tests.api.test_event_stream import audit_items, stream
from tests.api.test_webhooks import PRIVATE_OK, add_webhook, entries_after
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


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    require("PostgreSQL", postgres_problem())
    require("Redis", redis_problem())
    schema = new_pg_schema()
    folder = tmp_path_factory.mktemp("pair")
    settings = Settings(database_url=POSTGRES_URL, database_schema=schema)
    a = Server(settings, folder / "a.log", REDIS_URL, dict(PRIVATE_OK)).start()
    b = Server(settings, folder / "b.log", REDIS_URL, dict(PRIVATE_OK)).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        drop_pg_schema(schema)


def toggle(servers: tuple[Server, ...], admin: dict[str, Any], key: dict[str, Any], count: int) -> None:
    """`count` scope changes of `key`, sent through the servers in turn."""
    path = f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{key['key']['id']}/scopes"
    clients = [s.client(admin["secret"]) for s in servers]
    try:
        for i in range(count):
            client = clients[i % len(clients)]
            if i % 2 == 0:
                response = client.post(path, json={"scopes": ["write:nodes"]})
            else:
                response = client.delete(f"{path}/write:nodes")
            assert response.status_code == 200, response.text
    finally:
        for client in clients:
            client.close()


def test_each_delivery_is_made_by_one_process_once(pair: tuple[Server, Server], tmp_path: Path):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    key = issue(a, admin, ["read:nodes"])
    receivers = [Receiver(), Receiver(), Receiver()]
    with running(receivers[0]), running(receivers[1]), running(receivers[2]):
        ids = []
        for i, receiver in enumerate(receivers):
            created = add_webhook((a, b)[i % 2], admin, receiver.url)
            receiver.secret, _ = created["secret"], ids.append(created["webhook"]["id"])

        toggle((a, b), admin, key, 40)

        history = audit_items(a, admin)
        for webhook_id, receiver in zip(ids, receivers, strict=True):
            [since] = [e["position"] for e in history if e["data"].get("webhook_id") == webhook_id]
            expected = [e["position"] for e in history if e["position"] > since]
            arrived = receiver.wait_for(len(expected), timeout=60)
            assert [x.position for x in arrived] == expected  # in order, and no webhook-id twice
            assert len({x.msg_id for x in receiver.arrivals}) == len(receiver.arrivals) == len(expected)
            assert receiver.forged == []


@pytest.mark.slow
def test_a_stream_sees_500_commands_of_two_processes_in_order_and_resumes_exactly(pair: tuple[Server, Server]):
    a, b = pair
    created = create_workspace(a)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    key = issue(b, admin, ["read:nodes"])
    before = audit_items(a, admin)
    path = f"/v1/workspaces/{ws}/events/stream"

    seen: list[int] = []
    with stream(a, path, admin["secret"]) as events:
        assert [int(f.id or 0) for f in events.take(len(before))] == [e["position"] for e in before]
        writer = threading.Thread(target=toggle, args=((a, b), admin, key, 500))
        writer.start()
        while len(seen) < 250:
            frame = events.next(timeout=10)
            assert frame is not None
            seen.append(int(frame.id or 0))
    # Disconnected while the commands go on; then resumed from the last id received.
    with stream(b, path, admin["secret"], **{"Last-Event-ID": str(seen[-1])}) as events:
        writer.join(timeout=120)
        assert not writer.is_alive()
        rest = [e["position"] for e in entries_after(a, admin, seen[-1])]
        resumed = [int(f.id or 0) for f in events.take(len(rest))]
        assert events.quiet(0.5)  # nothing after the last

    every = [e["position"] for e in entries_after(a, admin, before[-1]["position"])]
    assert len(every) == 500
    assert seen + resumed == every  # all 500, in order, none repeated across the reconnection


def test_alerts_are_raised_once_by_two_processes_and_delivered(pair: tuple[Server, Server]):
    a, b = pair
    admin = create_workspace(a)["admin_key"]
    with running(Receiver()) as receiver:
        receiver.secret = add_webhook(b, admin, receiver.url, types=["AlertKeyExpiring", "AlertDeniedBurst"])["secret"]
        expires = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        key = issue(a, admin, ["read:nodes"], expires_at=expires)  # both schedulers notice within a second

        [expiring] = receiver.wait_for(1, timeout=20)
        assert expiring.type == "AlertKeyExpiring" and expiring.body["data"]["key_id"] == key["key"]["id"]
        assert expiring.body["data"]["data"]["expires_at"] == key["key"]["expires_at"].replace("+00:00", "Z")

        inside_one_minute(15)
        for i in range(20):  # refused for want of a scope, half through each process
            assert verify((a, b)[i % 2], key["secret"], "write:nodes")["code"] == "INSUFFICIENT_SCOPE"
        arrived = receiver.wait_for(2, timeout=30)
        assert [x.type for x in arrived] == ["AlertKeyExpiring", "AlertDeniedBurst"]
        assert arrived[1].body["data"]["data"]["refused"] == 20

        time.sleep(2.5)  # more passes of both schedulers: nothing raised again
        alerts = [e for e in audit_items(a, admin) if e["type"].startswith("Alert")]
        assert [(e["type"], e["key_id"], e["actor"]) for e in alerts] == [
            ("AlertKeyExpiring", key["key"]["id"], "keyledger"),
            ("AlertDeniedBurst", key["key"]["id"], "keyledger"),
        ]
        assert len(receiver.arrivals) == 2
