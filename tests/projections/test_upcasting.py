"""A KeyRotated stored under schema v1 (without `previous_valid_until`) loads through the current class."""

from __future__ import annotations

import json
from datetime import timedelta

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from domain import credentials
from domain.application import KeyLedger, utc_now
from domain.keys import ApiKey
from domain.usage import UsageBatch, UsageCount
from domain.verification import VerifyCode
from domain.workspace import Workspace
from projections import ReadModels
from tests.verdicts import store_verdict


def test_a_v1_rotation_loads_with_its_grace_end_computed(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    key, old_secret = created.admin_key, created.secret
    new_secret = credentials.generate_secret(key.id)
    rotated_at = utc_now()
    v1_state = {  # what KeyRotated held before class_version 2, stored raw, as the old code did
        "timestamp": rotated_at,
        "secret_digest": credentials.digest(new_secret),
        "grace_seconds": 600,
        "actor": "operator",
    }
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=key.id,
                originator_version=key.version + 1,
                topic=get_topic(ApiKey.KeyRotated),
                state=ledger.mapper.transcoder.encode(v1_state),
            )
        ]
    )

    loaded = ledger.get_key(key.id)
    [(position, event)] = [
        (n.id, ledger.mapper.to_domain_event(n))
        for n in ledger.recorder.select_notifications(start=0, limit=100)
        if n.topic == get_topic(ApiKey.KeyRotated)
    ]

    grace_end = rotated_at + timedelta(seconds=600)
    assert isinstance(event, ApiKey.KeyRotated) and event.previous_valid_until == grace_end
    assert (loaded.rotated_at, loaded.previous_valid_until) == (rotated_at, grace_end)
    assert store_verdict(ledger, new_secret) is VerifyCode.VALID
    assert store_verdict(ledger, old_secret) is VerifyCode.VALID  # within the computed grace
    models.catch_up()
    state = models.get_key(created.workspace.id, key.id, rotated_at + timedelta(seconds=1))
    assert state is not None and state.previous_secret_valid_until == grace_end
    [entry] = [e for e in models.history(created.workspace.id, key.id) if e.type == "KeyRotated"]
    assert entry.position == position
    assert entry.data["previous_valid_until"] == grace_end.isoformat().replace("+00:00", "Z")
    assert entry.data["grace_seconds"] == 600 and "secret_fingerprint" in entry.data


def test_new_rotations_are_stored_as_v3_with_their_grace_end_and_workspace(ledger: KeyLedger):
    created = ledger.create_workspace("acme", "pro")

    rotated = ledger.rotate_key(created.admin_key.id, grace_seconds=60)

    [notification] = ledger.recorder.select_notifications(start=rotated.position, limit=1)
    stored = json.loads(notification.state)
    assert stored["class_version"] == 3
    assert stored["workspace_id"]["_data_"] == created.workspace.id.hex
    assert stored["previous_valid_until"]["_data_"] == (rotated.key.rotated_at + timedelta(seconds=60)).isoformat()


def test_v1_key_events_without_a_workspace_load_and_show_as_before(ledger: KeyLedger, models: ReadModels):
    created = ledger.create_workspace("acme", "pro")
    key = created.admin_key
    v1_grant = {"timestamp": utc_now(), "scopes": ["read:nodes"], "actor": "operator"}  # no workspace_id
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=key.id,
                originator_version=key.version + 1,
                topic=get_topic(ApiKey.ScopesGranted),
                state=ledger.mapper.transcoder.encode(v1_grant),
            )
        ]
    )
    revoked = ledger.revoke_scopes(key.id, ["read:nodes"])  # a v2 event: names its workspace

    events = list(ledger.events.get(key.id))
    models.catch_up()
    entries = models.history(created.workspace.id, key.id)

    assert events[1].workspace_id is None and events[2].workspace_id == created.workspace.id
    assert revoked.key.scopes == ["admin"]
    assert [e.type for e in entries] == ["KeyIssued", "ScopesGranted", "ScopesRevoked"]
    assert "workspace_id" not in entries[1].data  # shown as v1 code showed it
    assert entries[2].data["workspace_id"] == str(created.workspace.id)


def test_a_workspace_snapshot_taken_by_v1_code_loads_without_webhooks(ledger: KeyLedger):
    """Workspace v2 holds webhooks; a snapshot stored before (no `webhooks`, no class_version) still loads."""
    created = ledger.create_workspace("acme", "pro")
    workspace = ledger.get_workspace(created.workspace.id)
    assert ledger.snapshots is not None
    stored = ledger.snapshots.mapper.to_stored_event(Workspace.Snapshot.take(workspace))
    state = ledger.mapper.transcoder.decode(stored.state)
    assert state["state"].pop("class_version") == 2
    del state["state"]["webhooks"]
    ledger.snapshots.recorder.insert_events(
        [
            StoredEvent(
                stored.originator_id, stored.originator_version, stored.topic, ledger.mapper.transcoder.encode(state)
            )
        ]
    )
    ledger.repository.cache = None

    loaded = ledger.repository.get(created.workspace.id)

    assert loaded.webhooks == {} and loaded.live_key_ids == workspace.live_key_ids
    hook = ledger.create_webhook(created.workspace.id, "https://hooks.example.com/").webhook
    assert ledger.get_workspace(created.workspace.id).list_webhooks() == [hook]


def test_v2_usage_without_scope_or_address_loads_and_counts(ledger: KeyLedger, models: ReadModels):
    """UsageRecorded v2 entries had no scope, refusal flag or client: they count as answers with none of them."""
    created = ledger.create_workspace("acme", "pro")
    key = created.admin_key
    minute = utc_now().replace(second=0, microsecond=0)
    batch = UsageBatch.record([UsageCount(key.id, created.workspace.id, minute, "GET /nodes", 200, 3)], "usage:old")
    [event] = batch.collect_events()
    stored = ledger.mapper.to_stored_event(event)
    state = ledger.mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 3
    state["class_version"] = 2
    for entry in state["entries"]:  # what v2 code wrote
        for field in ("scope", "scope_refused", "client"):
            del entry[field]
    batch_id = batch.id
    ledger.recorder.insert_events(
        [StoredEvent(batch_id, stored.originator_version, stored.topic, ledger.mapper.transcoder.encode(state))]
    )
    ledger.record_usage([UsageCount(key.id, created.workspace.id, minute, "GET /nodes", 200, 2, "read:nodes")], "new")

    old = ledger.repository.get(batch_id)
    models.catch_up()
    [usage] = models.usage(created.workspace.id)

    assert [(c.scope, c.scope_refused, c.client, c.count) for c in old.counts] == [(None, False, None, 3)]
    assert usage.total == 5
    assert [(s.scope, s.allowed, s.refused, s.last_allowed) for s in usage.scopes] == [("read:nodes", 2, 0, minute)]
