"""The Slack app's messages about incidents (Block Kit, with Acknowledge / Resolve / Escalate
buttons), the state they show, and the outbox rows that post and update them. Who a Slack member
is here is `app.notifications.slack`.

Three outbox channels are the app's (see `app.notifications.outbox` and `channels`):

- `slack_channel`: a message posted to a Slack channel (`C…`): a service's channel when one of its
  incidents opens, or a policy step's `slack` action;
- `slack_dm`: a person's page, posted to their Slack member id (`U…`), which Slack opens as a
  direct message;
- `slack_update`: a message posted before (`slack_messages`), updated when its incident changes.

Every one of them is rendered from the incident as it is when the row is sent (`current`, read
when the row is claimed), not as it was when the row was written: a retried or late update never
shows an older state than the incident's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import bulk
from app.core.config import Settings
from app.incidents.models import Incident, TimelineEntry
from app.notifications.models import Notification, SlackMessage, notification_row
from app.notifications.render import slack_escape
from app.services.models import Service

# The outbox channels of the Slack app.
CHANNEL, DM, UPDATE = "slack_channel", "slack_dm", "slack_update"
POSTING = (CHANNEL, DM)  # their messages are kept (`slack_messages`) to be updated
APP_CHANNELS = (CHANNEL, DM, UPDATE)
# The event of an update's row: not a page, so never cancelled when the incident is acknowledged.
UPDATE_EVENT = "message_update"

# A channel id (public `C…`, or private `G…`) and a member id (`U…`, or `W…` on Enterprise Grid).
CHANNEL_ID = r"^[CG][A-Z0-9]{8,20}$"
MEMBER_ID = r"^[UW][A-Z0-9]{8,20}$"

# The buttons' action ids; each button's `value` is the incident's id.
ACKNOWLEDGE, RESOLVE, ESCALATE = "incident_acknowledge", "incident_resolve", "incident_escalate"
BUTTONS = {ACKNOWLEDGE: "Acknowledge", RESOLVE: "Resolve", ESCALATE: "Escalate"}

# The changes a message says were made last, and by whom.
SHOWN = ("created", "acknowledged", "unacknowledged", "snoozed", "unsnoozed", "resolved",
         "reopened", "escalated", "assigned")  # fmt: skip
DONE = {
    "created": "Opened", "acknowledged": "Acknowledged", "unacknowledged": "Unacknowledged",
    "snoozed": "Snoozed", "unsnoozed": "Snooze ended", "resolved": "Resolved",
    "reopened": "Reopened", "escalated": "Escalated", "assigned": "Assignees changed",
}  # fmt: skip
STATUS_EMOJI = {"triggered": ":red_circle:", "acknowledged": ":large_yellow_circle:",
                "snoozed": ":zzz:", "resolved": ":white_check_mark:"}  # fmt: skip


def is_channel_id(value: str) -> bool:
    return re.fullmatch(CHANNEL_ID, value) is not None


def client(settings: Settings) -> AsyncWebClient:
    """A Web API client with the bot token, at SLACK_API_URL, with the notification timeouts."""
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=math.ceil(
            settings.notify_connect_timeout_seconds + settings.notify_read_timeout_seconds
        ),
    )


# ---- the message ---------------------------------------------------------------------------------


def message(payload: Mapping[str, Any], *, base_url: str) -> tuple[str, list[dict[str, Any]]]:
    """The text (notifications, screen readers) and the blocks of a message about an incident:
    number, title, severity, status, service, the last change and who made it, and the buttons
    that make sense in its status (none once resolved)."""
    incident = payload["incident"]
    status = incident["status"]
    url = f"{base_url}/ui/incidents/{incident['id']}"
    title = f"#{incident['id']} {incident['title']}"
    service = incident.get("service_name") or "none"
    text = f"{title} ({incident['severity']}, {status}, service {service})"
    blocks: list[dict[str, Any]] = [
        {"type": "section",
         "text": {"type": "mrkdwn", "text": f"{STATUS_EMOJI.get(status, '')} *<{url}|"
                  f"{slack_escape(title)}>*".strip()}},
        {"type": "section",
         "fields": [
             {"type": "mrkdwn", "text": f"*Severity*\n{slack_escape(incident['severity'])}"},
             {"type": "mrkdwn", "text": f"*Status*\n{slack_escape(status)}"},
             {"type": "mrkdwn", "text": f"*Service*\n{slack_escape(service)}"},
             {"type": "mrkdwn", "text": f"*Incident*\n#{incident['id']}"},
         ]},
    ]  # fmt: skip
    last = payload.get("last")
    if last:
        said = done_by(last)
        text += f". {said}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                        "text": slack_escape(said)}]})  # fmt: skip
    buttons = [_button(action, incident["id"]) for action in buttons_for(status)]
    if buttons:
        blocks.append({"type": "actions", "block_id": f"incident:{incident['id']}",
                       "elements": buttons})  # fmt: skip
    return text, blocks


def done_by(last: Mapping[str, Any]) -> str:
    """ "Acknowledged by Ada Admin via Slack", "Escalated (step 2) by system"."""
    kind = last["type"]
    said = DONE.get(kind, kind)
    if kind == "escalated" and last.get("step"):
        said += f" (step {last['step']})"
    said += f" by {last['actor']}"
    if last.get("via"):
        said += f" via {last['via'].capitalize() if last['via'] == 'slack' else last['via']}"
    return said


def buttons_for(status: str) -> list[str]:
    if status == "triggered":
        return [ACKNOWLEDGE, RESOLVE, ESCALATE]
    if status in ("acknowledged", "snoozed"):
        return [RESOLVE]
    return []


def _button(action: str, incident_id: int) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button", "action_id": action, "value": str(incident_id),
        "text": {"type": "plain_text", "text": BUTTONS[action]},
    }  # fmt: skip
    if action == ACKNOWLEDGE:
        button["style"] = "primary"
    elif action == ESCALATE:
        button["style"] = "danger"
    return button


# ---- the state a message shows -------------------------------------------------------------------


SUMMARY = ("id", "title", "status", "severity", "service_id", "labels", "escalation_level")


async def current(session: AsyncSession, incident_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """What the messages about these incidents show now: `{"incident": summary, "last": the
    latest change shown (type, actor, via, step) or None}`, by incident id (two reads)."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    found = await session.execute(
        select(*(getattr(Incident, c) for c in SUMMARY), Service.name.label("service_name"))
        .outerjoin(Service, Service.id == Incident.service_id)
        .where(Incident.id.in_(ids))
    )  # fmt: skip
    state = {
        row.id: {"incident": {**{c: getattr(row, c) for c in SUMMARY},
                              "service_name": row.service_name}, "last": None}
        for row in found
    }  # fmt: skip
    latest = (
        select(func.max(TimelineEntry.id))
        .where(TimelineEntry.incident_id.in_(ids), TimelineEntry.type.in_(SHOWN))
        .group_by(TimelineEntry.incident_id)
    )
    entries = await session.execute(
        select(TimelineEntry.incident_id, TimelineEntry.type, TimelineEntry.actor_name,
               TimelineEntry.data).where(TimelineEntry.id.in_(latest))
    )  # fmt: skip
    for row in entries:
        if row.incident_id in state:
            data = row.data or {}
            state[row.incident_id]["last"] = {
                "type": row.type, "actor": row.actor_name, "via": data.get("via"),
                "step": data.get("step"),
            }  # fmt: skip
    return state


# ---- rows for the outbox -------------------------------------------------------------------------


def post_row(
    *, key: str, incident: Mapping[str, Any], channel: str, event: str, subject: str,
    now: datetime, escalation_event_id: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A message to post to a Slack channel (rendered when it is sent)."""
    return notification_row(
        key=key, incident_id=incident["id"], event=event, channel=CHANNEL, address=channel,
        subject=subject, payload={"event": event, "incident": dict(incident)}, now=now,
        escalation_event_id=escalation_event_id,
    )  # fmt: skip


async def messages_of(
    session: AsyncSession, incident_ids: Iterable[int]
) -> dict[int, list[tuple[int, str, str]]]:
    """The messages kept about these incidents: (id, conversation, ts) by incident id."""
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    found: dict[int, list[tuple[int, str, str]]] = {}
    rows = await session.execute(
        select(SlackMessage.incident_id, SlackMessage.id, SlackMessage.channel, SlackMessage.ts)
        .where(SlackMessage.incident_id.in_(ids))
        .order_by(SlackMessage.id)
    )  # fmt: skip
    for row in rows:
        found.setdefault(row.incident_id, []).append((row.id, row.channel, row.ts))
    return found


def update_rows(
    messages: Iterable[tuple[int, str, str]], *, incident_id: int, cause: str, now: datetime
) -> list[dict[str, Any]]:
    """One `chat.update` per message, for the change `cause` (rendered when it is sent)."""
    return [
        notification_row(
            key=f"{cause}:slack:{message_id}", incident_id=incident_id, event=UPDATE_EVENT,
            channel=UPDATE, address=channel, subject=f"Update of Slack message {ts}",
            payload={"incident": {"id": incident_id}, "ts": ts}, now=now,
        )
        for message_id, channel, ts in messages
    ]  # fmt: skip


async def update_messages(
    session: AsyncSession, *, incident_id: int, cause: str, now: datetime
) -> bool:
    """Write the updates of every message kept about the incident after a change (`cause`: its
    timeline entry). Answers whether there were any."""
    messages = (await messages_of(session, [incident_id])).get(incident_id, [])
    rows = update_rows(messages, incident_id=incident_id, cause=cause, now=now)
    await bulk.insert_rows(session, cast(Table, Notification.__table__), rows)
    return bool(rows)


def posted(provider_message_id: str | None) -> tuple[str, str] | None:
    """(conversation, ts) from a sent post's provider message id (`<conversation>/<ts>`)."""
    channel, sep, ts = (provider_message_id or "").partition("/")
    if not sep or not channel or not ts:
        return None
    return channel, ts


def message_id(channel: str, ts: str) -> str:
    return f"{channel}/{ts}"
