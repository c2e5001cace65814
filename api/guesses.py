"""Guessing keys is throttled per client address: NOT_FOUND answers are counted per UTC minute.

A forged key with a valid checksum and a random id costs a store read to find it missing. After
`per_minute` NOT_FOUND answers to one address in a minute, that address gets 429 for any key
this process does not hold in its cache, without a store read, until the minute ends; keys it
holds are answered as usual. Counted per process (a flood is throttled by each process it reaches).
"""

from __future__ import annotations

import threading

MAX_ADDRESSES = 100_000  # addresses tracked at once; older windows are dropped first


class GuessingThrottled(Exception):
    """Answered 429 (`api.problems`)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many unknown keys from this address; retry in {retry_after} s")
        self.retry_after = retry_after


class GuessLimit:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute  # 0: no limit
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (minute, NOT_FOUND answers in it)
        self._lock = threading.Lock()

    def check(self, address: str | None, now: float) -> None:
        """Raise GuessingThrottled while `address` is over the limit in this minute."""
        if not self.per_minute or address is None:
            return
        minute, count = self._counts.get(address, (-1, 0))
        if minute == int(now // 60) and count >= self.per_minute:
            raise GuessingThrottled(60 - int(now % 60))

    def count(self, address: str | None, now: float) -> None:
        """One more NOT_FOUND answer to `address`."""
        if not self.per_minute or address is None:
            return
        current = int(now // 60)
        with self._lock:
            minute, count = self._counts.get(address, (current, 0))
            self._counts[address] = (current, count + 1 if minute == current else 1)
            if len(self._counts) > MAX_ADDRESSES:
                self._counts = {a: c for a, c in self._counts.items() if c[0] == current}
