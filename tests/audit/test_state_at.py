"""A key as it stood at T, rebuilt from its events: just before and just after each event."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from domain.application import KeyLedger
from domain.credentials import digest, fingerprint
from domain.errors import InvalidInput, KeyNotFound
from domain.history import KeyNotYetIssued, KeyStateAt, replay, state_at
from domain.keys import ApiKey

TICK = timedelta(microseconds=1)


def fp(secret: str) -> str:
    return fingerprint(digest(secret))


def event_times(ledger: KeyLedger, key_id: UUID) -> list[datetime]:
    """The time of each of the key's events, by version (index 0 is version 1)."""
    return [e.timestamp for e in ledger.events.get(key_id)]  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Expected:
    status: str
    scopes: list[str]
    valid: list[str]


def looks_like(state: KeyStateAt, expected: Expected) -> bool:
    return (state.key.status, state.key.scopes, state.valid_secrets) == (
        expected.status,
        expected.scopes,
        expected.valid,
    )


def test_state_just_before_and_just_after_each_key_event(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    issued = audited.issue_key(ws, "ci", ["read:nodes"])
    key = issued.key.id
    audited.grant_scopes(key, ["write:edges"])
    audited.revoke_scopes(key, ["read:nodes"])
    first_rotation = audited.rotate_key(key, grace_seconds=3600)
    second_rotation = audited.rotate_key(key, grace_seconds=60)  # ends the first grace at once
    audited.revoke_key(key, reason="leaked")
    s1, s2, s3 = fp(issued.secret), fp(first_rotation.secret), fp(second_rotation.secret)
    # The state after each event, by version; the state before version v is the one after v-1.
    after = [
        Expected("active", ["read:nodes"], [s1]),  # KeyIssued
        Expected("active", ["read:nodes", "write:edges"], [s1]),  # ScopesGranted
        Expected("active", ["write:edges"], [s1]),  # ScopesRevoked
        Expected("active", ["write:edges"], [s2, s1]),  # KeyRotated: previous within grace
        Expected("active", ["write:edges"], [s3, s2]),  # KeyRotated again: s1 is gone
        Expected("revoked", ["write:edges"], []),  # KeyRevoked: nothing is valid
    ]
    times = event_times(audited, key)
    assert [type(e).__name__ for e in audited.events.get(key)] == [
        "KeyIssued",
        "ScopesGranted",
        "ScopesRevoked",
        "KeyRotated",
        "KeyRotated",
        "KeyRevoked",
    ]

    with pytest.raises(KeyNotYetIssued, match="did not exist"):
        state_at(audited, key, times[0] - TICK, ws)
    for version, moment in enumerate(times, start=1):
        just_after = state_at(audited, key, moment, ws)
        assert just_after.version == version
        assert looks_like(just_after, after[version - 1]), (version, just_after)
        if version > 1:
            just_before = state_at(audited, key, moment - TICK, ws)
            assert just_before.version == version - 1
            assert looks_like(just_before, after[version - 2]), (version, just_before)


def test_effective_scopes_and_secret_roles_at_a_moment(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    issued = audited.issue_key(ws, "ci", ["write:nodes"])
    rotated = audited.rotate_key(issued.key.id, grace_seconds=600)
    rotated_at = event_times(audited, issued.key.id)[-1]

    state = state_at(audited, issued.key.id, rotated_at + timedelta(seconds=599), ws)

    assert state.key.effective_scopes == ["read:nodes", "write:nodes"]
    assert state.current_secret == fp(rotated.secret)
    assert state.previous_secret == fp(issued.secret)
    assert state.key.previous_secret_valid_until == rotated_at + timedelta(seconds=600)
    grace_over = state_at(audited, issued.key.id, rotated_at + timedelta(seconds=600), ws)
    assert grace_over.previous_secret is None
    assert grace_over.valid_secrets == [fp(rotated.secret)]


def test_a_key_is_expired_from_its_expiry_time_on(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    issued = audited.issue_key(ws, "temp", ["read:nodes"], expires_at=expires_at)

    before = state_at(audited, issued.key.id, expires_at - TICK, ws)
    at_expiry = state_at(audited, issued.key.id, expires_at, ws)

    assert (before.key.status, before.valid_secrets) == ("active", [fp(issued.secret)])
    assert (at_expiry.key.status, at_expiry.valid_secrets) == ("expired", [])
    assert at_expiry.current_secret == fp(issued.secret)


def test_state_never_shows_a_digest_or_secret(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    issued = audited.issue_key(ws, "ci", ["read:nodes"])
    rotated = audited.rotate_key(issued.key.id, grace_seconds=60)

    shown = repr(state_at(audited, issued.key.id, datetime.now(UTC), ws)) + repr(
        replay(audited, issued.key.id).timeline
    )

    for secret in (issued.secret, rotated.secret):
        assert secret not in shown
        assert digest(secret) not in shown


def test_another_workspaces_key_is_not_found_and_a_naive_time_is_refused(audited: KeyLedger):
    a = audited.create_workspace("a", "pro")
    b = audited.create_workspace("b", "pro")
    now = datetime.now(UTC)

    with pytest.raises(KeyNotFound):
        state_at(audited, a.admin_key.id, now, b.workspace.id)
    with pytest.raises(KeyNotFound):
        state_at(audited, a.workspace.id, now, a.workspace.id)  # a workspace is not a key
    with pytest.raises(InvalidInput):
        state_at(audited, a.admin_key.id, now.replace(tzinfo=None), a.workspace.id)


def test_the_snapshot_path_agrees_with_a_raw_replay_across_snapshots(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    key: ApiKey = audited.issue_key(ws, "busy", []).key
    for i in range(260):  # versions 2..261: snapshots at 100 and 200
        scopes = ["read:nodes", "write:edges"][i % 2 : i % 2 + 1]
        key.grant(scopes, "operator") if i % 4 < 2 else key.revoke_scopes(scopes, "operator")
        if i % 50 == 49:
            audited.save(key)
    audited.save(key)
    assert len(list(audited.snapshots.get(key.id))) == 2  # type: ignore[union-attr]
    times = event_times(audited, key.id)
    rng = random.Random(7)

    for moment in [times[0], times[-1], *rng.sample(times, 15)]:
        for at in (moment - TICK, moment, moment + TICK):
            if at < times[0]:
                continue
            assert state_at(audited, key.id, at, ws) == replay(audited, key.id, at, ws).state


def test_history_lists_events_in_append_order_with_their_positions(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    issued = audited.issue_key(ws, "ci", ["read:nodes"])
    granted = audited.grant_scopes(issued.key.id, ["read:edges"])
    revoked = audited.revoke_key(issued.key.id)

    entries = replay(audited, issued.key.id, workspace_id=ws).timeline

    assert [e.event.type for e in entries] == ["KeyIssued", "ScopesGranted", "KeyRevoked"]
    assert [e.event.version for e in entries] == [1, 2, 3]
    assert entries[1].position == granted.position
    assert entries[0].position is not None and revoked.position is not None
    assert entries[0].position < entries[1].position < entries[2].position <= revoked.position
    assert entries[0].event.data["secret_fingerprint"] == fp(issued.secret)
