"""SPEC 8.1 metadata and owner: `meta` and `owner_id` on issue and PATCH, the `owner_id` filter, verify answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue, verify


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    key: dict[str, Any] = create_workspace(server, "pro")["admin_key"]
    return key


def test_meta_and_owner_are_kept_changed_filtered_and_answered_by_verify(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    meta = {"team": "dätä\u0000", "tier": 2, "tags": ["a", {"_type_": "x", "_data_": 1}]}  # any JSON object
    alice = issue(server, admin, ["read:nodes"], name="alice's", meta=meta, owner_id="user_alice")
    issue(server, admin, ["read:nodes"], name="bob's", owner_id="user_bob")
    key_id = alice["key"]["id"]
    path = f"/v1/workspaces/{ws}/keys/{key_id}"
    with server.client(admin["secret"]) as client:
        listed = client.get(f"/v1/workspaces/{ws}/keys", params={"owner_id": "user_alice"}).json()["items"]
        renamed = client.patch(path, json={"name": "alice (prod)", "owner_id": "user_carol"})
        unchanged = client.patch(path, json={"name": "alice (prod)"})
        after_rename = verify(server, alice["secret"])
        cleared = client.patch(path, json={"meta": None})
        carol = client.get(f"/v1/workspaces/{ws}/keys", params={"owner_id": "user_carol"}).json()["items"]
        nobody = client.get(f"/v1/workspaces/{ws}/keys", params={"owner_id": "user_alice"}).json()["items"]
        history = client.get(f"{path}/history").json()["items"]
        audit = client.get(f"/v1/workspaces/{ws}/audit", params={"type": "KeyDetailsChanged"}).json()["items"]
        then = client.get(f"{path}/state", params={"at": history[0]["occurred_at"]}).json()

    answer = verify(server, alice["secret"])
    assert alice["key"]["meta"] == meta and alice["key"]["owner_id"] == "user_alice"
    assert [k["id"] for k in listed] == [key_id]
    assert renamed.status_code == 200 and renamed.json()["name"] == "alice (prod)"
    assert renamed.json()["owner_id"] == "user_carol" and renamed.json()["meta"] == meta
    assert unchanged.status_code == 200
    assert after_rename["name"] == "alice (prod)" and after_rename["owner_id"] == "user_carol"
    assert after_rename["meta"] == meta
    assert cleared.json()["meta"] is None and cleared.json()["owner_id"] == "user_carol"
    assert [k["id"] for k in carol] == [key_id] and nobody == []
    assert answer["code"] == "VALID" and answer["meta"] is None and answer["name"] == "alice (prod)"
    assert [e["type"] for e in history] == ["KeyIssued", "KeyDetailsChanged", "KeyDetailsChanged"]
    assert history[1]["actor"] == admin["key"]["id"]
    assert history[1]["data"]["meta"] == meta and history[2]["data"]["meta"] is None
    assert history[0]["data"]["meta"] == meta and history[0]["data"]["owner_id"] == "user_alice"
    assert [e["key_id"] for e in audit] == [key_id, key_id]
    assert then["key"]["owner_id"] == "user_alice" and then["key"]["name"] == "alice's"


def test_verify_of_an_unknown_key_carries_no_details(server: Server):
    answer = verify(server, "kl_nothing")
    assert answer["code"] == "NOT_FOUND" and answer["name"] is None and answer["meta"] is None


JSON = {"Content-Type": "application/json"}
BAD_DETAILS = [
    {"meta": "text"},
    {"meta": [1, 2]},
    {"meta": {"big": "x" * 4096}},
    {"meta": {"surrogate": "a\ud800b"}},
    {"owner_id": ""},
    {"owner_id": "x" * 201},
    {"owner_id": "tab\there"},
    {"owner_id": 7},
    {"name": None},
    {"name": " "},
    {"colour": "blue"},
]


@pytest.mark.parametrize("body", BAD_DETAILS, ids=[next(iter(b)) for b in BAD_DETAILS])
def test_bad_details_are_refused_with_422_and_change_nothing(server: Server, admin, body: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"], owner_id="o1", meta={"a": 1})
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        # Sent as ASCII JSON: a lone surrogate escaped, as a client may send one.
        patched = client.patch(path, content=json.dumps(body), headers=JSON)
        issued = client.post(
            f"/v1/workspaces/{ws}/keys", content=json.dumps({"name": "n", "scopes": [], **body}), headers=JSON
        )
        history = client.get(f"{path}/history").json()["items"]
        shown = client.get(path).json()

    assert_problem(patched, 422)
    if "name" not in body:
        assert_problem(issued, 422)
    assert [e["type"] for e in history] == ["KeyIssued"]
    assert shown["owner_id"] == "o1" and shown["meta"] == {"a": 1}


def test_a_bad_owner_filter_is_422_and_a_revoked_key_keeps_its_details(server: Server, admin):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"], owner_id="o1")
    path = f"/v1/workspaces/{ws}/keys/{key['key']['id']}"
    with server.client(admin["secret"]) as client:
        empty = client.get(f"/v1/workspaces/{ws}/keys", params={"owner_id": ""})
        client.post(f"{path}/revoke")
        late = client.patch(path, json={"owner_id": "o2"})

    assert_problem(empty, 422)
    assert assert_problem(late, 409)["title"] == "Key revoked"
