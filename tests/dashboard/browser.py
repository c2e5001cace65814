"""Headless Chromium for the dashboard's tests: Debian's `chromium` driven by Playwright (no downloaded browsers).

Missing Chromium or Playwright skips the browser tests with the reason on a developer machine and fails them in
CI (CI=true), like the other backends (see tests/backends.py). `scripts/dev test` installs Debian's chromium
when it runs as root.
"""

from __future__ import annotations

import importlib.util
import os

CHROMIUM = os.environ.get("KEYLEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
# No network beyond the page's own origin, no first-run or update chatter.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_problem() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (scripts/dev test installs the dev extra)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing; install Debian's browser: apt-get install -y chromium"
    return None
