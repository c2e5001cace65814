"""Per-key request quotas: fixed windows aligned to the UTC minute and the UTC day.

Shared counters live in the `limits` library's Redis storage (its atomic
INCR-and-EXPIRE script). The library's rate limiters start a window at a key's
first hit and name counters by the limit's amount, while ours must align to the
calendar and survive a plan change mid-window, so the gate uses the storage's
`incr` on counters named by key and UTC minute/day. In one process the counters
are a plain locked dict (`LocalCounters`): the library's memory storage starts a
timer thread every 10 ms under load, which measurably slowed verification.

A refused request consumes nothing: an increment that went over a limit is
undone before answering, so every allowed request saw a count within its limits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, cast
from uuid import UUID

import redis
import redis.asyncio
from limits.storage import Storage, storage_from_string

from adapters.redis_wire import RedisWire
from domain.timefmt import floor_minute

# Seconds the event-loop round trip is left alone after Redis failed it.
ASYNC_PAUSE = 5.0
# Counters outlive their window a little so a slow request still finds its own.
MINUTE_EXPIRY = 120
DAY_EXPIRY = 90_000


@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    remaining: int
    reset: int  # seconds until the window resets


class QuotaDecision:
    """Both windows after a decision, as plain integers: the `Window`s are built only when read
    (most answers need just `allowed`, and building them costs more than deciding)."""

    __slots__ = ("allowed", "day_used", "minute_used", "per_day", "per_minute", "policy", "second_of_day")

    def __init__(
        self, allowed: bool, per_minute: int, per_day: int, minute_used: int, day_used: int, second_of_day: int
    ) -> None:
        self.allowed = allowed
        self.per_minute = per_minute
        self.per_day = per_day
        self.minute_used = minute_used
        self.day_used = day_used
        self.second_of_day = second_of_day
        self.policy: bytes | None = None  # the RateLimit-Policy value, when the caller has it made already

    @property
    def minute(self) -> Window:
        limit = self.per_minute
        return Window("minute", limit, max(0, limit - self.minute_used), 60 - self.second_of_day % 60)

    @property
    def day(self) -> Window:
        return Window("day", self.per_day, max(0, self.per_day - self.day_used), 86_400 - self.second_of_day)

    @property
    def binding(self) -> Window:
        """The window a caller should watch: the exhausted one, else the one with least room."""
        minute, day = self.minute, self.day
        if not self.allowed:
            return minute if minute.remaining == 0 else day
        return minute if minute.remaining <= day.remaining else day

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as an ASGI answer carries them (lower-case names, bytes)."""
        per_minute, per_day, second = self.per_minute, self.per_day, self.second_of_day
        minute_left, day_left = max(0, per_minute - self.minute_used), max(0, per_day - self.day_used)
        pairs = [
            (b"ratelimit-policy", self.policy or policy_value(per_minute, per_day)),
            (
                b"ratelimit",
                b'"minute";r=%d;t=%d, "day";r=%d;t=%d' % (minute_left, 60 - second % 60, day_left, 86_400 - second),
            ),
        ]
        if not self.allowed:
            pairs.append((b"retry-after", b"%d" % self.retry_after))
        return pairs

    def binding_numbers(self) -> tuple[int, int, int]:
        """`binding`'s limit, remaining and reset, without building the windows."""
        second = self.second_of_day
        minute_left = max(0, self.per_minute - self.minute_used)
        day_left = max(0, self.per_day - self.day_used)
        use_minute = minute_left == 0 if not self.allowed else minute_left <= day_left
        if use_minute:
            return self.per_minute, minute_left, 60 - second % 60
        return self.per_day, day_left, 86_400 - second

    @property
    def retry_after(self) -> int:
        return max(1, self.binding.reset)

    def headers(self) -> dict[str, str]:
        per_minute, per_day, second = self.per_minute, self.per_day, self.second_of_day
        minute_left, day_left = max(0, per_minute - self.minute_used), max(0, per_day - self.day_used)
        headers = {
            "RateLimit-Policy": f'"minute";q={per_minute};w=60, "day";q={per_day};w=86400',
            "RateLimit": f'"minute";r={minute_left};t={60 - second % 60}, "day";r={day_left};t={86_400 - second}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


def policy_value(per_minute: int, per_day: int) -> bytes:
    """The RateLimit-Policy header of a key's two windows."""
    return b'"minute";q=%d;w=60, "day";q=%d;w=86400' % (per_minute, per_day)


class LocalCounters:
    """In-process counters with the `incr`/`get` subset of a `limits` storage.

    Counter names carry their window, so old windows are only dropped, never
    reset: a sweep every `SWEEP_SECONDS` removes the expired ones.
    """

    SWEEP_SECONDS = 60.0

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + self.SWEEP_SECONDS

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            value = self._counts.get(key, 0) + amount
            self._counts[key] = value
            self._expiry.setdefault(key, now + expiry)
            return value

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def take(self, minute_key: str, day_key: str, per_minute: int, per_day: int) -> tuple[bool, int, int]:
        """`QuotaGate.check`'s counting under one lock: one request of both windows if both have room."""
        counts = self._counts
        with self._lock:
            minute_used = counts.get(minute_key, 0) + 1
            day_used = counts.get(day_key, 0) + 1
            if minute_used > per_minute or day_used > per_day:
                return False, minute_used - 1, day_used - 1
            counts[minute_key] = minute_used
            counts[day_key] = day_used
            if minute_used == 1 or day_used == 1:
                now = time.monotonic()
                self._expiry.setdefault(minute_key, now + MINUTE_EXPIRY)
                self._expiry.setdefault(day_key, now + DAY_EXPIRY)
                if now >= self._next_sweep:
                    self._sweep(now)
            return True, minute_used, day_used

    def _sweep(self, now: float) -> None:
        for key in [k for k, at in self._expiry.items() if at <= now]:
            self._counts.pop(key, None)
            self._expiry.pop(key, None)
        self._next_sweep = now + self.SWEEP_SECONDS


class Counters(Protocol):
    """What the gate needs of a counter store: `LocalCounters` or a `limits` storage."""

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to a counter (created with `expiry` seconds to live); return the new value."""
        ...

    def get(self, key: str) -> int:
        """A counter's value, 0 when absent."""
        ...


def _windows(now: datetime) -> tuple[int, int, int]:
    """The UTC minute and day numbers since the epoch, and the second within the day."""
    second = int(now.timestamp())
    return second // 60, second // 86_400, second % 86_400


# Decisions of the hot path, several in one call. ARGV[1], ARGV[2]: the minute and day counters' expiries;
# then per decision, in KEYS its change markers (key, workspace) and its minute and day counters, in ARGV the
# number of markers, the values they are expected to hold and the two limits. As `QuotaGate.check` with the
# `limits` storage's INCR-and-EXPIRE, once the markers hold: three numbers per decision, 1 (allowed) or 0
# (refused) with the minute's and the day's counts; -1 0 0 when a marker moved (nothing counted); -2 0 0 when
# Redis refused a command (a counter that is not a number): only that decision fails, as it would alone.
_DECIDE = """
local function decide(k, a, n)
  for i = 1, n do
    if tonumber(redis.call('get', KEYS[k + i - 1]) or '0') ~= tonumber(ARGV[a + i]) then return -1, 0, 0 end
  end
  local mk, dk = KEYS[k + n], KEYS[k + n + 1]
  local per_minute, per_day = tonumber(ARGV[a + n + 1]), tonumber(ARGV[a + n + 2])
  local m = redis.call('incrby', mk, 1)
  if m == 1 then redis.call('expire', mk, ARGV[1]) end
  if m > per_minute then
    return 0, redis.call('incrby', mk, -1), tonumber(redis.call('get', dk) or '0')
  end
  local d = redis.call('incrby', dk, 1)
  if d == 1 then redis.call('expire', dk, ARGV[2]) end
  if d > per_day then
    d = redis.call('incrby', dk, -1)
    return 0, redis.call('incrby', mk, -1), d
  end
  return 1, m, d
end
local out, k, a = {}, 1, 3
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local ok, allowed, m, d = pcall(decide, k, a, n)
  if not ok then allowed, m, d = -2, 0, 0 end
  out[#out + 1] = allowed
  out[#out + 1] = m
  out[#out + 1] = d
  k, a = k + n + 2, a + n + 3
end
return out
"""
_EXPIRIES = (MINUTE_EXPIRY, DAY_EXPIRY)
MAX_BATCH = 256  # decisions in one call: Redis runs a script alone, so other clients wait while it runs


class _Batcher:
    """Decisions made on an event loop, sent together: those made before the loop's next turn go in one
    call of `_DECIDE` (one command to pack, one reply to parse), so concurrent requests share a round trip."""

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        loop: asyncio.AbstractEventLoop,
        write_now: Callable[..., asyncio.Future[Any] | None] | None = None,
    ) -> None:
        self.command = call  # sends one command, returns its reply (`RedisWire.call`, or redis-py's)
        self.write_now = write_now  # `RedisWire.send`: written at once on an open connection (None: not open)
        self.loop = loop
        self.sha: str | None = None
        self.keys: list[str] = []
        self.args: list[Any] = [*_EXPIRIES]
        self.futures: list[asyncio.Future[Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def call(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if not self.futures:
            self.loop.call_soon(self._start)
        self.keys += keys
        self.args += args
        self.futures.append(future)
        if len(self.futures) >= MAX_BATCH:
            self._start()
        return future

    def _start(self) -> None:
        if not self.futures:  # sent already, full
            return
        batch = self.keys, self.args, self.futures
        self.keys, self.args, self.futures = [], [*_EXPIRIES], []
        self._dispatch(*batch)

    def _dispatch(self, keys: list[str], args: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        """One call of the script for a batch: written at once when the script is loaded and the connection open
        (its reply handed out by a callback), else by a task that connects and loads first."""
        if self.sha is not None and self.write_now is not None:
            reply = self.write_now("EVALSHA", self.sha, len(keys), *keys, *args)
            if reply is not None:
                reply.add_done_callback(lambda done: self._deliver(done, keys, args, futures))
                return
        self._spawn(keys, args, futures)

    def _spawn(self, keys: list[str], args: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        task = self.loop.create_task(self._send(keys, args, futures))
        self._tasks.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._tasks.discard)

    def _deliver(
        self, reply: asyncio.Future[Any], keys: list[str], args: list[Any], futures: list[asyncio.Future[Any]]
    ) -> None:
        error = reply.exception() if not reply.cancelled() else redis.ConnectionError("cancelled")
        if isinstance(error, redis.exceptions.NoScriptError):  # Redis lost its scripts (a restart): the task loads
            self.sha = None
            self._spawn(keys, args, futures)
        elif error is not None:
            _fail(futures, error)
        else:
            _hand_out(reply.result(), futures)

    async def _send(self, keys: list[str], args: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        try:
            try:
                if self.sha is None:
                    self.sha = await self._load()
                replies = await self.command("EVALSHA", self.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:  # Redis lost its scripts (a restart): load again, once
                self.sha = await self._load()
                replies = await self.command("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as error:
            _fail(futures, error)
            return
        _hand_out(replies, futures)

    async def _load(self) -> str:
        sha = await self.command("SCRIPT", "LOAD", _DECIDE)
        return sha.decode() if isinstance(sha, bytes) else str(sha)


def loop_batcher(redis_url: str, loop: asyncio.AbstractEventLoop) -> _Batcher:
    """An event loop's sender of `_DECIDE` calls: over `RedisWire` (the cheap round trip) when it understands the
    URL, else through redis-py's asyncio client."""
    if RedisWire.supports(redis_url):
        wire = RedisWire(redis_url, timeout=1.0)
        return _Batcher(wire.call, loop, wire.send)
    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    return _Batcher(client.execute_command, loop)


def _hand_out(replies: list[Any], futures: list[asyncio.Future[Any]]) -> None:
    for i, future in enumerate(futures):
        if not future.done():
            future.set_result(replies[3 * i : 3 * i + 3])


def _fail(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    """Each caller gets the error (a RedisError: the caller takes the slow path)."""
    failure = error if isinstance(error, redis.RedisError) else redis.RedisError(repr(error))
    for future in futures:
        if not future.done():
            future.set_exception(failure)


class RedisUnavailable(Exception):
    """Redis is unreachable and KEYLEDGER_REDIS_OUTAGE=closed: refuse (503) rather than count per process."""


class FallbackCounters:
    """Shared (Redis) counters that fall back to this process's own while Redis is unreachable.

    SPEC 8.5: answers go on, counted per process (a key may then get up to its limit from each
    process), and the shared counters are used again as soon as Redis answers. With `closed`,
    an unreachable Redis raises RedisUnavailable instead.
    """

    def __init__(self, shared: Counters, closed: bool = False) -> None:
        self.shared = shared
        self.local = LocalCounters()
        self.closed = closed
        self.degraded = 0  # calls answered by the local counters (a metric)

    def _fallback(self, error: Exception) -> Counters:
        if self.closed:
            raise RedisUnavailable(f"Redis is unreachable ({type(error).__name__})") from error
        self.degraded += 1
        return self.local

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        try:
            return self.shared.incr(key, expiry, amount=amount)
        except redis.RedisError as error:
            return self._fallback(error).incr(key, expiry, amount)

    def get(self, key: str) -> int:
        try:
            return self.shared.get(key)
        except redis.RedisError as error:
            return self._fallback(error).get(key)


class QuotaGate:
    """Checks and consumes a key's minute and day quotas."""

    def __init__(self, redis_url: str | None = None, namespace: str = "kl", outage_closed: bool = False) -> None:
        self.storage: Counters
        self._script: Any = None
        self._redis_url = redis_url or ""
        self._batcher: _Batcher | None = None  # made on the first call in a loop (check_unchanged_async)
        self._async_down_until = 0.0
        if redis_url:
            # Short timeouts: an unreachable Redis must not hold a verification for long.
            storage = cast(Storage, storage_from_string(redis_url, socket_timeout=1, socket_connect_timeout=1))
            self.storage = FallbackCounters(storage, outage_closed)
            self._script = cast(Any, storage).get_connection().register_script(_DECIDE)
        else:
            self.storage = LocalCounters()
        self.shared = redis_url is not None
        self.namespace = namespace

    @property
    def degraded(self) -> int:
        """Counter calls answered per process because Redis was unreachable."""
        return self.storage.degraded if isinstance(self.storage, FallbackCounters) else 0

    def _counters(self, key_id: UUID, now: datetime) -> tuple[str, str]:
        minute, day, _ = _windows(now)
        return f"{self.namespace}:q:{key_id}:m{minute}", f"{self.namespace}:q:{key_id}:d{day}"

    def check(self, key_id: UUID, per_minute: int, per_day: int, now: datetime) -> QuotaDecision:
        """Consume one request of both windows if both have room; otherwise consume nothing."""
        minute_key, day_key = self._counters(key_id, now)
        minute_used = self.storage.incr(minute_key, MINUTE_EXPIRY)
        if minute_used > per_minute:
            minute_used = self.storage.incr(minute_key, MINUTE_EXPIRY, amount=-1)
            day_used = self.storage.get(day_key)
            allowed = False
        else:
            day_used = self.storage.incr(day_key, DAY_EXPIRY)
            allowed = day_used <= per_day
            if not allowed:
                day_used = self.storage.incr(day_key, DAY_EXPIRY, amount=-1)
                minute_used = self.storage.incr(minute_key, MINUTE_EXPIRY, amount=-1)
        return self._decision(allowed, per_minute, per_day, minute_used, day_used, now)

    def names(self, key_id: UUID, minute: int, day: int) -> tuple[str, str]:
        """The counters of a key's minute and day windows (numbered since the epoch, UTC)."""
        return f"{self.namespace}:q:{key_id}:m{minute}", f"{self.namespace}:q:{key_id}:d{day}"

    def check_unchanged(
        self,
        markers: list[str],
        expected: list[int],
        minute_key: str,
        day_key: str,
        per_minute: int,
        per_day: int,
        second: int,
    ) -> QuotaDecision | None:
        """With Redis: `check`, in one round trip with the check that the change markers named (a key's and
        its workspace's, `adapters.change_feed`) still hold the `expected` values, so the credentials the
        caller holds are current. None, counting nothing, when a marker moved. Raises redis.RedisError
        (the caller falls back to the step-by-step path, which knows what an outage means)."""
        if self._script is None:
            return None
        keys, args = self._request(markers, expected, minute_key, day_key, per_minute, per_day)
        try:
            reply = self._script(keys, [*_EXPIRIES, *args])
        except redis.RedisError:
            self._async_down_until = time.monotonic() + ASYNC_PAUSE  # one timeout, not two, per decision a while
            raise
        return self._decided(reply, per_minute, per_day, second)

    def async_ready(self) -> bool:
        """Whether `check_unchanged[_async]` may be tried: not for a few seconds after Redis failed one (the
        step-by-step path, with its own timeouts and outage rules, answers meanwhile)."""
        return self.shared and time.monotonic() >= self._async_down_until

    async def check_unchanged_async(
        self,
        markers: list[str],
        expected: list[int],
        minute_key: str,
        day_key: str,
        per_minute: int,
        per_day: int,
        second: int,
    ) -> QuotaDecision | None:
        """`check_unchanged` on the event loop (redis.asyncio): no thread hop for the hot path's one round trip,
        shared with the decisions made in the same loop turn. Raises redis.RedisError, and `async_ready` says
        no for `ASYNC_PAUSE` seconds after."""
        if self._script is None:
            return None
        loop = asyncio.get_running_loop()
        batcher = self._batcher
        if batcher is None or batcher.loop is not loop:  # a client's connections belong to the loop that made them
            batcher = self._batcher = loop_batcher(self._redis_url, loop)
        keys, args = self._request(markers, expected, minute_key, day_key, per_minute, per_day)
        try:
            reply = await batcher.call(keys, args)
        except redis.RedisError:
            self._async_down_until = time.monotonic() + ASYNC_PAUSE
            raise
        return self._decided(reply, per_minute, per_day, second)

    def _request(
        self, markers: list[str], expected: list[int], minute_key: str, day_key: str, per_minute: int, per_day: int
    ) -> tuple[list[str], list[Any]]:
        """One decision's KEYS and ARGV for `_DECIDE` (the counters named as the `limits` storage names them)."""
        shared = cast(Any, cast(FallbackCounters, self.storage).shared)
        keys = [*markers, shared.prefixed_key(minute_key), shared.prefixed_key(day_key)]
        return keys, [len(markers), *expected, per_minute, per_day]

    @staticmethod
    def _decided(reply: list[Any], per_minute: int, per_day: int, second: int) -> QuotaDecision | None:
        """One decision's three numbers from `_DECIDE`: None when a marker moved."""
        allowed, minute_used, day_used = reply  # integers, as RESP's integer replies are parsed
        if allowed == -2:
            raise redis.ResponseError("Redis refused a quota counter's command (not a number?)")
        if allowed < 0:
            return None
        return QuotaDecision(allowed == 1, per_minute, per_day, minute_used, day_used, second % 86_400)

    def peek(self, key_id: UUID, per_minute: int, per_day: int, now: datetime) -> QuotaDecision:
        """The windows as they stand, consuming nothing."""
        minute_key, day_key = self._counters(key_id, now)
        minute_used, day_used = self.storage.get(minute_key), self.storage.get(day_key)
        allowed = minute_used < per_minute and day_used < per_day
        return self._decision(allowed, per_minute, per_day, minute_used, day_used, now)

    @staticmethod
    def _decision(
        allowed: bool, per_minute: int, per_day: int, minute_used: int, day_used: int, now: datetime
    ) -> QuotaDecision:
        _, _, second_of_day = _windows(now)
        return QuotaDecision(allowed, per_minute, per_day, minute_used, day_used, second_of_day)

    def restore(self, key_id: UUID, minute_used: int, day_used: int, now: datetime) -> None:
        """Seed in-memory counters after a restart with what the usage read model recorded."""
        minute_key, day_key = self._counters(key_id, now)
        if minute_used > 0:
            self.storage.incr(minute_key, MINUTE_EXPIRY, amount=minute_used)
        if day_used > 0:
            self.storage.incr(day_key, DAY_EXPIRY, amount=day_used)

    @staticmethod
    def window_of(now: datetime) -> tuple[datetime, date]:
        """The UTC minute and day a moment falls in."""
        minute = floor_minute(now)
        return minute, minute.date()
