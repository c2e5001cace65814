"""The dashboard's tests: one keyledger API on SQLite per module, and a headless Chromium when one is needed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from keyledger.settings import Settings
from tests.api.server import Server
from tests.backends import require
from tests.dashboard.browser import CHROMIUM, CHROMIUM_ARGS, chromium_problem
from tests.dashboard.dashboard_page import DashboardPage


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("dashboard")
    running = Server(Settings(database_url=f"sqlite:///{folder / 'keyledger.db'}"), folder / "server.log").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require("Chromium", chromium_problem())
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as error:
            require("Chromium", f"{CHROMIUM} did not start: {str(error).strip()[:300]}")
            raise
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def dashboard(browser: Any, server: Server) -> Iterator[DashboardPage]:
    """A fresh browser context (its own sessionStorage) on the dashboard; checks what the page fetched."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = DashboardPage(context.new_page(), server.url)
    try:
        yield page
    finally:
        context.close()
    assert not page.errors, f"the page threw: {page.errors}"
    foreign = [url for url in page.requests if not url.startswith(f"{server.url}/") and not url.startswith("data:")]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
