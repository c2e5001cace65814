"""Prometheus metrics of one API process (a registry per app, so tests can build many)."""

from __future__ import annotations

import itertools
import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class _ReadModelCollector(Collector):
    def __init__(self, status: Callable[[], Iterable[Any]], failures: Callable[[], dict[str, int]]) -> None:
        self._status = status
        self._failures = failures

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "keyledger_projection_lag_events", "Events the read model is behind the stream", labels=["projection"]
        )
        failing = GaugeMetricFamily(
            "keyledger_projection_failing",
            "1 while the read model cannot apply the next event of the stream",
            labels=["projection"],
        )
        for row in self._status():
            lag.add_metric([row.name], row.lag)
            failing.add_metric([row.name], 1 if row.state == "failing" else 0)
        failures = CounterMetricFamily(
            "keyledger_projection_failures",
            "Attempts of this process to apply events that failed, per read model",
            labels=["projection"],
        )
        for name, count in self._failures().items():
            failures.add_metric([name], count)
        yield from (lag, failing, failures)


_NONE: dict[str, Callable[[], int]] = {}


class _RedisOutageCollector(Collector):
    def __init__(self, degraded: Callable[[], int]) -> None:
        self._degraded = degraded

    def collect(self) -> Iterable[Metric]:
        counter = CounterMetricFamily(
            "keyledger_redis_unreachable_calls",
            "Counter and change-feed calls answered without Redis (per-process counters, stream follower)",
        )
        counter.add_metric([], self._degraded())
        yield counter


LATENCY_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25)


def _value(counter: itertools.count[int]) -> int:
    """An `itertools.count`'s next value, without taking it (its repr is `count(N)`)."""
    return int(repr(counter)[6:-1])


class _Decisions(Collector):
    """Answers per (via, code) and the decision time histogram, counted without a lock: each count is an
    `itertools.count` advanced by `next()` (one C call, atomic under the GIL) and read at collection.
    The histogram's sum is a float added to without a lock: two threads adding at once may lose one
    addition to it (never to a count)."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Callable[[], int]]] = {}
        self._counts: dict[tuple[str, str], itertools.count[int]] = {}
        self.buckets = [itertools.count() for _ in range(len(LATENCY_BUCKETS) + 1)]
        self.steps = [bucket.__next__ for bucket in self.buckets]
        self.total = 0.0
        self._lock = threading.Lock()

    def counter(self, via: str, code: str) -> Callable[[], int]:
        with self._lock:
            counts = self.answers.setdefault(via, {})
            if code not in counts:
                count = self._counts[via, code] = itertools.count()
                counts[code] = count.__next__
            return counts[code]

    def collect(self) -> Iterable[Metric]:
        answers = CounterMetricFamily(
            "keyledger_answers",
            "Answers to presented keys, by the way they were asked (verify, auth, guard) and outcome",
            labels=["via", "code"],
        )
        for (via, code), count in list(self._counts.items()):
            answers.add_metric([via, code], _value(count))
        yield answers
        cumulative, buckets = 0, []
        for bound, count in zip([*LATENCY_BUCKETS, math.inf], self.buckets, strict=True):
            cumulative += _value(count)
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "keyledger_verify_seconds",
            "Time to decide on a presented key (cache, rules and quota)",
            buckets=buckets,
            sum_value=self.total,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._decisions = _Decisions()
        self.registry.register(self._decisions)

    def answer(self, via: str, code: str) -> None:
        """One answer, its time not measured (the guards' refusals recorded apart)."""
        self._decisions.counter(via, code)()

    def decided(self, via: str, code: str, seconds: float) -> None:
        """One decision and the time it took: a few C calls, no lock, no prometheus object."""
        decisions = self._decisions
        count = decisions.answers.get(via, _NONE).get(code)
        if count is None:
            count = decisions.counter(via, code)
        count()
        decisions.steps[bisect_left(LATENCY_BUCKETS, seconds)]()
        decisions.total += seconds

    def watch_redis_outages(self, degraded: Callable[[], int]) -> None:
        self.registry.register(_RedisOutageCollector(degraded))

    def watch_read_models(self, status: Callable[[], Iterable[Any]], failures: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_ReadModelCollector(status, failures))
