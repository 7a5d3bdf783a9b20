"""Defects a review found in the console, each kept as a test (each failed before its fix)."""

from __future__ import annotations

import asyncio

from sqlalchemy import insert

from app.incidents.models import TimelineEntry
from app.ui.live import BATCH, ChangeFeed
from tests.support.console import csrf_of


async def _entries(sessionmaker, incident_id: int, now, count: int) -> None:
    rows = [
        {
            "incident_id": incident_id,
            "type": "commented",
            "actor_type": "system",
            "actor_id": None,
            "actor_name": "system",
            "data": {},
            "created_at": now,
        }
        for _ in range(count)
    ]
    async with sessionmaker() as session:
        await session.execute(insert(TimelineEntry), rows)
        await session.commit()


async def test_concurrent_first_listeners_start_one_poller(harness):
    """Pages reconnecting together (a restart: EventSource retries after 1 s) must not each
    start a polling task: docs/console.md promises one query per process."""
    feed = ChangeFeed(harness.app.state.sessionmaker, interval=0.05)  # type: ignore[attr-defined]
    entered = asyncio.Event()
    release = asyncio.Event()
    ready = 0

    async def page() -> None:
        nonlocal ready
        async with feed.listen():
            ready += 1
            if ready == 20:
                entered.set()
            await release.wait()

    pages = [asyncio.create_task(page()) for _ in range(20)]
    await asyncio.wait_for(entered.wait(), 10)
    pollers = [t for t in feed._readers if not t.done()]
    release.set()
    await asyncio.gather(*pages)
    await feed.close()
    assert len(pollers) == 1, f"{len(pollers)} pollers for one feed"


async def test_a_listener_after_an_idle_spell_hears_new_changes_promptly(harness, factory, clock):
    """When no page listened for a while, the feed resumes from its old cursor and replays
    everything written meanwhile, BATCH rows a poll, before a new change gets through."""
    sessionmaker = harness.app.state.sessionmaker  # type: ignore[attr-defined]
    old = await factory.incident(title="Changed while nobody watched")
    fresh = await factory.incident(title="Changed now")
    feed = ChangeFeed(sessionmaker, interval=3600)  # polled by hand
    async with feed.listen():
        pass  # a page came and went: the cursor stays
    await _entries(sessionmaker, old.id, clock.now(), 5 * BATCH)  # a night of alerts
    async with feed.listen() as listener:
        await _entries(sessionmaker, fresh.id, clock.now(), 1)
        await feed.poll()
        ids = listener.take()
    await feed.close()
    assert ids == [fresh.id], f"first poll after the idle spell announced {ids}"


async def test_a_refused_boosted_action_does_not_leave_the_post_url_in_history(
    harness, factory, admin, signed_in
):
    """htmx pushes a boosted form's URL when the answer is not a redirect; a refused action
    answers 4xx at /ui/incidents/{id}/{action}, which the address bar then shows: a reload
    (GET) is a JSON 405, and console.js refetches that URL, so the page stops updating."""
    incident = await factory.incident(title="Refused")
    client, token = await signed_in(admin)
    answer = await client.post(
        f"/ui/incidents/{incident.id}/snooze",
        data={"minutes": "7"},
        headers={"HX-Request": "true", "HX-Boosted": "true", "X-CSRF-Token": token},
    )
    assert answer.status_code == 400
    pushed = answer.headers.get("HX-Push-Url") or answer.headers.get("HX-Replace-Url")
    assert pushed == f"/ui/incidents/{incident.id}", "the POST URL ends up in the address bar"
    reload = await client.get(f"/ui/incidents/{incident.id}/snooze")
    assert reload.headers["content-type"].startswith("text/html"), reload.text


async def test_unknown_console_paths_answer_html(harness, admin, signed_in):
    client, _ = await signed_in(admin)
    for path in ("/ui/nope", "/ui/admin/users/1"):
        answer = await client.get(path)
        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html"), (path, answer.text)


async def test_a_plain_user_sees_only_their_own_deliveries_as_in_the_api(
    harness, factory, admin, user, signed_in
):
    """GET /v1/incidents/{id}/notifications shows a plain user their own deliveries only; the
    console's incident page shows every delivery, with recipients and provider errors."""
    from app.notifications.models import Notification

    incident = await factory.incident(title="Paged")
    sessionmaker = harness.app.state.sessionmaker  # type: ignore[attr-defined]
    async with sessionmaker() as session:
        columns = {c.name for c in Notification.__table__.columns}
        row = {
            "key": "review-1", "incident_id": incident.id, "user_id": admin.id, "channel": "email",
            "address": "admin-private@example.com", "event": "escalated", "status": "failed",
            "attempts": 3, "last_error": "550 mailbox admin-private@example.com unavailable",
            "created_at": harness.clock.now(), "updated_at": harness.clock.now(),
            "next_attempt_at": harness.clock.now(), "payload": {}, "subject": "s", "body": "b",
        }  # fmt: skip
        await session.execute(
            insert(Notification).values(**{k: v for k, v in row.items() if k in columns})
        )
        await session.commit()
    api = harness.make_client(factory.token(user))
    listed = await api.get(f"/v1/incidents/{incident.id}/notifications")
    assert listed.status_code == 200 and listed.json()["items"] == []
    client, _ = await signed_in(user)
    page = await client.get(f"/ui/incidents/{incident.id}")
    assert "delivery-failed" not in page.text, "another user's failed delivery is listed"


async def test_services_page_hides_integrations_from_plain_users_as_the_api_does(
    harness, factory, admin, user, signed_in
):
    service = await factory.service(name="Checkout")
    api = harness.make_client(factory.token(admin))
    made = await api.post(
        f"/v1/services/{service.id}/integrations/", json={"name": "am", "kind": "alertmanager"}
    )
    assert made.status_code == 201, made.text
    plain = harness.make_client(factory.token(user))
    assert (await plain.get(f"/v1/services/{service.id}/integrations/")).status_code == 403
    client, _ = await signed_in(user)
    page = await client.get("/ui/services")
    assert made.json()["key_prefix"] not in page.text


async def test_a_stream_that_fails_to_start_leaves_no_listener_behind(harness):
    """listen() adds the listener before the first (awaited) database read and only removes it
    in a `finally` that read is outside of: a database error, or the page closing (cancellation)
    while it runs, leaves a listener that keeps the poller alive and collects ids for ever."""
    feed = ChangeFeed(harness.app.state.sessionmaker, interval=0.05)  # type: ignore[attr-defined]

    async def down() -> None:
        raise ConnectionError("database restarting")

    feed._start_cursor = down  # type: ignore[method-assign]
    try:
        async with feed.listen():
            pass
    except ConnectionError:
        pass
    leaked = len(feed.listeners)
    await feed.close()
    assert leaked == 0, f"{leaked} listener(s) left behind"


async def test_an_open_stream_ends_when_its_user_is_deactivated(
    harness, factory, admin, user, signed_in, monkeypatch
):
    """The session is checked again at each keep-alive: a deactivated (or signed-out) user's
    open stream ends instead of telling them about changes until it would have ended anyway."""
    from app.ui import router as console

    monkeypatch.setattr(console, "KEEPALIVE_SECONDS", 0.1)
    client, _ = await signed_in(user)
    stream = asyncio.create_task(client.get("/ui/events"))
    await asyncio.sleep(0.3)  # the stream is open (the transport answers when it ends)
    assert not stream.done()
    async with harness.make_client(factory.token(admin)) as api:
        assert (await api.put(f"/v1/users/{user.id}", json={"is_active": False})).status_code == 200
    answer = await asyncio.wait_for(stream, timeout=10)  # far less than the 60 s a stream lasts
    assert answer.status_code == 200 and answer.text.startswith("retry: 1000")


async def test_a_stop_signal_ends_every_stream_of_the_process(harness):
    """What the server's stop-signal handler calls (app.core.serving): open streams end, and so does
    any stream opened afterwards, before the app's shutdown runs."""
    from app.ui.live import on_exit_signal

    feed: ChangeFeed = harness.app.state.change_feed  # type: ignore[attr-defined]
    async with feed.listen() as listener:
        on_exit_signal()
        await asyncio.wait_for(listener.changed.wait(), 5)
        assert listener.closed
    async with feed.listen() as late:
        assert late.closed


async def test_the_sign_in_forms_token_must_be_one_this_server_signed(
    harness, browser_factory, user
):
    """Login CSRF by double submit alone trusts any cookie: one planted by another site (a
    sibling subdomain can set cookies) with the same value in a forged form signed the browser
    in as the attacker. The token must carry this server's signature and be fresh."""
    from tests.factories import DEFAULT_PASSWORD

    form = {"email": user.email, "password": DEFAULT_PASSWORD}
    planted = [
        "attacker-chosen-value",
        "nonce.1767603600.00000000000000000000000000000000",  # the shape, not the signature
    ]
    for token in planted:
        browser = browser_factory()
        browser.cookies.set("ims_login_csrf", token)
        answer = await browser.post("/ui/login", data=form | {"csrf_token": token})
        assert answer.status_code != 303 and "ims_session" not in answer.cookies, token
        assert "The form expired" in answer.text
    browser = browser_factory()
    issued = csrf_of((await browser.get("/ui/login")).text)
    harness.clock.advance(hours=1, seconds=1)  # a signed token, an hour old
    stale = await browser.post("/ui/login", data=form | {"csrf_token": issued})
    assert stale.status_code != 303 and "The form expired" in stale.text
    fresh = csrf_of(stale.text)  # the page it answers with carries a new one
    # A token of ours, planted by a sibling site with its own form: the browser says where the
    # form was posted from.
    sibling = [
        {"Origin": "https://evil.example.com"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
        {"Origin": "null", "Sec-Fetch-Site": "same-site"},
    ]
    for headers in sibling:
        planted = await browser.post(
            "/ui/login", data=form | {"csrf_token": fresh}, headers=headers
        )
        assert planted.status_code != 303 and "The form expired" in planted.text, headers
        fresh = csrf_of(planted.text)
    # Our own page sends no referrer, so its browser says Origin: null, and same-origin.
    ours = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    signed_in = await browser.post("/ui/login", data=form | {"csrf_token": fresh}, headers=ours)
    assert signed_in.status_code == 303
