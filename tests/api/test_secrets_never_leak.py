"""Plaintext secrets appear only in the answers to issue and rotate (and workspace creation)."""

from __future__ import annotations

import hashlib
import re

import httpx

from tests.api.server import OPERATOR_TOKEN, Server
from tests.storage import dump_rows


def test_secrets_appear_only_in_issue_and_rotate_answers(server: Server, backend):
    bodies: list[tuple[str, str]] = []  # (what, response text)

    def call(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
        response = client.request(method, path, **kwargs)
        bodies.append((f"{method} {path}", response.text))
        return response

    with server.client(OPERATOR_TOKEN) as operator:
        created = call(operator, "POST", "/v1/workspaces", json={"name": "leak", "plan": "pro"}).json()
    admin_secret = created["admin_key"]["secret"]
    ws = created["workspace"]["id"]
    with server.client(admin_secret) as admin:
        issued = call(admin, "POST", f"/v1/workspaces/{ws}/keys", json={"name": "k", "scopes": ["read:nodes"]}).json()
        key = issued["key"]["id"]
        rotated = call(admin, "POST", f"/v1/workspaces/{ws}/keys/{key}/rotate", json={"grace_seconds": 300}).json()
        issuing_answers = {
            "POST /v1/workspaces",
            f"POST /v1/workspaces/{ws}/keys",
            f"POST /v1/workspaces/{ws}/keys/{key}/rotate",
        }
        # Imported secrets (SPEC 8.1): by the secret itself, by its SHA-256, and refused ones (never echoed).
        imported_secret, hashed_secret = "legacy-LEAKCHECK-0123456789abcdef", "legacy-HASHED-LEAKCHECK-0123456789"
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/import", json={"name": "i", "secret": imported_secret})
        digest = hashlib.sha256(hashed_secret.encode()).hexdigest()
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/import", json={"name": "h", "sha256": digest})
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/import", json={"name": "d", "secret": imported_secret})  # 409
        refused_secret = "kl_refused-LEAKCHECK-0123456789"
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/import", json={"name": "r", "secret": refused_secret})  # 422
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/import", json={"name": "r", "secret": "short-LEAK\u00e9"})
        call(admin, "GET", f"/v1/workspaces/{ws}/audit")
        secrets = [admin_secret, issued["secret"], rotated["secret"], imported_secret, hashed_secret, refused_secret]
        for secret in (*secrets, secrets[1][:-1], "kl_" + "x" * 71, imported_secret[:-1]):
            call(
                admin,
                "POST",
                "/v1/verify",
                json={"key": secret, "scope": "read:nodes", "endpoint": "GET /nodes"},
            )
            call(admin, "POST", "/v1/verify", json={"key": secret, "scope": "bad scope"})
            call(admin, "POST", "/v1/verify", json={"key": secret})
            call(
                httpx.Client(base_url=server.url),
                "GET",
                "/v1/auth",
                headers={
                    "Authorization": f"Bearer {secret}",
                    "X-Forwarded-Method": "GET",
                    "X-Forwarded-Uri": "/nodes",
                },
            )
        call(admin, "GET", f"/v1/workspaces/{ws}")
        call(admin, "GET", f"/v1/workspaces/{ws}/keys")
        call(admin, "GET", f"/v1/workspaces/{ws}/keys/{key}")
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/{key}/scopes", json={"scopes": ["read:edges"]})
        call(admin, "DELETE", f"/v1/workspaces/{ws}/keys/{key}/scopes/read:edges")
        call(admin, "GET", f"/v1/workspaces/{ws}/usage")
        call(admin, "GET", "/v1/me")
        call(admin, "POST", f"/v1/workspaces/{ws}/keys/{key}/revoke", json={"reason": "test"})
        call(admin, "GET", "/healthz")
        call(admin, "GET", "/metrics")

    for what, text in bodies:
        for secret in secrets:
            if secret in text:
                assert what in issuing_answers, f"{what} answered with a secret"
    assert sum(any(s in text for s in secrets) for _, text in bodies) == 3
    log = server.log()
    assert "POST /v1/verify" in log  # the log was captured
    rows = [row for table in dump_rows(backend.settings).values() for row in table]
    for secret in secrets:
        assert secret not in log
        assert not any(secret.encode() in row for row in rows)
        assert not re.search(re.escape(secret[3:40]), log)
    for what, text in bodies:  # not even a part of an imported or refused secret in any answer
        for secret in secrets[3:]:
            assert "LEAKCHECK" not in text and secret[:20] not in text, what
