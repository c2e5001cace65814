"""The alert scheduler of an API process (SPEC 8.3): notices the alert conditions and raises the alerts.

Each pass (every `KEYLEDGER_ALERT_INTERVAL_SECONDS`, at most 60) looks at the read models: keys expiring within
7 days and keys whose rotation is due (time-based), keys that used 80 % or 100 % of their day limit today, and
keys refused at least 20 times within one UTC minute (from the recorded usage, so answers of every process
count). Every process runs one; the store keeps each alert to one event (`domain.alerts`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from domain.alerts import DENIED_BURST, EXPIRING_WITHIN, Alert, quota_thresholds_reached
from domain.application import KeyLedger
from domain.plans import Limits
from projections import ReadModels

log = logging.getLogger(__name__)

BURST_LOOKBACK = timedelta(minutes=2)  # a minute's refusals may be recorded up to a flush after it ends


class AlertScheduler:
    def __init__(
        self,
        ledger: KeyLedger,
        read_models: ReadModels,
        interval: float = 60.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.read_models = read_models
        self.interval = interval
        self.clock = clock or ledger.clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: set[UUID] = set()  # alerts known to be raised (grows by a few ids per key and day)

    def check(self, now: datetime | None = None) -> list[Alert]:
        """One pass: every alert due at `now` that no process has raised yet; returns those this call raised."""
        now = now or self.clock()
        candidates: list[Alert] = []
        for key in self.read_models.unrevoked_keys(now):
            if key.status not in ("active", "suspended"):
                continue
            if key.expires_at is not None and now < key.expires_at <= now + EXPIRING_WITHIN:
                candidates.append(Alert.key_expiring(key.id, key.workspace_id, key.expires_at))
            if key.rotation_due:
                candidates.append(Alert.rotation_due(key.id, key.workspace_id, key.rotated_at or key.created_at))
        plans: dict[UUID, Limits] = {}
        for used in self.read_models.day_consumed(now.date()):
            if used.workspace_id not in plans:
                plans[used.workspace_id] = self.ledger.get_workspace(used.workspace_id).limits
            # The key's own day limit where it has one below the plan's (SPEC 8.1: per-key limits).
            limit = self.ledger.get_key(used.key_id).limits(plans[used.workspace_id]).requests_per_day
            for threshold in quota_thresholds_reached(used.number, limit):
                day = used.start.date()
                candidates.append(
                    Alert.quota_threshold(used.key_id, used.workspace_id, day, threshold, limit, used.number)
                )
        for burst in self.read_models.refused_minutes(now - BURST_LOOKBACK, DENIED_BURST):
            candidates.append(Alert.denied_burst(burst.key_id, burst.workspace_id, burst.start, burst.number))
        raised = []
        for alert in candidates:
            if alert.id in self._known:
                continue
            if self.ledger.raise_alert(alert) is not None:
                raised.append(alert)
            self._known.add(alert.id)  # raised now or before: no need to ask the store again
        return raised

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception as error:  # a read model not built yet, the store away: next pass
                log.warning("alert check failed: %s: %s", type(error).__name__, error)
            if self._stop.wait(self.interval):
                return
