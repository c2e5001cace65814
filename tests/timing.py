"""Keeping tests that fill a per-minute quota inside one UTC minute."""

from __future__ import annotations

import time


def inside_one_minute(seconds_needed: float = 10.0) -> None:
    """Sleep into the next UTC minute when fewer than `seconds_needed` remain in this one.

    Quotas are windows aligned to the UTC minute: a sequence of requests that straddles a
    boundary would see a fresh window halfway and not reach its limit.
    """
    left = 60.0 - time.time() % 60.0
    if left < seconds_needed:
        time.sleep(left + 0.05)
