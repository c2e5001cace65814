"""Usage of keys as events: counts buffered by an API process and flushed in batches.

One request is not one event: an API process counts answers per key, UTC
minute, endpoint and status, and records them as one `UsageRecorded` event per
flush. Each flush is its own small aggregate, so processes never contend for
a shared stream. A crash loses at most the counts not yet flushed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.effects import credentials

# Keeps one save() small: large PostgreSQL saves can hang (EVENTSOURCING-NOTES).
MAX_ENTRIES_PER_BATCH = 1000


@dataclass(frozen=True)
class UsageCount:
    """Answers given to one key in one UTC minute, for one endpoint and status."""

    key_id: UUID
    workspace_id: UUID
    minute: datetime
    endpoint: str
    status: int
    count: int
    # v3 (SPEC 8.2): the scope the answer needed (None: none derivable, or the key's state decided it),
    # whether the key lacked it (a refusal for that scope), and the client's address as given to keyledger.
    scope: str | None = None
    scope_refused: bool = False
    client: str | None = None

    def to_entry(self) -> dict[str, Any]:
        return {
            "key_id": str(self.key_id),
            "workspace_id": str(self.workspace_id),
            "minute": self.minute.isoformat(),
            "endpoint": self.endpoint,
            "status": self.status,
            "count": self.count,
            "scope": self.scope,
            "scope_refused": self.scope_refused,
            "client": self.client,
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> UsageCount:
        return cls(
            key_id=UUID(entry["key_id"]),
            workspace_id=UUID(entry["workspace_id"]),
            minute=datetime.fromisoformat(entry["minute"]),
            endpoint=entry["endpoint"],
            status=int(entry["status"]),
            count=int(entry["count"]),
            scope=entry.get("scope"),
            scope_refused=bool(entry.get("scope_refused", False)),
            client=entry.get("client"),
        )


@dataclass(frozen=True)
class CreditSpend:
    """Credits spent by allowed answers of a usage-limited key, in one credits generation and period."""

    key_id: UUID
    workspace_id: UUID
    generation: int
    period: str
    count: int

    def to_entry(self) -> dict[str, Any]:
        return {
            "key_id": str(self.key_id),
            "workspace_id": str(self.workspace_id),
            "generation": self.generation,
            "period": self.period,
            "count": self.count,
        }


class UsageBatch(Aggregate):
    @credentials(changes=False)
    class UsageRecorded(Aggregate.Created):
        # v2: `credits`, the credits spent (CreditSpend entries), so in-process counters survive a restart.
        # v3: each entry's `scope`, `scope_refused` and `client` (SPEC 8.2); older entries have none of them.
        class_version = 3
        entries: list[dict[str, Any]]
        actor: str
        credits: list[dict[str, Any]]

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("credits", [])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            for entry in state["entries"]:
                entry.setdefault("scope", None)
                entry.setdefault("scope_refused", False)
                entry.setdefault("client", None)

    def __init__(self, entries: list[dict[str, Any]], actor: str, credits: list[dict[str, Any]] | None = None) -> None:
        self.entries = entries
        self.recorded_by = actor
        self.credits = credits or []

    @classmethod
    def record(cls, counts: list[UsageCount], actor: str, spends: list[CreditSpend] | None = None) -> UsageBatch:
        spends = spends or []
        if not (counts or spends) or len(counts) > MAX_ENTRIES_PER_BATCH or len(spends) > MAX_ENTRIES_PER_BATCH:
            raise ValueError(f"a usage batch holds 1 to {MAX_ENTRIES_PER_BATCH} counts and as many spends")
        return cls._create(
            cls.UsageRecorded,
            entries=[c.to_entry() for c in counts],
            actor=actor,
            credits=[s.to_entry() for s in spends],
        )

    @property
    def counts(self) -> list[UsageCount]:
        return [UsageCount.from_entry(e) for e in self.entries]
