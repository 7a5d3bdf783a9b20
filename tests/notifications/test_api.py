"""The delivery log and webhook subscriptions over the API."""

from __future__ import annotations

import hashlib
import hmac
import json

WEBHOOKS = "/v1/webhooks/"


class TestDeliveryLog:
    async def test_admins_see_everything_users_their_own(
        self, admin_client, user_client, admin, user, factory
    ):
        incident = await factory.incident()
        mine = await factory.notification(user_id=user.id, incident_id=incident.id)
        theirs = await factory.notification(user_id=admin.id, channel="sms", status="failed",
                                            last_error="HTTP 400")  # fmt: skip
        hook = await factory.notification(channel="webhook", status="pending")

        everything = (await admin_client.get("/v1/notifications/")).json()
        assert [n["id"] for n in everything["items"]] == [mine.id, theirs.id, hook.id]
        own = (await user_client.get("/v1/notifications/")).json()
        assert [n["id"] for n in own["items"]] == [mine.id]
        assert (await user_client.get(f"/v1/notifications/?user_id={admin.id}")).status_code == 403

        failed = (await admin_client.get("/v1/notifications/?status=failed&channel=sms")).json()
        assert [(n["id"], n["last_error"]) for n in failed["items"]] == [(theirs.id, "HTTP 400")]
        by_incident = await admin_client.get(f"/v1/notifications/?incident_id={incident.id}")
        assert [n["id"] for n in by_incident.json()["items"]] == [mine.id]
        page = (await admin_client.get("/v1/notifications/?limit=2")).json()
        rest = await admin_client.get(f"/v1/notifications/?limit=2&cursor={page['next_cursor']}")
        assert [n["id"] for n in rest.json()["items"]] == [hook.id]

        one = (await user_client.get(f"/v1/notifications/{mine.id}")).json()
        assert (one["channel"], one["status"], one["attempts"]) == ("email", "sent", 1)
        assert (await user_client.get(f"/v1/notifications/{theirs.id}")).status_code == 404
        assert (await admin_client.get(f"/v1/notifications/{theirs.id}")).status_code == 200
        assert (await admin_client.get("/v1/notifications/999999")).status_code == 404

    async def test_an_incidents_notifications(
        self, admin_client, user_client, admin, user, factory
    ):
        incident = await factory.incident()
        other = await factory.incident()
        mine = await factory.notification(user_id=user.id, incident_id=incident.id)
        admins = await factory.notification(user_id=admin.id, incident_id=incident.id)
        await factory.notification(user_id=user.id, incident_id=other.id)
        path = f"/v1/incidents/{incident.id}/notifications"
        assert [n["id"] for n in (await admin_client.get(path)).json()["items"]] == [
            mine.id, admins.id,
        ]  # fmt: skip
        assert [n["id"] for n in (await user_client.get(path)).json()["items"]] == [mine.id]
        assert (await user_client.get("/v1/incidents/999999/notifications")).status_code == 404

    async def test_bad_filters_are_422(self, admin_client):
        for query in ("status=lost", "channel=pigeon", "incident_id=0", "user_id=-1"):
            response = await admin_client.get(f"/v1/notifications/?{query}")
            assert response.status_code == 422, query


class TestSubscriptions:
    async def test_the_secret_is_shown_on_create_and_rotate_only(self, admin_client):
        created = await admin_client.post(
            WEBHOOKS,
            json={"name": "status page", "url": "https://hooks.example.com/in",
                  "events": ["resolved", "triggered", "resolved"]},
        )  # fmt: skip
        assert created.status_code == 201
        body = created.json()
        secret = body["secret"]
        assert secret.startswith("whsec_") and len(secret) >= 6 + 43
        assert body["secret_prefix"] == secret[:10]
        assert body["events"] == ["resolved", "triggered"]
        read = (await admin_client.get(f"{WEBHOOKS}{body['id']}")).json()
        assert "secret" not in read and read["secret_prefix"] == secret[:10]
        listed = (await admin_client.get(WEBHOOKS)).json()["items"]
        assert [h["id"] for h in listed] == [body["id"]] and "secret" not in listed[0]

        rotated = (await admin_client.post(f"{WEBHOOKS}{body['id']}/rotate-secret")).json()
        assert rotated["secret"] != secret and rotated["secret"].startswith("whsec_")

    async def test_update_and_delete(self, admin_client):
        hook = (
            await admin_client.post(
                WEBHOOKS,
                json={"name": "a", "url": "https://hooks.example.com/a", "events": ["triggered"]},
            )
        ).json()
        path = f"{WEBHOOKS}{hook['id']}"
        changed = await admin_client.put(path, json={"enabled": False, "events": ["resolved"]})
        assert changed.status_code == 200
        assert (changed.json()["enabled"], changed.json()["events"]) == (False, ["resolved"])
        assert changed.json()["url"] == "https://hooks.example.com/a"
        assert (await admin_client.put(path, json={"url": "ftp://x"})).status_code == 422
        assert (await admin_client.put(path, json={"events": []})).status_code == 422
        assert (await admin_client.put(path, json={"name": None})).status_code == 422
        deleted = await admin_client.delete(path)
        assert deleted.status_code == 200 and deleted.json()["id"] == hook["id"]
        assert (await admin_client.get(path)).status_code == 404

    async def test_bad_bodies_are_422(self, admin_client):
        for body in (
            {"name": "x", "url": "https://h.example.com", "events": []},
            {"name": "x", "url": "https://h.example.com", "events": ["exploded"]},
            {"name": "x", "url": "not a url", "events": ["triggered"]},
            {"name": "", "url": "https://h.example.com", "events": ["triggered"]},
            {"url": "https://h.example.com", "events": ["triggered"]},
        ):
            assert (await admin_client.post(WEBHOOKS, json=body)).status_code == 422, body

    async def test_a_disabled_subscription_gets_nothing(
        self, admin_client, harness, http_receiver, factory
    ):
        await factory.webhook(url=f"{http_receiver.url}/off", events=["triggered"], enabled=False)
        await admin_client.post("/v1/incidents/", json={"title": "t"})
        await harness.run_jobs()
        assert http_receiver.requests == []

    async def test_ping_is_delivered_signed_and_logged(self, admin_client, harness, http_receiver):
        created = (
            await admin_client.post(
                WEBHOOKS,
                json={"name": "r", "url": f"{http_receiver.url}/ping", "events": ["triggered"]},
            )
        ).json()
        queued = await admin_client.post(f"{WEBHOOKS}{created['id']}/test")
        assert queued.status_code == 202
        assert (queued.json()["status"], queued.json()["event"]) == ("pending", "test")
        await harness.run_jobs()
        [request] = http_receiver.requests
        headers = {k.lower(): v for k, v in request["headers"].items()}
        signed = headers["x-timestamp"].encode() + b"." + request["body"]
        digest = hmac.new(created["secret"].encode(), signed, hashlib.sha256).hexdigest()
        assert headers["x-signature"] == f"sha256={digest}"
        assert int(headers["x-timestamp"]) == int(harness.clock.now().timestamp())
        payload = json.loads(request["body"])
        assert (payload["event"], payload["incident"]) == ("ping", None)
        logged = (await admin_client.get(f"/v1/notifications/{queued.json()['id']}")).json()
        assert (logged["status"], logged["webhook_id"]) == ("sent", created["id"])


async def test_the_webhook_payload_is_documented_in_openapi(client):
    spec = (await client.get("/v1/openapi.json")).json()
    operation = spec["webhooks"]["incident-event"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/WebhookPayload"}
    payload = spec["components"]["schemas"]["WebhookPayload"]
    assert set(payload["required"]) == {"id", "event", "created_at", "incident", "actor", "data"}
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"x-event-id", "x-timestamp", "x-signature"}
