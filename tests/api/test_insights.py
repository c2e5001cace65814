"""SPEC 8.2 insights and exposure over HTTP, the API in process with a controllable clock, on both backends.

The clock drives the API's decisions and usage (`ledger.clock`, `verification.clock`) and, patched
into the event library, the events' own timestamps: grants happen "days ago" as a test says.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import eventsourcing.domain
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from domain.application import utc_now
from keyledger.services import Services, build_services
from keyledger.settings import Settings
from tests.api.server import OPERATOR_TOKEN

DAY = timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


class Api:
    def __init__(self, client: TestClient, services: Services, clock: Clock) -> None:
        self.client, self.services, self.clock = client, services, clock
        created = client.post(
            "/v1/workspaces",
            json={"name": "acme", "plan": "pro"},
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ).json()
        self.ws = created["workspace"]["id"]
        self.admin_id = created["admin_key"]["key"]["id"]
        self.admin = {"Authorization": f"Bearer {created['admin_key']['secret']}"}

    def issue(self, name: str, scopes: list[str], **extra: Any) -> tuple[str, str]:
        body = self.client.post(
            f"/v1/workspaces/{self.ws}/keys", json={"name": name, "scopes": scopes, **extra}, headers=self.admin
        ).json()
        return body["key"]["id"], body["secret"]

    def verify(self, secret: str, scope: str, **extra: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.post("/v1/verify", json={"key": secret, "scope": scope, **extra}).json()
        return answer

    def auth(self, secret: str, method: str, uri: str, **headers: str) -> int:
        sent = {"Authorization": f"Bearer {secret}", "X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **headers}
        return self.client.get("/v1/auth", headers=sent).status_code

    def settle(self) -> None:
        """Usage as the API would show it within seconds: flushed and applied now."""
        self.services.stack.usage.flush()
        self.services.read_models.catch_up()

    def insights(self, days: int | None = None) -> dict[str, Any]:
        self.settle()
        params = {"days": days} if days is not None else {}
        answer = self.client.get(f"/v1/workspaces/{self.ws}/insights", params=params, headers=self.admin)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def findings(self, key_id: str, days: int | None = None) -> dict[str, dict[str, Any]]:
        found = [f for f in self.insights(days)["findings"] if f["key_id"] == key_id]
        by_kind = {f["kind"]: f for f in found}
        assert len(by_kind) == len(found)
        return by_kind


@pytest.fixture
def api(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    settings = settings.model_copy(update={"operator_token": SecretStr(OPERATOR_TOKEN)})
    services = build_services(settings)
    clock = Clock()
    services.ledger.clock = clock
    services.verification.clock = clock
    monkeypatch.setattr(eventsourcing.domain, "datetime_now_with_tzinfo", clock)
    with TestClient(create_app(services)) as client:
        yield Api(client, services, clock)


def test_a_key_that_only_read_yields_unused_scope_with_the_narrower_suggestion(api: Api):
    key_id, secret = api.issue("reader", ["write:nodes", "read:edges"])
    api.clock.offset = 10 * DAY
    answers = [api.verify(secret, "read:nodes")["code"] for _ in range(3)]
    assert api.auth(secret, "GET", "/nodes/7") == 204

    found = api.findings(key_id)
    short = api.findings(key_id, days=3)

    assert answers == ["VALID"] * 3
    assert set(found) == {"unused_scope"}
    finding = found["unused_scope"]
    assert finding["suggestion"] == {"scopes": ["read:nodes"]}
    assert finding["detail"]["unused"] == ["read:edges", "write:nodes"]
    assert finding["detail"]["needed"] == ["read:nodes"]
    assert finding["key_name"] == "reader"
    assert finding["observed_days"] == 10  # since the grant: shorter than the 90-day window
    assert short["unused_scope"]["observed_days"] == 3  # the window: shorter than since the grant


def test_observed_days_follow_the_grant_time_of_the_unused_scope(api: Api):
    key_id, secret = api.issue("grown", ["read:nodes"])
    api.clock.offset = 20 * DAY
    api.client.post(
        f"/v1/workspaces/{api.ws}/keys/{key_id}/scopes", json={"scopes": ["write:edges"]}, headers=api.admin
    )
    api.clock.offset = 25 * DAY
    api.verify(secret, "read:nodes")

    found = api.findings(key_id)

    assert found["unused_scope"]["suggestion"] == {"scopes": ["read:nodes"]}
    assert found["unused_scope"]["observed_days"] == 5  # write:edges was granted 5 days ago


def test_a_key_with_no_answers_yields_unused_key_and_one_answer_clears_it(api: Api):
    key_id, secret = api.issue("idle", ["read:nodes"])
    api.clock.offset = 4 * DAY + timedelta(hours=1)

    idle = api.findings(key_id)
    api.verify(secret, "read:nodes")
    used = api.findings(key_id)

    assert set(idle) == {"unused_key"}
    assert idle["unused_key"]["observed_days"] == 4
    assert idle["unused_key"]["suggestion"] == {"action": "revoke"}
    assert used == {}


def test_refused_write_answers_yield_denied_scope_with_counts(api: Api):
    key_id, secret = api.issue("writer", ["read:edges"])
    api.clock.offset = 2 * DAY
    assert api.auth(secret, "GET", "/edges") == 204
    refused = [api.verify(secret, "write:edges")["code"] for _ in range(3)]
    assert api.auth(secret, "POST", "/edges/1") == 403
    last = api.clock().replace(second=0, microsecond=0)

    found = api.findings(key_id)

    assert refused == ["INSUFFICIENT_SCOPE"] * 3
    assert set(found) == {"denied_scope"}  # read:edges was needed: no unused_scope
    denied = found["denied_scope"]
    assert denied["observed_days"] == 2
    [entry] = denied["detail"]["scopes"]
    assert entry["scope"] == "write:edges" and entry["count"] == 4
    assert datetime.fromisoformat(entry["last_seen"]) == last


def test_rotation_due_and_expiring_soon(api: Api):
    old_id, old_secret = api.issue("old", ["read:nodes"])
    soon_id, soon_secret = api.issue("soon", ["read:nodes"], expires_at=(utc_now() + 100 * DAY).isoformat())
    api.clock.offset = 91 * DAY
    api.verify(old_secret, "read:nodes")
    api.verify(soon_secret, "read:nodes")

    body = api.insights()
    kinds = {(f["kind"], f["key_id"]) for f in body["findings"]}

    assert body["window_days"] == 90
    assert ("rotation_due", old_id) in kinds and ("expiring_soon", soon_id) in kinds
    assert ("expiring_soon", old_id) not in kinds
    assert ("rotation_due", api.admin_id) in kinds and ("unused_key", api.admin_id) in kinds


@pytest.mark.parametrize("days", ["0", "366", "x", "1.5"])
def test_bad_days_are_422_problems(api: Api, days: str):
    answer = api.client.get(f"/v1/workspaces/{api.ws}/insights", params={"days": days}, headers=api.admin)
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_insights_need_an_admin_key(api: Api):
    _, reader = api.issue("auditor", ["read:events"])
    answer = api.client.get(f"/v1/workspaces/{api.ws}/insights", headers={"Authorization": f"Bearer {reader}"})
    assert answer.status_code == 403


def test_exposure_reports_secrets_scopes_counts_and_sources_as_sent(api: Api):
    key_id, first_secret = api.issue("leaky", ["read:nodes", "write:edges"])
    issued_at = api.clock()
    api.clock.offset = 1 * DAY
    since = api.clock()
    rotated = api.client.post(
        f"/v1/workspaces/{api.ws}/keys/{key_id}/rotate", json={"grace_seconds": 600}, headers=api.admin
    ).json()
    second_secret = rotated["secret"]
    api.clock.offset = 1 * DAY + timedelta(minutes=5)
    forwarded = {"X-Forwarded-For": "198.51.100.7, 10.0.0.1"}
    statuses = [api.auth(second_secret, "GET", "/nodes/1", **forwarded) for _ in range(3)]
    statuses.append(api.auth(first_secret, "GET", "/nodes/2", **{"X-Real-IP": "203.0.113.9"}))
    statuses.append(api.auth(second_secret, "GET", "/events", **forwarded))  # refused: no read:events
    api.clock.offset = 1 * DAY + timedelta(minutes=9)
    codes = [api.verify(second_secret, "write:edges", client_ip="203.0.113.9", endpoint="POST /edges")["code"]]
    codes.append(api.verify(second_secret, "read:nodes", client_ip="2001:db8::1")["code"])
    api.client.delete(f"/v1/workspaces/{api.ws}/keys/{key_id}/scopes/write:edges", headers=api.admin)
    api.clock.offset = 1 * DAY + timedelta(minutes=20)
    api.client.post(f"/v1/workspaces/{api.ws}/keys/{key_id}/revoke", json={"reason": "leaked"}, headers=api.admin)
    revoked_at = api.clock() - timedelta(seconds=1)
    codes.append(api.verify(second_secret, "read:nodes", client_ip="203.0.113.9")["code"])
    api.settle()
    history = api.client.get(f"/v1/workspaces/{api.ws}/keys/{key_id}/history", headers=api.admin).json()["items"]

    answer = api.client.get(
        f"/v1/workspaces/{api.ws}/keys/{key_id}/exposure", params={"since": since.isoformat()}, headers=api.admin
    )

    assert statuses == [204, 204, 204, 204, 403] and codes == ["VALID", "VALID", "REVOKED"]
    assert answer.status_code == 200, answer.text
    report = answer.json()
    fingerprints = [e["data"]["secret_fingerprint"] for e in history if "secret_fingerprint" in e["data"]]
    assert [s["fingerprint"] for s in report["secrets"]] == fingerprints
    first, second = report["secrets"]
    assert _t(first["valid_from"]) == _t(history[0]["occurred_at"])
    assert _t(first["valid_until"]) == _t(history[1]["occurred_at"]) + timedelta(minutes=10)  # the grace
    assert _t(second["valid_from"]) == _t(history[1]["occurred_at"])
    assert _t(second["valid_until"]) == _t(history[-1]["occurred_at"]) and history[-1]["type"] == "KeyRevoked"
    assert [s["scopes"] for s in report["scopes"]] == [["read:nodes", "write:edges"], ["read:nodes"], []]
    assert _t(report["scopes"][0]["from"]) <= issued_at + timedelta(seconds=1)
    assert report["requests"]["total"] == 8
    assert report["requests"]["allowed"] == 6  # four 204s and two VALID verifications
    assert report["requests"]["refused"] == 2  # the 403 and the REVOKED answer
    endpoints = {e["endpoint"]: (e["count"], e["allowed"]) for e in report["endpoints"]}
    assert endpoints == {
        "GET /nodes/1": (3, 3),
        "GET /nodes/2": (1, 1),
        "GET /events": (1, 0),
        "POST /edges": (1, 1),
        "POST /v1/verify": (2, 1),
    }
    sources = {s["address"]: s["count"] for s in report["sources"]}
    assert sources == {"198.51.100.7": 4, "203.0.113.9": 3, "2001:db8::1": 1}
    assert report["sources"][0]["address"] == "198.51.100.7"
    assert _t(report["until"]) >= revoked_at
    usage = api.client.get(f"/v1/workspaces/{api.ws}/usage", params={"key": key_id}, headers=api.admin).json()
    scopes = {s["scope"]: (s["allowed"], s["refused"]) for s in usage["items"][0]["scopes"]}
    assert scopes == {"read:nodes": (5, 0), "write:edges": (1, 0), "read:events": (0, 1)}


def test_exposure_of_an_unknown_key_is_404_and_a_bad_since_422(api: Api):
    key_id, _ = api.issue("k", ["read:nodes"])
    path = f"/v1/workspaces/{api.ws}/keys"
    unknown = api.client.get(f"{path}/{api.ws}/exposure", params={"since": utc_now().isoformat()}, headers=api.admin)
    bad = api.client.get(f"{path}/{key_id}/exposure", params={"since": "yesterday"}, headers=api.admin)
    naive = api.client.get(f"{path}/{key_id}/exposure", params={"since": "2026-12-01T10:00:00"}, headers=api.admin)
    missing = api.client.get(f"{path}/{key_id}/exposure", headers=api.admin)

    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    assert [bad.status_code, naive.status_code, missing.status_code] == [422, 422, 422]


def test_exposure_is_readable_with_read_events_and_not_with_other_scopes(api: Api):
    key_id, _ = api.issue("k", ["read:nodes"])
    _, auditor = api.issue("auditor", ["read:events"])
    _, other = api.issue("other", ["read:nodes"])
    path = f"/v1/workspaces/{api.ws}/keys/{key_id}/exposure"
    since = {"since": utc_now().isoformat()}

    allowed = api.client.get(path, params=since, headers={"Authorization": f"Bearer {auditor}"})
    refused = api.client.get(path, params=since, headers={"Authorization": f"Bearer {other}"})

    assert allowed.status_code == 200 and refused.status_code == 403


def test_a_bad_client_ip_is_refused_with_422(api: Api):
    _, secret = api.issue("k", ["read:nodes"])
    answer = api.client.post("/v1/verify", json={"key": secret, "scope": "read:nodes", "client_ip": "not-an-ip"})
    assert answer.status_code == 422


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_usage_reported_by_a_remote_guard_counts_its_scope_and_address(api: Api):
    key_id, secret = api.issue("guarded", ["write:nodes", "read:edges"])
    items = [
        {"key": secret, "endpoint": "GET /nodes/1", "status": 200, "scope": "read:nodes", "client_ip": "192.0.2.1"},
        {"key": secret, "endpoint": "GET /nodes/2", "status": 404, "scope": "read:nodes", "client_ip": "192.0.2.1"},
        {"key": secret, "endpoint": "POST /events", "status": 403, "scope": "write:events"},
        {"key": secret, "endpoint": "GET /jobs", "status": 200, "scope": "read:jobs"},  # outside the catalog
    ]
    sent = api.client.post("/v1/usage/report", json={"items": items})
    since = (utc_now() - timedelta(minutes=1)).isoformat()

    found = api.findings(key_id)
    usage = api.client.get(f"/v1/workspaces/{api.ws}/usage", params={"key": key_id}, headers=api.admin).json()
    report = api.client.get(
        f"/v1/workspaces/{api.ws}/keys/{key_id}/exposure", params={"since": since}, headers=api.admin
    ).json()

    assert sent.status_code == 202
    assert {s["scope"]: (s["allowed"], s["refused"]) for s in usage["items"][0]["scopes"]} == {
        "read:nodes": (2, 0),
        "write:events": (0, 1),
    }
    assert found["unused_scope"]["suggestion"] == {"scopes": ["read:nodes"]}
    assert found["denied_scope"]["detail"]["scopes"][0]["scope"] == "write:events"
    assert [(s["address"], s["count"]) for s in report["sources"]] == [("192.0.2.1", 2)]
    assert report["requests"]["total"] == 4
