"""Twilio end to end against a local Twilio (tests/support/twilio.py): SMS pages answered by text,
paging calls answered with a key, delivery receipts, opt-out keywords. Every webhook is signed as
Twilio signs it; nothing but loopback is called. Time moves on the injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.incidents.models import Incident, TimelineEntry
from app.notifications import compose, outbox, receipts, replies
from app.notifications.models import Notification, SmsOptOut, SmsReplyCode, notification_row
from tests.support.console import sign_in
from tests.support.delivery import delivery_log, page_policy, vouch
from tests.support.settings import make_settings
from tests.support.twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, gather_of, said

PUBLIC = "https://ims.example.com"
SMS_HOOK = f"{PUBLIC}/v1/inbound/twilio/sms"
SERVICE_NUMBER = "+15550001111"
NUMBER = "+15552223333"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def twilio_settings(database_url: str, fake: FakeTwilio, **extra: Any) -> Any:
    values = {
        "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
        "twilio_from_number": SERVICE_NUMBER, "twilio_base_url": fake.url,
        "public_base_url": PUBLIC, "project_name": "Acme Paging",
    }  # fmt: skip
    return make_settings(database_url, **(values | extra))


@pytest.fixture
def settings(database_url, twilio):
    return twilio_settings(database_url, twilio)


@pytest.fixture
async def twilio_client(harness):
    """Twilio's side: no user token, only signatures."""
    async with harness.make_client() as client:
        yield client


async def open_incident(client, **fields) -> dict[str, Any]:
    body = {"title": "Checkout <down> & slow", "severity": "critical"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def sms_only(client, user, number: str = NUMBER) -> None:
    """The user is paged by SMS only, at a number an admin vouched for."""
    response = await client.put(
        f"/v1/notification-preferences/{user.id}/sms",
        json={"enabled": True, "address": number, "events": ["escalated"]},
    )
    assert response.status_code == 200, response.text
    await vouch(client, user.id, "sms")
    response = await client.put(
        f"/v1/notification-preferences/{user.id}/email", json={"enabled": False}
    )
    assert response.status_code == 200, response.text


async def paged_by_sms(harness, admin_client, user, twilio, **fields) -> dict[str, Any]:
    """An incident whose page reached the user by SMS (the first test of a class sets the
    policy up)."""
    incident = await open_incident(admin_client, **fields)
    await harness.run_jobs()
    assert twilio.messages and twilio.messages[-1]["To"] == NUMBER
    return incident


async def entries(harness, incident_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        rows = await session.scalars(
            select(TimelineEntry)
            .where(TimelineEntry.incident_id == incident_id)
            .order_by(TimelineEntry.id)
        )
        return [(row.type, row.actor_name, dict(row.data)) for row in rows]


async def of_type(harness, incident_id: int, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [entry for entry in await entries(harness, incident_id) if entry[0] == kind]


async def status_of(harness, incident_id: int) -> str:
    async with session_scope(harness.app.state.sessionmaker) as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        return incident.status


async def reply(twilio, client, body: str, sender: str = NUMBER, **signing: Any) -> str:
    response = await twilio.inbound_sms(client, SMS_HOOK, sender=sender, body=body, **signing)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return said(response.text)


class TestSmsReplies:
    @pytest.fixture(autouse=True)
    async def setup(self, admin_client, user):
        await sms_only(admin_client, user)
        await page_policy(admin_client, user.id)

    async def test_the_page_says_how_to_answer_and_a_reply_acknowledges(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio, title="t" * 300)
        [message] = twilio.messages
        assert (message["To"], message["From"]) == (NUMBER, SERVICE_NUMBER)
        assert message["Body"].endswith(". Reply 1a to ack, 1r to resolve")
        assert len(message["Body"]) <= 160
        [row] = await delivery_log(harness, channel="sms")
        assert message["StatusCallback"] == f"{PUBLIC}/v1/inbound/twilio/status?n={row.id}"
        assert (row.status, row.provider_message_id) == ("sent", message["sid"])

        answer = await reply(twilio, twilio_client, " 1 A ")
        assert answer == f"Acknowledged #{incident['id']} {'t' * 59}…"
        assert await status_of(harness, incident["id"]) == "acknowledged"
        acknowledged = [e for e in await entries(harness, incident["id"]) if e[0] == "acknowledged"]
        assert acknowledged == [("acknowledged", "Uma User", {"via": "sms"})]

        # Again: nothing more happens, and the answer says so.
        assert "already acknowledged" in await reply(twilio, twilio_client, "ack 1")
        types = [e[0] for e in await entries(harness, incident["id"])]
        assert types.count("acknowledged") == 1

    async def test_a_reply_resolves_and_codes_are_per_incident(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        first = await paged_by_sms(harness, admin_client, user, twilio, title="db")
        second = await paged_by_sms(harness, admin_client, user, twilio, title="cache")
        assert [m["Body"][-30:] for m in twilio.messages] == [
            "Reply 1a to ack, 1r to resolve", "Reply 2a to ack, 2r to resolve",
        ]  # fmt: skip
        assert await reply(twilio, twilio_client, "Resolve 2") == f"Resolved #{second['id']} cache"
        assert await status_of(harness, second["id"]) == "resolved"
        assert await status_of(harness, first["id"]) == "triggered"
        resolved = [e for e in await entries(harness, second["id"]) if e[0] == "resolved"]
        assert resolved == [("resolved", "Uma User", {"from": "triggered", "via": "sms"})]
        # Already resolved: said, nothing changes.
        assert "already resolved" in await reply(twilio, twilio_client, "2r")
        assert "is resolved: it cannot be acknowledged" in await reply(twilio, twilio_client, "2a")
        assert [e[0] for e in await entries(harness, second["id"])].count("resolved") == 1

    async def test_codes_are_reused_once_old(self, harness, admin_client, admin, user, twilio):
        old = await paged_by_sms(harness, admin_client, user, twilio)
        harness.clock.advance(days=replies.REPLY_CODE_DAYS + 1)
        async with harness.make_client(harness.factory.token(admin)) as later:
            await later.post(f"/v1/incidents/{old['id']}/resolve")
            new = await paged_by_sms(harness, later, user, twilio, title="next")
        assert twilio.messages[-1]["Body"].endswith("Reply 1a to ack, 1r to resolve")
        async with session_scope(harness.app.state.sessionmaker) as session:
            codes = await session.execute(select(SmsReplyCode.code, SmsReplyCode.incident_id))
            assert list(codes) == [(1, new["id"])]

    async def test_a_forged_or_missing_signature_is_refused_and_changes_nothing(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio)
        before = await entries(harness, incident["id"])
        for signing in (
            {"auth_token": "not-the-auth-token"},  # signed with another key
            {"signed": ""},  # no signature at all
            {"signed": "bm90IGEgc2lnbmF0dXJl"},  # made up
        ):
            response = await twilio.inbound_sms(
                twilio_client, SMS_HOOK, sender=NUMBER, body="1a", **signing
            )
            assert response.status_code == 403, signing
        # Signed for another URL (PUBLIC_BASE_URL is what is checked, not the Host header).
        response = await twilio.inbound_sms(
            twilio_client, "http://test/v1/inbound/twilio/sms", sender=NUMBER, body="1a"
        )
        assert response.status_code == 403
        assert await status_of(harness, incident["id"]) == "triggered"
        assert await entries(harness, incident["id"]) == before

    async def test_numbers_nobody_or_several_people_verified_change_nothing(
        self, harness, admin_client, user, factory, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio)
        answer = await reply(twilio, twilio_client, "1a", sender="+15559990000")
        assert answer == (
            "Acme Paging: this number is not verified for any account. Nothing was done."
        )
        twin = await factory.user(email="twin@example.com")
        await vouch(admin_client, twin.id, "sms", NUMBER)
        assert "verified for 2 accounts" in await reply(twilio, twilio_client, "1a")
        assert await status_of(harness, incident["id"]) == "triggered"

    async def test_unknown_codes_and_other_words_change_nothing(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio)
        assert await reply(twilio, twilio_client, "7a") == (
            "Acme Paging: no page of yours has code 7. Nothing was done."
        )
        assert "not understood" in await reply(twilio, twilio_client, "on my way")
        assert "not understood" in await reply(twilio, twilio_client, "1x")
        assert await status_of(harness, incident["id"]) == "triggered"

    async def test_stop_opts_the_number_out_until_start(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        await paged_by_sms(harness, admin_client, user, twilio)
        # Twilio answers STOP itself (its default opt-out handling): no second answer from us.
        assert await reply(twilio, twilio_client, "stop") == ""
        async with session_scope(harness.app.state.sessionmaker) as session:
            assert list(await session.scalars(select(SmsOptOut.address))) == [NUMBER]
        incident = await open_incident(admin_client, title="after stop")
        await harness.run_jobs()
        assert len(twilio.messages) == 1  # nothing sent to Twilio
        [row] = await delivery_log(harness, incident_id=incident["id"], channel="sms")
        assert (row.status, row.last_error) == ("failed", replies.OPTED_OUT)
        failed = await of_type(harness, incident["id"], "notification_failed")
        assert failed[0][2]["error"] == replies.OPTED_OUT
        # START opts back in: the next page goes out.
        assert await reply(twilio, twilio_client, "START") == ""
        await open_incident(admin_client, title="after start")
        await harness.run_jobs()
        assert len(twilio.messages) == 2

    async def test_no_verification_code_to_a_number_that_texted_stop(
        self, harness, user_client, twilio, twilio_client
    ):
        await reply(twilio, twilio_client, "QUIT", sender="+15557770000")
        response = await user_client.put(
            "/v1/notification-preferences/me/sms",
            json={"enabled": True, "address": "+15557770000"},
        )
        assert response.status_code == 200, response.text
        response = await user_client.post("/v1/notification-preferences/me/sms/verify")
        assert response.status_code == 409
        assert "STOP" in response.json()["detail"]

    async def test_help_is_left_to_twilio_by_default(self, twilio, twilio_client):
        assert await reply(twilio, twilio_client, "HELP") == ""


class TestOwnKeywordReplies:
    @pytest.fixture
    def settings(self, database_url, twilio):
        return twilio_settings(database_url, twilio, twilio_keyword_replies=True)

    async def test_help_stop_and_start_are_answered(self, twilio, twilio_client):
        assert await reply(twilio, twilio_client, "help") == (
            "Acme Paging incident paging. Answer a page with its code: 4a acknowledges, 4r "
            "resolves. Text STOP to stop texts, START to get them again."
        )
        assert "no more texts" in await reply(twilio, twilio_client, "Unsubscribe")
        assert "on again" in await reply(twilio, twilio_client, "unstop")


class TestSmsReceipts:
    @pytest.fixture(autouse=True)
    async def setup(self, admin_client, user):
        await sms_only(admin_client, user)
        await page_policy(admin_client, user.id)

    async def test_delivered_is_kept_and_a_late_sent_does_not_undo_it(
        self, harness, admin_client, admin, user, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio)
        [message] = twilio.messages
        for status in ("sent", "delivered", "sent"):  # the last one arrives late
            assert (await twilio.message_status(twilio_client, message, status)).status_code == 200
        [row] = await delivery_log(harness, channel="sms")
        assert (row.status, row.receipt, row.provider_error) == ("sent", "delivered", None)
        listed = await admin_client.get(f"/v1/incidents/{incident['id']}/notifications")
        [item] = [n for n in listed.json()["items"] if n["channel"] == "sms"]
        assert (item["receipt"], item["provider_error"]) == ("delivered", None)
        assert item["receipt_at"] is not None
        receipts = [e for e in await entries(harness, incident["id"]) if e[0] == "delivery_receipt"]
        assert [(e[2]["receipt"], e[2]["outcome"]) for e in receipts] == [
            ("delivered", "delivered")
        ]
        # The console's incident page shows it beside the page.
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as browser:
            await sign_in(browser, admin.email)
            page = await browser.get(f"/ui/incidents/{incident['id']}")
        assert "sms → Uma User: sent, delivered" in page.text

    async def test_undelivered_fails_the_row_with_the_error_code(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await paged_by_sms(harness, admin_client, user, twilio)
        [message] = twilio.messages
        await twilio.message_status(twilio_client, message, "undelivered", error_code="30003")
        listed = await admin_client.get(f"/v1/incidents/{incident['id']}/notifications")
        [item] = [n for n in listed.json()["items"] if n["channel"] == "sms"]
        assert (item["status"], item["receipt"], item["provider_error"]) == (
            "failed", "undelivered", "30003",
        )  # fmt: skip
        assert item["last_error"] == "SMS undelivered: Twilio error 30003"
        [receipt] = await of_type(harness, incident["id"], "delivery_receipt")
        assert receipt[2] | {"notification_id": 0} == {
            "notification_id": 0, "channel": "sms", "user_id": user.id, "receipt": "undelivered",
            "error_code": "30003", "outcome": "not_delivered",
        }  # fmt: skip

    async def test_callbacks_for_unknown_notifications_are_answered_and_ignored(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        await paged_by_sms(harness, admin_client, user, twilio)
        [message] = twilio.messages
        status = f"{PUBLIC}/v1/inbound/twilio/status"
        for url in (f"{status}?n=999", status):
            stray = message | {"StatusCallback": url}
            answer = await twilio.message_status(twilio_client, stray, "delivered")
            assert answer.status_code == 200
        [row] = await delivery_log(harness, channel="sms")
        assert row.receipt is None

    async def test_the_sdk_errors_are_classified(self, harness, admin_client, user, twilio):
        twilio.script = [(503, 20500, "Service unavailable")]
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="sms")
        assert (row.status, row.last_error) == (
            "pending", "HTTP 503: Twilio error 20500: Unable to create record: Service unavailable"
        )  # fmt: skip
        twilio.opted_out.add(NUMBER)  # Twilio's own block list
        harness.clock.advance(hours=1)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="sms")
        assert row.status == "failed" and "Twilio error 21610" in (row.last_error or "")
        assert twilio.refused[-1] == {
            "path": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json", "status": 400,
            "code": 21610,
        }  # fmt: skip


class TestWrongCredentials:
    @pytest.fixture
    def settings(self, database_url, twilio):
        return twilio_settings(database_url, twilio, twilio_auth_token="wrong-token")

    async def test_a_refused_login_is_a_permanent_failure(
        self, harness, admin_client, user, twilio
    ):
        await sms_only(admin_client, user)
        await page_policy(admin_client, user.id)
        await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, channel="sms")
        assert (row.status, row.attempts) == ("failed", 1)
        assert "HTTP 401: Twilio error 20003" in (row.last_error or "")
        assert twilio.messages == []


# ---- calls ---------------------------------------------------------------------------------------


async def voice_page(harness, user, incident_id: int, number: str = NUMBER) -> int:
    """A voice page to the user, as a personal notification rule writes it."""
    async with session_scope(harness.app.state.sessionmaker) as session:
        incident = await session.get(Incident, incident_id)
        assert incident is not None
        summary = compose.incident_summary(
            {c: getattr(incident, c) for c in compose.SUMMARY_COLUMNS}, None
        )
        row = Notification(**notification_row(
            key=f"test:voice:{incident_id}:{user.id}", incident_id=incident_id,
            event="escalated", channel="voice", address=number, subject="page",
            payload={"event": "escalated", "incident": summary, "actor": None,
                     "recipient": user.full_name},
            now=harness.clock.now(), user_id=user.id,
        ))  # fmt: skip
        session.add(row)
        await session.flush()
        return row.id


class TestCalls:
    @pytest.fixture
    def settings(self, database_url, twilio):
        return twilio_settings(database_url, twilio, notify_max_attempts=2)

    async def called(self, harness, admin_client, user, twilio, **fields):
        incident = await open_incident(admin_client, **fields)
        notification_id = await voice_page(harness, user, incident["id"])
        await harness.run_jobs()
        call = twilio.calls[-1]
        return incident, notification_id, call

    async def test_the_call_is_placed_with_its_callbacks(self, harness, admin_client, user, twilio):
        incident, nid, call = await self.called(harness, admin_client, user, twilio)
        assert (call["To"], call["From"]) == (NUMBER, SERVICE_NUMBER)
        assert call["Url"] == f"{PUBLIC}/v1/inbound/twilio/voice?n={nid}"
        assert call["StatusCallback"] == f"{PUBLIC}/v1/inbound/twilio/status?n={nid}"
        assert call["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.provider_message_id) == ("sent", call["sid"])
        assert "notified" in [e[0] for e in await entries(harness, incident["id"])]

    async def test_a_busy_callback_that_beats_the_outboxs_record_still_calls_again(
        self, harness, admin_client, user, twilio
    ):
        """A busy line answers at once: Twilio's final callback can come before the outbox has
        recorded the call as placed. It is kept, and applied when the call is recorded."""
        incident = await open_incident(admin_client)
        nid = await voice_page(harness, user, incident["id"])
        sessionmaker = harness.app.state.sessionmaker
        now = harness.clock.now()
        async with session_scope(sessionmaker) as session:
            [claimed] = [c for c in await outbox.claim(session, now=now, batch=50) if c.id == nid]
        busy = receipts.Receipt(nid, receipts.Kind.call, "CA0early", "busy")
        async with session_scope(sessionmaker) as session:
            recorded = await receipts.record(session, busy, now=now, max_attempts=2)
        assert recorded is receipts.Recorded.not_delivered  # nothing to retry yet: in flight
        placed = outbox.Outcome(claimed, "page", "page", provider_message_id="CA0early")
        async with session_scope(sessionmaker) as session:
            await outbox.record_outcomes(session, outcomes=[placed], now=now, max_attempts=2)
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.receipt, row.provider_message_id) == ("pending", "busy", "CA0early")
        assert row.last_error == "call not answered (busy)"
        assert twilio.calls == []
        harness.clock.advance(timedelta(minutes=5))
        await harness.run_jobs()
        [call] = twilio.calls
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.attempts, row.provider_message_id) == ("sent", 2, call["sid"])
        assert row.receipt is None  # the earlier attempt's receipt is moot

    async def test_a_call_the_outbox_never_heard_of_does_not_speak_for_the_next_one(
        self, harness, admin_client, user, twilio
    ):
        """Attempt 1 times out after Twilio placed the call: that call's callbacks come for the
        row, but say nothing of attempt 2, which is answered and stays delivered."""
        incident = await open_incident(admin_client)
        nid = await voice_page(harness, user, incident["id"])
        sessionmaker = harness.app.state.sessionmaker
        now = harness.clock.now()
        async with session_scope(sessionmaker) as session:
            [claimed] = [c for c in await outbox.claim(session, now=now, batch=50) if c.id == nid]
        timed_out = outbox.Outcome(claimed, "page", "", error="timed out: Twilio did not answer")
        async with session_scope(sessionmaker) as session:
            await outbox.record_outcomes(session, outcomes=[timed_out], now=now, max_attempts=2)
        orphan = receipts.Receipt(nid, receipts.Kind.call, "CA0orphan", "no-answer")
        async with session_scope(sessionmaker) as session:
            assert (
                await receipts.record(session, orphan, now=now, max_attempts=2)
                is receipts.Recorded.stale
            )
        harness.clock.advance(timedelta(minutes=5))
        await harness.run_jobs()
        [call] = twilio.calls
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.attempts, row.provider_message_id) == ("sent", 2, call["sid"])
        assert row.receipt is None
        done = receipts.Receipt(nid, receipts.Kind.call, call["sid"], "completed")
        async with session_scope(sessionmaker) as session:
            recorded = await receipts.record(session, done, now=now, max_attempts=2)
        assert recorded is receipts.Recorded.delivered
        harness.clock.advance(timedelta(minutes=30))
        await harness.run_jobs()
        assert len(twilio.calls) == 1
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.receipt) == ("sent", "completed")

    async def test_a_notification_id_that_is_not_ascii_digits_is_no_call(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        for raw in ("²", "1e3", "-1", "9" * 19):
            response = await twilio.post_signed(
                twilio_client,
                f"{PUBLIC}/v1/inbound/twilio/voice?n={quote(raw)}",
                {"CallSid": "CA1"},
            )
            assert response.status_code == 200, (raw, response.text)
            assert said(response.text), response.text  # a spoken answer, never a 500

    async def test_answered_the_menu_reads_the_incident_and_4_acknowledges(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        answer = await twilio.answer_call(twilio_client, call)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(
            "application/xml"
        )
        action, menu = gather_of(answer.text)
        assert menu == (
            f"This is Acme Paging. Incident {incident['id']}, severity critical: Checkout down "
            "slow. Press 4 to acknowledge, 6 to resolve, 9 to escalate to the next step."
        )
        # Nothing pressed: Twilio goes on past the Gather.
        assert said(answer.text).endswith("No key was pressed. Goodbye.")
        assert answer.text.endswith("<Hangup /></Response>")
        assert action.startswith(f"{PUBLIC}/v1/inbound/twilio/voice/key?n=")
        pressed = await twilio.press(twilio_client, call, answer.text, "4")
        assert said(pressed.text) == f"Incident {incident['id']} is acknowledged. Goodbye."
        assert await status_of(harness, incident["id"]) == "acknowledged"
        acknowledged = [e for e in await entries(harness, incident["id"]) if e[0] == "acknowledged"]
        assert acknowledged == [("acknowledged", "Uma User", {"via": "voice"})]
        # Answered again later: the incident's state, no menu.
        again = await twilio.answer_call(twilio_client, call)
        assert said(again.text) == (
            f"Incident {incident['id']}, Checkout down slow, is acknowledged. Nothing is needed "
            "from you. Goodbye."
        )
        assert "<Gather" not in again.text

    async def test_6_resolves(self, harness, admin_client, user, twilio, twilio_client):
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        menu = (await twilio.answer_call(twilio_client, call)).text
        pressed = await twilio.press(twilio_client, call, menu, "6")
        assert said(pressed.text) == f"Incident {incident['id']} is resolved. Goodbye."
        resolved = [e for e in await entries(harness, incident["id"]) if e[0] == "resolved"]
        assert resolved == [("resolved", "Uma User", {"from": "triggered", "via": "voice"})]

    async def test_9_escalates_to_the_next_step(
        self, harness, admin_client, user, admin, twilio, twilio_client
    ):
        steps = [
            {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}]},
            {"delay_minutes": 30, "targets": [{"type": "user", "id": admin.id}]},
        ]
        response = await admin_client.post(
            "/v1/escalation/policies/", json={"name": "two", "steps": steps}
        )
        assert response.status_code == 201, response.text
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        menu = (await twilio.answer_call(twilio_client, call)).text
        pressed = await twilio.press(twilio_client, call, menu, "9")
        assert said(pressed.text) == (
            f"Incident {incident['id']} is escalated to the next step. Goodbye."
        )
        escalated = [e for e in await entries(harness, incident["id"]) if e[0] == "escalated"]
        assert [(e[1], e[2]["step"], e[2].get("via")) for e in escalated] == [
            ("system", 1, None), ("Uma User", 2, "voice"),
        ]  # fmt: skip
        # No step left: said, nothing done.
        pressed = await twilio.press(twilio_client, call, menu, "9")
        assert "no step left" in said(pressed.text) and "Nothing was done" in said(pressed.text)

    async def test_another_key_repeats_the_menu_and_no_key_says_goodbye(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        menu = (await twilio.answer_call(twilio_client, call)).text
        pressed = await twilio.press(twilio_client, call, menu, "1")
        _, again = gather_of(pressed.text)
        assert again.startswith("That key does nothing. This is Acme Paging.")
        pressed = await twilio.press(twilio_client, call, menu, "")
        assert said(pressed.text) == "No key was pressed. Goodbye."
        assert await status_of(harness, incident["id"]) == "triggered"
        assert [e[0] for e in await entries(harness, incident["id"])] == [
            "created", "policy_applied", "notified",
        ]  # fmt: skip

    async def test_a_forged_keypress_is_refused(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        menu = (await twilio.answer_call(twilio_client, call)).text
        action, _ = gather_of(menu)
        params = {"CallSid": call["sid"], "Digits": "6", "AccountSid": ACCOUNT_SID}
        forged = await twilio.post_signed(twilio_client, action, params, auth_token="guess")
        assert forged.status_code == 403
        assert await status_of(harness, incident["id"]) == "triggered"

    async def test_an_unanswered_call_is_placed_again_then_fails(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident, _, first = await self.called(harness, admin_client, user, twilio)
        for status in ("initiated", "ringing", "no-answer"):
            assert (await twilio.call_status(twilio_client, first, status)).status_code == 200
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.attempts, row.receipt) == ("pending", 1, "no-answer")
        assert row.last_error == "call not answered (no-answer)"
        harness.clock.advance(minutes=5)
        await harness.run_jobs()
        second = twilio.calls[-1]
        assert len(twilio.calls) == 2 and second["sid"] != first["sid"]
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.attempts, row.receipt) == ("sent", 2, None)
        # The first call's callbacks, late, change nothing now.
        await twilio.call_status(twilio_client, first, "completed")
        [row] = await delivery_log(harness, channel="voice")
        assert row.receipt is None
        await twilio.call_status(twilio_client, second, "busy")
        listed = await admin_client.get(f"/v1/incidents/{incident['id']}/notifications")
        [item] = [n for n in listed.json()["items"] if n["channel"] == "voice"]
        assert (item["status"], item["attempts"], item["receipt"]) == ("failed", 2, "busy")
        assert item["last_error"] == "call not answered (busy) after 2 attempt(s)"
        kinds = [
            (e[0], e[2].get("receipt"), e[2].get("outcome"))
            for e in await entries(harness, incident["id"])
        ]
        assert kinds == [
            ("created", None, None), ("policy_applied", None, None), ("notified", None, None),
            ("delivery_receipt", "no-answer", "retry"), ("notified", None, None),
            ("delivery_receipt", "busy", "not_delivered"), ("notification_failed", None, None),
        ]  # fmt: skip

    async def test_a_completed_call_is_delivered(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident, _, call = await self.called(harness, admin_client, user, twilio)
        for status in ("ringing", "completed", "ringing"):
            await twilio.call_status(twilio_client, call, status, answered_by="human")
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.receipt) == ("sent", "completed")
        [receipt] = await of_type(harness, incident["id"], "delivery_receipt")
        assert (receipt[2]["outcome"], receipt[2]["answered_by"]) == ("delivered", "human")


# ---- personal notification rules: a text at once, a call two minutes later -----------------------


class TestRules:
    @pytest.fixture(autouse=True)
    async def setup(self, admin_client, user, factory):
        """The user's rules: SMS at once, a call after 2 minutes, at a number an admin vouched
        for (once: the proof serves both); no preference pages them any more."""
        sms = await factory.contact_method(user_id=user.id, type="sms", address=NUMBER)
        voice = await factory.contact_method(user_id=user.id, type="voice", address=NUMBER)
        response = await admin_client.post(f"/v1/users/{user.id}/contact-methods/{sms.id}/verified")
        assert response.status_code == 200, response.text
        for method, delay in ((sms, 0), (voice, 2)):
            await factory.notification_rule(
                user_id=user.id, contact_method_id=method.id, delay_minutes=delay
            )
        await page_policy(admin_client, user.id)

    async def test_a_reply_to_the_text_stops_the_call(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [message] = twilio.messages
        assert message["To"] == NUMBER and message["Body"].endswith(
            "Reply 1a to ack, 1r to resolve"
        )
        assert twilio.calls == []
        assert await reply(twilio, twilio_client, "1a") == (
            f"Acknowledged #{incident['id']} Checkout <down> & slow"
        )
        harness.clock.advance(timedelta(minutes=3))
        await harness.run_jobs()
        assert twilio.calls == []
        pages = await delivery_log(harness, incident_id=incident["id"], event="escalated")
        assert [(p.channel, p.status) for p in pages] == [("sms", "sent"), ("voice", "cancelled")]
        assert await of_type(harness, incident["id"], "acknowledged") == [
            ("acknowledged", "Uma User", {"via": "sms"})
        ]

    async def test_no_reply_then_the_call_and_its_key_acknowledges(
        self, harness, admin_client, user, twilio, twilio_client
    ):
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        harness.clock.advance(timedelta(minutes=1, seconds=59))
        await harness.run_jobs()
        assert twilio.calls == []
        harness.clock.advance(timedelta(seconds=1))
        await harness.run_jobs()
        [call] = twilio.calls
        assert call["To"] == NUMBER
        answer = await twilio.answer_call(twilio_client, call)
        pressed = await twilio.press(twilio_client, call, answer.text, "4")
        assert said(pressed.text) == f"Incident {incident['id']} is acknowledged. Goodbye."
        assert await of_type(harness, incident["id"], "acknowledged") == [
            ("acknowledged", "Uma User", {"via": "voice"})
        ]


class TestUnansweredCallThenTheNextRule:
    @pytest.fixture
    def settings(self, database_url, twilio):
        return twilio_settings(
            database_url, twilio, notify_max_attempts=2, notify_retry_base_seconds=600
        )

    async def test_a_call_nobody_answers_is_placed_again_and_the_next_rule_fires_on_time(
        self, harness, admin_client, user, factory, twilio, twilio_client
    ):
        """Rules: a call at once, a text after 2 minutes. The call rings out: it goes back for
        another attempt (the backoff: about 10 minutes here), and the text goes at 2 minutes."""
        voice = await factory.contact_method(user_id=user.id, type="voice", address=NUMBER)
        sms = await factory.contact_method(user_id=user.id, type="sms", address=NUMBER)
        vouched = await admin_client.post(
            f"/v1/users/{user.id}/contact-methods/{voice.id}/verified"
        )
        assert vouched.status_code == 200, vouched.text
        for method, delay in ((voice, 0), (sms, 2)):
            await factory.notification_rule(
                user_id=user.id, contact_method_id=method.id, delay_minutes=delay
            )
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [call] = twilio.calls
        assert (await twilio.call_status(twilio_client, call, "no-answer")).status_code == 200
        [row] = await delivery_log(harness, channel="voice")
        assert (row.status, row.receipt) == ("pending", "no-answer")
        assert twilio.messages == []
        harness.clock.advance(timedelta(minutes=2))
        await harness.run_jobs()
        [text] = twilio.messages
        assert text["To"] == NUMBER and "Reply 1a to ack" in text["Body"]
        assert len(twilio.calls) == 1  # the second call waits for its backoff
        harness.clock.advance(timedelta(minutes=15))
        await harness.run_jobs()
        assert len(twilio.calls) == 2
        receipts_seen = [
            e[2]["receipt"] for e in await of_type(harness, incident["id"], "delivery_receipt")
        ]
        assert receipts_seen == ["no-answer"]
