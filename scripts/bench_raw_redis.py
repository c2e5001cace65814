"""A reference line of `bench_verify`: the raw ASGI stub (`bench_raw`) plus the one Redis round trip a decision
makes with KEYLEDGER_REDIS_URL set, and nothing else.

Each request sends the quota script a keyledger decision sends (two markers, a minute and a day counter), batched
per turn of the event loop by the same sender keyledger's hot path uses (`adapters.quotas.loop_batcher`), and
answers the raw stub's JSON. Its rate against the raw stub's is the most any implementation that makes one Redis
round trip per decision can reach on the machine: the ceiling for keyledger's Redis line.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from adapters.quotas import loop_batcher
from scripts import bench_raw

_URL = os.environ.get("KEYLEDGER_REDIS_URL", "redis://127.0.0.1:6379/15")
_batcher: Any = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _batcher
    if scope["type"] == "http":
        if _batcher is None:
            _batcher = loop_batcher(_URL, asyncio.get_running_loop())
        minute = int(time.time()) // 60
        keys = ["bench:mk:key", "bench:mk:ws", f"bench:q:m{minute}", f"bench:q:d{minute // 1440}"]
        await _batcher.call(keys, [2, 0, 0, 10**9, 10**9])
    await bench_raw.app(scope, receive, send)
