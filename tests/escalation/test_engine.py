"""The engine, driven by moving the clock and running the worker's jobs."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.core.db import session_scope
from app.escalation import engine
from app.escalation.policy import Conditions
from app.flows import paging
from app.incidents.models import Incident, TimelineEntry
from app.notifications.models import Notification
from tests.support.settings import make_settings

POLICIES = "/v1/escalation/policies/"


def step(delay, *user_ids, actions=None):
    return {
        "delay_minutes": delay,
        "targets": [{"type": "user", "id": uid} for uid in user_ids],
        "actions": actions or [{"type": "notify"}],
    }


async def make_policy(client, *steps, **fields):
    response = await client.post(POLICIES, json={"name": "p", "steps": list(steps)} | fields)
    assert response.status_code == 201, response.text
    return response.json()


async def open_incident(client, **fields):
    response = await client.post("/v1/incidents/", json={"title": "Checkout down"} | fields)
    assert response.status_code == 201, response.text
    return response.json()


async def events(client, incident_id):
    response = await client.get(f"/v1/incidents/{incident_id}/escalation-events")
    assert response.status_code == 200
    return response.json()["items"]


async def notifications(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        rows = await session.scalars(
            select(Notification)
            .where(Notification.incident_id == incident_id)
            .order_by(Notification.id)
        )
        return list(rows)


async def types(client, incident_id):
    response = await client.get(f"/v1/incidents/{incident_id}/timeline", params={"limit": 500})
    return [e["type"] for e in response.json()["items"]]


class TestPure:
    @pytest.mark.parametrize(
        ("conditions", "expected"),
        [
            ({}, True),
            ({"severities": ["critical"]}, True),
            ({"severities": ["low"]}, False),
            ({"service_ids": [7]}, True),
            ({"service_ids": [8]}, False),
            ({"labels": {"team": "payments"}}, True),
            ({"labels": {"team": "search"}}, False),
            ({"labels": {"missing": ""}}, False),
            ({"title_contains": "CHECKOUT"}, True),
            ({"title_contains": "search"}, False),
            ({"severities": ["critical"], "title_contains": "search"}, False),
        ],
    )
    def test_matches(self, conditions, expected):
        incident = Incident(
            title="Checkout down", severity="critical", service_id=7, labels={"team": "payments"}
        )
        assert Conditions.of(conditions).matches(incident) is expected

    @pytest.mark.parametrize(
        ("position", "steps", "repeats", "expected"),
        [
            ((1, 1), 3, 0, (2, 1)),
            ((3, 1), 3, 0, None),
            ((3, 1), 3, 2, (1, 2)),
            ((3, 2), 3, 2, (1, 3)),
            ((3, 3), 3, 2, None),
            ((1, 1), 1, 0, None),
        ],
    )
    def test_next_position(self, position, steps, repeats, expected):
        assert engine.next_position(*position, steps=steps, repeat_count=repeats) == expected


class TestChoosingThePolicy:
    async def test_lowest_priority_of_the_active_matching_policies_wins(self, admin_client, admin):
        await make_policy(admin_client, step(0, admin.id), priority=1, is_active=False)
        low = await make_policy(admin_client, step(0, admin.id), priority=5,
                                conditions={"severities": ["critical"]})  # fmt: skip
        await make_policy(admin_client, step(0, admin.id), priority=9)
        await make_policy(admin_client, step(0, admin.id), priority=2,
                          conditions={"labels": {"team": "search"}})  # fmt: skip
        incident = await open_incident(admin_client, severity="critical")
        assert incident["escalation_policy_id"] == low["id"]
        assert incident["escalation_status"] == "active"
        entries = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
        applied = [e for e in entries["items"] if e["type"] == "policy_applied"]
        assert applied[0]["data"]["policy_id"] == low["id"]
        assert applied[0]["data"]["reason"] == "conditions matched"

    async def test_the_service_default_when_nothing_matches(self, admin_client, admin):
        only_critical = await make_policy(
            admin_client, step(0, admin.id), conditions={"severities": ["critical"]}
        )
        default = await make_policy(
            admin_client, step(0, admin.id), conditions={"title_contains": "never-matches"}
        )
        service = (
            await admin_client.post(
                "/v1/services/", json={"name": "api", "escalation_policy_id": default["id"]}
            )
        ).json()
        critical = await open_incident(admin_client, severity="critical", service_id=service["id"])
        low = await open_incident(admin_client, severity="low", service_id=service["id"])
        assert critical["escalation_policy_id"] == only_critical["id"]
        assert low["escalation_policy_id"] == default["id"]

    async def test_no_policy_means_no_escalation_and_the_incident_says_so(self, admin_client):
        incident = await open_incident(admin_client)
        assert incident["escalation_policy_id"] is None
        assert incident["escalation_status"] == "none"
        entries = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
        applied = [e for e in entries["items"] if e["type"] == "policy_applied"]
        assert "will not escalate" in applied[0]["data"]["reason"]
        assert await events(admin_client, incident["id"]) == []
        escalate = await admin_client.post(f"/v1/incidents/{incident['id']}/escalate")
        assert escalate.status_code == 409
        assert escalate.json()["detail"] == f"Incident {incident['id']} has no escalation policy"


class TestFiring:
    async def test_steps_fire_on_time_once_and_repeat_then_complete(
        self, admin_client, admin, factory, harness
    ):
        second = await factory.user()
        await make_policy(
            admin_client, step(0, admin.id), step(10, second.id, admin.id), repeat_count=1
        )
        incident = await open_incident(admin_client)
        [first] = await events(admin_client, incident["id"])
        assert (first["step"], first["cycle"], first["status"]) == (1, 1, "scheduled")

        await harness.run_jobs()
        fired = await events(admin_client, incident["id"])
        assert fired[0]["status"] == "executed"
        assert fired[0]["notified_user_ids"] == [admin.id]
        assert (fired[1]["step"], fired[1]["status"]) == (2, "scheduled")
        due = harness.clock.now() + timedelta(minutes=10)
        assert fired[1]["due_at"] == due.isoformat().replace("+00:00", "Z")

        # Nothing more fires before the second step is due, however often the worker runs.
        harness.clock.advance(minutes=9, seconds=59)
        await harness.run_jobs()
        await harness.run_jobs()
        assert len(await events(admin_client, incident["id"])) == 2
        harness.clock.advance(seconds=1)
        await harness.run_jobs()
        after = await events(admin_client, incident["id"])
        assert after[1]["status"] == "executed"
        assert after[1]["notified_user_ids"] == [second.id, admin.id]
        # The repeat starts again at step 1 after repeat_delay_minutes (default 5), not at once.
        assert (after[2]["step"], after[2]["cycle"], after[2]["status"]) == (1, 2, "scheduled")
        repeat_due = harness.clock.now() + timedelta(minutes=5)
        assert after[2]["due_at"] == repeat_due.isoformat().replace("+00:00", "Z")
        await harness.run_jobs()
        assert (await events(admin_client, incident["id"]))[2]["status"] == "scheduled"
        harness.clock.advance(minutes=5)
        await harness.run_jobs()
        harness.clock.advance(minutes=10)
        await harness.run_jobs()
        final = await events(admin_client, incident["id"])
        assert [(e["step"], e["cycle"], e["status"]) for e in final] == [
            (1, 1, "executed"), (2, 1, "executed"), (1, 2, "executed"), (2, 2, "executed")
        ]  # fmt: skip
        incident = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert (incident["escalation_status"], incident["escalation_level"]) == ("completed", 2)
        # One page per user per step, each delivered (the log channel), none twice.
        pages = await notifications(harness, incident["id"])
        assert len(pages) == 1 + 2 + 1 + 2
        assert {p.status for p in pages} == {"sent"}
        assert len({p.key for p in pages}) == len(pages)
        timeline = await types(admin_client, incident["id"])
        assert timeline.count("escalated") == 4 and timeline.count("notified") == 6

    async def test_acknowledge_cancels_pending_steps_and_undelivered_pages(
        self, admin_client, admin, harness
    ):
        await make_policy(admin_client, step(0, admin.id), step(5, admin.id))
        incident = await open_incident(admin_client)
        async with session_scope(harness.app.state.sessionmaker) as session:
            # Fire step 1 but do not deliver yet: its page is still pending.
            await paging.fire_due(session, now=harness.clock.now(), batch=10)
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        listed = await events(admin_client, incident["id"])
        assert [(e["step"], e["status"]) for e in listed] == [(1, "executed"), (2, "cancelled")]
        assert listed[1]["detail"] == "acknowledged"
        [page] = await notifications(harness, incident["id"])
        assert page.status == "cancelled"
        harness.clock.advance(minutes=30)
        assert (await harness.run_jobs())["fire_escalations"] == 0
        acked = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert acked["escalation_status"] == "stopped"

    @pytest.mark.parametrize(
        ("leave", "back"),
        [("snooze", "unsnooze"), ("acknowledge", "unacknowledge"), ("resolve", "reopen")],
    )
    async def test_a_return_to_triggered_starts_again_at_step_one(
        self, admin_client, admin, harness, leave, back
    ):
        await make_policy(admin_client, step(0, admin.id), step(5, admin.id))
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        url = f"/v1/incidents/{incident['id']}"
        await admin_client.post(
            f"{url}/{leave}", json={"minutes": 30} if leave == "snooze" else None
        )
        harness.clock.advance(minutes=1)
        assert (await admin_client.post(f"{url}/{back}")).status_code == 200
        listed = await events(admin_client, incident["id"])
        assert [(e["run"], e["step"], e["status"]) for e in listed] == [
            (1, 1, "executed"), (1, 2, "cancelled"), (2, 1, "scheduled")
        ]  # fmt: skip
        await harness.run_jobs()
        assert (await events(admin_client, incident["id"]))[2]["status"] == "executed"

    async def test_snooze_expiry_restarts_escalation(self, admin_client, admin, harness):
        await make_policy(admin_client, step(0, admin.id))
        incident = await open_incident(admin_client)
        await admin_client.post(f"/v1/incidents/{incident['id']}/snooze", json={"minutes": 15})
        harness.clock.advance(minutes=15)
        await harness.run_jobs()  # wakes the incident, then fires the new run's first step
        listed = await events(admin_client, incident["id"])
        assert [(e["run"], e["status"]) for e in listed] == [(1, "cancelled"), (2, "executed")]

    async def test_in_flight_incidents_keep_the_steps_they_started_with(
        self, admin_client, admin, factory, harness
    ):
        other = await factory.user()
        policy = await make_policy(admin_client, step(0, admin.id), step(5, admin.id))
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        await admin_client.put(
            f"{POLICIES}{policy['id']}", json={"steps": [step(0, other.id), step(1, other.id)]}
        )
        harness.clock.advance(minutes=5)
        await harness.run_jobs()
        old = await events(admin_client, incident["id"])
        assert [e["notified_user_ids"] for e in old] == [[admin.id], [admin.id]]
        fresh = await open_incident(admin_client)
        await harness.run_jobs()
        assert (await events(admin_client, fresh["id"]))[0]["notified_user_ids"] == [other.id]

    async def test_escalate_fires_the_next_step_now_and_retimes_the_rest(
        self, admin_client, user_client, admin, user, harness
    ):
        await make_policy(admin_client, step(0, admin.id), step(30, user.id), step(10, admin.id))
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        harness.clock.advance(minutes=2)
        response = await user_client.post(f"/v1/incidents/{incident['id']}/escalate")
        assert response.status_code == 200, response.text
        assert response.json()["escalation_level"] == 2
        listed = await events(admin_client, incident["id"])
        assert listed[1]["status"] == "executed"
        assert listed[1]["executed_at"] == harness.clock.now().isoformat().replace("+00:00", "Z")
        assert listed[2]["due_at"] == (
            harness.clock.now() + timedelta(minutes=10)
        ).isoformat().replace("+00:00", "Z")
        entries = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
        escalated = [e for e in entries["items"] if e["type"] == "escalated"]
        assert escalated[-1]["actor"]["id"] == user.id
        # An acknowledged incident cannot be escalated.
        await user_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        refused = await user_client.post(f"/v1/incidents/{incident['id']}/escalate")
        assert refused.status_code == 409

    async def test_assign_and_set_severity_actions(self, admin_client, admin, factory, harness):
        responder = await factory.user(full_name="Responder")
        await make_policy(
            admin_client,
            step(0, responder.id, actions=[{"type": "assign"},
                                           {"type": "set_severity", "severity": "critical"}]),
        )  # fmt: skip
        incident = await open_incident(admin_client, severity="low")
        await harness.run_jobs()
        after = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert after["severity"] == "critical"
        assert [a["id"] for a in after["assignees"]] == [responder.id]
        assert await notifications(harness, incident["id"]) == []  # no notify action
        timeline = await types(admin_client, incident["id"])
        assert {"assigned", "updated", "escalated"} <= set(timeline)

    async def test_webhook_action_posts_json_to_a_real_receiver(
        self, admin_client, admin, harness, http_receiver
    ):
        await make_policy(
            admin_client,
            step(0, actions=[{"type": "webhook", "url": f"{http_receiver.url}/hook"}]),
        )
        incident = await open_incident(admin_client, severity="high")
        await harness.run_jobs()
        [request] = http_receiver.requests
        assert request["path"] == "/hook"
        payload = json.loads(request["body"])
        assert payload["event"] == "incident.escalated"
        assert payload["incident"]["id"] == incident["id"]
        assert (payload["data"]["step"], payload["data"]["cycle"]) == (1, 1)
        assert payload["id"].startswith("escalation:")
        [row] = await notifications(harness, incident["id"])
        assert (row.channel, row.status, row.attempts) == ("webhook", "sent", 1)

    async def test_a_failing_webhook_is_retried_with_backoff_then_marked_failed(
        self, admin_client, harness, http_receiver
    ):
        http_receiver.status = 500
        await make_policy(
            admin_client, step(0, actions=[{"type": "webhook", "url": http_receiver.url}])
        )
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await notifications(harness, incident["id"])
        assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 500: ok")
        # About 30 s, 2 min, 8 min, 32 min, 1 h apart, each within ±20 %.
        for wait in (36, 144, 576, 2304, 4320):
            before = row.next_attempt_at
            harness.clock.advance(seconds=wait)
            await harness.run_jobs()
            [row] = await notifications(harness, incident["id"])
        assert (row.status, row.attempts) == ("failed", 6)
        assert len(http_receiver.requests) == 6
        assert row.next_attempt_at == before
        async with session_scope(harness.app.state.sessionmaker) as session:
            kinds = set(
                await session.scalars(
                    select(TimelineEntry.type).where(TimelineEntry.incident_id == incident["id"])
                )
            )
        assert "notification_failed" in kinds

    async def test_one_broken_incident_does_not_stop_the_others(
        self, admin_client, admin, harness, caplog
    ):
        await make_policy(admin_client, step(0, admin.id), step(1, admin.id))
        broken = await open_incident(admin_client)
        healthy = await open_incident(admin_client)
        async with session_scope(harness.app.state.sessionmaker) as session:
            # A stored snapshot that has lost its steps: firing step 1 cannot schedule step 2.
            await session.execute(
                update(Incident).where(Incident.id == broken["id"])
                .values(escalation_snapshot={"policy_id": 1, "name": "x", "repeat_count": 0})
            )  # fmt: skip
        await harness.run_jobs()
        assert [e["status"] for e in await events(admin_client, healthy["id"])] == [
            "executed", "scheduled"
        ]  # fmt: skip
        [failed] = await events(admin_client, broken["id"])
        assert failed["status"] == "failed"
        assert failed["detail"].startswith("KeyError")
        assert "escalation_failed" in await types(admin_client, broken["id"])
        assert "escalation step failed" in caplog.text


async def test_a_step_due_now_fires_at_once_through_the_in_process_worker(
    database_url, clock, factory, harness
):
    """The request that schedules a step wakes the worker; its poll interval is 30 s here."""
    from app.main import create_app

    admin = await factory.user(role="admin")
    settings = make_settings(database_url, worker_in_process=True, worker_poll_interval_seconds=30)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.1)  # the worker's first pass is done; it now waits 30 s
        async with harness.make_client(factory.token(admin)) as client:
            client._transport = __import__("httpx").ASGITransport(app=app)
            await make_policy(client, step(0, admin.id))
            incident = await open_incident(client)
            for _ in range(100):  # bounded: at most 5 s
                listed = await events(client, incident["id"])
                if listed and listed[0]["status"] == "executed":
                    break
                await asyncio.sleep(0.05)
        assert listed[0]["status"] == "executed"


async def test_each_fired_step_is_logged(admin_client, admin, harness, caplog):
    import logging

    await make_policy(admin_client, step(0, admin.id))
    incident = await open_incident(admin_client)
    with caplog.at_level(logging.INFO, logger="app.escalation.firing"):
        await harness.run_jobs()
    [event] = await events(admin_client, incident["id"])
    assert (
        f"escalation step executed: incident {incident['id']} event {event['id']} "
        f"paged [{admin.id}]"
    ) in caplog.text


async def test_after_an_outage_the_ladder_is_not_replayed_at_once(admin_client, admin, harness):
    await make_policy(admin_client, step(0, admin.id), step(5, admin.id), step(5, admin.id),
                      repeat_count=2)  # fmt: skip
    incident = await open_incident(admin_client)
    harness.clock.advance(minutes=55)  # the worker was down (tokens last an hour)
    await harness.run_jobs()
    listed = await events(admin_client, incident["id"])
    assert [(e["step"], e["status"]) for e in listed] == [(1, "executed"), (2, "scheduled")]
    assert listed[0]["detail"].startswith("fired 3300.000 s after due")
    due = harness.clock.now() + timedelta(minutes=5)
    assert listed[1]["due_at"] == due.isoformat().replace("+00:00", "Z")


async def test_a_step_whose_targets_are_all_inactive_says_so(admin_client, admin, factory, harness):
    leaver = await factory.user()
    await make_policy(admin_client, step(0, leaver.id))
    incident = await open_incident(admin_client)
    await admin_client.put(f"/v1/users/{leaver.id}", json={"is_active": False})
    await harness.run_jobs()
    [event] = await events(admin_client, incident["id"])
    assert event["notified_user_ids"] == []
    assert f"skipped user {leaver.id}: inactive or deleted" in event["detail"]
    timeline = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()["items"]
    failed = [e for e in timeline if e["type"] == "escalation_failed"]
    assert failed and "nobody reachable" in failed[0]["data"]["error"]


async def test_a_policy_whose_target_left_can_still_be_renamed_or_paused(admin_client, factory):
    leaver = await factory.user()
    policy = await make_policy(admin_client, step(0, leaver.id))
    await admin_client.put(f"/v1/users/{leaver.id}", json={"is_active": False})
    response = await admin_client.put(
        f"{POLICIES}{policy['id']}", json={"name": "renamed", "is_active": False}
    )
    assert response.status_code == 200, response.text
    # Changing the steps is checked: the inactive user cannot be put back in.
    again = await admin_client.put(
        f"{POLICIES}{policy['id']}", json={"steps": [step(0, leaver.id)]}
    )
    assert again.status_code == 422


async def test_the_longest_title_still_pages(admin_client, admin, harness):
    await make_policy(admin_client, step(0, admin.id))
    incident = await open_incident(admin_client, title="t" * 500)
    await harness.run_jobs()
    [event] = await events(admin_client, incident["id"])
    assert event["status"] == "executed"
    [page] = await notifications(harness, incident["id"])
    # The subject stored is the one mailed (one header line, cut to 250 characters).
    assert page.status == "sent" and len(page.subject) == 250 and page.subject.endswith("t…")


async def test_a_slow_webhook_does_not_delay_the_next_page(database_url, clock, factory, harness):
    """Delivery runs in its own loop: firing goes on while a webhook takes its time."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from app.main import create_app

    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    admin = await factory.user(role="admin")
    try:
        settings = make_settings(
            database_url, worker_in_process=True, worker_poll_interval_seconds=0.05
        )
        app = create_app(settings, clock=clock)
        async with app.router.lifespan_context(app):
            transport = __import__("httpx").ASGITransport(app=app)
            async with harness.make_client(factory.token(admin)) as client:
                client._transport = transport
                hook = f"http://127.0.0.1:{server.server_address[1]}/slow"
                await make_policy(client, step(0, actions=[{"type": "webhook", "url": hook}]),
                                  conditions={"title_contains": "slow"})  # fmt: skip
                await make_policy(client, step(0, admin.id), conditions={"title_contains": "fast"})
                await open_incident(client, title="slow hook")
                await asyncio.sleep(0.3)  # the webhook is now in flight, held by the receiver
                fast = await open_incident(client, title="fast page")
                for _ in range(60):  # bounded: at most 3 s, well under the webhook's 10 s
                    listed = await events(client, fast["id"])
                    if listed and listed[0]["status"] == "executed":
                        break
                    await asyncio.sleep(0.05)
                assert listed[0]["status"] == "executed"
                release.set()
    finally:
        release.set()
        server.shutdown()
        server.server_close()


async def test_acknowledging_while_the_worker_fires_leaves_nothing_scheduled(
    admin_client, admin, harness
):
    """Both orders of the race (request first, worker first) end with no step left to fire."""
    await make_policy(admin_client, step(0, admin.id), step(0.01, admin.id), step(5, admin.id))
    incidents = [await open_incident(admin_client) for _ in range(20)]
    await asyncio.gather(
        harness.run_jobs(),
        *(admin_client.post(f"/v1/incidents/{i['id']}/acknowledge") for i in incidents),
    )
    harness.clock.advance(minutes=10)
    await harness.run_jobs()
    for incident in incidents:
        listed = await events(admin_client, incident["id"])
        assert {e["status"] for e in listed} <= {"executed", "cancelled"}, listed
        after = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
        assert after["status"] == "acknowledged"
        assert after["escalation_status"] == "stopped"
        # A page is either delivered before the acknowledgement or cancelled, never left pending.
        assert {p.status for p in await notifications(harness, incident["id"])} <= {
            "sent", "cancelled"
        }  # fmt: skip


async def test_a_policy_webhook_url_is_shown_to_admins_only(admin_client, user_client, user):
    hook = {"type": "webhook", "url": "https://hooks.example.com/secret-path?token=s3cr3t"}
    await make_policy(admin_client, step(0, user.id, actions=[{"type": "notify"}, hook]))
    incident = await open_incident(admin_client)
    [shown_to_admin] = await events(admin_client, incident["id"])
    [shown_to_user] = await events(user_client, incident["id"])
    assert shown_to_admin["actions"] == [{"type": "notify"}, hook]
    assert shown_to_user["actions"] == [{"type": "notify"}, {"type": "webhook", "url": None}]
    assert shown_to_user["targets"] == [{"type": "user", "id": user.id}]
    assert "s3cr3t" not in (await user_client.get(f"/v1/incidents/{incident['id']}")).text
