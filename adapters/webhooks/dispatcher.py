"""Delivering the workspaces' audit entries to their webhooks (SPEC 8.3), from every API process.

A background thread (one per process) follows the store for subscriptions, takes the lease of each
webhook nobody holds, and for those it holds turns new audit entries into deliveries and sends the
oldest pending one, then the next: position order per webhook, at least once. A 2xx answer ends a
delivery; anything else is retried after 5 s, 10 s, 20 s, ... (doubling, at most 6 h apart) until
it has been retried for 24 hours (`MAX_ATTEMPTS`), then marked `failed` and the next one goes. Wakes within a quarter
second of the audit read model moving (an in-memory number), otherwise once a second for retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.utils import get_topic
from sqlalchemy import Engine
from standardwebhooks import Webhook as Signer

from adapters.database import read_transaction, write_transaction
from adapters.webhooks import state
from adapters.webhooks.signing import load_master_key, webhook_secret
from adapters.webhooks.targets import Outcome, Resolver, check_target, send, system_resolver
from domain.application import KeyLedger
from domain.errors import DeliveryNotFound
from domain.timefmt import to_rfc3339
from domain.workspace import Workspace

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
IDLE_PASS_SECONDS = 1.0  # due retries are looked for at least this often
LEASE_SECONDS = 15.0  # longer than one delivery can take (10 s), renewed before each
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 6 * 3600.0
RETRY_FOR_SECONDS = 24 * 3600.0
PAGE = 200
BURST = 100  # deliveries in a row for one webhook before the worker looks at the others again
WORKERS = 4


class Entry(Protocol):
    """An audit entry as the read model gives it."""

    @property
    def position(self) -> int: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def type(self) -> str: ...
    @property
    def key_id(self) -> UUID | None: ...
    @property
    def actor(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


ReadEntries = Callable[[UUID, Sequence[str] | None, int, int], Sequence[Entry]]  # ws, types, after, limit


def retry_delay(attempts: int) -> float:
    """The pause after the `attempts`-th failed attempt: 5 s, 10 s, 20 s, ... at most 6 h."""
    return float(min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS))


def _attempts_for(seconds: float) -> int:
    attempts = 1
    while sum(retry_delay(i) for i in range(1, attempts)) < seconds:
        attempts += 1
    return attempts


MAX_ATTEMPTS = _attempts_for(RETRY_FOR_SECONDS)  # 17: the last one about 29 h after the first


def message_id(webhook_id: UUID, position: int) -> str:
    """`webhook-id`: the same for every attempt of one delivery, so receivers can drop duplicates."""
    return f"msg_{webhook_id.hex}_{position}"


def payload(entry: Entry) -> str:
    data = {
        "position": entry.position,
        "occurred_at": to_rfc3339(entry.occurred_at),
        "type": entry.type,
        "key_id": str(entry.key_id) if entry.key_id else None,
        "actor": entry.actor,
        "data": entry.data,
    }
    body = {"type": entry.type, "timestamp": to_rfc3339(entry.occurred_at), "data": data}
    return json.dumps(body, separators=(",", ":"))


class Webhooks:
    """The webhooks of one process: target checks, secrets, delivery state, and the delivering thread."""

    def __init__(
        self,
        engine: Engine,
        ledger: KeyLedger,
        read_entries: ReadEntries,
        audit_position: Callable[[], int],
        *,
        master_key: str | None,
        key_file: Path,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.read_entries = read_entries
        self.audit_position = audit_position
        self.allow_private = allow_private
        self.resolver = resolver
        self.clock = clock
        self._configured_key = master_key
        self._key_file = key_file
        self._master_key: bytes | None = None  # loaded at first use: a process with no webhooks makes no file
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._topics = [get_topic(c) for c in (Workspace.WebhookCreated, Workspace.WebhookDeleted)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._busy: set[UUID] = set()
        self._busy_lock = threading.Lock()
        self._caught_up: dict[UUID, int] = {}  # webhook -> the audit position all of whose entries it has queued
        state.create_tables(engine)

    # --- what the API and the CLI ask -----------------------------------------

    def check_target(self, url: str) -> None:
        check_target(url, self.allow_private, self.resolver)

    def secret(self, webhook_id: UUID) -> str:
        if self._master_key is None:
            self._master_key = load_master_key(self._configured_key, self._key_file)
        return webhook_secret(self._master_key, webhook_id)

    def deliveries(self, webhook_id: UUID, limit: int = 100) -> list[state.Delivery]:
        with read_transaction(self.engine) as conn:
            return state.list_deliveries(conn, webhook_id, limit)

    def retry(self, webhook_id: UUID, position: int) -> state.Delivery:
        with write_transaction(self.engine) as conn:
            delivery = state.reschedule(conn, webhook_id, position, self.clock())
        if delivery is None:
            raise DeliveryNotFound(f"no delivery of position {position} for webhook {webhook_id}")
        return delivery

    # --- the delivering thread --------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        try:  # a process stopping cleanly hands its webhooks over at once, not after the lease runs out
            with write_transaction(self.engine) as conn:
                state.release_leases(conn, self.holder)
        except Exception as error:
            log.warning("webhook leases not released: %s", type(error).__name__)

    def _run(self) -> None:
        seen, last_pass = -1, 0.0
        while not self._stop.is_set():
            position = self.audit_position()
            if position != seen or time.monotonic() - last_pass >= IDLE_PASS_SECONDS:
                seen, last_pass = position, time.monotonic()
                try:
                    self.run_once()
                except Exception as error:  # the database away, say: try again next pass
                    log.warning("webhook pass failed: %s: %s", type(error).__name__, error)
            self._stop.wait(TICK_SECONDS)

    def run_once(self, wait: bool = False) -> None:
        """One pass: follow the registry, then hand each webhook with news or a due delivery to a worker,
        if this process holds its lease or can take it. An idle webhook costs no query of its own."""
        self.follow_registry()
        audit, now = self.audit_position(), self.clock()
        with read_transaction(self.engine) as conn:
            live = state.live_subscriptions(conn)
            holders = state.lease_holders(conn)
            due = state.due_webhooks(conn, now)
        for subscription in live:
            webhook_id = subscription.webhook_id
            with self._busy_lock:
                if webhook_id in self._busy:
                    continue
            holder, expires_at = holders.get(webhook_id, (self.holder, 0.0))
            if holder != self.holder and expires_at >= now:
                continue  # another process delivers for it
            if self._caught_up.get(webhook_id) == audit and webhook_id not in due:
                continue  # nothing new since we last looked, nothing to retry yet
            if not self._lease(webhook_id):
                continue
            if wait or self._pool is None:
                self.work(webhook_id, audit)
            else:
                with self._busy_lock:
                    self._busy.add(webhook_id)
                self._pool.submit(self._work_then_free, webhook_id, audit)

    def follow_registry(self) -> None:
        with read_transaction(self.engine) as conn:
            seen = state.followed(conn)
        while True:
            notifications = self.ledger.recorder.select_notifications(
                start=seen, limit=PAGE, topics=self._topics, inclusive_of_start=False
            )
            if not notifications:
                return
            created: list[state.Subscription] = []
            deleted: list[UUID] = []
            for notification in notifications:
                event = self.ledger.mapper.to_domain_event(notification)
                if isinstance(event, Workspace.WebhookCreated):
                    created.append(
                        state.Subscription(
                            event.webhook_id, event.originator_id, event.url, event.types, notification.id
                        )
                    )
                elif isinstance(event, Workspace.WebhookDeleted):
                    deleted.append(event.webhook_id)
            last = notifications[-1].id
            with write_transaction(self.engine) as conn:
                if not state.record_registry(conn, seen, last, created, deleted):
                    return  # another process is following it
            seen = last

    def _lease(self, webhook_id: UUID) -> bool:
        with write_transaction(self.engine) as conn:
            return state.take_lease(conn, webhook_id, self.holder, self.clock(), LEASE_SECONDS)

    def _work_then_free(self, webhook_id: UUID, audit: int) -> None:
        try:
            self.work(webhook_id, audit)
        except Exception as error:
            log.warning("webhook %s: %s: %s", webhook_id, type(error).__name__, error)
        finally:
            with self._busy_lock:
                self._busy.discard(webhook_id)

    def work(self, webhook_id: UUID, audit: int) -> None:
        """Enqueue the webhook's new entries (up to audit position `audit`, read before), then send what is due,
        oldest first, while we hold its lease."""
        if self._enqueue(webhook_id):
            self._caught_up[webhook_id] = audit
        for _ in range(BURST):
            if self._stop.is_set():
                return
            with read_transaction(self.engine) as conn:
                subscription = state.subscription(conn, webhook_id)
                delivery = state.head(conn, webhook_id)
            if subscription is None or delivery is None:
                return
            if (delivery.next_attempt_at or 0.0) > self.clock():
                return
            if not self._lease(webhook_id):  # renewed before each send; lost: someone else delivers now
                return
            if not self._attempt(subscription, delivery):
                return

    def _enqueue(self, webhook_id: UUID) -> bool:
        """Turn the webhook's next entries into deliveries; True if none are left to turn."""
        with read_transaction(self.engine) as conn:
            subscription = state.subscription(conn, webhook_id)
        if subscription is None:
            return True
        entries = self.read_entries(subscription.workspace_id, subscription.types, subscription.enqueued, PAGE)
        if not entries:
            return True
        now = self.clock()
        rows = [
            state.Delivery(
                webhook_id=webhook_id,
                position=e.position,
                type=e.type,
                body=payload(e),
                status=state.PENDING,
                attempts=0,
                last_status_code=None,
                error=None,
                created_at=now,
                last_attempt_at=None,
                next_attempt_at=now,
            )
            for e in entries
        ]
        with write_transaction(self.engine) as conn:
            done = state.enqueue(conn, webhook_id, subscription.enqueued, rows)
        return done and len(entries) < PAGE

    def _attempt(self, subscription: state.Subscription, delivery: state.Delivery) -> bool:
        """Send one delivery and record the outcome; True if it was delivered."""
        now = datetime.now(UTC)
        msg_id = message_id(delivery.webhook_id, delivery.position)
        signature = Signer(self.secret(delivery.webhook_id)).sign(msg_id, now, delivery.body)
        headers = {
            "content-type": "application/json",
            "user-agent": "keyledger-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        outcome: Outcome = send(subscription.url, delivery.body.encode(), headers, self.allow_private, self.resolver)
        at = self.clock()
        if outcome.delivered:
            status, next_at = state.DELIVERED, None
        elif delivery.attempts + 1 >= MAX_ATTEMPTS:
            status, next_at = state.FAILED, None
        else:
            status, next_at = state.PENDING, at + retry_delay(delivery.attempts + 1)
        with write_transaction(self.engine) as conn:
            state.record_attempt(conn, delivery, status, outcome.status_code, outcome.error, at, next_at)
        return outcome.delivered
