"""A daily refill, observed with a controllable clock: the API in process (its clock replaced), over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from domain.application import utc_now
from keyledger.services import Services, build_services
from keyledger.settings import Settings
from tests.api.server import OPERATOR_TOKEN


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utc_now() + self.offset


@pytest.fixture
def app(settings: Settings) -> Iterator[tuple[TestClient, Services, Clock]]:
    settings = settings.model_copy(update={"operator_token": SecretStr(OPERATOR_TOKEN)})
    services = build_services(settings)
    clock = Clock()
    services.ledger.clock = clock
    services.verification.clock = clock
    with TestClient(create_app(services)) as client:
        yield client, services, clock


def test_a_daily_refill_resets_what_remains_and_history_shows_it(app):
    client, services, clock = app
    created = client.post(
        "/v1/workspaces", json={"name": "acme", "plan": "pro"}, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ).json()
    admin = {"Authorization": f"Bearer {created['admin_key']['secret']}"}
    ws = created["workspace"]["id"]
    body = {
        "name": "metered",
        "scopes": ["read:nodes"],
        "credits": {"remaining": 2, "refill": {"amount": 3, "interval": "day"}},
    }
    issued = client.post(f"/v1/workspaces/{ws}/keys", json=body, headers=admin).json()
    secret, key_id = issued["secret"], issued["key"]["id"]

    def spend() -> tuple[str, int | None]:
        answer = client.post("/v1/verify", json={"key": secret, "scope": "read:nodes"}).json()
        return answer["code"], answer["credits"]["remaining"]

    today = [spend() for _ in range(3)]
    exhausted = client.get(
        "/v1/auth",
        headers={"Authorization": f"Bearer {secret}", "X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/nodes"},
    )
    now = clock()
    clock.offset = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo) + timedelta(days=1, seconds=5) - utc_now()
    tomorrow = [spend() for _ in range(4)]
    services.stack.usage.flush()  # records the refill the first answer of the day found
    services.stack.usage.flush()
    history = client.get(f"/v1/workspaces/{ws}/keys/{key_id}/history", headers=admin).json()["items"]
    shown = client.get(f"/v1/workspaces/{ws}/keys/{key_id}", headers=admin).json()

    assert today == [("VALID", 1), ("VALID", 0), ("USAGE_EXCEEDED", 0)]
    assert exhausted.status_code == 429 and 1 <= int(exhausted.headers["Retry-After"]) <= 86_400
    assert tomorrow == [("VALID", 2), ("VALID", 1), ("VALID", 0), ("USAGE_EXCEEDED", 0)]
    refills = [e for e in history if e["type"] == "CreditsRefilled"]
    assert len(refills) == 1
    assert refills[0]["data"]["amount"] == 3
    assert refills[0]["data"]["period"] == f"d{clock().date().isoformat()}"
    assert refills[0]["actor"].startswith("api:")
    assert shown["credits"] == {"remaining": 0, "refill": {"amount": 3, "interval": "day"}}
