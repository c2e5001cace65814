"""Builds the application service from settings: one place that knows both."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from uuid import UUID

import psycopg
from projections.usage_buffer import UsageRecorder
from psycopg import sql

from api.change_feed import ChangeFeed, MemoryChangeFeed, RedisChangeFeed
from api.credential_cache import CredentialCache
from api.metrics import Metrics
from api.quotas import QuotaGate
from api.verification import VerificationService
from domain.application import KeyLedger
from keyledger.database import create_db_engine
from keyledger.operator_token import ensure_operator_token
from keyledger.settings import Settings
from projections import ReadModels

log = logging.getLogger(__name__)


def event_store_env(settings: Settings) -> dict[str, str]:
    """The `eventsourcing` library's environment for the configured database."""
    url = settings.url
    if not settings.is_postgres:
        path = url.database or ""
        if path in ("", ":memory:"):
            # Threads share one in-memory database only through a named, shared cache.
            path = f"file:keyledger-{os.getpid()}-{id(settings)}?mode=memory&cache=shared"
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.database or "postgres",
        # TCP, not the unix socket: large saves can hang over the socket (EVENTSOURCING-NOTES).
        "POSTGRES_HOST": url.host or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_POOL_SIZE": "5",
        "POSTGRES_MAX_OVERFLOW": "10",
        "POSTGRES_CONNECT_TIMEOUT": "5",
    }
    if settings.database_schema:
        env["POSTGRES_SCHEMA"] = settings.database_schema
    return env


def ensure_schema(settings: Settings) -> None:
    """Create the configured PostgreSQL schema if it is missing."""
    if not (settings.is_postgres and settings.database_schema):
        return
    url = settings.url
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or None,
        dbname=url.database or "postgres",
        connect_timeout=5,
        autocommit=True,
    ) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.database_schema))
        )


def open_ledger(settings: Settings) -> KeyLedger:
    ensure_schema(settings)
    return KeyLedger(env=event_store_env(settings), catalog=settings.catalog)


# --- the API process ------------------------------------------------------


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
    return RedisChangeFeed(settings.redis_url) if settings.redis_url else MemoryChangeFeed()


def build_verification(settings: Settings, ledger: KeyLedger) -> VerificationStack:
    feed = open_change_feed(settings)
    cache = CredentialCache(ledger, feed)
    quotas = QuotaGate(settings.redis_url)
    usage = UsageRecorder(ledger, actor=f"api:{socket.gethostname()}:{os.getpid()}")
    metrics = Metrics()
    verification = VerificationService(
        cache, quotas, usage, metrics, ledger.clock, settings.insufficient_scope_status
    )
    return VerificationStack(ledger, feed, cache, quotas, usage, metrics, verification)


@dataclass
class Services:
    """Everything one API process runs, built from settings in one place."""

    settings: Settings
    ledger: KeyLedger
    read_models: ReadModels
    stack: VerificationStack
    operator_digest: str
    generated_operator_token: str | None
    settle_timeout: float = 10.0

    @property
    def verification(self) -> VerificationService:
        return self.stack.verification

    @property
    def quotas(self) -> QuotaGate:
        return self.stack.quotas

    @property
    def metrics(self) -> Metrics:
        return self.stack.metrics

    def settle(self, position: int | None, *changed: UUID) -> None:
        """Make a command's effects visible before it is answered.

        Every process learns of the changed ids (so a revoked key is refused at
        once), and the read models here catch up to the command's position.
        """
        if position is None:
            return
        if changed:
            self.stack.feed.publish(changed, position)
            self.stack.cache.invalidate(*changed)
        self.read_models.nudge()
        if not self.read_models.wait(position, timeout=self.settle_timeout):
            log.warning("read models did not reach position %s within %ss", position, self.settle_timeout)

    def start(self) -> None:
        self.read_models.start()
        self.read_models.catch_up()
        if not self.quotas.shared:
            self._restore_quotas()
        self.stack.start()

    def _restore_quotas(self) -> None:
        now = self.ledger.clock()
        minute, day = self.quotas.window_of(now)
        for key_id, (minute_used, day_used) in self.read_models.consumed_quota(minute, day).items():
            self.quotas.restore(key_id, minute_used, day_used, now)

    def stop(self) -> None:
        self.stack.stop()
        self.read_models.stop()
        self.ledger.close()


def build_services(settings: Settings) -> Services:
    ledger = open_ledger(settings)
    read_models = ReadModels(settings, ledger)
    stack = build_verification(settings, ledger)
    stack.metrics.watch_projection_lag(lambda: [(s.name, s.lag) for s in read_models.status()])
    configured = settings.operator_token.get_secret_value() if settings.operator_token else None
    digest, generated = ensure_operator_token(create_db_engine(settings), configured)
    return Services(settings, ledger, read_models, stack, digest, generated)
