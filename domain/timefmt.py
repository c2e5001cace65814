"""RFC 3339 times, always UTC, and the range every backend can store.

A time enters the domain through `check_time` only: aware, and within years 1970-9999
once converted to UTC (`9999-12-31T23:59:59-14:00` is in year 10000 in UTC, which
Python cannot represent: it would stop every reader converting it). Times stored by
older code that accepted such values are clamped into the range when read (`clamp_utc`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from domain.errors import InvalidInput
from domain.text import excerpt

MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def clamp_utc(moment: datetime) -> datetime:
    """An aware time in UTC, clamped to [MIN_TIME, MAX_TIME] (for values already stored)."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        offset = moment.utcoffset()
        # Past year 9999 when the offset is negative (UTC is later), before year 1 otherwise.
        return MAX_TIME if offset is not None and offset.total_seconds() < 0 else MIN_TIME
    return min(max(utc, MIN_TIME), MAX_TIME)


def floor_minute(moment: datetime) -> datetime:
    """The start of the UTC minute a moment falls in: the unit of quotas and usage."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def check_time(moment: datetime, what: str = "time") -> datetime:
    """The time in UTC; InvalidInput when naive or outside years 1970-9999 in UTC."""
    if not isinstance(moment, datetime):
        raise InvalidInput(f"{what} must be an RFC 3339 time (e.g. 2027-03-03T14:00:00Z)")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"{what} needs a time zone offset (e.g. Z or +01:00)")
    utc = clamp_utc(moment)
    if utc != moment:  # it was clamped: outside the range
        raise InvalidInput(f"{what} must lie within years 1970-9999 in UTC")
    return utc


def to_rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return clamp_utc(moment).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str, what: str = "time") -> datetime:
    """Parse an RFC 3339 time with an explicit offset, e.g. 2027-03-03T14:00:00Z."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except (ValueError, AttributeError):
        raise InvalidInput(f"{what} {excerpt(text)!r} is not an RFC 3339 time (e.g. 2027-03-03T14:00:00Z)") from None
    return check_time(moment, what)
