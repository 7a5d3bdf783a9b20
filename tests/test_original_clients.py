"""Request shapes of the original project's clients (its update schemas, query forms and paths),
accepted where they mean the same as ours, and a clear 422 where they contradict the path."""

from __future__ import annotations

INCIDENTS = "/v1/incidents/"
POLICIES = "/v1/escalation/policies/"


async def open_incident(client) -> dict:
    answer = await client.post(INCIDENTS, json={"title": "Checkout down", "severity": "critical"})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_a_preference_with_its_channel_in_the_body(user_client):
    body = {"channel": "email", "enabled": True, "min_severity": "high", "events": ["triggered"]}
    answer = await user_client.put("/v1/notification-preferences/me/email", json=body)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["channel"], answer.json()["min_severity"]) == ("email", "high")
    other = await user_client.put("/v1/notification-preferences/me/sms", json=body)
    assert other.status_code == 422
    assert other.json()["detail"].startswith("channel: the body names 'email' but the path 'sms'")
    unknown = await user_client.put(
        "/v1/notification-preferences/me/email", json=body | {"channel": "pager"}
    )
    assert unknown.status_code == 422


async def test_a_comment_with_its_incident_id_in_the_body(admin_client):
    incident = await open_incident(admin_client)
    other = await open_incident(admin_client)
    path = f"/v1/incidents/{incident['id']}/comments"
    same = await admin_client.post(path, json={"content": "on it", "incident_id": incident["id"]})
    assert same.status_code == 201 and same.json()["content"] == "on it"
    wrong = await admin_client.post(path, json={"content": "x", "incident_id": other["id"]})
    assert wrong.status_code == 422
    assert f"incident {other['id']} but the path {incident['id']}" in wrong.json()["detail"]
    comments = (await admin_client.get(path)).json()["items"]
    assert [c["content"] for c in comments] == ["on it"]  # the refused one stored nothing


async def test_policy_conditions_in_the_originals_form(admin_client):
    policy = {
        "name": "critical only",
        "conditions": {"severity": "critical"},
        "steps": [
            {
                "delay_minutes": 0,
                "targets": [],
                "actions": [{"type": "set_severity", "severity": "high"}],
            }
        ],
    }
    created = await admin_client.post(POLICIES, json=policy)
    assert created.status_code == 201, created.text
    conditions = created.json()["conditions"]
    assert conditions["severities"] == ["critical"] and "severity" not in conditions
    updated = await admin_client.put(
        f"{POLICIES}{created.json()['id']}", json={"conditions": {"severity": "high"}}
    )
    assert updated.status_code == 200 and updated.json()["conditions"]["severities"] == ["high"]
    both = policy | {"conditions": {"severity": "critical", "severities": ["high"]}}
    assert (await admin_client.post(POLICIES, json=both)).status_code == 422
    wrong = policy | {"conditions": {"severity": "urgent"}}
    assert (await admin_client.post(POLICIES, json=wrong)).status_code == 422


async def test_the_originals_escalation_paths_are_deprecated_aliases(admin_client, user_client):
    policy = {
        "name": "two steps",
        "steps": [
            {
                "delay_minutes": 0,
                "targets": [],
                "actions": [{"type": "set_severity", "severity": "high"}],
            },
            {
                "delay_minutes": 30,
                "targets": [],
                "actions": [{"type": "set_severity", "severity": "high"}],
            },
        ],
    }
    assert (await admin_client.post(POLICIES, json=policy)).status_code == 201
    incident = await open_incident(admin_client)
    legacy = f"/v1/escalation/incidents/{incident['id']}"
    current = (await user_client.get(f"/v1/incidents/{incident['id']}/escalation-events")).json()
    assert (await user_client.get(f"{legacy}/escalation-events/")).json() == current
    levels = [(await user_client.post(f"{legacy}/escalate/")).json() for _ in range(2)]
    assert [i["escalation_level"] for i in levels] == [1, 2]  # the next step each time
    assert (await user_client.post(f"{legacy}/escalate/")).status_code == 409  # no step left
    assert (
        await user_client.get("/v1/escalation/incidents/999999/escalation-events/")
    ).status_code == 404
    spec = (await user_client.get("/v1/openapi.json")).json()["paths"]
    assert spec["/v1/escalation/incidents/{incident_id}/escalation-events/"]["get"]["deprecated"]
    assert spec["/v1/escalation/incidents/{incident_id}/escalate/"]["post"]["deprecated"]
    assert "deprecated" not in spec["/v1/incidents/{incident_id}/escalate"]["post"]
