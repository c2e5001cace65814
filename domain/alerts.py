"""Alerts as events (SPEC 8.3): a key expiring within 7 days, its rotation due, 80 % and 100 % of its day limit
used, a burst of at least 20 refused answers within a minute.

Each alert is an aggregate of one event whose id is derived from the key, the condition and its period
(`alert_id`): the expiry it announces, the secret that is due, the UTC day and threshold, the UTC minute. The
first process to notice saves it; a second save of the same id conflicts in the store, so each alert is
raised at most once whichever processes notice it. Alerts are in the audit trail, the stream and webhooks.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.effects import credentials

EXPIRING_WITHIN = timedelta(days=7)
QUOTA_THRESHOLDS = (80, 100)  # percent of a key's day limit
DENIED_BURST = 20  # refused answers for one key within one UTC minute
ALERT_ACTOR = "keyledger"
_NAMESPACE = UUID("0b8f5a52-4d7e-4c55-9a84-6f1e3c2d7a90")  # any constant: the same in every process


def alert_id(condition: str, key_id: UUID, period: str) -> UUID:
    return uuid5(_NAMESPACE, f"{condition}/{key_id}/{period}")


class Alert(Aggregate):
    class Event(Aggregate.Event):
        """Every alert names its key and the key's workspace."""

        key_id: UUID
        workspace_id: UUID

    @credentials(changes=False)
    class AlertKeyExpiring(Aggregate.Created):
        class_version = 1
        key_id: UUID
        workspace_id: UUID
        expires_at: datetime
        actor: str

    @credentials(changes=False)
    class AlertRotationDue(Aggregate.Created):
        class_version = 1
        key_id: UUID
        workspace_id: UUID
        secret_since: datetime  # when the key's current secret was made; due 90 days after
        actor: str

    @credentials(changes=False)
    class AlertQuotaThreshold(Aggregate.Created):
        class_version = 1
        key_id: UUID
        workspace_id: UUID
        day: str  # the UTC day, YYYY-MM-DD
        threshold_percent: int
        requests_per_day: int
        used: int
        actor: str

    @credentials(changes=False)
    class AlertDeniedBurst(Aggregate.Created):
        class_version = 1
        key_id: UUID
        workspace_id: UUID
        minute: datetime
        refused: int
        actor: str

    def __init__(self, key_id: UUID, workspace_id: UUID, actor: str) -> None:
        # What the alert says beyond this is in its one event (the audit entry): nothing else reads it.
        self.key_id = key_id
        self.workspace_id = workspace_id
        self.actor = actor

    @classmethod
    def key_expiring(cls, key_id: UUID, workspace_id: UUID, expires_at: datetime) -> Alert:
        return cls._create(
            cls.AlertKeyExpiring,
            id=alert_id("expiring", key_id, expires_at.isoformat()),
            key_id=key_id,
            workspace_id=workspace_id,
            expires_at=expires_at,
            actor=ALERT_ACTOR,
        )

    @classmethod
    def rotation_due(cls, key_id: UUID, workspace_id: UUID, secret_since: datetime) -> Alert:
        return cls._create(
            cls.AlertRotationDue,
            id=alert_id("rotation", key_id, secret_since.isoformat()),
            key_id=key_id,
            workspace_id=workspace_id,
            secret_since=secret_since,
            actor=ALERT_ACTOR,
        )

    @classmethod
    def quota_threshold(
        cls, key_id: UUID, workspace_id: UUID, day: date, threshold_percent: int, requests_per_day: int, used: int
    ) -> Alert:
        return cls._create(
            cls.AlertQuotaThreshold,
            id=alert_id(f"quota{threshold_percent}", key_id, day.isoformat()),
            key_id=key_id,
            workspace_id=workspace_id,
            day=day.isoformat(),
            threshold_percent=threshold_percent,
            requests_per_day=requests_per_day,
            used=used,
            actor=ALERT_ACTOR,
        )

    @classmethod
    def denied_burst(cls, key_id: UUID, workspace_id: UUID, minute: datetime, refused: int) -> Alert:
        return cls._create(
            cls.AlertDeniedBurst,
            id=alert_id("denied", key_id, minute.isoformat()),
            key_id=key_id,
            workspace_id=workspace_id,
            minute=minute,
            refused=refused,
            actor=ALERT_ACTOR,
        )


def quota_thresholds_reached(used: int, requests_per_day: int) -> list[int]:
    """The thresholds (percent) `used` of `requests_per_day` has reached."""
    return [t for t in QUOTA_THRESHOLDS if used * 100 >= t * requests_per_day]
