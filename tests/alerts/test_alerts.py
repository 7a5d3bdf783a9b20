"""Alerts in: real payloads captured from Alertmanager 0.25 replayed through their endpoints."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.incidents.models import Incident, TimelineEntry
from app.main import create_app
from tests.support.data import make_integration
from tests.support.settings import make_settings

# Captured from a real Alertmanager 0.25 (copied from the team's shared fixtures, unchanged).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


async def incidents(harness):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(await session.scalars(select(Incident).order_by(Incident.id)))


async def timeline(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.incident_id == incident_id)
                .order_by(TimelineEntry.id)
            )
        )


class TestAlertmanagerWebhook:
    async def post(self, client, key, name):
        response = await client.post(
            "/v1/alerts/alertmanager",
            json=fixture(name),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 202, response.text
        return response.json()["incidents"]

    async def test_firing_then_resolved(self, client, admin_client, harness):
        key, service_id = await make_integration(admin_client, "alertmanager")
        [created] = await self.post(client, key, "alertmanager_webhook_firing")
        assert created["status"] == "incident_created"
        [again] = await self.post(client, key, "alertmanager_webhook_firing")
        assert again == {"id": created["id"], "status": "incident_updated"}
        [incident] = await incidents(harness)
        assert (incident.title, incident.severity, incident.status) == (
            "High 5xx error rate on checkout-api", "critical", "triggered",
        )  # fmt: skip
        assert (incident.service_id, incident.source, incident.dedup_key) == (
            service_id, "alertmanager", "f19dce1b4856bd7d",
        )  # fmt: skip
        assert incident.alert_count == 2 and incident.last_alert_at == harness.clock.now()
        assert incident.labels["alertname"] == "HighErrorRate"
        assert "5xx error rate of 12.5%" in incident.description
        links = incident.custom_fields["links"]
        assert links["runbook_url"] == "https://runbooks.example.com/HighErrorRate"
        [resolved] = await self.post(client, key, "alertmanager_webhook_resolved")
        assert resolved == {"id": created["id"], "status": "incident_resolved"}
        [incident] = await incidents(harness)
        assert incident.status == "resolved"
        entries = await timeline(harness, incident.id)
        received = [e for e in entries if e.type == "alert_received"]
        assert [e.data["action"] for e in received] == ["trigger", "trigger", "resolve"]
        assert received[0].data["raw"]["fingerprint"] == "f19dce1b4856bd7d"
        resolved_entry = next(e for e in entries if e.type == "resolved")
        assert (resolved_entry.actor_type, resolved_entry.actor_name) == (
            "integration", "alertmanager",
        )  # fmt: skip

    async def test_a_group_of_two_partially_then_fully_resolved(
        self, client, admin_client, harness
    ):
        key, _ = await make_integration(admin_client, "alertmanager")
        opened = await self.post(client, key, "alertmanager_webhook_group2_firing")
        assert [o["status"] for o in opened] == ["incident_created", "incident_created"]
        partial = await self.post(client, key, "alertmanager_webhook_group2_partially_resolved")
        assert [o["status"] for o in partial] == ["incident_resolved", "incident_updated"]
        by_key = {i.dedup_key: i for i in await incidents(harness)}
        assert by_key["ceb2e74bf3eee4ae"].status == "resolved"
        assert by_key["014eef6ad1cc4e53"].status == "triggered"
        assert by_key["014eef6ad1cc4e53"].title == "Disk almost full on db-2"
        await self.post(client, key, "alertmanager_webhook_group2_resolved")
        assert {i.status for i in await incidents(harness)} == {"resolved"}
        assert len(await incidents(harness)) == 2

    async def test_auto_resolve_without_ends_at(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "alertmanager")
        await self.post(client, key, "alertmanager_webhook_noendsat_firing")
        [done] = await self.post(client, key, "alertmanager_webhook_noendsat_resolved_by_timeout")
        assert done["status"] == "incident_resolved"

    async def test_truncated_alerts_are_noted(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "alertmanager")
        body = fixture("alertmanager_webhook_firing") | {"truncatedAlerts": 7}
        response = await client.post("/v1/alerts/alertmanager", json=body, params={"key": key})
        assert response.status_code == 202
        [incident] = await incidents(harness)
        [received] = [e for e in await timeline(harness, incident.id) if e.type == "alert_received"]
        assert received.data["raw"]["truncated_alerts"] == 7


class TestPagerDuty:
    async def enqueue(self, client, key, name):
        event = fixture(name) | {"routing_key": key}
        response = await client.post("/v2/enqueue", json=event)
        assert response.status_code == 202, response.text
        assert response.json() == {
            "status": "success", "message": "Event processed", "dedup_key": event["dedup_key"],
        }  # fmt: skip
        return response.json()

    async def test_alertmanager_pagerduty_receiver_replay(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "pagerduty")
        await self.enqueue(client, key, "alertmanager_pagerduty_trigger")
        [incident] = await incidents(harness)
        received = [e for e in await timeline(harness, incident.id) if e.type == "alert_received"]
        assert received[0].data["raw"]["dedup_key"].startswith("cbc7a356")
        assert key not in json.dumps(received[0].data)  # the routing key is a secret
        assert incident.title.startswith("[FIRING:1] HighErrorRate")
        assert incident.severity == "high"  # PagerDuty `error`
        assert incident.labels == {"source": "Alertmanager"}
        await self.enqueue(client, key, "alertmanager_pagerduty_resolve")
        assert [i.status for i in await incidents(harness)] == ["resolved"]

    async def test_a_group_is_one_incident_until_the_group_resolves(
        self, client, admin_client, harness
    ):
        key, _ = await make_integration(admin_client, "pagerduty")
        await self.enqueue(client, key, "alertmanager_pagerduty_group2_trigger")
        await self.enqueue(client, key, "alertmanager_pagerduty_group2_partially_resolved")
        [incident] = await incidents(harness)
        assert (incident.status, incident.alert_count) == ("triggered", 2)
        await self.enqueue(client, key, "alertmanager_pagerduty_group2_resolve")
        await self.enqueue(client, key, "alertmanager_pagerduty_noendsat_trigger")
        await self.enqueue(client, key, "alertmanager_pagerduty_noendsat_resolve_by_timeout")
        assert [i.status for i in await incidents(harness)] == ["resolved", "resolved"]

    async def test_trigger_without_dedup_key_gets_one_and_acknowledge_works(
        self, client, admin_client, harness
    ):
        key, _ = await make_integration(admin_client, "pagerduty")
        event = {"routing_key": key, "event_action": "trigger",
                 "payload": {"summary": "db down", "source": "db-1", "severity": "critical",
                             "component": "postgres", "group": "prod", "class": "availability",
                             "custom_details": {"free": "3%"}, "timestamp": "2026-11-28T06:00:00Z"},
                 "links": [{"href": "https://example.com/x", "text": "x"}]}  # fmt: skip
        answer = (await client.post("/v2/enqueue", json=event)).json()
        dedup_key = answer["dedup_key"]
        assert answer["status"] == "success" and len(dedup_key) == 32
        ack = {"routing_key": key, "event_action": "acknowledge", "dedup_key": dedup_key}
        assert (await client.post("/v2/enqueue", json=ack)).status_code == 202
        [incident] = await incidents(harness)
        assert (incident.status, incident.severity, incident.dedup_key) == (
            "acknowledged", "critical", dedup_key,
        )  # fmt: skip
        assert incident.labels == {"source": "db-1", "component": "postgres", "group": "prod",
                                   "class": "availability"}  # fmt: skip
        assert "free: 3%" in incident.description
        # A repeat while acknowledged adds to it and does not re-trigger it.
        again = event | {"dedup_key": dedup_key}
        assert (await client.post("/v2/enqueue", json=again)).status_code == 202
        [incident] = await incidents(harness)
        assert (incident.status, incident.alert_count) == ("acknowledged", 2)

    async def test_acknowledge_or_resolve_of_an_unknown_key_is_accepted_and_ignored(
        self, client, admin_client, harness
    ):
        key, _ = await make_integration(admin_client, "pagerduty")
        for action in ("acknowledge", "resolve"):
            event = {"routing_key": key, "event_action": action, "dedup_key": "never-seen"}
            response = await client.post("/v2/enqueue", json=event)
            assert response.status_code == 202
            assert response.json()["dedup_key"] == "never-seen"
        assert await incidents(harness) == []

    @pytest.mark.parametrize(
        ("event", "error"),
        [
            ({"event_action": "trigger"}, "'routing_key' is missing or blank"),
            ({"event_action": "explode"}, "'event_action' must be one of"),
            ({"event_action": "trigger"}, "'payload' is missing"),
            ({"event_action": "trigger", "payload": {"source": "x", "severity": "error"}},
             "'payload.summary' is missing or blank"),
            ({"event_action": "trigger",
              "payload": {"summary": "x" * 1025, "source": "x", "severity": "error"}},
             "longer than 1024"),
            ({"event_action": "trigger", "payload": {"summary": "s", "severity": "error"}},
             "'payload.source' is missing"),
            ({"event_action": "trigger", "payload": {"summary": "s", "source": "x",
                                                     "severity": "fatal"}},
             "'payload.severity' must be one of"),
            ({"event_action": "trigger", "payload": {"summary": "s", "source": "x",
                                                     "severity": "info", "timestamp": "noon"}},
             "'payload.timestamp' is not an ISO 8601 time"),
            ({"event_action": "resolve"}, "'dedup_key' is required to resolve"),
            # Found by the OpenAPI-driven bad-input test: a non-string severity was a 500.
            ({"event_action": "trigger", "payload": {"summary": "s", "source": "x",
                                                     "severity": {"a": 1}}},
             "'payload.severity' must be one of"),
        ],
    )  # fmt: skip
    async def test_invalid_events_get_pagerdutys_400(
        self, client, admin_client, harness, event, error
    ):
        key, _ = await make_integration(admin_client, "pagerduty")
        body = {"routing_key": key} | event if "routing_key" not in error else event
        response = await client.post("/v2/enqueue", json=body)
        assert response.status_code == 400
        answer = response.json()
        assert (answer["status"], answer["message"]) == ("invalid event", "Event object is invalid")
        assert any(error in e for e in answer["errors"]), answer
        assert await incidents(harness) == []

    async def test_bad_json_and_wrong_keys_get_pagerdutys_400(self, client, admin_client):
        key, _ = await make_integration(admin_client, "alertmanager")
        for body in (b"{not json", b"[1, 2]", b"", b'{"a": NaN}'):
            response = await client.post(
                "/v2/enqueue", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, body
            assert response.json()["status"] == "invalid event"
        event = {"routing_key": key, "event_action": "trigger",
                 "payload": {"summary": "s", "source": "x", "severity": "info"}}  # fmt: skip
        response = await client.post("/v2/enqueue", json=event)  # an alertmanager key
        assert response.status_code == 400
        assert response.json()["errors"] == ["Invalid routing key"]


class TestKeysAndLimits:
    async def test_no_key_unknown_key_and_wrong_kind(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "generic")
        body = {"summary": "x"}
        assert (await client.post("/v1/alerts/generic", json=body)).status_code == 401
        unknown = await client.post("/v1/alerts/generic", json=body, params={"key": "nope"})
        assert unknown.status_code == 401
        wrong = await client.post(
            "/v1/alerts/alertmanager", json=body, headers={"X-Integration-Key": key}
        )
        assert wrong.status_code == 403 and "generic integration" in wrong.json()["detail"]
        for headers, params in (({"Authorization": f"Bearer {key}"}, {}),
                                ({"X-Integration-Key": key}, {}), ({}, {"key": key})):  # fmt: skip
            response = await client.post(
                "/v1/alerts/generic", json=body, headers=headers, params=params
            )
            assert response.status_code == 202
        [incident] = await incidents(harness)
        assert incident.alert_count == 3

    async def test_rotation_invalidates_the_old_key_for_alerts(self, client, admin_client):
        key, service_id = await make_integration(admin_client, "generic")
        items = (await admin_client.get(f"/v1/services/{service_id}/integrations/")).json()["items"]
        rotated = await admin_client.post(
            f"/v1/services/{service_id}/integrations/{items[0]['id']}/rotate"
        )
        new_key = rotated.json()["key"]
        old = await client.post("/v1/alerts/generic", json={"summary": "x"}, params={"key": key})
        assert old.status_code == 401
        new = await client.post(
            "/v1/alerts/generic", json={"summary": "x"}, params={"key": new_key}
        )
        assert new.status_code == 202

    async def test_a_body_over_64_kib_is_413_and_stores_nothing(
        self, client, admin_client, harness
    ):
        key, _ = await make_integration(admin_client, "generic")
        body = {"summary": "big", "details": {"blob": "x" * 70_000}}
        response = await client.post("/v1/alerts/generic", json=body, params={"key": key})
        assert response.status_code == 413
        pd = await client.post("/v2/enqueue", content=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})  # fmt: skip
        assert pd.status_code == 413 and pd.json()["status"] == "invalid event"
        assert await incidents(harness) == []

    @pytest.mark.parametrize(
        "body",
        [
            {"alerts": "nope"},
            {"alerts": []},
            {"alerts": [{"status": "burning", "labels": {}}]},
            {"alerts": [{"status": "firing", "labels": "x"}]},
            {"alerts": [{"status": "firing"}] * 1001},
            [1, 2, 3],
        ],
    )
    async def test_malformed_envelopes_are_422_and_store_nothing(
        self, client, admin_client, harness, body
    ):
        key, _ = await make_integration(admin_client, "alertmanager")
        response = await client.post("/v1/alerts/alertmanager", json=body, params={"key": key})
        assert response.status_code == 422
        assert await incidents(harness) == []

    async def test_malformed_json_is_400(self, client, admin_client):
        key, _ = await make_integration(admin_client, "grafana")
        response = await client.post(
            "/v1/alerts/grafana", content=b"{oops", params={"key": key},
            headers={"Content-Type": "text/plain"},
        )  # fmt: skip
        assert response.status_code == 400


class TestGenericElasticGrafana:
    async def test_generic_batch_with_resolve(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "generic")
        backlog = {"summary": "Queue backlog", "severity": "high", "dedup_key": "q"}
        body = {
            "alerts": [backlog | {"labels": {"q": "e"}}, {"summary": "Disk", "severity": "low"}]
        }
        answer = await client.post("/v1/alerts/generic", json=body, params={"key": key})
        assert [i["status"] for i in answer.json()["incidents"]] == ["incident_created"] * 2
        resolve = {"summary": "Queue backlog", "dedup_key": "q", "status": "resolved"}
        done = await client.post("/v1/alerts/generic", json=resolve, params={"key": key})
        assert done.json()["incidents"][0]["status"] == "incident_resolved"
        stored = {i.title: (i.severity, i.status) for i in await incidents(harness)}
        assert stored == {"Queue backlog": ("high", "resolved"), "Disk": ("low", "triggered")}
        bad = await client.post("/v1/alerts/generic", json={"summary": "x", "severity": "awful"},
                                params={"key": key})  # fmt: skip
        assert bad.status_code == 422 and "severity" in bad.json()["detail"]

    async def test_elastic_answers_as_the_contract_says(self, client, admin_client, harness):
        key, service_id = await make_integration(admin_client, "elastic")
        body = {"alert_name": "High error rate", "message": "checkout 5xx at 12%",
                "severity": "major", "service": {"name": "checkout-api", "environment": "prod"},
                "alert_id": "rule-42", "state": {"state": "active"},
                "tags": {"team": "payments"}}  # fmt: skip
        created = await client.post("/v1/alerts/elastic", json=body, params={"key": key})
        assert created.status_code == 201
        assert created.json()["status"] == "incident_created"
        incident_id = created.json()["incident_id"]
        again = await client.post("/v1/alerts/elastic", json=body, params={"key": key})
        assert (again.status_code, again.json()["status"]) == (200, "incident_updated")
        recovered = body | {"state": {"state": "recovered"}}
        done = await client.post("/v1/alerts/elastic", json=recovered, params={"key": key})
        assert (done.status_code, done.json()) == (200, {
            "status": "incident_resolved", "incident_id": incident_id,
            "message": "Incident resolved"})  # fmt: skip
        nothing = await client.post("/v1/alerts/elastic", json=recovered, params={"key": key})
        assert nothing.json()["status"] == "no_changes"
        [incident] = await incidents(harness)
        assert (incident.severity, incident.service_id) == ("high", service_id)
        assert incident.labels == {"service.name": "checkout-api", "service.environment": "prod",
                                   "team": "payments"}  # fmt: skip

    async def test_grafana_uses_the_alertmanager_envelope(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "grafana")
        body = {"receiver": "ims", "status": "firing", "version": "1", "title": "[FIRING:1] CPU",
                "alerts": [{"status": "firing",
                            "labels": {"alertname": "CPU", "severity": "warning"},
                            "annotations": {}, "fingerprint": "abc123",
                            "dashboardURL": "https://grafana.example.com/d/1"}]}  # fmt: skip
        response = await client.post("/v1/alerts/grafana", json=body, params={"key": key})
        assert response.status_code == 202
        [incident] = await incidents(harness)
        assert (incident.title, incident.severity, incident.source) == ("CPU", "medium", "grafana")


@pytest.mark.parametrize(
    ("label", "expected"),
    [("critical", "critical"), ("page", "critical"), ("error", "high"), ("P2", "high"),
     ("warning", "medium"), ("", "medium"), ("weird", "medium"), ("low", "low"), ("info", "info"),
     ("none", "info")],
)  # fmt: skip
def test_alertmanager_severity_table(label, expected):
    from app.alerts.sources.alertmanager import severity_of

    assert severity_of({"severity": label} if label else {}).value == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("critical", "critical"), ("error", "high"), ("warning", "medium"), ("info", "info")],
)
def test_pagerduty_severity_table(given, expected):
    from app.alerts.sources.pagerduty import SEVERITY

    assert SEVERITY[given].value == expected


async def test_an_alert_starts_escalation_like_an_api_incident(
    client, admin_client, admin, harness
):
    step = {"delay_minutes": 0, "targets": [{"type": "user", "id": admin.id}],
            "actions": [{"type": "notify"}]}  # fmt: skip
    await admin_client.post("/v1/escalation/policies/", json={"name": "all", "steps": [step]})
    key, _ = await make_integration(admin_client, "generic")
    await client.post("/v1/alerts/generic", json={"summary": "down"}, params={"key": key})
    await harness.run_jobs()
    [incident] = await incidents(harness)
    types = [e.type for e in await timeline(harness, incident.id)]
    assert types[:2] == ["created", "policy_applied"] and "escalated" in types


class TestReopenWindow:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, reopen_window_minutes=10)

    async def test_a_trigger_soon_after_resolve_reopens(self, client, admin_client, harness):
        key, _ = await make_integration(admin_client, "generic")
        alert = {"summary": "flappy", "dedup_key": "f"}
        first = (await client.post("/v1/alerts/generic", json=alert, params={"key": key})).json()
        await client.post("/v1/alerts/generic", json=alert | {"status": "resolved"},
                          params={"key": key})  # fmt: skip
        harness.clock.advance(minutes=5)
        again = (await client.post("/v1/alerts/generic", json=alert, params={"key": key})).json()
        assert again["incidents"][0] == {"id": first["incidents"][0]["id"],
                                         "status": "incident_reopened"}  # fmt: skip
        await client.post("/v1/alerts/generic", json=alert | {"status": "resolved"},
                          params={"key": key})  # fmt: skip
        harness.clock.advance(minutes=11)
        later = (await client.post("/v1/alerts/generic", json=alert, params={"key": key})).json()
        assert later["incidents"][0]["status"] == "incident_created"
        assert len(await incidents(harness)) == 2


async def test_fifty_simultaneous_triggers_make_one_incident(client, admin_client, harness):
    """Through two app instances (as two API processes, each batching its own requests)."""
    key, _ = await make_integration(admin_client, "generic")
    alert = {"summary": "storm", "dedup_key": "same-key", "severity": "critical"}
    other = create_app(harness.settings, clock=harness.clock)
    async with other.router.lifespan_context(other), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=other), base_url="http://test"
    ) as other_client:  # fmt: skip
        responses = await asyncio.gather(*(
            (client, other_client)[n % 2].post("/v1/alerts/generic", json=alert,
                                               params={"key": key})
            for n in range(50)
        ))  # fmt: skip
    assert [r.status_code for r in responses] == [202] * 50
    outcomes = sorted(r.json()["incidents"][0]["status"] for r in responses)
    assert outcomes == ["incident_created"] + ["incident_updated"] * 49
    [incident] = await incidents(harness)
    assert incident.alert_count == 50


@pytest.mark.parametrize(
    ("given", "expected"),
    [("critical", "critical"), ("major", "high"), ("Error", "high"), ("minor", "medium"),
     ("warning", "medium"), ("low", "low"), ("info", "info"), ("unheard-of", "medium")],
)  # fmt: skip
def test_elastic_severity_table(given, expected):
    from app.alerts.sources.elastic import parse

    body = {"alert_name": "a", "severity": given, "service": {"name": "s"}, "alert_id": "i",
            "state": {"state": "active"}}  # fmt: skip
    [alert] = parse(body)
    assert alert.severity.value == expected
