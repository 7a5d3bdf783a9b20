"""Delivery over real protocol peers on loopback: aiosmtpd for mail, a local HTTP server for
Twilio, Slack and webhook receivers. Time moves on the injected clock; nothing sleeps."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from urllib.parse import parse_qs

import anyio
import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.core.outbound import REFUSED
from app.incidents.models import TimelineEntry
from app.notifications import outbox
from tests.support.delivery import delivery_log, page_policy, vouch
from tests.support.ports import free_port
from tests.support.receivers import TLSListener, verify
from tests.support.settings import make_settings

POLICIES = "/v1/escalation/policies/"


PUBLIC = "93.184.216.34"  # a global address; every connection to it is routed to loopback


async def open_incident(client, **fields):
    body = {"title": "Checkout down", "severity": "critical"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def timeline_types(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(
                select(TimelineEntry.type)
                .where(TimelineEntry.incident_id == incident_id)
                .order_by(TimelineEntry.id)
            )
        )


class TestEmail:
    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(
            database_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="ims@example.com",
            public_base_url="https://ims.example.com",
        )  # fmt: skip

    async def test_a_page_arrives_as_a_real_email_with_both_parts(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client, service="checkout-api")
        await harness.run_jobs()
        [message] = inbox.messages
        assert inbox.recipients == [[user.email]]
        assert (message["From"], message["To"]) == ("ims@example.com", user.email)
        assert message["Subject"] == f"[CRITICAL] PAGE #{incident['id']}: Checkout down"
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        page = f"https://ims.example.com/ui/incidents/{incident['id']}"
        api = f"https://ims.example.com/v1/incidents/{incident['id']}"
        for part in (text, html):
            assert "Checkout down" in part and "critical" in part and "checkout-api" in part
            assert page in part and f"{api}/acknowledge" in part
        [row] = await delivery_log(harness, incident_id=incident["id"])
        assert (row.channel, row.status, row.attempts, row.address) == (
            "email", "sent", 1, user.email,
        )  # fmt: skip
        assert row.provider_message_id == message["Message-ID"].strip("<>")
        assert row.subject == message["Subject"] and "Checkout down" in row.body
        assert "notified" in await timeline_types(harness, incident["id"])

    async def test_a_refused_recipient_fails_at_once(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        inbox.refuse.add(user.email)
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, incident_id=incident["id"])
        assert (row.status, row.attempts) == ("failed", 1)
        assert "550" in row.last_error
        assert "notification_failed" in await timeline_types(harness, incident["id"])

    async def test_events_reach_the_responders_but_not_the_person_acting(
        self, admin_client, user_client, admin, user, factory, harness, smtp_server
    ):
        inbox, _ = smtp_server
        watcher = await factory.user(email="watcher@example.com")
        everything = ["triggered", "escalated", "acknowledged", "resolved", "assigned",
                      "commented", "reopened"]  # fmt: skip
        for person in (user, watcher, admin):
            response = await admin_client.put(
                f"/v1/notification-preferences/{person.id}/email",
                json={"enabled": True, "events": everything},
            )
            assert response.status_code == 200
        await page_policy(admin_client, user.id)
        # Triggered goes to everyone who asked for new incidents, except whoever opened it.
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        subjects = sorted((m["To"], m["Subject"]) for m in inbox.messages)
        iid = incident["id"]
        assert subjects == sorted([
            ("watcher@example.com", f"[CRITICAL] #{iid} New incident: Checkout down"),
            (user.email, f"[CRITICAL] #{iid} New incident: Checkout down"),
            (user.email, f"[CRITICAL] PAGE #{iid}: Checkout down"),  # and paged
        ])  # fmt: skip
        inbox.messages.clear()
        inbox.recipients.clear()
        # The paged user acknowledges: the other responders hear, the user does not.
        await admin_client.post(f"/v1/incidents/{iid}/assign", json={"user_ids": [admin.id]})
        await harness.run_jobs()
        assert inbox.messages == []  # assigning yourself tells nobody
        await user_client.post(f"/v1/incidents/{iid}/acknowledge")
        await user_client.post(f"/v1/incidents/{iid}/comments", json={"content": "on it, **db**"})
        await harness.run_jobs()
        received = sorted((m["To"], m["Subject"].split(":")[0]) for m in inbox.messages)
        assert received == [
            (admin.email, f"[CRITICAL] #{iid} Acknowledged"),
            (admin.email, f"[CRITICAL] #{iid} New comment"),
        ]
        comment = next(m for m in inbox.messages if "comment" in m["Subject"])
        assert "on it, **db**" in comment.get_body(preferencelist=("plain",)).get_content()

    async def test_min_severity_and_events_filter_what_is_sent(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/email",
            json={"enabled": True, "min_severity": "high"},
        )
        await page_policy(admin_client, user.id)
        low = await open_incident(admin_client, severity="medium")
        await harness.run_jobs()
        assert inbox.messages == []
        [event] = (await admin_client.get(f"/v1/incidents/{low['id']}/escalation-events")).json()[
            "items"
        ]
        assert event["notified_user_ids"] == []
        assert "no channel enabled for medium escalations" in event["detail"]
        await open_incident(admin_client, severity="high", title="worse")
        await harness.run_jobs()
        assert [m["Subject"] for m in inbox.messages] == ["[HIGH] PAGE #2: worse"]

    async def test_an_acknowledged_incident_cancels_unsent_pages(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        # Fire the step but do not deliver yet.
        await harness.app.state.worker.run_once(
            [j for j in harness.app.state.worker.jobs if j.name == "fire_escalations"]
        )
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        await harness.run_jobs()
        [row] = await delivery_log(harness, incident_id=incident["id"])
        assert row.status == "cancelled"
        assert inbox.messages == []


class TestSms:
    @pytest.fixture
    def settings(self, database_url, http_receiver):
        return make_settings(
            database_url, twilio_account_sid="AC0123", twilio_auth_token="s3cret",
            twilio_from_number="+15550001111", twilio_base_url=http_receiver.url,
        )  # fmt: skip

    async def test_twilio_gets_the_form_with_basic_auth_and_the_sid_is_kept(
        self, admin_client, user, harness, http_receiver
    ):
        http_receiver.script = [(201, b'{"sid": "SM9f8e", "status": "queued"}', 0.0)]
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/sms",
            json={"enabled": True, "address": "+15552223333"},
        )
        await vouch(admin_client, user.id, "sms")
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client, title="x" * 400, service="checkout-api")
        await harness.run_jobs()
        [request] = http_receiver.requests
        assert request["path"] == "/2010-04-01/Accounts/AC0123/Messages.json"
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers["authorization"] == "Basic " + base64.b64encode(b"AC0123:s3cret").decode()
        form = {k: v[0] for k, v in parse_qs(request["body"].decode()).items()}
        assert (form["To"], form["From"]) == ("+15552223333", "+15550001111")
        assert len(form["Body"]) <= 160
        assert form["Body"].startswith(f"PAGE CRITICAL #{incident['id']} (triggered): xxx")
        assert "[checkout-api]" in form["Body"]
        # The page says how to answer it, with the user's first code (docs/twilio.md).
        assert form["Body"].endswith("[checkout-api]. Reply 1a to ack, 1r to resolve")
        sms = await delivery_log(harness, channel="sms")
        assert [(r.status, r.provider_message_id) for r in sms] == [("sent", "SM9f8e")]
        assert form["StatusCallback"] == (
            f"http://127.0.0.1:8000/v1/inbound/twilio/status?n={sms[0].id}"
        )

    async def test_a_bad_number_is_a_permanent_failure(
        self, admin_client, user, harness, http_receiver
    ):
        http_receiver.script = [(400, b'{"code": 21211, "message": "Invalid To"}', 0.0)]
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/sms",
            json={"enabled": True, "address": "+15552223333", "events": ["escalated"]},
        )
        await vouch(admin_client, user.id, "sms")
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/email", json={"enabled": False}
        )
        await page_policy(admin_client, user.id)
        await open_incident(admin_client)
        await harness.run_jobs()
        harness.clock.advance(hours=1)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="sms")
        assert (row.status, row.attempts) == ("failed", 1)
        assert "Invalid To" in row.last_error
        assert len(http_receiver.requests) == 1


class TestHttpChannels:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(
            database_url, notify_read_timeout_seconds=0.5, webhook_signing_secret="per-install"
        )

    async def test_slack_gets_block_kit(self, admin_client, user, harness, http_receiver):
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/slack",
            json={"enabled": True, "address": f"{http_receiver.url}/services/T/B/X"},
        )
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client, title="<db> & cache")
        await harness.run_jobs()
        [request] = http_receiver.requests
        body = json.loads(request["body"])
        assert "&lt;db&gt; &amp; cache" in body["text"]
        assert body["blocks"][0]["type"] == "section"
        assert f"#{incident['id']}" in body["blocks"][0]["text"]["text"]
        fields = [e["text"] for e in body["blocks"][1]["elements"]]
        assert "*Severity:* critical" in fields
        [row] = await delivery_log(harness, channel="slack")
        assert row.status == "sent"

    async def test_subscription_deliveries_are_signed(
        self, admin_client, user, harness, http_receiver
    ):
        created = await admin_client.post(
            "/v1/webhooks/",
            json={"name": "status page", "url": f"{http_receiver.url}/in",
                  "events": ["triggered", "acknowledged"]},
        )  # fmt: skip
        assert created.status_code == 201
        secret = created.json()["secret"]
        incident = await open_incident(admin_client)
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        await harness.run_jobs()
        # Delivered concurrently: in no particular order.
        payloads = sorted(
            (verify(secret, r) for r in http_receiver.requests), key=lambda p: p["created_at"]
        )
        payloads.sort(key=lambda p: p["event"] != "incident.triggered")
        assert [p["event"] for p in payloads] == ["incident.triggered", "incident.acknowledged"]
        assert payloads[0]["incident"]["id"] == incident["id"]
        assert payloads[1]["actor"]["type"] == "user"
        ids = {{k.lower(): v for k, v in r["headers"].items()}["x-event-id"]
               for r in http_receiver.requests}  # fmt: skip
        assert ids == {p["id"] for p in payloads} and len(ids) == 2
        # A wrong secret does not verify.
        with pytest.raises(AssertionError):
            verify("whsec_wrong", http_receiver.requests[0])

    async def test_policy_webhooks_are_signed_with_the_install_secret(
        self, admin_client, harness, http_receiver
    ):
        step = {"delay_minutes": 0, "targets": [],
                "actions": [{"type": "webhook", "url": f"{http_receiver.url}/policy"}]}  # fmt: skip
        await admin_client.post(POLICIES, json={"name": "hook", "steps": [step]})
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [request] = http_receiver.requests
        payload = verify("per-install", request)
        assert (payload["event"], payload["incident"]["id"]) == (
            "incident.escalated",
            incident["id"],
        )

    async def test_500_then_success_is_one_message_after_a_retry(
        self, admin_client, harness, http_receiver, factory
    ):
        hook = await factory.webhook(url=f"{http_receiver.url}/in", events=["triggered"])
        http_receiver.script = [(500, b"upstream broke", 0.0)]
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error == "HTTP 500: upstream broke"
        delay = (row.next_attempt_at - harness.clock.now()).total_seconds()
        assert 24 <= delay <= 36  # about 30 s, with jitter
        harness.clock.advance(seconds=36)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
        assert len(http_receiver.requests) == 2
        first, second = (json.loads(r["body"]) for r in http_receiver.requests)
        assert first["id"] == second["id"]  # the same event, so a receiver can drop duplicates
        harness.clock.advance(hours=2)
        await harness.run_jobs()
        assert len(http_receiver.requests) == 2
        types = await timeline_types(harness, incident["id"])
        assert types.count("notified") == 1

    async def test_429_waits_at_least_retry_after(
        self, admin_client, harness, http_receiver, factory
    ):
        hook = await factory.webhook(url=f"{http_receiver.url}/in", events=["triggered"])
        http_receiver.script = [(429, b"slow down", 0.0)]
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert row.status == "pending" and row.last_error.startswith("HTTP 429")

    async def test_400_fails_at_once(self, admin_client, harness, http_receiver, factory):
        hook = await factory.webhook(url=f"{http_receiver.url}/in", events=["triggered"])
        http_receiver.script = [(400, b"bad payload", 0.0)]
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts, row.last_error) == ("failed", 1, "HTTP 400: bad payload")
        assert "notification_failed" in await timeline_types(harness, incident["id"])

    async def test_a_slow_receiver_times_out_and_is_retried(
        self, admin_client, harness, http_receiver, factory
    ):
        hook = await factory.webhook(url=f"{http_receiver.url}/in", events=["triggered"])
        http_receiver.script = [(200, b"late", 2.0)]  # the read timeout is 0.5 s
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert "timed out" in row.last_error
        harness.clock.advance(minutes=1)
        await harness.run_jobs()
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts) == ("sent", 2)

    async def test_connection_refused_is_retried_then_failed(self, admin_client, harness, factory):

        hook = await factory.webhook(url=f"http://127.0.0.1:{free_port()}/in", events=["triggered"])
        await open_incident(admin_client)
        for _ in range(6):
            await harness.run_jobs()
            harness.clock.advance(hours=2)
        [row] = await delivery_log(harness, webhook_id=hook.id)
        assert (row.status, row.attempts) == ("failed", 6)
        assert "ConnectError" in row.last_error


class TestOutboundSafety:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, outbound_allow_private_networks=False)

    async def test_a_stored_url_resolving_to_loopback_is_never_called(
        self, admin_client, harness, http_receiver, factory
    ):
        # Stored directly (as if the rules changed after it was saved): delivery checks again.
        https = http_receiver.url.replace("http://", "https://")
        await factory.webhook(url=f"{https}/in", events=["triggered"])
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="webhook")
        assert (row.status, row.attempts) == ("failed", 1)
        assert row.last_error == REFUSED
        assert http_receiver.requests == []

    async def test_a_name_that_rebinds_to_loopback_is_connected_at_the_address_checked(
        self, admin_client, harness, factory, monkeypatch
    ):
        """DNS rebinding: the name answers a public address first and 127.0.0.1 after. The
        connection must go to the address that was checked (here routed to a stand-in for the
        public server), with the name kept for TLS; the loopback port must never be reached."""
        loop = asyncio.get_running_loop()
        real_getaddrinfo = loop.getaddrinfo
        lookups: list[str] = []

        async def rebinding(host, port, *args, **kwargs):
            if host not in ("hooks.rebind.test", b"hooks.rebind.test"):  # anyio asks in bytes
                return await real_getaddrinfo(host, port, *args, **kwargs)
            lookups.append(host)
            address = PUBLIC if len(lookups) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

        real_connect = anyio.connect_tcp

        async def connect(remote_host, remote_port, **kwargs):
            if remote_host == PUBLIC:  # the public server, played by a listener on loopback
                remote_host, remote_port = "127.0.0.1", public.port
            return await real_connect(remote_host, remote_port, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", rebinding)
        monkeypatch.setattr(anyio, "connect_tcp", connect)
        async with TLSListener() as public, TLSListener() as internal:
            await factory.webhook(
                url=f"https://hooks.rebind.test:{internal.port}/in", events=["triggered"]
            )
            await open_incident(admin_client)
            await harness.run_jobs()
            [row] = await delivery_log(harness, channel="webhook")
        assert internal.connections == 0
        assert public.server_names == ["hooks.rebind.test"]  # SNI: the name, not the address
        assert lookups == ["hooks.rebind.test"]  # resolved once
        assert row.status == "pending" and row.attempts == 1  # the stand-in hung up: retried

    async def test_a_name_with_any_private_address_is_refused_in_one_phrase(
        self, admin_client, harness, factory, monkeypatch
    ):
        loop = asyncio.get_running_loop()
        real_getaddrinfo = loop.getaddrinfo

        async def mixed(host, port, *args, **kwargs):
            if host not in ("mixed.rebind.test", b"mixed.rebind.test"):
                return await real_getaddrinfo(host, port, *args, **kwargs)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]

        monkeypatch.setattr(loop, "getaddrinfo", mixed)
        async with TLSListener() as internal:
            for port in (internal.port, free_port()):  # an open port and a closed one
                await factory.webhook(
                    url=f"https://mixed.rebind.test:{port}/in", events=["triggered"]
                )
            await open_incident(admin_client)
            await harness.run_jobs()
            errors = [row.last_error for row in await delivery_log(harness, channel="webhook")]
        assert internal.connections == 0
        assert errors == [REFUSED, REFUSED]

    async def test_subscriptions_to_private_addresses_are_refused(self, admin_client):
        response = await admin_client.post(
            "/v1/webhooks/",
            json={"name": "x", "url": "https://192.168.1.10/hook", "events": ["triggered"]},
        )
        assert response.status_code == 422
        assert "private" in response.json()["detail"]


class TestDoneWhen:
    """The issue's acceptance check: one critical incident, a real email and a signed webhook."""

    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(database_url, smtp_host="127.0.0.1", smtp_port=port)

    async def test_a_critical_incident_mails_and_posts_and_the_log_shows_both(
        self, admin_client, user, harness, smtp_server, http_receiver
    ):
        inbox, _ = smtp_server
        hook = (
            await admin_client.post(
                "/v1/webhooks/",
                json={"name": "ops", "url": f"{http_receiver.url}/ops", "events": ["escalated"]},
            )
        ).json()
        policy = {
            "name": "critical", "conditions": {"severities": ["critical"]},
            "steps": [{"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}],
                       "actions": [{"type": "notify"}]}],
        }  # fmt: skip
        assert (await admin_client.post(POLICIES, json=policy)).status_code == 201
        incident = await open_incident(admin_client, severity="critical")
        await harness.run_jobs()

        [mail] = inbox.messages
        assert mail["To"] == user.email and "Checkout down" in mail["Subject"]
        [request] = http_receiver.requests
        payload = verify(hook["secret"], request)
        assert (payload["event"], payload["incident"]["id"]) == (
            "incident.escalated",
            incident["id"],
        )

        log = (await admin_client.get(f"/v1/incidents/{incident['id']}/notifications")).json()
        shown = sorted(
            (n["channel"], n["status"], n["user_id"], n["webhook_id"]) for n in log["items"]
        )
        assert shown == [("email", "sent", user.id, None), ("webhook", "sent", None, hook["id"])]


class TestReviewFindings:
    """Cases a review found: each must hold on both databases."""

    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(
            database_url, smtp_host="127.0.0.1", smtp_port=port, webhook_signing_secret="install"
        )

    async def test_greylisting_is_retried_not_failed(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        inbox.greylist.add(user.email)
        await page_policy(admin_client, user.id)
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="email")
        assert (row.status, row.attempts) == ("pending", 1) and "450" in row.last_error
        inbox.greylist.clear()
        harness.clock.advance(minutes=1)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="email")
        assert row.status == "sent" and len(inbox.messages) == 1

    async def test_a_page_in_flight_when_acknowledged_is_not_retried(
        self, admin_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        worker = harness.app.state.worker
        await worker.run_once([j for j in worker.jobs if j.name == "fire_escalations"])
        sessions = harness.app.state.sessionmaker
        async with session_scope(sessions) as session:  # a worker takes the page ...
            [claimed] = await outbox.claim(session, now=harness.clock.now(), batch=5)
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")  # ... someone acks
        async with session_scope(sessions) as session:  # ... and the send fails, for now
            outcome = outbox.Outcome(claimed, "s", "b", error="SMTP down")
            await outbox.record_outcomes(
                session, outcomes=[outcome], now=harness.clock.now(), max_attempts=6
            )
        harness.clock.advance(minutes=5)
        await harness.run_jobs()
        [row] = await delivery_log(harness, incident_id=incident["id"])
        assert row.status == "cancelled" and "left triggered" in row.last_error
        assert inbox.messages == []

    async def test_subscriptions_still_hear_of_an_escalation_acknowledged_before_delivery(
        self, admin_client, user, harness, factory, http_receiver
    ):
        hook = await factory.webhook(url=f"{http_receiver.url}/s", events=["escalated"])
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        worker = harness.app.state.worker
        await worker.run_once([j for j in worker.jobs if j.name == "fire_escalations"])
        await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        await harness.run_jobs()
        statuses = {(r.channel, r.webhook_id): r.status for r in await delivery_log(harness)}
        assert statuses == {("email", None): "cancelled", ("webhook", hook.id): "sent"}

    async def test_deleting_a_subscription_cancels_what_it_has_queued(
        self, admin_client, harness, http_receiver
    ):
        hook = (
            await admin_client.post(
                "/v1/webhooks/",
                json={"name": "x", "url": f"{http_receiver.url}/x", "events": ["triggered"]},
            )
        ).json()
        await open_incident(admin_client)
        assert (await admin_client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 200
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="webhook")
        assert row.status == "cancelled" and "deleted" in row.last_error
        assert http_receiver.requests == []

    async def test_personal_webhooks_get_the_documented_body_unsigned_and_quote_nothing(
        self, admin_client, user, harness, http_receiver
    ):
        http_receiver.script = [(404, b"internal secret page", 0.0)]
        await admin_client.put(
            f"/v1/notification-preferences/{user.id}/webhook",
            json={"enabled": True, "address": f"{http_receiver.url}/me", "events": ["escalated"]},
        )
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [request] = http_receiver.requests
        headers = {k.lower() for k in request["headers"]}
        assert "x-signature" not in headers  # the install secret is for policy webhooks only
        body = json.loads(request["body"])
        assert (body["event"], body["incident"]["id"]) == ("incident.escalated", incident["id"])
        assert body["id"].startswith("escalation:") and body["data"]["step"] == 1
        [row] = await delivery_log(harness, channel="webhook")
        assert (row.status, row.last_error) == ("failed", "HTTP 404")
        assert json.loads(row.body) == body  # the log keeps what was posted


class TestProductionPolicies:
    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, outbound_allow_private_networks=False)

    async def test_policy_webhooks_to_private_addresses_are_refused_when_saved(self, admin_client):
        step = {"delay_minutes": 0, "targets": [],
                "actions": [{"type": "webhook", "url": "https://10.0.0.5/hook"}]}  # fmt: skip
        response = await admin_client.post(POLICIES, json={"name": "p", "steps": [step]})
        assert response.status_code == 422
        assert "step 1: webhook url" in response.json()["detail"]


class TestBackoff:
    def test_the_default_ladder_is_about_30_s_then_4_times_longer_up_to_an_hour(self):
        for attempts, expected in ((1, 30), (2, 120), (3, 480), (5, 3600), (9, 3600)):
            seconds = outbox.backoff(attempts).total_seconds()
            assert expected * 0.8 <= seconds <= expected * 1.2, attempts

    def test_the_first_wait_and_the_longest_are_settings(self):
        settings = make_settings("sqlite://", notify_retry_base_seconds=0.5,
                                 notify_retry_max_seconds=2)  # fmt: skip
        waits = [
            outbox.backoff(
                attempts, base=settings.notify_retry_base_seconds,
                longest=settings.notify_retry_max_seconds,
            ).total_seconds()
            for attempts in (1, 2, 3, 4)
        ]  # fmt: skip
        assert 0.4 <= waits[0] <= 0.6
        assert all(1.6 <= wait <= 2.4 for wait in waits[1:])

    def test_a_retry_after_longer_than_the_wait_is_respected(self):
        wait = outbox.backoff(1, retry_after=90, base=0.5, longest=2)
        assert wait.total_seconds() == 90
