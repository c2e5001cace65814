"""Keys and workspace limits held in memory for verification.

A known key is answered without any disk I/O: the cache holds its credentials
and its workspace's limits, and reloads them from the event store only when
the change feed says one of them changed. A follower thread also watches the
event stream, so changes made by other writers (the CLI, another process
without Redis) reach this process within a poll interval.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from adapters.change_feed import ChangeFeed, FeedUnavailable, RedisChangeFeed
from domain.application import CREDENTIAL_EVENTS, KeyLedger
from domain.errors import KeyNotFound, WorkspaceNotFound
from domain.imports import claim_id
from domain.keys import ApiKey
from domain.verification import KeyCredentials
from domain.workspace import Workspace

log = logging.getLogger(__name__)

# The events that change credentials, as they declare themselves (domain.effects).
CREDENTIAL_TOPICS = [get_topic(cls) for cls in CREDENTIAL_EVENTS]
ISSUED_TOPIC = get_topic(ApiKey.KeyIssued)


@dataclass(frozen=True)
class CachedKey:
    credentials: KeyCredentials
    scopes: list[str]
    requests_per_minute: int
    requests_per_day: int
    name: str = ""
    owner_id: str | None = None
    meta: dict[str, Any] | None = None


@dataclass
class CacheEntry:
    """A cached key (or a known absence) with the change markers it was loaded at. Replaced, never changed:
    whoever holds one can tell it is still current by `entry_of(key_id) is entry`."""

    value: CachedKey | None  # None: no such key (cached too, so guessing costs no I/O)
    key_marker: int
    workspace_marker: int
    workspace_id: UUID | None
    workspace_limits: Any = None  # the workspace's own limits when loaded (a key's command reuses them)
    current: bool = True  # False once it left the cache (replaced, dropped or evicted): for those who hold it


_Entry = CacheEntry


class CredentialCache:
    def __init__(
        self, ledger: KeyLedger, feed: ChangeFeed, max_entries: int = 100_000, max_missing: int = 10_000
    ) -> None:
        self.ledger = ledger
        self.feed = feed
        self.max_entries = max_entries
        self.max_missing = max_missing
        self._entries: OrderedDict[UUID, _Entry] = OrderedDict()  # found keys
        self._missing: OrderedDict[UUID, _Entry] = OrderedDict()  # ids found missing (value None)
        self._known: set[UUID] = set()  # ids of keys known to exist: about 100 bytes per key
        # Imported keys by digest (a digest's key never changes: kept for good), and digests known to name
        # none, with the marker of their claim then (a claim made since changes it).
        self._digests: dict[str, UUID] = {}
        self._unclaimed: OrderedDict[str, int] = OrderedDict()
        self._claims: dict[UUID, str] = {}  # claim id -> digest, of the digests remembered as unclaimed
        self._lock = threading.Lock()
        # The current entry of a found key, without checking markers (the hot path checks them its own way).
        self.entry_of = self._entries.get
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self.loads = 0  # how often the store was read: lets tests prove the hot path does no I/O

    def holds(self, key_id: UUID) -> bool:
        """Whether a key with this id is known to exist (cached or not: keys are never deleted).

        Known: every key loaded, every key issued since this process started (the follower sees
        each KeyIssued), and those `know` was told of (the keys read model at start-up).
        """
        return key_id in self._known

    def marker_names(self, key_id: UUID, workspace_id: UUID) -> list[str]:
        """The Redis keys of a key's and its workspace's markers; none without Redis."""
        feed = self.feed
        return [feed.name_of(key_id), feed.name_of(workspace_id)] if isinstance(feed, RedisChangeFeed) else []

    def remembers(self, key_id: UUID) -> bool:
        """Whether `get(key_id)` answers from memory (found or known missing), unless a change reloads it."""
        return key_id in self._entries or key_id in self._missing

    def remembers_digest(self, digest: str) -> bool:
        """Whether `imported(digest)` answers from memory, unless a claim made since reloads it."""
        return digest in self._digests or digest in self._unclaimed

    def know(self, key_ids: Iterable[UUID]) -> None:
        self._known.update(key_ids)

    def get(self, key_id: UUID) -> CachedKey | None:
        entry = self._entries.get(key_id)
        if entry is None:
            entry = self._missing.get(key_id)
        if entry is not None:
            ids = [key_id] if entry.workspace_id is None else [key_id, entry.workspace_id]
            try:
                markers = self.feed.markers(ids)
            except FeedUnavailable:  # Redis is down: the stream follower drops changes within its interval
                return entry.value
            key_marker = markers[0]
            workspace_marker = markers[1] if len(markers) > 1 else 0
            if key_marker == entry.key_marker and workspace_marker == entry.workspace_marker:
                return entry.value
        return self._load(key_id)

    def know_digests(self, digests: dict[str, UUID]) -> None:
        """Imported keys by digest, known at start-up (the keys read model): a digest's key never changes."""
        with self._lock:
            self._digests.update(digests)
            self._known.update(digests.values())

    def holds_digest(self, digest: str) -> bool:
        """Whether an imported key with this digest is known to exist."""
        return digest in self._digests

    def imported(self, digest: str) -> UUID | None:
        """The imported key a presented secret's digest names, or None; the store is read on a change only."""
        key_id = self._digests.get(digest)
        if key_id is not None:
            return key_id
        claim = claim_id(digest)
        marker = self._unclaimed.get(digest)
        if marker is not None:
            try:
                (current,) = self.feed.markers([claim])
            except FeedUnavailable:  # Redis is down: as remembered
                return None
            if current == marker:
                return None
        marker = self._marker(claim)  # before the store: a claim published after this read is seen next time
        self.loads += 1
        key_id = self.ledger.claimed_key(digest)
        with self._lock:
            if key_id is None and marker > 0:
                # A claim was published, yet the store has none: Redis outlived the store it served (reset).
                # Claims are never removed, so this store will publish anew: remember nothing meanwhile.
                pass
            elif key_id is None:
                self._unclaimed[digest] = marker
                self._unclaimed.move_to_end(digest)
                self._claims[claim] = digest
                while len(self._unclaimed) > self.max_missing:
                    self._claims.pop(claim_id(self._unclaimed.popitem(last=False)[0]), None)
            else:
                self._unclaimed.pop(digest, None)
                if len(self._digests) >= self.max_entries:
                    self._digests.pop(next(iter(self._digests)))
                self._digests[digest] = key_id
        return key_id

    def _load(
        self, key_id: UUID, saved: dict[UUID, Any] | None = None, workspace: tuple[Any, int] | None = None
    ) -> CachedKey | None:
        """Load a key (and its workspace's limits) from the store, or from `saved`: aggregates a command of
        this process just saved, as they are now (no store read for them); `workspace`: the workspace's
        limits and marker as cached, when they did not change."""
        # Read the markers before the store: a change published after this read is seen next time.
        key_marker = self._marker(key_id)
        given = saved or {}
        try:
            key = given.get(key_id)
            if not isinstance(key, ApiKey):
                self.loads += 1
                key = self.ledger.get_key(key_id)
        except KeyNotFound:
            # Remembered apart from found keys: a flood of forged ids evicts only other missing ones.
            with self._lock:
                self._missing[key_id] = _Entry(None, key_marker, 0, None)
                self._missing.move_to_end(key_id)
                while len(self._missing) > self.max_missing:
                    self._missing.popitem(last=False)
            return None
        else:
            if workspace is not None:
                workspace_limits, workspace_marker = workspace
            else:
                workspace_marker = self._marker(key.workspace_id)
                try:
                    found = given.get(key.workspace_id)
                    if not isinstance(found, Workspace):
                        self.loads += 1
                        found = self.ledger.get_workspace(key.workspace_id)
                except WorkspaceNotFound:  # cannot happen for a stored key; refuse rather than guess
                    return None
                workspace_limits = found.limits
            limits = key.limits(workspace_limits)  # the lower of the key's own and its plan's
            cached = CachedKey(
                credentials=key.credentials(self.ledger.catalog),
                scopes=list(key.scopes),
                requests_per_minute=limits.requests_per_minute,
                requests_per_day=limits.requests_per_day,
                name=key.name,
                owner_id=key.owner_id,
                meta=key.meta,
            )
            entry = _Entry(cached, key_marker, workspace_marker, key.workspace_id, workspace_limits)
        with self._lock:
            self._known.add(key_id)
            self._missing.pop(key_id, None)
            self._drop(key_id)
            self._entries[key_id] = entry
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)[1].current = False
        return entry.value

    def _marker(self, item: UUID) -> int:
        try:
            (marker,) = self.feed.markers([item])
        except FeedUnavailable:
            return -1  # differs from any published marker: reloaded once Redis answers again
        return marker

    def invalidate(self, *ids: UUID) -> None:
        """Forget ids (keys or workspaces) at once, in this process."""
        with self._lock:
            for item in ids:
                self._drop(item)
                self._missing.pop(item, None)
                digest = self._claims.pop(item, None)  # a claim made by a writer that publishes no marker
                if digest is not None:
                    self._unclaimed.pop(digest, None)
            stale = [k for k, e in self._entries.items() if e.workspace_id in ids]
            for key_id in stale:
                self._drop(key_id)

    def _drop(self, key_id: UUID) -> None:
        entry = self._entries.pop(key_id, None)
        if entry is not None:
            entry.current = False

    def refresh(self, ids: Iterable[UUID], keys: Iterable[UUID], saved: Iterable[Any] = ()) -> None:
        """After this process changed them: forget `ids` (keys or workspaces), and load `keys` again,
        from the aggregates the command `saved` when it saved them (updated in place: no store read).

        Anything else is read in the command's own thread while the store is known to be up, so the
        next verification of a changed key needs no store (nor does it during an outage).
        """
        ids, given = set(ids), {aggregate.id: aggregate for aggregate in saved}
        kept = {}  # the workspace limits of changed keys whose workspace did not change: no need to read them
        for key_id in keys:
            old = self._entries.get(key_id)
            if old is not None and old.workspace_id not in ids and old.workspace_limits is not None:
                kept[key_id] = (old.workspace_limits, old.workspace_marker)
        self.invalidate(*ids)
        for key_id in keys:
            self._load(key_id, given, kept.get(key_id))

    # --- following the stream for writers that do not publish ------------

    def start_following(self, interval: float = 0.25) -> None:
        start = self.ledger.max_position()
        self._follower = threading.Thread(target=self._follow, args=(start, interval), daemon=True)
        self._follower.start()

    def stop_following(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)

    def _follow(self, position: int, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                notifications = self.ledger.recorder.select_notifications(
                    start=position, limit=500, topics=CREDENTIAL_TOPICS, inclusive_of_start=False
                )
            except Exception:  # the store may be briefly unavailable; try again next tick
                log.warning("credential cache follower could not read the event stream", exc_info=True)
                continue
            if notifications:
                self._known.update(UUID(str(n.originator_id)) for n in notifications if n.topic == ISSUED_TOPIC)
                # A key reloaded after a change published at or after this event (this process's own
                # commands, or any process with Redis) is fresh already: keep it.
                stale = {
                    item
                    for n in notifications
                    if (entry := self._entries.get(item := UUID(str(n.originator_id)))) is None
                    or entry.key_marker < n.id
                }
                self.invalidate(*stale)
                position = notifications[-1].id
