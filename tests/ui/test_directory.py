"""The console's directory: who is on call (checked against the API at the same moments) and the
services page (ingest URLs, key prefixes, key rotation by admins)."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.core.db import session_scope
from app.integrations.models import Integration

TIME = re.compile(r'<time datetime="([^"]+)">')
ALERT = {
    "version": "4",
    "status": "firing",
    "alerts": [{"status": "firing", "fingerprint": "f1", "labels": {"alertname": "Disk"}}],
}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def section(page: str, attribute: str, value: int) -> str:
    start = page.index(f'{attribute}="{value}"')
    return page[start : page.index("</section>", start)]


def text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def now_line(part: str) -> tuple[str, list[datetime]]:
    """Who the schedule's section says is on call now ("" for nobody), and the times it gives."""
    found = re.search(r'<p class="on-call-now[^"]*" data-now="([^"]*)">(.*?)</p>', part, re.S)
    assert found, part
    return html.unescape(found.group(1)), [
        datetime.fromisoformat(t) for t in TIME.findall(found.group(2))
    ]


def handoffs(part: str) -> list[tuple[str, datetime, datetime]]:
    rows = []
    for row in re.findall(r"<tr data-handoff=[^>]*>(.*?)</tr>", part, re.S):
        who = text(re.findall(r"<td>(.*?)</td>", row, re.S)[0])
        start, end = (datetime.fromisoformat(t) for t in TIME.findall(row))
        rows.append((who, start, end))
    return rows


async def api_answer(api, schedule_id: int, now: datetime) -> tuple[list[str], list[tuple]]:
    """What the API says at the clock's moment: who is on call, and the shifts from now on."""
    on_call = await api.get(f"/v1/schedules/{schedule_id}/on-call")
    assert on_call.status_code == 200, on_call.text
    assert datetime.fromisoformat(on_call.json()["at"]) == now
    shifts = await api.get(
        f"/v1/schedules/{schedule_id}/shifts",
        params={"start": now.isoformat(), "end": (now + timedelta(days=35)).isoformat()},
    )
    assert shifts.status_code == 200, shifts.text
    return [u["full_name"] for u in on_call.json()["users"]], [
        (s["user"]["full_name"], datetime.fromisoformat(s["start"]),
         datetime.fromisoformat(s["end"]))
        for s in shifts.json()["items"]
    ]  # fmt: skip


async def assert_page_matches_api(page: str, api, schedule_id: int, now: datetime) -> None:
    """The page's "on call now" and next handoffs are the API's answer for the same moment."""
    part = section(page, "data-schedule", schedule_id)
    who, times = now_line(part)
    named, shifts = await api_answer(api, schedule_id, now)
    rows = [row for row in handoffs(part) if row[0] != "nobody"]
    if named:
        assert [who] == named
        assert shifts[0][0] == who and shifts[0][1] == now  # the API clips its window at now
        assert times[1] == shifts[0][2]  # until: the end of that shift
        assert rows == shifts[1 : 1 + len(rows)]
    else:
        assert who == ""
        assert rows == shifts[: len(rows)]
    assert rows, "no handoffs to compare"


# ---- on call -------------------------------------------------------------------------------------


async def oncall(browser) -> str:
    answer = await browser.get("/ui/oncall")
    assert answer.status_code == 200, answer.status_code
    return answer.text


async def test_on_call_now_and_the_next_handoffs_follow_the_clock_as_the_api_does(
    harness, factory, signed_in, user
):
    ana = await factory.user(full_name="Ana Weekly")
    ben = await factory.user(full_name="Ben Weekly")
    cy = await factory.user(full_name="Cy Weekly")
    # Weekly, Mondays 09:00 in Berlin (08:00 UTC in winter); the clock starts Monday 2026-01-05
    # 09:00 UTC, an hour into Ana's week. Ben covers a day of it by override.
    weekly = await factory.schedule(
        name="Platform weekly",
        time_zone="Europe/Berlin",
        layers=[{"name": "Week", "user_ids": [ana.id, ben.id, cy.id], "rotation_length": 1,
                 "rotation_unit": "weeks", "start": "2026-01-05T09:00:00", "restrictions": []}],
    )  # fmt: skip
    await factory.override(
        schedule_id=weekly.id,
        user_id=ben.id,
        start_at=utc(2026, 1, 7, 12),
        end_at=utc(2026, 1, 8, 12),
    )
    # Daily at 09:00 UTC since 2026-01-01: the 5th is turn 4, Ben's (turn 1 of three).
    daily = await factory.schedule(name="Database daily", user_ids=[ana.id, ben.id, cy.id])
    # Every four hours from 01:00 UTC: Cy's turn 05:00-09:00 has just ended, Ana's begins.
    hourly = await factory.schedule(
        name="Edge 4-hourly",
        layers=[{"name": "Shifts", "user_ids": [ana.id, cy.id], "rotation_length": 4,
                 "rotation_unit": "hours", "start": "2026-01-01T01:00:00", "restrictions": []}],
    )  # fmt: skip
    browser, _ = await signed_in(user)
    api = harness.make_client(factory.token(user))

    now = harness.clock.now()
    page = await oncall(browser)
    part = section(page, "data-schedule", weekly.id)
    assert "Europe/Berlin" in part
    assert now_line(part) == ("Ana Weekly", [utc(2026, 1, 5, 8), utc(2026, 1, 7, 12)])
    assert "(Mon 09:00 Europe/Berlin)" in part  # the handoff in the schedule's own time
    assert handoffs(part) == [
        ("Ben Weekly", utc(2026, 1, 7, 12), utc(2026, 1, 8, 12)),
        ("Ana Weekly", utc(2026, 1, 8, 12), utc(2026, 1, 12, 8)),
        ("Ben Weekly", utc(2026, 1, 12, 8), utc(2026, 1, 19, 8)),
        ("Cy Weekly", utc(2026, 1, 19, 8), utc(2026, 1, 26, 8)),
        ("Ana Weekly", utc(2026, 1, 26, 8), utc(2026, 2, 2, 8)),
    ]
    part = section(page, "data-schedule", daily.id)
    assert now_line(part) == ("Ben Weekly", [utc(2026, 1, 5, 9), utc(2026, 1, 6, 9)])
    assert [row[0] for row in handoffs(part)] == ["Cy Weekly", "Ana Weekly", "Ben Weekly",
                                                  "Cy Weekly", "Ana Weekly"]  # fmt: skip
    part = section(page, "data-schedule", hourly.id)
    assert now_line(part) == ("Ana Weekly", [utc(2026, 1, 5, 9), utc(2026, 1, 5, 13)])
    assert handoffs(part)[:2] == [
        ("Cy Weekly", utc(2026, 1, 5, 13), utc(2026, 1, 5, 17)),
        ("Ana Weekly", utc(2026, 1, 5, 17), utc(2026, 1, 5, 21)),
    ]
    for schedule in (weekly, daily, hourly):
        await assert_page_matches_api(page, api, schedule.id, now)

    # Across the override's start (and two daily handoffs): Ben now, until the override ends.
    now = harness.clock.advance(days=2, hours=4)
    browser, _ = await signed_in(user)  # the first session and token have expired by now
    await api.aclose()
    api = harness.make_client(factory.token(user))
    page = await oncall(browser)
    part = section(page, "data-schedule", weekly.id)
    assert now_line(part) == ("Ben Weekly", [utc(2026, 1, 7, 12), utc(2026, 1, 8, 12)])
    assert handoffs(part)[0] == ("Ana Weekly", utc(2026, 1, 8, 12), utc(2026, 1, 12, 8))
    part = section(page, "data-schedule", daily.id)
    assert now_line(part) == ("Ana Weekly", [utc(2026, 1, 7, 9), utc(2026, 1, 8, 9)])
    part = section(page, "data-schedule", hourly.id)
    assert now_line(part) == ("Cy Weekly", [utc(2026, 1, 7, 13), utc(2026, 1, 7, 17)])
    for schedule in (weekly, daily, hourly):
        await assert_page_matches_api(page, api, schedule.id, now)
    await api.aclose()


async def test_a_schedule_nobody_covers_says_so(harness, factory, signed_in, user):
    cy = await factory.user(full_name="Cy Cover")
    empty = await factory.schedule(name="Nobody here")
    gaps = await factory.schedule(name="Gaps")
    await factory.override(
        schedule_id=gaps.id, user_id=cy.id, start_at=utc(2026, 1, 6, 10), end_at=utc(2026, 1, 6, 12)
    )
    browser, _ = await signed_in(user)
    api = harness.make_client(factory.token(user))
    page = await oncall(browser)

    part = section(page, "data-schedule", empty.id)
    assert now_line(part) == ("", [])
    assert "Nobody is on call now, nor in the next 36 days." in text(part)
    assert handoffs(part) == []
    assert (await api.get(f"/v1/schedules/{empty.id}/on-call")).json()["users"] == []

    part = section(page, "data-schedule", gaps.id)
    assert now_line(part) == ("", [utc(2026, 1, 6, 10)])
    assert "Nobody is on call now, until 2026-01-06 10:00 UTC" in text(part)
    assert handoffs(part)[0] == ("Cy Cover", utc(2026, 1, 6, 10), utc(2026, 1, 6, 12))
    assert handoffs(part)[1][0] == "nobody"
    await assert_page_matches_api(page, api, gaps.id, harness.clock.now())
    await api.aclose()


async def test_the_on_call_page_escapes_names_and_needs_a_session(
    factory, signed_in, browser_factory, user
):
    mallory = await factory.user(full_name="<img src=x onerror=alert(1)>")
    await factory.schedule(name="<script>alert(2)</script>", user_ids=[mallory.id])
    assert (await browser_factory().get("/ui/oncall")).status_code == 303
    browser, _ = await signed_in(user)
    page = await oncall(browser)
    assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


# ---- services ------------------------------------------------------------------------------------

INGEST_PATHS = {
    "alertmanager": "/v1/alerts/alertmanager",
    "grafana": "/v1/alerts/grafana",
    "generic": "/v1/alerts/generic",
    "elastic": "/v1/alerts/elastic",
    "pagerduty": "/v2/enqueue",
}


async def make_service(admin_api, name: str, **fields) -> dict:
    created = await admin_api.post("/v1/services/", json={"name": name, **fields})
    assert created.status_code == 201, created.text
    return created.json()


async def make_integration(admin_api, service_id: int, kind: str, name: str = "") -> dict:
    created = await admin_api.post(
        f"/v1/services/{service_id}/integrations/", json={"name": name or kind, "kind": kind}
    )
    assert created.status_code == 201, created.text
    return created.json()


async def key_hashes(harness) -> dict[int, str]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return {i.id: i.key_hash for i in await session.scalars(select(Integration))}


async def test_services_show_each_ingest_url_and_key_prefix_never_a_key(
    harness, factory, signed_in, user, admin
):
    admin_api = harness.make_client(factory.token(admin))
    policy = await factory.policy(name="Checkout on-call")
    checkout = await make_service(
        admin_api, "checkout-api", description="Takes the money", escalation_policy_id=policy.id
    )
    quiet = await make_service(admin_api, "quiet-batch")
    await admin_api.put(f"/v1/services/{quiet['id']}", json={"is_active": False})
    made = [await make_integration(admin_api, checkout["id"], kind) for kind in INGEST_PATHS]
    browser, _ = await signed_in(admin)  # integrations are listed to admins, as in the API
    page = (await browser.get("/ui/services")).text

    base = harness.settings.public_base_url
    part = section(page, "data-service", checkout["id"])
    assert "Takes the money" in part and "Checkout on-call" in part
    for integration in made:
        row = part[part.index(f'data-integration="{integration["id"]}"') :]
        row = row[: row.index("</tr>")]
        url = base + INGEST_PATHS[integration["kind"]]
        field = f'id="url-{integration["id"]}"'
        assert re.search(rf'<input type="text" {field} value="{re.escape(url)}" readonly', row)
        assert f'data-copy="url-{integration["id"]}"' in row
        assert f"{integration['key_prefix']}…" in row
        assert integration["key_prefix"] == integration["key"][:8]
    quiet_part = section(page, "data-service", quiet["id"])
    assert "inactive" in quiet_part and "No integrations." in quiet_part
    # Neither a key nor a key's hash is ever on the page.
    for integration in made:
        assert integration["key"] not in page
    for key_hash in (await key_hashes(harness)).values():
        assert key_hash not in page
    assert "Rotate key" in page
    # A plain user sees the services but not their integrations (the API lists those to admins
    # only): no URL, no key prefix, no rotate form; posting one anyway is refused.
    browser, token = await signed_in(user)
    page = (await browser.get("/ui/services")).text
    assert "Takes the money" in section(page, "data-service", checkout["id"])
    assert "Integrations and their keys are shown to admins" in page
    for integration in made:
        assert integration["key_prefix"] not in page and f"url-{integration['id']}" not in page
    assert "Rotate key" not in page and "/rotate" not in page
    before = await key_hashes(harness)
    target = made[0]
    refused = await browser.post(
        f"/ui/services/{checkout['id']}/integrations/{target['id']}/rotate",
        data={"csrf_token": token},
    )
    assert refused.status_code == 403 and "Admins only" in refused.text
    assert await key_hashes(harness) == before
    assert '<script src="/ui/static/copy.js?v=' in page
    script = await browser.get("/ui/static/copy.js")
    assert script.status_code == 200 and "navigator.clipboard" in script.text
    await admin_api.aclose()


async def test_an_admin_rotates_a_key_and_sees_the_new_one_once(harness, factory, signed_in, admin):
    admin_api = harness.make_client(factory.token(admin))
    service = await make_service(admin_api, "payments")
    integration = await make_integration(admin_api, service["id"], "alertmanager", "prod am")
    old_key = integration["key"]
    browser, token = await signed_in(admin)
    rotate = f"/ui/services/{service['id']}/integrations/{integration['id']}/rotate"
    page = (await browser.get("/ui/services")).text
    assert f'action="{rotate}"' in page and "Rotate key" in page

    # Without the session's CSRF token (another site's form), nothing happens.
    before = await key_hashes(harness)
    for data in ({}, {"csrf_token": "forged"}):
        refused = await browser.post(rotate, data=data)
        assert refused.status_code == 403 and "Please try again" in refused.text
    assert await key_hashes(harness) == before

    assert f'name="key_prefix" value="{old_key[:8]}"' in page
    sent = {"csrf_token": token, "key_prefix": old_key[:8]}
    rotated = await browser.post(rotate, data=sent)
    assert rotated.status_code == 200, rotated.text[:500]
    assert rotated.headers["cache-control"] == "no-store"
    assert "Copy it now, it will not be shown again" in rotated.text
    assert "New key for “prod am” (payments)" in rotated.text
    found = re.search(r'<input type="text" id="new-key" value="([^"]+)" readonly', rotated.text)
    assert found
    new_key = found.group(1)
    assert new_key != old_key and rotated.text.count(new_key) == 1
    assert f"{new_key[:8]}…" in rotated.text  # the integration's row shows the new prefix
    assert 'data-copy="new-key"' in rotated.text

    # The same form sent again (a reload of that answer with JavaScript off, a double click)
    # names the old key: nothing changes, and the page says why.
    after = await key_hashes(harness)
    for data in (sent, {"csrf_token": token}):
        again = await browser.post(rotate, data=data)
        assert again.status_code == 409, again.text[:300]
        assert "was not rotated" in again.text and "new-key" not in again.text
        assert again.headers["hx-push-url"] == "/ui/services"
    assert await key_hashes(harness) == after

    # Shown once: the page afterwards has the prefix only.
    later = (await browser.get("/ui/services")).text
    assert new_key not in later and f"{new_key[:8]}…" in later and "new-key" not in later

    # The old key stops working for ingestion; the new one works.
    async with harness.make_client() as sender:
        old = await sender.post(
            "/v1/alerts/alertmanager", json=ALERT, headers={"X-Integration-Key": old_key}
        )
        assert old.status_code == 401, old.text  # an unknown key now
        new = await sender.post(
            "/v1/alerts/alertmanager", json=ALERT, headers={"X-Integration-Key": new_key}
        )
        assert new.status_code == 202, new.text
    # The API agrees on the prefix.
    shown = await admin_api.get(f"/v1/services/{service['id']}/integrations/{integration['id']}")
    assert shown.json()["key_prefix"] == new_key[:8] and shown.json()["key"] is None
    await admin_api.aclose()


async def test_two_submits_in_flight_rotate_once(harness, factory, signed_in, admin):
    admin_api = harness.make_client(factory.token(admin))
    service = await make_service(admin_api, "payments")
    integration = await make_integration(admin_api, service["id"], "alertmanager", "prod am")
    browser, token = await signed_in(admin)
    rotate = f"/ui/services/{service['id']}/integrations/{integration['id']}/rotate"
    sent = {"csrf_token": token, "key_prefix": integration["key"][:8]}
    first, second = await asyncio.gather(
        browser.post(rotate, data=sent), browser.post(rotate, data=sent)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    shown = next(a for a in (first, second) if a.status_code == 200)
    new_key = re.search(r'id="new-key" value="([^"]+)"', shown.text).group(1)
    # The key shown is the one that works.
    async with harness.make_client() as sender:
        answer = await sender.post(
            "/v1/alerts/alertmanager", json=ALERT, headers={"X-Integration-Key": new_key}
        )
        assert answer.status_code == 202, answer.text
    await admin_api.aclose()


async def test_rotating_an_integration_of_another_service_is_not_found(
    harness, factory, signed_in, admin
):
    admin_api = harness.make_client(factory.token(admin))
    one = await make_service(admin_api, "one")
    two = await make_service(admin_api, "two")
    integration = await make_integration(admin_api, one["id"], "generic")
    browser, token = await signed_in(admin)
    before = await key_hashes(harness)
    for path in (
        f"/ui/services/{two['id']}/integrations/{integration['id']}/rotate",
        f"/ui/services/{one['id']}/integrations/999999/rotate",
        f"/ui/services/{one['id']}/integrations/{2**63}/rotate",
    ):
        answer = await browser.post(
            path, data={"csrf_token": token, "key_prefix": integration["key"][:8]}
        )
        assert answer.status_code == 404, path
    assert await key_hashes(harness) == before
    await admin_api.aclose()


async def test_hostile_service_names_are_escaped(harness, factory, signed_in, admin):
    admin_api = harness.make_client(factory.token(admin))
    policy = await factory.policy(name="<b>policy</b>")
    service = await make_service(
        admin_api,
        '<script>alert("s")</script>',
        description="<img src=x onerror=alert(1)>",
        escalation_policy_id=policy.id,
    )
    await make_integration(admin_api, service["id"], "generic", '"><script>alert(3)</script>')
    browser, _ = await signed_in(admin)
    page = (await browser.get("/ui/services")).text
    for raw in ("<script>alert(", "<img src=x", "<b>policy</b>", '"><script>'):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&#34;s&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;policy&lt;/b&gt;" in page
    # In an attribute too (the rotate form's confirmation names the integration).
    assert 'hx-confirm="Rotate the key of &#34;&gt;&lt;script&gt;alert(3)' in page
    await admin_api.aclose()
