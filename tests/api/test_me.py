"""`GET /v1/me`: the presented key's own state and workspace, for any valid key; refusals as problems."""

from __future__ import annotations

from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue, verify
from tests.timing import inside_one_minute


def test_a_key_reads_itself_and_its_workspace_without_using_quota(server: Server):
    created = create_workspace(server, "enterprise", requests_per_minute=1, requests_per_day=10)
    admin = created["admin_key"]
    reader = issue(server, admin, ["read:nodes"], name="reader")
    inside_one_minute()

    with server.client(reader["secret"]) as client:
        answers = [client.get("/v1/me") for _ in range(3)]  # more than the minute's quota of 1

    for answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["key"]["id"] == reader["key"]["id"]
        assert body["key"]["name"] == "reader"
        assert body["key"]["scopes"] == ["read:nodes"]
        assert body["workspace"] == {"id": created["workspace"]["id"], "name": "acme"}  # named, no limits
    assert verify(server, reader["secret"])["code"] == "VALID"  # /v1/me consumed nothing


def test_me_refuses_missing_unknown_and_revoked_keys(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    gone = issue(server, admin, ["read:nodes"])
    with server.client(admin["secret"]) as client:
        ws = created["workspace"]["id"]
        assert client.post(f"/v1/workspaces/{ws}/keys/{gone['key']['id']}/revoke").status_code == 200

    with server.client() as client:
        missing = client.get("/v1/me")
    with server.client("kl_not-a-key") as client:
        unknown = client.get("/v1/me")
    with server.client(gone["secret"]) as client:
        revoked = client.get("/v1/me")

    assert assert_problem(missing, 401)["code"] == "NOT_FOUND"
    assert assert_problem(unknown, 401)["code"] == "NOT_FOUND"
    body = assert_problem(revoked, 401)
    assert body["code"] == "REVOKED" and body["detail"] == "the presented key is revoked"
    assert revoked.headers["WWW-Authenticate"].startswith("Bearer")
    assert gone["secret"] not in revoked.text


def test_workspace_answers_name_the_live_key_limit(server: Server):
    created = create_workspace(server)
    admin = created["admin_key"]
    with server.client(admin["secret"]) as client:
        workspace = client.get(f"/v1/workspaces/{created['workspace']['id']}").json()
    assert workspace["live_keys"] == 1 and workspace["max_live_keys"] == 50
