"""The console in a real browser: Debian's Chromium driven by Playwright, against two real
server processes sharing one database (so "live" is proven across processes, not inside one).

Chromium is required, not optional: without /usr/bin/chromium these tests fail and say how to
install it (`make browser`, or `apt-get install chromium`); CI installs it first.

Screenshots of the main pages are written to `artifacts/screenshots/<backend>/` on every run; the
README and docs/console.md show two of them (docs/screenshots/, copied from a run).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import select

from app.core.config import DEFAULT_SECRET_KEY
from app.core.db import create_engine
from app.notifications.models import Notification
from app.notifications.verification import VERIFICATION_EVENT, code_for
from tests.support.console import sign_in_over_http
from tests.support.databases import postgres_database
from tests.support.ports import free_port
from tests.support.processes import CLI, serve, stop
from tests.support.settings import make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long passphrase"
# How long a page may take to show a change made elsewhere. The console polls the timeline about
# twice a second, so changes arrive well inside the 2 s it promises; this bound is generous for
# a loaded CI machine and only ever waited out on failure.
LIVE_WAIT_MS = 10_000
expect.set_options(timeout=LIVE_WAIT_MS)


@dataclass
class World:
    """Two API processes on one database, their users, and an integration that pages."""

    bases: list[str]
    admin_token: str
    admin_email: str
    admin_id: int
    user_email: str
    user_id: int
    key: str
    policy_id: int
    shots: Path

    def api(self, method: str, path: str, *, base: int = 1, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.request(method, self.bases[base] + path, headers=headers, timeout=10, **kwargs)

    def alert(
        self, summary: str, dedup_key: str, *, base: int = 1, severity: str = "critical"
    ) -> int:
        """An alert sent to the *other* process than the browser's (base 1 by default)."""
        sent = httpx.post(
            f"{self.bases[base]}/v1/alerts/generic",
            json={"summary": summary, "severity": severity, "dedup_key": dedup_key},
            headers={"X-Integration-Key": self.key},
            timeout=10,
        )
        assert sent.status_code == 202, sent.text
        return int(sent.json()["incidents"][0]["id"])


@pytest.fixture(scope="module")
def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('browser') / 'console.db'}"
        return
    with postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
        yield url


@pytest.fixture(scope="module")
def world(backend: str, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("servers")
    env = {
        "PATH": str(Path(CLI).parent) + ":/usr/bin:/bin",
        # The servers run this checkout's code (not another one the environment installed).
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database,
        "WORKER_POLL_INTERVAL_SECONDS": "0.2",
        "ACCESS_LOG": "false",
    }
    processes: list[subprocess.Popen[str]] = []
    bases: list[str] = []
    try:
        for number in range(2):
            port = free_port()
            own = env | {"PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
            options = [] if number == 0 else ["--no-migrate"]  # the first one migrated it
            process, base = serve(own, folder, folder / f"server{number}.log", *options, port=port)
            processes.append(process)
            bases.append(base)
        yield _populate(bases, ROOT / "artifacts" / "screenshots" / backend)
    finally:
        for process in processes:
            stop(process)


def _populate(bases: list[str], shots: Path) -> World:
    base = bases[0]

    def signup(email: str, name: str) -> int:
        made = httpx.post(
            f"{base}/v1/auth/signup",
            json={"email": email, "password": PASSWORD, "full_name": name},
        )
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    admin_id = signup("ada@example.com", "Ada Admin")  # the first account: admin
    user_id = signup("bob@example.com", "Bob Responder")
    token = httpx.post(
        f"{base}/v1/auth/login/access-token",
        data={"username": "ada@example.com", "password": PASSWORD},
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    steps = [
        {"delay_minutes": 0, "targets": [{"type": "user", "id": user_id}]},
        {"delay_minutes": 30, "targets": [{"type": "user", "id": user_id}]},
    ]
    policy = httpx.post(
        f"{base}/v1/escalation/policies/",
        json={"name": "Checkout on-call", "steps": steps},
        headers=auth,
    )
    assert policy.status_code == 201, policy.text
    service = httpx.post(
        f"{base}/v1/services/",
        json={"name": "Checkout", "escalation_policy_id": policy.json()["id"]},
        headers=auth,
    )
    assert service.status_code == 201, service.text
    key = httpx.post(
        f"{base}/v1/services/{service.json()['id']}/integrations/",
        json={"name": "Grafana", "kind": "generic"},
        headers=auth,
    ).json()["key"]
    shots.mkdir(parents=True, exist_ok=True)
    return World(
        bases=bases,
        admin_token=token,
        admin_email="ada@example.com",
        admin_id=admin_id,
        user_email="bob@example.com",
        user_id=user_id,
        key=key,
        policy_id=int(policy.json()["id"]),
        shots=shots,
    )


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(`make browser`, or `apt-get install chromium`)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(chromium: Browser, *, width: int = 1280, height: int = 900) -> Page:
    context = chromium.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(LIVE_WAIT_MS)
    return page


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/ui/incidents")
    expect(page).to_have_url(f"{base}/ui/login?next=/ui/incidents")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/ui/incidents")


def test_a_responder_sees_an_alert_arrive_and_works_it_to_resolved(
    world: World, chromium: Browser
) -> None:
    for summary, severity in (
        ("Search p99 latency above 800 ms", "high"),
        ("Disk 85% full on db-2", "medium"),
        ("TLS certificate for api.example.com expires in 14 days", "low"),
    ):
        world.alert(summary, summary.lower().replace(" ", "-"), severity=severity)
    page = new_page(chromium)
    base = world.bases[0]
    sign_in(page, base, world.user_email)
    open_count = page.locator('[data-count="open"] strong')
    before = int(open_count.inner_text())

    # An alert to the other process shows up on this page by itself.
    incident_id = world.alert("Checkout 5xx above 2%", "checkout-5xx")
    row = page.locator(f'tr[data-incident="{incident_id}"]')
    expect(row).to_contain_text("Checkout 5xx above 2%")
    expect(row).to_contain_text("triggered")
    expect(open_count).to_have_text(str(before + 1))
    page.screenshot(path=world.shots / "incidents.png", full_page=True)

    row.get_by_role("link", name="Checkout 5xx above 2%").click()
    expect(page).to_have_url(f"{base}/ui/incidents/{incident_id}")
    # The worker fired step 1 (paging Bob) and step 2 waits.
    expect(page.locator('[data-event-status="executed"]')).to_contain_text("Bob Responder")
    expect(page.locator('[data-event-status="scheduled"]')).to_have_count(1)

    page.get_by_role("button", name="Acknowledge").click()
    expect(page.locator('[data-field="status"]')).to_have_text("acknowledged")
    expect(page.locator('[data-field="escalation"]')).to_contain_text("stopped")
    expect(page.locator('[data-event-status="scheduled"]')).to_have_count(0)
    expect(page.locator('[data-event-status="cancelled"]')).to_have_count(1)
    acknowledged = page.locator('li[data-type="acknowledged"]')
    expect(acknowledged).to_contain_text("by Bob Responder")

    page.get_by_label("Add a comment").fill("Rolled back release 412.")
    page.get_by_role("button", name="Comment").click()
    expect(page.locator(".comment")).to_contain_text("Rolled back release 412.")
    expect(page.locator('li[data-type="commented"]')).to_have_count(1)

    # A change made elsewhere (another alert, through the other process) appears on this page.
    world.alert("Checkout 5xx above 2%", "checkout-5xx")
    expect(page.locator('li[data-type="alert_received"]')).to_have_count(1)
    page.screenshot(path=world.shots / "incident.png", full_page=True)

    page.get_by_role("button", name="Resolve").click()
    expect(page.locator('[data-field="status"]')).to_have_text("resolved")
    expect(page.locator('li[data-type="resolved"]')).to_contain_text("by Bob Responder")
    stored = world.api("GET", f"/v1/incidents/{incident_id}").json()
    assert stored["status"] == "resolved"
    assert stored["resolved_by"] == world.user_id
    page.context.close()


def test_the_list_is_usable_at_a_phone_width(world: World, chromium: Browser) -> None:
    page = new_page(chromium, width=390, height=844)
    sign_in(page, world.bases[0], world.user_email)
    incident_id = world.alert("Phone-width check", "phone")
    row = page.locator(f'tr[data-incident="{incident_id}"]')
    expect(row).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling to reach the incident.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.screenshot(path=world.shots / "incidents-phone.png", full_page=True)
    page.context.close()


def verification_nonce(database: str, address: str) -> str:
    """The nonce of the last code queued to `address`, read from the servers' database (the
    message itself, which shows the code, is never stored)."""

    async def read() -> str:
        engine = create_engine(make_settings(database))
        try:
            async with engine.connect() as connection:
                payload = await connection.scalar(
                    select(Notification.payload)
                    .where(Notification.event == VERIFICATION_EVENT)
                    .where(Notification.address == address)
                    .order_by(Notification.id.desc())
                    .limit(1)
                )
        finally:
            await engine.dispose()
        assert payload is not None, f"no code queued to {address}"
        return str(payload["nonce"])

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, read()).result(timeout=30)


def assert_fits(page: Page, width: int) -> None:
    """Nothing wider than the screen: no sideways scrolling."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_my_page_sets_up_methods_and_rules_at_a_phone_width(
    world: World, database: str, chromium: Browser
) -> None:
    page = new_page(chromium, width=360, height=740)
    base = world.bases[0]
    sign_in(page, base, world.user_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My page").click()
    expect(page).to_have_url(f"{base}/ui/me")
    expect(page.get_by_role("heading", level=1)).to_have_text("My page")
    expect(
        page.get_by_text(
            "With no rules, you are paged by your notification preferences.", exact=False
        )
    ).to_be_visible()
    assert_fits(page, 360)

    # A number that is not one: refused beside its field, as typed.
    page.get_by_label("Type").select_option(label="Text message")
    page.get_by_label("Address").fill("+1 555 0100")
    page.get_by_role("button", name="Add contact method").click()
    expect(page.locator("#method-address-error")).to_contain_text("phone number")
    expect(page.get_by_label("Address")).to_have_value("+1 555 0100")
    assert_fits(page, 360)
    page.get_by_label("Address").fill("+1 415 555 2671")
    page.get_by_label("Label").fill("Mobile")
    page.get_by_role("button", name="Add contact method").click()
    expect(page.get_by_role("status")).to_have_text("Contact method added.")
    method = page.locator("li[data-method]")
    expect(method).to_contain_text("+14155552671")
    expect(method.locator('[data-field="verified"]')).to_have_text("not verified")

    page.get_by_label("Contact method", exact=True).select_option(
        label="Text message +14155552671 (Mobile), not verified"
    )
    page.get_by_label("Delay (minutes after being paged)").fill("2")
    page.get_by_label("Minimum severity").select_option("high")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator('li[data-rule] [data-field="rule"]')).to_have_text(
        "Text message +14155552671 after 2 minutes, only high and critical"
    )

    # Proving the number: a code, a wrong one, the right one.
    page.get_by_role("button", name="Send code to +14155552671").click()
    expect(page.get_by_role("status")).to_contain_text("A code was sent to +14155552671")
    code = code_for(DEFAULT_SECRET_KEY, verification_nonce(database, "+14155552671"))
    field = page.get_by_label("Code sent to +14155552671")
    field.fill(f"{(int(code) + 1) % 1_000_000:06d}")
    page.get_by_role("button", name="Verify +14155552671").click()
    expect(page.locator("[role=alert]")).to_have_text("Wrong code: 4 attempt(s) left for this code")
    assert_fits(page, 360)
    page.get_by_label("Code sent to +14155552671").fill(code)
    page.get_by_role("button", name="Verify +14155552671").click()
    expect(page.get_by_role("status")).to_have_text(
        "Text message +14155552671 is verified: pages go there now."
    )
    expect(method.locator('[data-field="verified"]')).to_have_text("verified")
    assert_fits(page, 360)
    page.screenshot(path=world.shots / "me-phone.png", full_page=True)

    # Deleting asks first.
    page.get_by_role("link", name="Delete Text message +14155552671").click()
    expect(page.get_by_role("heading", name="Delete Text message +14155552671?")).to_be_visible()
    assert_fits(page, 360)
    page.get_by_role("button", name="Delete it").click()
    expect(page.get_by_role("status")).to_have_text(
        "Contact method deleted, and the rules that used it."
    )
    expect(page.locator("li[data-method]")).to_have_count(0)
    assert world.api("GET", f"/v1/users/{world.user_id}/contact-methods").json()["items"] == []
    page.context.close()


def open_new_incident(world: World, chromium: Browser, summary: str) -> tuple[Page, int]:
    """An alert sent to the other process, and its page open in a signed-in responder's tab."""
    incident_id = world.alert(summary, summary.lower().replace(" ", "-"))
    page = new_page(chromium)
    sign_in(page, world.bases[0], world.user_email)
    page.goto(f"{world.bases[0]}/ui/incidents/{incident_id}")
    return page, incident_id


def comment_elsewhere(world: World, incident_id: int, content: str) -> None:
    """A comment made through the other process: open pages refresh their live region."""
    made = world.api("POST", f"/v1/incidents/{incident_id}/comments", json={"content": content})
    assert made.status_code == 201, made.text


def test_keyboard_only_a_responder_can_acknowledge(world: World, chromium: Browser) -> None:
    page, _ = open_new_incident(world, chromium, "Keyboard check")
    # Tab from the top of the page to the Acknowledge button and press Enter.
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Acknowledge":
            break
    else:
        raise AssertionError("Acknowledge cannot be reached with the keyboard")
    page.keyboard.press("Enter")
    expect(page.locator('[data-field="status"]')).to_have_text("acknowledged")
    page.context.close()


def test_a_live_refresh_keeps_the_keyboard_where_it_was(world: World, chromium: Browser) -> None:
    page, incident_id = open_new_incident(world, chromium, "Focus check")
    expect(page.locator(".timeline li").first).to_be_visible()
    button = page.get_by_role("button", name="Acknowledge")
    button.focus()
    button.evaluate("element => element.setAttribute('data-before-refresh', '')")
    comment_elsewhere(world, incident_id, "Looking at it")  # the live region is replaced
    expect(page.locator(".comments")).to_contain_text("Looking at it")
    expect(page.locator("[data-before-refresh]")).to_have_count(0)  # the button was replaced
    # The keyboard is on the new Acknowledge button, so Enter acknowledges.
    assert page.evaluate("document.activeElement.textContent.trim()") == "Acknowledge"
    page.keyboard.press("Enter")
    expect(page.locator('[data-field="status"]')).to_have_text("acknowledged")
    page.context.close()


def test_a_live_refresh_keeps_a_choice_not_yet_sent(world: World, chromium: Browser) -> None:
    page, incident_id = open_new_incident(world, chromium, "Choice check")
    expect(page.locator(".timeline li").first).to_be_visible()
    page.select_option("#assign-user", str(world.admin_id))  # not the default (the reader)
    page.get_by_role("button", name="Assign").focus()
    comment_elsewhere(world, incident_id, "Seen")
    expect(page.locator(".comments")).to_contain_text("Seen")  # the region was replaced
    expect(page.locator("#assign-user")).to_have_value(str(world.admin_id))
    page.keyboard.press("Enter")  # sends the choice that is shown
    expect(page.locator('[data-field="assignees"]')).to_contain_text("Ada Admin")
    assignees = world.api("GET", f"/v1/incidents/{incident_id}").json()["assignees"]
    assert [a["id"] for a in assignees] == [world.admin_id]
    page.context.close()


def test_pages_read_without_javascript(world: World, chromium: Browser) -> None:
    incident_id = world.alert("No-script check", "noscript")
    context = chromium.new_context(java_script_enabled=False)
    page = context.new_page()
    sign_in(page, world.bases[0], world.user_email)
    expect(page.locator(f'tr[data-incident="{incident_id}"]')).to_be_visible()
    page.goto(f"{world.bases[0]}/ui/incidents/{incident_id}")
    page.get_by_role("button", name="Acknowledge").click()  # a plain form post
    expect(page.locator('[data-field="status"]')).to_have_text("acknowledged")
    context.close()


def test_signing_out_ends_the_session(world: World, chromium: Browser) -> None:
    page = new_page(chromium)
    base = world.bases[0]
    sign_in(page, base, world.user_email)
    cookies = page.context.cookies()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/ui/login")
    # The old cookie, put back, no longer opens the console.
    page.context.add_cookies(cookies)
    page.goto(f"{base}/ui/incidents")
    expect(page).to_have_url(f"{base}/ui/login?next=/ui/incidents")
    page.context.close()


def test_an_admin_edits_a_policys_steps(world: World, chromium: Browser) -> None:
    page = new_page(chromium)
    base = world.bases[0]
    sign_in(page, base, world.admin_email)
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(f"{base}/ui/admin/users")
    expect(page.get_by_role("cell", name="bob@example.com")).to_be_visible()
    page.screenshot(path=world.shots / "admin-users.png", full_page=True)
    page.get_by_role("link", name="Escalation policies").click()
    page.get_by_role("link", name="Checkout on-call").click()
    expect(page).to_have_url(f"{base}/ui/admin/policies/{world.policy_id}")
    second = page.locator('fieldset[data-step="2"]')
    second.get_by_label("Delay (minutes)").fill("45")
    # A third step, paging Ada, in the empty row at the end.
    added = page.locator('fieldset[data-step="new"]')
    added.get_by_label("Delay (minutes)").fill("10")
    added.get_by_label("Users").select_option(label="Ada Admin (ada@example.com)")
    added.get_by_label("Notify").check()
    # (A full-page screenshot before the click made the click miss the button: taken after.)
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    page.screenshot(path=world.shots / "admin-policy.png", full_page=True)
    stored = world.api("GET", f"/v1/escalation/policies/{world.policy_id}").json()
    assert [step["delay_minutes"] for step in stored["steps"]] == [0, 45, 10]
    assert stored["steps"][2]["targets"] == [{"type": "user", "id": world.admin_id}]
    page.context.close()


def test_the_audit_log_reads_at_a_phone_width(world: World, chromium: Browser) -> None:
    """Long values (a policy's steps, a schedule's layers) wrap: no sideways scrolling."""
    page = new_page(chromium, width=360, height=740)
    base = world.bases[0]
    sign_in(page, base, world.admin_email)
    page.goto(f"{base}/ui/admin/audit")
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    assert_fits(page, 360)
    page.get_by_label("What").select_option(label="escalation policy")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("li.audit-entry").first).to_contain_text("escalation policy")
    expect(page.locator("table.changes").first).to_contain_text("steps")
    assert_fits(page, 360)
    page.context.close()


def test_the_team_pages_fit_a_phone_width(world: World, chromium: Browser) -> None:
    """A manager's team page (members' forms, a long description, the confirmation step) and the
    list, at 360 px: no sideways scrolling, every control reachable."""
    made = world.api(
        "POST",
        "/v1/teams/",
        json={"name": "Payments and checkout reliability", "description": "x" * 300},
    )
    assert made.status_code == 201, made.text
    team_id = made.json()["id"]
    for user_id, role in ((world.user_id, "manager"), (world.admin_id, "observer")):
        added = world.api(
            "POST", f"/v1/teams/{team_id}/members", json={"user_id": user_id, "role": role}
        )
        assert added.status_code == 201, added.text
    page = new_page(chromium, width=360, height=740)
    base = world.bases[0]
    sign_in(page, base, world.user_email)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Teams").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Teams")
    assert_fits(page, 360)
    page.get_by_role("link", name="My teams").click()
    # The team's link is on both lists: wait for the new one, or the click may land on the old.
    expect(page).to_have_url(f"{base}/ui/teams?mine=1")
    page.get_by_role("link", name="Payments and checkout reliability").click()
    expect(page).to_have_url(f"{base}/ui/teams/{team_id}")
    expect(page.get_by_label("Role of Ada Admin")).to_have_value("observer")
    assert_fits(page, 360)
    page.get_by_label("Role of Ada Admin").select_option("responder")
    page.get_by_role("button", name="Change the role of Ada Admin").click()
    expect(page.get_by_role("status")).to_have_text("Role changed.")
    expect(page.get_by_label("Role of Ada Admin")).to_have_value("responder")
    page.get_by_role("link", name="Remove Ada Admin").click()
    expect(page.get_by_role("heading", name="Remove Ada Admin from Payments")).to_be_visible()
    assert_fits(page, 360)
    page.screenshot(path=world.shots / "team-phone.png", full_page=True)
    page.get_by_role("button", name="Remove Ada Admin").click()
    expect(page.get_by_role("status")).to_have_text("Member removed.")
    expect(page.get_by_label("Role of Ada Admin")).to_have_count(0)
    assert_fits(page, 360)
    page.context.close()
    # An admin's pages: the create form, and the team's settings and delete step.
    page = new_page(chromium, width=360, height=740)
    sign_in(page, base, world.admin_email)
    page.goto(f"{base}/ui/teams")
    expect(page.get_by_role("heading", name="Create a team")).to_be_visible()
    assert_fits(page, 360)
    page.goto(f"{base}/ui/teams/{team_id}?delete=1")
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    assert_fits(page, 360)
    page.screenshot(path=world.shots / "team-admin-phone.png", full_page=True)
    page.context.close()


def test_a_plain_user_does_not_see_the_admin_pages(world: World, chromium: Browser) -> None:
    page = new_page(chromium)
    base = world.bases[0]
    sign_in(page, base, world.user_email)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    for path in ("/ui/admin/users", "/ui/admin/policies", f"/ui/admin/policies/{world.policy_id}"):
        answer = page.goto(base + path)
        assert answer is not None and answer.status == 403
        expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
    page.context.close()


def test_on_call_services_and_analytics_pages(world: World, chromium: Browser) -> None:
    page = new_page(chromium)
    base = world.bases[0]
    sign_in(page, base, world.admin_email)  # integrations are listed to admins
    page.get_by_role("link", name="Services").click()
    copy = page.locator("input[readonly]").first
    expect(copy).to_have_value(f"{base}/v1/alerts/generic")
    page.screenshot(path=world.shots / "services.png", full_page=True)
    page.get_by_role("link", name="On call").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("On call")
    page.screenshot(path=world.shots / "oncall.png", full_page=True)
    page.get_by_role("link", name="Analytics").click()
    expect(
        page.get_by_role("heading", name="Incidents opened per day (UTC dates), by severity")
    ).to_be_visible()
    # The alerts of the other tests, drawn: the summary counts them, the charts are SVG.
    opened = int(page.locator('[data-stat="opened"] strong').inner_text())
    assert opened >= 1
    expect(page.locator("svg[role=img]")).to_have_count(3)
    page.screenshot(path=world.shots / "analytics.png", full_page=True)
    page.context.close()


def test_the_event_stream_names_incidents_changed_by_another_process(world: World) -> None:
    """`/ui/events` itself, over real HTTP: what a page's EventSource reads."""
    base = world.bases[0]
    with httpx.Client(base_url=base, timeout=15) as browser:
        sign_in_over_http(browser, world.user_email, PASSWORD)
        with browser.stream("GET", "/ui/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            # The first event says the stream is listening: a change made from now on is named.
            assert [next(lines) for _ in range(3)] == ["retry: 1000", "event: ready", "data: {}"]
            incident_id = world.alert("Streamed", "streamed")  # through the other process
            seen: list[int] = []
            for line in lines:  # bounded by the client's read timeout (15 s)
                if line.startswith("data: "):
                    seen.extend(json.loads(line[6:])["incidents"])
                    if incident_id in seen:
                        break
            assert incident_id in seen
    # Without a session the stream is refused (a redirect to the login page, not a stream).
    refused = httpx.get(f"{base}/ui/events", timeout=10)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/ui/login")


# ReDoc 2.x shows a Redocly logo it fetches from cdn.redoc.ly in its sidebar (no option turns it
# off); the docs pages' policy refuses it, as it should: the text link stays, the image does not.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


# What each page draws for an operation: Swagger UI's block, ReDoc's heading (ReDoc draws the
# first operations at once and the rest as the reader scrolls).
DOCS_PAGES = [
    ("/docs", ".opblock", "#operations-incidents-create_incident_v1_incidents__post", 20),
    ("/redoc", "h2", 'h2:has-text("Generic JSON")', 5),
]


@pytest.mark.parametrize(("path", "operations", "one", "at_least"), DOCS_PAGES)
def test_the_api_docs_render_with_every_other_host_unreachable(
    world: World, chromium: Browser, path: str, operations: str, one: str, at_least: int
) -> None:
    """Swagger UI and ReDoc from the app's own files: with requests to any other host aborted,
    the operations are drawn and the page's policy refuses nothing it needs."""
    base = world.bases[0]
    context = chromium.new_context()
    elsewhere: list[str] = []

    def local_only(route: Any) -> None:
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(LIVE_WAIT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    answer = page.goto(base + path)
    assert answer is not None and answer.status == 200
    expect(page.locator(one)).to_be_visible()
    assert page.locator(operations).count() >= at_least
    page.wait_for_load_state("networkidle")
    unexpected = [e for e in errors if REDOC_LOGO not in e]
    assert unexpected == [], unexpected
    assert elsewhere == []  # the page asked for nothing elsewhere (a refused logo is not asked)
    context.close()
