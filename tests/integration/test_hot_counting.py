"""The hot path's one-step counting agrees with the step-by-step gate (`QuotaGate.check`), in process and in
Redis, and with Redis it counts nothing once a change marker moved (the credentials held are stale)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest
import redis

from adapters import quotas
from adapters.change_feed import RedisChangeFeed
from adapters.quotas import LocalCounters, QuotaDecision, QuotaGate
from tests.backends import REDIS_URL, redis_problem, require

NOW = datetime(2027, 3, 3, 14, 0, 30, tzinfo=UTC)
SECOND = int(NOW.timestamp())
# (per minute, per day) and how many requests: refusals by the minute, then by the day, limit.
CASES = [((3, 100), 6), ((5, 3), 6), ((1, 1), 3)]


def decisions(decide: object, n: int) -> list[tuple[bool, int, int, int, int, list[str]]]:
    made = [decide() for _ in range(n)]  # type: ignore[operator]
    return [
        (d.allowed, d.minute.remaining, d.day.remaining, d.binding.reset, d.retry_after, sorted(d.headers().items()))
        for d in made
    ]


@pytest.mark.parametrize(("limits", "n"), CASES)
def test_one_step_in_process_counting_answers_as_check(limits: tuple[int, int], n: int):
    gate, key = QuotaGate(), uuid4()
    reference = decisions(lambda: gate.check(key, *limits, NOW), n)
    counters = LocalCounters()
    minute_key, day_key = gate.names(key, SECOND // 60, SECOND // 86_400)

    def one_step() -> QuotaDecision:
        allowed, minute_used, day_used = counters.take(minute_key, day_key, *limits)
        return QuotaDecision(allowed, *limits, minute_used, day_used, SECOND % 86_400)

    assert decisions(one_step, n) == reference


@pytest.mark.parametrize(("limits", "n"), CASES)
def test_one_round_trip_in_redis_answers_as_check_and_counts_nothing_once_a_marker_moved(
    limits: tuple[int, int], n: int
):
    require("Redis", redis_problem())
    namespace = f"hot-{uuid4()}"
    gate, feed, key, workspace = (
        QuotaGate(REDIS_URL, namespace),
        RedisChangeFeed(REDIS_URL, namespace),
        uuid4(),
        uuid4(),
    )
    reference_key = uuid4()
    reference = decisions(lambda: gate.check(reference_key, *limits, NOW), n)
    feed.publish([key], 7)
    markers = [feed.name_of(key), feed.name_of(workspace)]
    minute_key, day_key = gate.names(key, SECOND // 60, SECOND // 86_400)

    def one_trip() -> QuotaDecision:
        decision = gate.check_unchanged(markers, [7, 0], minute_key, day_key, *limits, SECOND)
        assert decision is not None
        return decision

    assert decisions(one_trip, n) == reference
    used = gate.peek(key, *limits, NOW)
    feed.publish([workspace], 8)  # e.g. a plan change by another process
    assert gate.check_unchanged(markers, [7, 0], minute_key, day_key, *limits, SECOND) is None
    after = gate.peek(key, *limits, NOW)
    assert (after.minute_used, after.day_used) == (used.minute_used, used.day_used)


# The event loop's connection: `RedisWire` for a plain URL, redis-py's client for one with options it leaves alone.
@pytest.mark.parametrize("url", [REDIS_URL, f"{REDIS_URL}?socket_keepalive=true"])
def test_concurrent_round_trips_on_the_event_loop_are_counted_exactly_and_refused_once_a_marker_moved(url: str):
    require("Redis", redis_problem())
    namespace = f"hot-{uuid4()}"
    gate, feed, key, workspace = (
        QuotaGate(url, namespace),
        RedisChangeFeed(REDIS_URL, namespace),
        uuid4(),
        uuid4(),
    )
    markers = [feed.name_of(key), feed.name_of(workspace)]
    minute_key, day_key = gate.names(key, SECOND // 60, SECOND // 86_400)

    async def trips(n: int, expected: list[int]) -> list[QuotaDecision | None]:
        calls = (gate.check_unchanged_async(markers, expected, minute_key, day_key, 10, 100, SECOND) for _ in range(n))
        return await asyncio.gather(*calls)  # sent together, in one pipeline

    answers = asyncio.run(trips(15, [0, 0]))
    feed.publish([key], 3)
    moved = asyncio.run(trips(3, [0, 0]))

    assert [a.allowed for a in answers if a is not None] == [True] * 10 + [False] * 5
    assert sorted(a.minute_used for a in answers if a is not None)[-1] == 10
    assert moved == [None, None, None]
    assert gate.peek(key, 10, 100, NOW).minute_used == 10


def test_decisions_sent_together_fail_alone_and_large_batches_are_split(monkeypatch: pytest.MonkeyPatch):
    require("Redis", redis_problem())
    monkeypatch.setattr("adapters.quotas.MAX_BATCH", 4)
    sent: list[int] = []  # decisions per call
    dispatch = quotas._Batcher._dispatch

    def counted(self: quotas._Batcher, keys: list[str], args: list[object], futures: list[object]) -> None:
        sent.append(len(futures))
        dispatch(self, keys, args, futures)  # type: ignore[arg-type]

    monkeypatch.setattr(quotas._Batcher, "_dispatch", counted)
    namespace = f"hot-{uuid4()}"
    gate, feed = QuotaGate(REDIS_URL, namespace), RedisChangeFeed(REDIS_URL, namespace)
    good, broken = uuid4(), uuid4()
    minute, day = SECOND // 60, SECOND // 86_400
    broken_minute, _ = gate.names(broken, minute, day)
    shared = gate.storage.shared  # type: ignore[attr-defined]
    shared.get_connection().set(shared.prefixed_key(broken_minute), "not a number")

    async def trips() -> list[QuotaDecision | BaseException | None]:
        calls = [
            gate.check_unchanged_async([feed.name_of(key)], [0], *gate.names(key, minute, day), 5, 100, SECOND)
            for key in [good, broken] * 5
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(trips())

    assert [a.allowed for a in answers[0::2] if isinstance(a, QuotaDecision)] == [True] * 5
    assert all(isinstance(a, redis.ResponseError) for a in answers[1::2])
    assert gate.peek(good, 5, 100, NOW).minute_used == 5  # each counted once
    assert sent == [4, 4, 2]


def test_a_script_redis_lost_is_loaded_again():
    require("Redis", redis_problem())
    namespace = f"hot-{uuid4()}"
    gate, feed, key = QuotaGate(REDIS_URL, namespace), RedisChangeFeed(REDIS_URL, namespace), uuid4()
    minute_key, day_key = gate.names(key, SECOND // 60, SECOND // 86_400)

    async def trips() -> list[QuotaDecision | None]:
        call = gate.check_unchanged_async([feed.name_of(key)], [0], minute_key, day_key, 10, 100, SECOND)
        first = await call
        assert gate._batcher is not None
        gate._batcher.sha = "0" * 40  # as after a restart of Redis: no script by that digest
        return [first, await gate.check_unchanged_async([feed.name_of(key)], [0], minute_key, day_key, 10, 100, SECOND)]

    answers = asyncio.run(trips())

    assert [a.minute_used if a else None for a in answers] == [1, 2]
    assert gate.async_ready()  # no pause: Redis answered


def test_once_connected_batches_are_written_at_once_and_counted_exactly(monkeypatch: pytest.MonkeyPatch):
    require("Redis", redis_problem())
    tasks: list[int] = []  # batches sent by a task: connecting and loading the script
    send = quotas._Batcher._send

    async def counted(self: quotas._Batcher, keys: list[str], args: list[object], futures: list[object]) -> None:
        tasks.append(len(futures))
        await send(self, keys, args, futures)  # type: ignore[arg-type]

    monkeypatch.setattr(quotas._Batcher, "_send", counted)
    namespace = f"hot-{uuid4()}"
    gate, feed, key = QuotaGate(REDIS_URL, namespace), RedisChangeFeed(REDIS_URL, namespace), uuid4()
    markers, names = [feed.name_of(key)], gate.names(key, SECOND // 60, SECOND // 86_400)

    async def trips() -> list[QuotaDecision | None]:
        answers = [await gate.check_unchanged_async(markers, [0], *names, 10, 100, SECOND)]
        for _ in range(3):
            calls = (gate.check_unchanged_async(markers, [0], *names, 10, 100, SECOND) for _ in range(5))
            answers += await asyncio.gather(*calls)
        feed.publish([key], 1)
        answers.append(await gate.check_unchanged_async(markers, [0], *names, 10, 100, SECOND))
        return answers

    answers = asyncio.run(trips())

    assert tasks == [1]  # the first call only
    assert [a.allowed if a else None for a in answers] == [True] * 10 + [False] * 6 + [None]
    assert gate.peek(key, 10, 100, NOW).minute_used == 10
