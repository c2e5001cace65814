"""The verifiable audit log over HTTP (SPEC 8.4), on a real server, SQLite and PostgreSQL.

Checkpoints are checked with `cryptography` against the served public key, and proofs with the
independent RFC 9162 implementation (tests/rfc9162.py) over leaves the test encodes from the
raw stored rows.
"""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests import rfc9162
from tests.api.server import OPERATOR_TOKEN, Server, create_workspace
from tests.api.test_answers import assert_problem, issue
from tests.audit.tamper import Store


def leaves(server: Server) -> list[tuple[int, bytes]]:
    rows = Store(server.settings).sql(
        "SELECT {pos}, originator_id, originator_version, topic, state FROM {events} ORDER BY {pos}"
    )
    return [
        (p, rfc9162.hash_leaf(rfc9162.leaf_bytes_from_readme(p, UUID(str(oid)), v, t, bytes(s))))
        for p, oid, v, t, s in rows
    ]


def public_key(server: Server) -> bytes:
    with server.client() as client:  # no credentials
        response = client.get("/v1/audit/public-key")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["algorithm"] == "Ed25519"
    raw = base64.b64decode(body["public_key"], validate=True)
    assert len(raw) == 32
    return raw


def make_checkpoint(server: Server) -> dict[str, Any]:
    with server.client(OPERATOR_TOKEN) as client:
        response = client.post("/v1/audit/checkpoint")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_signed(checkpoint: dict[str, Any], key: bytes) -> None:
    root64 = base64.b64encode(bytes.fromhex(checkpoint["root_hash"])).decode()
    body = f"{checkpoint['origin']}\n{checkpoint['tree_size']}\n{root64}\n{checkpoint['timestamp']}\n"
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(base64.b64decode(checkpoint["signature"]), body.encode())
    except InvalidSignature:
        pytest.fail(f"the checkpoint's signature does not hold: {checkpoint}")


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    created: dict[str, Any] = create_workspace(server, "pro")["admin_key"]
    return created


def test_a_checkpoint_signs_the_root_of_every_stored_event(server: Server, admin: dict[str, Any]):
    issue(server, admin, ["read:nodes"])

    made = make_checkpoint(server)
    with server.client(admin["secret"]) as client:
        latest = client.get("/v1/audit/checkpoint")

    assert latest.status_code == 200, latest.text
    assert latest.json()["tree_size"] >= made["tree_size"]
    assert_signed(made, public_key(server))
    stored = [h for _, h in leaves(server)]
    assert made["root_hash"] == rfc9162.mth(stored[: made["tree_size"]]).hex()
    assert made["timestamp"].endswith("Z")


def test_inclusion_and_consistency_proofs_check_out_with_the_rfc(server: Server, admin: dict[str, Any]):
    old = make_checkpoint(server)
    key = issue(server, admin, ["read:nodes"])
    new = make_checkpoint(server)
    stored = leaves(server)
    hashes = [h for _, h in stored]
    position = next(p for p, _ in reversed(stored[: new["tree_size"]]))
    index = [p for p, _ in stored].index(position)

    with server.client(admin["secret"]) as client:
        inclusion = client.get("/v1/audit/proof/inclusion", params={"position": position})
        older = client.get(
            "/v1/audit/proof/inclusion", params={"position": stored[0][0], "tree_size": old["tree_size"]}
        )
        consistency = client.get(
            "/v1/audit/proof/consistency", params={"from": old["tree_size"], "to": new["tree_size"]}
        )

    assert key["key"]["id"]
    body = inclusion.json()
    assert (body["leaf_index"], body["tree_size"], body["leaf_hash"]) == (index, new["tree_size"], hashes[index].hex())
    root = bytes.fromhex(new["root_hash"])
    assert rfc9162.check_inclusion(
        index, new["tree_size"], hashes[index], [bytes.fromhex(h) for h in body["hashes"]], root
    )
    first = older.json()
    assert rfc9162.check_inclusion(
        0, old["tree_size"], hashes[0], [bytes.fromhex(h) for h in first["hashes"]], bytes.fromhex(old["root_hash"])
    )
    assert rfc9162.check_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(old["root_hash"]),
        root,
        [bytes.fromhex(h) for h in consistency.json()["hashes"]],
    )


def test_who_may_read_and_make_checkpoints(server: Server, admin: dict[str, Any]):
    reader = issue(server, admin, ["read:events"])
    make_checkpoint(server)

    with server.client() as anonymous:
        no_credentials = anonymous.get("/v1/audit/checkpoint")
        no_proof = anonymous.get("/v1/audit/proof/inclusion", params={"position": 1})
    with server.client(reader["secret"]) as client:
        not_admin = client.get("/v1/audit/checkpoint")
    with server.client(admin["secret"]) as client:
        admin_post = client.post("/v1/audit/checkpoint")
    with server.client(OPERATOR_TOKEN) as client:
        operator_get = client.get("/v1/audit/checkpoint")

    assert_problem(no_credentials, 401)
    assert_problem(no_proof, 401)
    assert_problem(not_admin, 403)
    assert_problem(admin_post, 401)
    assert operator_get.status_code == 200


def test_malformed_proof_requests_are_422_and_impossible_ones_404(server: Server, admin: dict[str, Any]):
    size = make_checkpoint(server)["tree_size"]

    with server.client(admin["secret"]) as client:
        too_big = client.get("/v1/audit/proof/inclusion", params={"position": 1, "tree_size": size + 1000})
        unknown = client.get("/v1/audit/proof/inclusion", params={"position": 2**62})
        zero = client.get("/v1/audit/proof/inclusion", params={"position": 0})
        huge = client.get("/v1/audit/proof/inclusion", params={"position": 2**64})
        backwards = client.get("/v1/audit/proof/consistency", params={"from": size, "to": 1})
        beyond = client.get("/v1/audit/proof/consistency", params={"from": 1, "to": size + 1000})
        missing = client.get("/v1/audit/proof/consistency", params={"from": 1})

    for response in (zero, huge, missing):
        assert_problem(response, 422)
    for response in (unknown, too_big, backwards, beyond):  # well-formed, but no such proof
        assert_problem(response, 404)
