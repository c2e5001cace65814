"""The quota gate on in-process counters (the Redis storage runs the same code in tests/api)."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from adapters.quotas import QuotaGate

NOW = datetime(2027, 3, 3, 14, 0, 30, tzinfo=UTC)


def test_a_key_gets_exactly_its_minute_limit_then_429_until_the_next_utc_minute():
    gate, key = QuotaGate(), uuid4()

    answers = [gate.check(key, 3, 100, NOW).allowed for _ in range(5)]
    refused = gate.check(key, 3, 100, NOW)
    next_minute = gate.check(key, 3, 100, NOW.replace(second=0) + timedelta(minutes=1))

    assert answers == [True, True, True, False, False]
    assert refused.retry_after == 30 and refused.minute.remaining == 0
    assert next_minute.allowed


def test_a_request_refused_by_the_day_limit_consumes_no_minute_quota():
    gate, key = QuotaGate(), uuid4()
    for _ in range(3):
        assert gate.check(key, 5, 3, NOW).allowed

    refusals = [gate.check(key, 5, 3, NOW) for _ in range(4)]

    assert not any(r.allowed for r in refusals)
    assert all(r.minute.remaining == 2 and r.day.remaining == 0 for r in refusals)
    assert refusals[0].binding.name == "day"
    assert refusals[0].retry_after == int((datetime(2027, 3, 4, tzinfo=UTC) - NOW).total_seconds())


def test_a_plan_change_mid_minute_keeps_what_was_used():
    gate, key = QuotaGate(), uuid4()
    for _ in range(60):
        gate.check(key, 60, 10_000, NOW)

    upgraded = gate.check(key, 300, 100_000, NOW)

    assert upgraded.allowed and upgraded.minute.remaining == 300 - 61


def test_restored_counters_count_against_the_current_windows():
    gate, key = QuotaGate(), uuid4()

    gate.restore(key, minute_used=59, day_used=9_999, now=NOW)

    assert gate.check(key, 60, 10_000, NOW).allowed
    assert not gate.check(key, 60, 10_000, NOW + timedelta(minutes=1)).allowed  # the day is used up


def test_headers_follow_the_ietf_draft():
    decision = QuotaGate().check(uuid4(), 60, 10_000, NOW)

    headers = decision.headers()

    assert headers["RateLimit-Policy"] == '"minute";q=60;w=60, "day";q=10000;w=86400'
    assert headers["RateLimit"].startswith('"minute";r=59;t=30, "day";r=9999;t=')
    assert "Retry-After" not in headers
