"""Verified addresses: nothing but a verification code goes to an email address or a number that
is not proven to be its user's (the relay finding). Codes arrive over real peers on loopback:
aiosmtpd for mail, a local HTTP server speaking Twilio's API for SMS."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.notifications.models import ContactVerification, Notification
from app.notifications.verification import NOT_VERIFIED
from tests.support.delivery import delivery_log, page_policy, vouch
from tests.support.settings import make_settings

ME = "/v1/notification-preferences/me"
STRANGER = "stranger@elsewhere.example"
PASSWORD = "correct horse battery staple"
TWILIO_OK = (201, b'{"sid": "SM1", "status": "queued"}', 0.0)


async def open_incident(client, **fields):
    body = {"title": "Checkout down", "severity": "critical"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def mail_code(message) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    return re.search(r"\b([0-9]{6})\b", text).group(1)


def sms_code(request) -> str:
    body = parse_qs(request["body"].decode())["Body"][0]
    return re.search(r"\b([0-9]{6})\b", body).group(1)


async def preference(client, channel):
    items = (await client.get(ME)).json()["items"]
    return next(p for p in items if p["channel"] == channel)


async def ask_code(client, channel):
    response = await client.post(f"{ME}/{channel}/verify")
    assert response.status_code == 202, response.text
    return response.json()


class TestEmail:
    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(
            database_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="ims@example.com"
        )

    async def test_the_relay_is_closed_until_the_address_is_verified(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        """A plain user points their email at a stranger and gets paged with a title of their
        choosing: nothing reaches the stranger until the code sent there is entered back."""
        inbox, _ = smtp_server
        response = await user_client.put(f"{ME}/email", json={"enabled": True, "address": STRANGER})
        assert response.status_code == 200, response.text
        assert response.json()["verified"] is False
        await page_policy(admin_client, user.id)
        first = await open_incident(user_client, title="Buy cheap watches at spam.example")
        await harness.run_jobs()
        assert inbox.messages == []
        [row] = await delivery_log(harness, incident_id=first["id"])
        assert (row.address, row.status, row.last_error) == (STRANGER, "failed", NOT_VERIFIED)
        [event] = (await admin_client.get(f"/v1/incidents/{first['id']}/escalation-events")).json()[
            "items"
        ]
        assert event["notified_user_ids"] == []

        # The code goes there, and only the code: the stranger's mail says nothing the user wrote.
        sent = await ask_code(user_client, "email")
        assert (sent["address"], sent["attempts_allowed"]) == (STRANGER, 5)
        await harness.run_jobs()
        [message] = inbox.messages
        assert inbox.recipients == [[STRANGER]]
        assert "spam.example" not in message.as_string()
        code = mail_code(message)
        [mail] = await delivery_log(harness, event="address_verification")
        assert (mail.status, mail.body) == ("sent", "")  # the text (the code) is never stored
        async with session_scope(harness.app.state.sessionmaker) as session:
            stored = await session.scalar(select(ContactVerification))
        assert stored.code_hash is not None and code not in stored.code_hash
        assert code not in str(mail.payload)

        confirmed = await user_client.post(f"{ME}/email/confirm", json={"code": code})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["verified"] is True
        assert (await preference(user_client, "email"))["verified"] is True
        inbox.messages.clear()
        inbox.recipients.clear()
        second = await open_incident(user_client, title="Checkout down")
        await harness.run_jobs()
        assert inbox.recipients == [[STRANGER]]
        [row] = await delivery_log(harness, incident_id=second["id"])
        assert row.status == "sent"

    async def test_wrong_codes_expiry_and_a_new_code(self, user_client, harness, smtp_server):
        inbox, _ = smtp_server
        await user_client.put(f"{ME}/email", json={"enabled": True, "address": STRANGER})
        await ask_code(user_client, "email")
        await harness.run_jobs()
        code = mail_code(inbox.messages[-1])
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for left in (4, 3, 2, 1):
            response = await user_client.post(f"{ME}/email/confirm", json={"code": wrong})
            assert response.status_code == 400
            assert response.json()["detail"] == f"Wrong code: {left} attempt(s) left for this code"
        response = await user_client.post(f"{ME}/email/confirm", json={"code": wrong})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        # Five wrong codes: even the right one no longer works; a new one is needed.
        response = await user_client.post(f"{ME}/email/confirm", json={"code": code})
        assert response.status_code == 429
        assert "ask for a new one" in response.json()["detail"]

        await ask_code(user_client, "email")
        await harness.run_jobs()
        newer = mail_code(inbox.messages[-1])
        harness.clock.advance(minutes=16)
        response = await user_client.post(f"{ME}/email/confirm", json={"code": newer})
        assert response.status_code == 410
        assert response.json()["detail"] == "The code has expired: ask for a new one"
        assert (await preference(user_client, "email"))["verified"] is False

        malformed = await user_client.post(f"{ME}/email/confirm", json={"code": "12345"})
        assert malformed.status_code == 422

    async def test_codes_are_rate_limited_per_user(self, user_client):
        await user_client.put(f"{ME}/email", json={"enabled": True, "address": STRANGER})
        for _ in range(5):
            await ask_code(user_client, "email")
        response = await user_client.post(f"{ME}/email/verify")
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0

    async def test_no_code_for_a_verified_address_nor_without_one(self, user_client):
        # The account's own email needs no proof (an admin created the account).
        response = await user_client.post(f"{ME}/email/verify")
        assert response.status_code == 409
        assert "verified already" in response.json()["detail"]
        response = await user_client.post(f"{ME}/email/confirm", json={"code": "123456"})
        assert response.status_code == 200 and response.json()["verified"] is True
        response = await user_client.post(f"{ME}/sms/verify")  # no number anywhere
        assert response.status_code == 422
        assert (await user_client.post(f"{ME}/slack/verify")).status_code == 422

    async def test_changing_the_address_unverifies_it(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        await user_client.put(f"{ME}/email", json={"enabled": True, "address": STRANGER})
        await vouch(admin_client, user.id, "email")
        assert (await preference(user_client, "email"))["verified"] is True
        other = await user_client.put(
            f"{ME}/email", json={"enabled": True, "address": "other@elsewhere.example"}
        )
        assert other.json()["verified"] is False
        back = await user_client.put(f"{ME}/email", json={"enabled": True, "address": STRANGER})
        assert back.json()["verified"] is False  # the proof went with the change
        # Without an address the preference follows the account's email: no proof needed.
        own = await user_client.put(f"{ME}/email", json={"enabled": True})
        assert (own.json()["effective_address"], own.json()["verified"]) == (user.email, True)

    async def test_an_email_its_user_set_needs_proof(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        """The account's own email is trusted as an admin set it; changing it yourself to a
        stranger's address is the same relay, so the new one needs a code."""
        inbox, _ = smtp_server
        response = await user_client.put(
            "/v1/users/me", json={"email": STRANGER, "current_password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        assert (await preference(user_client, "email"))["verified"] is False
        await page_policy(admin_client, user.id)
        await open_incident(user_client)
        await harness.run_jobs()
        assert inbox.messages == []
        await ask_code(user_client, "email")
        await harness.run_jobs()
        code = mail_code(inbox.messages[-1])
        response = await user_client.post(f"{ME}/email/confirm", json={"code": code})
        assert response.json()["verified"] is True

    async def test_a_later_signup_proves_its_email_the_first_does_not_need_to(self, client):
        for email in ("first@example.com", "second@example.com"):
            response = await client.post(
                "/v1/auth/signup",
                json={"email": email, "password": PASSWORD, "full_name": email},
            )
            assert response.status_code == 201, response.text
        verified = []
        for email in ("first@example.com", "second@example.com"):
            login = await client.post(
                "/v1/auth/login/access-token", data={"username": email, "password": PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            items = (await client.get(ME, headers=headers)).json()["items"]
            verified.append(items[0]["verified"])
        assert verified == [True, False]


class TestSms:
    @pytest.fixture
    def settings(self, database_url, http_receiver):
        return make_settings(
            database_url, twilio_account_sid="AC0123", twilio_auth_token="s3cret",
            twilio_from_number="+15550001111", twilio_base_url=http_receiver.url,
        )  # fmt: skip

    async def test_a_number_gets_pages_once_its_code_is_entered(
        self, admin_client, user_client, user, harness, http_receiver
    ):
        await user_client.put(f"{ME}/email", json={"enabled": False})
        response = await user_client.put(
            f"{ME}/sms", json={"enabled": True, "address": "+15552223333"}
        )
        assert response.json()["verified"] is False
        await page_policy(admin_client, user.id)
        first = await open_incident(user_client)
        await harness.run_jobs()
        assert http_receiver.requests == []
        [row] = await delivery_log(harness, incident_id=first["id"])
        assert (row.channel, row.status, row.last_error) == ("sms", "failed", NOT_VERIFIED)

        http_receiver.script = [TWILIO_OK, TWILIO_OK]
        await ask_code(user_client, "sms")
        await harness.run_jobs()
        [request] = http_receiver.requests
        form = {k: v[0] for k, v in parse_qs(request["body"].decode()).items()}
        assert form["To"] == "+15552223333" and "verification code" in form["Body"]
        response = await user_client.post(f"{ME}/sms/confirm", json={"code": sms_code(request)})
        assert response.status_code == 200 and response.json()["verified"] is True
        second = await open_incident(user_client, title="second")
        await harness.run_jobs()
        assert len(http_receiver.requests) == 2
        [row] = await delivery_log(harness, incident_id=second["id"])
        assert (row.status, row.address) == ("sent", "+15552223333")

    async def test_the_profile_phone_needs_proof_too(self, user_client, factory, harness):
        person = await factory.user(phone="+15557654321")
        client = harness.make_client(factory.token(person))
        async with client:
            sms = await preference(client, "sms")
            assert (sms["effective_address"], sms["verified"]) == ("+15557654321", False)


class TestAdmin:
    async def test_an_admin_vouches_for_an_address_and_it_is_logged(
        self, admin_client, user_client, admin, user, caplog
    ):
        await user_client.put(f"{ME}/sms", json={"enabled": True, "address": "+15552223333"})
        path = f"/v1/notification-preferences/{user.id}/sms/verified"
        assert (await user_client.post(path, json={})).status_code == 403
        with caplog.at_level(logging.INFO, logger="app.notifications.preferences"):
            response = await admin_client.post(path, json={"address": "+1 555 222 3333"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["address"], body["verified_via"], body["verified_by"]) == (
            "+15552223333", "admin", admin.id,
        )  # fmt: skip
        assert (await preference(user_client, "sms"))["verified"] is True
        [record] = [r for r in caplog.records if "verified" in r.getMessage()]
        assert f"admin {admin.id} marked the sms address +15552223333 of user {user.id}" in (
            record.getMessage()
        )
        bad = await admin_client.post(path, json={"address": "555"})
        assert bad.status_code == 422


async def test_unverified_rows_are_not_claimed(harness, factory):
    """A row recorded as not sent stays that way: the outbox never picks it up."""
    await factory.notification(status="failed", attempts=0, last_error=NOT_VERIFIED)
    await harness.run_jobs()
    async with session_scope(harness.app.state.sessionmaker) as session:
        [row] = list(await session.scalars(select(Notification)))
    assert (row.status, row.attempts, row.last_error) == ("failed", 0, NOT_VERIFIED)
