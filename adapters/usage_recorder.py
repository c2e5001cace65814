"""UsageRecorder: counts an API process's answers in memory and records them as batched usage events.

`record()` is on the request path: it only adds one to a counter under a lock
(no I/O). A flusher thread turns the counters into `UsageRecorded` events about
every `flush_interval` seconds, or sooner once `flush_every` answers are
waiting. Counts are kept per (key, UTC minute, endpoint, status, needed scope,
client address), so a busy key adds one entry per minute and combination, not
one per request.

What a crash can lose: the counts not flushed yet (at most about one flush
interval of answers). Lifecycle events never pass through here: they are saved
by their command before it answers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from domain.addresses import canonical_address
from domain.application import KeyLedger
from domain.text import MAX_ENDPOINT_LENGTH, storable_text
from domain.timefmt import floor_minute
from domain.usage import MAX_ENTRIES_PER_BATCH, CreditSpend, UsageCount

log = logging.getLogger(__name__)

# key, workspace, minute, endpoint, status, needed scope, refused for that scope, client address
_Slot = tuple[UUID, UUID, datetime, str, int, str | None, bool, str | None]


class KeyIds:
    """A key's and its workspace's ids as the hot path counts them (`UsageRecorder.count`): hashed by identity, so
    counting hashes no UUID (one object per key's hot entry; two for the same key are merged at the flush)."""

    __slots__ = ("key_id", "workspace_id")

    def __init__(self, key_id: UUID, workspace_id: UUID) -> None:
        self.key_id, self.workspace_id = key_id, workspace_id


# The hot path's slot: key ids, UTC minute number, endpoint as given, status, needed scope, client as given.
_HotSlot = tuple[KeyIds, int, str, int, str | None, str | None]


class UsageRecorder:
    def __init__(
        self,
        ledger: KeyLedger,
        actor: str | None = None,
        flush_interval: float = 1.0,
        flush_every: int = 5000,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        """`on_flush(position)` runs after each flush that recorded events (e.g. ReadModels.nudge)."""
        self.ledger = ledger
        self.actor = actor or f"usage:{socket.gethostname()}:{os.getpid()}"
        self.flush_interval = flush_interval
        self.flush_every = flush_every
        self.on_flush = on_flush
        self._counts: Counter[_Slot] = Counter()
        # The hot path's answers, counted as given; turned into `_counts` at the flush (`_add_answered`).
        self._answered: dict[_HotSlot, int] = {}
        self._spends: Counter[tuple[UUID, UUID, int, str]] = Counter()  # key, workspace, credits generation, period
        self._refills: set[tuple[UUID, int, str]] = set()
        self._answers = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time keeps events in order per process
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def record(
        self,
        key_id: UUID,
        workspace_id: UUID,
        endpoint: str,
        status: int,
        at: datetime | None = None,
        *,
        needed_scope: str | None = None,
        client: str | None = None,
        scope_refused: bool = False,
    ) -> None:
        """Count one answer to a key. Cheap and thread-safe; never touches the store.

        `needed_scope`: the scope the answer needed (SPEC 8.2), `scope_refused` when the key lacked it;
        `client`: the client's address (kept only when it is an IP address, canonical text).
        """
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        minute = floor_minute(moment)
        slot = (
            key_id,
            workspace_id,
            minute,
            storable_text(endpoint[:MAX_ENDPOINT_LENGTH]),
            status,
            needed_scope,
            scope_refused and needed_scope is not None,
            canonical_address(client) if client else None,
        )
        with self._lock:
            self._counts[slot] += 1
            self._answers += 1
            full = self._answers >= self.flush_every
        if full:
            self._wake.set()

    def count(
        self,
        ids: KeyIds,
        minute: int,
        endpoint: str,
        status: int,
        needed_scope: str | None = None,
        client: str | None = None,
    ) -> None:
        """`record` for the hot path, `minute` being the UTC minute's number since the epoch: one dict entry per
        combination, so the flusher's work is per combination and minute, not per answer (the flusher's time is
        taken from the event loop: one GIL)."""
        slot = (ids, minute, endpoint, status, needed_scope, client)
        with self._lock:
            answered = self._answered
            answered[slot] = answered.get(slot, 0) + 1
            self._answers += 1
            full = self._answers == self.flush_every  # once: the flusher takes them all
        if full:
            self._wake.set()

    def spend(self, key_id: UUID, workspace_id: UUID, generation: int, period: str) -> None:
        """Count one credit spent (recorded with the usage, so in-process counters can be restored)."""
        with self._lock:
            self._spends[key_id, workspace_id, generation, period] += 1

    def refilled(self, key_id: UUID, generation: int, period: str) -> None:
        """Record at the next flush that this period began with the key's refill amount."""
        with self._lock:
            self._refills.add((key_id, generation, period))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Answers counted but not recorded yet."""
        with self._lock:
            return self._answers

    def flush(self) -> int | None:
        """Record every pending count now; returns the position of the last event recorded, or None.

        On failure the counts go back into the buffer (to be retried) and the error is raised.
        """
        with self._flushing:
            with self._lock:  # only swapped here: `count` on the event loop waits for no conversion
                answered, self._answered = self._answered, {}
                taken, self._counts = self._counts, Counter()
                spent, self._spends = self._spends, Counter()
                refills, self._refills = self._refills, set()
                self._answers = 0
            _add_answered(taken, answered)
            counts = [UsageCount(k, w, m, e, s, n, sc, r, c) for (k, w, m, e, s, sc, r, c), n in taken.items()]
            spends = [CreditSpend(k, w, g, p, n) for (k, w, g, p), n in spent.items()]
            position = None
            for start in range(0, max(len(counts), len(spends)), MAX_ENTRIES_PER_BATCH):
                chunk = counts[start : start + MAX_ENTRIES_PER_BATCH]
                spend_chunk = spends[start : start + MAX_ENTRIES_PER_BATCH]
                try:
                    # One small event per save: large PostgreSQL saves can hang (EVENTSOURCING-NOTES).
                    position = self.ledger.record_usage(chunk, self.actor, spend_chunk)
                except Exception:
                    self._restore(counts[start:], spends[start:], refills)
                    raise
            for key_id, generation, period in sorted(refills, key=str):
                try:
                    position = self.ledger.record_refill(key_id, generation, period, self.actor) or position
                except Exception:
                    log.exception("recording a credits refill of key %s failed; not retried", key_id)
            if position is not None and self.on_flush is not None:
                self.on_flush(position)
            return position

    def _restore(
        self, counts: list[UsageCount], spends: list[CreditSpend], refills: set[tuple[UUID, int, str]]
    ) -> None:
        with self._lock:
            for c in counts:
                slot = (c.key_id, c.workspace_id, c.minute, c.endpoint, c.status, c.scope, c.scope_refused, c.client)
                self._counts[slot] += c.count
                self._answers += c.count
            for s in spends:
                self._spends[s.key_id, s.workspace_id, s.generation, s.period] += s.count
            self._refills |= refills

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="keyledger-usage-flusher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the flusher and record what is still pending."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("recording usage failed; the counts are kept and retried")
                self._stopping.wait(self.flush_interval)


def _add_answered(counts: Counter[_Slot], answered: dict[_HotSlot, int]) -> None:
    """The hot path's answers added to the counts as `record` would have counted them (one entry per combination).

    The hot path answers only VALID and RATE_LIMITED: the scope decided them, the key held it."""
    for (ids, number, endpoint, status, scope, client), n in answered.items():
        minute = datetime.fromtimestamp(number * 60, UTC)
        text = storable_text(endpoint[:MAX_ENDPOINT_LENGTH])
        address = canonical_address(client) if client else None
        counts[ids.key_id, ids.workspace_id, minute, text, status, scope, False, address] += n
