"""The composition root of an API process: builds every part from settings, in one place."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import redis

from adapters.auditchain.auditlog import AuditLog
from adapters.change_feed import ChangeFeed, MemoryChangeFeed, RedisChangeFeed
from adapters.credential_cache import CredentialCache
from adapters.quotas import QuotaGate
from adapters.usage_recorder import UsageRecorder
from adapters.webhooks.dispatcher import Webhooks
from api.guesses import GuessLimit
from api.metrics import Metrics
from api.verification import VerificationService
from domain.application import AfterSave, KeyLedger, Saved
from domain.keys import ApiKey
from keyledger.alerts import AlertScheduler
from keyledger.audit import open_audit_log
from keyledger.bootstrap import open_ledger
from keyledger.operator_token import ensure_operator_token
from keyledger.settings import Settings, StartupError
from projections import ReadModels
from projections.audit import AuditEntry

log = logging.getLogger(__name__)


@dataclass
class VerificationStack:
    """What answers presented keys in a process: the API, or a service mounting the guard."""

    ledger: KeyLedger
    feed: ChangeFeed
    cache: CredentialCache
    quotas: QuotaGate
    usage: UsageRecorder
    metrics: Metrics
    verification: VerificationService

    def start(self) -> None:
        self.cache.start_following()
        self.usage.start()

    def stop(self) -> None:
        self.usage.stop()
        self.cache.stop_following()


def open_change_feed(settings: Settings) -> ChangeFeed:
    if not settings.redis_url:
        return MemoryChangeFeed()
    feed = RedisChangeFeed(settings.redis_url, closed=settings.redis_outage == "closed")
    try:
        feed.ping()
    except redis.RedisError as error:
        raise StartupError(f"KEYLEDGER_REDIS_URL: cannot reach Redis: {error}") from None
    return feed


def publish_changes(feed: ChangeFeed, cache: CredentialCache | None = None) -> AfterSave:
    """The after-save effect telling every process (and this one's cache) which credentials changed."""

    def publish(saved: Saved) -> None:
        if saved.changed:
            feed.publish(saved.changed, saved.position)
            if cache is not None:
                keys = {e.originator_id for e in saved.events if isinstance(e, ApiKey.Event)} & saved.changed
                cache.refresh(saved.changed, keys, saved.aggregates)

    return publish


def open_command_ledger(settings: Settings, tree_progress: Callable[[int, int], None] | None = None) -> KeyLedger:
    """The application for a process that makes commands without serving (the CLI).

    With Redis configured its changes reach every API process before it returns, as an
    API command's do; without, API processes see them through their stream follower.
    """
    ledger = open_ledger(settings, tree_progress=tree_progress)
    if settings.redis_url:
        ledger.after_save(publish_changes(open_change_feed(settings)))
    return ledger


def build_verification(settings: Settings, ledger: KeyLedger) -> VerificationStack:
    feed = open_change_feed(settings)
    cache = CredentialCache(ledger, feed)
    ledger.after_save(publish_changes(feed, cache))
    quotas = QuotaGate(settings.redis_url, outage_closed=settings.redis_outage == "closed")
    usage = UsageRecorder(ledger, actor=f"api:{socket.gethostname()}:{os.getpid()}")
    metrics = Metrics()
    guesses = GuessLimit(settings.not_found_per_minute)
    verification = VerificationService(
        cache, quotas, usage, metrics, ledger.clock, settings.insufficient_scope_status, guesses
    )
    return VerificationStack(ledger, feed, cache, quotas, usage, metrics, verification)


def open_webhooks(settings: Settings, ledger: KeyLedger, read_models: ReadModels) -> Webhooks:
    """Webhook checks, secrets and delivery state; delivering starts with `start()` (API processes only)."""

    def read_entries(ws: UUID, types: Sequence[str] | None, after: int, limit: int) -> list[AuditEntry]:
        return read_models.audit(ws, types=types, after=after, limit=limit)[0]

    return Webhooks(
        read_models.engine,
        ledger,
        read_entries,
        lambda: read_models.applied("audit"),
        master_key=settings.webhook_key.get_secret_value() if settings.webhook_key else None,
        key_file=Path(settings.webhook_key_file),
        allow_private=settings.webhook_allow_private,
    )


@dataclass
class Services:
    """Everything one API process runs, built from settings in one place."""

    settings: Settings
    ledger: KeyLedger
    read_models: ReadModels
    stack: VerificationStack
    webhooks: Webhooks
    alerts: AlertScheduler
    operator_digest: str
    generated_operator_token: str | None
    audit: AuditLog
    settle_timeout: float = 10.0
    ready: bool = False  # set once start-up is done: /readyz answers 503 before

    @property
    def verification(self) -> VerificationService:
        return self.stack.verification

    @property
    def quotas(self) -> QuotaGate:
        return self.stack.quotas

    @property
    def metrics(self) -> Metrics:
        return self.stack.metrics

    @property
    def insufficient_scope_status(self) -> int:
        return self.settings.insufficient_scope_status

    def settle(self, saved: Saved) -> None:
        """After every save (the application calls it): make a command's effects visible before it answers.

        Every process learns of the ids whose credentials changed (so a revoked key is
        refused at once), and the read models here catch up to the command's position.
        """
        self.read_models.nudge()
        if saved.lifecycle and not self.read_models.wait(saved.position, timeout=self.settle_timeout):
            log.warning("read models did not reach position %s within %ss", saved.position, self.settle_timeout)

    def start(self) -> None:
        """Open everything and catch up; a read model that fails is reported, never a reason not to start."""
        self.read_models.start()
        try:
            self.read_models.catch_up()
            self.stack.cache.know(self.read_models.key_ids())  # not guesses, whatever the cache holds
            self.stack.cache.know_digests(self.read_models.imported_digests())
            if not self.quotas.shared:
                self._restore_quotas()
        except Exception as error:
            log.error("read models did not catch up at start (serving; they keep retrying): %s", error)
        self.stack.start()
        self.audit.start()
        self.webhooks.start()
        self.alerts.start()
        self.ready = True

    def readiness(self) -> dict[str, Any]:
        """`/readyz`'s answer once started: each dependency's state; `degraded` while one is down."""
        checks: dict[str, dict[str, Any]] = {}
        try:
            rows = self.read_models.status()
            checks["database"] = {"status": "ok"}
            failing = [r for r in rows if r.state == "failing"]
            lag = max((r.lag for r in rows), default=0)
            state = "failing" if failing else "catching_up" if lag else "ok"
            checks["read_models"] = {"status": state, "lag": lag}
            if failing:
                checks["read_models"]["failing"] = {r.name: r.error for r in failing}
        except Exception as error:
            checks["database"] = {"status": "unreachable", "error": type(error).__name__}
            checks["read_models"] = {"status": "unknown", "lag": None}
        if isinstance(self.stack.feed, RedisChangeFeed):
            try:
                self.stack.feed.ping()
                checks["redis"] = {"status": "ok"}
            except redis.RedisError as error:
                checks["redis"] = {"status": "unreachable", "error": type(error).__name__}
        else:
            checks["redis"] = {"status": "not_configured"}
        healthy = ("ok", "not_configured", "catching_up")
        status = "ok" if all(c["status"] in healthy for c in checks.values()) else "degraded"
        return {"status": status, "checks": checks}

    def _restore_quotas(self) -> None:
        now = self.ledger.clock()
        minute, day = self.quotas.window_of(now)
        for key_id, (minute_used, day_used) in self.read_models.consumed_quota(minute, day).items():
            self.quotas.restore(key_id, minute_used, day_used, now)
        credits = self.verification.credits
        for key_id, generation, period, spent in self.read_models.credit_spends(credits.periods(now)):
            credits.restore(key_id, generation, period, spent)

    def stop(self) -> None:
        self.alerts.stop()
        self.webhooks.stop()
        self.stack.stop()
        self.audit.stop()  # after the last usage flush: a final checkpoint covers it
        self.read_models.close()
        self.ledger.close()


def build_services(settings: Settings) -> Services:
    ledger = open_ledger(settings)
    read_models = ReadModels(settings, ledger)
    stack = build_verification(settings, ledger)
    audit = open_audit_log(settings, ledger)
    webhooks = open_webhooks(settings, ledger, read_models)
    alerts = AlertScheduler(ledger, read_models, settings.alert_interval_seconds)
    services = Services(settings, ledger, read_models, stack, webhooks, alerts, "", None, audit)
    ledger.after_save(services.settle)
    stack.metrics.watch_read_models(read_models.status, lambda: read_models.failure_counts)
    feed = stack.feed
    stack.metrics.watch_redis_outages(
        lambda: stack.quotas.degraded + (feed.degraded if isinstance(feed, RedisChangeFeed) else 0)
    )
    configured = settings.operator_token.get_secret_value() if settings.operator_token else None
    services.operator_digest, services.generated_operator_token = ensure_operator_token(read_models.engine, configured)
    return services
