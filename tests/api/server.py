"""A real keyledger API process for black-box tests: `keyledger serve` on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from keyledger.settings import Settings

KEYLEDGER = str(Path(sys.executable).parent / "keyledger")
OPERATOR_TOKEN = "klop_test-operator-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    settings: Settings
    log_path: Path
    redis_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)  # more `keyledger serve` options

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
        env["KEYLEDGER_DATABASE_URL"] = self.settings.database_url
        if self.settings.database_schema:
            env["KEYLEDGER_DATABASE_SCHEMA"] = self.settings.database_schema
        if self.redis_url:
            env["KEYLEDGER_REDIS_URL"] = self.redis_url
        env["KEYLEDGER_OPERATOR_TOKEN"] = OPERATOR_TOKEN
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> Server:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [KEYLEDGER, "serve", "--port", str(self.port), *self.args],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.log_path.parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"keyledger serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"keyledger serve did not become healthy: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def create_workspace(server: Server, plan: str = "starter", **limits: Any) -> dict[str, Any]:
    with server.client(OPERATOR_TOKEN) as client:
        response = client.post("/v1/workspaces", json={"name": "acme", "plan": plan, **limits})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
