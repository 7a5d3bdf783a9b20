"""Twilio's webhooks: SMS replies to pages, the menu of a paging call, delivery receipts.

Called by Twilio, not by API clients: outside the OpenAPI document (docs/twilio.md lists them).
Every request must carry a valid `X-Twilio-Signature`, computed by Twilio with the account's auth
token over the URL it called and the form it posted; the URL is rebuilt from PUBLIC_BASE_URL and
the request's path and query, so PUBLIC_BASE_URL must be exactly what Twilio calls. A bad or
missing signature is a 403 and changes nothing. People act through the flows, as themselves
(`via` sms or voice), like from the console.

- `POST /v1/inbound/twilio/sms`: a text to the service's number. Opt-out keywords (STOP…), opt-in
  keywords (START…) and HELP first; otherwise the sender is the one active user who verified the
  number, and "4a" / "4r" acknowledges or resolves the incident of their code 4. The answer is
  TwiML (a text back saying what happened).
- `POST /v1/inbound/twilio/voice?n=<notification>`: a paging call was answered: read the
  incident, take one key (`…/voice/key`): 4 acknowledges, 6 resolves, 9 escalates now.
- `POST /v1/inbound/twilio/status?n=<notification>`: message and call status callbacks
  (app.notifications.receipts); always 200, or Twilio retries.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from app.auth import policy as authz
from app.core.actors import Actor
from app.core.config import Settings
from app.core.deps import ClockDep, SessionDep, SettingsDep
from app.core.errors import Conflict
from app.flows import incidents as incident_flow
from app.flows import paging
from app.incidents import service as incident_service
from app.incidents.models import Incident, Status
from app.notifications import receipts, replies
from app.notifications.channels import TWILIO_INBOUND
from app.notifications.models import Notification
from app.users.models import User

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/inbound/twilio", include_in_schema=False)

MAX_FORM_BYTES = 64 * 1024
TWIML = "application/xml"


# ---- the signature -------------------------------------------------------------------------------


async def _signed_form(request: Request, settings: Settings) -> dict[str, str]:
    """The posted form, once its signature is checked (403 otherwise, 400 for a body that is
    not a form)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "The form is too large")
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "The body is not a UTF-8 form") from exc
    signature = request.headers.get("x-twilio-signature", "")
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = f"{settings.public_base_url}{request.url.path}" + (f"?{query}" if query else "")
    token = settings.twilio_webhook_token
    if not (token and signature and RequestValidator(token).validate(url, params, signature)):
        logger.warning("Twilio webhook %s refused: bad or missing signature", request.url.path)
        raise HTTPException(403, "Invalid or missing X-Twilio-Signature")
    return params


def _twiml(answer: MessagingResponse | VoiceResponse) -> Response:
    return Response(content=str(answer), media_type=TWIML)


def _text(words: str | None) -> Response:
    """A text back (None: no answer)."""
    answer = MessagingResponse()
    if words:
        answer.message(words)
    return _twiml(answer)


# ---- SMS -----------------------------------------------------------------------------------------


@router.post("/sms")
async def inbound_sms(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Response:
    params = await _signed_form(request, settings)
    number = params.get("From", "").strip()
    body = params.get("Body", "")
    now = clock.now()
    project = settings.project_name
    word = replies.keyword(body)
    own = settings.twilio_keyword_replies  # otherwise Twilio answered already
    if word is replies.Keyword.opt_out:
        await replies.opt_out(session, number=number, word=body.strip(), now=now)
        return _text(
            f"{project}: no more texts will be sent to this number. Text START to get them again."
            if own else None
        )  # fmt: skip
    if word is replies.Keyword.opt_in:
        await replies.opt_in(session, number=number)
        return _text(f"{project}: texts to this number are on again. Text STOP to end them."
                     if own else None)  # fmt: skip
    if word is replies.Keyword.help:
        return _text(_help(project) if own else None)
    owners = await replies.owners_of(session, number)
    if not owners:
        return _text(f"{project}: this number is not verified for any account. Nothing was done.")
    if len(owners) > 1:
        return _text(
            f"{project}: this number is verified for {len(owners)} accounts, so a reply cannot "
            "tell who you are. Nothing was done; use the console."
        )
    [user] = owners
    wanted = replies.command(body)
    if wanted is None:
        return _text(f"{project}: not understood. Reply with a page's code and a or r, e.g. 4a "
                     "to ack, 4r to resolve. Nothing was done.")  # fmt: skip
    incident_id = await replies.incident_for(session, user_id=user.id, code=wanted.code)
    incident = (
        await incident_service.get(session, incident_id, lock=True)
        if incident_id is not None
        else None
    )
    if incident is None:
        return _text(f"{project}: no page of yours has code {wanted.code}. Nothing was done.")
    return _text(await _act_by_text(session, incident, user, wanted.action, now=clock.now()))


def _help(project: str) -> str:
    return (
        f"{project} incident paging. Answer a page with its code: 4a acknowledges, 4r resolves. "
        "Text STOP to stop texts, START to get them again."
    )


async def _act_by_text(
    session: SessionDep, incident: Incident, user: User, action: replies.Action, *, now: datetime
) -> str:
    label = f"#{incident.id} {_short(incident.title)}"
    actor = Actor.of(user, via="sms")
    if not authz.may_answer_page(user):
        return f"{label}: you may not act on it. Nothing was done."
    if action is replies.Action.acknowledge:
        if incident.status == Status.acknowledged.value:
            return f"{label} is already acknowledged. Nothing was done."
        if incident.status != Status.triggered.value:
            return f"{label} is {incident.status}: it cannot be acknowledged. Nothing was done."
        await incident_flow.acknowledge(session, incident=incident, actor=actor, now=now)
        return f"Acknowledged {label}"
    if incident.status == Status.resolved.value:
        return f"{label} is already resolved. Nothing was done."
    await incident_flow.resolve(session, incident=incident, actor=actor, now=now)
    return f"Resolved {label}"


def _short(title: str, limit: int = 60) -> str:
    title = " ".join(title.split())
    return title if len(title) <= limit else title[: limit - 1] + "…"


# ---- calls ---------------------------------------------------------------------------------------


async def _page(session: SessionDep, request: Request) -> Notification | None:
    """The call's notification (`?n=`), a voice page to a person."""
    raw = request.query_params.get("n", "")
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        return None
    row = await session.get(Notification, int(raw))
    if row is None or row.channel != "voice" or row.user_id is None or row.incident_id is None:
        return None
    return row


def _speakable(text: str, limit: int = 160) -> str:
    """What a text-to-speech voice reads well: words and plain punctuation (markup, symbols and
    URLs' slashes read as noise)."""
    text = re.sub(r"[^\w\s.,:;!?'-]|_", " ", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def _goodbye(answer: VoiceResponse, words: str) -> Response:
    answer.say(f"{words} Goodbye.")
    answer.hangup()
    return _twiml(answer)


def _state(incident: Incident) -> str:
    return f"Incident {incident.id}, {_speakable(incident.title)}, is {incident.status}."


def _menu(settings: Settings, page: Notification, incident: Incident, *, first: str = "") -> str:
    answer = VoiceResponse()
    gather = answer.gather(
        num_digits=1, timeout=8, method="POST",
        action=f"{settings.public_base_url}{TWILIO_INBOUND}/voice/key?n={page.id}",
    )  # fmt: skip
    gather.say(
        f"{first}This is {_speakable(settings.project_name)}. Incident {incident.id}, severity "
        f"{incident.severity}: {_speakable(incident.title)}. Press 4 to acknowledge, 6 to "
        "resolve, 9 to escalate to the next step."
    )
    answer.say("No key was pressed. Goodbye.")
    answer.hangup()
    return str(answer)


@router.post("/voice")
async def inbound_call(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    await _signed_form(request, settings)
    page = await _page(session, request)
    incident = await session.get(Incident, page.incident_id) if page and page.incident_id else None
    if page is None or incident is None:
        return _goodbye(VoiceResponse(), "This page is no longer known.")
    if incident.status != Status.triggered.value:
        return _goodbye(VoiceResponse(), _state(incident) + " Nothing is needed from you.")
    return Response(content=_menu(settings, page, incident), media_type=TWIML)


@router.post("/voice/key")
async def call_key(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Response:
    params = await _signed_form(request, settings)
    page = await _page(session, request)
    if page is None or page.incident_id is None:
        return _goodbye(VoiceResponse(), "This page is no longer known.")
    incident = await incident_service.get(session, page.incident_id, lock=True)
    user = await session.get(User, page.user_id) if page.user_id is not None else None
    if incident is None or user is None or not user.is_active:
        return _goodbye(VoiceResponse(), "This page is no longer known.")
    if not authz.may_answer_page(user):
        return _goodbye(VoiceResponse(), "You may not act on this incident.")
    digits = params.get("Digits", "").strip()
    if not digits:
        return _goodbye(VoiceResponse(), "No key was pressed.")
    if digits not in ("4", "6", "9"):
        menu = _menu(settings, page, incident, first="That key does nothing. ")
        return Response(content=menu, media_type=TWIML)
    number, now, actor = incident.id, clock.now(), Actor.of(user, via="voice")
    if digits == "6":
        if incident.status == Status.resolved.value:
            return _goodbye(VoiceResponse(), _state(incident))
        await incident_flow.resolve(session, incident=incident, actor=actor, now=now)
        return _goodbye(VoiceResponse(), f"Incident {number} is resolved.")
    if incident.status != Status.triggered.value:
        return _goodbye(VoiceResponse(), _state(incident) + " Nothing was done.")
    if digits == "4":
        await incident_flow.acknowledge(session, incident=incident, actor=actor, now=now)
        return _goodbye(VoiceResponse(), f"Incident {number} is acknowledged.")
    try:
        await paging.escalate_now(session, incident=incident, actor=actor, now=now)
    except Conflict as exc:
        return _goodbye(VoiceResponse(), f"{_speakable(str(exc))}. Nothing was done.")
    return _goodbye(VoiceResponse(), f"Incident {number} is escalated to the next step.")


# ---- receipts ------------------------------------------------------------------------------------


@router.post("/status")
async def status_callback(
    request: Request, session: SessionDep, settings: SettingsDep, clock: ClockDep
) -> Response:
    params = await _signed_form(request, settings)
    raw = request.query_params.get("n", "")
    if not re.fullmatch(r"[0-9]{1,18}", raw):
        return Response(status_code=200)  # not ours: answered, or Twilio would retry
    if "CallStatus" in params:
        receipt = receipts.Receipt(
            int(raw), receipts.Kind.call, params.get("CallSid", ""), params["CallStatus"],
            params.get("ErrorCode") or None, params.get("AnsweredBy") or None,
        )  # fmt: skip
    elif "MessageStatus" in params:
        receipt = receipts.Receipt(
            int(raw), receipts.Kind.message, params.get("MessageSid", ""),
            params["MessageStatus"], params.get("ErrorCode") or None,
        )  # fmt: skip
    else:
        return Response(status_code=200)
    recorded = await receipts.record(
        session, receipt, now=clock.now(), max_attempts=settings.notify_max_attempts,
        retry_base=settings.notify_retry_base_seconds,
        retry_longest=settings.notify_retry_max_seconds,
    )  # fmt: skip
    logger.info(
        "Twilio %s status %s for notification %s: %s", receipt.kind, receipt.status, raw,
        recorded, extra={"notification_id": receipt.notification_id, "receipt": receipt.status},
    )  # fmt: skip
    return Response(status_code=200)
