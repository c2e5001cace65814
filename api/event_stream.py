"""Server-Sent Events that follow the audit read model (SPEC 8.3 and 8.6).

The read model's runner follows the store, so commands saved by any process show here. One
pulse per process watches how far the audit read model has got (an in-memory number: no
query) and wakes the open streams when it moves; each stream then reads what is new for it.
An idle stream costs no query, only a comment line every `HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from fastapi.encoders import jsonable_encoder
from starlette.concurrency import run_in_threadpool

from domain.errors import InvalidInput

HEARTBEAT_SECONDS = 10.0  # SPEC 8.3: a comment line at least every 15 s
PULSE_SECONDS = 0.05  # how often the pulse looks at the read model's position while streams are open
PAGE = 200
MAX_POSITION_DIGITS = 18
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # the latter: nginx must not buffer
HEARTBEAT = b": keep-alive\n\n"

T = TypeVar("T")


class Pulse:
    """Wakes every open stream when `position()` moves; runs only while a stream is open."""

    def __init__(self, position: Callable[[], int]) -> None:
        self._position = position
        self._changed = asyncio.Event()
        self._streams = 0
        self._task: asyncio.Task[None] | None = None

    def next_change(self) -> asyncio.Event:
        """Set at the next move. Take it *before* reading, so a move during the read is not missed."""
        return self._changed

    @contextmanager
    def open(self) -> Any:
        self._streams += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield self
        finally:
            self._streams -= 1

    async def _run(self) -> None:
        seen = self._position()
        while self._streams:
            await asyncio.sleep(PULSE_SECONDS)
            now = self._position()
            if now != seen:
                seen = now
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()


def start_position(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: after `Last-Event-ID` (a reconnecting client's last entry) or `?after=`."""
    if last_event_id is None:
        return after or 0
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_POSITION_DIGITS:
        raise InvalidInput("Last-Event-ID must be the id of an event this stream sent (a position)")
    return int(text)


def frame(position: int, event: str, data: Any) -> bytes:
    """One SSE event; the JSON is on one line, so it needs no `data:` continuation lines."""
    body = json.dumps(jsonable_encoder(data), separators=(",", ":"))
    return f"id: {position}\nevent: {event}\ndata: {body}\n\n".encode()


async def follow(
    pulse: Pulse,
    read: Callable[[int], Sequence[T]],
    position_of: Callable[[T], int],
    encode: Callable[[T], bytes],
    start: int,
    first: Sequence[T],
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """The frames of `first`, then of every later page `read(after)` gives, in position order, until the
    client leaves (the server cancels us) or `still_allowed` says the caller lost its right to read."""
    last, page = start, first
    beat = time.monotonic()
    with pulse.open():
        while True:
            changed = pulse.next_change()
            for item in page:
                yield encode(item)
                last = position_of(item)
            if len(page) < PAGE:  # at the head: wait for news, with a heartbeat meanwhile
                if still_allowed is not None and not await still_allowed():
                    return
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), max(0.0, HEARTBEAT_SECONDS - (time.monotonic() - beat)))
            if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                yield HEARTBEAT
                beat = time.monotonic()
            page = await run_in_threadpool(read, last)
