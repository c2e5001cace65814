"""Summing a minute series per UTC minute, hour or day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from projections.usage import UsageBucket, floor_to, rebucket

T = datetime(2027, 3, 3, 23, 59, tzinfo=UTC)


def test_floor_to_each_bucket():
    moment = datetime(2027, 3, 3, 14, 37, 12, 5, tzinfo=UTC)
    assert floor_to(moment, "minute") == datetime(2027, 3, 3, 14, 37, tzinfo=UTC)
    assert floor_to(moment, "hour") == datetime(2027, 3, 3, 14, tzinfo=UTC)
    assert floor_to(moment, "day") == datetime(2027, 3, 3, tzinfo=UTC)
    # Another offset is floored in UTC.
    assert floor_to(moment.astimezone(timezone(timedelta(hours=5, minutes=30))), "day") == datetime(
        2027, 3, 3, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        floor_to(moment, "week")


def test_rebucket_sums_counters_per_bucket_in_order():
    series = [
        UsageBucket(T - timedelta(minutes=59), 3, 2, 1, 0),
        UsageBucket(T - timedelta(minutes=1), 4, 1, 1, 2),
        UsageBucket(T, 5, 5, 0, 0),
        UsageBucket(T + timedelta(minutes=1), 2, 0, 0, 1),  # the next day
    ]

    assert rebucket(series, "minute") == series
    assert rebucket(series, "hour") == [
        UsageBucket(datetime(2027, 3, 3, 23, tzinfo=UTC), 12, 8, 2, 2),
        UsageBucket(datetime(2027, 3, 4, tzinfo=UTC), 2, 0, 0, 1),
    ]
    assert rebucket(series, "day") == [
        UsageBucket(datetime(2027, 3, 3, tzinfo=UTC), 12, 8, 2, 2),
        UsageBucket(datetime(2027, 3, 4, tzinfo=UTC), 2, 0, 0, 1),
    ]
    assert rebucket([], "day") == []
