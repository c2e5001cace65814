"""The KeyLedger application service: commands and queries over the event store.

Every command loads the aggregates it needs, lets them check their rules, and
saves all resulting events in one atomic `save()`. Commands return what a
caller can wait on: the changed aggregates and the stream position of the
last event recorded (None when the command changed nothing).

The application owns a command's effects beyond the store: after every save it
hands the effects attached by the composition root (`after_save`) what was saved,
with the ids whose cached credentials went stale, read from the events'
own declarations (`domain.effects`). No caller lists ids.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import EnvType

from domain import credentials
from domain.alerts import Alert
from domain.effects import changes_credentials, declared, event_classes
from domain.errors import (
    ConcurrentModification,
    InvalidInput,
    KeyNotFound,
    LastAdminKey,
    SecretAlreadyImported,
    WorkspaceNotFound,
)
from domain.imports import SecretClaim, claim_id
from domain.keys import DEFAULT_GRACE_SECONDS, ApiKey
from domain.plans import parse_plan
from domain.scopes import ADMIN, ScopeCatalog
from domain.usage import MAX_ENTRIES_PER_BATCH, CreditSpend, UsageBatch, UsageCount
from domain.workspace import Webhook, Workspace

OPERATOR = "operator"
LAST_ADMIN = "this is the workspace's last active admin key: issue another admin key first"
# A retry reloads the aggregates, so each attempt sees the newest state; 25 attempts
# comfortably outlast the contention one workspace sees from a handful of processes.
MAX_ATTEMPTS = 25

T = TypeVar("T")


@dataclass(frozen=True)
class NewWorkspace:
    workspace: Workspace
    admin_key: ApiKey
    secret: str
    position: int


@dataclass(frozen=True)
class WorkspaceUpdate:
    workspace: Workspace
    position: int | None


@dataclass(frozen=True)
class WebhookUpdate:
    webhook: Webhook
    position: int


@dataclass(frozen=True)
class IssuedSecret:
    """A key with its plaintext secret: returned once, by issue and rotate only."""

    key: ApiKey
    secret: str
    position: int


@dataclass(frozen=True)
class KeyUpdate:
    key: ApiKey
    position: int | None


@dataclass(frozen=True)
class Saved:
    """What one save recorded, as the after-save effects see it."""

    position: int  # of the last event
    events: tuple[Any, ...]
    changed: frozenset[UUID]  # keys and workspaces whose cached credentials or limits are stale now
    aggregates: tuple[Any, ...] = ()  # the aggregates saved, as they are now (a cache updates from them)

    @property
    def lifecycle(self) -> bool:
        """Whether a command saved it (not only usage): its caller reads its own writes."""
        return any(not isinstance(e, UsageBatch.UsageRecorded) for e in self.events)


AfterSave = Callable[[Saved], None]

AGGREGATES = (Workspace, ApiKey, UsageBatch, Alert, SecretClaim)
EVENT_CLASSES = event_classes(AGGREGATES)
CREDENTIAL_EVENTS = tuple(c for c in EVENT_CLASSES if declared(c))
# What a webhook may subscribe to: every type of the audit trail (usage counts are not in it).
AUDIT_TYPES = frozenset(c.__name__ for c in EVENT_CLASSES if c not in event_classes([UsageBatch]))


def _last_position(recordings: list[Recording[UUID]]) -> int:
    return max(r.notification.id for r in recordings)


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyLedger(Application[UUID]):
    name = "KeyLedger"
    snapshotting_intervals = {ApiKey: 100, Workspace: 100}  # noqa: RUF012 (library API)

    def __init__(
        self,
        env: EnvType | None = None,
        catalog: ScopeCatalog | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(env)
        self.catalog = catalog or ScopeCatalog()
        self.clock = clock
        self._after_save: list[AfterSave] = []
        self._saving = threading.local()  # the aggregates of the save in progress in this thread

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        self._saving.aggregates = tuple(o for o in objs if isinstance(o, ApiKey | Workspace))
        try:
            return super().save(*objs, **kwargs)
        finally:
            self._saving.aggregates = ()

    def after_save(self, effect: AfterSave) -> None:
        """Run `effect` after every save, in the saving thread, before the command returns."""
        self._after_save.append(effect)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if not recordings or not self._after_save:
            return
        events = tuple(r.domain_event for r in recordings)
        changed = frozenset(e.originator_id for e in events if changes_credentials(e))
        saved = Saved(_last_position(recordings), events, changed, getattr(self._saving, "aggregates", ()))
        for effect in self._after_save:
            effect(saved)

    # --- plumbing ---------------------------------------------------------

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a load-check-save attempt again when another writer got there first."""
        for _ in range(MAX_ATTEMPTS):
            try:
                return attempt()
            except IntegrityError:
                continue
        raise ConcurrentModification("too many concurrent changes to the same workspace or key; retry")

    def _save(self, *aggregates: Any) -> int | None:
        recordings = self.save(*aggregates)
        return _last_position(recordings) if recordings else None

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # --- queries ----------------------------------------------------------

    def get_workspace(self, workspace_id: UUID) -> Workspace:
        try:
            workspace: object = self.repository.get(workspace_id)
        except AggregateNotFoundError:
            raise WorkspaceNotFound(f"workspace {workspace_id} not found") from None
        if not isinstance(workspace, Workspace):
            raise WorkspaceNotFound(f"workspace {workspace_id} not found")
        return workspace

    def get_key(self, key_id: UUID, workspace_id: UUID | None = None) -> ApiKey:
        """A key; one of another workspace is reported exactly like a missing one."""
        try:
            key: object = self.repository.get(key_id)
        except AggregateNotFoundError:
            key = None
        if not isinstance(key, ApiKey) or (workspace_id is not None and key.workspace_id != workspace_id):
            raise KeyNotFound(f"key {key_id} not found")
        return key

    # --- workspace commands -----------------------------------------------

    def create_workspace(
        self,
        name: str,
        plan: str,
        actor: str = OPERATOR,
        requests_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> NewWorkspace:
        """Create a workspace with its first key (scope `admin`), atomically."""
        workspace = Workspace.create(name, parse_plan(plan), actor, requests_per_minute, requests_per_day)
        key_id = uuid4()
        secret = credentials.generate_secret(key_id)
        workspace.take_key_slot(key_id, actor)
        key = ApiKey.issue(
            key_id=key_id,
            workspace_id=workspace.id,
            name="admin",
            scopes=[ADMIN],
            secret_digest=credentials.digest(secret),
            actor=actor,
            now=self.clock(),
        )
        position = self._save(workspace, key)
        assert position is not None  # two aggregates were just created
        return NewWorkspace(workspace, key, secret, position)

    def change_plan(
        self,
        workspace_id: UUID,
        plan: str,
        actor: str = OPERATOR,
        requests_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> WorkspaceUpdate:
        parsed = parse_plan(plan)

        def attempt() -> WorkspaceUpdate:
            workspace = self.get_workspace(workspace_id)
            workspace.change_plan(parsed, actor, requests_per_minute, requests_per_day)
            return WorkspaceUpdate(workspace, self._save(workspace))

        return self._retrying(attempt)

    def create_webhook(
        self,
        workspace_id: UUID,
        url: str,
        types: list[str] | None = None,
        description: str | None = None,
        actor: str = OPERATOR,
    ) -> WebhookUpdate:
        """Subscribe `url` to the workspace's audit entries; the caller has checked the target (SSRF)."""
        unknown = sorted(set(types or ()) - AUDIT_TYPES)
        if unknown:
            raise InvalidInput(f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(AUDIT_TYPES))}")
        webhook_id = uuid4()

        def attempt() -> WebhookUpdate:
            workspace = self.get_workspace(workspace_id)
            webhook = workspace.create_webhook(webhook_id, url, types, description, actor)
            position = self._save(workspace)
            assert position is not None
            return WebhookUpdate(webhook, position)

        return self._retrying(attempt)

    def delete_webhook(self, workspace_id: UUID, webhook_id: UUID, actor: str = OPERATOR) -> WebhookUpdate:
        def attempt() -> WebhookUpdate:
            workspace = self.get_workspace(workspace_id)
            webhook = workspace.webhook(webhook_id)
            workspace.delete_webhook(webhook_id, actor)
            position = self._save(workspace)
            assert position is not None
            return WebhookUpdate(webhook, position)

        return self._retrying(attempt)

    # --- key commands -----------------------------------------------------

    def issue_key(
        self,
        workspace_id: UUID,
        name: str,
        scopes: list[str],
        actor: str = OPERATOR,
        expires_at: datetime | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
        credits: tuple[int, int | None, str | None] | None = None,
    ) -> IssuedSecret:
        """Issue a key; `credits` (remaining, refill amount, refill interval) makes it usage-limited."""
        parsed = self.catalog.parse_all(scopes)

        def attempt() -> IssuedSecret:
            workspace = self.get_workspace(workspace_id)
            key_id = uuid4()
            secret = credentials.generate_secret(key_id)
            key = ApiKey.issue(
                key_id=key_id,
                workspace_id=workspace_id,
                name=name,
                scopes=parsed,
                secret_digest=credentials.digest(secret),
                actor=actor,
                now=self.clock(),
                expires_at=expires_at,
                meta=meta,
                owner_id=owner_id,
                credits=credits,
            )
            workspace.take_key_slot(key_id, actor)
            position = self._save(workspace, key)
            assert position is not None
            return IssuedSecret(key, secret, position)

        return self._retrying(attempt)

    def import_key(
        self,
        workspace_id: UUID,
        name: str,
        scopes: list[str],
        secret_digest: str,
        actor: str = OPERATOR,
        expires_at: datetime | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> KeyUpdate:
        """Import a key by its secret's digest (`domain.imports.import_digest`); 409 if a key holds that digest."""
        parsed = self.catalog.parse_all(scopes)

        def attempt() -> KeyUpdate:
            workspace = self.get_workspace(workspace_id)
            key_id = uuid4()
            key = ApiKey.import_(
                key_id=key_id,
                workspace_id=workspace_id,
                name=name,
                scopes=parsed,
                secret_digest=secret_digest,
                actor=actor,
                now=self.clock(),
                expires_at=expires_at,
                meta=meta,
                owner_id=owner_id,
            )
            if self.claimed_key(secret_digest) is not None:
                raise SecretAlreadyImported("a key holds this secret already")
            workspace.take_key_slot(key_id, actor)
            claim = SecretClaim.claim(secret_digest, key_id, workspace_id, actor)
            position = self._save(workspace, key, claim)  # a racing import of the digest conflicts: retried
            return KeyUpdate(key, position)

        return self._retrying(attempt)

    def claimed_key(self, digest: str) -> UUID | None:
        """The key an imported digest belongs to, read from its claim; None when no key was imported with it."""
        try:
            claim: object = self.repository.get(claim_id(digest))
        except AggregateNotFoundError:
            return None
        return claim.key_id if isinstance(claim, SecretClaim) else None

    def grant_scopes(
        self, key_id: UUID, scopes: list[str], actor: str = OPERATOR, workspace_id: UUID | None = None
    ) -> KeyUpdate:
        parsed = self.catalog.parse_all(scopes)

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            key.grant(parsed, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def revoke_scopes(
        self, key_id: UUID, scopes: list[str], actor: str = OPERATOR, workspace_id: UUID | None = None
    ) -> KeyUpdate:
        parsed = self.catalog.parse_all(scopes)

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            if ADMIN in parsed and self._is_last_admin(key):
                raise LastAdminKey(LAST_ADMIN)
            key.revoke_scopes(parsed, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def set_scopes(
        self, key_id: UUID, scopes: list[str], actor: str = OPERATOR, workspace_id: UUID | None = None
    ) -> KeyUpdate:
        """Make the key's granted scopes exactly `scopes`, in one event."""
        parsed = self.catalog.parse_all(scopes)

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            if ADMIN not in parsed and self._is_last_admin(key):
                raise LastAdminKey(LAST_ADMIN)
            key.set_scopes(parsed, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def change_details(
        self, key_id: UUID, changes: dict[str, Any], actor: str = OPERATOR, workspace_id: UUID | None = None
    ) -> KeyUpdate:
        """Change a key's `name`, `meta` or `owner_id` (those present in `changes`), in one event."""

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            key.change_details(changes, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def set_key_limits(
        self,
        key_id: UUID,
        requests_per_minute: int | None,
        requests_per_day: int | None,
        actor: str = OPERATOR,
        workspace_id: UUID | None = None,
    ) -> KeyUpdate:
        """Limit a key below its workspace's plan; the lower of the two is enforced."""

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            plan = self.get_workspace(key.workspace_id).limits
            key.set_limits(requests_per_minute, requests_per_day, plan, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def clear_key_limits(self, key_id: UUID, actor: str = OPERATOR, workspace_id: UUID | None = None) -> KeyUpdate:
        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            key.clear_limits(actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def set_credits(
        self,
        key_id: UUID,
        remaining: int,
        refill_amount: int | None = None,
        refill_interval: str | None = None,
        actor: str = OPERATOR,
        workspace_id: UUID | None = None,
    ) -> KeyUpdate:
        """Set what a key may still spend from now (a fresh count) and its refill."""

        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            key.set_credits(remaining, refill_amount, refill_interval, actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def record_refill(self, key_id: UUID, generation: int, period: str, actor: str) -> int | None:
        """Record (once) that a key's credits were refilled for `period`; the position, or None."""

        def attempt() -> int | None:
            key = self.get_key(key_id)
            return self._save(key) if key.record_refill(generation, period, actor) else None

        return self._retrying(attempt)

    def rotate_key(
        self,
        key_id: UUID,
        actor: str = OPERATOR,
        grace_seconds: int = DEFAULT_GRACE_SECONDS,
        workspace_id: UUID | None = None,
    ) -> IssuedSecret:
        def attempt() -> IssuedSecret:
            key = self.get_key(key_id, workspace_id)
            secret = credentials.generate_secret(key_id)
            key.rotate(credentials.digest(secret), grace_seconds, actor)
            position = self._save(key)
            assert position is not None
            return IssuedSecret(key, secret, position)

        return self._retrying(attempt)

    def suspend_key(
        self, key_id: UUID, actor: str = OPERATOR, reason: str | None = None, workspace_id: UUID | None = None
    ) -> KeyUpdate:
        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            last_admin = self._is_last_admin(key)
            if key.suspend(reason, actor) and last_admin:  # a suspended admin key manages nothing
                raise LastAdminKey(LAST_ADMIN)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def resume_key(self, key_id: UUID, actor: str = OPERATOR, workspace_id: UUID | None = None) -> KeyUpdate:
        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            key.resume(actor)
            return KeyUpdate(key, self._save(key))

        return self._retrying(attempt)

    def revoke_key(
        self,
        key_id: UUID,
        actor: str = OPERATOR,
        reason: str | None = None,
        workspace_id: UUID | None = None,
    ) -> KeyUpdate:
        def attempt() -> KeyUpdate:
            key = self.get_key(key_id, workspace_id)
            last_admin = self._is_last_admin(key)
            key.revoke(reason, actor)  # its own checks first: a bad reason is 422 whichever the key
            if last_admin:
                raise LastAdminKey(LAST_ADMIN)
            workspace = self.get_workspace(key.workspace_id)
            workspace.release_key_slot(key_id, actor)
            return KeyUpdate(key, self._save(key, workspace))

        return self._retrying(attempt)

    def _is_last_admin(self, key: ApiKey) -> bool:
        """Whether `key` is its workspace's last active admin key: it may not lose `admin` (SPEC 8.5).

        Revocations also save the workspace (its slot), so two racing ones conflict and the
        retry sees the other; two admins racing to take `admin` from each other are not serialised.
        """
        now = self.clock()
        if not key.is_active_admin(now):
            return False
        workspace = self.get_workspace(key.workspace_id)
        return not any(
            other_id != key.id and self.get_key(other_id).is_active_admin(now) for other_id in workspace.live_key_ids
        )

    # --- alerts -------------------------------------------------------------

    def raise_alert(self, alert: Alert) -> int | None:
        """Save a new alert; None (and nothing saved) when it was raised before, by any process."""
        if self.alert_raised(alert.id):
            return None
        try:
            return self._save(alert)
        except IntegrityError:  # another process saved this very alert first
            return None

    def alert_raised(self, alert_id: UUID) -> bool:
        return bool(self.recorder.select_events(alert_id, limit=1))

    # --- usage ------------------------------------------------------------

    def record_usage(self, counts: list[UsageCount], actor: str, spends: list[CreditSpend] | None = None) -> int | None:
        """Record buffered usage counts (and credits spent) as UsageRecorded events; returns the last position."""
        spends = spends or []
        batches = [
            UsageBatch.record(counts[i : i + MAX_ENTRIES_PER_BATCH], actor, spends[i : i + MAX_ENTRIES_PER_BATCH])
            for i in range(0, max(len(counts), len(spends)), MAX_ENTRIES_PER_BATCH)
        ]
        return self._save(*batches) if batches else None
