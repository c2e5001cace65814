"""Errors of the store answer 503 with Retry-After wherever they surface (api.problems), never a 500."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request

from adapters.database import LockTaken
from api.problems import response_for


@pytest.mark.parametrize(
    "error",
    [LockTaken("SQLite's write lock is taken by another connection"), ConnectionRefusedError("nobody listens")],
    ids=["sqlite-lock-wait-ran-out", "unexpected"],
)
def test_a_busy_store_is_unavailable_and_an_unexpected_error_is_a_500(error: Exception):
    request = Request({"type": "http", "method": "POST", "path": "/v1/x", "headers": [], "query_string": b""})

    response = response_for(request, error)

    body = json.loads(bytes(response.body))
    if isinstance(error, LockTaken):
        assert (response.status_code, response.headers["retry-after"], body["status"]) == (503, "5", 503)
    else:
        assert response.status_code == 500 and body["status"] == 500
