"""After a seeded random run of ~1,000 commands, each read model equals what the aggregates and events say."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from domain.application import KeyLedger
from domain.auditlog import safe_data
from domain.keys import ApiKey
from domain.usage import UsageBatch
from projections import AuditEntry, ReadModels
from tests.projections.conftest import all_events, dump, opened
from tests.projections.workload import START, Workload, expected_usage, run_commands

COMMANDS = 1000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KeyLedger, ReadModels, Workload]]:
    """One run of the commands per backend, the runner following in the background as in an API process."""
    with opened(request.param, tmp_path_factory.mktemp("stream")) as (_, ledger, models):
        models.start()
        work = run_commands(ledger, COMMANDS, seed=20270301, after_each=lambda _: models.nudge())
        models.stop()
        models.catch_up()
        yield ledger, models, work


@pytest.fixture
def ledger(stream: tuple[KeyLedger, ReadModels, Workload]) -> KeyLedger:
    return stream[0]


@pytest.fixture
def models(stream: tuple[KeyLedger, ReadModels, Workload]) -> ReadModels:
    return stream[1]


@pytest.fixture
def workload(stream: tuple[KeyLedger, ReadModels, Workload]) -> Workload:
    return stream[2]


def test_the_workload_exercises_every_command(workload: Workload):
    for command in ("issue", "grant", "revoke_scope", "rotate", "revoke", "plan", "usage"):
        assert workload.commands[command] >= 10, workload.commands


def test_current_keys_equal_the_aggregates_at_any_moment(ledger: KeyLedger, models: ReadModels, workload: Workload):
    catalog = ledger.catalog
    moments = [START, START + timedelta(days=6), START + timedelta(days=91)]  # expiries, then rotation due
    for now in moments:
        for key_id, workspace in workload.keys.items():
            expected = ledger.get_key(key_id).state(now, catalog)
            assert models.get_key(workspace, key_id, now) == expected
        for workspace in workload.workspaces:
            expected_states = sorted(
                (ledger.get_key(k).state(now, catalog) for k, w in workload.keys.items() if w == workspace),
                key=lambda s: s.created_at,
            )
            assert models.list_keys(workspace, now) == expected_states
            for status in ("active", "expired", "revoked"):
                assert models.list_keys(workspace, now, status=status) == [
                    s for s in expected_states if s.status == status
                ]
            assert models.list_keys(workspace, now, rotation_due=True) == [s for s in expected_states if s.rotation_due]
    statuses = {s.status for now in moments for s in models.list_keys(workload.workspaces[0], now)}
    assert statuses == {"active", "expired", "revoked"}


def test_a_key_of_another_workspace_is_not_found(models: ReadModels, workload: Workload):
    key_id, workspace = next(iter(workload.keys.items()))
    other = next(w for w in workload.workspaces if w != workspace)

    assert models.get_key(other, key_id, START) is None
    assert models.history(other, key_id) == []


def _usage_as_dict(usage: Any) -> dict[str, Any]:
    return {
        "requests": usage.total,
        "successes": usage.successes,
        "client_errors": usage.client_errors,
        "rate_limited": usage.rate_limited,
        "per_minute": usage.per_minute,
        "per_day": usage.per_day,
        "top_endpoints": usage.top_endpoints,
        "last_used": usage.last_used,
        "scopes": usage.scopes,
    }


@pytest.mark.parametrize("window", [None, (timedelta(hours=20), timedelta(hours=50))])
def test_quota_usage_equals_the_recorded_counts(models: ReadModels, workload: Workload, window: Any):
    since, until = (START + window[0], START + window[1]) if window else (None, None)
    for workspace in workload.workspaces:
        expected = expected_usage(workload, workspace, since, until)

        usages = models.usage(workspace, since=since, until=until)

        assert {u.key_id: _usage_as_dict(u) for u in usages} == expected
        assert [u.total for u in usages] == sorted((u.total for u in usages), reverse=True)
        for u in usages:
            assert u.success_rate == pytest.approx(u.successes / u.total)
            assert models.usage(workspace, key_id=u.key_id, since=since, until=until) == [u]


def test_consumed_quota_counts_every_answer_but_refusals(models: ReadModels, workload: Workload):
    some = workload.usage[:20]
    for count in some:
        consumed = models.consumed_quota(count.minute, count.minute.date())

        in_minute = sum(
            c.count for c in workload.usage if c.key_id == count.key_id and c.minute == count.minute and c.status != 429
        )
        in_day = sum(
            c.count
            for c in workload.usage
            if c.key_id == count.key_id and c.minute.date() == count.minute.date() and c.status != 429
        )
        assert consumed.get(count.key_id, (0, 0)) == (in_minute, in_day)


def test_a_key_without_usage_reports_zeros(models: ReadModels, workload: Workload):
    used = {c.key_id for c in workload.usage}
    idle, workspace = next((k, w) for k, w in workload.keys.items() if k not in used)

    [usage] = models.usage(workspace, key_id=idle)

    assert (usage.total, usage.success_rate, usage.per_minute, usage.last_used) == (0, None, [], None)


def _expected_audit(ledger: KeyLedger) -> list[tuple[Any, ...]]:
    """(position, workspace, key, type, actor, time, data) of each lifecycle event, read from the store."""
    workspace_of = {}
    expected = []
    for position, event in all_events(ledger):
        if isinstance(event, UsageBatch.Event):
            continue
        if isinstance(event, ApiKey.KeyIssued):
            workspace_of[event.originator_id] = event.workspace_id
        if isinstance(event, ApiKey.Event):
            workspace, key = workspace_of[event.originator_id], event.originator_id
        else:
            workspace, key = event.originator_id, getattr(event, "key_id", None)
        expected.append(
            (position, workspace, key, type(event).__name__, event.actor, event.timestamp, safe_data(vars(event)))
        )
    return expected


def _row(entry: AuditEntry) -> tuple[Any, ...]:
    return (
        entry.position,
        entry.workspace_id,
        entry.key_id,
        entry.type,
        entry.actor,
        entry.occurred_at,
        entry.data,
    )


def test_audit_history_has_one_row_per_lifecycle_event(ledger: KeyLedger, models: ReadModels, workload: Workload):
    expected = _expected_audit(ledger)
    for workspace in workload.workspaces:
        pages, cursor = [], None
        while True:
            entries, cursor = models.audit(workspace, after=cursor, limit=37)
            pages += entries
            if cursor is None:
                break

        assert [_row(e) for e in pages] == [row for row in expected if row[1] == workspace]


def test_audit_filters_by_key_type_and_time(ledger: KeyLedger, models: ReadModels, workload: Workload):
    expected = _expected_audit(ledger)
    workspace = workload.workspaces[0]
    key_id = next(k for k, w in workload.keys.items() if w == workspace)
    middle = expected[len(expected) // 2][5]

    by_key, _ = models.audit(workspace, key_id=key_id, limit=1000)
    by_type, _ = models.audit(workspace, types=["KeyRotated", "KeyRevoked"], limit=1000)
    by_time, _ = models.audit(workspace, since=middle, until=middle + timedelta(seconds=1), limit=1000)

    mine = [r for r in expected if r[1] == workspace]
    assert [_row(e) for e in by_key] == [r for r in mine if r[2] == key_id]
    assert [_row(e) for e in by_type] == [r for r in mine if r[3] in ("KeyRotated", "KeyRevoked")]
    assert [_row(e) for e in by_time] == [r for r in mine if middle <= r[5] < middle + timedelta(seconds=1)]
    assert by_type and by_time


def test_history_is_the_keys_own_events_oldest_first(ledger: KeyLedger, models: ReadModels, workload: Workload):
    for key_id, workspace in list(workload.keys.items())[:30]:
        history = models.history(workspace, key_id)

        events = list(ledger.events.get(key_id))  # the aggregate's own stream
        assert [e.type for e in history] == [type(e).__name__ for e in events]
        assert [e.occurred_at for e in history] == [e.timestamp for e in events]
        assert [e.position for e in history] == sorted(e.position for e in history)


def test_no_read_model_other_than_current_keys_holds_a_digest(
    ledger: KeyLedger, models: ReadModels, workload: Workload
):
    digests = set()
    for _, event in all_events(ledger):
        digests.update(v for k, v in vars(event).items() if "digest" in k and v)
    assert len(digests) > len(workload.keys)

    rows = dump(models)

    for table, table_rows in rows.items():
        if table == "keys.keys":
            continue
        text = repr(table_rows)
        assert not any(d in text for d in digests), table
