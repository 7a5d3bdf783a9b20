"""On-call schedules: a daily rotation in Europe/Berlin, overrides, shifts, history, and their
iCal feeds."""

from __future__ import annotations

import itertools
from datetime import time as clock_time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from icalendar import Calendar

from tests.e2e.base import (
    BERLIN,
    WalkBase,
    close_to,
    now_utc,
    parse_time,
)
from tests.e2e.checks import (
    SCHEDULES,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
)


class Schedules(WalkBase):
    def schedules(self) -> None:
        ada, bob, carol, dave, run = self.ada, self.bob, self.carol, self.dave, self.run
        name = f"E2E primary {run}"
        self.texts["schedule"] = name

        def sid() -> int:
            return self.id_of("schedule")

        with self.check("POST /v1/schedules/: a daily rotation in Europe/Berlin", SCHEDULES):
            layer = {"name": "daily", "user_ids": [carol.uid, dave.uid], "rotation_length": 1}
            layer |= {"rotation_unit": "days", "start": self.layer_start.isoformat()}
            new: dict[str, Any] = {"name": name, "time_zone": "Europe/Berlin", "description": "e2e"}
            made = self.api.post(
                "/v1/schedules/", token=ada.bearer, json={**new, "layers": [layer]}, expect=201
            )
            expect_fields(made, new, "schedule")
            expect_eq(len(made["layers"]), 1, "layers")
            expect_fields(made["layers"][0], {**layer, "restrictions": []}, "layer")
            self.ids["schedule"] = made["id"]
        with self.check("POST /v1/schedules/: 422 for unknown users, 403 for users", SCHEDULES):
            layer = {"user_ids": [999999999], "rotation_length": 1, "rotation_unit": "days"}
            layer["start"] = "2026-01-01T00:00:00"
            bad: dict[str, Any] = {"name": f"bad {run}", "time_zone": "UTC", "layers": [layer]}
            answer = self.api.post("/v1/schedules/", token=ada.bearer, json=bad, expect=422)
            expect_detail(answer, "999999999")
            empty = {**bad, "layers": []}
            self.api.post("/v1/schedules/", token=bob.bearer, json=empty, expect=403)
        with self.check("GET /v1/schedules/{id}: any user reads it", SCHEDULES):
            schedule = self.api.get(f"/v1/schedules/{sid()}", token=bob.bearer)
            expect_fields(schedule, {"id": sid(), "name": name}, "schedule")
        with self.check("PUT /v1/schedules/{id}: only the given fields change", SCHEDULES):
            change: dict[str, Any] = {"description": "primary rotation"}
            schedule = self.api.put(f"/v1/schedules/{sid()}", token=ada.bearer, json=change)
            expect_fields(schedule, {**change, "name": name}, "schedule")
            users = schedule["layers"][0]["user_ids"]
            expect_eq(users, [carol.uid, dave.uid], "layer users")
        with self.check("GET /v1/schedules/: list and search", SCHEDULES):
            found = self.page("/v1/schedules/", bob.bearer, q=run)
            expect_eq([s["id"] for s in found], [sid()], "schedules")
        with self.check("GET /v1/schedules/{id}/on-call: the rotation's person", SCHEDULES):
            at = now_utc() + timedelta(minutes=5)
            params = {"at": at.isoformat()}
            answer = self.api.get(f"/v1/schedules/{sid()}/on-call", token=bob.bearer, params=params)
            expect_eq([u["id"] for u in answer["users"]], [self.on_call_now(at)], "on call")
            close_to(answer["at"], at, 1, "at")
        with self.check("GET /v1/schedules/{id}/shifts: handoffs at 09:00 Berlin", SCHEDULES):
            start = now_utc().replace(microsecond=0)
            end = start + timedelta(days=3)
            window = {"start": start.isoformat(), "end": end.isoformat()}
            shifts = self.api.get(f"/v1/schedules/{sid()}/shifts", token=bob.bearer, params=window)
            items = shifts["items"]
            expect(3 <= len(items) <= 4, f"{len(items)} shifts in 3 days")
            expect(parse_time(items[0]["start"]) <= start, "the first shift starts late")
            expect(parse_time(items[-1]["end"]) >= end, "the last shift ends early")
            for before, after in itertools.pairwise(items):
                expect_eq(after["start"], before["end"], "shifts are contiguous")
                handoff = parse_time(before["end"]).astimezone(BERLIN)
                expect_eq(handoff.time(), clock_time(9), "handoff time in Berlin")
            for item in items:
                middle = max(parse_time(item["start"]), start) + timedelta(minutes=1)
                expected = self.on_call_now(middle)
                expect_eq(item["user"]["id"], expected, f"on call from {item['start']}")
        with self.check("POST /v1/schedules/{id}/overrides: an override wins", SCHEDULES):
            begin, end = now_utc() - timedelta(minutes=1), now_utc() + timedelta(hours=1)
            new = {"user_id": bob.uid, "start": begin.isoformat(), "end": end.isoformat()}
            path = f"/v1/schedules/{sid()}/overrides"
            override = self.api.post(path, token=ada.bearer, json=new, expect=201)
            expect_fields(override, {"schedule_id": sid()}, "override")
            expect_eq(override["user"]["id"], bob.uid, "override user")
            close_to(override["end"], end, 1, "end")
            self.ids["override"] = override["id"]
            query = {"at": (now_utc() + timedelta(minutes=5)).isoformat()}
            answer = self.api.get(f"/v1/schedules/{sid()}/on-call", token=bob.bearer, params=query)
            expect_eq([u["id"] for u in answer["users"]], [bob.uid], "on call during it")
        with self.check("GET /v1/schedules/{id}/overrides: the next 7 days", SCHEDULES):
            found = self.api.get(f"/v1/schedules/{sid()}/overrides", token=bob.bearer)
            overrides = [(o["id"], o["user"]["id"]) for o in found]
            expect_eq(overrides, [(self.id_of("override"), bob.uid)], "overrides")
        with self.check("GET /v1/oncall: every schedule and who is on call", SCHEDULES):
            query = {"at": (now_utc() + timedelta(minutes=5)).isoformat()}
            answer = self.api.get("/v1/oncall", token=carol.bearer, params=query)
            mine = [i for i in answer["items"] if i["schedule"]["id"] == sid()]
            expect_eq([[u["id"] for u in i["users"]] for i in mine], [[bob.uid]], "on call")
            expect_eq(mine[0]["schedule"]["name"], name, "schedule name")
        with self.check("DELETE /v1/schedules/{id}/overrides/{id}: 204, gone", SCHEDULES):
            path = f"/v1/schedules/{sid()}/overrides/{self.id_of('override')}"
            response = self.api.request("DELETE", path, token=ada.bearer, expect=204)
            expect_eq(response.content, b"", "the body of a 204")
            found = self.api.get(f"/v1/schedules/{sid()}/overrides", token=bob.bearer)
            expect_eq(found, [], "overrides")
            self.api.delete(path, token=ada.bearer, expect=404)
        with self.check("GET /v1/schedules/{id}/history: every change, oldest first", SCHEDULES):
            history = self.api.get(f"/v1/schedules/{sid()}/history", token=bob.bearer)
            types = [h["type"] for h in history]
            expect_eq(types, ["created", "updated", "override_added", "override_removed"], "types")
            actor = {"actor_id": ada.uid, "actor_name": ada.full_name}
            expect_fields(history[0], actor, "actor")
        with self.check("GET /v1/users/me/shifts: your shifts in every schedule", SCHEDULES):
            start = now_utc()
            window = {"start": start.isoformat(), "end": (start + timedelta(days=4)).isoformat()}
            items = self.api.get("/v1/users/me/shifts", token=carol.bearer, params=window)["items"]
            expect(items, "carol has no shifts in 4 days of a two-person daily rotation")
            expect(all(i["schedule"]["id"] == sid() for i in items), "another schedule's shift")
            for item in items:
                middle = max(parse_time(item["start"]), start) + timedelta(minutes=1)
                expect_eq(self.on_call_now(middle), carol.uid, f"on call from {item['start']}")

    def calendars(self) -> None:
        ada, bob, carol, dave = self.ada, self.bob, self.carol, self.dave

        def sid() -> int:
            return self.id_of("schedule")

        with self.check("POST /v1/schedules/{id}/calendar-url: a secret feed URL", SCHEDULES):
            self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=bob.bearer, expect=403)
            url = self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=ada.bearer)["url"]
            parts = urlsplit(url)
            expect_eq(f"{parts.scheme}://{parts.netloc}", self.api.base_url, "feed origin")
            expect_eq(parts.path, f"/v1/schedules/{sid()}/calendar.ics", "feed path")
            expect(parts.query.startswith("token="), f"feed URL {url}")
            self.texts["calendar token"] = parts.query.removeprefix("token=")
        with self.check("GET /v1/schedules/{id}/calendar.ics: an iCal feed of shifts", SCHEDULES):
            token = {"token": self.text("calendar token")}
            path = f"/v1/schedules/{sid()}/calendar.ics"
            feed = self.api.request("GET", path, params=token, expect=200)
            kind = feed.headers.get("content-type", "")
            expect(kind.startswith("text/calendar"), f"content type {kind}")
            calendar = Calendar.from_ical(feed.content)
            expect_eq(str(calendar.get("X-WR-CALNAME")), self.text("schedule"), "X-WR-CALNAME")
            events = list(calendar.walk("VEVENT"))
            expect(len(events) >= 60, f"{len(events)} daily shifts in 67 days")
            names = {str(e.get("SUMMARY")) for e in events}
            wanted = {f"On call: {carol.full_name}", f"On call: {dave.full_name}"}
            expect_eq(names, wanted, "summaries")
            ordered = all(e.decoded("DTSTART") < e.decoded("DTEND") for e in events)
            expect(ordered, "an event ends before it starts")
        with self.check("GET …/calendar.ics: no token or a retired one is 401", SCHEDULES):
            path = f"/v1/schedules/{sid()}/calendar.ics"
            old = self.text("calendar token")
            self.api.request("GET", path, expect=401)
            url = self.api.post(f"/v1/schedules/{sid()}/calendar-url", token=ada.bearer)["url"]
            self.api.request("GET", path, params={"token": old}, expect=401)
            self.texts["calendar token"] = new = urlsplit(url).query.removeprefix("token=")
            self.api.request("GET", path, params={"token": new}, expect=200)
        with self.check("POST /v1/users/me/calendar-url: your own feed", SCHEDULES):
            url = self.api.post("/v1/users/me/calendar-url", token=carol.bearer)["url"]
            parts = urlsplit(url)
            expect_eq(parts.path, f"/v1/users/{carol.uid}/calendar.ics", "feed path")
            self.texts["my calendar"] = f"{parts.path}?{parts.query}"
        with self.check("GET /v1/users/{id}/calendar.ics: your shifts as iCal", SCHEDULES):
            feed = self.api.request("GET", self.text("my calendar"), expect=200)
            calendar = Calendar.from_ical(feed.content)
            expect_eq(str(calendar.get("X-WR-CALNAME")), "My on-call shifts", "X-WR-CALNAME")
            summaries = {str(e.get("SUMMARY")) for e in calendar.walk("VEVENT")}
            expect_eq(summaries, {f"On call: {self.text('schedule')}"}, "summaries")
            path = f"/v1/users/{carol.uid}/calendar.ics"
            self.api.request("GET", path, params={"token": "nope"}, expect=401)
