"""Microsoft Teams as an outgoing channel: a personal `teams` preference and a policy step's
`teams` action, both POSTing an Adaptive Card to a Workflows webhook (a real HTTP server on
loopback checks each request as a Workflow takes it, and answers 202 as one does)."""

from __future__ import annotations

import pytest

from tests.support.delivery import delivery_log, page_policy
from tests.support.receivers import teams_card
from tests.support.settings import make_settings

POLICIES = "/v1/escalation/policies/"
BASE = "https://ims.example.com"


@pytest.fixture
def settings(database_url):
    return make_settings(database_url, public_base_url=BASE)


@pytest.fixture
def workflow(http_receiver):
    http_receiver.status = 202  # what a Workflows webhook answers
    return http_receiver


async def open_incident(client, **fields):
    body = {"title": "Checkout down", "severity": "critical", "service": "checkout-api"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def expected_card(incident_id: int, *, headline: str, event: str, status: str, title: str,
                  by: str | None = None) -> dict:  # fmt: skip
    facts = [
        {"title": "Incident", "value": f"#{incident_id}"},
        {"title": "Severity", "value": "critical"},
        {"title": "Status", "value": status},
        {"title": "Service", "value": "checkout-api"},
        {"title": "Event", "value": event},
    ]
    if by:
        facts.append({"title": "By", "value": by})
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": f"{headline}: #{incident_id} {title}",
             "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "FactSet", "facts": facts},
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open in the console",
             "url": f"{BASE}/ui/incidents/{incident_id}"},
        ],
    }  # fmt: skip


async def test_a_personal_teams_preference_gets_an_adaptive_card(
    admin_client, user, user_client, harness, workflow
):
    url = f"{workflow.url}/workflows/abc/triggers/manual/paths/invoke?sig=s3cret"
    response = await user_client.put(
        "/v1/notification-preferences/me/teams",
        json={"enabled": True, "address": url, "events": ["escalated", "acknowledged"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["verified"] is True and response.json()["effective_address"] == url
    channels = [p["channel"] for p in (await user_client.get(
        "/v1/notification-preferences/me")).json()["items"]]  # fmt: skip
    assert channels == ["email", "sms", "slack", "webhook", "teams"]
    await page_policy(admin_client, user.id)
    title = "<db> & **cache**"
    incident = await open_incident(admin_client, title=title)
    await harness.run_jobs()
    [request] = workflow.requests
    assert request["path"] == "/workflows/abc/triggers/manual/paths/invoke?sig=s3cret"
    assert teams_card(request) == expected_card(
        incident["id"], headline="Escalated", event="escalated", status="triggered", title=title
    )
    [row] = await delivery_log(harness, channel="teams")
    assert (row.status, row.user_id, row.address) == ("sent", user.id, url)
    # The acknowledgement is announced to the responders: the user asked for it on Teams.
    done = await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
    assert done.status_code == 200
    await harness.run_jobs()
    assert len(workflow.requests) == 2
    assert teams_card(workflow.requests[1]) == expected_card(
        incident["id"], headline="Acknowledged", event="acknowledged", status="acknowledged",
        title=title, by="Ada Admin",
    )  # fmt: skip


async def test_a_policy_step_posts_to_a_team_channel(admin_client, harness, workflow):
    url = f"{workflow.url}/workflows/team/triggers/manual/paths/invoke"
    step = {"delay_minutes": 0, "targets": [], "actions": [{"type": "teams", "url": url}]}
    created = await admin_client.post(POLICIES, json={"name": "team", "steps": [step]})
    assert created.status_code == 201, created.text
    assert created.json()["steps"][0]["actions"] == [{"type": "teams", "url": url}]
    incident = await open_incident(admin_client)
    await harness.run_jobs()
    [request] = workflow.requests
    assert teams_card(request) == expected_card(
        incident["id"], headline="Escalated", event="escalated", status="triggered",
        title="Checkout down",
    )  # fmt: skip
    [row] = await delivery_log(harness, channel="teams")
    assert (row.status, row.user_id, row.webhook_id, row.address) == ("sent", None, None, url)
    events = await admin_client.get(f"/v1/incidents/{incident['id']}/escalation-events")
    [fired] = events.json()["items"]
    assert fired["actions"] == [{"type": "teams", "url": url}]


async def test_a_policy_steps_url_is_hidden_from_non_admins(
    admin_client, user_client, harness, workflow
):
    url = f"{workflow.url}/workflows/team/triggers/manual/paths/invoke?sig=secret"
    step = {"delay_minutes": 0, "targets": [], "actions": [{"type": "teams", "url": url}]}
    assert (
        await admin_client.post(POLICIES, json={"name": "t", "steps": [step]})
    ).status_code == 201
    incident = await open_incident(admin_client)
    await harness.run_jobs()
    events = await user_client.get(f"/v1/incidents/{incident['id']}/escalation-events")
    assert events.json()["items"][0]["actions"] == [{"type": "teams", "url": None}]


async def test_a_refusing_workflow_is_retried_then_recorded(admin_client, user, harness, workflow):
    workflow.script = [(429, b"slow down", 0.0)]
    step = {"delay_minutes": 0, "targets": [],
            "actions": [{"type": "teams", "url": f"{workflow.url}/w"}]}  # fmt: skip
    assert (
        await admin_client.post(POLICIES, json={"name": "t", "steps": [step]})
    ).status_code == 201
    await open_incident(admin_client)
    await harness.run_jobs()
    [row] = await delivery_log(harness, channel="teams")
    assert (row.status, row.attempts) == ("pending", 1) and "HTTP 429" in row.last_error
    harness.clock.advance(minutes=5)
    await harness.run_jobs()
    [row] = await delivery_log(harness, channel="teams")
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(workflow.requests) == 2


async def test_pages_to_teams_are_cancelled_by_an_acknowledgement(
    admin_client, user, harness, workflow
):
    """A step's Teams post not yet sent is a page like any other: moot once acknowledged."""
    step = {"delay_minutes": 0, "targets": [],
            "actions": [{"type": "teams", "url": f"{workflow.url}/w"}]}  # fmt: skip
    assert (
        await admin_client.post(POLICIES, json={"name": "t", "steps": [step]})
    ).status_code == 201
    workflow.script = [(503, b"down", 0.0)]
    incident = await open_incident(admin_client)
    await harness.run_jobs()
    assert (
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
    ).status_code == 200
    [row] = await delivery_log(harness, channel="teams")
    assert row.status == "cancelled"


class TestRefusedAddresses:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, outbound_allow_private_networks=False)

    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("https://192.168.1.10/workflows/x", "private"),
            ("https://127.0.0.1/workflows/x", "private"),
            ("https://localhost/workflows/x", "private"),
            ("http://prod-00.westeurope.logic.azure.com/workflows/x", "https"),
            ("https://user:pw@prod-00.westeurope.logic.azure.com/workflows/x", "credentials"),
            ("ftp://prod-00.westeurope.logic.azure.com/x", "https"),
        ],
    )
    async def test_bad_urls_are_refused(self, admin_client, user_client, url, says):
        response = await user_client.put(
            "/v1/notification-preferences/me/teams", json={"enabled": True, "address": url}
        )
        assert response.status_code == 422
        assert response.json()["detail"].startswith("teams: ") and says in response.json()["detail"]
        step = {"delay_minutes": 0, "targets": [], "actions": [{"type": "teams", "url": url}]}
        response = await admin_client.post(POLICIES, json={"name": "t", "steps": [step]})
        assert response.status_code == 422
        assert "teams" in response.text and says in response.text

    async def test_enabling_without_a_url_is_refused(self, user_client):
        response = await user_client.put(
            "/v1/notification-preferences/me/teams", json={"enabled": True}
        )
        assert response.status_code == 422 and "teams: an https URL" in response.json()["detail"]

    async def test_a_public_workflow_url_is_accepted(self, user_client):
        url = (
            "https://prod-00.westeurope.logic.azure.com:443/workflows/0a1b/triggers/manual/paths/"
            "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=abc"
        )
        response = await user_client.put(
            "/v1/notification-preferences/me/teams", json={"enabled": True, "address": url}
        )
        assert response.status_code == 200 and response.json()["address"] == url
