"""A page object for the dashboard: what a test does and reads on it, in the page's own words."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TIMEOUT_MS = 10_000


@dataclass
class DashboardPage:
    page: Any  # playwright.sync_api.Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self) -> DashboardPage:
        self.page.goto(f"{self.base_url}/dashboard")
        self.page.wait_for_selector("body[data-ready=true]")
        return self

    def sign_in(self, secret: str) -> None:
        self.page.fill("#admin-key", secret)
        self.page.click("#sign-in-button")

    def wait_signed_in(self) -> None:
        self.page.wait_for_selector("#dashboard:not([hidden])")
        self.page.wait_for_selector("#usage-table tbody tr")

    def sign_in_error(self) -> str:
        self.page.wait_for_selector("#sign-in-error:not([hidden])")
        return str(self.page.inner_text("#sign-in-error"))

    def choose_period(self, period: str) -> None:
        self.page.click(f"[data-period={period}]")
        self.page.wait_for_selector(f"[data-period={period}][aria-pressed=true]")

    def refresh(self) -> None:
        """Press Refresh and wait until the page shows what it fetched."""
        before = self.page.evaluate("document.body.dataset.loadedAt")
        self.page.click("#refresh")
        self.page.wait_for_function("before => document.body.dataset.loadedAt !== before", arg=before)

    def usage_cell(self, key_id: str, name: str) -> str:
        return str(self.page.inner_text(f'#usage-table tr[data-key-id="{key_id}"] [data-field="{name}"]')).strip()

    def key_cell(self, key_id: str, name: str) -> str:
        return str(self.page.inner_text(f'#keys-table tr[data-key-id="{key_id}"] [data-field="{name}"]')).strip()

    def chart_counts(self, key_id: str) -> dict[str, int]:
        """Requests per outcome drawn in a key's chart (summed over its bars)."""
        counts: dict[str, int] = self.page.eval_on_selector_all(
            f'figure[data-key-id="{key_id}"] rect[data-outcome]',
            """rects => rects.reduce((sums, r) => {
                sums[r.dataset.outcome] = (sums[r.dataset.outcome] || 0) + Number(r.dataset.count);
                return sums;
            }, {})""",
        )
        return counts

    def click_action(self, key_id: str, action: str) -> None:
        self.page.click(f'#keys-table tr[data-key-id="{key_id}"] button.{action}')
        self.page.wait_for_selector("#confirm-dialog[open]")

    def session_secret(self) -> str | None:
        value: str | None = self.page.evaluate("sessionStorage.getItem('keyledger.dashboard.secret')")
        return value

    def screenshot(self, path: Any) -> None:
        self.page.screenshot(path=str(path), full_page=True)
