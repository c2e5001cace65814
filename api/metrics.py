"""Prometheus metrics of one API process (a registry per app, so tests can build many)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "keyledger_answers",
            "Answers to presented keys, by the way they were asked (verify, auth, guard) and outcome",
            ["via", "code"],
            registry=self.registry,
        )
        self._answer_counters: dict[tuple[str, str], Any] = {}
        self.verify_latency = Histogram(
            "keyledger_verify_seconds",
            "Time to decide on a presented key (cache, rules and quota)",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25),
            registry=self.registry,
        )

    def answer(self, via: str, code: str) -> None:
        counter = self._answer_counters.get((via, code))
        if counter is None:  # labels() is slow enough to matter on the verification path
            counter = self._answer_counters[(via, code)] = self.answers.labels(via=via, code=code)
        counter.inc()

    def watch_redis_outages(self, degraded: Callable[[], int]) -> None:
        self.registry.register(_RedisOutageCollector(degraded))

    def watch_read_models(self, status: Callable[[], Iterable[Any]], failures: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_ReadModelCollector(status, failures))
