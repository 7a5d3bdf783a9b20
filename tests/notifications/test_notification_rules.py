"""Contact methods and personal notification rules: "when I am paged, notify me by X after N
minutes". Pages go over real peers on loopback (aiosmtpd for mail); SMS without Twilio settings
goes to the log, as in development. Time moves on the injected clock; nothing sleeps."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.notifications.models import ContactVerification
from app.notifications.verification import NOT_VERIFIED, code_for
from tests.support.delivery import delivery_log, page_policy
from tests.support.settings import make_settings

METHODS = "/v1/users/me/contact-methods"
RULES = "/v1/users/me/notification-rules"
NUMBER = "+14155552671"


async def add_method(client, type_, address, *, expect=201, label=""):
    response = await client.post(METHODS, json={"type": type_, "address": address, "label": label})
    assert response.status_code == expect, response.text
    return response.json()


async def add_rule(client, method_id, delay=0, *, expect=201, **fields):
    body = {"contact_method_id": method_id, "delay_minutes": delay} | fields
    response = await client.post(RULES, json=body)
    assert response.status_code == expect, response.text
    return response.json()


async def open_incident(client, **fields):
    body = {"title": "Checkout down", "severity": "critical"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def vouch_method(admin_client, user_id, method_id):
    response = await admin_client.post(f"/v1/users/{user_id}/contact-methods/{method_id}/verified")
    assert response.status_code == 200, response.text
    assert response.json()["verified"] is True


class TestContactMethods:
    async def test_numbers_are_checked_against_the_numbering_plan_and_stored_as_e164(
        self, user_client
    ):
        method = await add_method(user_client, "sms", " +1 (415) 555-2671 ", label="Mobile")
        assert (method["type"], method["address"], method["label"]) == ("sms", NUMBER, "Mobile")
        assert method["verified"] is False
        for wrong in ("+15551234567", "4155552671", "call me", "+1415555267"):
            response = await user_client.post(METHODS, json={"type": "voice", "address": wrong})
            assert response.status_code == 422, (wrong, response.text)
            assert "address" in response.json()["detail"]
        assert (await user_client.get(METHODS)).json()["items"] == [method]

    async def test_email_and_slack_addresses_are_checked(self, user_client, user):
        own = await add_method(user_client, "email", user.email.upper())
        assert (own["address"], own["verified"]) == (user.email, True)  # the account's own
        other = await add_method(user_client, "email", "Pager@Example.com")
        assert (other["address"], other["verified"]) == ("pager@example.com", False)
        slack = await add_method(user_client, "slack", "U012AB3CD")
        assert slack["verified"] is True  # a member id needs no code
        for type_, wrong in (("email", "not-an-address"), ("slack", "#general")):
            await add_method(user_client, type_, wrong, expect=422)
        response = await user_client.post(f"{METHODS}/{slack['id']}/verify")
        assert response.status_code == 422

    async def test_the_same_method_twice_is_a_conflict(self, user_client):
        await add_method(user_client, "sms", NUMBER)
        response = await user_client.post(
            METHODS, json={"type": "sms", "address": "+1 415 555 2671"}
        )
        assert response.status_code == 409
        await add_method(user_client, "voice", NUMBER)  # the same number for calls is another

    async def test_a_number_proven_by_text_is_proven_for_calls_too(
        self, user_client, harness, settings
    ):
        sms = await add_method(user_client, "sms", NUMBER)
        voice = await add_method(user_client, "voice", NUMBER)
        response = await user_client.post(f"{METHODS}/{voice['id']}/verify")
        assert response.status_code == 202, response.text
        assert (response.json()["channel"], response.json()["address"]) == ("sms", NUMBER)
        wrong = await user_client.post(f"{METHODS}/{voice['id']}/confirm", json={"code": "000000"})
        assert wrong.status_code == 400 and "attempt" in wrong.json()["detail"]
        [sent] = await delivery_log(harness, event="address_verification")
        assert (sent.channel, sent.address) == ("sms", NUMBER)
        code = code_for(settings.secret_key, sent.payload["nonce"])
        confirmed = await user_client.post(f"{METHODS}/{voice['id']}/confirm", json={"code": code})
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["verified"] is True
        assert (await user_client.get(f"{METHODS}/{sms['id']}")).json()["verified"] is True
        again = await user_client.post(f"{METHODS}/{sms['id']}/verify")
        assert again.status_code == 409

    async def test_a_new_address_needs_proving_again(self, user_client, admin_client, user):
        method = await add_method(user_client, "sms", NUMBER)
        await vouch_method(admin_client, user.id, method["id"])
        changed = await user_client.patch(
            f"{METHODS}/{method['id']}", json={"address": "+14155550100"}
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["address"], changed.json()["verified"]) == ("+14155550100", False)
        back = await user_client.patch(f"{METHODS}/{method['id']}", json={"address": NUMBER})
        assert back.json()["verified"] is False  # the old proof was dropped with the address
        relabelled = await user_client.patch(f"{METHODS}/{method['id']}", json={"label": "Old"})
        assert (relabelled.json()["label"], relabelled.json()["address"]) == ("Old", NUMBER)
        nulled = await user_client.patch(f"{METHODS}/{method['id']}", json={"address": None})
        assert nulled.status_code == 422

    async def test_deleting_a_method_deletes_its_rules(self, user_client):
        method = await add_method(user_client, "sms", NUMBER)
        kept = await add_method(user_client, "slack", "U0LEFT")
        await add_rule(user_client, method["id"], 0)
        other = await add_rule(user_client, kept["id"], 5)
        assert (await user_client.delete(f"{METHODS}/{method['id']}")).status_code == 204
        assert (await user_client.get(RULES)).json()["items"] == [other]
        assert (await user_client.get(f"{METHODS}/{method['id']}")).status_code == 404

    async def test_users_cannot_reach_each_others_methods(
        self, user_client, admin_client, factory, admin
    ):
        stranger = await factory.user()
        theirs = await factory.contact_method(user_id=stranger.id)
        assert (await user_client.get(f"{METHODS}/{theirs.id}")).status_code == 404
        assert (await user_client.delete(f"{METHODS}/{theirs.id}")).status_code == 404
        assert (await add_rule(user_client, theirs.id, expect=422))["detail"].startswith(
            "contact_method_id"
        )
        path = f"/v1/users/{stranger.id}/contact-methods"
        assert (await user_client.get(path)).status_code == 403
        made = await admin_client.post(path, json={"type": "voice", "address": NUMBER})
        assert made.status_code == 201 and made.json()["user_id"] == stranger.id
        listed = (await admin_client.get(path)).json()["items"]
        assert [m["id"] for m in listed] == [theirs.id, made.json()["id"]]
        # An admin's own "me" route never reaches another user's method.
        assert (await admin_client.get(f"{METHODS}/{theirs.id}")).status_code == 404


class TestRules:
    async def test_rules_are_listed_in_firing_order_and_clash_on_the_same_delay(self, user_client):
        sms = await add_method(user_client, "sms", NUMBER)
        voice = await add_method(user_client, "voice", NUMBER)
        call = await add_rule(user_client, voice["id"], 2)
        text = await add_rule(user_client, sms["id"], 0, min_severity="high")
        assert [r["id"] for r in (await user_client.get(RULES)).json()["items"]] == [
            text["id"], call["id"],
        ]  # fmt: skip
        assert text["min_severity"] == "high"
        clash = await add_rule(user_client, voice["id"], 2, expect=409)
        assert "already" in clash["detail"]
        for wrong in ({"delay_minutes": -1}, {"delay_minutes": 1441}, {"min_severity": "huge"}):
            response = await user_client.post(RULES, json={"contact_method_id": sms["id"]} | wrong)
            assert response.status_code == 422
        moved = await user_client.patch(f"{RULES}/{call['id']}", json={"delay_minutes": 0})
        assert moved.status_code == 200 and moved.json()["delay_minutes"] == 0
        onto = await user_client.patch(
            f"{RULES}/{text['id']}", json={"contact_method_id": voice["id"]}
        )
        assert onto.status_code == 409  # voice at 0 exists now
        assert (await user_client.delete(f"{RULES}/{call['id']}")).status_code == 204
        assert (await user_client.delete(f"{RULES}/{call['id']}")).status_code == 404


class TestPaging:
    @pytest.fixture
    def settings(self, database_url, smtp_server):
        _, port = smtp_server
        return make_settings(
            database_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="ims@example.com"
        )

    async def test_each_rule_fires_once_after_its_delay(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        mail = await add_method(user_client, "email", user.email)
        pager = await add_method(user_client, "email", "pager@example.com")
        sms = await add_method(user_client, "sms", NUMBER)
        for method in (pager, sms):
            await vouch_method(admin_client, user.id, method["id"])
        await add_rule(user_client, mail["id"], 0)
        await add_rule(user_client, sms["id"], 0)
        late = await add_rule(user_client, pager["id"], 5)
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        start = harness.clock.now()
        await harness.run_jobs()
        rows = await delivery_log(harness, incident_id=incident["id"], event="escalated")
        assert sorted((r.channel, r.address, r.status) for r in rows) == [
            ("email", "pager@example.com", "pending"),
            ("email", user.email, "sent"),
            ("sms", NUMBER, "sent"),  # no Twilio settings: the log, as in development
        ]
        [waiting] = [r for r in rows if r.status == "pending"]
        assert waiting.next_attempt_at == start + timedelta(minutes=5)
        assert waiting.key.endswith(f":user:{user.id}:rule:{late['id']}")
        assert [m["To"] for m in inbox.messages] == [user.email]
        harness.clock.advance(timedelta(minutes=4, seconds=59))
        await harness.run_jobs()
        assert len(inbox.messages) == 1
        harness.clock.advance(timedelta(seconds=1))
        await harness.run_jobs()
        harness.clock.advance(timedelta(minutes=10))
        await harness.run_jobs()
        assert [m["To"] for m in inbox.messages] == [user.email, "pager@example.com"]
        rows = await delivery_log(harness, incident_id=incident["id"], event="escalated")
        assert [r.status for r in rows] == ["sent", "sent", "sent"]

    async def test_acknowledging_stops_the_rules_not_yet_fired(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        mail = await add_method(user_client, "email", user.email)
        voice = await add_method(user_client, "voice", NUMBER)
        await vouch_method(admin_client, user.id, voice["id"])
        await add_rule(user_client, mail["id"], 0)
        await add_rule(user_client, voice["id"], 2)
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        assert (
            await user_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
        ).status_code == 200
        harness.clock.advance(timedelta(minutes=3))
        await harness.run_jobs()
        rows = await delivery_log(harness, incident_id=incident["id"], event="escalated")
        assert [(r.channel, r.status) for r in rows] == [("email", "sent"), ("voice", "cancelled")]
        assert len(inbox.messages) == 1

    async def test_rules_replace_preferences_for_pages_only(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        """A user with rules is paged by them; their preferences still decide other messages."""
        inbox, _ = smtp_server
        pager = await add_method(user_client, "email", "pager@example.com")
        await vouch_method(admin_client, user.id, pager["id"])
        await add_rule(user_client, pager["id"], 0)
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        assert [m["To"] for m in inbox.messages] == ["pager@example.com"]
        # Assignment is not a page: the default email preference (the account's address) hears.
        await admin_client.post(
            f"/v1/incidents/{incident['id']}/assign", json={"user_ids": [user.id]}
        )
        await harness.run_jobs()
        assert [m["To"] for m in inbox.messages] == ["pager@example.com", user.email]

    async def test_a_rule_for_more_severe_incidents_skips_the_others(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        mail = await add_method(user_client, "email", user.email)
        await add_rule(user_client, mail["id"], 0, min_severity="high")
        await page_policy(admin_client, user.id)
        low = await open_incident(admin_client, severity="low", title="disk 80%")
        critical = await open_incident(admin_client, severity="critical", title="db down")
        await harness.run_jobs()
        assert await delivery_log(harness, incident_id=low["id"], event="escalated") == []
        assert [m["Subject"] for m in inbox.messages] == [
            f"[CRITICAL] PAGE #{critical['id']}: db down"
        ]
        [event] = (await admin_client.get(f"/v1/incidents/{low['id']}/escalation-events")).json()[
            "items"
        ]
        assert event["notified_user_ids"] == []

    async def test_an_unverified_number_is_never_paged(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        sms = await add_method(user_client, "sms", NUMBER)
        await add_rule(user_client, sms["id"], 0)
        await page_policy(admin_client, user.id)
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        [row] = await delivery_log(harness, incident_id=incident["id"])
        assert (row.channel, row.status, row.last_error) == ("sms", "failed", NOT_VERIFIED)
        assert row.attempts == 0
        [event] = (
            await admin_client.get(f"/v1/incidents/{incident['id']}/escalation-events")
        ).json()["items"]
        assert event["notified_user_ids"] == []

    async def test_escalating_by_hand_pages_by_the_rules_too(
        self, admin_client, user_client, user, harness, smtp_server
    ):
        inbox, _ = smtp_server
        mail = await add_method(user_client, "email", user.email)
        await add_rule(user_client, mail["id"], 0)
        response = await admin_client.post(
            "/v1/escalation/policies/",
            json={
                "name": "two steps",
                "priority": 1,
                "steps": [
                    {
                        "delay_minutes": 0,
                        "targets": [],
                        "actions": [{"type": "set_severity", "severity": "critical"}],
                    },
                    {
                        "delay_minutes": 30,
                        "targets": [{"type": "user", "id": user.id}],
                        "actions": [{"type": "notify"}],
                    },
                ],
            },
        )
        assert response.status_code == 201, response.text
        incident = await open_incident(admin_client)
        await harness.run_jobs()
        assert inbox.messages == []
        escalated = await admin_client.post(f"/v1/incidents/{incident['id']}/escalate")
        assert escalated.status_code == 200, escalated.text
        await harness.run_jobs()
        [row] = await delivery_log(harness, incident_id=incident["id"], event="escalated")
        assert re.search(r":rule:\d+$", row.key) and row.status == "sent"
        assert [m["To"] for m in inbox.messages] == [user.email]


class TestRaces:
    async def test_the_same_method_asked_twice_at_once_is_one_method_and_a_409(self, user_client):
        body = {"type": "sms", "address": NUMBER}
        answers = await asyncio.gather(
            user_client.post(METHODS, json=body), user_client.post(METHODS, json=body)
        )
        assert sorted(a.status_code for a in answers) == [201, 409]
        assert len((await user_client.get(METHODS)).json()["items"]) == 1


class TestProfilePhone:
    async def test_a_number_an_admin_takes_off_a_profile_loses_its_proof(
        self, admin_client, factory, harness
    ):
        """An old profile number no longer pages its former owner nor speaks for them in a text
        reply: its proof goes with it (unless something of theirs still uses it)."""
        person = await factory.user(phone=NUMBER)
        vouched = await admin_client.post(
            f"/v1/notification-preferences/{person.id}/sms/verified", json={"address": None}
        )
        assert vouched.status_code == 200, vouched.text
        changed = await admin_client.put(f"/v1/users/{person.id}", json={"phone": "+14155550100"})
        assert changed.status_code == 200, changed.text
        async with session_scope(harness.app.state.sessionmaker) as session:
            proven = await session.scalars(
                select(ContactVerification.address).where(
                    ContactVerification.user_id == person.id,
                    ContactVerification.verified_at.is_not(None),
                )
            )
            assert list(proven) == []
