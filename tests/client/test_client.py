"""`keyledger.client` against a real `keyledger serve`, on both backends; its retries against a real flaky server."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from keyledger.client import AsyncClient, Client, Exposure, Insights, ProblemError
from tests.api.server import OPERATOR_TOKEN, Server

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_and_query_through_the_client(server: Server):
    with Client(server.url, token=OPERATOR_TOKEN) as operator:
        created = operator.create_workspace("client", "pro")
        ws = created["workspace"]["id"]
        assert operator.change_plan(ws, "starter")["plan"] == "starter"
    with Client(server.url, token=created["admin_key"]["secret"]) as kl:
        assert kl.get_workspace(ws)["live_keys"] == 1
        assert kl.me()["key"]["id"] == created["admin_key"]["key"]["id"]
        issued = kl.issue_key(ws, "svc", ["read:nodes"])
        key_id, secret = issued["key"]["id"], issued["secret"]

        answer = kl.verify(secret, "read:nodes", endpoint="GET /nodes/1")
        assert answer.valid and answer.code == "VALID" and answer.key_id == key_id
        assert answer.ratelimit is not None and answer.ratelimit.limit > 0
        refused = kl.verify(secret, "write:nodes")
        assert not refused.valid and refused.code == "INSUFFICIENT_SCOPE"

        assert kl.grant_scopes(ws, key_id, ["write:edges"])["scopes"] == ["read:nodes", "write:edges"]
        assert kl.revoke_scope(ws, key_id, "write:edges")["scopes"] == ["read:nodes"]
        assert kl.set_scopes(ws, key_id, ["read:edges"])["scopes"] == ["read:edges"]
        rotated = kl.rotate_key(ws, key_id, grace_seconds=0)
        assert rotated["secret"] != secret and kl.verify(secret, "read:edges").code == "EXPIRED"
        assert kl.suspend_key(ws, key_id, reason="looking")["status"] == "suspended"
        assert kl.verify(rotated["secret"], "read:edges").code == "SUSPENDED"
        assert kl.resume_key(ws, key_id)["status"] == "active"
        moment = datetime.now(UTC)
        assert kl.revoke_key(ws, key_id, reason="done")["status"] == "revoked"

        assert {k["id"] for k in kl.list_keys(ws, status="revoked")} == {key_id}
        assert kl.get_key(ws, key_id)["revoked_at"] is not None
        history = kl.history(ws, key_id)
        assert history[0]["type"] == "KeyIssued" and history[-1]["type"] == "KeyRevoked"
        assert kl.state_at(ws, key_id, moment)["key"]["status"] == "active"
        page = kl.audit(ws, key=key_id, types=["KeyRotated"], limit=5)
        assert [e["type"] for e in page["items"]] == ["KeyRotated"]
        assert key_id in {a["key_id"] for a in kl.access_at(ws, "read:edges", moment)["items"]}
        deadline = time.monotonic() + 5
        while kl.usage(ws, key=key_id)["items"][0]["total"] < 4:  # usage is flushed in batches, about every second
            assert time.monotonic() < deadline, kl.usage(ws, key=key_id)
            time.sleep(0.1)

        events = kl.events(ws)
        first = [next(events) for _ in range(3)]
        assert [e.id for e in first] == sorted(e.id for e in first) and first[0].data["position"] == first[0].id


def test_refusals_raise_problem_errors_with_the_problem_fields(server: Server):
    with Client(server.url, token=OPERATOR_TOKEN) as operator:
        created = operator.create_workspace("client", "pro")
    ws = created["workspace"]["id"]
    with Client(server.url, token=created["admin_key"]["secret"]) as kl:
        with pytest.raises(ProblemError) as missing:
            kl.get_key(ws, "00000000-0000-0000-0000-000000000000")
        assert missing.value.status == 404 and missing.value.type.startswith("/problems/")
        with pytest.raises(ProblemError) as bad:
            kl.issue_key(ws, "x", ["not a scope"])
        assert bad.value.status == 422 and bad.value.detail
    with Client(server.url, token="kl_wrong") as stranger, pytest.raises(ProblemError) as refused:
        stranger.get_workspace(ws)
    assert refused.value.status == 401 and refused.value.code == "NOT_FOUND"
    assert refused.value.headers["www-authenticate"].startswith("Bearer")


def test_the_async_client_has_the_same_methods(server: Server):
    async def scenario() -> tuple[str, str, list[str]]:
        async with AsyncClient(server.url, token=OPERATOR_TOKEN) as operator:
            created = await operator.create_workspace("async", "pro")
        ws = created["workspace"]["id"]
        async with AsyncClient(server.url, token=created["admin_key"]["secret"]) as kl:
            issued = await kl.issue_key(ws, "svc", ["read:nodes"])
            answer = await kl.verify(issued["secret"], "read:nodes")
            await kl.revoke_key(ws, issued["key"]["id"])
            after = await kl.verify(issued["secret"], "read:nodes")
            stream = kl.events(ws)
            types = [(await anext(stream)).event for _ in range(4)]
            await stream.aclose()  # type: ignore[attr-defined]
        return answer.code, after.code, types

    valid, revoked, types = asyncio.run(scenario())
    assert (valid, revoked) == ("VALID", "REVOKED")
    assert types[0] == "WorkspaceCreated" and "KeyIssued" in types


def test_sync_and_async_clients_offer_the_same_methods():
    public = {name for name in dir(Client) if not name.startswith("_")} - {"close"}
    assert public == {name for name in dir(AsyncClient) if not name.startswith("_")} - {"aclose"}


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0) to the first `failures` requests, then 200."""

    failures = 2
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).seen.append(f"{self.command} {self.path}")
        if len(self.seen) <= self.failures:
            body, status, extra = b'{"type":"/problems/unavailable","title":"Unavailable","status":503}', 503, True
        else:
            body, status, extra = b'{"id":"w","name":"n","key":{"id":"k"},"secret":"s"}', 200, False
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if extra:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    _Flaky.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def test_reads_are_retried_on_503_and_commands_that_create_are_sent_once(flaky: str):
    with Client(flaky, token="t") as kl:
        assert kl.get_workspace("w")["name"] == "n"
        assert len(_Flaky.seen) == 3  # two 503s, then the answer
        _Flaky.seen.clear()
        with pytest.raises(ProblemError) as refused:
            kl.issue_key("w", "k", ["read:nodes"])
        assert refused.value.status == 503 and refused.value.retry_after == 0
        assert _Flaky.seen == ["POST /v1/workspaces/w/keys"]  # not repeated: it might have been saved
    with Client(flaky, token="t", retries=1) as impatient:
        _Flaky.seen.clear()
        with pytest.raises(ProblemError):
            impatient.get_workspace("w")
        assert len(_Flaky.seen) == 2


def test_the_readme_example_runs_as_written(server: Server):
    text = README.read_text()
    found = re.search(r"<!-- client-example -->\s*```python\n(.*?)```", text, re.S)
    assert found is not None, "README lost its client example"
    env = {**os.environ, "KEYLEDGER_URL": server.url, "KEYLEDGER_OPERATOR_TOKEN": OPERATOR_TOKEN}
    done = subprocess.run(
        [sys.executable, "-c", found.group(1)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "409 revoked"


def test_insights_and_exposure_through_both_clients(server: Server):
    since = datetime.now(UTC) - timedelta(minutes=1)
    with Client(server.url, token=OPERATOR_TOKEN) as operator:
        created = operator.create_workspace("insights", "pro")
    ws, admin = created["workspace"]["id"], created["admin_key"]["secret"]
    with Client(server.url, token=admin) as kl:
        issued = kl.issue_key(ws, "reader", ["write:nodes", "read:edges"])
        key_id, secret = issued["key"]["id"], issued["secret"]
        assert kl.verify(secret, "read:nodes", client_ip="198.51.100.4").code == "VALID"
        assert kl.verify(secret, "write:edges", client_ip="198.51.100.4").code == "INSUFFICIENT_SCOPE"
        deadline = time.monotonic() + 5  # an answer shows in insights within 5 seconds
        while True:
            found: Insights = kl.insights(ws, days=7)
            kinds = {f["kind"] for f in found["findings"] if f["key_id"] == key_id}
            if kinds == {"unused_scope", "denied_scope"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        report: Exposure = kl.exposure(ws, key_id, since)
        try:
            kl.insights(ws, days=0)
        except ProblemError as error:
            bad_days = error.status
        try:
            kl.exposure(ws, ws, since)
        except ProblemError as error:
            unknown_key = error.status

    async def twice() -> tuple[Insights, Exposure]:
        async with AsyncClient(server.url, token=admin) as client:
            return await client.insights(ws, days=7), await client.exposure(ws, key_id, since)

    async_found, async_report = asyncio.run(twice())

    assert kinds == {"unused_scope", "denied_scope"} and found["window_days"] == 7
    [narrow] = [f for f in found["findings"] if f["kind"] == "unused_scope"]
    assert narrow["suggestion"] == {"scopes": ["read:nodes"]}
    assert report["requests"]["total"] == 2 and report["requests"]["allowed"] == 1
    assert [(s["address"], s["count"]) for s in report["sources"]] == [("198.51.100.4", 2)]
    assert report["scopes"][0]["scopes"] == ["read:edges", "write:nodes"]
    assert (bad_days, unknown_key) == (422, 404)
    assert async_found["findings"] == found["findings"]
    assert async_report["requests"] == report["requests"] and async_report["secrets"] == report["secrets"]
