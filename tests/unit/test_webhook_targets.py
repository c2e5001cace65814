"""The webhook target guard (SPEC 8.3, SSRF), the signing secrets and the retry schedule, without a network."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from standardwebhooks import Webhook

from adapters.webhooks.dispatcher import MAX_ATTEMPTS, retry_delay
from adapters.webhooks.signing import load_master_key, webhook_secret
from adapters.webhooks.targets import MAX_RESPONSE_BYTES, check_target, parse_target, send
from domain.errors import InvalidWebhookTarget


def resolving(*addresses: str) -> Any:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(addresses)

    resolver.asked = asked  # type: ignore[attr-defined]
    return resolver


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:10.0.0.1",
        "::",
    ],
)
def test_a_name_resolving_to_a_private_address_is_refused(address: str):
    with pytest.raises(InvalidWebhookTarget):
        check_target("https://hooks.example.com/x", False, resolving("93.184.215.14", address))


def test_public_names_pass_and_every_address_is_checked():
    resolver = resolving("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    target = check_target("https://Hooks.Example.com:8443/in?x=1", False, resolver)
    assert (target.scheme, target.host, target.port, target.path) == ("https", "hooks.example.com", 8443, "/in?x=1")
    assert target.host_header == "hooks.example.com:8443"
    assert resolver.asked == ["hooks.example.com"]


def test_addresses_written_in_the_url_are_not_looked_up():
    resolver = resolving()
    with pytest.raises(InvalidWebhookTarget):
        check_target("https://[::1]:8443/", False, resolver)
    assert check_target("https://93.184.215.14/", False, resolver).host == "93.184.215.14"
    assert resolver.asked == []


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/", "ftp://hooks.example.com/", "https://u:p@hooks.example.com/", "https:///x", "x"],
)
def test_only_plain_https_urls_are_targets(url: str):
    with pytest.raises(InvalidWebhookTarget):
        parse_target(url, False)


def test_allowing_private_targets_allows_http_and_loopback():
    assert check_target("http://127.0.0.1:9/x", True).port == 9
    with pytest.raises(InvalidWebhookTarget):
        check_target("ftp://127.0.0.1/", True)


def test_an_unresolvable_name_is_refused():
    def failing(host: str, port: int) -> list[str]:
        raise OSError("no such name")

    with pytest.raises(InvalidWebhookTarget, match="does not resolve"):
        check_target("https://nowhere.invalid/", False, failing)


class _Answer(BaseHTTPRequestHandler):
    status = 200
    body = b""
    location = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(self.status)
        if self.location:
            self.send_header("location", self.location)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client stops reading at the bound
            self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


def _serve(**attrs: Any) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (_Answer,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


def test_send_follows_no_redirect_and_reads_a_bounded_answer():
    server, url = _serve(status=302, location="http://169.254.169.254/")
    try:
        assert send(url, b"{}", {}, True).status_code == 302  # not followed: not delivered
        assert not send(url, b"{}", {}, True).delivered
    finally:
        server.shutdown()
    server, url = _serve(body=b"x" * (MAX_RESPONSE_BYTES * 20))
    try:
        assert send(url, b"{}", {}, True).delivered
    finally:
        server.shutdown()


def test_send_connects_to_the_address_it_checked():
    server, _ = _serve()
    try:
        port = server.server_address[1]
        # The name resolves (for the guard) to the test server's address: the request goes there.
        outcome = send(f"http://receiver.test:{port}/hook", b"{}", {}, True, resolving("127.0.0.1"))
        assert outcome.delivered
        refused = send(f"https://receiver.test:{port}/hook", b"{}", {}, False, resolving("127.0.0.1"))
        assert refused.status_code is None and refused.error
    finally:
        server.shutdown()


def test_secrets_are_derived_per_webhook_and_verify_with_standardwebhooks(tmp_path: Path):
    path = tmp_path / "webhook.key"
    key = load_master_key(None, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_key(None, path) == key  # generated once, then read
    one, two = uuid4(), uuid4()
    secret = webhook_secret(key, one)
    assert secret.startswith("whsec_") and secret == webhook_secret(key, one) != webhook_secret(key, two)
    assert webhook_secret(b"another-master-key-of-enough-length", one) != secret
    signer = Webhook(secret)
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign("msg_1", now, '{"a":1}'),
    }
    assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}


def test_retries_start_within_10_s_grow_and_last_over_24_h():
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS)]
    assert delays[0] <= 10
    assert delays == sorted(delays)
    assert sum(delays) >= 24 * 3600
