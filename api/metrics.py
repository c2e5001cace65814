"""Prometheus metrics of one API process (a registry per app, so tests can build many)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _LagCollector(Collector):
    def __init__(self, lags: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._lags = lags

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "keyledger_projection_lag_events",
            "Events the read model is behind the stream",
            labels=["projection"],
        )
        for name, lag in self._lags():
            gauge.add_metric([name], lag)
        yield gauge


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

    def watch_projection_lag(self, lags: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.registry.register(_LagCollector(lags))
