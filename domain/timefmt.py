"""RFC 3339 times, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.errors import InvalidInput


def to_rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str, what: str = "time") -> datetime:
    """Parse an RFC 3339 time with an explicit offset, e.g. 2027-03-03T14:00:00Z."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except (ValueError, AttributeError):
        raise InvalidInput(f"{what} {text!r} is not an RFC 3339 time (e.g. 2027-03-03T14:00:00Z)") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput(f"{what} {text!r} needs a time zone offset (e.g. Z or +01:00)")
    return moment.astimezone(UTC)
