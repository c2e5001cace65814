"""The hot path (`api.hotpath`) answers `/v1/verify` and `/v1/auth` exactly as the FastAPI routes do.

Each request, malformed or not, goes to the API as served (hot path first) and to the same API with the
hot path off (`create_app(..., hot_path=False)`: the FastAPI routes alone, as before it existed), on one
store; the expected answer is whatever the FastAPI route answers, never written down here. Status,
content type, problem type, the whole problem body, and the headers a client acts on must be equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from domain.text import MAX_ENDPOINT_LENGTH
from keyledger.services import Services, build_services
from keyledger.settings import Settings
from tests.api.server import OPERATOR_TOKEN

COMPARED_HEADERS = ("content-type", "www-authenticate", "retry-after", "ratelimit-policy", "allow")


@dataclass
class Apis:
    hot: TestClient
    reference: TestClient
    secret: str  # a key holding read:nodes only
    imported: str  # an imported key's secret, read:nodes
    services: Services
    admin: dict[str, str]  # the workspace admin's Authorization header
    keys: str  # the workspace's keys path


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apis]:
    folder = tmp_path_factory.mktemp("hot")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'keyledger.db'}",
        database_schema=None,
        operator_token=SecretStr(OPERATOR_TOKEN),
    )
    services = build_services(settings)
    with TestClient(create_app(services), raise_server_exceptions=False) as hot:
        reference = TestClient(create_app(services, hot_path=False), raise_server_exceptions=False)
        operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        created = hot.post("/v1/workspaces", json={"name": "hot", "plan": "pro"}, headers=operator).json()
        admin = {"Authorization": f"Bearer {created['admin_key']['secret']}"}
        keys = f"/v1/workspaces/{created['workspace']['id']}/keys"
        secret = hot.post(keys, json={"name": "reader", "scopes": ["read:nodes"]}, headers=admin).json()["secret"]
        imported = "sk_live_hot-path-imported-0123456789abcdef"
        body = {"name": "imported", "scopes": ["read:nodes"], "secret": imported}
        assert hot.post(f"{keys}/import", json=body, headers=admin).status_code == 201
        yield Apis(hot, reference, secret, imported, services, admin, keys)


def same_answer(apis: Apis, method: str, path: str, **request: Any) -> httpx.Response:
    """Send the request to both; assert the answers agree; return the hot path's."""
    hot = apis.hot.request(method, path, **request)
    reference = apis.reference.request(method, path, **request)
    what = (method, path, request)
    assert hot.status_code == reference.status_code, (what, hot.text, reference.text)
    for name in COMPARED_HEADERS:
        assert hot.headers.get(name) == reference.headers.get(name), (what, name)
    assert ("ratelimit" in hot.headers) == ("ratelimit" in reference.headers), what
    if hot.content and hot.headers.get("content-type", "").startswith("application/problem+json"):
        assert hot.json() == reference.json(), what
    elif hot.headers.get("content-type") == "application/json":
        ours, theirs = hot.json(), reference.json()
        for answer in (ours, theirs):  # what the first request consumed, the second no longer has; the clock
            if answer.get("ratelimit"):
                answer["ratelimit"].pop("remaining")
                answer["ratelimit"].pop("reset")  # the two requests may straddle a second
        assert ours == theirs, what
    else:
        assert hot.content == reference.content, what
    return hot


def raw(body: str | bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type else {}
    return {"content": body.encode() if isinstance(body, str) else body, "headers": headers}


def malformed_verify_bodies(secret: str) -> list[dict[str, Any]]:
    good = {"key": secret, "scope": "read:nodes"}
    bodies: list[Any] = [
        {"scope": "read:nodes"},  # missing fields
        {"key": secret},
        {},
        {"key": 12, "scope": "read:nodes"},  # wrong types
        {"key": None, "scope": "read:nodes"},
        {"key": secret, "scope": ["read:nodes"]},
        {"key": secret, "scope": None},
        {**good, "record": "false"},
        {**good, "record": 0},
        {**good, "record": None},
        {**good, "endpoint": 7},
        {**good, "endpoint": "GET /x\u0000y"},  # fields the rules refuse
        {**good, "endpoint": "G" * (MAX_ENDPOINT_LENGTH + 1)},
        {**good, "extra": 1},  # an unknown field
        {**good, "key": "k" * 100_000},  # an oversized field, and body
        {**good, "endpoint": "GET /" + "x" * 20_000},
        [good],
        "read:nodes",
        None,
        *({"key": secret, "scope": scope} for scope in UNKNOWN_SCOPE_FORMS),
        *({**good, "client_ip": address} for address in CLIENT_IPS),
    ]
    requests = [raw(json.dumps(body)) for body in bodies]
    requests += [
        raw(""),  # bad JSON
        raw("{"),
        raw('{"key": "a", "scope": "read:nodes"} trailing'),
        raw('{"key": NaN, "scope": "read:nodes"}'),
        raw('{"key": "lone \\ud800", "scope": "read:nodes"}'),
        raw(b"\xef\xbb\xbf" + json.dumps(good).encode()),  # a byte order mark
        raw(b'{"key": "\xff\xfe", "scope": "read:nodes"}'),  # not UTF-8
        raw(json.dumps(good).encode("utf-16")),
        raw('{"key": "x", "key": "' + secret + '", "scope": "read:nodes"}'),  # a repeated field
        raw(json.dumps(good), None),  # content types
        raw(json.dumps(good), "text/plain"),
        raw(json.dumps(good), "application/x-www-form-urlencoded"),
        raw(json.dumps(good), "application/vnd.api+json"),
        raw(json.dumps(good), "application/json; charset=latin-1"),
        raw(b"x" * 200_000),  # an oversized body
    ]
    return requests


# client_ip as given: addresses (canonical or not), and what is none.
CLIENT_IPS = ("203.0.113.9", "2001:DB8::1", "::ffff:192.0.2.1", "[2001:db8::2]", "", "host", "1" * 65, 5, None, [])
UNKNOWN_SCOPE_FORMS = ("", "read", "read:", ":nodes", "READ:nodes", "read:unknown", "read:nodes:x", "admin ", "*")


def test_every_malformed_verify_request_is_answered_as_the_fastapi_route_answers_it(apis: Apis):
    refused = 0
    for request in malformed_verify_bodies(apis.secret):
        answer = same_answer(apis, "POST", "/v1/verify", **request)
        refused += answer.status_code >= 400
    assert refused >= 30  # most of them are refused (422 and the like), not answered


@pytest.mark.parametrize("who", ["native", "imported", "unknown", "malformed"])
@pytest.mark.parametrize("scope", ["read:nodes", "write:nodes", "admin"])
def test_well_formed_verify_requests_get_the_routes_answer(apis: Apis, who: str, scope: str):
    key = {
        "native": apis.secret,
        "imported": apis.imported,
        "unknown": apis.secret[:-8] + "AAAAAAAA",
        "malformed": "nope",
    }[who]
    hot = apis.hot.app.hot  # type: ignore[attr-defined]
    for body in ({"key": key, "scope": scope}, {"key": key, "scope": scope, "endpoint": "GET /n", "record": False}):
        before = hot.answered
        answer = same_answer(apis, "POST", "/v1/verify", json=body)
        assert answer.status_code == 200
        assert hot.answered == before + 1  # answered by the hot path, not handed on


def test_every_malformed_auth_request_is_answered_as_the_fastapi_route_answers_it(apis: Apis):
    bearer = f"Bearer {apis.secret}"
    cases: list[dict[str, str]] = [
        {},
        {"X-Forwarded-Method": "GET"},
        {"X-Forwarded-Uri": "/nodes"},
        {"X-Forwarded-Method": "", "X-Forwarded-Uri": "/nodes"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": ""},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nodes/../"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nodes%2F..%2Fevents"},
        {"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/x%5C..%5Cevents"},
    ]
    cases += [
        {"Authorization": bearer, "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nodes", **forwarded}
        for forwarded in (
            {"X-Forwarded-For": "203.0.113.7, 10.0.0.1"},
            {"X-Forwarded-For": "junk", "X-Real-IP": "2001:db8::7"},
            {"X-Real-IP": "nonsense"},
        )
    ]
    keys = ["", bearer, "Bearer ", "Basic abc", "bearer " + apis.secret, f"Bearer {apis.imported}", "Bearer nope"]
    forwarded = [("GET", "/nodes/1"), ("POST", "/nodes"), ("GET", "/edges?x=1"), ("HEAD", "/nodes/../nodes")]
    cases += [
        {"Authorization": key, "X-Forwarded-Method": method, "X-Forwarded-Uri": uri}
        for key in keys
        for method, uri in forwarded
    ]
    hot = apis.hot.app.hot  # type: ignore[attr-defined]
    before = hot.answered
    for headers in cases:
        same_answer(apis, "GET", "/v1/auth", headers={k: v for k, v in headers.items() if v or k != "Authorization"})
    assert hot.answered - before == len(cases)  # every one answered by the hot path (problems included)


def test_other_methods_on_the_hot_routes_are_left_to_fastapi(apis: Apis):
    for method, path in (("GET", "/v1/verify"), ("PUT", "/v1/verify"), ("POST", "/v1/auth"), ("HEAD", "/v1/auth")):
        same_answer(apis, method, path)
    same_answer(apis, "GET", "/v1/verify/", json={})


def test_the_openapi_document_still_describes_both_routes(apis: Apis):
    paths = apis.hot.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/verify"] and "get" in paths["/v1/auth"]


def test_a_command_updates_the_cache_in_place_so_the_next_verification_reads_no_store(apis: Apis):
    issued = apis.hot.post(apis.keys, json={"name": "changing", "scopes": ["read:nodes"]}, headers=apis.admin).json()
    secret, key = issued["secret"], f"{apis.keys}/{issued['key']['id']}"
    verify = {"key": secret, "scope": "write:nodes"}
    assert apis.hot.post("/v1/verify", json=verify).json()["code"] == "INSUFFICIENT_SCOPE"
    cache, hot = apis.services.stack.cache, apis.hot.app.hot  # type: ignore[attr-defined]
    loads, answered = cache.loads, hot.answered

    granted = apis.hot.post(f"{key}/scopes", json={"scopes": ["write:nodes"]}, headers=apis.admin)
    after_grant = apis.hot.post("/v1/verify", json=verify).json()
    revoked = apis.hot.post(f"{key}/revoke", json={"reason": "test"}, headers=apis.admin)
    after_revoke = apis.hot.post("/v1/verify", json=verify).json()

    assert granted.status_code == 200 and revoked.status_code == 200
    assert after_grant["code"] == "VALID" and after_revoke["code"] == "REVOKED"
    assert cache.loads == loads  # the commands' saved aggregates, not the store
    assert hot.answered == answered + 2
