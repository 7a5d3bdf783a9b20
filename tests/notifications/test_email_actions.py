"""One-click Acknowledge and Resolve links in page emails, over a real SMTP server (aiosmtpd on
loopback): the links arrive in both parts, opening one changes nothing, its button acts once
through the incident flows, and every link that cannot act says why with a 4xx page."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from app.core.db import session_scope
from app.core.signed import Signer
from app.incidents.models import Incident, TimelineEntry
from app.notifications import actions
from app.notifications.models import ActionTokenUse
from app.notifications.render import WITHHELD
from tests.support.delivery import delivery_log, page_policy
from tests.support.settings import make_settings

BASE = "https://ims.example.com"
LINK = re.compile(re.escape(BASE) + r"/v1/actions/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@pytest.fixture
def settings(database_url, smtp_server):
    _, port = smtp_server
    return make_settings(
        database_url, smtp_host="127.0.0.1", smtp_port=port, smtp_from="ims@example.com",
        public_base_url=BASE,
    )  # fmt: skip


async def open_incident(client, **fields):
    body = {"title": "Checkout down", "severity": "critical", "service": "checkout-api"} | fields
    response = await client.post("/v1/incidents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def parts(message) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def links_of(message) -> dict[str, str]:
    """The page's links by action, from its plain-text part (the HTML part must agree)."""
    text, html = parts(message)
    acknowledge = re.search(r"Acknowledge \(stops the escalation\):\s+(\S+)", text)
    resolve = re.search(r"Resolve:\s+(\S+)", text)
    assert acknowledge and resolve, text
    found = {"acknowledge": acknowledge.group(1), "resolve": resolve.group(1)}
    for action, url in found.items():
        assert LINK.fullmatch(url), url
        label = action.capitalize()
        assert re.search(rf'<a href="{re.escape(url)}"[^>]*>{label}</a>', html), html
    return found


def path(url: str) -> str:
    return urlsplit(url).path


async def paged(admin_client, harness, inbox, user, **fields):
    """An incident that paged `user` by email: (the incident, its links)."""
    await page_policy(admin_client, user.id)
    incident = await open_incident(admin_client, **fields)
    await harness.run_jobs()
    [mail] = [
        m for m, to in zip(inbox.messages, inbox.recipients, strict=True) if to == [user.email]
    ]
    return incident, links_of(mail)


async def status_of(harness, incident_id):
    """Read from the database (an access token would expire when the clock moves a day)."""
    async with session_scope(harness.app.state.sessionmaker) as session:
        return await session.scalar(select(Incident.status).where(Incident.id == incident_id))


async def entries(harness, incident_id):
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(
            await session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.incident_id == incident_id)
                .order_by(TimelineEntry.id)
            )
        )


async def uses(harness) -> int:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(ActionTokenUse)) or 0)


async def test_a_page_email_carries_both_links_in_both_parts(
    admin_client, user, harness, smtp_server
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    assert links["acknowledge"] != links["resolve"]
    [mail] = inbox.messages
    text, _ = parts(mail)
    assert f"{BASE}/ui/incidents/{incident['id']}" in text and "24 hours" in text
    # What each token says, checked by the service's own reading of it.
    for action, url in links.items():
        link = actions.read(harness.settings, path(url).rsplit("/", 1)[1])
        assert link is not None
        assert (link.incident_id, link.user_id, link.action) == (incident["id"], user.id, action)
        assert link.expires_at - link.issued_at == actions.LIFETIME
        assert link.issued_at == harness.clock.now().replace(microsecond=0)
    # The delivery log keeps the mail's text without the links: they act as its recipient.
    [row] = await delivery_log(harness, incident_id=incident["id"], channel="email")
    assert row.status == "sent" and "/v1/actions/" not in row.body
    assert row.body.count(WITHHELD) == 2


async def test_a_title_is_escaped_in_the_mail_and_on_the_page(
    admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    title = '<img src=x onerror="alert(1)"> & co'
    _, links = await paged(admin_client, harness, inbox, user, title=title)
    _, html = parts(inbox.messages[0])
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt; &amp; co" in html
    page = await client.get(path(links["acknowledge"]))
    assert page.status_code == 200
    assert "<img src=x" not in page.text and "&lt;img src=x" in page.text


async def test_opening_a_link_changes_nothing(admin_client, user, harness, smtp_server, client):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    before = [e.type for e in await entries(harness, incident["id"])]
    for _ in range(2):  # a mail scanner, then a link preview
        for action, url in links.items():
            page = await client.get(path(url))
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert f"#{incident['id']}" in page.text and "Checkout down" in page.text
            assert "critical" in page.text and "triggered" in page.text
            assert f'<form method="post" action="{path(url)}">' in page.text
            assert f"{action.capitalize()} #{incident['id']}</button>" in page.text
            # The form posts to this origin; nothing on the page runs.
            policy = page.headers["content-security-policy"]
            assert "form-action 'self'" in policy and "script-src" not in policy
            assert page.headers["cache-control"] == "no-store"
            assert page.headers["referrer-policy"] == "no-referrer"
    assert await status_of(harness, incident["id"]) == "triggered"
    assert [e.type for e in await entries(harness, incident["id"])] == before
    assert await uses(harness) == 0


async def test_the_button_acknowledges_as_the_user_and_cancels_pending_pages(
    admin_client, user, factory, harness, smtp_server, client
):
    inbox, _ = smtp_server
    other = await factory.user(email="other@example.com", full_name="Otto Other")
    inbox.greylist.add(other.email)  # their page waits for a retry: pending
    await page_policy(admin_client, user.id, other.id)
    incident = await open_incident(admin_client)
    await harness.run_jobs()
    [mail] = inbox.messages
    links = links_of(mail)
    [waiting] = await delivery_log(harness, user_id=other.id)
    assert waiting.status == "pending"

    done = await client.post(path(links["acknowledge"]))
    assert done.status_code == 200, done.text
    assert f"Acknowledged #{incident['id']}: Checkout down" in done.text
    assert f'href="{BASE}/ui/incidents/{incident["id"]}"' in done.text
    shown = (await admin_client.get(f"/v1/incidents/{incident['id']}")).json()
    assert shown["status"] == "acknowledged"
    [entry] = [e for e in await entries(harness, incident["id"]) if e.type == "acknowledged"]
    assert (entry.actor_type, entry.actor_id, entry.actor_name) == ("user", user.id, user.full_name)
    assert entry.data["via"] == "email"
    [waiting] = await delivery_log(harness, user_id=other.id)
    assert waiting.status == "cancelled"
    assert await uses(harness) == 1


async def test_a_link_acts_once(admin_client, user, harness, smtp_server, client):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    assert (await client.post(path(links["acknowledge"]))).status_code == 200
    again = await client.post(path(links["acknowledge"]))
    assert again.status_code == 409
    assert "used already" in again.text and "Nothing was changed" in again.text
    assert (await client.get(path(links["acknowledge"]))).status_code == 409
    # The page's other link is a token of its own: it still works.
    resolved = await client.post(path(links["resolve"]))
    assert resolved.status_code == 200 and f"Resolved #{incident['id']}" in resolved.text
    types = [e.type for e in await entries(harness, incident["id"])]
    assert types.count("acknowledged") == 1 and types.count("resolved") == 1
    again = await client.post(path(links["resolve"]))
    assert again.status_code == 409 and "used already" in again.text
    assert await uses(harness) == 2


def encode(claims: dict) -> str:
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forgeries(token: str, settings) -> list[str]:
    body, signature = token.split(".")
    flip = {"A": "B"}.get(signature[5], "A")
    ours = Signer.of(settings, purpose=actions.PURPOSE)
    claims = ours.verify(token)
    assert claims is not None
    stranger = Signer("another-secret-key-of-someone-else-0123456789", purpose=actions.PURPOSE)
    wrong_purpose = Signer.of(settings, purpose=b"incident-management: something else")
    return [
        f"{body}.{signature[:5]}{flip}{signature[6:]}",  # the signature changed
        token[:-1],  # cut short
        token + "=",  # padded
        f"{wrong_purpose.sign({**claims, 'sub': 1})}",  # signed for another purpose
        stranger.sign({**claims, "act": "resolve"}),  # signed with another key
        encode({**claims, "sub": claims["sub"] + 1}) + "." + signature,  # another user
        encode({**claims, "exp": claims["exp"] + 86400}) + "." + signature,  # a longer life
        "not-a-token",
        "a.b",
        "%C3%A9.%C3%A9",
        "x" * 2000,
    ]


async def test_a_forged_or_changed_link_is_refused(
    admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    token = path(links["acknowledge"]).rsplit("/", 1)[1]
    for forged in forgeries(token, harness.settings):
        assert forged != token
        for method in ("GET", "POST"):
            page = await client.request(method, f"/v1/actions/{forged}")
            assert page.status_code == 404, (method, forged, page.status_code)
            assert page.headers["content-type"].startswith("text/html")
            assert "This link is not valid" in page.text
    assert await status_of(harness, incident["id"]) == "triggered"
    assert await uses(harness) == 0


async def test_a_link_expires_a_day_after_its_page(
    admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    harness.clock.advance(hours=23, minutes=59)
    assert (await client.get(path(links["acknowledge"]))).status_code == 200
    harness.clock.advance(minutes=1)
    for method in ("GET", "POST"):
        page = await client.request(method, path(links["acknowledge"]))
        assert page.status_code == 410
        assert "This link has expired" in page.text and "24 hours" in page.text
    assert await status_of(harness, incident["id"]) == "triggered"
    assert await uses(harness) == 0


async def test_links_die_once_the_incident_is_resolved_elsewhere(
    admin, admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    iid = incident["id"]
    assert (await admin_client.post(f"/v1/incidents/{iid}/resolve")).status_code == 200
    before = [e.id for e in await entries(harness, iid)]
    for url in links.values():
        for method in ("GET", "POST"):
            page = await client.request(method, path(url))
            assert page.status_code == 410
            assert f"Incident #{iid} is resolved" in page.text and admin.full_name in page.text
            assert "Nothing was changed" in page.text
    # Reopened, the incident is live again, but links from before its resolution stay dead.
    assert (await admin_client.post(f"/v1/incidents/{iid}/reopen")).status_code == 200
    page = await client.post(path(links["acknowledge"]))
    assert page.status_code == 410 and f"Incident #{iid} was resolved" in page.text
    assert await status_of(harness, iid) == "triggered"
    assert [e.id for e in await entries(harness, iid)][: len(before)] == before
    assert await uses(harness) == 0


async def test_acknowledging_an_acknowledged_incident_says_by_whom(
    admin, admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    iid = incident["id"]
    assert (await admin_client.post(f"/v1/incidents/{iid}/acknowledge")).status_code == 200
    page = await client.post(path(links["acknowledge"]))
    assert page.status_code == 409
    assert f"Incident #{iid} is acknowledged already" in page.text
    assert f"{admin.full_name} acknowledged it" in page.text
    assert [e.type for e in await entries(harness, iid)].count("acknowledged") == 1
    assert await uses(harness) == 0
    # Resolving still makes sense.
    assert (await client.post(path(links["resolve"]))).status_code == 200
    assert await status_of(harness, iid) == "resolved"


async def test_a_deactivated_users_links_do_not_act(
    admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    incident, links = await paged(admin_client, harness, inbox, user)
    response = await admin_client.put(f"/v1/users/{user.id}", json={"is_active": False})
    assert response.status_code == 200
    for method in ("GET", "POST"):
        page = await client.request(method, path(links["acknowledge"]))
        assert page.status_code == 403 and "deactivated" in page.text
    assert await status_of(harness, incident["id"]) == "triggered"
    assert await uses(harness) == 0


async def test_links_survive_a_change_of_secret_key(
    admin_client, user, harness, smtp_server, client
):
    inbox, _ = smtp_server
    _, links = await paged(admin_client, harness, inbox, user)
    token = path(links["acknowledge"]).rsplit("/", 1)[1]
    rotated = make_settings(
        harness.settings.database_url, secret_key="a-brand-new-secret-key-" + "9" * 40,
        previous_secret_keys=harness.settings.secret_key,
    )  # fmt: skip
    assert actions.read(rotated, token) is not None
    dropped = make_settings(
        harness.settings.database_url, secret_key="a-brand-new-secret-key-" + "9" * 40
    )
    assert actions.read(dropped, token) is None


async def test_the_access_log_never_shows_a_links_token(
    admin_client, user, harness, smtp_server, client, caplog
):
    inbox, _ = smtp_server
    _, links = await paged(admin_client, harness, inbox, user)
    token = path(links["acknowledge"]).rsplit("/", 1)[1]
    with caplog.at_level(logging.INFO, logger="app.access"):
        assert (await client.get(path(links["acknowledge"]))).status_code == 200
    [line] = [r for r in caplog.records if r.name == "app.access"]
    assert line.getMessage().startswith("GET /v1/actions/[redacted] 200")
    assert line.path == "/v1/actions/[redacted]" and line.route == "/v1/actions/{token}"
    assert token not in caplog.text


async def test_a_link_spent_by_a_concurrent_request_is_not_spent_again(factory, harness, user):
    """The unique token id decides when two uses race past the check: the second insert writes
    nothing (and answers False) instead of failing the transaction."""
    incident = await factory.incident()
    token = actions.make(
        harness.settings, incident_id=incident.id, user_id=user.id, action="acknowledge",
        written_at=harness.clock.now(),
    )  # fmt: skip
    link = actions.read(harness.settings, token)
    assert link is not None
    sessions = harness.app.state.sessionmaker
    async with session_scope(sessions) as first, session_scope(sessions) as second:
        assert await actions.spend(first, link, now=harness.clock.now()) is True
        await first.commit()
        assert await actions.spend(second, link, now=harness.clock.now()) is False
        # The transaction is still usable after the refused insert.
        assert await second.scalar(select(func.count()).select_from(ActionTokenUse)) == 1
    assert await uses(harness) == 1
