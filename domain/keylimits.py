"""Per-key request limits below the plan's (SPEC 8.1): the lower number of the two is enforced."""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import InvalidLimits
from domain.plans import Limits


@dataclass(frozen=True)
class KeyLimits:
    """The limits enforced for a key: the lower of its own and its plan's; `source` says whose they are."""

    requests_per_minute: int
    requests_per_day: int
    source: str  # "key" while the key has limits of its own, else "plan"


def check_key_limits(requests_per_minute: object, requests_per_day: object, plan: Limits) -> None:
    """Each number given is an integer from 1 to the plan's; at least one is given."""
    if requests_per_minute is None and requests_per_day is None:
        raise InvalidLimits("give requests_per_minute, requests_per_day or both (DELETE returns the key to its plan)")
    for name, value, most in (
        ("requests_per_minute", requests_per_minute, plan.requests_per_minute),
        ("requests_per_day", requests_per_day, plan.requests_per_day),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise InvalidLimits(f"{name} must be an integer from 1 to the plan's {most}")


def effective_limits(plan: Limits, per_minute: int | None, per_day: int | None) -> KeyLimits:
    own = per_minute is not None or per_day is not None
    return KeyLimits(
        requests_per_minute=min(plan.requests_per_minute, per_minute or plan.requests_per_minute),
        requests_per_day=min(plan.requests_per_day, per_day or plan.requests_per_day),
        source="key" if own else "plan",
    )
