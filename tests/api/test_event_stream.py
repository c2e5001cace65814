"""The change streams (SPEC 8.3, 8.6): a workspace's audit entries and every key change, as Server-Sent Events,
and `keyledger events tail`; on a real server, on both backends."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.server import KEYLEDGER, OPERATOR_TOKEN, Server, create_workspace
from tests.api.test_answers import assert_problem, issue
from tests.audit.cli import env_of


@dataclass
class Frame:
    id: str | None
    event: str | None
    data: Any
    comment: bool = False


class Stream:
    """An open SSE connection read by a thread, so the test can wait for frames with a timeout."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        comment = False
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if fields or comment:
                        data = json.loads(fields["data"]) if "data" in fields else None
                        self.frames.put(Frame(fields.get("id"), fields.get("event"), data, comment and not fields))
                    fields, comment = {}, False
                elif line.startswith(":"):
                    comment = True
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        self.frames.put(None)  # the server ended the stream

    def next(self, timeout: float = 5.0, comments: bool = False) -> Frame | None:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
            if frame is None or comments or not frame.comment:
                return frame

    def take(self, count: int) -> list[Frame]:
        frames = [self.next() for _ in range(count)]
        assert all(f is not None for f in frames), frames
        return [f for f in frames if f is not None]

    def quiet(self, seconds: float) -> bool:
        """True if no event (comments aside) arrives within `seconds`."""
        try:
            self.next(seconds)
        except queue.Empty:
            return True
        return False


@contextmanager
def stream(server: Server, path: str, token: str, **headers: str) -> Iterator[Stream]:
    client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=30))
    try:
        with client.stream("GET", path, headers={"Authorization": f"Bearer {token}", **headers}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield Stream(response)
    finally:
        client.close()


def audit_items(server: Server, admin: dict[str, Any]) -> list[dict[str, Any]]:
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        deadline = time.monotonic() + 5
        while True:  # the audit read model shows a command within moments of its answer
            items: list[dict[str, Any]] = client.get(f"/v1/workspaces/{ws}/audit", params={"limit": 1000}).json()[
                "items"
            ]
            if items or time.monotonic() > deadline:
                return items
            time.sleep(0.05)


def test_the_stream_starts_at_the_first_entry_and_pushes_new_ones_within_a_second(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    key = issue(server, admin, ["read:nodes"])
    recorded = audit_items(server, admin)
    assert len(recorded) >= 2

    with stream(server, f"/v1/workspaces/{ws}/events/stream", admin["secret"]) as events:
        first = events.take(len(recorded))
        assert [f.data for f in first] == recorded  # the audit log's entries, in its order
        assert [f.id for f in first] == [str(i["position"]) for i in recorded]
        assert [f.event for f in first] == [i["type"] for i in recorded]
        assert events.quiet(0.3)  # nothing repeated

        worst = 0.0
        path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
        with server.client(admin["secret"]) as client:
            for scope in ("write:nodes", "read:edges", "write:edges"):
                assert client.post(f"{path}/scopes", json={"scopes": [scope]}).status_code == 200
                answered = time.monotonic()
                pushed = events.next(2.0)
                worst = max(worst, time.monotonic() - answered)
                assert pushed is not None and pushed.event == "ScopesGranted"
                assert pushed.data["data"]["scopes"] == [scope]
                assert int(pushed.id or 0) > int(first[-1].id or 0)
        assert worst < 1.0, f"pushed {worst:.2f} s after the command returned"
        assert key["secret"] not in json.dumps([f.data for f in first])


def test_a_command_of_another_process_is_pushed(server: Server):
    """The stream follows the store: a key issued by the CLI (its own process) shows up too."""
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    with stream(server, f"/v1/workspaces/{ws}/events/stream", admin["secret"]) as events:
        assert events.take(len(audit_items(server, admin)))
        done = subprocess.run(
            [KEYLEDGER, "key", "issue", ws, "--name", "from-cli", "--scope", "read:nodes"],
            capture_output=True,
            text=True,
            env=env_of(server.settings),
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answered = time.monotonic()
        pushed = [events.next(3.0), events.next(3.0)]
        assert time.monotonic() - answered < 1.0
        assert [f.event for f in pushed if f is not None] == ["KeySlotTaken", "KeyIssued"]
        assert {f.data["actor"] for f in pushed if f is not None} == {"operator"}
        assert {f.data["key_id"] for f in pushed if f is not None} == {json.loads(done.stdout)["key"]["id"]}


def test_resuming_after_a_position_skips_nothing_and_repeats_nothing(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    for _ in range(3):
        issue(server, admin, ["read:nodes"])
    recorded = audit_items(server, admin)
    positions = [str(i["position"]) for i in recorded]
    path = f"/v1/workspaces/{ws}/events/stream"

    with stream(server, path, admin["secret"], **{"Last-Event-ID": positions[1]}) as events:
        assert [f.id for f in events.take(len(positions) - 2)] == positions[2:]
        assert events.quiet(0.3)
    with stream(server, f"{path}?after={positions[2]}", admin["secret"]) as events:
        assert [f.id for f in events.take(len(positions) - 3)] == positions[3:]
    # A reconnecting browser sends Last-Event-ID on the URL it first used: the header wins.
    with stream(server, f"{path}?after={positions[0]}", admin["secret"], **{"Last-Event-ID": positions[-2]}) as events:
        assert [f.id for f in events.take(1)] == positions[-1:]
        assert events.quiet(0.3)


def test_bad_positions_and_callers_are_refused_with_problems(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    reader = issue(server, admin, ["read:nodes"])
    other = create_workspace(server)["admin_key"]
    path = f"/v1/workspaces/{ws}/events/stream"
    with server.client(admin["secret"]) as client:
        assert_problem(client.get(path, headers={"Last-Event-ID": "twelve"}), 422)
        assert_problem(client.get(path, headers={"Last-Event-ID": "9" * 19}), 422)
        assert_problem(client.get(path, params={"after": -1}), 422)
        assert_problem(client.get(path, params={"after": "x"}), 422)
    with server.client(reader["secret"]) as client:
        assert_problem(client.get(path), 403)
    with server.client(other["secret"]) as client:
        assert_problem(client.get(path), 404)
    with server.client() as client:
        assert_problem(client.get(path), 401)
        assert_problem(client.get("/v1/changes/stream"), 401)
    with server.client(admin["secret"]) as client:
        assert_problem(client.get("/v1/changes/stream"), 401)  # the operator token only


def test_the_stream_ends_when_the_reading_key_is_revoked(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    auditor = issue(server, admin, ["read:events"])
    with stream(server, f"/v1/workspaces/{ws}/events/stream", auditor["secret"]) as events:
        assert events.take(len(audit_items(server, admin)))
        with server.client(admin["secret"]) as client:
            assert client.post(f"/v1/workspaces/{ws}/keys/{auditor['key']['id']}/revoke").status_code == 200
        frames = []
        while (frame := events.next(3.0)) is not None:
            frames.append(frame)
        # Its own revocation (and the slot it frees, when applied in the same batch), then the end.
        assert [f.event for f in frames] in (["KeyRevoked"], ["KeyRevoked", "KeySlotReleased"])


def test_the_change_stream_names_changed_keys_and_nothing_else(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    with stream(server, "/v1/changes/stream", OPERATOR_TOKEN) as changes:
        assert changes.next() is not None  # from the start of the stream, every workspace's changes
    last = audit_items(server, admin)[-1]["position"]
    with stream(server, f"/v1/changes/stream?after={last}", OPERATOR_TOKEN) as changes:
        key = issue(server, admin, ["read:nodes"])
        pushed = changes.take(2)  # the key's issue, and the workspace's slot taken for it
        assert {(f.data["workspace_id"], f.data["key_id"]) for f in pushed} == {(ws, key["key"]["id"])}
        assert all(set(f.data) == {"position", "workspace_id", "key_id"} and f.event == "change" for f in pushed)
        assert [f.id for f in pushed] == [str(f.data["position"]) for f in pushed]


def test_events_tail_prints_the_entries_and_follows(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    issue(server, admin, ["read:nodes"])
    recorded = audit_items(server, admin)
    env = env_of(server.settings)

    done = subprocess.run(
        [KEYLEDGER, "events", "tail", ws, "--no-follow"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == recorded
    after = subprocess.run(
        [KEYLEDGER, "events", "tail", ws, "--no-follow", "--after", str(recorded[0]["position"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert [json.loads(line) for line in after.stdout.splitlines()] == recorded[1:]

    bad = subprocess.run([KEYLEDGER, "events", "tail", "nope"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "not a UUID" in bad.stderr

    follower = subprocess.Popen(
        [KEYLEDGER, "events", "tail", ws, "--after", str(recorded[-1]["position"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        key = issue(server, admin, ["read:nodes"])
        assert follower.stdout is not None
        lines = [json.loads(follower.stdout.readline()) for _ in range(2)]
        assert [line["type"] for line in lines] == ["KeySlotTaken", "KeyIssued"]
        assert {line["key_id"] for line in lines} == {key["key"]["id"]}
    finally:
        follower.terminate()
        assert follower.wait(10) == 0


@pytest.mark.slow
def test_an_idle_stream_gets_a_comment_line_at_least_every_15_seconds(server: Server):
    created = create_workspace(server)
    admin, ws = created["admin_key"], created["workspace"]["id"]
    with stream(server, f"/v1/workspaces/{ws}/events/stream", admin["secret"]) as events:
        assert events.take(len(audit_items(server, admin)))
        started = time.monotonic()
        beat = events.next(16.0, comments=True)
        assert beat is not None and beat.comment
        assert time.monotonic() - started <= 15.0
