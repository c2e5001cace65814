"""The dashboard in headless Chromium against a real `keyledger serve`: totals, chart, rotation, refusals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.api.server import Server, create_workspace
from tests.api.test_answers import issue, verify
from tests.dashboard.dashboard_page import DashboardPage
from tests.timing import inside_one_minute


def wait_for_usage(server: Server, admin: dict[str, Any], totals: dict[str, int]) -> None:
    """Usage is flushed about every second: wait until the API counts every request the test made."""
    ws = admin["key"]["workspace_id"]
    seen: dict[str, int] = {}
    with server.client(admin["secret"]) as client:
        for _ in range(100):
            items = client.get(f"/v1/workspaces/{ws}/usage").json()["items"]
            seen = {item["key_id"]: item["total"] for item in items}
            if all(seen.get(key) == total for key, total in totals.items()):
                return
            time.sleep(0.1)
    raise AssertionError(f"usage never reached {totals}: {seen}")


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %"


def test_admin_sees_usage_rotates_and_revokes_keys(server: Server, dashboard: DashboardPage, tmp_path: Path):
    created = create_workspace(server, "enterprise", requests_per_minute=8, requests_per_day=1000)
    admin = created["admin_key"]
    reader = issue(server, admin, ["read:nodes"], name="web frontend")
    batch = issue(server, admin, ["read:nodes"], name="nightly batch")
    reader_id, batch_id, admin_id = reader["key"]["id"], batch["key"]["id"], admin["key"]["id"]

    inside_one_minute()
    outcomes = [verify(server, reader["secret"], "read:nodes", "GET /nodes")["code"] for _ in range(3)]
    outcomes.append(verify(server, reader["secret"], "read:nodes", "GET /nodes/7")["code"])
    outcomes += [verify(server, reader["secret"], "write:edges", "POST /edges")["code"] for _ in range(2)]
    bursts = [verify(server, batch["secret"], "read:nodes", "GET /nodes")["code"] for _ in range(10)]
    assert outcomes == ["VALID"] * 4 + ["INSUFFICIENT_SCOPE"] * 2
    assert bursts == ["VALID"] * 8 + ["RATE_LIMITED"] * 2  # 8 per minute
    wait_for_usage(server, admin, {reader_id: 6, batch_id: 10})

    dashboard.open().sign_in(admin["secret"])
    dashboard.wait_signed_in()
    page = dashboard.page

    # The workspace: limits and live keys out of 50.
    assert page.inner_text("#ws-plan") == "enterprise"
    assert page.inner_text("#ws-rpm") == "8"
    assert page.inner_text("#ws-rpd") == "1,000"
    assert page.inner_text("#ws-live") == "3 / 50"

    # Per key, for each period: totals, success rate (2xx share), 429s, endpoints, last used; the chart by outcome.
    for period in ("hour", "week", "month", "day"):
        dashboard.choose_period(period)
        assert dashboard.usage_cell(reader_id, "total") == "6", period
        assert dashboard.usage_cell(reader_id, "success-rate") == percent(4, 6) == "66.7 %"
        assert dashboard.usage_cell(reader_id, "rate-limited") == "0"
        assert dashboard.usage_cell(batch_id, "total") == "10"
        assert dashboard.usage_cell(batch_id, "success-rate") == percent(8, 10) == "80.0 %"
        assert dashboard.usage_cell(batch_id, "rate-limited") == "2"
        assert dashboard.usage_cell(admin_id, "total") == "0"
        assert dashboard.usage_cell(admin_id, "success-rate") == "—"
        assert dashboard.chart_counts(reader_id) == {"2xx": 4, "4xx (not 429)": 2}, period
        assert dashboard.chart_counts(batch_id) == {"2xx": 8, "429": 2}, period
    endpoints = dashboard.usage_cell(reader_id, "top-endpoints").splitlines()
    assert endpoints[:3] == ["GET /nodes 3", "POST /edges 2", "GET /nodes/7 1"]
    assert dashboard.usage_cell(reader_id, "last-used").endswith("UTC")
    assert dashboard.usage_cell(admin_id, "last-used") == "—"
    assert page.inner_text("#usage-summary") == f"· 16 requests, {percent(12, 16)} 2xx"

    # Each key's status, scopes, age and rotation due.
    assert dashboard.key_cell(reader_id, "status") == "active"
    assert dashboard.key_cell(reader_id, "scopes") == "read:nodes"
    assert dashboard.key_cell(admin_id, "scopes") == "admin"
    assert dashboard.key_cell(reader_id, "rotation-due") == "no"
    assert dashboard.key_cell(reader_id, "age").endswith((" s", " min"))
    dashboard.screenshot(tmp_path / "dashboard.png")

    # Rotate through the page: asked first, cancel changes nothing.
    dashboard.click_action(reader_id, "rotate")
    assert "Rotate key" in page.inner_text("#confirm-title")
    page.click("#confirm-cancel")
    assert not page.is_visible("#secret-dialog")
    assert verify(server, reader["secret"])["code"] == "VALID"

    dashboard.click_action(reader_id, "rotate")
    page.select_option("#grace", "0")
    page.click("#confirm-ok")
    page.wait_for_selector("#secret-dialog[open]")
    secret = page.inner_text("#new-secret").strip()
    dashboard.screenshot(tmp_path / "new-secret.png")
    assert secret.startswith("kl_") and secret != reader["secret"]
    assert "no longer works" in page.inner_text("#secret-grace")
    rotated = verify(server, secret, "read:nodes", "GET /nodes")
    assert rotated["code"] == "VALID" and rotated["key_id"] == reader_id
    assert verify(server, reader["secret"])["code"] == "EXPIRED"  # grace 0: the old secret stopped

    page.click("#close-secret")
    page.wait_for_selector("#secret-dialog", state="hidden")
    # The dialog's `close` event (which clears the secret) is dispatched after it hides.
    deadline = time.monotonic() + 5  # polled from here: the page's CSP forbids evaluating a string predicate
    while page.inner_text("#new-secret") != "" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert secret not in page.content()  # shown once
    assert page.inner_text("#new-secret") == ""

    # Revoke through the page, confirmed: the key shows revoked and frees a slot.
    dashboard.click_action(batch_id, "revoke")
    page.fill("#revoke-reason", "leaked in a test")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{batch_id}"].status-revoked')
    assert dashboard.key_cell(batch_id, "status") == "revoked"
    assert page.inner_text("#ws-live") == "2 / 50"
    assert verify(server, batch["secret"])["code"] == "REVOKED"

    # The admin key lives in sessionStorage only: a reload keeps the session; no cookie, no secret in any URL.
    assert dashboard.session_secret() == admin["secret"]
    assert page.evaluate("document.cookie") == ""
    page.reload()
    dashboard.wait_signed_in()
    secrets = (admin["secret"], reader["secret"], batch["secret"], secret)
    assert not [url for url in dashboard.requests if any(s in url for s in secrets)]
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_wrong_non_admin_and_revoked_keys_get_a_clear_message(server: Server, dashboard: DashboardPage, tmp_path: Path):
    created = create_workspace(server)
    admin = created["admin_key"]
    reader = issue(server, admin, ["read:nodes"])
    revoked = issue(server, admin, ["admin"])
    with server.client(admin["secret"]) as client:
        response = client.post(f"/v1/workspaces/{admin['key']['workspace_id']}/keys/{revoked['key']['id']}/revoke")
        assert response.status_code == 200
    page = dashboard.open().page

    dashboard.sign_in("kl_this-is-not-a-key")
    message = dashboard.sign_in_error()
    assert "This key cannot sign in" in message
    assert "missing, malformed or unknown" in message

    dashboard.sign_in(reader["secret"])
    page.wait_for_selector("#sign-in-error-title:text('not a workspace admin key')")
    message = dashboard.sign_in_error()
    assert "lacks the scope 'admin'" in message
    dashboard.screenshot(tmp_path / "not-admin.png")

    dashboard.sign_in(revoked["secret"])
    page.wait_for_selector("#sign-in-error-detail:text('revoked')")
    assert "The presented key is revoked" in dashboard.sign_in_error()

    assert page.is_hidden("#dashboard")
    assert dashboard.session_secret() is None  # a refused key is not kept

    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()
    assert page.is_hidden("#sign-in-error")


def test_the_page_is_served_with_a_strict_policy(server: Server):
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/dashboard")
        script = client.get("/dashboard/dashboard.js")
        missing = client.get("/dashboard/secrets.txt")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_an_admin_rotates_then_revokes_its_own_key(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    admin_id = admin["key"]["id"]
    page = dashboard.open().page
    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()

    dashboard.click_action(admin_id, "rotate")
    assert "the key you signed in with" in page.inner_text("#confirm-text")
    page.select_option("#grace", "0")
    page.click("#confirm-ok")
    page.wait_for_selector("#secret-dialog[open]")
    secret = page.inner_text("#new-secret").strip()
    page.click("#close-secret")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{admin_id}"]')

    assert dashboard.session_secret() == secret  # the page moved to the new secret; the old one stopped
    assert verify(server, admin["secret"], "admin")["code"] == "EXPIRED"
    dashboard.refresh()
    assert page.is_visible("#dashboard") and page.is_hidden("#banner")

    with server.client(secret) as client:  # not the last admin key: that one cannot be revoked (SPEC 8.5)
        ws = admin["key"]["workspace_id"]
        assert client.post(f"/v1/workspaces/{ws}/keys", json={"name": "spare", "scopes": ["admin"]}).status_code == 201
    dashboard.click_action(admin_id, "revoke")
    page.click("#confirm-ok")
    assert "You revoked the key you signed in with" in dashboard.sign_in_error()
    assert page.is_hidden("#dashboard")
    assert dashboard.session_secret() is None


def test_an_admin_suspends_and_resumes_a_key_behind_a_confirmation(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    reader = issue(server, admin, ["read:nodes"])
    reader_id = reader["key"]["id"]
    page = dashboard.open().page
    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()

    dashboard.click_action(reader_id, "suspend")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr.status-suspended[data-key-id="{reader_id}"]')
    suspended = verify(server, reader["secret"])["code"]
    dashboard.click_action(reader_id, "resume")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr.status-active[data-key-id="{reader_id}"]')

    assert suspended == "SUSPENDED"
    assert verify(server, reader["secret"])["code"] == "VALID"


def test_an_admin_edits_a_keys_name_owner_and_meta(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    reader = issue(server, admin, ["read:nodes"], name="web", owner_id="cust_1")
    reader_id = reader["key"]["id"]
    page = dashboard.open().page
    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()
    assert dashboard.key_cell(reader_id, "details") == "owner: cust_1"

    dashboard.click_action(reader_id, "edit")
    page.fill("#edit-name", "web (prod)")
    page.fill("#edit-owner", "cust_2")
    page.fill("#edit-meta", '{"plan": "gold"}')
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{reader_id}"] [data-detail="meta"]')
    details = dashboard.key_cell(reader_id, "details")
    dashboard.click_action(reader_id, "edit")
    page.fill("#edit-meta", "[1]")
    page.click("#confirm-ok")
    page.wait_for_selector("#banner:not([hidden])")

    assert details.splitlines() == ["owner: cust_2", 'meta: {"plan":"gold"}']
    assert "meta must be a JSON object" in page.inner_text("#banner")
    answer = verify(server, reader["secret"])
    assert answer["name"] == "web (prod)" and answer["owner_id"] == "cust_2" and answer["meta"] == {"plan": "gold"}
    assert dashboard.errors == []


def test_an_admin_limits_a_key_below_its_plan_and_returns_it_to_the_plan(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    reader = issue(server, admin, ["read:nodes"])
    reader_id = reader["key"]["id"]
    page = dashboard.open().page
    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()

    dashboard.click_action(reader_id, "limits")
    page.fill("#limit-rpm", "7")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{reader_id}"] [data-detail="limits"]')
    shown = dashboard.key_cell(reader_id, "details")
    answer = verify(server, reader["secret"])
    dashboard.click_action(reader_id, "limits")
    page.fill("#limit-rpm", "")
    page.fill("#limit-rpd", "")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{reader_id}"] [data-field="details"]:text-is("—")')

    assert shown == "limits: 7/min, 10,000/day"
    assert answer["ratelimit"]["limit"] == 7
    assert dashboard.errors == []


def test_an_admin_gives_a_key_credits_with_a_refill(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    reader = issue(server, admin, ["read:nodes"])
    reader_id = reader["key"]["id"]
    page = dashboard.open().page
    dashboard.sign_in(admin["secret"])
    dashboard.wait_signed_in()

    dashboard.click_action(reader_id, "credits")
    page.fill("#credits-remaining", "2")
    page.fill("#credits-refill-amount", "10")
    page.select_option("#credits-refill-interval", "day")
    page.click("#confirm-ok")
    page.wait_for_selector(f'#keys-table tr[data-key-id="{reader_id}"] [data-detail="credits"]')
    shown = dashboard.key_cell(reader_id, "details")
    codes = [verify(server, reader["secret"])["code"] for _ in range(3)]

    assert shown == "credits: 2 left, refilled to 10 each day"
    assert codes == ["VALID", "VALID", "USAGE_EXCEEDED"]
    assert dashboard.errors == []


def test_an_imported_key_is_shown_as_imported(server: Server, dashboard: DashboardPage):
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    with server.client(admin["secret"]) as client:
        body = {"name": "legacy", "scopes": ["read:nodes"], "secret": "legacy-dashboard-0123456789"}
        imported = client.post(f"/v1/workspaces/{ws}/keys/import", json=body).json()["key"]
    dashboard.open().sign_in(admin["secret"])
    dashboard.wait_signed_in()

    assert dashboard.key_cell(imported["id"], "details") == "origin: imported (found by its secret's digest)"
    assert verify(server, "legacy-dashboard-0123456789")["code"] == "VALID"
    assert dashboard.errors == []


def test_findings_are_shown_a_suggestion_is_applied_after_confirmation_and_exposure_reported(
    server: Server, dashboard: DashboardPage, tmp_path: Path
):
    admin = create_workspace(server)["admin_key"]
    ws = admin["key"]["workspace_id"]
    wide = issue(server, admin, ["write:nodes", "read:edges"], name="too wide")
    wide_id = wide["key"]["id"]
    with server.client() as client:
        for scope, address in [
            ("read:nodes", "203.0.113.5"),
            ("read:nodes", "203.0.113.5"),
            ("write:edges", "2001:db8::7"),
        ]:
            body = {"key": wide["secret"], "scope": scope, "client_ip": address}
            assert client.post("/v1/verify", json=body).status_code == 200
    wait_for_usage(server, admin, {wide_id: 3})
    dashboard.open().sign_in(admin["secret"])
    dashboard.wait_signed_in()
    page = dashboard.page

    row = f'#findings-table tr[data-kind="unused_scope"][data-key-id="{wide_id}"]'
    page.wait_for_selector(row)
    assert "granted read:edges, write:nodes; needed read:nodes" in page.inner_text(f"{row} [data-field=detail]")
    denied = f'#findings-table tr[data-kind="denied_scope"][data-key-id="{wide_id}"] [data-field=detail]'
    assert page.inner_text(denied).startswith("write:edges: 1 refused, last ")
    assert page.is_visible(f'#findings-table tr[data-kind="unused_key"][data-key-id="{admin["key"]["id"]}"]')
    dashboard.screenshot(tmp_path / "findings.png")

    # Asked first: cancel changes nothing; confirmed, the key's scopes become the suggestion.
    page.click(f"{row} button.apply")
    page.wait_for_selector("#confirm-dialog[open]")
    assert "Narrow the scopes" in page.inner_text("#confirm-title")
    dashboard.screenshot(tmp_path / "narrow-confirm.png")
    page.click("#confirm-cancel")
    assert dashboard.key_cell(wide_id, "scopes") == "read:edges write:nodes"
    page.click(f"{row} button.apply")
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-ok")
    page.wait_for_selector(row, state="detached")
    assert dashboard.key_cell(wide_id, "scopes") == "read:nodes"
    with server.client(admin["secret"]) as client:
        assert client.get(f"/v1/workspaces/{ws}/keys/{wide_id}").json()["scopes"] == ["read:nodes"]
    assert verify(server, wide["secret"], "read:nodes")["code"] == "VALID"
    assert verify(server, wide["secret"], "write:nodes")["code"] == "INSUFFICIENT_SCOPE"

    # The key's exposure report: requests, sources, secrets and scopes over time.
    page.click(f'#keys-table tr[data-key-id="{wide_id}"] button.exposure')
    page.wait_for_selector("body[data-exposure-loaded]")
    assert page.inner_text("#exposure-total") in ("3", "4", "5")  # the two verifications above may have landed
    sources = page.inner_text("#exposure-sources tbody")
    assert "203.0.113.5\t2" in sources and "2001:db8::7\t1" in sources
    scopes = page.inner_text("#exposure-scopes tbody").splitlines()
    assert scopes[0].endswith("read:edges write:nodes") and scopes[-1].endswith("read:nodes")
    assert len(page.query_selector_all("#exposure-secrets tbody tr")) == 1
    dashboard.screenshot(tmp_path / "exposure.png")
    print(f"screenshots in {tmp_path}")
