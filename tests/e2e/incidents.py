"""Incidents: opening, filtering, updating, and every transition of the lifecycle with its
records (comments, timeline), a snooze that the worker ends."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from tests.e2e.base import (
    INCIDENT_FIELDS,
    WalkBase,
    close_to,
    find_key,
    is_subsequence,
    now_utc,
)
from tests.e2e.checks import (
    INCIDENTS,
    expect,
    expect_detail,
    expect_eq,
    expect_fields,
)
from tests.support.waiting import poll


class Incidents(WalkBase):
    def incidents(self) -> None:
        ada, bob, run = self.ada, self.bob, self.run
        title = f"E2E checkout latency {run}"
        self.texts["title:A"] = title
        request = {
            "title": title,
            "description": "p99 above 2 s",
            "severity": "high",
            "service": f"e2e-incidents-{run}",
            "labels": {"team": f"e2e-{run}"},
            "custom_fields": {"runbook": "https://wiki.example.com/checkout"},
            "dedup_key": f"e2e-a-{run}",
        }
        with self.check("POST /v1/incidents/: open an incident on a new service", INCIDENTS):
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=request, expect=201)
            missing = INCIDENT_FIELDS - set(incident)
            expect(not missing, f"incident fields missing: {sorted(missing)}")
            expected: dict[str, Any] = {k: v for k, v in request.items() if k != "service"}
            expected |= {"status": "triggered", "source": "api", "alert_count": 1, "version": 1}
            expected |= {"assignees": [], "created_by": ada.uid, "escalation_status": "none"}
            expected |= {"acknowledged_at": None, "resolved_at": None, "snoozed_until": None}
            expect_fields(incident, expected, "incident")
            expect(isinstance(incident["service_id"], int), "the named service was not created")
            self.ids["incident:A"] = incident["id"]
            self.ids[f"e2e-incidents-{run}"] = incident["service_id"]
        with self.check("POST /v1/incidents/: an open incident's dedup_key answers 200", INCIDENTS):
            again = self.api.post("/v1/incidents/", token=bob.bearer, json=request, expect=200)
            expect_eq(again["id"], self.id_of("incident:A"), "id")
        with self.check("GET /v1/incidents/: status, severity, label, service filters", INCIDENTS):
            incident_id = self.id_of("incident:A")
            label = ("label", f"team:e2e-{run}")
            service = ("service_id", str(self.id_of(f"e2e-incidents-{run}")))
            params = [("status", "triggered"), ("severity", "high"), ("severity", "low"), label]
            found = self.api.get("/v1/incidents/", token=bob.bearer, params=[*params, service])
            expect_eq([i["id"] for i in found["items"]], [incident_id], "matching incidents")
            expect("next_cursor" in found, "no next_cursor")
            params = [("status", "resolved"), label]
            none = self.api.get("/v1/incidents/", token=bob.bearer, params=params)["items"]
            expect_eq(none, [], "resolved incidents with the label")
            by_text = self.page("/v1/incidents/", bob.bearer, q=f"latency {run}")
            expect_eq([i["id"] for i in by_text], [incident_id], "incidents matching q")
            mine = self.page("/v1/incidents/", ada.bearer, assignee_id="me", status="triggered")
            expect(incident_id not in [i["id"] for i in mine], "assignee_id=me before assigning")
        with self.check("GET /v1/incidents/{id}: one incident; unknown is 404", INCIDENTS):
            incident_id = self.id_of("incident:A")
            incident = self.incident(incident_id, bob.bearer)
            expect_fields(incident, {"id": incident_id, "title": title}, "incident")
            self.api.get("/v1/incidents/999999999", token=bob.bearer, expect=404)
        with self.check("PUT /v1/incidents/{id}: a stale version is 409; If-Match", INCIDENTS):
            path = f"/v1/incidents/{self.id_of('incident:A')}"
            stale = {"severity": "critical", "version": 99}
            self.api.put(path, token=ada.bearer, json=stale, expect=409)
            change: dict[str, Any] = {"severity": "critical", "title": title + " (p1)"}
            incident = self.api.put(
                path, token=ada.bearer, json=change, headers={"If-Match": '"1"'}
            )
            expect_fields(incident, {**change, "version": 2}, "incident")
            same = self.api.put(path, token=ada.bearer, json={"severity": "critical"})
            expect_eq(same["version"], 2, "version after an update to the same values")

    def lifecycle(self) -> None:
        """Incident A through every transition of docs/api.md's lifecycle table, and its records."""
        ada, bob, carol = self.ada, self.bob, self.carol

        def a() -> int:
            return self.id_of("incident:A")

        with self.check("POST /v1/incidents/{id}/acknowledge: triggered → acknowledged", INCIDENTS):
            incident = self.act(a(), "acknowledge", json={"note": "looking"})
            expected: dict[str, Any] = {
                "status": "acknowledged",
                "acknowledged_by": ada.uid,
                "version": 3,
            }
            expect_fields(incident, expected, "incident")
        with self.check("POST /v1/incidents/{id}/acknowledge: again is a no-op", INCIDENTS):
            expected = {"status": "acknowledged", "version": 3}
            expect_fields(self.act(a(), "acknowledge"), expected, "incident")
        with self.check("POST /v1/incidents/{id}/unacknowledge: → triggered", INCIDENTS):
            expect_eq(self.act(a(), "unacknowledge")["status"], "triggered", "status")
        with self.check("POST /v1/incidents/{id}/snooze: → snoozed (query string)", INCIDENTS):
            incident = self.act(a(), "snooze", params={"minutes": 30})
            expect_eq(incident["status"], "snoozed", "status")
            end = now_utc() + timedelta(minutes=30)
            close_to(incident["snoozed_until"], end, 120, "snoozed_until")
        with self.check("POST /v1/incidents/{id}/acknowledge: 409 when snoozed", INCIDENTS):
            expect_detail(self.act(a(), "acknowledge", expect=409), "snoozed")
        with self.check("POST /v1/incidents/{id}/snooze: again moves the end (body)", INCIDENTS):
            incident = self.act(a(), "snooze", json={"hours": 1, "note": "after the deploy"})
            end = now_utc() + timedelta(hours=1)
            close_to(incident["snoozed_until"], end, 120, "snoozed_until")
        with self.check("POST /v1/incidents/{id}/unsnooze: snoozed → triggered", INCIDENTS):
            expected = {"status": "triggered", "snoozed_until": None}
            expect_fields(self.act(a(), "unsnooze"), expected, "incident")
        with self.check("POST /v1/incidents/{id}/unsnooze and unacknowledge: 409", INCIDENTS):
            expect_detail(self.act(a(), "unsnooze", expect=409), "triggered")
            expect_detail(self.act(a(), "unacknowledge", expect=409), "triggered")
            expect_detail(self.act(a(), "reopen", expect=409), "triggered")
        with self.check("POST /v1/incidents/{id}/assign: add one person with a part", INCIDENTS):
            incident = self.act(a(), "assign", json={"user_id": carol.uid, "role": "commander"})
            assignees = [(p["id"], p["response_role"]) for p in incident["assignees"]]
            expect_eq(assignees, [(carol.uid, "commander")], "assignees")
        with self.check("POST /v1/incidents/{id}/assign: set the whole set", INCIDENTS):
            incident = self.act(a(), "assign", json={"user_ids": [bob.uid, carol.uid]})
            assignee_ids = sorted(p["id"] for p in incident["assignees"])
            expect_eq(assignee_ids, sorted([bob.uid, carol.uid]), "assignees")
            answer = self.act(a(), "assign", json={"user_ids": [999999999]}, expect=422)
            expect_detail(answer, "999999999")
            mine = self.page("/v1/incidents/", bob.bearer, assignee_id="me")
            expect(a() in [i["id"] for i in mine], "assignee_id=me does not list it for bob")
        with self.check("POST /v1/incidents/{id}/comments: a comment by its author", INCIDENTS):
            new: dict[str, Any] = {"content": "Rolled back **4.2.1**"}
            path = f"/v1/incidents/{a()}/comments"
            comment = self.api.post(path, token=bob.bearer, json=new, expect=201)
            author = {"id": bob.uid, "name": bob.full_name}
            expect_fields(comment, {**new, "incident_id": a(), "author": author}, "comment")
            self.ids["comment"] = comment["id"]
        with self.check("GET /v1/incidents/{id}/comments: oldest first", INCIDENTS):
            comments = self.page(f"/v1/incidents/{a()}/comments", carol.bearer)
            expect_eq([c["id"] for c in comments], [self.id_of("comment")], "comments")
        with self.check("POST /v1/incidents/{id}/resolve: open → resolved", INCIDENTS):
            incident = self.act(a(), "resolve", json={"note": "fixed by the rollback"})
            expect_fields(incident, {"status": "resolved", "resolved_by": ada.uid}, "incident")
            expect(incident["resolved_at"], "resolved_at is not set")
            self.ids["version:A"] = incident["version"]
        with self.check("POST /v1/incidents/{id}/resolve: again is a no-op", INCIDENTS):
            expected = {"status": "resolved", "version": self.id_of("version:A")}
            expect_fields(self.act(a(), "resolve"), expected, "incident")
        with self.check(
            "POST /v1/incidents/{id}/acknowledge and snooze: 409 when resolved", INCIDENTS
        ):
            expect_detail(self.act(a(), "acknowledge", expect=409), "resolved")
            expect_detail(self.act(a(), "snooze", params={"minutes": 5}, expect=409), "resolved")
        with self.check("POST /v1/incidents/{id}/reopen: resolved → triggered", INCIDENTS):
            incident = self.act(a(), "reopen", json={"note": "it is back"})
            expect_fields(incident, {"status": "triggered", "resolved_at": None}, "incident")
        with self.check("GET /v1/incidents/{id}/timeline: every change, oldest first", INCIDENTS):
            entries = self.timeline(a())
            types = [e["type"] for e in entries]
            wanted = "created updated acknowledged unacknowledged snoozed snoozed unsnoozed"
            wanted += " assigned assigned commented resolved reopened"
            expect(is_subsequence(wanted.split(), types), f"timeline types {types}")
            expect_eq([e["id"] for e in entries], sorted(e["id"] for e in entries), "order")
            updated = next(e for e in entries if e["type"] == "updated")
            actor = {"type": "user", "id": ada.uid, "name": ada.full_name}
            expect_eq(updated["actor"], actor, "actor of the update")
            change = find_key(updated["data"], "severity")
            expect_eq(change, {"before": "high", "after": "critical"}, "the update's severity")
            counts = Counter(types)
            once = {"acknowledged": 1, "resolved": 1, "updated": 1}
            expect_eq({t: counts[t] for t in once}, once, "entries (no-ops write none)")
            noted = [e for e in entries if e["type"] == "acknowledged"]
            expect("looking" in json.dumps(noted[0]["data"]), "the note is not in the timeline")
        with self.check("POST /v1/incidents/{id}/escalate: 409 without a policy", INCIDENTS):
            expect_detail(self.act(a(), "escalate", expect=409), "no escalation policy")
            expect_eq(self.events(a()), [], "escalation events")
        with self.check("GET /v1/incidents/{id}/notifications: assignees were told", INCIDENTS):
            rows = self.page(f"/v1/incidents/{a()}/notifications", ada.bearer)
            expect(all(r["incident_id"] == a() for r in rows), "another incident's row")
            assigned = {r["user_id"] for r in rows if r["event"] == "assigned"}
            expect({bob.uid, carol.uid} <= assigned, f"assigned rows for users {assigned}")
            expect(ada.uid not in assigned, "the person who assigned was told")
        with self.check("POST /v1/incidents/{id}/snooze: until a time in 2 s", INCIDENTS):
            new = {"title": f"E2E snooze expiry {self.run}", "severity": "low"}
            incident = self.api.post("/v1/incidents/", token=ada.bearer, json=new, expect=201)
            until = now_utc() + timedelta(seconds=2)
            snoozed = self.act(incident["id"], "snooze", json={"until": until.isoformat()})
            expect_eq(snoozed["status"], "snoozed", "status")
            close_to(snoozed["snoozed_until"], until, 1, "snoozed_until")
            self.ids["incident:snoozed"] = incident["id"]

    def snooze_expiry(self) -> None:
        with self.check("the worker ends a due snooze (unsnoozed by system)", INCIDENTS):
            incident_id = self.id_of("incident:snoozed")

            def woken() -> dict[str, Any] | None:
                incident = self.incident(incident_id)
                return incident if incident["status"] == "triggered" else None

            expect_eq(poll("the snooze to end", woken)["snoozed_until"], None, "snoozed_until")
            entries = [e for e in self.timeline(incident_id) if e["type"] == "unsnoozed"]
            expect(entries, "no unsnoozed entry")
            expect_eq(entries[-1]["actor"]["type"], "system", "actor of the unsnooze")
