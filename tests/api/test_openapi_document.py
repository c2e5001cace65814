"""The OpenAPI document: each operation's statuses as problem+json, and parameters as strict as the server.

The document is built from the app alone (no store); the patterns it states for what the domain
checks are held to the domain's own checks by property tests. Then, on a real server (SQLite and
PostgreSQL), what schemathesis found: see `test_openapi_conformance.py` for the whole run.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from api.app import create_app
from api.context import Services
from api.forwarded_path import FORWARDED_URI_PATTERN, normalise
from api.openapi import document
from api.schemas import NAME_SCHEMA, TIME_SCHEMA, UtcTime
from domain.scopes import ScopeCatalog
from domain.workspace import check_name
from tests.api.server import Server, create_workspace
from tests.api.test_answers import assert_problem, issue, verify

OPERATOR = {401, 422, 503}
KEY = {401, 403, 404, 422, 503}  # a key of the path's workspace holding a scope
COMMAND = KEY | {400, 409}  # ... that changes something, with a JSON body
EXPECTED = {
    ("POST", "/v1/workspaces"): {201} | OPERATOR | {400},
    ("PUT", "/v1/workspaces/{ws}/plan"): {200} | OPERATOR | {400, 404, 409},
    ("GET", "/v1/workspaces/{ws}"): {200} | KEY,
    ("POST", "/v1/workspaces/{ws}/keys"): {201} | COMMAND,
    ("POST", "/v1/workspaces/{ws}/keys/import"): {201} | COMMAND,
    ("GET", "/v1/workspaces/{ws}/keys"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/keys/{key}"): {200} | KEY,
    ("PATCH", "/v1/workspaces/{ws}/keys/{key}"): {200} | COMMAND,
    ("PUT", "/v1/workspaces/{ws}/keys/{key}/limits"): {200} | COMMAND,
    ("DELETE", "/v1/workspaces/{ws}/keys/{key}/limits"): {200} | KEY | {409},
    ("PUT", "/v1/workspaces/{ws}/keys/{key}/credits"): {200} | COMMAND,
    ("POST", "/v1/workspaces/{ws}/keys/{key}/scopes"): {200} | COMMAND,
    ("DELETE", "/v1/workspaces/{ws}/keys/{key}/scopes/{scope}"): {200} | KEY | {409},
    ("POST", "/v1/workspaces/{ws}/keys/{key}/rotate"): {200} | COMMAND,
    ("POST", "/v1/workspaces/{ws}/keys/{key}/revoke"): {200} | COMMAND,
    ("POST", "/v1/workspaces/{ws}/keys/{key}/suspend"): {200} | COMMAND,
    ("POST", "/v1/workspaces/{ws}/keys/{key}/resume"): {200} | KEY | {409},
    ("GET", "/v1/workspaces/{ws}/usage"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/insights"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/keys/{key}/exposure"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/keys/{key}/history"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/keys/{key}/state"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/audit"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/audit/access"): {200} | KEY,
    ("GET", "/v1/workspaces/{ws}/events/stream"): {200} | KEY,
    ("GET", "/v1/changes/stream"): {200} | OPERATOR,
    ("GET", "/v1/me"): {200, 401, 503},
    ("POST", "/v1/verify"): {200, 400, 422, 429, 503},
    ("GET", "/v1/auth"): {204, 400, 401, 403, 429, 503},
    ("POST", "/v1/usage/report"): {202, 400, 422, 503},
    ("GET", "/v1/audit/public-key"): {200, 503},
    ("GET", "/v1/audit/checkpoint"): {200, 401, 403, 404, 503},
    ("POST", "/v1/audit/checkpoint"): {200, 401, 503},
    ("GET", "/v1/audit/proof/inclusion"): {200, 401, 403, 404, 422, 503},
    ("GET", "/v1/audit/proof/consistency"): {200, 401, 403, 404, 422, 503},
    ("GET", "/healthz"): {200},
    ("GET", "/readyz"): {200, 503},
    ("GET", "/metrics"): {200},
}


def build(catalog: ScopeCatalog | None = None) -> dict[str, Any]:
    app = create_app(cast(Services, SimpleNamespace()))  # the document needs the routes only
    return document(app, catalog or ScopeCatalog())


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, item in doc["paths"].items() for method, op in item.items()}


def test_every_operation_documents_the_statuses_it_answers():
    documented = {route: {int(s) for s in op["responses"]} for route, op in operations(build()).items()}

    for route, statuses in EXPECTED.items():
        assert documented.pop(route) == statuses, route
    # Operations added after this table: they answer what any route of a workspace answers, at least.
    for route, statuses in documented.items():
        assert statuses >= KEY, route


def test_every_error_is_problem_json_with_its_headers():
    doc = build()

    assert "HTTPValidationError" not in str(doc)
    for route, op in operations(doc).items():
        for status, response in op["responses"].items():
            if status.startswith("2"):
                continue
            assert response["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
            headers = {name for name, h in response.get("headers", {}).items() if h["required"]}
            expected = {"401": {"WWW-Authenticate"}, "403": {"WWW-Authenticate"}, "429": {"Retry-After"}}
            if route == ("GET", "/v1/auth"):
                expected["429"] = set()  # USAGE_EXCEEDED without a refill due has no Retry-After (SPEC 8.1)
            assert headers == expected.get(status, {"Retry-After"} if status == "503" else set()), (route, status)
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail"}
    auth = operations(doc)[("GET", "/v1/auth")]["responses"]
    assert {"RateLimit", "RateLimit-Policy", "X-Keyledger-Key-Id"} <= auth["204"]["headers"].keys()


def test_schemes_scopes_and_forwarded_headers():
    doc = build(ScopeCatalog.of(["jobs", "events"]))
    ops = operations(doc)

    assert doc["components"]["securitySchemes"].keys() == {"operatorToken", "apiKey"}
    assert ops[("POST", "/v1/workspaces")]["security"] == [{"operatorToken": []}]
    assert ops[("GET", "/v1/workspaces/{ws}/audit")]["security"] == [{"apiKey": ["read:events"]}]
    assert ops[("GET", "/v1/me")]["security"] == [{"apiKey": []}]
    assert "security" not in ops[("POST", "/v1/verify")]  # the key is in the body
    assert "security" not in ops[("GET", "/v1/audit/public-key")]
    assert ops[("POST", "/v1/audit/checkpoint")]["security"] == [{"operatorToken": []}]
    for path in ("/v1/audit/checkpoint", "/v1/audit/proof/inclusion", "/v1/audit/proof/consistency"):
        assert ops[("GET", path)]["security"] == [{"operatorToken": []}, {"apiKey": ["admin"]}]
    inclusion = {p["name"]: p for p in ops[("GET", "/v1/audit/proof/inclusion")]["parameters"]}
    assert inclusion["position"]["required"] and not inclusion["tree_size"]["required"]
    consistency = {p["name"] for p in ops[("GET", "/v1/audit/proof/consistency")]["parameters"]}
    assert consistency == {"from", "to"}
    assert doc["components"]["schemas"]["Scope"]["enum"] == [
        "admin",
        "read:events",
        "read:jobs",
        "write:events",
        "write:jobs",
    ]
    headers = {p["name"]: p for p in ops[("GET", "/v1/auth")]["parameters"]}
    assert headers["x-forwarded-method"]["required"] and headers["x-forwarded-uri"]["required"]
    body = doc["components"]["schemas"]["WorkspaceCreate"]
    assert body["properties"]["plan"]["enum"] == ["starter", "pro", "enterprise"]
    assert body["properties"]["name"]["maxLength"] == 100 and body["additionalProperties"] is False


@settings(max_examples=300, deadline=None)
@given(st.from_regex(FORWARDED_URI_PATTERN, fullmatch=True))
def test_a_forwarded_uri_the_document_admits_names_a_resource(uri: str):
    path, resource = normalise(uri)  # no AmbiguousPath

    assert resource and path.startswith("/")


@settings(max_examples=300, deadline=None)
@given(st.from_regex(NAME_SCHEMA["pattern"], fullmatch=True).filter(lambda s: len(s) <= NAME_SCHEMA["maxLength"]))
def test_a_name_the_document_admits_is_accepted(name: str):
    assert check_name(name)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_a_time_is_accepted_when_the_document_admits_it(moment: datetime):
    text = moment.isoformat()
    admitted = re.search(TIME_SCHEMA["pattern"], text) and not re.search(TIME_SCHEMA["not"]["pattern"], text)

    if admitted:
        TypeAdapter(UtcTime).validate_python(text)
    elif not text.startswith(("1969-12-31", "1970-01-01", "9999-12-31")):  # at the bounds, it is safe
        with pytest.raises(ValidationError):
            TypeAdapter(UtcTime).validate_python(text)


# On a real server: what schemathesis found.


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, Any]:
    return create_workspace(server)["admin_key"]


def test_an_event_type_filter_is_refused_unless_a_name(server: Server, admin: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        nul = client.get(f"/v1/workspaces/{ws}/audit", params={"type": "Key\x00Issued"})  # was 500 on PostgreSQL
        named = client.get(f"/v1/workspaces/{ws}/audit", params={"type": "KeyIssued"})

    assert assert_problem(nul, 422)["type"] == "/problems/invalid-request"
    assert named.status_code == 200 and [e["type"] for e in named.json()["items"]] == ["KeyIssued"]


def test_a_405_allows_every_method_of_the_path(server: Server, admin: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        response = client.request("PATCH", f"/v1/workspaces/{ws}/keys")

    assert_problem(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}  # not only the first route's


def test_numbers_and_times_are_json_numbers_and_rfc3339_text(server: Server, admin: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])["key"]["id"]
    rotate = f"/v1/workspaces/{ws}/keys/{key}/rotate"
    later = (datetime.now(UTC) + timedelta(days=1)).timestamp()
    with server.client(admin["secret"]) as client:
        integral = client.post(rotate, json={"grace_seconds": 60.0})  # a JSON Schema integer
        text = client.post(rotate, json={"grace_seconds": "60"})
        boolean = client.post(rotate, json={"grace_seconds": True})
        seconds = client.post(f"/v1/workspaces/{ws}/keys", json={"name": "x", "expires_at": later})
        since = client.get(f"/v1/workspaces/{ws}/usage", params={"since": "1700000000"})

    assert integral.status_code == 200, integral.text
    for refused in (text, boolean, seconds, since):
        assert assert_problem(refused, 422)["type"] == "/problems/invalid-request"


def test_a_day_of_usage_starts_at_utc_midnight_with_its_offset(server: Server, admin: dict[str, Any]):
    ws = admin["key"]["workspace_id"]
    key = issue(server, admin, ["read:nodes"])
    verify(server, key["secret"], "read:nodes", "GET /nodes")
    with server.client(admin["secret"]) as client:
        for _ in range(50):  # usage is flushed about every second
            items = client.get(f"/v1/workspaces/{ws}/usage", params={"key": key["key"]["id"]}).json()["items"]
            if items and items[0]["per_day"]:
                break
            time.sleep(0.1)

    (day,) = items[0]["per_day"]
    assert day["start"].endswith("T00:00:00Z")  # was a date alone: no offset, not an RFC 3339 time
