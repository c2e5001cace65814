"""SPEC 8.1 import: a key issued by another system, by its secret or the secret's SHA-256, verifies by digest."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from domain.imports import import_digest
from keyledger.bootstrap import open_ledger
from keyledger.services import build_services
from keyledger.settings import Settings
from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, forward, issue, verify


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    key: dict[str, Any] = create_workspace(server, "pro")["admin_key"]
    return key


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_key_imported_by_sha256_verifies_with_the_original_secret_and_rotates_to_a_native_one(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    original = "sk_live_legacy-0123456789-abcdef"
    body = {"name": "legacy", "scopes": ["read:nodes"], "sha256": sha256(original).upper(), "owner_id": "cust_9"}
    with server.client(admin["secret"]) as client:
        imported = client.post(f"/v1/workspaces/{ws}/keys/import", json=body)
    key = imported.json()["key"]
    path = f"/v1/workspaces/{ws}/keys/{key['id']}"

    answer = verify(server, original)
    gateway = forward(server, original)
    wrong = verify(server, original[:-1] + "X")
    with server.client(admin["secret"]) as client:
        rotated = client.post(f"{path}/rotate", json={"grace_seconds": 0}).json()
        history = client.get(f"{path}/history").json()["items"]
    after = verify(server, original)
    native = verify(server, rotated["secret"])

    assert imported.status_code == 201 and imported.json().keys() == {"key"}  # no secret
    assert key["imported"] is True and key["status"] == "active" and key["owner_id"] == "cust_9"
    assert answer["code"] == "VALID" and answer["key_id"] == key["id"] and answer["name"] == "legacy"
    assert gateway.status_code == 204 and gateway.headers["X-Keyledger-Key-Id"] == key["id"]
    assert wrong["code"] == "NOT_FOUND" and wrong["key_id"] is None
    assert rotated["secret"].startswith("kl_") and rotated["key"]["imported"] is True
    assert after["code"] == "EXPIRED" and native["code"] == "VALID" and native["key_id"] == key["id"]
    assert [e["type"] for e in history] == ["KeyImported", "KeyRotated"]
    assert history[0]["actor"] == admin["key"]["id"] and history[0]["data"]["imported"] is True
    assert history[0]["data"]["secret_fingerprint"].startswith("fp_")
    assert sha256(original) not in json.dumps(history)


def test_a_key_imported_by_its_secret_verifies_keeps_its_rules_and_can_be_revoked(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    original = "legacy key with spaces ~!@#$%^&*()"
    with server.client(admin["secret"]) as client:
        imported = client.post(
            f"/v1/workspaces/{ws}/keys/import", json={"name": "old", "scopes": ["read:nodes"], "secret": original}
        )
        key_id = imported.json()["key"]["id"]
        scope = verify(server, original, "write:nodes")
        client.post(f"/v1/workspaces/{ws}/keys/{key_id}/revoke")
        audit = client.get(f"/v1/workspaces/{ws}/audit", params={"key": key_id}).json()["items"]

    assert imported.status_code == 201
    assert scope["code"] == "INSUFFICIENT_SCOPE"
    assert verify(server, original)["code"] == "REVOKED"
    assert [e["type"] for e in audit] == ["KeySlotTaken", "KeyImported", "KeyRevoked", "KeySlotReleased"]


def test_a_digest_held_by_any_key_is_refused_with_409(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    original = "shared-legacy-secret-0000000000"
    native = issue(server, admin, ["read:nodes"])
    other = create_workspace(server, "pro")["admin_key"]
    with server.client(admin["secret"]) as client:
        first = client.post(f"/v1/workspaces/{ws}/keys/import", json={"name": "a", "secret": original})
        again = client.post(f"/v1/workspaces/{ws}/keys/import", json={"name": "b", "sha256": sha256(original)})
        of_native = client.post(
            f"/v1/workspaces/{ws}/keys/import", json={"name": "c", "sha256": sha256(native["secret"])}
        )
        listed = client.get(f"/v1/workspaces/{ws}/keys").json()["items"]
    with server.client(other["secret"]) as client:
        elsewhere = client.post(
            f"/v1/workspaces/{other['key']['workspace_id']}/keys/import", json={"name": "d", "secret": original}
        )

    assert first.status_code == 201
    for refused in (again, of_native, elsewhere):
        assert assert_problem(refused, 409)["title"] == "Secret already imported"
        assert original not in refused.text
    assert [k["name"] for k in listed if k["name"] in "abcd"] == ["a"]


BAD_IMPORTS = [
    {"secret": "kl_" + "a" * 40},
    {"secret": "short-secret"},
    {"secret": "x" * 257},
    {"secret": "non-ascii-secret-é-0123456789"},
    {"secret": "control\tcharacter-0123456789"},
    {"secret": "both-given-0123456789", "sha256": "a" * 64},
    {},
    {"sha256": "a" * 63},
    {"sha256": "g" * 64},
    {"sha256": 5},
    {"secret": "fine-secret-0123456789", "scopes": ["read:nowhere"]},
    {"secret": "fine-secret-0123456789", "meta": [1]},
    {"secret": "fine-secret-0123456789", "credits": {"remaining": 1}},
]


@pytest.mark.parametrize("extra", BAD_IMPORTS, ids=[str(i) for i in range(len(BAD_IMPORTS))])
def test_bad_imports_are_refused_with_422_and_change_nothing(server: Server, admin, extra: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        before = client.get(f"/v1/workspaces/{ws}").json()["live_keys"]
        refused = client.post(f"/v1/workspaces/{ws}/keys/import", json={"name": "bad", **extra})
        after = client.get(f"/v1/workspaces/{ws}").json()["live_keys"]

    problem = assert_problem(refused, 422)
    assert before == after
    secret = extra.get("secret")
    if isinstance(secret, str):
        assert secret not in json.dumps(problem)


def test_a_process_starting_knows_every_imported_digest_from_the_keys_read_model(settings: Settings):
    ledger = open_ledger(settings)
    try:
        workspace = ledger.create_workspace("acme", "pro").workspace.id
        digest = import_digest("legacy-known-at-start-0123456789")
        key_id = ledger.import_key(workspace, "old", ["read:nodes"], digest).key.id
    finally:
        ledger.close()

    services = build_services(settings)
    services.start()
    try:
        known = services.stack.cache.holds_digest(digest)
        loads = services.stack.cache.loads
        found = services.stack.cache.imported(digest)
    finally:
        services.stop()

    assert known and found == key_id and services.stack.cache.loads == loads  # no store read for it
