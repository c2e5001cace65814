"""No event can stop the read models: one that fails is reported and retried while the others go on,
and a store written by older code that let unstorable values in opens, catches up and rebuilds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy.engine import Connection

from domain import credentials
from domain.application import KeyLedger
from domain.keys import ApiKey
from domain.timefmt import MAX_TIME
from domain.usage import UsageCount
from keyledger.settings import Settings
from projections import ProjectionStatus, ReadModels
from projections.audit import AuditProjection
from projections.base import Positioned, Tables
from projections.errors import ProjectionFailed
from projections.keys import KeysProjection
from projections.usage import UsageProjection
from tests.audit.cli import KEYLEDGER, env_of

POISON = "poison"


class Poisoned(Exception):
    pass


class FragileAudit(AuditProjection):
    """The audit read model, failing on a key named POISON while `broken` (a bug, fixed later)."""

    broken = True

    def fold(self, conn: Connection, tables: Tables, pending: Any, events: Sequence[Positioned]) -> Any:
        if self.broken and any(isinstance(e, ApiKey.KeyIssued) and e.name == POISON for _, e in events):
            raise Poisoned("this event breaks the audit read model")
        return super().fold(conn, tables, pending, events)


@pytest.fixture
def fragile(settings: Settings, ledger: KeyLedger) -> Iterator[tuple[ReadModels, FragileAudit]]:
    audit = FragileAudit()
    models = ReadModels(settings, ledger, projections=[KeysProjection(), UsageProjection(), audit])
    models.start()
    try:
        yield models, audit
    finally:
        models.close()


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def by_name(models: ReadModels) -> dict[str, ProjectionStatus]:
    return {s.name: s for s in models.status()}


def test_a_failing_read_model_is_reported_and_retried_while_the_others_keep_up(
    settings: Settings, ledger: KeyLedger, fragile: tuple[ReadModels, FragileAudit]
):
    models, audit = fragile
    workspace = ledger.create_workspace("acme", "starter")
    poisoned = ledger.issue_key(workspace.workspace.id, POISON, ["read:nodes"])
    later = ledger.issue_key(workspace.workspace.id, "later", ["read:nodes"])

    started = time.monotonic()
    reached = models.wait(later.position, timeout=10)
    waited = time.monotonic() - started

    assert not reached and waited < 2.0  # a failing read model ends the wait, not the timeout
    assert models.wait(later.position, ["keys", "usage"], timeout=5)
    assert eventually(lambda: by_name(models)["audit"].state == "failing")
    status = by_name(models)
    assert status["keys"].state == "ok" and status["keys"].lag == 0
    assert status["usage"].state == "ok" and status["usage"].lag == 0
    assert status["audit"].position < poisoned.position and status["audit"].lag > 0
    assert "Poisoned" in (status["audit"].error or "") and status["audit"].failing_since is not None
    # Another process (here: other read models on the same store) sees the failure too.
    other = ReadModels(settings, ledger)
    try:
        assert by_name(other)["audit"].state == "failing"

        audit.broken = False  # the fix is deployed: the retry goes through

        assert eventually(lambda: models.wait(later.position, timeout=1), timeout=15)
        assert eventually(lambda: all(s.state == "ok" and s.lag == 0 for s in models.status()))
        assert by_name(other)["audit"].state == "ok"
    finally:
        other.close()


def test_catch_up_reports_a_failing_read_model_instead_of_retrying_forever(settings: Settings, ledger: KeyLedger):
    models = ReadModels(settings, ledger, projections=[KeysProjection(), UsageProjection(), FragileAudit()])
    try:
        models.ensure_current()  # built on the empty store
        workspace = ledger.create_workspace("acme", "starter")
        ledger.issue_key(workspace.workspace.id, POISON, ["read:nodes"])

        with pytest.raises(ProjectionFailed, match=r"audit.*Poisoned"):
            models.catch_up()

        status = by_name(models)
        assert status["keys"].lag == 0 and status["usage"].lag == 0 and status["audit"].state == "failing"
    finally:
        models.close()


def test_a_read_model_failing_its_first_build_leaves_the_others_built(settings: Settings, ledger: KeyLedger):
    workspace = ledger.create_workspace("acme", "starter")
    ledger.issue_key(workspace.workspace.id, POISON, ["read:nodes"])
    audit = FragileAudit()
    models = ReadModels(settings, ledger, projections=[KeysProjection(), UsageProjection(), audit])
    try:
        models.start()  # does not raise: the follower retries the build

        status = by_name(models)
        assert status["keys"].state == "ok" and status["keys"].lag == 0
        assert status["audit"].state == "failing" and status["audit"].version is None
        audit.broken = False
        assert eventually(lambda: all(s.state == "ok" and s.lag == 0 for s in models.status()), timeout=15)
    finally:
        models.close()


def write_as_older_code(ledger: KeyLedger) -> tuple[ApiKey, int]:
    """Events that earlier releases accepted: an expiry past year 9999 in UTC, NUL in text."""
    workspace = ledger.create_workspace("acme", "starter").workspace
    key_id = uuid4()
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    key = ApiKey._create(  # the domain's checks bypassed, as older code did not have them
        ApiKey.KeyIssued,
        id=key_id,
        workspace_id=workspace.id,
        name="old\x00name",
        scopes=["read:nodes"],
        expires_at=far,
        secret_digest=credentials.digest(credentials.generate_secret(key_id)),
        actor="operator",
        **dict.fromkeys(("meta", "owner_id", "credits_remaining", "refill_amount", "refill_interval")),
    )
    workspace.take_key_slot(key_id, "operator")
    ledger.save(workspace, key)
    key.trigger_event(ApiKey.KeyRevoked, workspace_id=workspace.id, reason="leaked\x00here", actor="operator")
    ledger.save(key)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    count = UsageCount(key_id, workspace.id, minute, "GET /x\x00y", 200, 3)
    position = ledger.record_usage([count], "api:old")
    assert position is not None
    return key, position


def test_a_store_written_by_older_code_with_unstorable_values_catches_up_and_rebuilds(
    settings: Settings, ledger: KeyLedger, models: ReadModels
):
    key, head = write_as_older_code(ledger)

    assert models.catch_up() == head
    assert all(s.state == "ok" and s.lag == 0 for s in models.status())
    models.rebuild()
    assert all(s.state == "ok" and s.lag == 0 for s in models.status())
    state = models.get_key(key.workspace_id, key.id, datetime.now(UTC))
    assert state is not None
    assert state.expires_at == MAX_TIME and state.name == "old\ufffdname" and state.status == "revoked"
    [usage] = models.usage(key.workspace_id)
    assert [tuple(e) for e in usage.top_endpoints] == [("GET /x\ufffdy", 3)]
    history = models.history(key.workspace_id, key.id)
    assert [e.type for e in history] == ["KeyIssued", "KeyRevoked"]


def test_the_command_line_exports_and_rebuilds_a_store_written_by_older_code(settings: Settings, ledger: KeyLedger):
    import subprocess

    write_as_older_code(ledger)

    env = env_of(settings)
    exported = subprocess.run(
        [KEYLEDGER, "audit", "export"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    rebuilt = subprocess.run(
        [KEYLEDGER, "projections", "rebuild"], capture_output=True, text=True, env=env, timeout=120, check=False
    )

    assert exported.returncode == 0, exported.stderr
    assert "9999-12-31T23:59:59.999999Z" in exported.stdout  # the expiry, clamped into what UTC can show
    assert rebuilt.returncode == 0, rebuilt.stderr
