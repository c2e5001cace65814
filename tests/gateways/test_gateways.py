"""The gateway recipes of docs/gateways, run as written by real nginx and Caddy in front of a small app.

keyledger answers forward-auth (`GET /v1/auth`): 204 lets the request through to the app with the key's
id; 401, 403 and 429 reach the client with keyledger's headers (Caddy: also its problem+json body).
Skipped with the reason where a binary is missing; failed when CI=true (`.ci/run` installs both).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.server import Server, create_workspace, free_port
from tests.api.test_answers import issue
from tests.backends import require
from tests.timing import inside_one_minute

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateways"
KEYLEDGER, APP, GATEWAY = "127.0.0.1:8000", "127.0.0.1:9000", "127.0.0.1:8080"


class _App(BaseHTTPRequestHandler):
    """The guarded app: answers 200 with the headers the gateway sent it."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def app() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    require(name, None if path else f"{name} is not installed (apt-get install {name})")
    assert path is not None
    return path


def _recipe(name: str, server: Server, app: str, port: int) -> str:
    text = (DOCS / name).read_text()
    for placeholder in (KEYLEDGER, APP, GATEWAY):
        assert placeholder in text, f"{name} no longer names {placeholder}"
    keyledger = server.url.removeprefix("http://")
    return text.replace(KEYLEDGER, keyledger).replace(APP, app).replace(GATEWAY, f"127.0.0.1:{port}")


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the gateway did not listen: {log.read_text(errors='replace')[-3000:]}")


def _start_nginx(folder: Path, recipe: str, port: int) -> subprocess.Popen[bytes]:
    nginx = _binary("nginx")
    (folder / "keyledger.conf").write_text(recipe)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    # The main file a Debian install has around conf.d, reduced to what a test needs.
    (folder / "nginx.conf").write_text(
        f"""
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {folder}/keyledger.conf;
}}
"""
    )
    log = folder / "stderr.log"
    process = subprocess.Popen(
        [nginx, "-c", str(folder / "nginx.conf"), "-p", str(folder)], stderr=log.open("wb"), stdout=subprocess.DEVNULL
    )
    _wait_for(f"http://127.0.0.1:{port}/", process, log)
    return process


def _start_caddy(folder: Path, recipe: str, port: int) -> subprocess.Popen[bytes]:
    caddy = _binary("caddy")
    # Global options for a test: no admin endpoint, no certificates, state kept in the test's folder.
    config = "{\n\tadmin off\n\tauto_https off\n\tstorage file_system " + str(folder / "data") + "\n}\n\n" + recipe
    (folder / "Caddyfile").write_text(config)
    log = folder / "stderr.log"
    env = {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "XDG_CONFIG_HOME": str(folder / "config")}
    process = subprocess.Popen(
        [caddy, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"],
        stderr=log.open("wb"),
        stdout=subprocess.DEVNULL,
        env=env,
    )
    _wait_for(f"http://127.0.0.1:{port}/", process, log)
    return process


@pytest.fixture(scope="module", params=["nginx", "caddy"])
def gateway(
    request: pytest.FixtureRequest, server: Server, app: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    kind: str = request.param
    folder = tmp_path_factory.mktemp(kind)
    port = free_port()
    if kind == "nginx":
        process = _start_nginx(folder, _recipe("nginx.conf", server, app, port), port)
    else:
        process = _start_caddy(folder, _recipe("Caddyfile", server, app, port), port)
    try:
        yield kind, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _get(url: str, path: str, secret: str | None = None, method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.request(method, url + path, headers=headers, timeout=10)


def test_a_key_holding_the_scope_reaches_the_app_which_learns_who_called(server: Server, gateway: tuple[str, str]):
    _, url = gateway
    admin = create_workspace(server)["admin_key"]
    key = issue(server, admin, ["read:nodes"])
    answer = _get(url, "/nodes/7?x=1", key["secret"])
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["x-keyledger-key-id"] == key["key"]["id"]
    assert seen["x-keyledger-workspace-id"] == admin["key"]["workspace_id"]
    assert "127.0.0.1" in seen["x-forwarded-for"]


def test_refusals_pass_through_with_keyledgers_status_and_headers(server: Server, gateway: tuple[str, str]):
    kind, url = gateway
    admin = create_workspace(server)["admin_key"]
    key = issue(server, admin, ["read:nodes"])

    missing = _get(url, "/nodes/7")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    wrong = _get(url, "/nodes/7", "kl_not-a-real-key")
    assert wrong.status_code == 401

    narrow = _get(url, "/nodes/7", key["secret"], method="POST")
    assert narrow.status_code == 403
    assert narrow.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="write:nodes"'

    for answer in (missing, narrow):
        assert answer.headers["content-type"].startswith("application/problem+json")
        body = answer.json()
        assert body["status"] == answer.status_code and body["type"].startswith("/problems/")
        if kind == "caddy":  # Caddy hands on keyledger's own body
            assert body["detail"] and "code" in body


def test_a_key_over_its_quota_gets_429_with_retry_after(server: Server, gateway: tuple[str, str]):
    kind, url = gateway
    admin = create_workspace(server, "enterprise", requests_per_minute=2, requests_per_day=1000)["admin_key"]
    key = issue(server, admin, ["read:nodes"])
    inside_one_minute()  # three answers straddling a minute's end would see two windows (failed twice so)
    answers = [_get(url, "/nodes/1", key["secret"]) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]
    limited = answers[-1]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert "ratelimit" in limited.headers and "ratelimit-policy" in limited.headers
    assert limited.json()["status"] == 429
    if kind == "caddy":
        assert limited.json()["code"] == "RATE_LIMITED"
    if kind == "nginx":  # nginx adds keyledger's quota headers to the app's answers too
        assert answers[0].headers["ratelimit-policy"] == limited.headers["ratelimit-policy"]
