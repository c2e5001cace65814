"""The OpenAPI document holds for a real server: schemathesis, with its default checks, finds nothing.

`schemathesis run` (the version pinned in constraints.txt) tests every operation of `/openapi.json`
against a running `keyledger serve`, on SQLite and on PostgreSQL with Redis, through all its default
phases (explicit examples, coverage of boundaries and invalid values, random fuzzing, stateful
sequences) and all its default checks: no 5xx, every status, content type, header and body as
documented, valid requests accepted and invalid ones refused, authentication not ignored, missing
required headers refused, unsupported methods answered 405 with `Allow`. Examples are bounded
(`MAX_EXAMPLES` per operation) and generation is derandomized (schemathesis's deterministic mode),
with no example database or cache kept between runs, so that CI stays fast and stable.

Credentials come from a workspace made for the run: the operator token for the operator's routes,
the workspace's admin key for its routes (`admin` includes `read:events`), and for `/v1/auth` a key
holding `read:nodes` only (an admin key passes any forwarded request, which leaves nothing to refuse).
Each backend is run three times (`config`): with the path parameters `ws` and `key` pinned to that
workspace and to live keys, so that requests reach past "not found"; with `key` pinned to a revoked key
(409s); and with both generated (malformed and unknown ids).

Not run, since not in the document: `/dashboard` (static files, left out of the schema) and FastAPI's
`/docs`, `/redoc` and `/openapi.json`. The server uses the default scope catalog: with its 9 scopes no
request can ask for more than the 10 a key may hold, a limit on distinct scopes that JSON Schema
cannot state (`maxItems` would count repeats, which the server merges). Two rules compare values,
which JSON Schema cannot state either: `schemathesis_hooks.py` keeps them in valid requests. One check
is off in one phase, below (`config`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Backend
from tests.api.server import OPERATOR_TOKEN, Server, create_workspace

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def served(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("conformance")
    running = Server(backend.settings, folder / "server.log", backend.redis_url).start()
    try:
        yield running
    finally:
        running.stop()


STREAMS = 2  # operations answering an endless event stream: left to test_event_stream


def _toml(value: Any) -> str:
    """A TOML value: strings and numbers as JSON writes them (which TOML reads alike), tables inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def config(server: Server, ids: str) -> str:
    """Schemathesis's settings for this server, with a workspace and keys made for the run (TOML).

    `ids`: `live` pins `ws` and `key` to the workspace and to keys made to be acted on, each command
    that ends a key's use (revoke, suspend) on a key of its own; `revoked` pins `key` to a revoked key
    (every command on it is refused with 409); `generated` leaves both to schemathesis.
    """
    admin = create_workspace(server)
    ws, admin_secret = admin["workspace"]["id"], admin["admin_key"]["secret"]
    with server.client(admin_secret) as client:
        issued = {
            name: client.post(f"/v1/workspaces/{ws}/keys", json={"name": name, "scopes": ["read:nodes"]})
            for name in ("target", "revoked", "suspended", "gateway")
        }
        assert all(r.status_code == 201 for r in issued.values()), [r.text for r in issued.values()]
        keys = {name: response.json()["key"]["id"] for name, response in issued.items()}
        if ids == "revoked":
            assert client.post(f"/v1/workspaces/{ws}/keys/{keys['revoked']}/revoke").status_code == 200
    gateway = issued["gateway"].json()["secret"]

    def bearer(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    def key_of(name: str) -> dict[str, dict[str, str]]:
        return {"parameters": {"path.key": keys[name]}} if ids == "live" else {}

    operations = [
        (
            ["POST /v1/workspaces", "PUT /v1/workspaces/{ws}/plan", "POST /v1/audit/checkpoint"],
            {"headers": bearer(OPERATOR_TOKEN)},
        ),
        (["GET /v1/auth"], {"headers": bearer(gateway)}),
        (["POST /v1/workspaces/{ws}/keys/{key}/revoke"], key_of("revoked")),
        (
            ["POST /v1/workspaces/{ws}/keys/{key}/suspend", "POST /v1/workspaces/{ws}/keys/{key}/resume"],
            key_of("suspended"),
        ),
    ]
    lines = [
        f"hooks = {_toml(str(HOOKS))}",
        f"headers = {_toml(bearer(admin_secret))}",
        f'[generation]\nmax-examples = {MAX_EXAMPLES}\ndeterministic = true\ndatabase = "none"',
        "[cache]\nenabled = false",
        # The one check off in one phase: in stateful sequences, a value a link takes from a response can
        # replace the invalid part of a case generated as invalid, and the check still expects it refused
        # (schemathesis issue #2983, open). Invalid requests are checked by the coverage and fuzzing
        # phases, for every operation.
        "[phases.stateful.checks]\nnegative_data_rejection = { enabled = false }",
    ]
    if ids != "generated":
        pinned = keys["target" if ids == "live" else "revoked"]
        lines.insert(2, f"parameters = {_toml({'path.ws': ws, 'path.key': pinned})}")
    # The change streams never end (they follow the store); their answers are checked by test_event_stream.
    lines.append('[[operations]]\ninclude-path-regex = "/stream$"\nenabled = false')
    for names, settings in operations:
        if settings:
            lines.append(f"[[operations]]\ninclude-name = {_toml(names)}")
            lines += [f"{name} = {_toml(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("ids", ["live", "revoked", "generated"])
def test_schemathesis_finds_nothing(served: Server, tmp_path: Path, ids: str):
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(served, ids))
    run = subprocess.run(
        [SCHEMATHESIS, "--config-file", str(config_file), "run", f"{served.url}/openapi.json", "--no-color"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-20_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report[-3000:]
    chosen, total, tested = map(int, selected.groups())
    assert chosen == tested and total - chosen == STREAMS, report[-3000:]  # every operation but the streams tested
    with httpx.Client(base_url=served.url) as client:  # the server is still up: nothing crashed it
        assert client.get("/healthz").status_code == 200
