"""Domain rules of keys and workspaces, on aggregates in memory (no store)."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic

from domain import credentials
from domain.errors import (
    InvalidExpiry,
    InvalidGracePeriod,
    InvalidInput,
    InvalidName,
    KeyAlreadyRevoked,
    KeyLimitReached,
    TooManyScopes,
)
from domain.keyinfo import MAX_META_BYTES
from domain.keylimits import KeyLimits
from domain.keys import ApiKey
from domain.plans import Limits, Plan
from domain.scopes import ScopeCatalog
from domain.verification import VerifyCode, check_credentials
from domain.workspace import MAX_LIVE_KEYS, Workspace

CATALOG = ScopeCatalog()
NOW = datetime(2027, 3, 3, 14, 0, tzinfo=UTC)
# Twelve non-admin scopes, enough to go past the limit of ten.
ALL_SCOPES = sorted(
    s for s in ScopeCatalog.of(["nodes", "edges", "jobs", "queries", "events", "livedata"]).all_scopes() if s != "admin"
)


def new_key(scopes=("read:nodes",), expires_at=None, now=NOW):
    key_id = uuid4()
    secret = credentials.generate_secret(key_id)
    key = ApiKey.issue(
        key_id=key_id,
        workspace_id=uuid4(),
        name="ci",
        scopes=list(scopes),
        secret_digest=credentials.digest(secret),
        actor="operator",
        now=now,
        expires_at=expires_at,
    )
    return key, secret


def verdict(key, secret, scope=None, now=None):
    moment = now or datetime.now(UTC)
    return check_credentials(key.credentials(CATALOG), credentials.digest(secret), scope, moment)


def test_issue_records_who_and_when():
    key, _ = new_key()

    (issued,) = key.collect_events()

    assert type(issued).__name__ == "KeyIssued"
    assert issued.actor == "operator"
    assert issued.timestamp.tzinfo is not None


def test_an_eleventh_scope_is_refused_and_changes_nothing():
    key, _ = new_key(scopes=ALL_SCOPES[:10])
    key.collect_events()

    with pytest.raises(TooManyScopes):
        key.grant(["admin"], "operator")

    assert key.collect_events() == []
    assert len(key.scopes) == 10


def test_issuing_with_eleven_scopes_is_refused():
    with pytest.raises(TooManyScopes):
        new_key(scopes=[*ALL_SCOPES[:10], "admin"])


def test_granting_held_scopes_records_nothing():
    key, _ = new_key(scopes=["read:nodes"])
    key.collect_events()

    changed = key.grant(["read:nodes"], "operator")

    assert changed is False
    assert key.collect_events() == []


def test_grant_records_only_the_new_scopes():
    key, _ = new_key(scopes=["read:nodes"])
    key.collect_events()

    key.grant(["read:nodes", "write:edges"], "admin-key")

    (granted,) = key.collect_events()
    assert granted.scopes == ["write:edges"]
    assert key.scopes == ["read:nodes", "write:edges"]


def test_revoked_is_final():
    key, _ = new_key()
    key.revoke("leaked", "operator")
    key.collect_events()

    for change in (
        lambda: key.grant(["read:edges"], "operator"),
        lambda: key.revoke_scopes(["read:nodes"], "operator"),
        lambda: key.rotate("0" * 64, 10, "operator"),
        lambda: key.revoke(None, "operator"),
    ):
        with pytest.raises(KeyAlreadyRevoked):
            change()
    assert key.collect_events() == []


@pytest.mark.parametrize("grace", [-1, 86_401, 1.5, True, "10"])
def test_grace_outside_0_to_86400_seconds_is_refused(grace):
    key, _ = new_key()
    key.collect_events()

    with pytest.raises(InvalidGracePeriod):
        key.rotate("0" * 64, grace, "operator")
    assert key.collect_events() == []


def test_rotation_keeps_the_previous_secret_for_the_grace_period_only():
    key, old = new_key()
    new = credentials.generate_secret(key.id)

    key.rotate(credentials.digest(new), 3600, "operator")
    rotated_at = key.rotated_at

    assert verdict(key, new) is VerifyCode.VALID
    assert verdict(key, old, now=rotated_at + timedelta(seconds=3599)) is VerifyCode.VALID
    assert verdict(key, old, now=rotated_at + timedelta(seconds=3600)) is VerifyCode.EXPIRED


def test_a_second_rotation_ends_the_first_grace_at_once():
    key, first = new_key()
    second = credentials.generate_secret(key.id)
    third = credentials.generate_secret(key.id)
    key.rotate(credentials.digest(second), 86_400, "operator")

    key.rotate(credentials.digest(third), 86_400, "operator")

    assert verdict(key, first) is VerifyCode.NOT_FOUND
    assert verdict(key, second) is VerifyCode.VALID
    assert verdict(key, third) is VerifyCode.VALID


def test_zero_grace_refuses_the_previous_secret_immediately():
    key, old = new_key()
    key.rotate(credentials.digest(credentials.generate_secret(key.id)), 0, "operator")

    assert verdict(key, old) is VerifyCode.EXPIRED


def test_verdicts_for_revoked_expired_scope_and_wrong_secret():
    key, secret = new_key(scopes=["write:nodes"], expires_at=NOW + timedelta(days=1), now=NOW)

    assert verdict(key, secret, "read:nodes", now=NOW) is VerifyCode.VALID
    assert verdict(key, secret, "read:edges", now=NOW) is VerifyCode.INSUFFICIENT_SCOPE
    assert verdict(key, secret, None, now=NOW + timedelta(days=1)) is VerifyCode.EXPIRED
    assert verdict(key, credentials.generate_secret(key.id), None, now=NOW) is VerifyCode.NOT_FOUND
    key.revoke(None, "operator")
    assert verdict(key, secret, None, now=NOW) is VerifyCode.REVOKED


def test_status_and_rotation_due_follow_time():
    key, _ = new_key(expires_at=NOW + timedelta(days=200), now=NOW)
    created = key.created_on

    assert key.status(created) == "active"
    assert key.rotation_due(created + timedelta(days=90)) is False
    assert key.rotation_due(created + timedelta(days=91)) is True
    assert key.status(NOW + timedelta(days=200)) == "expired"


@pytest.mark.parametrize(
    "expires_at", [NOW - timedelta(seconds=1), NOW, datetime(2030, 1, 1)], ids=["past", "now", "naive"]
)
def test_expiry_must_be_an_aware_future_time(expires_at):
    with pytest.raises(InvalidExpiry):
        new_key(expires_at=expires_at, now=NOW)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\there"])
def test_key_names_are_checked(name):
    with pytest.raises(InvalidName):
        ApiKey.issue(uuid4(), uuid4(), name, [], "0" * 64, "operator", NOW)


def test_a_workspace_refuses_a_51st_live_key_and_changes_nothing():
    workspace = Workspace.create("acme", Plan.STARTER, "operator")
    for _ in range(MAX_LIVE_KEYS):
        workspace.take_key_slot(uuid4(), "operator")
    workspace.collect_events()

    with pytest.raises(KeyLimitReached):
        workspace.take_key_slot(uuid4(), "operator")

    assert workspace.collect_events() == []
    assert workspace.live_keys == MAX_LIVE_KEYS


def test_a_released_slot_can_be_taken_again():
    workspace = Workspace.create("acme", Plan.STARTER, "operator")
    ids = [uuid4() for _ in range(MAX_LIVE_KEYS)]
    for key_id in ids:
        workspace.take_key_slot(key_id, "operator")

    workspace.release_key_slot(ids[0], "operator")
    workspace.take_key_slot(uuid4(), "operator")

    assert workspace.live_keys == MAX_LIVE_KEYS


def test_changing_to_the_same_plan_records_nothing():
    workspace = Workspace.create("acme", Plan.PRO, "operator")
    workspace.collect_events()

    assert workspace.change_plan(Plan.PRO, "operator") is False
    assert workspace.change_plan(Plan.ENTERPRISE, "operator", 1000, 5000) is True
    assert (workspace.plan, workspace.requests_per_minute, workspace.requests_per_day) == (
        "enterprise",
        1000,
        5000,
    )


# --- meta and owner (SPEC 8.1) ---------------------------------------------------------------------------


def test_meta_is_kept_as_json_text_in_events_and_as_an_object_on_the_key():
    key, _ = (
        ApiKey.issue(
            key_id=uuid4(),
            workspace_id=uuid4(),
            name="ci",
            scopes=[],
            secret_digest="0" * 64,
            actor="operator",
            now=NOW,
            meta={"_type_": "UUID", "_data_": "not one"},  # the store's own encoding shape: harmless as text
            owner_id="u1",
        ),
        None,
    )
    (issued,) = key.collect_events()

    assert issued.meta == '{"_type_":"UUID","_data_":"not one"}' and key.meta == {"_type_": "UUID", "_data_": "not one"}
    assert key.owner_id == "u1"


@pytest.mark.parametrize(
    "changes",
    [{"meta": []}, {"meta": {"x": "y" * MAX_META_BYTES}}, {"meta": {"x": float("nan")}}, {"owner_id": ""}, {"id": 1}],
)
def test_bad_details_are_refused_and_record_nothing(changes):
    key, _ = new_key()
    key.collect_events()

    with pytest.raises(InvalidInput):
        key.change_details(changes, "operator")

    assert key.collect_events() == [] and key.meta is None


def test_details_that_change_nothing_record_nothing():
    key, _ = new_key()
    key.change_details({"owner_id": "u1", "meta": {"a": 1}}, "operator")
    key.collect_events()

    assert key.change_details({"owner_id": "u1", "meta": {"a": 1}, "name": "ci"}, "operator") is False
    assert key.change_details({"meta": None}, "operator") is True
    assert key.meta is None and key.owner_id == "u1"


def test_a_snapshot_of_a_key_from_before_suspension_and_meta_loads():
    key, _ = new_key()
    state = {
        k: v for k, v in vars(key).items() if k not in ("suspended_at", "suspended_reason", "meta_json", "owner_id")
    }
    state.pop("_pending_events", None)
    snapshot = Snapshot(originator_id=key.id, originator_version=1, timestamp=NOW, topic=get_topic(ApiKey), state=state)

    loaded = snapshot.mutate(None)

    assert isinstance(loaded, ApiKey) and loaded.meta is None and loaded.status(NOW) == "active"


# --- per-key limits (SPEC 8.1) ---------------------------------------------------------------------------


def test_a_key_gets_the_lower_of_its_own_and_its_plans_limits():
    key, _ = new_key()
    plan = Limits(60, 10_000)
    assert key.limits(plan) == KeyLimits(60, 10_000, "plan")

    key.set_limits(5, None, plan, "operator")

    assert key.limits(plan) == KeyLimits(5, 10_000, "key")
    assert key.limits(Limits(2, 100)) == KeyLimits(2, 100, "key")  # a plan lowered since wins
    assert key.set_limits(5, None, plan, "operator") is False
    assert key.clear_limits("operator") is True and key.limits(plan).source == "plan"
    assert key.clear_limits("operator") is False


@pytest.mark.parametrize("limits", [(None, None), (0, None), (61, None), (None, 10_001), (True, None), (5.0, None)])
def test_limits_outside_1_to_the_plans_are_refused(limits):
    key, _ = new_key()
    key.collect_events()

    with pytest.raises(InvalidInput):
        key.set_limits(*limits, Limits(60, 10_000), "operator")

    assert key.collect_events() == []
