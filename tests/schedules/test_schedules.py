"""Schedules through the API: who is on call, shifts, overrides, calendars, escalation targets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from icalendar import Calendar
from sqlalchemy import select

from app.core.actors import Actor
from app.core.db import session_scope
from app.escalation import policies as policy_service
from app.escalation.models import EscalationEvent, EscalationPolicy
from app.escalation.policy import Conditions, steps_of
from app.notifications.models import Notification
from app.schedules import service as schedule_service
from tests.factories import DEFAULT_PASSWORD

SCHEDULES = "/v1/schedules/"
BERLIN_DAILY = {
    "name": "Primary", "time_zone": "Europe/Berlin",
    "layers": [{"name": "days", "user_ids": [], "rotation_length": 1, "rotation_unit": "days",
                "start": "2026-03-27T09:00:00", "restrictions": []}],
}  # fmt: skip


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# The tests' clock starts at 2026-01-05 09:00 UTC (10:00 in Berlin); a schedule starting on
# 1 January at 09:00 local has handed over four times by then.
JANUARY = dict(BERLIN_DAILY["layers"][0], start="2026-01-01T09:00:00")


async def make_schedule(client, *user_ids, **fields):
    body = {**BERLIN_DAILY, **fields}
    if user_ids:
        body["layers"] = [dict(body["layers"][0], user_ids=list(user_ids)), *body["layers"][1:]]
    response = await client.post(SCHEDULES, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def on_call(client, schedule_id, at):
    response = await client.get(f"{SCHEDULES}{schedule_id}/on-call", params={"at": at})
    assert response.status_code == 200, response.text
    return [u["id"] for u in response.json()["users"]]


class TestSchedules:
    async def test_create_read_update_and_history(self, admin_client, user_client, admin, user):
        created = await make_schedule(admin_client, admin.id, user.id)
        assert created["time_zone"] == "Europe/Berlin"
        assert created["layers"][0]["user_ids"] == [admin.id, user.id]
        assert created["layers"][0]["start"] == "2026-03-27T09:00:00"
        # Users read; only admins write.
        assert (await user_client.get(f"{SCHEDULES}{created['id']}")).status_code == 200
        assert (await user_client.post(SCHEDULES, json=BERLIN_DAILY)).status_code == 403
        changed = await admin_client.put(
            f"{SCHEDULES}{created['id']}", json={"time_zone": "America/New_York"}
        )
        assert changed.status_code == 200 and changed.json()["time_zone"] == "America/New_York"
        listed = (await user_client.get(SCHEDULES)).json()["items"]
        assert [s["name"] for s in listed] == ["Primary"]
        history = (await user_client.get(f"{SCHEDULES}{created['id']}/history")).json()
        assert [(h["type"], h["actor_id"]) for h in history] == [
            ("created", admin.id), ("updated", admin.id),
        ]  # fmt: skip
        assert history[1]["data"] == {"fields": ["time_zone"]}

    async def test_bad_schedules_are_refused_with_reasons(self, admin_client, admin):
        async def refused(body, status=422):
            response = await admin_client.post(SCHEDULES, json=body)
            assert response.status_code == status, response.text
            return str(response.json()["detail"])

        assert "IANA" in await refused({**BERLIN_DAILY, "time_zone": "Mars/Olympus"})
        aware = dict(BERLIN_DAILY["layers"][0], start="2026-03-27T09:00:00+01:00")
        assert "without an offset" in await refused({**BERLIN_DAILY, "layers": [aware]})
        ghost = dict(BERLIN_DAILY["layers"][0], user_ids=[999_999])
        assert "999999" in await refused({**BERLIN_DAILY, "layers": [ghost]})
        zero = dict(BERLIN_DAILY["layers"][0], rotation_length=0)
        await refused({**BERLIN_DAILY, "layers": [zero]})
        await make_schedule(admin_client, admin.id)
        assert "already exists" in await refused({**BERLIN_DAILY, "name": "PRIMARY"}, 409)

    async def test_daily_handoff_stays_at_nine_local_across_the_change(
        self, admin_client, admin, user
    ):
        schedule = await make_schedule(admin_client, admin.id, user.id)
        sid = schedule["id"]
        # 27 March 09:00 CET (08:00 UTC): admin; 28 March: user; 29 March, after the change to
        # summer time, 09:00 CEST is 07:00 UTC: admin again.
        assert await on_call(admin_client, sid, "2026-03-27T08:00:00Z") == [admin.id]
        assert await on_call(admin_client, sid, "2026-03-27T07:59:59Z") == []  # before the start
        assert await on_call(admin_client, sid, "2026-03-29T06:59:59Z") == [user.id]
        assert await on_call(admin_client, sid, "2026-03-29T07:00:00Z") == [admin.id]
        shifts = await admin_client.get(
            f"{SCHEDULES}{sid}/shifts",
            params={"start": "2026-03-28T00:00:00Z", "end": "2026-03-31T00:00:00Z"},
        )
        assert shifts.status_code == 200
        items = [(s["user"]["id"], s["start"], s["end"]) for s in shifts.json()["items"]]
        assert items == [
            (admin.id, "2026-03-28T00:00:00Z", "2026-03-28T08:00:00Z"),
            (user.id, "2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z"),  # 23 hours
            (admin.id, "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"),
            (user.id, "2026-03-30T07:00:00Z", "2026-03-31T00:00:00Z"),
        ]

    async def test_shift_windows_are_bounded(self, admin_client, admin):
        sid = (await make_schedule(admin_client, admin.id))["id"]
        too_long = await admin_client.get(
            f"{SCHEDULES}{sid}/shifts",
            params={"start": "2026-01-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"},
        )
        assert too_long.status_code == 422 and "90 days" in too_long.text
        backwards = await admin_client.get(
            f"{SCHEDULES}{sid}/shifts",
            params={"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        )
        assert backwards.status_code == 422
        naive = await admin_client.get(f"{SCHEDULES}{sid}/on-call", params={"at": "2026-02-01"})
        assert naive.status_code == 422

    async def test_later_layers_win_where_they_have_someone(self, admin_client, admin, user):
        weekdays = {"name": "office hours", "user_ids": [user.id], "rotation_length": 1,
                    "rotation_unit": "weeks", "start": "2026-03-02T00:00:00",
                    "restrictions": [{"days": ["monday", "tuesday", "wednesday", "thursday",
                                               "friday"],
                                      "start_time": "09:00", "end_time": "17:00"}]}  # fmt: skip
        base = dict(BERLIN_DAILY["layers"][0], user_ids=[admin.id])
        sid = (await make_schedule(admin_client, layers=[base, weekdays]))["id"]
        # Tuesday 7 April 2026, 10:00 CEST (08:00 UTC): the office-hours layer.
        assert await on_call(admin_client, sid, "2026-04-07T08:00:00Z") == [user.id]
        # 18:00 CEST: outside its window, the base layer fills in.
        assert await on_call(admin_client, sid, "2026-04-07T16:00:00Z") == [admin.id]
        # Saturday: the base layer.
        assert await on_call(admin_client, sid, "2026-04-11T08:00:00Z") == [admin.id]


class TestOverrides:
    async def test_an_override_wins_and_the_newest_of_overlapping_ones(
        self, admin_client, admin, user, factory
    ):
        third = await factory.user(email="third@example.com")
        sid = (await make_schedule(admin_client, admin.id))["id"]
        url = f"{SCHEDULES}{sid}/overrides"
        first = await admin_client.post(
            url,
            json={
                "user_id": user.id,
                "start": "2026-04-01T00:00:00Z",
                "end": "2026-04-03T00:00:00Z",
            },
        )
        assert first.status_code == 201, first.text
        assert first.json()["user"]["id"] == user.id
        second = await admin_client.post(
            url,
            json={
                "user_id": third.id,
                "start": "2026-04-02T00:00:00Z",
                "end": "2026-04-02T12:00:00Z",
            },
        )
        assert second.status_code == 201
        assert await on_call(admin_client, sid, "2026-04-01T12:00:00Z") == [user.id]
        assert await on_call(admin_client, sid, "2026-04-02T06:00:00Z") == [third.id]
        assert await on_call(admin_client, sid, "2026-04-02T18:00:00Z") == [user.id]
        assert await on_call(admin_client, sid, "2026-04-03T12:00:00Z") == [admin.id]
        listed = await admin_client.get(
            url, params={"start": "2026-04-01T00:00:00Z", "end": "2026-04-05T00:00:00Z"}
        )
        assert [o["id"] for o in listed.json()] == [first.json()["id"], second.json()["id"]]
        deleted = await admin_client.delete(f"{url}/{second.json()['id']}")
        assert deleted.status_code == 204
        assert await on_call(admin_client, sid, "2026-04-02T06:00:00Z") == [user.id]
        gone = await admin_client.delete(f"{url}/{second.json()['id']}")
        assert gone.status_code == 404
        history = (await admin_client.get(f"{SCHEDULES}{sid}/history")).json()
        assert [h["type"] for h in history] == [
            "created", "override_added", "override_added", "override_removed",
        ]  # fmt: skip

    async def test_bad_overrides(self, admin_client, user_client, admin):
        sid = (await make_schedule(admin_client, admin.id))["id"]
        url = f"{SCHEDULES}{sid}/overrides"
        window = {"start": "2026-04-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"}
        assert (
            await user_client.post(url, json={"user_id": admin.id, **window})
        ).status_code == 403
        backwards = {"start": window["end"], "end": window["start"]}
        assert (
            await admin_client.post(url, json={"user_id": admin.id, **backwards})
        ).status_code == 422
        ghost = await admin_client.post(url, json={"user_id": 999_999, **window})
        assert ghost.status_code == 422 and "999999" in ghost.text


class TestWhoIsOnCall:
    async def test_every_schedule_now_and_my_shifts(self, admin_client, user_client, admin, user):
        mine = await make_schedule(admin_client, name="Mine", layers=[
            dict(JANUARY, user_ids=[user.id])])  # fmt: skip
        empty = await make_schedule(admin_client, name="Empty", layers=[JANUARY])
        everyone = (await user_client.get("/v1/oncall")).json()
        assert everyone["at"] == "2026-01-05T09:00:00Z"
        named = [(i["schedule"]["id"], [u["id"] for u in i["users"]]) for i in everyone["items"]]
        assert named == [(mine["id"], [user.id]), (empty["id"], [])]
        shifts = (await user_client.get("/v1/users/me/shifts")).json()["items"]
        # Default window: now to 7 days on; one rotation of one person: a single shift.
        assert shifts == [
            {"schedule": {"id": mine["id"], "name": "Mine"},
             "start": "2026-01-05T09:00:00Z", "end": "2026-01-12T09:00:00Z"},
        ]  # fmt: skip
        assert (await admin_client.get("/v1/users/me/shifts")).json()["items"] == []


async def test_contact_details_of_people_on_call_are_for_admins_and_themselves(
    admin_client, user_client, admin, user, factory, harness
):
    other = await factory.user(email="other@example.com", phone="+14155550100")
    sid = (await make_schedule(admin_client, layers=[dict(JANUARY, user_ids=[other.id])]))["id"]
    override = await admin_client.post(
        f"{SCHEDULES}{sid}/overrides",
        json={"user_id": user.id, "start": "2026-01-06T09:00:00Z", "end": "2026-01-06T10:00:00Z"},
    )
    assert override.status_code == 201
    window = {"start": "2026-01-05T09:00:00Z", "end": "2026-01-07T09:00:00Z"}
    reads = {
        "oncall": lambda c: c.get("/v1/oncall"),
        "on-call": lambda c: c.get(f"{SCHEDULES}{sid}/on-call"),
        "shifts": lambda c: c.get(f"{SCHEDULES}{sid}/shifts", params=window),
        "overrides": lambda c: c.get(f"{SCHEDULES}{sid}/overrides", params=window),
    }
    for name, read in reads.items():
        for viewer, client in (("admin", admin_client), ("user", user_client)):
            answer = await read(client)
            assert answer.status_code == 200, (name, viewer)
            people = [p for p in people_in(answer.json()) if p["id"] in (other.id, user.id)]
            assert people, name
            for person in people:
                shown = viewer == "admin" or person["id"] == user.id
                assert (person["email"] is not None) == shown, (name, viewer, person)
                if person["id"] == other.id:
                    assert person["phone"] == ("+14155550100" if shown else None)
                    assert person["full_name"] == other.full_name  # the name stays


def people_in(answer):
    """Every person object anywhere in an answer."""
    if isinstance(answer, dict):
        if {"id", "full_name", "email"} <= answer.keys():
            yield answer
        for value in answer.values():
            yield from people_in(value)
    elif isinstance(answer, list):
        for value in answer:
            yield from people_in(value)


class TestCalendars:
    async def test_the_schedule_feed_needs_its_secret_and_lists_the_shifts(
        self, admin_client, client, admin, user, harness
    ):
        sid = (await make_schedule(admin_client, layers=[
            dict(JANUARY, user_ids=[admin.id, user.id])]))["id"]  # fmt: skip
        # The link is under PUBLIC_BASE_URL, whatever Host the request named.
        url = (
            await admin_client.post(
                f"{SCHEDULES}{sid}/calendar-url", headers={"Host": "attacker.example"}
            )
        ).json()["url"]
        public = harness.settings.public_base_url
        assert url.startswith(f"{public}/v1/") and "attacker" not in url
        path, _, query = url.removeprefix(public).partition("?")
        assert path == f"/v1/schedules/{sid}/calendar.ics" and query.startswith("token=")
        feed = await client.get(url)  # no bearer token: the URL's secret is enough
        assert feed.status_code == 200
        assert feed.headers["content-type"].startswith("text/calendar")
        events = list(Calendar.from_ical(feed.content).walk("VEVENT"))
        # From the schedule's start (4 days back) to 60 days ahead: daily shifts, alternating.
        assert 64 <= len(events) <= 65
        summaries = [str(e["SUMMARY"]) for e in events]
        assert summaries[:3] == [f"On call: {admin.full_name}", f"On call: {user.full_name}",
                                 f"On call: {admin.full_name}"]  # fmt: skip
        assert events[0]["DTSTART"].dt == utc("2026-01-01T08:00:00")  # 09:00 CET
        assert all(e["DTEND"].dt - e["DTSTART"].dt == timedelta(hours=24) for e in events[:-1])
        assert (await client.get(path, params={"token": "wrong"})).status_code == 401
        assert (await client.get(path)).status_code == 401
        # A new URL retires the old one.
        await admin_client.post(f"{SCHEDULES}{sid}/calendar-url")
        assert (await client.get(url)).status_code == 401

    async def test_a_users_own_feed(self, admin_client, user_client, client, admin, user):
        await make_schedule(admin_client, name="Mine", layers=[dict(JANUARY, user_ids=[user.id])])
        url = (await user_client.post("/v1/users/me/calendar-url")).json()["url"]
        feed = await client.get(url)
        assert feed.status_code == 200
        [event] = Calendar.from_ical(feed.content).walk("VEVENT")
        assert str(event["SUMMARY"]) == "On call: Mine"
        other = url.replace(f"/users/{user.id}/", f"/users/{admin.id}/")
        assert (await client.get(other)).status_code == 401

    async def test_a_users_own_feed_ends_with_a_password_change_and_a_new_one_works(
        self, admin_client, user_client, client, harness, user
    ):
        await make_schedule(admin_client, name="Mine", layers=[dict(JANUARY, user_ids=[user.id])])
        url = (await user_client.post("/v1/users/me/calendar-url")).json()["url"]
        assert (await client.get(url)).status_code == 200
        changed = await user_client.post(
            "/v1/users/me/password",
            json={"current_password": DEFAULT_PASSWORD, "new_password": "a brand new one"},
        )
        assert changed.status_code == 200
        assert (await client.get(url)).status_code == 401
        token = (
            await client.post(
                "/v1/auth/login/access-token",
                data={"username": user.email, "password": "a brand new one"},
            )
        ).json()["access_token"]
        async with harness.make_client(token) as signed_in:
            fresh = (await signed_in.post("/v1/users/me/calendar-url")).json()["url"]
        assert (await client.get(fresh)).status_code == 200
        assert (await client.get(url)).status_code == 401

    async def test_names_with_line_breaks_are_refused_and_old_ones_still_make_a_feed(
        self, admin_client, client, harness, user
    ):
        for name in ("On call\nX-INJECTED:1", "bare\rCR", "tab\there", "n\x85el", "esc\x1b[2J"):
            answer = await admin_client.post(SCHEDULES, json={**BERLIN_DAILY, "name": name})
            assert answer.status_code == 422, name
            assert "control characters" in answer.text
        renamed = await admin_client.put(f"/v1/users/{user.id}", json={"full_name": "A\nB"})
        assert renamed.status_code == 422
        sid = (await make_schedule(admin_client, layers=[dict(JANUARY, user_ids=[user.id])]))["id"]
        async with session_scope(harness.app.state.sessionmaker) as session:  # as stored before
            schedule = await schedule_service.get(session, sid)
            schedule.name = "Primary\r\nX-INJECTED:1\rmore"
        url = (await admin_client.post(f"{SCHEDULES}{sid}/calendar-url")).json()["url"]
        feed = await client.get(url)
        assert feed.status_code == 200
        assert b"X-INJECTED" not in feed.content.replace(b"\r\n ", b"").split(b"X-WR-CALNAME")[0]
        calendar = Calendar.from_ical(feed.content)
        assert str(calendar["X-WR-CALNAME"]) == "Primary  X-INJECTED:1 more"
        assert "X-INJECTED" not in calendar
        assert all(b"\r" not in line for line in feed.content.split(b"\r\n"))


class TestLeaving:
    async def test_deleting_someone_on_a_schedule_or_policy_needs_force(
        self, admin_client, admin, factory, harness
    ):
        leaver = await factory.user(email="leaver@example.com", full_name="Lee Ver")
        sid = (await make_schedule(admin_client, leaver.id, admin.id))["id"]
        await admin_client.post(
            f"{SCHEDULES}{sid}/overrides",
            json={
                "user_id": leaver.id,
                "start": "2026-04-01T00:00:00Z",
                "end": "2026-04-02T00:00:00Z",
            },
        )
        policy = await admin_client.post("/v1/escalation/policies/", json={
            "name": "p", "steps": [{"delay_minutes": 0, "actions": [{"type": "notify"}],
                                    "targets": [{"type": "user", "id": leaver.id},
                                                {"type": "schedule", "id": sid}]}]})  # fmt: skip
        assert policy.status_code == 201, policy.text
        refused = await admin_client.delete(f"/v1/users/{leaver.id}")
        assert refused.status_code == 409
        assert f"schedule {sid} (Primary)" in refused.text
        assert f"escalation policy {policy.json()['id']} (p)" in refused.text
        forced = await admin_client.delete(f"/v1/users/{leaver.id}", params={"force": "true"})
        assert forced.status_code == 200
        schedule = (await admin_client.get(f"{SCHEDULES}{sid}")).json()
        assert schedule["layers"][0]["user_ids"] == [admin.id]
        history = (await admin_client.get(f"{SCHEDULES}{sid}/history")).json()
        assert history[-1]["type"] == "user_removed"
        assert history[-1]["data"] == {"user_id": leaver.id, "overrides_removed": 1}
        async with session_scope(harness.app.state.sessionmaker) as session:
            stored = await session.get(EscalationPolicy, policy.json()["id"])
            assert stored.steps[0]["targets"] == [{"type": "schedule", "id": sid}]

    async def test_a_schedule_a_policy_pages_cannot_be_deleted(self, admin_client, admin):
        sid = (await make_schedule(admin_client, admin.id))["id"]
        policy = await admin_client.post("/v1/escalation/policies/", json={
            "name": "p", "steps": [{"delay_minutes": 0, "actions": [{"type": "notify"}],
                                    "targets": [{"type": "schedule", "id": sid}]}]})  # fmt: skip
        assert policy.status_code == 201
        refused = await admin_client.delete(f"{SCHEDULES}{sid}")
        assert refused.status_code == 409 and "escalation policies" in refused.text
        await admin_client.delete(f"/v1/escalation/policies/{policy.json()['id']}")
        assert (await admin_client.delete(f"{SCHEDULES}{sid}")).status_code == 200
        missing = await admin_client.post("/v1/escalation/policies/", json={
            "name": "q", "steps": [{"delay_minutes": 0, "actions": [{"type": "notify"}],
                                    "targets": [{"type": "schedule", "id": sid}]}]})  # fmt: skip
        assert missing.status_code == 422
        assert f"target schedule {sid} does not exist" in missing.text


class TestEscalation:
    async def test_a_schedule_step_pages_whoever_is_on_call_when_it_fires(
        self, admin_client, admin, user, harness
    ):
        # 5 January, 10:00 in Berlin: the fifth daily shift from 1 January (index 4): admin.
        sid = (await make_schedule(admin_client, layers=[
            dict(JANUARY, user_ids=[admin.id, user.id])]))["id"]  # fmt: skip
        policy = await admin_client.post("/v1/escalation/policies/", json={
            "name": "on call", "steps": [
                {"delay_minutes": 0, "actions": [{"type": "notify"}],
                 "targets": [{"type": "schedule", "id": sid}]},
                {"delay_minutes": 1440, "actions": [{"type": "notify"}],
                 "targets": [{"type": "schedule", "id": sid}]}]})  # fmt: skip
        assert policy.status_code == 201, policy.text
        incident = (await admin_client.post("/v1/incidents/", json={"title": "down"})).json()
        await harness.run_jobs()
        # A day later the rotation has moved on, and step 2 pages the next person.
        harness.clock.advance(hours=24)
        await harness.run_jobs()
        first, second = await _events(harness, incident["id"])
        assert (first.status, first.notified_user_ids) == ("executed", [admin.id])
        assert (second.status, second.notified_user_ids) == ("executed", [user.id])
        pages = await _pages(harness, incident["id"])
        assert sorted(p.user_id for p in pages) == sorted([admin.id, user.id])

    async def test_nobody_on_call_skips_the_step_and_goes_straight_on(
        self, admin_client, admin, harness
    ):
        empty = (await make_schedule(admin_client, name="Nobody", layers=[JANUARY]))["id"]
        policy = await admin_client.post("/v1/escalation/policies/", json={
            "name": "ladder", "steps": [
                {"delay_minutes": 0, "actions": [{"type": "notify"}],
                 "targets": [{"type": "schedule", "id": empty}]},
                {"delay_minutes": 30, "actions": [{"type": "notify"}],
                 "targets": [{"type": "user", "id": admin.id}]}]})  # fmt: skip
        assert policy.status_code == 201, policy.text
        incident = (await admin_client.post("/v1/incidents/", json={"title": "down"})).json()
        await harness.run_jobs()
        await harness.run_jobs()  # step 2 is due at once: no waiting 30 minutes for nobody
        first, second = await _events(harness, incident["id"])
        assert first.status == "skipped" and f"schedule {empty}: nobody on call" in first.detail
        assert second.status == "executed" and second.notified_user_ids == [admin.id]
        assert second.due_at == harness.clock.now()
        timeline = await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")
        skipped = [e for e in timeline.json()["items"] if e["type"] == "escalation_skipped"]
        assert [e["data"]["reason"] for e in skipped] == [f"schedule {empty}: nobody on call"]


async def _events(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(
                select(EscalationEvent)
                .where(EscalationEvent.incident_id == incident_id)
                .order_by(EscalationEvent.step, EscalationEvent.id)
            )
        )


async def _pages(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(
                select(Notification).where(
                    Notification.incident_id == incident_id, Notification.event == "escalated"
                )
            )
        )


class TestHardCases:
    async def test_limits_and_odd_values_are_422_not_500(self, admin_client, admin):
        for zone in ("Europe", "America", "localtime", "right/UTC"):
            response = await admin_client.post(SCHEDULES, json={**BERLIN_DAILY, "time_zone": zone})
            assert response.status_code == 422, (zone, response.text)
        far = dict(BERLIN_DAILY["layers"][0], start="9999-12-31T23:00:00")
        response = await admin_client.post(SCHEDULES, json={**BERLIN_DAILY, "layers": [far]})
        assert response.status_code == 422 and "1970 and 2199" in response.text
        sid = (await make_schedule(admin_client, admin.id))["id"]
        for params in ({"at": "9999-12-31T20:00:00Z"}, {"at": "0001-01-01T00:00:00Z"}):
            response = await admin_client.get(f"{SCHEDULES}{sid}/on-call", params=params)
            assert response.status_code == 422, params
        for path in (f"{SCHEDULES}{sid}/shifts", f"{SCHEDULES}{sid}/overrides",
                     "/v1/users/me/shifts"):  # fmt: skip
            response = await admin_client.get(path, params={"start": "9999-12-30T00:00:00Z"})
            assert response.status_code == 422, path

    async def test_deactivated_people_are_not_on_call_and_earlier_layers_fill_in(
        self, admin_client, admin, user, factory
    ):
        top = dict(JANUARY, name="top", user_ids=[user.id])
        sid = (await make_schedule(admin_client, layers=[dict(JANUARY, user_ids=[admin.id]),
                                                         top]))["id"]  # fmt: skip
        assert await on_call(admin_client, sid, "2026-01-05T12:00:00Z") == [user.id]
        await admin_client.put(f"/v1/users/{user.id}", json={"is_active": False})
        assert await on_call(admin_client, sid, "2026-01-05T12:00:00Z") == [admin.id]
        # An override for someone deactivated does not hide the layers either.
        leaver = await factory.user(email="gone@example.com")
        await admin_client.post(f"{SCHEDULES}{sid}/overrides", json={
            "user_id": leaver.id, "start": "2026-01-05T10:00:00Z",
            "end": "2026-01-05T14:00:00Z"})  # fmt: skip
        assert await on_call(admin_client, sid, "2026-01-05T12:00:00Z") == [leaver.id]
        await admin_client.put(f"/v1/users/{leaver.id}", json={"is_active": False})
        assert await on_call(admin_client, sid, "2026-01-05T12:00:00Z") == [admin.id]

    async def test_a_deactivated_users_feed_stops(self, admin_client, user_client, client, user):
        await make_schedule(admin_client, name="Mine", layers=[dict(JANUARY, user_ids=[user.id])])
        url = (await user_client.post("/v1/users/me/calendar-url")).json()["url"]
        assert (await client.get(url)).status_code == 200
        await admin_client.put(f"/v1/users/{user.id}", json={"is_active": False})
        assert (await client.get(url)).status_code == 401

    async def test_a_past_override_does_not_block_deleting_its_user(
        self, admin_client, admin, factory
    ):
        former = await factory.user(email="former@example.com")
        sid = (await make_schedule(admin_client, admin.id))["id"]
        await factory.override(schedule_id=sid, user_id=former.id,
                               start_at=utc("2025-12-01T00:00:00"),
                               end_at=utc("2025-12-02T00:00:00"))  # fmt: skip
        assert (await admin_client.delete(f"/v1/users/{former.id}")).status_code == 200

    async def test_one_broken_schedule_breaks_nothing_else(
        self, admin_client, admin, factory, harness
    ):
        """Layers stored by an older release or by hand that cannot be computed: that schedule
        answers 409 and its escalation steps fail visibly; every other schedule still works."""
        good = (await make_schedule(admin_client, name="Good", layers=[
            dict(JANUARY, user_ids=[admin.id])]))["id"]  # fmt: skip
        broken = (await factory.schedule(name="Broken", layers=[{"user_ids": [admin.id]}])).id
        response = await admin_client.get(f"{SCHEDULES}{broken}/on-call")
        assert response.status_code == 409 and "cannot be computed" in response.text
        everyone = (await admin_client.get("/v1/oncall")).json()["items"]
        assert [(i["schedule"]["id"], [u["id"] for u in i["users"]], i["error"] is None)
                for i in everyone] == [(good, [admin.id], True), (broken, [], False)]  # fmt: skip
        for sid in (broken, good):
            policy = await admin_client.post("/v1/escalation/policies/", json={
                "name": f"via {sid}", "conditions": {"title_contains": f"via {sid}"},
                "steps": [{"delay_minutes": 0, "actions": [{"type": "notify"}],
                           "targets": [{"type": "schedule", "id": sid}]}]})  # fmt: skip
            assert policy.status_code == 201, policy.text
        incidents = "/v1/incidents/"
        bad_incident = (await admin_client.post(incidents, json={"title": f"via {broken}"})).json()
        good_incident = (await admin_client.post(incidents, json={"title": f"via {good}"})).json()
        await harness.run_jobs()
        [failed] = await _events(harness, bad_incident["id"])
        assert (
            failed.status == "failed" and f"schedule {broken} cannot be computed" in failed.detail
        )
        [fired] = await _events(harness, good_incident["id"])
        assert (fired.status, fired.notified_user_ids) == ("executed", [admin.id])


class TestSkippedSteps:
    async def test_a_skipped_step_still_does_its_other_actions(self, admin_client, harness):
        empty = (await make_schedule(admin_client, name="Nobody", layers=[JANUARY]))["id"]
        policy = await admin_client.post("/v1/escalation/policies/", json={
            "name": "raise", "steps": [
                {"delay_minutes": 0, "targets": [{"type": "schedule", "id": empty}],
                 "actions": [{"type": "notify"},
                             {"type": "set_severity", "severity": "critical"}]}]})  # fmt: skip
        assert policy.status_code == 201, policy.text
        incident = (
            await admin_client.post("/v1/incidents/", json={"title": "down", "severity": "low"})
        ).json()
        await harness.run_jobs()
        [event] = await _events(harness, incident["id"])
        assert event.status == "skipped"
        after = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert (after["severity"], after["escalation_status"]) == ("critical", "completed")


async def test_pending_overrides_are_capped(admin_client, admin, monkeypatch):
    from app.schedules import service

    monkeypatch.setattr(service, "MAX_PENDING_OVERRIDES", 2)
    sid = (await make_schedule(admin_client, admin.id))["id"]
    url = f"{SCHEDULES}{sid}/overrides"
    window = {"user_id": admin.id, "start": "2026-02-01T00:00:00Z", "end": "2026-02-02T00:00:00Z"}
    assert [(await admin_client.post(url, json=window)).status_code for _ in range(3)] == [
        201, 201, 422,
    ]  # fmt: skip


class TestRaces:
    """A check and the write it guards are not separated by another transaction's change."""

    async def test_deleting_a_schedule_waits_for_a_policy_being_saved(
        self, admin_client, admin, harness, postgres_only
    ):
        sid = (await make_schedule(admin_client, admin.id))["id"]
        steps = [{"delay_minutes": 0, "actions": [{"type": "notify"}],
                  "targets": [{"type": "schedule", "id": sid}]}]  # fmt: skip
        now = harness.clock.now()
        async with harness.app.state.sessionmaker() as saving, saving.begin():
            await policy_service.check_policy(
                saving, conditions=Conditions.of({}), steps=steps_of(steps)
            )
            saving.add(EscalationPolicy(name="racing", conditions={}, steps=steps,
                                        created_at=now, updated_at=now))  # fmt: skip
            deleting = asyncio.create_task(admin_client.delete(f"{SCHEDULES}{sid}"))
            await asyncio.sleep(0.3)  # the delete reaches the schedule's lock and waits there
            assert not deleting.done()
        response = await deleting
        assert response.status_code == 409 and "racing" in response.text

    async def test_deleting_a_user_waits_for_a_schedule_naming_them(
        self, admin_client, admin, harness, factory, postgres_only
    ):
        member = await factory.user(email="member2@example.com")
        async with harness.app.state.sessionmaker() as creating, creating.begin():
            await schedule_service.create(
                creating, name="Racing", description="", time_zone="UTC",
                layers=[dict(JANUARY, user_ids=[member.id])], actor=Actor.of(admin),
                now=harness.clock.now(),
            )  # fmt: skip
            deleting = asyncio.create_task(admin_client.delete(f"/v1/users/{member.id}"))
            await asyncio.sleep(0.3)
            assert not deleting.done()
        response = await deleting
        assert response.status_code == 409 and "(Racing)" in response.text
