"""Notification preferences: defaults, validation per channel, and who may read or change them."""

from __future__ import annotations

import pytest

from tests.support.settings import make_settings

ME = "/v1/notification-preferences/me"


def by_channel(body):
    return {item["channel"]: item for item in body["items"]}


async def test_a_new_user_gets_email_for_escalations_and_assignments(user_client, user):
    response = await user_client.get(ME)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    prefs = by_channel(body)
    assert list(prefs) == ["email", "sms", "slack", "webhook", "teams"]
    assert prefs["email"] == {
        "channel": "email", "enabled": True, "address": None,
        "effective_address": user.email, "min_severity": "info",
        "events": ["escalated", "assigned"], "is_default": True, "updated_at": None,
        "verified": True,  # the account's own email, as its admin created it
    }  # fmt: skip
    assert [prefs[c]["enabled"] for c in ("sms", "slack", "webhook", "teams")] == [False] * 4


async def test_put_stores_the_whole_preference(user_client, harness):
    response = await user_client.put(
        f"{ME}/sms",
        json={"enabled": True, "address": "+1 (555) 123-4567", "min_severity": "high",
              "events": ["escalated", "escalated", "resolved"]},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    stored = response.json()
    assert (stored["address"], stored["effective_address"]) == ("+15551234567", "+15551234567")
    assert stored["events"] == ["escalated", "resolved"]
    assert (stored["min_severity"], stored["is_default"]) == ("high", False)
    assert stored["updated_at"] is not None
    again = by_channel((await user_client.get(ME)).json())["sms"]
    assert again == stored
    # PUT replaces: what is left out takes its default.
    off = (await user_client.put(f"{ME}/sms", json={"enabled": False})).json()
    assert (off["enabled"], off["address"], off["min_severity"], off["events"]) == (
        False, None, "info", ["escalated", "assigned"],
    )  # fmt: skip


async def test_email_without_an_address_follows_the_account(user_client, user):
    body = (await user_client.put(f"{ME}/email", json={"enabled": True})).json()
    assert (body["address"], body["effective_address"]) == (None, user.email)
    await user_client.put(
        "/v1/users/me",
        json={"email": "moved@example.com", "current_password": "correct horse battery staple"},
    )
    prefs = by_channel((await user_client.get(ME)).json())
    assert prefs["email"]["effective_address"] == "moved@example.com"


@pytest.mark.parametrize(
    ("channel", "body", "message"),
    [
        ("email", {"enabled": True, "address": "not an address"}, "email:"),
        ("sms", {"enabled": True, "address": "555-1234"}, "E.164"),
        ("sms", {"enabled": True}, "phone number on your profile"),
        ("slack", {"enabled": True}, "an https URL is needed"),
        ("webhook", {"enabled": True, "address": "ftp://example.com/x"}, "must use"),
        ("webhook", {"enabled": True, "address": "https://user:pw@example.com/x"}, "credentials"),
    ],
)
async def test_addresses_are_checked_per_channel(user_client, channel, body, message):
    response = await user_client.put(f"{ME}/{channel}", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


async def test_unknown_channel_event_or_severity_is_a_422(user_client):
    assert (await user_client.put(f"{ME}/pager", json={"enabled": True})).status_code == 422
    bad_event = await user_client.put(f"{ME}/email", json={"enabled": True, "events": ["boom"]})
    assert bad_event.status_code == 422
    bad_severity = await user_client.put(
        f"{ME}/email", json={"enabled": True, "min_severity": "urgent"}
    )
    assert bad_severity.status_code == 422


async def test_users_cannot_read_or_change_anothers_but_admins_can(
    user_client, admin_client, user, admin
):
    other = f"/v1/notification-preferences/{admin.id}"
    assert (await user_client.get(other)).status_code == 403
    assert (await user_client.put(f"{other}/email", json={"enabled": False})).status_code == 403
    # Your own id works like /me.
    assert (await user_client.get(f"/v1/notification-preferences/{user.id}")).status_code == 200
    changed = await admin_client.put(
        f"/v1/notification-preferences/{user.id}/slack",
        json={"enabled": True, "address": "https://hooks.slack.example/services/T/B/X"},
    )
    assert changed.status_code == 200
    assert by_channel((await user_client.get(ME)).json())["slack"]["enabled"] is True
    missing = await admin_client.get("/v1/notification-preferences/999999")
    assert missing.status_code == 404


class TestProduction:
    """Where private addresses are refused, a preference cannot point at one."""

    @pytest.fixture
    def settings(self, database_url):
        return make_settings(database_url, outbound_allow_private_networks=False)

    @pytest.mark.parametrize(
        "url",
        [
            "http://hooks.example.com/x",  # plain http
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://localhost/x",
        ],
    )
    async def test_private_or_plain_http_urls_are_refused(self, user_client, url):
        response = await user_client.put(f"{ME}/webhook", json={"enabled": True, "address": url})
        assert response.status_code == 422, url

    async def test_public_https_is_accepted(self, user_client):
        response = await user_client.put(
            f"{ME}/webhook", json={"enabled": True, "address": "https://hooks.example.com/x"}
        )
        assert response.status_code == 200


async def test_simultaneous_first_puts_store_one_row(user_client, harness, user):
    import asyncio

    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.notifications.models import NotificationPreference

    responses = await asyncio.gather(
        *(
            user_client.put(f"{ME}/sms", json={"enabled": True, "address": f"+1555000{i:04d}"})
            for i in range(8)
        )
    )
    assert [r.status_code for r in responses] == [200] * 8
    async with session_scope(harness.app.state.sessionmaker) as session:
        count = await session.scalar(
            select(func.count()).where(NotificationPreference.user_id == user.id)
        )
    assert count == 1


@pytest.mark.parametrize(
    "url", ["https://[::1", "https://[x]/", "https://h.example.com:99999/", "https://h:abc/"]
)
async def test_malformed_urls_are_422_not_500(user_client, url):
    response = await user_client.put(f"{ME}/webhook", json={"enabled": True, "address": url})
    assert response.status_code == 422
    assert "malformed" in response.json()["detail"]


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "::127.0.0.1",
        "fe80::1",
        "10.0.0.1",
    ],
)
def test_addresses_that_carry_a_private_ipv4_are_not_public(address):
    import ipaddress

    from app.core.outbound import is_public

    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses_are_public():
    import ipaddress

    from app.core.outbound import is_public

    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))
