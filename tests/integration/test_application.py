"""The application service on each backend (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.domain import CanMutateAggregate

from domain.alerts import Alert
from domain.application import KeyLedger
from domain.errors import (
    InvalidGracePeriod,
    KeyAlreadyRevoked,
    KeyLimitReached,
    KeyNotFound,
    LastAdminKey,
    MalformedScope,
    TooManyScopes,
    UnknownResource,
    WorkspaceNotFound,
)
from domain.imports import SecretClaim, claim_id, import_digest
from domain.keys import ApiKey
from domain.verification import VerifyCode
from domain.workspace import MAX_LIVE_KEYS, Workspace
from tests.storage import dump_rows
from tests.verdicts import store_verdict


def event_classes(aggregate_class: type) -> set[str]:
    """The events an aggregate class defines (without the library's generic bases)."""
    return {
        name
        for name, value in vars(aggregate_class).items()
        if isinstance(value, type) and issubclass(value, CanMutateAggregate) and name not in ("Event", "Created")
    }


def test_a_key_lives_its_whole_lifecycle(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    issued = ledger.issue_key(created.workspace.id, "ci", ["read:nodes"], actor=str(created.admin_key.id))

    assert store_verdict(ledger, issued.secret, "read:nodes") is VerifyCode.VALID
    assert store_verdict(ledger, issued.secret, "write:nodes") is VerifyCode.INSUFFICIENT_SCOPE

    ledger.grant_scopes(issued.key.id, ["write:nodes"])
    assert store_verdict(ledger, issued.secret, "write:nodes") is VerifyCode.VALID

    ledger.revoke_scopes(issued.key.id, ["write:nodes"])
    assert store_verdict(ledger, issued.secret, "write:nodes") is VerifyCode.INSUFFICIENT_SCOPE

    rotated = ledger.rotate_key(issued.key.id, grace_seconds=60)
    assert store_verdict(ledger, rotated.secret, "read:nodes") is VerifyCode.VALID
    assert store_verdict(ledger, issued.secret, "read:nodes") is VerifyCode.VALID  # within grace

    ledger.revoke_key(issued.key.id, reason="done")
    assert store_verdict(ledger, rotated.secret) is VerifyCode.REVOKED
    assert store_verdict(ledger, issued.secret) is VerifyCode.REVOKED
    assert ledger.get_workspace(created.workspace.id).live_keys == 1
    with pytest.raises(KeyAlreadyRevoked):
        ledger.grant_scopes(issued.key.id, ["read:edges"])


def test_commands_return_the_position_of_their_last_event(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")
    assert created.position == ledger.max_position()

    issued = ledger.issue_key(created.workspace.id, "ci", [])
    assert issued.position == ledger.max_position() > created.position

    unchanged = ledger.grant_scopes(issued.key.id, [])
    assert unchanged.position is None


def test_failed_commands_change_nothing(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    key = ledger.issue_key(created.workspace.id, "ci", ["read:nodes"]).key
    before = ledger.max_position()

    failures = [
        (MalformedScope, lambda: ledger.issue_key(created.workspace.id, "x", ["read-nodes"])),
        (UnknownResource, lambda: ledger.grant_scopes(key.id, ["read:datasets"])),
        (InvalidGracePeriod, lambda: ledger.rotate_key(key.id, grace_seconds=86_401)),
        (TooManyScopes, lambda: ledger.issue_key(created.workspace.id, "x", [f"read:{r}" for r in "ab"] * 6)),
        (WorkspaceNotFound, lambda: ledger.issue_key(key.id, "x", [])),
        (KeyNotFound, lambda: ledger.rotate_key(created.workspace.id)),
    ]
    for error, command in failures:
        with pytest.raises((error, UnknownResource)):
            command()

    assert ledger.max_position() == before


def test_a_key_of_another_workspace_is_not_found(ledger: KeyLedger):
    a = ledger.create_workspace("a", "starter")
    b = ledger.create_workspace("b", "starter")

    with pytest.raises(KeyNotFound):
        ledger.get_key(a.admin_key.id, workspace_id=b.workspace.id)
    with pytest.raises(KeyNotFound):
        ledger.revoke_key(a.admin_key.id, workspace_id=b.workspace.id)


def test_eight_threads_racing_for_five_slots_end_with_exactly_fifty_keys(ledger: KeyLedger):
    workspace_id = ledger.create_workspace("acme", "starter").workspace.id  # 1 live key (admin)
    for i in range(44):
        ledger.issue_key(workspace_id, f"k{i}", [])
    assert ledger.get_workspace(workspace_id).live_keys == 45
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def racer(n: int) -> None:
        barrier.wait()
        try:
            ledger.issue_key(workspace_id, f"racer{n}", ["read:nodes"])
            outcome = "issued"
        except KeyLimitReached:
            outcome = "limit"
        except Exception as error:  # anything else fails the test below
            outcome = repr(error)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["issued"] * 5 + ["limit"] * 3
    workspace = ledger.get_workspace(workspace_id)
    assert workspace.live_keys == MAX_LIVE_KEYS
    issued = [ledger.get_key(k) for k in workspace.live_key_ids]
    assert len({k.id for k in issued}) == MAX_LIVE_KEYS
    assert sum(k.name.startswith("racer") for k in issued) == 5


def test_every_event_type_reads_back_equal_to_what_was_saved(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    ws_id = created.workspace.id
    ledger.change_plan(ws_id, "enterprise", requests_per_minute=1000, requests_per_day=50_000)
    issued = ledger.issue_key(
        ws_id, "ci", ["read:nodes"], expires_at=datetime.now(UTC) + timedelta(days=3), meta={"a": [1]}, owner_id="u1"
    )
    ledger.change_details(issued.key.id, {"name": "ci2", "meta": {"b": {"_type_": "x", "_data_": 2}}})
    ledger.set_key_limits(issued.key.id, 10, None)
    ledger.set_credits(issued.key.id, 5, 3, "day")
    generation = ledger.get_key(issued.key.id).version
    assert ledger.record_refill(issued.key.id, generation, "d2999-01-01", "api:test") is not None
    assert ledger.record_refill(issued.key.id, generation, "d2999-01-01", "api:test") is None  # once
    ledger.clear_key_limits(issued.key.id)
    ledger.grant_scopes(issued.key.id, ["write:edges", "read:events"])
    ledger.revoke_scopes(issued.key.id, ["read:events"])
    ledger.set_scopes(issued.key.id, ["read:nodes", "read:edges"])
    ledger.rotate_key(issued.key.id, grace_seconds=120)
    ledger.suspend_key(issued.key.id, reason="investigating")
    ledger.resume_key(issued.key.id)
    saved_key = ledger.revoke_key(issued.key.id, reason="rotated out").key
    hook = ledger.create_webhook(ws_id, "https://hooks.example.com/k", ["KeyIssued"], "siem").webhook
    ledger.create_webhook(ws_id, "https://hooks.example.com/all")
    ledger.delete_webhook(ws_id, hook.id)
    digest = import_digest(sha256="ab" * 32)
    imported = ledger.import_key(ws_id, "legacy", ["read:nodes"], digest, meta={"from": "old"}).key
    claim = ledger.repository.get(claim_id(digest))
    saved_workspace = ledger.get_workspace(ws_id)
    ledger.repository.cache = None  # nothing served from memory: every read replays stored events

    for saved, cls in ((saved_key, ApiKey), (saved_workspace, Workspace), (claim, SecretClaim)):
        stored_types = {type(e).__name__ for e in ledger.events.get(saved.id)}
        if cls is ApiKey:  # a key is issued or imported: the imported one's first event counts too
            stored_types |= {type(e).__name__ for e in ledger.events.get(imported.id)}
        assert stored_types == event_classes(cls), f"the test must exercise every {cls.__name__} event"
        loaded = ledger.repository.get(saved.id)
        assert vars(loaded) == vars(saved)
    assert vars(ledger.repository.get(imported.id)) == vars(imported)

    ledger.take_snapshot(saved_key.id)
    assert vars(ledger.repository.get(saved_key.id)) == vars(saved_key)
    ledger.take_snapshot(ws_id)
    assert vars(ledger.repository.get(ws_id)) == vars(saved_workspace)

    now = datetime.now(UTC)
    alerts = [
        Alert.key_expiring(issued.key.id, ws_id, now + timedelta(days=3)),
        Alert.rotation_due(issued.key.id, ws_id, now),
        Alert.quota_threshold(issued.key.id, ws_id, now.date(), 80, 50_000, 40_000),
        Alert.denied_burst(issued.key.id, ws_id, now.replace(second=0, microsecond=0), 20),
    ]
    for alert in alerts:
        assert ledger.raise_alert(alert) is not None
    stored = {type(e).__name__ for alert in alerts for e in ledger.events.get(alert.id)}
    assert stored == event_classes(Alert), "the test must exercise every Alert event"
    assert all(vars(ledger.repository.get(a.id)) == vars(a) for a in alerts)
    assert [w.url for w in saved_workspace.list_webhooks()] == ["https://hooks.example.com/all"]


def test_stored_rows_never_hold_a_plaintext_secret(ledger: KeyLedger, settings):
    created = ledger.create_workspace("acme", "starter")
    issued = ledger.issue_key(created.workspace.id, "ci", ["read:nodes"])
    rotated = ledger.rotate_key(issued.key.id, grace_seconds=10)
    rotated_again = ledger.rotate_key(created.admin_key.id, grace_seconds=0)
    ledger.take_snapshot(issued.key.id)
    secrets = [created.secret, issued.secret, rotated.secret, rotated_again.secret]

    dump = dump_rows(settings)

    rows = [row for table_rows in dump.values() for row in table_rows]
    assert sum(len(r) for r in dump.values()) >= 8, "the dump must see the stored events and the snapshot"
    key_id = issued.key.id
    assert any(str(key_id).encode() in row or key_id.hex.encode() in row or key_id.bytes in row for row in rows)
    for secret in secrets:
        for fragment in (secret, secret[3:], secret[25:68]):  # whole, without prefix, random part
            assert not any(fragment.encode() in row for row in rows)


def test_usage_counts_round_trip_as_batched_events(ledger: KeyLedger):
    from domain.usage import UsageBatch, UsageCount

    created = ledger.create_workspace("acme", "starter")
    minute = datetime(2027, 3, 3, 14, 0, tzinfo=UTC)
    counts = [
        UsageCount(created.admin_key.id, created.workspace.id, minute, "GET /nodes", 200, 7),
        UsageCount(created.admin_key.id, created.workspace.id, minute, "GET /nodes", 429, 2),
    ]

    position = ledger.record_usage(counts, actor="api:test")

    assert position == ledger.max_position()
    (notification,) = ledger.recorder.select_notifications(start=position, limit=1)
    batch = ledger.repository.get(notification.originator_id)
    assert isinstance(batch, UsageBatch)
    assert batch.counts == counts


def test_a_workspace_cannot_lose_its_last_active_admin_key(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    ws, admin = created.workspace.id, created.admin_key.id
    writer = ledger.issue_key(ws, "writer", ["write:nodes"])

    with pytest.raises(LastAdminKey):
        ledger.revoke_key(admin)
    with pytest.raises(LastAdminKey):
        ledger.revoke_scopes(admin, ["admin"])
    ledger.revoke_key(writer.key.id)  # other keys go as before
    spare = ledger.issue_key(ws, "spare", ["admin"])
    ledger.revoke_scopes(admin, ["admin"])  # another active admin remains

    with pytest.raises(LastAdminKey):
        ledger.revoke_key(spare.key.id)
    assert store_verdict(ledger, spare.secret, "admin") is VerifyCode.VALID


def test_an_expired_admin_key_does_not_count_as_the_remaining_admin(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    soon = datetime.now(UTC) + timedelta(seconds=1)
    ledger.issue_key(created.workspace.id, "short", ["admin"], expires_at=soon)
    ledger.clock = lambda: soon + timedelta(seconds=1)

    with pytest.raises(LastAdminKey):
        ledger.revoke_key(created.admin_key.id)


def test_an_exact_scope_set_replaces_the_granted_scopes_in_one_event(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "starter")
    issued = ledger.issue_key(created.workspace.id, "ci", ["write:nodes", "read:edges"])

    update = ledger.set_scopes(issued.key.id, ["read:nodes", "read:nodes"])
    same = ledger.set_scopes(issued.key.id, ["read:nodes"])

    assert update.key.scopes == ["read:nodes"] and update.position is not None
    assert same.position is None  # already exactly that: nothing recorded
    assert [type(e).__name__ for e in ledger.events.get(issued.key.id)] == ["KeyIssued", "ScopesSet"]
    assert store_verdict(ledger, issued.secret, "write:nodes") is VerifyCode.INSUFFICIENT_SCOPE
    with pytest.raises(LastAdminKey):
        ledger.set_scopes(created.admin_key.id, ["read:nodes"])
