"""Slack calls these: the buttons of the Slack app's messages, and the `/incident` slash command.

Slack, not API clients, calls them, so they are left out of the OpenAPI document. Every request is
checked against SLACK_SIGNING_SECRET (Slack's v0 signature of the raw body, its timestamp within
5 minutes of our clock) before anything else: a bad or stale one is 401 and changes nothing. The
Slack member is mapped to a user here (`app.notifications.slack.user_for`), who then acts through
the same flows as the API and the console, recorded `via` Slack. See docs/slack.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from fastapi import APIRouter, BackgroundTasks, Request, Response
from fastapi.responses import JSONResponse
from slack_sdk.errors import SlackClientError
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import policy as authz
from app.auth.policy import Action, Principal
from app.core.actors import Actor
from app.core.clock import Clock
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import DomainError, NotFound
from app.flows import incidents as incident_flow
from app.flows import paging
from app.incidents import service as incident_service
from app.incidents.models import Incident, Status
from app.notifications import slack, slack_messages
from app.notifications.render import slack_escape
from app.schedules import service as schedule_service
from app.users import queries as user_queries
from app.users.models import User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/inbound/slack", include_in_schema=False)

MAX_BODY = 64 * 1024  # Slack's interaction payloads are a few kilobytes


class BadSignature(DomainError):
    status_code = 401


class _Clock(SlackClock):
    """The injected clock, as slack_sdk's verifier reads time (seconds since the epoch)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now().timestamp()


async def _signed_body(request: Request, settings: Settings, clock: Clock) -> bytes:
    """The raw body, once its signature is checked (401 otherwise; 404 when the app is off)."""
    if not settings.slack_enabled:
        raise NotFound("The Slack app is not configured (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise DomainError("The request body is too large")
    verifier = SignatureVerifier(str(settings.slack_signing_secret), clock=_Clock(clock))
    timestamp = request.headers.get("X-Slack-Request-Timestamp")
    signature = request.headers.get("X-Slack-Signature")
    if timestamp is None or not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise BadSignature("Missing or malformed X-Slack-Request-Timestamp")
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise BadSignature("Invalid or expired Slack signature")
    return body


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DomainError("The body is not a form") from exc
    return {name: values[0] for name, values in fields.items() if values}


async def _user(session: AsyncSession, client: AsyncWebClient, slack_user_id: str) -> User | None:
    """The user the Slack member is here; None also when Slack cannot be asked."""
    if not re.fullmatch(slack_messages.MEMBER_ID, slack_user_id):
        return None
    try:
        return await slack.user_for(session, slack_user_id, client)
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Slack users.info for %s failed: %s", slack_user_id, exc)
        return None


NO_ACCOUNT = (
    "You have no account here that I can match: I look for an active account whose email is "
    "your Slack email, verified. Nothing was changed."
)


async def _ephemeral(settings: Settings, *, channel: str, user: str, text: str) -> None:
    """Tell one person only (chat.postEphemeral); a failure is logged, never raised."""
    try:
        client = slack_messages.client(settings)
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Slack chat.postEphemeral to %s failed: %s", user, exc)


# ---- the buttons ---------------------------------------------------------------------------------


@router.post("/interactions")
async def interactions(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: ClockDep,
    background: BackgroundTasks,
) -> Response:
    """A button of one of the app's messages: Acknowledge, Resolve or Escalate, as the person who
    pressed it. Answers 200 with an empty body once acted; what cannot be done is explained to
    that person alone (an ephemeral message), and nothing changes."""
    body = await _signed_body(request, settings, clock)
    try:
        payload = json.loads(_form(body)["payload"])
    except (KeyError, ValueError) as exc:
        raise DomainError("The form field `payload` must hold Slack's JSON") from exc
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return Response(status_code=200)  # nothing else is asked of the app
    actions = payload.get("actions")
    action = _mapping(actions[0] if isinstance(actions, list) and actions else None)
    slack_user = str(_mapping(payload.get("user")).get("id") or "")
    channel = str(_mapping(payload.get("channel")).get("id") or "")
    if action.get("action_id") not in slack_messages.BUTTONS:
        return Response(status_code=200)

    def tell(text: str) -> Response:
        if channel and slack_user:
            background.add_task(_ephemeral, settings, channel=channel, user=slack_user, text=text)
        return Response(status_code=200)

    value = str(action.get("value") or "")
    if not re.fullmatch(r"[1-9][0-9]{0,17}", value):
        return tell(f"`{value[:40]}` is not an incident number. Nothing was changed.")
    user = await _user(session, slack_messages.client(settings), slack_user)
    if user is None:
        return tell(NO_ACCOUNT)
    answer = await _act(
        session, incident_id=int(value),
        what=slack_messages.BUTTONS[str(action["action_id"])].lower(),
        user=user, clock=clock,
    )  # fmt: skip
    return Response(status_code=200) if answer is None else tell(answer)


def _mapping(value: object) -> Mapping[str, Any]:
    """A JSON object of Slack's payload, or an empty one when it is anything else."""
    return value if isinstance(value, dict) else {}


async def _act(
    session: AsyncSession, *, incident_id: int, what: str, user: User, clock: Clock
) -> str | None:
    """Acknowledge, resolve or escalate the incident as `user` via Slack: None once done, else
    why it cannot be done (nothing changed)."""
    incident = await incident_service.get(session, incident_id, lock=True)
    if incident is None:
        return f"There is no incident #{incident_id}. Nothing was changed."
    scope = await authz.scope_of_service(session, Principal.of(user), incident.service_id)
    if not authz.allowed(Principal.of(user), Action.respond, scope):
        return (
            f"You may not {what} incident #{incident.id}: its team's responder role is needed. "
            "Nothing was changed."
        )
    refusal = _refusal(incident, what)
    if refusal is not None:
        return refusal
    actor = Actor.of(user, via="slack")
    now = clock.now()
    try:
        if what == "acknowledge":
            await incident_flow.acknowledge(session, incident=incident, actor=actor, now=now)
        elif what == "resolve":
            await incident_flow.resolve(session, incident=incident, actor=actor, now=now)
        else:
            await paging.escalate_now(session, incident=incident, actor=actor, now=now)
    except DomainError as exc:
        await session.rollback()
        return f"Cannot {what} incident #{incident_id}: {exc}. Nothing was changed."
    return None


def _refusal(incident: Incident, what: str) -> str | None:
    """Why `what` cannot be done to the incident as it is, if it cannot."""
    status = incident.status
    if status == Status.resolved.value:
        return f"Incident #{incident.id} is already resolved. Nothing was changed."
    if what == "acknowledge" and status != Status.triggered.value:
        return f"Incident #{incident.id} is {status}: it cannot be acknowledged."
    if what == "escalate" and status != Status.triggered.value:
        return f"Incident #{incident.id} is {status}: only a triggered incident escalates."
    return None


# ---- the slash command ---------------------------------------------------------------------------

HELP = (
    "*/incident* commands:\n"
    "• `/incident ack 123`: acknowledge incident #123\n"
    "• `/incident resolve 123`: resolve incident #123\n"
    "• `/incident oncall`: who is on call now, in every schedule\n"
    "• `/incident oncall <schedule name>`: who is on call now in one schedule\n"
    "• `/incident help`: this list"
)
VERBS = {"ack": "acknowledge", "acknowledge": "acknowledge", "resolve": "resolve"}


def _say(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "text": text})


@router.post("/commands")
async def commands(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Response:
    """`/incident ack 123`, `resolve 123`, `oncall [schedule]`, `help`: answered to the person
    who typed it alone (an ephemeral message)."""
    form = _form(await _signed_body(request, settings, clock))
    words = form.get("text", "").split()
    verb = words[0].lower() if words else "help"
    if verb == "help":
        return _say(HELP)
    if verb not in VERBS and verb != "oncall":
        return _say(f"Unknown command `{verb[:40]}`. Try `/incident help`.")
    number = words[1] if len(words) == 2 else ""
    if verb in VERBS and not re.fullmatch(r"#?[1-9][0-9]{0,17}", number):
        given = " ".join(words[1:])[:40]
        return _say(f"`/incident {verb} <number>`: `{given}` is not an incident number.")
    user = await _user(session, slack_messages.client(settings), form.get("user_id", ""))
    if user is None:
        return _say(NO_ACCOUNT)
    if verb == "oncall":
        return _say(await _on_call(session, " ".join(words[1:]), clock=clock))
    incident_id = int(number.lstrip("#"))
    refusal = await _act(session, incident_id=incident_id, what=VERBS[verb], user=user, clock=clock)
    if refusal is not None:
        return _say(refusal)
    done = "acknowledged" if VERBS[verb] == "acknowledge" else "resolved"
    return _say(f"Incident #{incident_id} {done}.")


async def _on_call(session: AsyncSession, name: str, *, clock: Clock) -> str:
    schedules = await schedule_service.all_schedules(session)
    if name:
        schedules = [s for s in schedules if s.name.lower() == name.lower()]
        if not schedules:
            return f"There is no schedule named `{name[:100]}`. `/incident oncall` lists them all."
    if not schedules:
        return "There are no schedules."
    named = await schedule_service.on_call(session, schedules, clock.now())
    users: Mapping[int, Any] = await user_queries.active_by_id(
        session, {uid for ids in named.values() for uid in ids or []}
    )
    lines = ["*On call now:*"]
    for schedule in schedules:
        ids = named.get(schedule.id)
        if ids is None:
            who = "cannot be computed (see the logs)"
        else:
            who = ", ".join(users[uid].full_name for uid in ids if uid in users) or "nobody"
        lines.append(f"• {slack_escape(schedule.name)}: {slack_escape(who)}")
    return "\n".join(lines)
