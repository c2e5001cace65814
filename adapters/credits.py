"""Credits of usage-limited keys, counted where the quotas are (Redis when configured, else in process).

A counter per key, credits generation and period holds the credits *spent* (domain.keycredits);
spending is an atomic increment undone when it went past the period's allowance, so every
process sharing the counters allows exactly the allowance between them. In-process counters are
restored at start-up from the spends the usage events recorded (`restore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from adapters.quotas import Counters
from domain.keycredits import Credits


@dataclass(frozen=True)
class CreditDecision:
    allowed: bool
    remaining: int
    period: str
    retry_after: int | None  # seconds to the next refill; None without one
    refilled: bool  # the first credit spent in a refilled period (its refill is to be recorded)


class CreditGate:
    def __init__(self, storage: Counters, namespace: str = "kl") -> None:
        self.storage = storage
        self.namespace = namespace

    def _counter(self, key_id: UUID, generation: int, period: str) -> str:
        return f"{self.namespace}:c:{key_id}:{generation}:{period}"

    def spend(self, key_id: UUID, credits: Credits, now: datetime) -> CreditDecision:
        """Spend one credit if one remains in this period; otherwise spend nothing."""
        period = credits.period(now)
        counter = self._counter(key_id, credits.generation, period)
        allowance = credits.allowance(period)
        spent = self.storage.incr(counter, credits.lifetime())
        if spent > allowance:
            self.storage.incr(counter, credits.lifetime(), amount=-1)
            return CreditDecision(False, 0, period, credits.seconds_to_refill(now), False)
        refilled = spent == 1 and credits.is_refill(period)
        return CreditDecision(True, allowance - spent, period, credits.seconds_to_refill(now), refilled)

    def refund(self, key_id: UUID, credits: Credits, period: str) -> None:
        """Give back a credit spent for an answer refused after all (its quota was used up)."""
        self.storage.incr(self._counter(key_id, credits.generation, period), credits.lifetime(), amount=-1)

    def remaining(self, key_id: UUID, credits: Credits, now: datetime) -> int:
        period = credits.period(now)
        return self.left(key_id, credits.generation, period, credits.allowance(period))

    def left(self, key_id: UUID, generation: int, period: str, allowance: int) -> int:
        """What remains of a period's allowance."""
        return max(0, allowance - self.storage.get(self._counter(key_id, generation, period)))

    def restore(self, key_id: UUID, generation: int, period: str, spent: int) -> None:
        """Seed in-process counters after a restart with the spends usage events recorded."""
        if spent > 0:
            lifetime = 33 * 86_400 if period else 10 * 366 * 86_400
            self.storage.incr(self._counter(key_id, generation, period), lifetime, amount=spent)

    @staticmethod
    def periods(now: datetime) -> list[str]:
        """The periods whose counters are live at `now`: no refill, this UTC day, this UTC month."""
        moment = now.astimezone(UTC)
        return ["", f"d{moment.date().isoformat()}", f"m{moment.year:04d}-{moment.month:02d}"]
