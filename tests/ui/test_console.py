"""The console over HTTP in process: sign-in, CSRF, sessions, the incident pages and actions."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select
from starlette.responses import Response

from app.core.actors import Actor
from app.core.db import session_scope
from app.flows import incidents as incident_flow
from app.incidents.models import Incident
from app.ui import auth
from app.ui.models import UiSession
from tests.factories import DEFAULT_PASSWORD
from tests.support.console import csrf_of, sign_in


async def session_rows(harness) -> int:
    async with harness.app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(UiSession)) or 0)


# ---- sign-in -------------------------------------------------------------------------------------


async def test_pages_send_a_stranger_to_the_login_page_and_back_after(
    harness, browser_factory, user
):
    browser = browser_factory()
    answer = await browser.get("/ui/incidents?status=resolved")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=/ui/incidents%3Fstatus%3Dresolved"
    form = await browser.get(answer.headers["location"])
    assert 'name="next" value="/ui/incidents?status=resolved"' in form.text
    signed = await browser.post(
        "/ui/login",
        data={
            "email": user.email,
            "password": DEFAULT_PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "/ui/incidents?status=resolved",
        },
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/ui/incidents?status=resolved"
    cookie = next(
        value for name, value in signed.headers.multi_items() if value.startswith("ims_session=")
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain http in tests; see the production test below
    assert (await browser.get("/ui/incidents")).status_code == 200
    assert await session_rows(harness) == 1


async def test_a_wrong_password_or_a_missing_form_token_signs_nobody_in(
    harness, browser_factory, user
):
    browser = browser_factory()
    form = await browser.get("/ui/login")
    wrong = await browser.post(
        "/ui/login",
        data={"email": user.email, "password": "not it", "csrf_token": csrf_of(form.text)},
    )
    assert wrong.status_code == 401 and "Incorrect email or password" in wrong.text
    # Another site's form cannot sign this browser in: it has not got the login cookie's token.
    stranger = browser_factory()
    forged = await stranger.post(
        "/ui/login",
        data={"email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": "guess"},
    )
    assert forged.status_code == 400 and "form expired" in forged.text
    assert "ims_session" not in str(forged.headers.get_list("set-cookie"))
    assert await session_rows(harness) == 0


async def test_next_never_leads_off_the_console(browser_factory, user):
    for target in ("https://evil.example/", "//evil.example/ui", "/v1/users/", "/ui\\@evil"):
        assert auth.safe_next(target) == "/ui/incidents"
    browser = browser_factory()
    form = await browser.get("/ui/login?next=//evil.example")
    answer = await browser.post(
        "/ui/login",
        data={
            "email": user.email,
            "password": DEFAULT_PASSWORD,
            "csrf_token": csrf_of(form.text),
            "next": "//evil.example",
        },
    )
    assert answer.headers["location"] == "/ui/incidents"


def test_cookies_are_secure_in_production_and_behind_https(settings):
    for values in ({"public_base_url": "https://ims.example.com"}, {"environment": "production"}):
        secured = settings.model_copy(update=values)
        response = Response()
        auth.set_cookie(response, secured, auth.SESSION_COOKIE, "x", max_age=60)
        cookie = response.headers["set-cookie"]
        assert "Secure" in cookie, values
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/ui" in cookie
    assert auth.secure_cookies(settings) is False


async def test_logout_ends_the_session_on_the_server(harness, browser_factory, user):
    browser = browser_factory()
    token = await sign_in(browser, user.email)
    stolen = browser.cookies.get("ims_session")
    out = await browser.post("/ui/logout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert await session_rows(harness) == 0
    # The cookie's value, replayed by someone who copied it, opens nothing.
    replay = browser_factory()
    replay.cookies.set("ims_session", stolen, path="/ui")
    assert (await replay.get("/ui/incidents")).status_code == 303


async def test_logout_needs_the_csrf_token(harness, browser_factory, user):
    browser = browser_factory()
    await sign_in(browser, user.email)
    refused = await browser.post("/ui/logout", data={})
    assert refused.status_code == 403
    assert await session_rows(harness) == 1


async def test_a_password_change_or_deactivation_ends_console_sessions(
    harness, browser_factory, factory, user
):
    browser = browser_factory()
    await sign_in(browser, user.email)
    assert (await browser.get("/ui/incidents")).status_code == 200
    # A password change (through the API) ends the console session too…
    async with harness.make_client(factory.token(user)) as api:
        changed = await api.post(
            "/v1/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "another long passphrase"},
        )
        assert changed.status_code == 200
    assert (await browser.get("/ui/incidents")).status_code == 303
    # …and so does deactivation, for a session made after the change.
    await sign_in(browser, user.email, "another long passphrase")
    assert (await browser.get("/ui/incidents")).status_code == 200
    admin = await factory.user(email="boss@example.com", role="admin")
    async with harness.make_client(factory.token(admin)) as api:
        assert (await api.put(f"/v1/users/{user.id}", json={"is_active": False})).status_code == 200
    assert (await browser.get("/ui/incidents")).status_code == 303


async def test_an_expired_session_asks_to_sign_in_again(harness, browser_factory, user):
    browser = browser_factory()
    await sign_in(browser, user.email)
    harness.clock.advance(timedelta(hours=harness.settings.ui_session_hours, seconds=1))
    assert (await browser.get("/ui/incidents")).status_code == 303


async def test_bearer_tokens_and_cookies_do_not_stand_in_for_each_other(
    harness, browser_factory, user, user_client
):
    # The API's token does not open the console…
    answer = await user_client.get("/ui/incidents")
    assert answer.status_code == 303
    # …and the console's cookie does not authorise the API (it is not even sent there: Path=/ui).
    browser = browser_factory()
    await sign_in(browser, user.email)
    browser.cookies.set("ims_session", browser.cookies.get("ims_session"), path="/")
    assert (await browser.get("/v1/incidents/")).status_code == 401


# ---- CSRF on actions -----------------------------------------------------------------------------


async def test_actions_need_the_sessions_csrf_token(harness, signed_in, factory, user):
    incident = await factory.incident(title="Disk full")
    browser, token = await signed_in(user)
    url = f"/ui/incidents/{incident.id}/acknowledge"
    assert (await browser.post(url, data={})).status_code == 403
    assert (await browser.post(url, data={"csrf_token": "x" + token})).status_code == 403
    # Another user's token does not do either.
    other = await factory.user(email="other@example.com")
    _, other_token = await signed_in(other)
    assert (await browser.post(url, data={"csrf_token": other_token})).status_code == 403
    page = await browser.get(f"/ui/incidents/{incident.id}")
    assert 'data-field="status">triggered<' in page.text
    # The header htmx sends works as well as the form field.
    done = await browser.post(url, headers={"X-CSRF-Token": token})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/incidents/{incident.id}"
    page = await browser.get(f"/ui/incidents/{incident.id}")
    assert 'data-field="status">acknowledged<' in page.text


# ---- the list ------------------------------------------------------------------------------------


async def test_the_list_shows_open_incidents_with_counts_and_filters(
    harness, signed_in, factory, user
):
    api = await factory.service(name="API")
    web = await factory.service(name="Web")
    await factory.incident(title="API down", service_id=api.id, severity="critical")
    await factory.incident(title="Web slow", service_id=web.id, severity="low")
    await factory.incident(title="Old one", status="resolved")
    snoozed = await factory.incident(title="Snoozed one", status="snoozed")
    mine = await factory.incident(title="Mine to fix", status="acknowledged")
    browser, token = await signed_in(user)
    assert (
        await browser.post(
            f"/ui/incidents/{mine.id}/assign", data={"csrf_token": token, "user_id": str(user.id)}
        )
    ).status_code == 303

    def titles(html: str) -> list[str]:
        return re.findall(r'<a href="/ui/incidents/\d+">([^<]+)</a>', html)

    page = await browser.get("/ui/incidents")
    assert sorted(titles(page.text)) == ["API down", "Mine to fix", "Snoozed one", "Web slow"]
    counts = dict(re.findall(r'data-count="(\w+)">\w+ <strong>(\d+)</strong>', page.text))
    assert counts == {
        "open": "4",
        "triggered": "2",
        "acknowledged": "1",
        "snoozed": "1",
    }  # resolved ones are not counted (see app/ui/incidents.py)
    checks = {
        "status=resolved": ["Old one"],
        "status=snoozed": ["Snoozed one"],
        "severity=critical": ["API down"],
        f"service={web.id}": ["Web slow"],
        "mine=1": ["Mine to fix"],
        "q=slow": ["Web slow"],
        "status=all&q=one": ["Old one", "Snoozed one"],
    }
    for query, expected in checks.items():
        answer = await browser.get(f"/ui/incidents?{query}")
        assert answer.status_code == 200, query
        assert sorted(titles(answer.text)) == expected, query
    assert snoozed.id  # listed above by its title


async def test_the_list_pages_through_many_and_survives_a_bad_cursor(signed_in, factory, user):
    for number in range(55):
        await factory.incident(title=f"Incident {number:02d}")
    browser, _ = await signed_in(user)
    first = await browser.get("/ui/incidents")
    assert first.text.count('<tr data-incident="') == 50
    older = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert older
    second = await browser.get(older.group(1).replace("&amp;", "&"))
    assert second.text.count('<tr data-incident="') == 5
    assert "Incident 00" in second.text and "Incident 00" not in first.text
    junk = await browser.get("/ui/incidents?cursor=nonsense")
    assert junk.status_code == 200 and junk.text.count('<tr data-incident="') == 50


async def test_bad_filters_get_a_page_saying_so_not_an_error(signed_in, user):
    browser, _ = await signed_in(user)
    for query in ("status=bogus", "severity=urgent", "service=abc", "q=" + "x" * 300):
        answer = await browser.get(f"/ui/incidents?{query}")
        assert answer.status_code == 400, query
        assert "text/html" in answer.headers["content-type"]
        assert "Bad request" in answer.text


async def test_what_people_typed_is_escaped(signed_in, factory, user):
    await factory.incident(title="<script>alert(1)</script>", labels={"<b>": '"x"'})
    browser, _ = await signed_in(user)
    page = await browser.get("/ui/incidents")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# ---- one incident --------------------------------------------------------------------------------


async def test_a_responder_works_an_incident_from_its_page(harness, signed_in, factory, user):
    helper = await factory.user(email="helper@example.com", full_name="Hal Helper")
    incident = await factory.incident(title="Checkout errors", labels={"env": "prod"})
    browser, token = await signed_in(user)
    base = f"/ui/incidents/{incident.id}"

    async def act(action: str, **fields: str) -> None:
        answer = await browser.post(f"{base}/{action}", data={"csrf_token": token, **fields})
        assert answer.status_code == 303, (action, answer.text[:500])

    await act("acknowledge")
    await act("assign", user_id=str(helper.id))
    await act("comment", content="Rolled back the deploy.\n<b>not bold</b>")
    await act("snooze", minutes="60")
    page = (await browser.get(base)).text
    assert 'data-field="status">snoozed<' in page
    assert "Hal Helper (responder)" in page
    assert "Rolled back the deploy." in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert "env=prod" in page
    await act("unsnooze")
    await act("resolve", note="fixed by rollback")
    page = (await browser.get(base)).text
    assert 'data-field="status">resolved<' in page
    kinds = [k for k in re.findall(r'<li data-type="(\w+)">', page) if k != "policy_applied"]
    # Newest first: every change the page made is on the timeline, with who made it (ending the
    # snooze started escalation again: policy_applied, by the system).
    assert kinds[:6] == [
        "resolved",
        "unsnoozed",
        "snoozed",
        "commented",
        "assigned",
        "acknowledged",
    ]
    assert "note: fixed by rollback" in page
    assert page.count(f"by {user.full_name}") >= 6
    await act("reopen")
    assert 'data-field="status">triggered<' in (await browser.get(base)).text


async def test_a_refused_action_says_why_and_changes_nothing(harness, signed_in, factory, user):
    incident = await factory.incident(title="Gone", status="resolved")
    browser, token = await signed_in(user)
    answer = await browser.post(
        f"/ui/incidents/{incident.id}/acknowledge", data={"csrf_token": token}
    )
    assert answer.status_code == 409
    assert 'role="alert"' in answer.text and "resolved" in answer.text
    empty = await browser.post(
        f"/ui/incidents/{incident.id}/comment", data={"csrf_token": token, "content": "   "}
    )
    assert empty.status_code == 400 and "needs some text" in empty.text
    odd = await browser.post(
        f"/ui/incidents/{incident.id}/snooze", data={"csrf_token": token, "minutes": "7"}
    )
    assert odd.status_code in (400, 409)
    assert await factory.timeline_types(incident.id) == ["created"]
    unknown = await browser.post(f"/ui/incidents/{incident.id}/explode", data={"csrf_token": token})
    assert unknown.status_code == 404
    missing = await browser.get("/ui/incidents/999999")
    assert missing.status_code == 404 and "Incident 999999 not found" in missing.text


async def test_the_page_shows_who_was_paged_and_how_delivery_went(
    harness, signed_in, factory, user
):
    incident = await factory.incident(title="Paged")
    event = await factory.escalation_event(
        incident_id=incident.id, status="executed", notified_user_ids=[user.id]
    )
    await factory.notification(
        incident_id=incident.id,
        escalation_event_id=event.id,
        user_id=user.id,
        channel="email",
        status="sent",
    )
    await factory.notification(
        incident_id=incident.id,
        escalation_event_id=event.id,
        user_id=user.id,
        channel="sms",
        status="failed",
        attempts=5,
        last_error="HTTP 500 from the SMS gateway",
    )
    browser, _ = await signed_in(user)
    page = (await browser.get(f"/ui/incidents/{incident.id}")).text
    row = re.search(r'<tr data-event-status="executed">(.*?)</tr>', page, re.S)
    assert row, page
    assert user.full_name in row.group(1)
    assert f"email → {user.full_name}: sent" in row.group(1)
    assert f"sms → {user.full_name}: failed (5 tries)" in row.group(1)
    assert "HTTP 500 from the SMS gateway" in row.group(1)


# ---- headers and files ---------------------------------------------------------------------------


async def test_pages_load_only_their_own_scripts(signed_in, user, browser_factory):
    browser, _ = await signed_in(user)
    page = await browser.get("/ui/incidents")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "form-action 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    scripts = re.findall(r'<script src="([^"]+)"', page.text)
    assert scripts and all(src.startswith("/ui/static/") for src in scripts)
    for src in scripts:
        asset = await browser.get(src)
        assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
        assert asset.headers["cache-control"] == "public, max-age=86400"
    htmx = await browser.get(next(src for src in scripts if "htmx" in src))
    assert "htmx" in htmx.text and len(htmx.text) > 10_000


# ---- time zones ----------------------------------------------------------------------------------


async def test_times_are_shown_in_the_readers_time_zone(harness, factory, signed_in, user):
    # The frozen clock stands at 2026-01-05 09:00 UTC: 10:00 in Berlin (CET), 20:00 in Sydney
    # (AEDT, summer there); the exact UTC moment stays in <time datetime>.
    incident = await factory.incident(title="Disk full", created_at=harness.clock.now())
    berlin = await factory.user(email="b@example.com", timezone="Europe/Berlin")
    sydney = await factory.user(email="s@example.com", timezone="Australia/Sydney")
    for reader, shown, zone in (
        (user, "2026-01-05 09:00 UTC", "UTC"),
        (berlin, "2026-01-05 10:00 CET", "Europe/Berlin"),
        (sydney, "2026-01-05 20:00 AEDT", "Australia/Sydney"),
    ):
        browser, _ = await signed_in(reader)
        html = (await browser.get(f"/ui/incidents/{incident.id}")).text
        assert f"<dt>Opened</dt><dd>{shown} (" in html, reader.email
        assert 'datetime="2026-01-05T09:00:00+00:00"' in html
        assert f'title="Times are shown in this time zone">{zone}</small>' in html
        oncall = (await browser.get("/ui/oncall")).text
        assert f"Now: {shown}. Times in your time zone ({zone})" in oncall
    # A snooze in the timeline reads in the reader's zone too.
    new_york = await factory.user(email="ny@example.com", timezone="America/New_York")
    browser, token = await signed_in(new_york)
    snoozed = await browser.post(
        f"/ui/incidents/{incident.id}/snooze", data={"csrf_token": token, "minutes": "60"}
    )
    assert snoozed.status_code in (200, 303)
    html = (await browser.get(f"/ui/incidents/{incident.id}")).text
    assert html.count("until 2026-01-05 05:00 EST") == 2  # the header and the timeline entry
    # A zone this system cannot load (an old row: the API validates zones) reads as UTC.
    odd = await factory.user(email="odd@example.com", timezone="America")
    browser, _ = await signed_in(odd)
    answer = await browser.get(f"/ui/incidents/{incident.id}")
    assert answer.status_code == 200 and "<dt>Opened</dt><dd>2026-01-05 09:00 UTC (" in answer.text
    # In July Berlin is on summer time.
    harness.clock.set(harness.clock.now().replace(month=7))
    browser, _ = await signed_in(berlin)
    assert "Now: 2026-07-05 11:00 CEST." in (await browser.get("/ui/oncall")).text


# ---- declaring an incident -----------------------------------------------------------------------


async def test_a_responder_declares_an_incident_and_it_escalates(
    harness, factory, signed_in, user, user_client
):
    ben = await factory.user(full_name="Ben Oncall")
    policy = await factory.policy(
        name="page ben",
        steps=[{"delay_minutes": 5, "targets": [{"type": "user", "id": ben.id}], "actions": []}],
    )
    service = await factory.service(name="checkout", escalation_policy_id=policy.id)
    browser, token = await signed_in(user)
    listing = (await browser.get("/ui/incidents")).text
    assert 'href="/ui/incidents/new"' in listing
    form = (await browser.get("/ui/incidents/new")).text
    assert f'<option value="{service.id}">checkout</option>' in form
    answer = await browser.post(
        "/ui/incidents/new",
        data={
            "csrf_token": token,
            "title": "Customers report failed payments",
            "severity": "critical",
            "service": str(service.id),
            "description": "Support has 12 tickets since 09:00",
        },
    )
    assert answer.status_code == 303
    incident_id = int(answer.headers["location"].rsplit("/", 1)[1])
    page = (await browser.get(answer.headers["location"])).text
    assert "Customers report failed payments" in page and "Support has 12 tickets" in page
    # As the API would have opened it: by this user, triggered, its policy's first step due.
    shown = (await user_client.get(f"/v1/incidents/{incident_id}")).json()
    assert (shown["status"], shown["severity"], shown["service_id"]) == (
        "triggered", "critical", service.id,
    )  # fmt: skip
    timeline = (await user_client.get(f"/v1/incidents/{incident_id}/timeline")).json()
    created = next(e for e in timeline["items"] if e["type"] == "created")
    assert (created["actor"]["type"], created["actor"]["id"]) == ("user", user.id)
    steps = (await user_client.get(f"/v1/incidents/{incident_id}/escalation-events")).json()
    assert [(s["step"], s["status"]) for s in steps["items"]] == [(1, "scheduled")]


async def test_a_refused_declaration_keeps_what_was_typed(harness, factory, signed_in, user):
    browser, token = await signed_in(user)
    for data, status, reason in (
        ({"title": "  ", "severity": "high"}, 422, "title"),
        ({"title": "x", "severity": "apocalyptic"}, 422, "severity"),
        ({"title": "x", "severity": "high", "service": "987654321"}, 422, "does not exist"),
        ({"title": "x", "severity": "high", "service": "abc"}, 422, "must be a number"),
        ({"title": "x", "severity": "high", "service": "²"}, 422, "must be a number"),
        ({"title": "x" * 501, "severity": "high"}, 422, "title"),
    ):
        sent = {"csrf_token": token, "description": "<b>kept</b>", **data}
        answer = await browser.post("/ui/incidents/new", data=sent)
        assert answer.status_code == status, (data, answer.status_code)
        assert reason in answer.text.lower(), (data, answer.text[:2000])
        assert "&lt;b&gt;kept&lt;/b&gt;</textarea>" in answer.text  # escaped, shown again
    async with harness.app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Incident)) == 0


async def test_the_timeline_says_how_a_person_acted_from_a_page(harness, signed_in, factory, user):
    """An acknowledgement by a text reply reads "by Uma User via text reply"."""
    incident = await factory.incident(title="Queue stuck")
    async with session_scope(harness.app.state.sessionmaker) as session:
        stored = await session.get(Incident, incident.id)
        await incident_flow.acknowledge(
            session, incident=stored, actor=Actor.of(user, via="sms"), now=harness.clock.now()
        )
    browser, _ = await signed_in(user)
    page = (await browser.get(f"/ui/incidents/{incident.id}")).text
    assert f"by {user.full_name} via text reply</span>" in page
