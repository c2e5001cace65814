"""Credits of usage-limited keys (SPEC 8.1): each allowed answer spends one; an optional refill.

A key's credits are counted as *spent* credits per (generation, period), never as a stored
remaining number: the generation is the key's version when its credits were last set (so a new
setting starts a fresh count), the period the UTC day or month of a refill (`""` without one).
A period's allowance is the number set, in the period it was set in, and the refill amount in
every later one: a refill resets what remains to its amount (it does not add to it). Refills
are computed, not scheduled: the first allowed answer of a new period finds the refill amount,
and a `CreditsRefilled` event records that refill once (domain.keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from domain.errors import InvalidCredits

INTERVALS = ("day", "month")
MAX_CREDITS = 1_000_000_000_000


@dataclass(frozen=True)
class Refill:
    amount: int
    interval: str  # "day" or "month" (UTC)


@dataclass(frozen=True)
class Credits:
    """A key's credits as last set: what verification needs to count them."""

    remaining: int  # as set, in the period it was set in
    refill: Refill | None
    set_at: datetime
    generation: int

    def period(self, now: datetime) -> str:
        if self.refill is None:
            return ""
        moment = now.astimezone(UTC)
        if self.refill.interval == "day":
            return f"d{moment.date().isoformat()}"
        return f"m{moment.year:04d}-{moment.month:02d}"

    def allowance(self, period: str) -> int:
        """Credits a period starts with."""
        if self.refill is None or period == self.period(self.set_at):
            return self.remaining
        return self.refill.amount

    def is_refill(self, period: str) -> bool:
        return self.refill is not None and period != self.period(self.set_at)

    def seconds_to_refill(self, now: datetime) -> int | None:
        """Seconds until the next refill; None without one."""
        if self.refill is None:
            return None
        moment = now.astimezone(UTC)
        day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.refill.interval == "day":
            boundary = day_start.timestamp() + 86_400
        else:
            year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
            boundary = datetime(year, month, 1, tzinfo=UTC).timestamp()
        return max(1, int(boundary - moment.timestamp() + 0.999))

    def lifetime(self) -> int:
        """Seconds a period's counter must outlive its period by at most."""
        if self.refill is None:
            return 10 * 366 * 86_400
        return 2 * 86_400 if self.refill.interval == "day" else 33 * 86_400


def check_credits(remaining: object, refill_amount: object = None, refill_interval: object = None) -> None:
    """`remaining` 0 or more; a refill has both an amount of at least 1 and an interval `day` or `month`."""
    if isinstance(remaining, bool) or not isinstance(remaining, int) or not 0 <= remaining <= MAX_CREDITS:
        raise InvalidCredits(f"credits remaining must be an integer from 0 to {MAX_CREDITS}")
    if refill_amount is None and refill_interval is None:
        return
    if refill_interval not in INTERVALS:
        raise InvalidCredits(f"the refill interval must be one of {', '.join(INTERVALS)}")
    if isinstance(refill_amount, bool) or not isinstance(refill_amount, int) or not 1 <= refill_amount <= MAX_CREDITS:
        raise InvalidCredits(f"the refill amount must be an integer from 1 to {MAX_CREDITS}")
