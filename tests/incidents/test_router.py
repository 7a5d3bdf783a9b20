"""/v1/incidents: create, read, update, every transition, assignment, comments, timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest

CREATE = {"title": "Checkout is slow", "severity": "high"}


async def timeline(client, incident_id, *, escalation=False):
    """The incident's timeline; without the escalation engine's own entries unless asked."""
    response = await client.get(f"/v1/incidents/{incident_id}/timeline", params={"limit": 500})
    assert response.status_code == 200
    items = response.json()["items"]
    return items if escalation else [e for e in items if e["type"] != "policy_applied"]


class TestCreate:
    async def test_create_with_every_field(self, user_client, user, harness):
        body = {
            "title": "  Checkout latency above 2 s ",
            "description": "p99 is 2.4 s",
            "severity": "critical",
            "service": "checkout-api",
            "labels": {"team": "payments", "env": "prod"},
            "custom_fields": {"runbook": "https://wiki/x", "nested": {"a": [1, 2]}},
            "dedup_key": "checkout-latency",
        }
        response = await user_client.post("/v1/incidents/", json=body)
        assert response.status_code == 201, response.text
        incident = response.json()
        assert incident["title"] == "Checkout latency above 2 s"
        assert (incident["status"], incident["severity"]) == ("triggered", "critical")
        assert incident["labels"] == {"team": "payments", "env": "prod"}
        assert incident["custom_fields"] == {"runbook": "https://wiki/x", "nested": {"a": [1, 2]}}
        assert incident["service_id"] is not None
        assert (incident["source"], incident["alert_count"], incident["version"]) == ("api", 1, 1)
        assert incident["created_by"] == user.id
        assert incident["assignees"] == []
        assert incident["created_at"] == harness.clock.now().isoformat().replace("+00:00", "Z")
        service = await user_client.get(f"/v1/services/{incident['service_id']}")
        assert service.json()["name"] == "checkout-api"
        [entry] = await timeline(user_client, incident["id"])
        assert entry["type"] == "created"
        assert entry["actor"] == {"type": "user", "id": user.id, "name": "Uma User"}
        assert entry["data"]["severity"] == "critical"

    async def test_defaults(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json={"title": "x"})).json()
        assert incident["severity"] == "medium"
        assert incident["service_id"] is None
        assert incident["labels"] == {} and incident["custom_fields"] == {}
        assert incident["escalation_policy_id"] is None and incident["escalation_level"] == 0

    async def test_service_by_name_reuses_an_existing_service_whatever_the_case(
        self, user_client, factory
    ):
        service = await factory.service(name="Checkout-API")
        body = {"title": "x", "service": "checkout-api"}
        incident = (await user_client.post("/v1/incidents/", json=body)).json()
        assert incident["service_id"] == service.id

    async def test_same_open_dedup_key_returns_the_open_incident(self, user_client):
        body = {"title": "Disk full", "dedup_key": "disk-1", "service": "db"}
        first = await user_client.post("/v1/incidents/", json=body)
        again = await user_client.post("/v1/incidents/", json=body | {"title": "other"})
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["title"] == "Disk full"
        # Another service, or the same key once resolved, opens a new incident.
        other = await user_client.post("/v1/incidents/", json=body | {"service": "web"})
        assert other.status_code == 201
        await user_client.post(f"/v1/incidents/{first.json()['id']}/resolve")
        after = await user_client.post("/v1/incidents/", json=body)
        assert after.status_code == 201 and after.json()["id"] != first.json()["id"]

    async def test_the_open_incident_is_answered_with_its_assignees(
        self, user_client, admin_client, factory
    ):
        """A dedup key's open incident is answered as `GET /v1/incidents/{id}` answers it,
        assignees (read with it in one statement) and their order included."""
        body = {"title": "Disk full", "dedup_key": "disk-9", "service": "db"}
        first = (await user_client.post("/v1/incidents/", json=body)).json()
        assert first["assignees"] == []
        for name, role in (("Zed", "commander"), ("Amy", "responder")):
            person = await factory.user(full_name=name)
            assigned = await admin_client.post(
                f"/v1/incidents/{first['id']}/assign", json={"user_id": person.id, "role": role}
            )
            assert assigned.status_code == 200, assigned.text
        again = await user_client.post("/v1/incidents/", json=body)
        assert again.status_code == 200
        read = (await user_client.get(f"/v1/incidents/{first['id']}")).json()
        assert again.json() == read
        assert [a["full_name"] for a in again.json()["assignees"]] == ["Zed", "Amy"]

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ({}, "title"),
            ({"title": ""}, "title"),
            ({"title": "x" * 501}, "title"),
            ({"title": "x", "description": "d" * 20_001}, "description"),
            ({"title": "x", "severity": "urgent"}, "severity"),
            ({"title": "x", "labels": {f"k{i}": "v" for i in range(65)}}, "at most 64 labels"),
            ({"title": "x", "labels": {"k": "v" * 256}}, "labels"),
            ({"title": "x", "labels": {"bad key": "v"}}, "labels"),
            ({"title": "x", "labels": {"k": 1}}, "labels"),
            ({"title": "x", "labels": ["k", "v"]}, "labels"),
            ({"title": "x", "custom_fields": {"blob": "x" * 16_400}}, "at most 16384"),
            ({"title": "x", "custom_fields": [1]}, "custom_fields"),
            ({"title": "x", "service_id": 1, "service": "a"}, "not both"),
            ({"title": "x", "service": ""}, "service"),
            ({"title": "x", "status": "resolved"}, "status"),
        ],
    )
    async def test_invalid_bodies_are_422(self, user_client, body, fragment):
        response = await user_client.post("/v1/incidents/", json=body)
        assert response.status_code == 422, response.text
        assert fragment in response.text
        assert (await user_client.get("/v1/incidents/")).json()["items"] == []

    async def test_unknown_service_id_is_422(self, user_client):
        response = await user_client.post("/v1/incidents/", json={"title": "x", "service_id": 42})
        assert response.status_code == 422
        assert response.json() == {"detail": "Service 42 does not exist"}


class TestUpdate:
    async def test_update_records_each_change_with_before_and_after(self, user_client, factory):
        service = await factory.service()
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.put(
            f"/v1/incidents/{incident['id']}",
            json={
                "title": "Checkout is down",
                "severity": "critical",
                "service_id": service.id,
                "labels": {"team": "payments"},
                "description": "",
                "version": 1,
            },
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        assert (updated["title"], updated["severity"], updated["version"]) == (
            "Checkout is down", "critical", 2
        )  # fmt: skip
        entry = (await timeline(user_client, incident["id"]))[-1]
        assert entry["type"] == "updated"
        assert entry["data"]["changes"] == {
            "title": {"before": "Checkout is slow", "after": "Checkout is down"},
            "severity": {"before": "high", "after": "critical"},
            "service_id": {"before": None, "after": service.id},
            "labels": {"before": {}, "after": {"team": "payments"}},
        }  # description was already empty: not a change

    async def test_no_change_writes_nothing(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.put(
            f"/v1/incidents/{incident['id']}", json={"title": "Checkout is slow"}
        )
        assert response.status_code == 200
        assert response.json()["version"] == 1
        assert len(await timeline(user_client, incident["id"])) == 1

    async def test_stale_version_is_409_by_body_or_if_match(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}"
        assert (await user_client.put(url, json={"title": "a", "version": 1})).status_code == 200
        stale = await user_client.put(url, json={"title": "b", "version": 1})
        assert stale.status_code == 409
        assert "version 2" in stale.json()["detail"]
        stale_header = await user_client.put(url, json={"title": "b"}, headers={"If-Match": '"1"'})
        assert stale_header.status_code == 409
        fresh = await user_client.put(url, json={"title": "b"}, headers={"If-Match": '"2"'})
        assert fresh.status_code == 200 and fresh.json()["title"] == "b"
        assert (await user_client.get(url)).json()["title"] == "b"

    @pytest.mark.parametrize(
        ("body", "headers"),
        [
            ({"title": None}, {}),
            ({"severity": None}, {}),
            ({"status": "resolved"}, {}),
            ({"service_id": 99}, {}),
            ({"title": "x"}, {"If-Match": "abc"}),
            ({"title": "x", "version": 1}, {"If-Match": "2"}),
        ],
    )
    async def test_bad_updates_are_refused(self, user_client, body, headers):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.put(
            f"/v1/incidents/{incident['id']}", json=body, headers=headers
        )
        assert response.status_code in (400, 422)
        after = (await user_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert after == incident

    async def test_service_can_be_cleared(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json=CREATE | {"service": "a"})).json()
        response = await user_client.put(
            f"/v1/incidents/{incident['id']}", json={"service_id": None}
        )
        assert response.json()["service_id"] is None


# Every action and the statuses from which it is legal (DESIGN.md's state machine).
ACTIONS = {
    "acknowledge": {"triggered"},
    "resolve": {"triggered", "acknowledged", "snoozed"},
    "snooze": {"triggered", "acknowledged", "snoozed"},
    "unsnooze": {"snoozed"},
    "unacknowledge": {"acknowledged"},
    "reopen": {"resolved"},
}
RESULT = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "snooze": "snoozed",
    "unsnooze": "triggered",
    "unacknowledge": "triggered",
    "reopen": "triggered",
}
ENTRY = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "snooze": "snoozed",
    "unsnooze": "unsnoozed",
    "unacknowledge": "unacknowledged",
    "reopen": "reopened",
}
NO_OPS = {("acknowledge", "acknowledged"), ("resolve", "resolved")}


class TestStateMachine:
    @pytest.mark.parametrize("start", ["triggered", "acknowledged", "snoozed", "resolved"])
    @pytest.mark.parametrize("action", list(ACTIONS))
    async def test_every_action_from_every_status(
        self, user_client, factory, harness, start, action
    ):
        extra = (
            {"snoozed_until": harness.clock.now() + timedelta(hours=1)}
            if start == "snoozed"
            else {}
        )
        incident = await factory.incident(status=start, **extra)
        body = {"minutes": 30} if action == "snooze" else None
        response = await user_client.post(f"/v1/incidents/{incident.id}/{action}", json=body)
        types = await factory.timeline_types(incident.id)
        if (action, start) in NO_OPS:
            assert response.status_code == 200
            assert response.json()["status"] == start
            assert response.json()["version"] == 1
            assert types == ["created"]
        elif start in ACTIONS[action]:
            assert response.status_code == 200, response.text
            assert response.json()["status"] == RESULT[action]
            assert response.json()["version"] == 2
            assert types == ["created", ENTRY[action]]
        else:
            assert response.status_code == 409
            assert response.json()["detail"] == (
                f"Cannot {action} incident {incident.id}: its status is {start}"
            )
            assert types == ["created"]

    async def test_acknowledge_and_resolve_record_who_when_and_the_note(
        self, user_client, user, harness
    ):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}"
        harness.clock.advance(minutes=3)
        acked = (await user_client.post(f"{url}/acknowledge", json={"note": "on it"})).json()
        assert acked["acknowledged_by"] == user.id
        assert acked["acknowledged_at"] == harness.clock.now().isoformat().replace("+00:00", "Z")
        harness.clock.advance(minutes=10)
        resolved = (await user_client.post(f"{url}/resolve")).json()
        assert resolved["status"] == "resolved"
        assert resolved["resolved_by"] == user.id
        entries = await timeline(user_client, incident["id"])
        assert [e["type"] for e in entries] == ["created", "acknowledged", "resolved"]
        assert entries[1]["data"] == {"note": "on it"}
        assert entries[2]["data"] == {"from": "acknowledged"}

    async def test_reopen_clears_acknowledgement_and_resolution(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}"
        await user_client.post(f"{url}/acknowledge")
        await user_client.post(f"{url}/resolve")
        reopened = (await user_client.post(f"{url}/reopen")).json()
        assert reopened["status"] == "triggered"
        assert reopened["resolved_at"] is None and reopened["acknowledged_at"] is None


class TestSnooze:
    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({"json": {"minutes": 45}}, timedelta(minutes=45)),
            ({"json": {"hours": 2}}, timedelta(hours=2)),
            ({"params": {"minutes": 10}}, timedelta(minutes=10)),
            ({"params": {"hours": 1}}, timedelta(hours=1)),
        ],
        ids=["body-minutes", "body-hours", "query-minutes", "query-hours"],
    )
    async def test_snooze_forms(self, user_client, harness, kwargs, expected):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.post(f"/v1/incidents/{incident['id']}/snooze", **kwargs)
        assert response.status_code == 200, response.text
        end = (harness.clock.now() + expected).isoformat().replace("+00:00", "Z")
        assert response.json()["snoozed_until"] == end

    async def test_snooze_until_an_explicit_time_with_offset(self, user_client, harness):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        until = harness.clock.now() + timedelta(hours=3)
        response = await user_client.post(
            f"/v1/incidents/{incident['id']}/snooze",
            json={"until": until.astimezone().isoformat()},
        )
        assert response.json()["snoozed_until"] == until.isoformat().replace("+00:00", "Z")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"json": {"minutes": 0}},
            {"json": {"minutes": 10_081}},
            {"json": {"minutes": 5, "hours": 1}},
            {"json": {}},
            {"json": {"until": "2020-01-01T00:00:00Z"}},
            {"json": {"until": "2026-01-05T12:00:00"}},
            {"json": {"until": "2026-03-01T00:00:00Z"}},
            {"params": {"minutes": "soon"}},
            {},
        ],
        ids=["zero", "too-long", "two-forms", "empty", "past", "naive", "beyond-7-days",
             "query-junk", "nothing"],
    )  # fmt: skip
    async def test_bad_snoozes_are_refused(self, user_client, kwargs):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.post(f"/v1/incidents/{incident['id']}/snooze", **kwargs)
        assert response.status_code in (400, 422), response.text
        after = (await user_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert after["status"] == "triggered"

    async def test_snooze_ends_by_itself_when_the_worker_runs(self, user_client, harness):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}"
        await user_client.post(f"{url}/acknowledge")
        await user_client.post(f"{url}/snooze", json={"minutes": 30})
        harness.clock.advance(minutes=29, seconds=59)
        assert (await harness.run_jobs())["wake_snoozed"] == 0
        assert (await user_client.get(url)).json()["status"] == "snoozed"
        harness.clock.advance(seconds=1)
        assert (await harness.run_jobs())["wake_snoozed"] == 1
        woken = (await user_client.get(url)).json()
        assert woken["status"] == "triggered"
        assert woken["snoozed_until"] is None and woken["acknowledged_by"] is None
        last = (await timeline(user_client, incident["id"]))[-1]
        assert last["type"] == "unsnoozed"
        assert last["actor"] == {"type": "system", "id": None, "name": "system"}
        # A second pass finds nothing more to do.
        assert (await harness.run_jobs())["wake_snoozed"] == 0
        assert len(await timeline(user_client, incident["id"])) == 4

    async def test_resolved_before_the_end_is_left_alone(self, user_client, harness):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}"
        await user_client.post(f"{url}/snooze", json={"minutes": 5})
        await user_client.post(f"{url}/resolve")
        harness.clock.advance(minutes=10)
        await harness.run_jobs()
        assert (await user_client.get(url)).json()["status"] == "resolved"


class TestAssign:
    async def test_set_add_change_and_remove(self, user_client, user, factory):
        a = await factory.user(full_name="Ann")
        b = await factory.user(full_name="Bob")
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}/assign"

        first = (await user_client.post(url, json={"user_ids": [a.id, b.id]})).json()
        assert [p["id"] for p in first["assignees"]] == [a.id, b.id]
        assert {p["response_role"] for p in first["assignees"]} == {"responder"}
        assert first["assignees"][0]["full_name"] == "Ann"

        second = (await user_client.post(url, json={"user_id": a.id, "role": "commander"})).json()
        roles = {p["id"]: p["response_role"] for p in second["assignees"]}
        assert roles == {a.id: "commander", b.id: "responder"}

        third = (await user_client.post(url, json={"user_ids": [a.id, user.id]})).json()
        roles = {p["id"]: p["response_role"] for p in third["assignees"]}
        assert roles == {a.id: "commander", user.id: "responder"}

        entries = [
            e for e in await timeline(user_client, incident["id"]) if e["type"] == "assigned"
        ]

        def part(uid, role="responder"):
            return {"user_id": uid, "role": role}

        assert [e["data"] for e in entries] == [
            {"added": [part(a.id), part(b.id)], "removed": [], "changed": []},
            {"added": [], "removed": [], "changed": [part(a.id, "commander")]},
            {"added": [part(user.id)], "removed": [b.id], "changed": []},
        ]

        same = await user_client.post(url, json={"user_ids": [a.id, user.id]})
        assert same.status_code == 200
        assert len(await timeline(user_client, incident["id"])) == 4  # nothing new
        cleared = (await user_client.post(url, json={"user_ids": []})).json()
        assert cleared["assignees"] == []

    @pytest.mark.parametrize(
        "body",
        [{}, {"user_ids": [1], "user_id": 1}, {"user_ids": [1], "role": "x"}, {"user_ids": "1"},
         {"user_ids": list(range(1, 52))}, {"user_id": 0}],
    )  # fmt: skip
    async def test_bad_bodies_are_422(self, user_client, body):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        response = await user_client.post(f"/v1/incidents/{incident['id']}/assign", json=body)
        assert response.status_code == 422

    async def test_unknown_or_inactive_users_are_refused_by_name(self, user_client, factory):
        gone = await factory.user(is_active=False)
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}/assign"
        response = await user_client.post(url, json={"user_ids": [gone.id, 999_999]})
        assert response.status_code == 422
        assert response.json()["detail"] == f"No active user with id {gone.id}, 999999"
        assert (await user_client.get(f"/v1/incidents/{incident['id']}")).json()["assignees"] == []

    async def test_list_filters_by_assignee_and_me(self, user_client, user, factory):
        other = await factory.user()
        mine = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        theirs = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        await user_client.post(f"/v1/incidents/{mine['id']}/assign", json={"user_ids": [user.id]})
        await user_client.post(f"/v1/incidents/{theirs['id']}/assign", json={"user_id": other.id})
        me = await user_client.get("/v1/incidents/", params={"assignee_id": "me"})
        assert [i["id"] for i in me.json()["items"]] == [mine["id"]]
        them = await user_client.get("/v1/incidents/", params={"assignee_id": other.id})
        assert [i["id"] for i in them.json()["items"]] == [theirs["id"]]


class TestComments:
    async def test_add_and_list(self, user_client, admin_client, user, admin):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}/comments"
        first = await user_client.post(url, json={"content": "Rolling back **4.2.1**"})
        assert first.status_code == 201
        body = first.json()
        assert body["author"] == {"id": user.id, "name": "Uma User"}
        assert (body["incident_id"], body["content"]) == (incident["id"], "Rolling back **4.2.1**")
        await admin_client.post(url, json={"content": "Thanks"})
        listed = (await user_client.get(url)).json()
        assert [c["content"] for c in listed["items"]] == ["Rolling back **4.2.1**", "Thanks"]
        assert listed["next_cursor"] is None
        paged = (await user_client.get(url, params={"limit": 1})).json()
        assert len(paged["items"]) == 1 and paged["next_cursor"]
        rest = await user_client.get(url, params={"limit": 1, "cursor": paged["next_cursor"]})
        assert [c["content"] for c in rest.json()["items"]] == ["Thanks"]
        entries = await timeline(user_client, incident["id"])
        assert [e["type"] for e in entries] == ["created", "commented", "commented"]
        assert entries[1]["data"] == {"comment_id": body["id"]}

    @pytest.mark.parametrize("content", ["", "   ", "x" * 10_001])
    async def test_bad_comments_are_422(self, user_client, content):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        url = f"/v1/incidents/{incident['id']}/comments"
        assert (await user_client.post(url, json={"content": content})).status_code == 422
        assert (await user_client.get(url)).json()["items"] == []

    async def test_comment_keeps_its_author_name_after_the_account_goes(
        self, admin_client, factory, harness
    ):
        author = await factory.user(full_name="Temp Person")
        incident = await factory.incident()
        async with harness.make_client(factory.token(author)) as client:
            await client.post(f"/v1/incidents/{incident.id}/comments", json={"content": "hi"})
        assert (await admin_client.delete(f"/v1/users/{author.id}")).status_code == 200
        [comment] = (await admin_client.get(f"/v1/incidents/{incident.id}/comments")).json()[
            "items"
        ]
        assert comment["author"] == {"id": None, "name": "Temp Person"}


class TestTimelineIsAppendOnly:
    async def test_no_method_changes_or_deletes_an_entry(self, user_client):
        incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
        [entry] = await timeline(user_client, incident["id"])
        base = f"/v1/incidents/{incident['id']}/timeline"
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert (await user_client.request(method, base)).status_code == 405
            assert (await user_client.request(method, f"{base}/{entry['id']}")).status_code in (
                404,
                405,
            )
        assert await timeline(user_client, incident["id"]) == [entry]

    async def test_incidents_are_never_deleted(self, admin_client):
        incident = (await admin_client.post("/v1/incidents/", json=CREATE)).json()
        response = await admin_client.delete(f"/v1/incidents/{incident['id']}")
        assert response.status_code == 405
        assert (await admin_client.get(f"/v1/incidents/{incident['id']}")).status_code == 200


async def test_missing_incident_is_404_everywhere(user_client):
    for method, suffix, body in [
        ("GET", "", None), ("PUT", "", {"title": "x"}), ("POST", "/acknowledge", None),
        ("POST", "/resolve", None), ("POST", "/snooze", {"minutes": 5}),
        ("POST", "/unsnooze", None), ("POST", "/unacknowledge", None), ("POST", "/reopen", None),
        ("POST", "/assign", {"user_ids": []}), ("POST", "/comments", {"content": "x"}),
        ("GET", "/comments", None), ("GET", "/timeline", None),
    ]:  # fmt: skip
        response = await user_client.request(method, f"/v1/incidents/424242{suffix}", json=body)
        assert response.status_code == 404, (method, suffix)
        assert response.json() == {"detail": "Incident 424242 not found"}


class TestList:
    @pytest.fixture
    async def sample(self, factory, harness):
        """Six incidents one minute apart (oldest first) across statuses, severities, services."""
        a, b = await factory.service(name="alpha"), await factory.service(name="beta")
        start = harness.clock.now()
        specs = [
            ("Disk full on db-1", "triggered", "critical", a.id, {"team": "infra"}),
            ("Checkout slow", "acknowledged", "high", b.id, {"team": "payments", "env": "prod"}),
            ("Checkout errors", "triggered", "critical", b.id, {"team": "payments", "env": "dev"}),
            ("Cert expiring 100%_done", "resolved", "low", None, {}),
            ("Search down", "snoozed", "critical", a.id, {"team": "search"}),
            ("Queue backlog", "triggered", "medium", None, {"team": "payments", "env": "prod"}),
        ]
        made = []
        for minute, (title, status, severity, service_id, labels) in enumerate(specs):
            made.append(
                await factory.incident(
                    title=title, status=status, severity=severity, service_id=service_id,
                    labels=labels, dedup_key=f"key-{minute}",
                    created_at=start + timedelta(minutes=minute),
                    updated_at=start + timedelta(minutes=10 - minute),
                )
            )  # fmt: skip
        return made, a, b

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({}, [5, 4, 3, 2, 1, 0]),
            ({"status": "triggered"}, [5, 2, 0]),
            ({"status": ["triggered", "snoozed"]}, [5, 4, 2, 0]),
            ({"severity": "critical"}, [4, 2, 0]),
            ({"status": "triggered", "severity": ["critical", "medium"]}, [5, 2, 0]),
            ({"service_id": "A"}, [4, 0]),
            ({"label": "team:payments"}, [5, 2, 1]),
            ({"label": ["team:payments", "env:prod"]}, [5, 1]),
            ({"label": "env:"}, []),
            ({"q": "checkout"}, [2, 1]),
            ({"q": "100%_"}, [3]),
            ({"q": "key-4"}, [4]),
            ({"created_after": "T+2"}, [5, 4, 3, 2]),
            ({"created_before": "T+2"}, [1, 0]),
            ({"created_after": "T+1", "created_before": "T+3"}, [2, 1]),
            ({"sort": "created_at"}, [0, 1, 2, 3, 4, 5]),
            ({"sort": "-updated_at"}, [0, 1, 2, 3, 4, 5]),
            ({"sort": "updated_at"}, [5, 4, 3, 2, 1, 0]),
        ],
    )
    async def test_filters_and_sorts(self, user_client, harness, sample, params, expected):
        made, a, _ = sample
        start = harness.clock.now()
        resolved = {}
        for key, value in params.items():
            if value == "A":
                value = a.id
            elif isinstance(value, str) and value.startswith("T+"):
                value = (start + timedelta(minutes=int(value[2:]))).isoformat()
            resolved[key] = value
        response = await user_client.get("/v1/incidents/", params=resolved)
        assert response.status_code == 200, response.text
        assert [i["id"] for i in response.json()["items"]] == [made[n].id for n in expected]

    @pytest.mark.parametrize("sort", ["-created_at", "created_at", "-updated_at", "updated_at"])
    async def test_every_sort_pages_with_its_cursor(self, user_client, sample, sort):
        whole = (await user_client.get("/v1/incidents/", params={"sort": sort})).json()["items"]
        seen, cursor = [], None
        while True:
            params = {"sort": sort, "limit": 4} | ({"cursor": cursor} if cursor else {})
            body = (await user_client.get("/v1/incidents/", params=params)).json()
            seen += [i["id"] for i in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert seen == [i["id"] for i in whole]

    async def test_a_cursor_only_works_with_its_own_sort(self, user_client, sample):
        page = (await user_client.get("/v1/incidents/", params={"limit": 2})).json()
        other = await user_client.get(
            "/v1/incidents/",
            params={"limit": 2, "sort": "created_at", "cursor": page["next_cursor"]},
        )
        assert other.status_code == 422

    async def test_each_item_is_written_as_the_incident_itself_is(
        self, user_client, admin_client, factory, harness, sample
    ):
        """The list writes its rows straight to JSON (no response model on the way): each item
        must be what `GET /v1/incidents/{id}` (through `IncidentRead`) answers, key for key and
        in the same order, for every kind of value: assignees in their order, timestamps with
        and without microseconds, nested and non-ASCII custom fields, nulls."""
        made, _, _ = sample
        people = [await factory.user(full_name="Zoë"), await factory.user(full_name="Ann")]
        for person, role in zip(people, ("commander", "responder"), strict=True):
            assigned = await admin_client.post(
                f"/v1/incidents/{made[1].id}/assign", json={"user_id": person.id, "role": role}
            )
            assert assigned.status_code == 200, assigned.text
        whole = harness.clock.now().replace(microsecond=0)
        await factory.incident(
            title="Ünïcode ✓", custom_fields={"n": 1.5, "deep": {"list": [1, None, "x"]}},
            labels={"k": "v"}, acknowledged_at=whole, created_at=whole - timedelta(hours=1),
        )  # fmt: skip
        listed = await user_client.get("/v1/incidents/", params={"limit": 100})
        assert listed.status_code == 200, listed.text
        assert listed.headers["content-type"] == "application/json"
        items = listed.json()["items"]
        assert len(items) == 7
        assert [a["full_name"] for i in items for a in i["assignees"]] == ["Zoë", "Ann"]
        for item in items:
            one = (await user_client.get(f"/v1/incidents/{item['id']}")).json()
            assert item == one
            assert list(item) == list(one)
            assert [list(a) for a in item["assignees"]] == [list(a) for a in one["assignees"]]

    @pytest.mark.parametrize(
        "params",
        [
            {"assignee_id": "9999999999999999999"},
            {"assignee_id": "someone"},
            {"label": "no-colon"},
            {"status": "open"},
            {"sort": "title"},
            {"created_after": "2026-01-01T00:00:00"},
            {"limit": 0},
            {"limit": 501},
        ],
    )
    async def test_bad_filters_are_refused(self, user_client, params):
        response = await user_client.get("/v1/incidents/", params=params)
        assert response.status_code in (400, 422)
        assert "detail" in response.json()


async def test_snooze_duration_in_the_query_and_note_in_the_body(user_client, harness):
    incident = (await user_client.post("/v1/incidents/", json=CREATE)).json()
    response = await user_client.post(
        f"/v1/incidents/{incident['id']}/snooze",
        params={"minutes": 10},
        json={"note": "maintenance window"},
    )
    assert response.status_code == 200, response.text
    end = harness.clock.now() + timedelta(minutes=10)
    assert response.json()["snoozed_until"] == end.isoformat().replace("+00:00", "Z")
    entry = (await timeline(user_client, incident["id"]))[-1]
    assert entry["data"]["note"] == "maintenance window"


@pytest.mark.parametrize("content_type", ["Application/JSON", "application/json; charset=UTF-8"])
async def test_input_guard_reads_the_media_type_case_insensitively(user_client, content_type):
    for raw in (b'{"title": "a\\u0000b"}', b'{"title": "x", "custom_fields": {"a": NaN}}'):
        response = await user_client.post(
            "/v1/incidents/", content=raw, headers={"Content-Type": content_type}
        )
        assert response.status_code == 422, raw
    assert (await user_client.get("/v1/incidents/")).json()["items"] == []


async def test_nul_in_a_multipart_login_is_refused(client):
    response = await client.post(
        "/v1/auth/login/access-token",
        files={"username": (None, "a\x00b"), "password": (None, "whatever")},
    )
    assert response.status_code == 422


async def test_assignees_carry_no_contact_details(admin_client, user_client, factory):
    """Every user reads every incident: an assignee's email and phone are not for all of them
    (admins read them through /v1/users/{id})."""
    person = await factory.user(email="oncall@example.com", phone="+14155550111")
    incident = (await admin_client.post("/v1/incidents/", json={"title": "Disk full"})).json()
    assigned = await admin_client.post(
        f"/v1/incidents/{incident['id']}/assign", json={"user_id": person.id, "role": "commander"}
    )
    assert assigned.status_code == 200, assigned.text
    for client in (user_client, admin_client):
        read = await client.get(f"/v1/incidents/{incident['id']}")
        [assignee] = read.json()["assignees"]
        assert (assignee["id"], assignee["response_role"]) == (person.id, "commander")
        assert "oncall@example.com" not in read.text and "+14155550111" not in read.text
    listed = await user_client.get("/v1/incidents/")
    assert "oncall@example.com" not in listed.text
