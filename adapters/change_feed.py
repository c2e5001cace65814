"""Tells every API process that a key or workspace changed, so cached credentials are reloaded.

A command publishes the ids it changed (after saving, before answering). A
process compares the marker it saw when it cached an id with the marker now
published; any difference means reload. In one process the feed is a dict;
across processes it is Redis, read with one MGET per verification.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol, cast
from uuid import UUID

import redis

from adapters.quotas import RedisUnavailable

log = logging.getLogger(__name__)


class ChangeFeed(Protocol):
    def publish(self, ids: Iterable[UUID], position: int) -> None: ...

    def markers(self, ids: Sequence[UUID]) -> list[int]:
        """The last position published for each id (0 when none); FeedUnavailable when unknowable."""
        ...


class MemoryChangeFeed:
    def __init__(self) -> None:
        self._markers: dict[UUID, int] = {}
        self._lock = threading.Lock()

    def publish(self, ids: Iterable[UUID], position: int) -> None:
        with self._lock:
            for item in ids:
                self._markers[item] = max(position, self._markers.get(item, 0))

    def markers(self, ids: Sequence[UUID]) -> list[int]:
        return [self._markers.get(item, 0) for item in ids]


class FeedUnavailable(Exception):
    """Redis could not be asked for markers: the caller falls back (the stream follower bounds staleness)."""


class RedisChangeFeed:
    """Markers in Redis. While Redis is unreachable, `markers` raises FeedUnavailable and `publish`
    gives up (the command is saved; every process's stream follower still drops the change within
    a second), unless `closed` (KEYLEDGER_REDIS_OUTAGE=closed): then both raise RedisUnavailable."""

    # Markers outlive any cache entry: a week, refreshed by every change.
    TTL_SECONDS = 7 * 86_400

    def __init__(self, url: str, namespace: str = "kl", closed: bool = False) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._namespace = namespace
        self.closed = closed
        self.degraded = 0  # calls that found Redis unreachable (a metric)

    def _unreachable(self, error: redis.RedisError) -> None:
        if self.closed:
            raise RedisUnavailable(f"Redis is unreachable ({type(error).__name__})") from error
        self.degraded += 1

    def _name(self, item: UUID) -> str:
        return f"{self._namespace}:chg:{item}"

    def name_of(self, item: UUID) -> str:
        """The Redis key of an id's marker (`QuotaGate.check_unchanged` reads it in the quota's round trip)."""
        return self._name(item)

    def publish(self, ids: Iterable[UUID], position: int) -> None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for item in ids:
                    pipe.set(self._name(item), position, ex=self.TTL_SECONDS)
                pipe.execute()
        except redis.RedisError as error:
            self._unreachable(error)
            log.warning("could not publish changes to Redis (%s); other processes follow the stream", error)

    def ping(self) -> None:
        self._redis.ping()

    def markers(self, ids: Sequence[UUID]) -> list[int]:
        if not ids:
            return []
        try:
            values = cast(list[bytes | None], self._redis.mget([self._name(item) for item in ids]))
        except redis.RedisError as error:
            self._unreachable(error)
            raise FeedUnavailable(str(error)) from error
        return [int(v) if v is not None else 0 for v in values]
