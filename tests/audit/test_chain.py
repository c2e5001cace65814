"""Tamper evidence: `keyledger audit verify` against a store edited behind keyledger's back."""

from __future__ import annotations

import json
import threading
from uuid import uuid4

import pytest
from pydantic import SecretStr

from adapters.auditchain.links import AuditChainError, ChainKey, Link
from adapters.auditchain.verify import Problem, verify_chain
from adapters.auditchain.writer import AuditKeyError
from domain.application import KeyLedger
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests.audit.cli import run
from tests.audit.conftest import AUDIT_KEY
from tests.audit.tamper import Store

KEY = ChainKey.from_setting(AUDIT_KEY)


def seed(ledger: KeyLedger) -> dict[str, int]:
    """A small history; returns the positions of some of its events."""
    ws = ledger.create_workspace("acme", "pro").workspace.id
    key = ledger.issue_key(ws, "ci", ["read:nodes"]).key.id
    granted = ledger.grant_scopes(key, ["write:edges"]).position
    ledger.rotate_key(key, grace_seconds=60)
    ledger.revoke_scopes(key, ["read:nodes"])
    last = ledger.revoke_key(key, reason="done").position
    assert granted is not None and last is not None
    return {"granted": granted, "last": last}


def verify(ledger: KeyLedger, anchor: Link | None = None):  # type: ignore[no-untyped-def]
    return verify_chain(ledger.recorder, KEY, anchor)  # type: ignore[arg-type]


def test_an_untouched_store_verifies_clean(audited: KeyLedger, audit_settings: Settings):
    seed(audited)
    total = audited.max_position()

    result = run(audit_settings, "verify")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["events"] == total
    assert report["head"]["position"] == total


@pytest.mark.parametrize("tampering", ["edit", "delete", "drop-last"])
def test_verify_names_the_position_of_an_edited_removed_or_dropped_event(
    audited: KeyLedger, audit_settings: Settings, tampering: str
):
    positions = seed(audited)
    store = Store(audit_settings)
    if tampering == "edit":  # a granted scope quietly becomes `admin`
        bad = positions["granted"]
        edited = store.state(bad).replace(b"write:edges", b"admin")
        assert edited != store.state(bad)
        store.set_state(bad, edited)
    elif tampering == "delete":
        bad = positions["granted"]
        store.delete_event(bad)
    else:
        bad = positions["last"]
        assert store.max_position() == bad
        store.delete_event(bad)

    result = run(audit_settings, "verify")

    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["first_bad_position"] == bad
    assert f"position {bad}" in result.stderr
    assert AUDIT_KEY not in result.stdout + result.stderr


def test_verify_detects_an_inserted_event(audited: KeyLedger, audit_settings: Settings):
    seed(audited)
    store = Store(audit_settings)
    position = store.max_position() + 5
    topic, state = store.sql("SELECT topic, state FROM {events} WHERE {pos} = 1")[0]
    oid = uuid4() if store.postgres else uuid4().hex
    store.sql(
        "INSERT INTO {events} (originator_id, originator_version, topic, state, {pos}) VALUES (?, 1, ?, ?, ?)",
        (oid, topic, state, position),
    )

    verdict = verify(audited)

    assert verdict.finding is not None
    assert (verdict.finding.position, verdict.finding.problem) == (position, Problem.INSERTED)


def test_verify_detects_reordered_events(audited: KeyLedger, audit_settings: Settings):
    positions = seed(audited)
    store = Store(audit_settings)
    a, b = positions["granted"], positions["granted"] + 1
    spare = store.max_position() + 100
    store.move_event(a, spare)
    store.move_event(b, a)
    store.move_event(spare, b)

    verdict = verify(audited)

    assert verdict.finding is not None
    assert (verdict.finding.position, verdict.finding.problem) == (a, Problem.ALTERED)


def test_an_event_removed_with_its_link_breaks_the_next_link(audited: KeyLedger, audit_settings: Settings):
    positions = seed(audited)
    store = Store(audit_settings)
    bad = positions["granted"]
    store.delete_event(bad)
    store.delete_link(bad)

    verdict = verify(audited)

    assert verdict.finding is not None
    assert (verdict.finding.position, verdict.finding.problem) == (bad + 1, Problem.ALTERED)


def test_a_tail_removed_from_both_tables_needs_the_exported_head(audited: KeyLedger, audit_settings: Settings):
    seed(audited)
    head = verify(audited).head
    assert head is not None
    store = Store(audit_settings)
    store.delete_event(head.position)
    store.delete_link(head.position)

    assert verify(audited).ok  # what the chain alone cannot see
    verdict = verify(audited, anchor=head)

    assert verdict.finding is not None
    assert (verdict.finding.position, verdict.finding.problem) == (head.position, Problem.TRUNCATED)
    result = run(audit_settings, "verify", "--anchor", f"{head.position}:{head.mac.hex()}")
    assert result.returncode == 1
    assert f"position {head.position}" in result.stderr


def test_a_store_missing_its_tail_refuses_to_fork_the_chain(audited: KeyLedger, audit_settings: Settings):
    created = audited.create_workspace("acme", "pro")
    store = Store(audit_settings)
    store.delete_event(store.max_position())

    if audit_settings.is_postgres:  # positions are never reused: the chain just records the gap's cause
        audited.issue_key(created.workspace.id, "next", [])
        verdict = verify(audited)
        assert verdict.finding is not None and verdict.finding.problem is Problem.REMOVED
    else:  # SQLite hands out the deleted rowid again: refuse rather than link it twice
        with pytest.raises(AuditChainError):
            audited.issue_key(created.workspace.id, "next", [])


def test_verify_without_the_key_checks_the_tree_but_not_the_chain(audited: KeyLedger, audit_settings: Settings):
    positions = seed(audited)
    without_key = audit_settings.model_copy(update={"audit_key": None})

    clean = run(without_key, "verify")
    Store(audit_settings).delete_link(positions["granted"])  # only the chain can see this
    broken_chain = run(without_key, "verify")

    assert clean.returncode == 0, clean.stderr
    assert "head" not in json.loads(clean.stdout)  # no chain checked
    assert broken_chain.returncode == 0, broken_chain.stderr
    assert run(audit_settings, "verify").returncode == 1


def test_start_up_refuses_a_missing_or_wrong_key_once_a_chain_exists(audit_settings: Settings):
    open_ledger(audit_settings).close()  # starts the chain (its genesis link)

    with pytest.raises(AuditKeyError, match="KEYLEDGER_AUDIT_KEY is not set"):
        open_ledger(audit_settings.model_copy(update={"audit_key": None}))
    wrong = audit_settings.model_copy(update={"audit_key": SecretStr("another-key-" + "x" * 40)})
    with pytest.raises(AuditKeyError, match="not the key"):
        open_ledger(wrong)
    result = run(wrong, "verify")
    assert result.returncode == 1
    assert "genesis" in json.loads(result.stdout)["problem"]


def test_events_written_before_the_key_was_set_are_chained_when_it_is(settings: Settings, audit_settings: Settings):
    plain = open_ledger(settings)
    seed(plain)
    plain.close()

    ledger = open_ledger(audit_settings)
    try:
        seed(ledger)
        verdict = verify(ledger)
        assert verdict.ok
        assert verdict.events == ledger.max_position()
    finally:
        ledger.close()


def test_concurrent_writers_keep_one_unbroken_chain(audited: KeyLedger):
    ws = audited.create_workspace("acme", "pro").workspace.id
    keys = [audited.issue_key(ws, f"k{i}", []).key.id for i in range(4)]
    scopes = ["read:nodes", "read:edges", "write:nodes", "write:edges"]
    barrier = threading.Barrier(len(keys))
    errors: list[BaseException] = []

    def writer(key_id) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            for _ in range(5):
                audited.grant_scopes(key_id, scopes)
                audited.revoke_scopes(key_id, scopes)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    verdict = verify(audited)
    assert verdict.ok, verdict.finding
    assert verdict.events == audited.max_position()


def test_verify_checks_snapshots_against_their_events(audited: KeyLedger, audit_settings: Settings):
    ws = audited.create_workspace("acme", "pro").workspace.id
    key = audited.issue_key(ws, "busy", ["read:nodes"]).key
    for i in range(120):  # a snapshot at version 100, where the key holds read:nodes only
        key.grant(["write:edges"], "operator") if i % 2 == 0 else key.revoke_scopes(["write:edges"], "operator")
    audited.save(key)
    store = Store(audit_settings)
    assert run(audit_settings, "verify").returncode == 0
    (state,) = store.sql("SELECT state FROM {snapshots}")[0]
    planted = bytes(state).replace(b'"read:nodes"', b'"admin"')
    assert planted != bytes(state)
    store.sql("UPDATE {snapshots} SET state = ?", (planted,))

    result = run(audit_settings, "verify")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["problem"] == "snapshot"
    assert report["first_bad_position"] == audited.recorder.select_positions(key.id)[100]  # type: ignore[attr-defined]
    assert str(key.id) in report["detail"]


def test_verify_reports_an_unchained_store_and_leaves_it_alone(ledger: KeyLedger, audit_settings: Settings):
    seed(ledger)  # written without a key

    result = run(audit_settings, "verify")

    assert result.returncode == 1
    assert json.loads(result.stdout)["problem"] == "no-chain"
    assert Store(audit_settings).sql("SELECT COUNT(*) FROM {chain}")[0][0] == 0
