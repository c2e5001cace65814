"""Plans and the per-key request limits they set."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from domain.errors import InvalidPlan
from domain.text import excerpt

MAX_LIMIT = 1_000_000_000


class Plan(StrEnum):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    requests_per_day: int


STANDARD_LIMITS = {
    Plan.STARTER: Limits(60, 10_000),
    Plan.PRO: Limits(300, 100_000),
}


def parse_plan(name: str) -> Plan:
    try:
        return Plan(name)
    except ValueError:
        known = ", ".join(p.value for p in Plan)
        raise InvalidPlan(f"unknown plan {excerpt(name)!r}; known plans: {known}") from None


def limits_for(plan: Plan, requests_per_minute: int | None = None, requests_per_day: int | None = None) -> Limits:
    """Limits of a plan. Enterprise needs both numbers; other plans take none."""
    if plan is Plan.ENTERPRISE:
        if requests_per_minute is None or requests_per_day is None:
            raise InvalidPlan("the enterprise plan needs requests_per_minute and requests_per_day")
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("requests_per_day", requests_per_day),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
                raise InvalidPlan(f"{name} must be an integer from 1 to {MAX_LIMIT}")
        if requests_per_minute > requests_per_day:
            raise InvalidPlan("requests_per_minute cannot exceed requests_per_day")
        return Limits(requests_per_minute, requests_per_day)
    if requests_per_minute is not None or requests_per_day is not None:
        raise InvalidPlan(f"the {plan.value} plan has fixed limits; custom numbers are only for enterprise")
    return STANDARD_LIMITS[plan]
