"""The Workspace aggregate: a plan and the set of live keys it owns.

The workspace records every key that takes or frees one of its 50 slots. A key
is issued by saving the new key and the workspace in one atomic `save()`, so
optimistic concurrency on the workspace's version turns a race for the last
free slots into a conflict (retried by the application) and never a 51st key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.effects import credentials
from domain.errors import InvalidInput, InvalidName, KeyLimitReached, WebhookLimitReached, WebhookNotFound
from domain.plans import Limits, Plan, limits_for
from domain.text import check_text

MAX_LIVE_KEYS = 50
MAX_NAME_LENGTH = 100
MAX_WEBHOOKS = 10
MAX_WEBHOOK_URL_LENGTH = 2000
MAX_WEBHOOK_DESCRIPTION_LENGTH = 200


def check_name(name: str, what: str = "name") -> str:
    check_text(name, what, MAX_NAME_LENGTH, error=InvalidName)
    if not name.strip():
        raise InvalidName(f"{what} must be a non-empty string")
    return name.strip()


class Workspace(Aggregate):
    # v2 holds its webhook subscriptions (SPEC 8.3); snapshots taken by v1 code had none.
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state.setdefault("webhooks", {})

    @credentials(changes=False)
    class WorkspaceCreated(Aggregate.Created):
        name: str
        plan: str
        requests_per_minute: int
        requests_per_day: int
        actor: str

    @credentials(changes=True)
    class PlanChanged(Aggregate.Event):
        plan: str
        requests_per_minute: int
        requests_per_day: int
        actor: str

        def apply(self, workspace: Workspace) -> None:
            workspace.plan = self.plan
            workspace.requests_per_minute = self.requests_per_minute
            workspace.requests_per_day = self.requests_per_day

    @credentials(changes=False)
    class KeySlotTaken(Aggregate.Event):
        key_id: UUID
        actor: str

        def apply(self, workspace: Workspace) -> None:
            workspace.live_key_ids.append(self.key_id)

    @credentials(changes=False)
    class KeySlotReleased(Aggregate.Event):
        key_id: UUID
        actor: str

        def apply(self, workspace: Workspace) -> None:
            workspace.live_key_ids.remove(self.key_id)

    @credentials(changes=False)
    class WebhookCreated(Aggregate.Event):
        """A subscription (SPEC 8.3). Its signing secret is derived from the id outside the store, never held here."""

        class_version = 1  # new: no older form to upcast
        webhook_id: UUID
        url: str
        types: list[str] | None  # None: every type
        description: str | None
        actor: str

        def apply(self, workspace: Workspace) -> None:
            workspace.webhooks[str(self.webhook_id)] = {
                "url": self.url,
                "types": self.types,
                "description": self.description,
                "created_at": self.timestamp,
            }

    @credentials(changes=False)
    class WebhookDeleted(Aggregate.Event):
        class_version = 1
        webhook_id: UUID
        actor: str

        def apply(self, workspace: Workspace) -> None:
            workspace.webhooks.pop(str(self.webhook_id), None)

    def __init__(self, name: str, plan: str, requests_per_minute: int, requests_per_day: int, actor: str) -> None:
        self.name = name
        self.plan = plan
        self.requests_per_minute = requests_per_minute
        self.requests_per_day = requests_per_day
        self.created_by = actor
        self.live_key_ids: list[UUID] = []
        self.webhooks: dict[str, dict[str, Any]] = {}  # webhook id -> url, types, description, created_at

    @classmethod
    def create(
        cls,
        name: str,
        plan: Plan,
        actor: str,
        requests_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> Workspace:
        limits = limits_for(plan, requests_per_minute, requests_per_day)
        return cls._create(
            cls.WorkspaceCreated,
            name=check_name(name, "workspace name"),
            plan=plan.value,
            requests_per_minute=limits.requests_per_minute,
            requests_per_day=limits.requests_per_day,
            actor=actor,
        )

    @property
    def limits(self) -> Limits:
        return Limits(self.requests_per_minute, self.requests_per_day)

    @property
    def live_keys(self) -> int:
        return len(self.live_key_ids)

    def change_plan(
        self,
        plan: Plan,
        actor: str,
        requests_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> bool:
        """Change the plan; returns False (and records nothing) when nothing would change."""
        limits = limits_for(plan, requests_per_minute, requests_per_day)
        if (self.plan, self.requests_per_minute, self.requests_per_day) == (
            plan.value,
            limits.requests_per_minute,
            limits.requests_per_day,
        ):
            return False
        self.trigger_event(
            self.PlanChanged,
            plan=plan.value,
            requests_per_minute=limits.requests_per_minute,
            requests_per_day=limits.requests_per_day,
            actor=actor,
        )
        return True

    def take_key_slot(self, key_id: UUID, actor: str) -> None:
        if self.live_keys >= MAX_LIVE_KEYS:
            raise KeyLimitReached(
                f"the workspace already has {MAX_LIVE_KEYS} live keys; revoke one before issuing another"
            )
        self.trigger_event(self.KeySlotTaken, key_id=key_id, actor=actor)

    def release_key_slot(self, key_id: UUID, actor: str) -> None:
        if key_id in self.live_key_ids:
            self.trigger_event(self.KeySlotReleased, key_id=key_id, actor=actor)

    # --- webhooks ---------------------------------------------------------

    def webhook(self, webhook_id: UUID) -> Webhook:
        found = self.webhooks.get(str(webhook_id))
        if found is None:
            raise WebhookNotFound(f"webhook {webhook_id} not found")
        return Webhook(webhook_id, found["url"], found["types"], found["description"], found["created_at"])

    def list_webhooks(self) -> list[Webhook]:
        return sorted((self.webhook(UUID(w)) for w in self.webhooks), key=lambda w: (w.created_at, str(w.id)))

    def create_webhook(
        self, webhook_id: UUID, url: str, types: list[str] | None, description: str | None, actor: str
    ) -> Webhook:
        """Subscribe `url` (checked by the caller: the domain does no network I/O) to the workspace's entries."""
        check_text(url, "url", MAX_WEBHOOK_URL_LENGTH)
        if description is not None:
            check_text(description, "description", MAX_WEBHOOK_DESCRIPTION_LENGTH, controls=True)
        if types is not None and not types:
            raise InvalidInput("types must name at least one event type, or be left out for every type")
        if len(self.webhooks) >= MAX_WEBHOOKS:
            raise WebhookLimitReached(f"a workspace has at most {MAX_WEBHOOKS} webhooks; delete one first")
        self.trigger_event(
            self.WebhookCreated,
            webhook_id=webhook_id,
            url=url,
            types=sorted(set(types)) if types is not None else None,
            description=description,
            actor=actor,
        )
        return self.webhook(webhook_id)

    def delete_webhook(self, webhook_id: UUID, actor: str) -> None:
        self.webhook(webhook_id)  # not found: refused
        self.trigger_event(self.WebhookDeleted, webhook_id=webhook_id, actor=actor)


@dataclass(frozen=True)
class Webhook:
    id: UUID
    url: str
    types: list[str] | None
    description: str | None
    created_at: datetime
