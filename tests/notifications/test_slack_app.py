"""The Slack app against a fake Slack Web API on loopback (tests/support/slack.py): messages with
buttons posted to a service's channel, a policy step's channel and a person's DM, updated on every
change; the buttons and the `/incident` slash command, signed as Slack signs them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from app.core.db import session_scope
from app.notifications.models import Notification, SlackMessage, notification_row
from app.teams.models import TeamMember
from tests.support.delivery import delivery_log
from tests.support.settings import make_settings
from tests.support.slack import (
    SIGNING_SECRET,
    TOKEN,
    FakeSlack,
    block_text,
    buttons,
    signed,
)
from tests.support.waiting import wait_until

ACK, RESOLVE, ESCALATE = "incident_acknowledge", "incident_resolve", "incident_escalate"
CHANNEL = "C0123ABCD"
MEMBER = "U0123ABCD"  # Uma User's Slack account (the `user` fixture)
STRANGER = "U0999ZZZZ"  # a Slack member with no account here
INTERACTIONS = "/v1/inbound/slack/interactions"
COMMANDS = "/v1/inbound/slack/commands"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.member(MEMBER, "user@example.com", "uma")
        fake.member(STRANGER, "stranger@elsewhere.example", "stranger")
        yield fake


@pytest.fixture
def settings(database_url: str, fake_slack: FakeSlack):  # the app of `harness`, with Slack on
    return make_settings(
        database_url, slack_bot_token=TOKEN, slack_signing_secret=SIGNING_SECRET,
        slack_api_url=fake_slack.url,
    )  # fmt: skip


async def kept_messages(harness) -> list[SlackMessage]:
    async with session_scope(harness.app.state.sessionmaker) as session:
        return list(await session.scalars(select(SlackMessage).order_by(SlackMessage.id)))


async def open_on_channel(admin_client, harness, fake_slack: FakeSlack) -> dict[str, Any]:
    """A service posting to CHANNEL, an incident on it, its message posted."""
    service = await admin_client.post(
        "/v1/services/", json={"name": "checkout", "slack_channel": CHANNEL}
    )
    assert service.status_code == 201, service.text
    assert service.json()["slack_channel"] == CHANNEL
    created = await admin_client.post(
        "/v1/incidents/",
        json={"title": "Checkout <down> & out", "severity": "high",
              "service_id": service.json()["id"]},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    await harness.run_jobs()
    return created.json()


def press(action: str, incident_id: int, *, user: str = MEMBER, channel: str = CHANNEL) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "uma", "team_id": "T0123ABCD"},
        "team": {"id": "T0123ABCD"},
        "channel": {"id": channel, "name": "incidents"},
        "container": {"type": "message", "channel_id": channel, "message_ts": "1.000001"},
        "response_url": "https://hooks.slack.invalid/actions/T0123ABCD/1/x",
        "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action, "block_id": f"incident:{incident_id}",
                     "value": str(incident_id), "action_ts": "1765130000.1"}],
    }  # fmt: skip
    return urlencode({"payload": json.dumps(payload)}).encode()


def command(text: str, *, user: str = MEMBER) -> bytes:
    return urlencode({
        "token": "deprecated", "team_id": "T0123ABCD", "channel_id": CHANNEL,
        "user_id": user, "command": "/incident", "text": text,
        "response_url": "https://hooks.slack.invalid/commands/1/2/x", "trigger_id": "1.2.3",
    }).encode()  # fmt: skip


async def send(client, path: str, body: bytes, harness, **kwargs: Any):
    now = int(harness.clock.now().timestamp())
    return await client.post(path, content=body, headers=signed(body, timestamp=now, **kwargs))


async def status_of(client, incident_id: int) -> str:
    return (await client.get(f"/v1/incidents/{incident_id}")).json()["status"]


# ---- posting -------------------------------------------------------------------------------------


async def test_a_new_incident_is_posted_to_its_services_channel_with_buttons(
    harness, admin_client, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    [post] = fake_slack.of("chat.postMessage")
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.args["channel"] == CHANNEL
    blocks = post.args["blocks"]
    assert buttons(blocks) == [ACK, RESOLVE, ESCALATE]
    values = {e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]}
    assert values == {str(incident["id"])}
    text = block_text(blocks)
    assert f"#{incident['id']}" in text and "high" in text and "checkout" in text
    assert "triggered" in text
    assert "Checkout &lt;down&gt; &amp; out" in text  # mrkdwn's control characters escaped
    [kept] = await kept_messages(harness)
    assert (kept.incident_id, kept.channel) == (incident["id"], CHANNEL)
    assert kept.ts == fake_slack.messages[(CHANNEL, kept.ts)]["ts"]
    [row] = await delivery_log(harness, channel="slack_channel")
    assert row.status == "sent" and row.provider_message_id == f"{CHANNEL}/{kept.ts}"


async def test_a_service_channel_must_be_a_channel_id(admin_client):
    for bad in ("#incidents", "c0123abcd", "U0123ABCD", "C01", "C0123 ABCD"):
        body = {"name": "x", "slack_channel": bad}
        response = await admin_client.post("/v1/services/", json=body)
        assert response.status_code == 422, bad
    made = await admin_client.post("/v1/services/", json={"name": "y", "slack_channel": CHANNEL})
    cleared = await admin_client.put(
        f"/v1/services/{made.json()['id']}", json={"slack_channel": None}
    )
    assert cleared.status_code == 200 and cleared.json()["slack_channel"] is None


async def test_a_policy_steps_slack_action_posts_to_its_channel(
    harness, admin_client, user, fake_slack
):
    bad = await admin_client.post(
        "/v1/escalation/policies/",
        json={"name": "bad", "steps": [{"actions": [{"type": "slack", "channel": "general"}]}]},
    )
    assert bad.status_code == 422
    policy = await admin_client.post(
        "/v1/escalation/policies/",
        json={"name": "to slack", "steps": [
            {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}],
             "actions": [{"type": "notify"}, {"type": "slack", "channel": "C0STEP0001"}]},
        ]},
    )  # fmt: skip
    assert policy.status_code == 201, policy.text
    assert policy.json()["steps"][0]["actions"][1] == {"type": "slack", "channel": "C0STEP0001"}
    incident = (await admin_client.post("/v1/incidents/", json={"title": "disk"})).json()
    await harness.run_jobs()  # fires the step
    await harness.run_jobs()  # delivers its pages
    [post] = fake_slack.of("chat.postMessage")
    assert post.args["channel"] == "C0STEP0001"
    assert buttons(post.args["blocks"]) == [ACK, RESOLVE, ESCALATE]
    [row] = await delivery_log(harness, channel="slack_channel")
    assert (row.event, row.incident_id, row.status) == ("escalated", incident["id"], "sent")
    assert row.escalation_event_id is not None


async def test_a_personal_dm_page_is_delivered_and_kept(harness, admin_client, user, fake_slack):
    """A `slack_dm` row (written by personal notification rules) is posted to the member id;
    Slack's answer names the DM's conversation, which later updates go to."""
    incident = (await admin_client.post("/v1/incidents/", json={"title": "db slow"})).json()
    summary = {"id": incident["id"], "title": "db slow", "status": "triggered",
               "severity": "medium", "service_id": None, "service_name": None, "labels": {},
               "escalation_level": 0}  # fmt: skip
    row = notification_row(
        key=f"test:dm:{incident['id']}", incident_id=incident["id"], event="escalated",
        channel="slack_dm", address=MEMBER, subject="page",
        payload={"event": "escalated", "incident": summary, "actor": None,
                 "recipient": user.full_name},
        now=harness.clock.now(), user_id=user.id,
    )  # fmt: skip
    async with session_scope(harness.app.state.sessionmaker) as session:
        session.add(Notification(**row))
    await harness.run_jobs()
    [post] = fake_slack.of("chat.postMessage")
    assert post.args["channel"] == MEMBER
    assert buttons(post.args["blocks"]) == [ACK, RESOLVE, ESCALATE]
    [kept] = await kept_messages(harness)
    assert kept.channel == "D" + MEMBER[1:]
    [sent] = await delivery_log(harness, channel="slack_dm")
    assert sent.status == "sent"
    # Acknowledged in the API: the DM is updated, in its conversation.
    acked = await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
    assert acked.status_code == 200
    await harness.run_jobs()
    [update] = fake_slack.of("chat.update")
    assert (update.args["channel"], update.args["ts"]) == (kept.channel, kept.ts)
    assert "Acknowledged by Ada Admin" in update.args["text"]
    assert buttons(update.args["blocks"]) == [RESOLVE]


# ---- the buttons ---------------------------------------------------------------------------------


async def test_acknowledge_button_acts_as_the_user_via_slack_and_updates_the_message(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    async with harness.make_client() as slack_client:
        response = await send(slack_client, INTERACTIONS, press(ACK, incident["id"]), harness)
    assert response.status_code == 200 and response.content == b""
    assert await status_of(admin_client, incident["id"]) == "acknowledged"
    timeline = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
    [entry] = [e for e in timeline["items"] if e["type"] == "acknowledged"]
    assert entry["actor"] == {"type": "user", "id": user.id, "name": user.full_name}
    assert entry["data"]["via"] == "slack"
    assert [c.args["user"] for c in fake_slack.of("users.info")] == [MEMBER]
    assert fake_slack.of("chat.postEphemeral") == []
    await harness.run_jobs()
    [kept] = await kept_messages(harness)
    [update] = fake_slack.of("chat.update")
    assert (update.args["channel"], update.args["ts"]) == (CHANNEL, kept.ts)
    assert "Acknowledged by Uma User via Slack" in update.args["text"]
    assert buttons(update.args["blocks"]) == [RESOLVE]
    assert "acknowledged" in block_text(update.args["blocks"])
    # The update is in the delivery log, not on the timeline.
    [logged] = await delivery_log(harness, channel="slack_update")
    assert logged.status == "sent"
    types = [
        e["type"]
        for e in (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()[
            "items"
        ]
    ]
    assert types.count("notified") == 1  # the post's, not the update's


async def test_a_button_asks_the_policy_like_the_api(
    harness, admin_client, user, fake_slack, factory
):
    """A team's incident: the member pressing the button needs the team's responder role."""
    incident = await open_on_channel(admin_client, harness, fake_slack)
    team = await factory.team()
    await factory.member(team_id=team.id, user_id=user.id, role="observer")
    moved = await admin_client.put(
        f"/v1/services/{incident['service_id']}", json={"team_id": team.id}
    )
    assert moved.status_code == 200
    async with harness.make_client() as slack_client:
        response = await send(slack_client, INTERACTIONS, press(ACK, incident["id"]), harness)
    assert response.status_code == 200
    [told] = fake_slack.of("chat.postEphemeral")
    assert "responder role" in told.args["text"] and "Nothing was changed" in told.args["text"]
    assert await status_of(admin_client, incident["id"]) == "triggered"
    async with session_scope(harness.app.state.sessionmaker) as session:
        member = await session.scalar(select(TeamMember).where(TeamMember.user_id == user.id))
        member.role = "responder"
    async with harness.make_client() as slack_client:
        await send(slack_client, INTERACTIONS, press(ACK, incident["id"]), harness)
    assert await status_of(admin_client, incident["id"]) == "acknowledged"


async def test_resolve_button_leaves_a_message_without_buttons(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    async with harness.make_client() as slack_client:
        response = await send(slack_client, INTERACTIONS, press(RESOLVE, incident["id"]), harness)
    assert response.status_code == 200
    assert await status_of(admin_client, incident["id"]) == "resolved"
    await harness.run_jobs()
    [update] = fake_slack.of("chat.update")
    assert "Resolved by Uma User via Slack" in update.args["text"]
    assert buttons(update.args["blocks"]) == []
    # Pressed again (an old copy of the message): explained, nothing changes.
    async with harness.make_client() as slack_client:
        again = await send(slack_client, INTERACTIONS, press(RESOLVE, incident["id"]), harness)
    assert again.status_code == 200
    [ephemeral] = fake_slack.of("chat.postEphemeral")
    assert ephemeral.args["user"] == MEMBER and ephemeral.args["channel"] == CHANNEL
    assert "already resolved" in ephemeral.args["text"]
    await harness.run_jobs()
    assert len(fake_slack.of("chat.update")) == 1


async def test_escalate_button_fires_the_next_step(harness, admin_client, user, admin, fake_slack):
    policy = await admin_client.post(
        "/v1/escalation/policies/",
        json={"name": "two steps", "steps": [
            {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}]},
            {"delay_minutes": 30, "targets": [{"type": "user", "id": admin.id}]},
        ]},
    )  # fmt: skip
    assert policy.status_code == 201, policy.text
    incident = await open_on_channel(admin_client, harness, fake_slack)
    await harness.run_jobs()  # step 1 fires
    async with harness.make_client() as slack_client:
        response = await send(slack_client, INTERACTIONS, press(ESCALATE, incident["id"]), harness)
    assert response.status_code == 200
    events = (await admin_client.get(f"/v1/incidents/{incident['id']}/escalation-events")).json()
    assert [(e["step"], e["status"]) for e in events["items"]][:2] == [
        (1, "executed"),
        (2, "executed"),
    ]
    timeline = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
    escalated = [e for e in timeline["items"] if e["type"] == "escalated"]
    assert escalated[-1]["actor"]["id"] == user.id and escalated[-1]["data"]["via"] == "slack"
    await harness.run_jobs()
    update = fake_slack.of("chat.update")[-1]
    assert "Escalated (step 2) by Uma User via Slack" in update.args["text"]
    # No step left: explained, nothing changes.
    async with harness.make_client() as slack_client:
        await send(slack_client, INTERACTIONS, press(ESCALATE, incident["id"]), harness)
    [ephemeral] = fake_slack.of("chat.postEphemeral")
    assert "no step left" in ephemeral.args["text"]
    assert await status_of(admin_client, incident["id"]) == "triggered"


async def test_a_forged_signature_is_refused_and_changes_nothing(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    body = press(ACK, incident["id"])
    now = int(harness.clock.now().timestamp())
    async with harness.make_client() as slack_client:
        forged = await slack_client.post(
            INTERACTIONS, content=body, headers=signed(body, timestamp=now, secret="not-ours")
        )
        unsigned = await slack_client.post(
            INTERACTIONS, content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        headers = signed(body, timestamp=now)
        tampered = await slack_client.post(
            INTERACTIONS, content=press(RESOLVE, incident["id"]), headers=headers
        )
        garbage = await slack_client.post(
            INTERACTIONS, content=body, headers={**headers, "X-Slack-Request-Timestamp": "soon"}
        )
    for response in (forged, unsigned, tampered, garbage):
        assert response.status_code == 401, response.text
        assert response.json()["detail"]
    assert await status_of(admin_client, incident["id"]) == "triggered"
    assert fake_slack.of("users.info") == []


async def test_bad_payloads_get_a_clear_answer_and_change_nothing(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    async with harness.make_client() as slack_client:
        for body, status in [
            (b"", 400),
            (b"payload=not-json", 400),
            (urlencode({"other": "x"}).encode(), 400),
            (urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(), 200),
            (urlencode({"payload": json.dumps({"type": "block_actions", "user": "U1",
                                               "actions": ["x"]})}).encode(), 200),
            (urlencode({"payload": json.dumps([1, 2])}).encode(), 200),
            (press(ACK, incident["id"]).replace(b"incident_acknowledge", b"incident_delete"),
             200),
        ]:  # fmt: skip
            response = await send(slack_client, INTERACTIONS, body, harness)
            assert response.status_code == status, (body, response.text)
            if status == 400:
                assert response.json()["detail"]
        wrong_number = await send(
            slack_client, INTERACTIONS,
            press(ACK, incident["id"]).replace(f"%22{incident['id']}%22".encode(), b"%22x1%22"),
            harness,
        )  # fmt: skip
        assert wrong_number.status_code == 200
    [ephemeral] = fake_slack.of("chat.postEphemeral")
    assert "`x1` is not an incident number" in ephemeral.args["text"]
    assert await status_of(admin_client, incident["id"]) == "triggered"
    assert fake_slack.of("users.info") == []


async def test_a_request_replayed_after_five_minutes_is_refused(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    body = press(ACK, incident["id"])
    headers = signed(body, timestamp=int(harness.clock.now().timestamp()))
    harness.clock.advance(timedelta(minutes=5, seconds=1))
    async with harness.make_client() as slack_client:
        replayed = await slack_client.post(INTERACTIONS, content=body, headers=headers)
        assert replayed.status_code == 401
        assert await status_of(admin_client, incident["id"]) == "triggered"
        harness.clock.advance(timedelta(seconds=-2))  # within the window again: accepted
        accepted = await slack_client.post(INTERACTIONS, content=body, headers=headers)
    assert accepted.status_code == 200
    assert await status_of(admin_client, incident["id"]) == "acknowledged"


async def test_a_slack_user_unknown_here_is_told_and_nothing_changes(
    harness, admin_client, user, fake_slack
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    fake_slack.member("U0NOEMAIL1", None)  # no email to match
    async with harness.make_client() as slack_client:
        for member in (STRANGER, "U0NOEMAIL1", "U0NOTINSLACK"):
            response = await send(
                slack_client, INTERACTIONS, press(ACK, incident["id"], user=member), harness
            )
            assert response.status_code == 200
    assert [c.args["user"] for c in fake_slack.of("chat.postEphemeral")] == [
        STRANGER,
        "U0NOEMAIL1",
        "U0NOTINSLACK",
    ]
    assert all("no account here" in c.args["text"] for c in fake_slack.of("chat.postEphemeral"))
    assert await status_of(admin_client, incident["id"]) == "triggered"
    await harness.run_jobs()
    assert fake_slack.of("chat.update") == []


async def test_an_unverified_or_inactive_account_is_not_matched(
    harness, admin_client, user, fake_slack, factory
):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    gone = await factory.user(email="gone@example.com", is_active=False)
    fake_slack.member("U0GONE0001", gone.email)
    async with harness.make_client() as slack_client:
        await send(slack_client, INTERACTIONS, press(ACK, incident["id"], user="U0GONE0001"),
                   harness)  # fmt: skip
    assert "no account here" in fake_slack.of("chat.postEphemeral")[0].args["text"]
    assert await status_of(admin_client, incident["id"]) == "triggered"


# ---- changes made elsewhere ----------------------------------------------------------------------


async def test_changes_in_the_api_update_the_message(harness, admin_client, user, fake_slack):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    iid = incident["id"]
    assert (await admin_client.post(f"/v1/incidents/{iid}/acknowledge")).status_code == 200
    await harness.run_jobs()
    assert "Acknowledged by Ada Admin" in fake_slack.of("chat.update")[-1].args["text"]
    assigned = await admin_client.post(f"/v1/incidents/{iid}/assign", json={"user_ids": [user.id]})
    assert assigned.status_code == 200
    await harness.run_jobs()
    assert "Assignees changed by Ada Admin" in fake_slack.of("chat.update")[-1].args["text"]
    assert (await admin_client.post(f"/v1/incidents/{iid}/resolve")).status_code == 200
    await harness.run_jobs()
    last = fake_slack.of("chat.update")[-1]
    assert "Resolved by Ada Admin" in last.args["text"] and buttons(last.args["blocks"]) == []
    assert (await admin_client.post(f"/v1/incidents/{iid}/reopen")).status_code == 200
    await harness.run_jobs()
    last = fake_slack.of("chat.update")[-1]
    assert "Reopened by Ada Admin" in last.args["text"]
    assert buttons(last.args["blocks"]) == [ACK, RESOLVE, ESCALATE]
    [kept] = await kept_messages(harness)
    assert fake_slack.messages[(CHANNEL, kept.ts)]["text"] == last.args["text"]


async def test_a_retried_update_shows_the_newest_state(harness, admin_client, user, fake_slack):
    """An update that failed and is retried after a later change shows the later change: each
    is rendered from the incident as it is when sent."""
    incident = await open_on_channel(admin_client, harness, fake_slack)
    iid = incident["id"]
    await admin_client.post(f"/v1/incidents/{iid}/acknowledge")
    fake_slack.script.append((429, "ratelimited", "1"))
    await harness.run_jobs()  # the acknowledgement's update: rate limited, to be retried
    [waiting] = await delivery_log(harness, channel="slack_update")
    assert waiting.status == "pending" and "ratelimited" in (waiting.last_error or "")
    await admin_client.post(f"/v1/incidents/{iid}/resolve")
    await harness.run_jobs()  # the resolution's update
    harness.clock.advance(timedelta(hours=2))
    await harness.run_jobs()  # the acknowledgement's, retried
    updates = [c for c in fake_slack.of("chat.update") if c.args.get("ts")]
    assert len(updates) == 3  # the refused one, then both
    assert all("Resolved by Ada Admin" in c.args["text"] for c in updates[1:])
    [kept] = await kept_messages(harness)
    assert buttons(fake_slack.messages[(CHANNEL, kept.ts)]["blocks"]) == []
    assert {r.status for r in await delivery_log(harness, channel="slack_update")} == {"sent"}


async def test_a_message_whose_incident_changed_while_it_was_posted_is_updated(
    harness, admin_client, fake_slack
):
    """No update can name a message before Slack answered its post: one that shows an older
    state than the incident's once kept is updated at once."""
    service = await admin_client.post("/v1/services/", json={"name": "s", "slack_channel": CHANNEL})
    incident = (await admin_client.post(
        "/v1/incidents/", json={"title": "t", "service_id": service.json()["id"]}
    )).json()  # fmt: skip
    fake_slack.delay = 0.5
    posting = asyncio.create_task(harness.run_jobs())

    async def posted() -> list[Any] | None:
        return fake_slack.of("chat.postMessage") or None

    await wait_until("the post to reach Slack", posted, seconds=10, every=0.02)
    acked = await admin_client.post(f"/v1/incidents/{incident['id']}/acknowledge")
    assert acked.status_code == 200
    await posting
    [post] = fake_slack.of("chat.postMessage")
    assert "triggered" in post.args["text"]  # as it was when claimed
    assert fake_slack.of("chat.update") == []
    fake_slack.delay = 0
    await harness.run_jobs()
    [update] = fake_slack.of("chat.update")
    assert update.args["ts"] == post_ts(fake_slack) and "Acknowledged by" in update.args["text"]


def post_ts(fake_slack: FakeSlack) -> str:
    [(_, ts)] = list(fake_slack.messages)
    return ts


async def test_a_refused_post_fails_for_good(harness, admin_client, fake_slack):
    service = await admin_client.post(
        "/v1/services/", json={"name": "s", "slack_channel": "C0GONE0000"}
    )
    fake_slack.script.append((200, "channel_not_found", None))
    await admin_client.post(
        "/v1/incidents/", json={"title": "t", "service_id": service.json()["id"]}
    )
    await harness.run_jobs()
    [row] = await delivery_log(harness, channel="slack_channel")
    assert row.status == "failed" and "channel_not_found" in (row.last_error or "")
    assert await kept_messages(harness) == []


# ---- the slash command ---------------------------------------------------------------------------


async def test_slash_commands(harness, admin_client, user, admin, fake_slack, factory):
    incident = await open_on_channel(admin_client, harness, fake_slack)
    iid = incident["id"]
    await factory.schedule(name="Primary", user_ids=[user.id])
    await factory.schedule(name="Nobody", user_ids=[])

    async def say(text: str, member: str = MEMBER) -> str:
        async with harness.make_client() as slack_client:
            response = await send(slack_client, COMMANDS, command(text, user=member), harness)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["response_type"] == "ephemeral"
        return str(answer["text"])

    assert "/incident ack 123" in await say("help")
    assert "/incident ack 123" in await say("")
    assert "Unknown command `frobnicate`" in await say("frobnicate 12")
    assert "is not an incident number" in await say("ack twelve")
    assert "is not an incident number" in await say("resolve")
    assert "no incident #999" in await say("ack 999")
    assert "no account here" in await say(f"ack {iid}", member=STRANGER)
    assert await status_of(admin_client, iid) == "triggered"
    assert f"Incident #{iid} acknowledged" in await say(f"ack {iid}")
    assert await status_of(admin_client, iid) == "acknowledged"
    assert "cannot be acknowledged" in await say(f"ack {iid}")
    everyone = await say("oncall")
    assert "Primary: Uma User" in everyone and "Nobody: nobody" in everyone
    one = await say("oncall primary")
    assert "Primary: Uma User" in one and "Nobody" not in one
    assert "no schedule named `Elsewhere`" in await say("oncall Elsewhere")
    assert f"Incident #{iid} resolved" in await say(f"resolve #{iid}")
    assert "already resolved" in await say(f"resolve {iid}")
    timeline = (await admin_client.get(f"/v1/incidents/{iid}/timeline")).json()["items"]
    done = [e for e in timeline if e["type"] in ("acknowledged", "resolved")]
    assert [(e["actor"]["id"], e["data"]["via"]) for e in done] == [(user.id, "slack")] * 2
    # Signed as Slack signs it, or refused.
    async with harness.make_client() as slack_client:
        body = command("help")
        forged = await slack_client.post(
            COMMANDS, content=body,
            headers=signed(body, timestamp=int(harness.clock.now().timestamp()), secret="x"),
        )  # fmt: skip
    assert forged.status_code == 401


async def test_the_inbound_routes_are_off_without_slack(harness_without_slack):
    async with harness_without_slack.make_client() as client:
        for path in (INTERACTIONS, COMMANDS):
            body = command("help")
            response = await client.post(
                path, content=body, headers=signed(body, timestamp=1_765_130_000)
            )
            assert response.status_code == 404
            assert "not configured" in response.json()["detail"]


@pytest.fixture
async def harness_without_slack(harness):
    harness.app.state.settings = make_settings(harness.settings.database_url)
    yield harness
    harness.app.state.settings = harness.settings


async def test_the_inbound_routes_are_not_in_the_openapi_document(harness):
    paths = harness.app.openapi()["paths"]
    assert not [path for path in paths if "inbound/slack" in path]


# ---- personal notification rules -----------------------------------------------------------------


async def test_a_rule_on_a_slack_method_pages_by_dm_and_its_button_acknowledges(
    harness, admin_client, user_client, user, fake_slack
):
    """The whole way: a rule "Slack at once, email after 5 minutes"; the step's DM carries the
    buttons; Acknowledge there (the member's Slack email is the account's) stops the email."""
    slack = await user_client.post(
        "/v1/users/me/contact-methods", json={"type": "slack", "address": MEMBER}
    )
    mail = await user_client.post(
        "/v1/users/me/contact-methods", json={"type": "email", "address": user.email}
    )
    for method, delay in ((slack, 0), (mail, 5)):
        assert method.status_code == 201, method.text
        rule = await user_client.post(
            "/v1/users/me/notification-rules",
            json={"contact_method_id": method.json()["id"], "delay_minutes": delay},
        )
        assert rule.status_code == 201, rule.text
    policy = await admin_client.post(
        "/v1/escalation/policies/",
        json={"name": "page uma", "steps": [{"targets": [{"type": "user", "id": user.id}]}]},
    )
    assert policy.status_code == 201, policy.text
    created = await admin_client.post("/v1/incidents/", json={"title": "Queue stuck"})
    incident = created.json()
    await harness.run_jobs()
    [dm] = fake_slack.of("chat.postMessage")
    assert dm.args["channel"] == MEMBER
    assert buttons(dm.args["blocks"]) == [ACK, RESOLVE, ESCALATE]
    async with harness.make_client() as slack_client:
        pressed = await send(
            slack_client, INTERACTIONS, press(ACK, incident["id"], channel="D0DM"), harness
        )
    assert pressed.status_code == 200
    timeline = (await admin_client.get(f"/v1/incidents/{incident['id']}/timeline")).json()
    [entry] = [e for e in timeline["items"] if e["type"] == "acknowledged"]
    assert (entry["actor"]["id"], entry["data"]["via"]) == (user.id, "slack")
    harness.clock.advance(timedelta(minutes=6))
    await harness.run_jobs()
    pages = await delivery_log(harness, incident_id=incident["id"], event="escalated")
    assert [(p.channel, p.status) for p in pages] == [("slack_dm", "sent"), ("email", "cancelled")]


async def test_a_slack_contact_method_does_not_make_its_member_act_as_its_owner(
    harness, admin_client, user, fake_slack, factory
):
    """Anyone may name any member id for their DMs: pressing a button as that member acts as
    nobody here unless the member's Slack email is a verified account's."""
    incident = await open_on_channel(admin_client, harness, fake_slack)
    await factory.contact_method(user_id=user.id, type="slack", address=STRANGER)
    async with harness.make_client() as slack_client:
        await send(slack_client, INTERACTIONS, press(ACK, incident["id"], user=STRANGER), harness)
        answer = await send(
            slack_client, COMMANDS, command(f"resolve {incident['id']}", user=STRANGER), harness
        )
    assert "no account here" in fake_slack.of("chat.postEphemeral")[0].args["text"]
    assert "no account here" in answer.json()["text"]
    assert await status_of(admin_client, incident["id"]) == "triggered"
