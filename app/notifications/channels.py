"""Channel adapters: each sends one rendered notification and answers the provider's message id.

Every adapter raises `DeliveryError` on failure, saying whether trying again could help
(`permanent=False`: the provider is down, slow, rate-limiting or erring on its side) or not
(`permanent=True`: a bad address, a refused request). Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import aiohttp
import aiosmtplib
import httpx
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client as TwilioClient

from app import __version__
from app.core.config import Settings, SmtpSecurity
from app.core.outbound import (
    PRIVATE,
    REFUSED,
    GuardedBackend,
    GuardedTransport,
    RefusedDestination,
    check_url_syntax,
)
from app.notifications import slack_messages as slack
from app.notifications.render import HEADLINES, Message, slack_escape

logger = logging.getLogger(__name__)

# What is kept of a provider's answer (for its error message or message id).
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = f"incident-management/{__version__}"


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class Outgoing:
    """One notification to send, as the adapters see it."""

    id: int
    channel: str
    address: str
    message: Message
    payload: dict[str, Any]
    now: datetime
    event: str = ""
    secret: str | None = None  # signs a webhook
    personal: bool = False  # the address is a user's own choice (not an admin's)


# ---- outbound safety -----------------------------------------------------------------------------


def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that may not be called whatever it resolves to (its scheme, credentials, a
    private address literal). Its addresses are checked when it is called (GuardedTransport)."""
    problem = check_url_syntax(url, allow_private=allow_private)
    if problem:
        raise DeliveryError(REFUSED if problem == PRIVATE else problem, permanent=True)


# ---- HTTP ----------------------------------------------------------------------------------------


async def post(
    http: httpx.AsyncClient,
    url: str,
    *,
    content: bytes | None = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    quote_answer: bool = True,
) -> tuple[int, bytes]:
    """POST and read at most MAX_RESPONSE_BYTES of the answer; classify failures.

    `quote_answer=False` keeps the receiver's words out of the error (for addresses a user chose:
    the delivery log must not become a way to read other servers' answers).
    """
    request_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        async with http.stream(
            "POST", url, content=content, data=data, headers=request_headers, auth=auth
        ) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= MAX_RESPONSE_BYTES:
                    body = body[:MAX_RESPONSE_BYTES]
                    break
    except RefusedDestination as exc:
        raise DeliveryError(REFUSED, permanent=True) from exc
    except httpx.TimeoutException as exc:
        raise DeliveryError(f"timed out: {type(exc).__name__}", permanent=False) from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}"[:500], permanent=False) from exc
    status = response.status_code
    if 200 <= status < 300:
        return status, body
    snippet = body[:300].decode("utf-8", "replace").strip() if quote_answer else ""
    message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if status in (408, 429) or status >= 500:
        raise DeliveryError(message, permanent=False, retry_after=retry_after)
    raise DeliveryError(message, permanent=True)


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def http_client(settings: Settings, *, aimed: bool = False) -> httpx.AsyncClient:
    """A client for the HTTP channels: bounded waits, no redirects, no proxies from env.

    `aimed=True` is the client for URLs a user chose (webhooks, Slack): each host is resolved
    once, all its addresses are checked (unless private networks are allowed), and the connection
    goes to a checked address. The other client calls the providers the operator configured."""
    timeout = httpx.Timeout(
        settings.notify_read_timeout_seconds, connect=settings.notify_connect_timeout_seconds
    )
    transport = (
        GuardedTransport(
            limits=LIMITS, backend=GuardedBackend(allow_private=settings.allow_private_outbound)
        )
        if aimed
        else None
    )
    return httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False, limits=LIMITS,
        transport=transport,
    )  # fmt: skip


def twilio_http(settings: Settings) -> AsyncTwilioHttpClient:
    """The HTTP client of Twilio's SDK (aiohttp), with the channels' bounded waits. Made inside
    the event loop; `close()` it when done."""
    http = AsyncTwilioHttpClient(pool_connections=False)
    http.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=settings.notify_connect_timeout_seconds + settings.notify_read_timeout_seconds,
            connect=settings.notify_connect_timeout_seconds,
        )
    )
    return http


# Where Twilio calls back (app/telephony/router.py), each with the notification's id.
TWILIO_INBOUND = "/v1/inbound/twilio"
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def twilio_callback(settings: Settings, what: str, notification_id: int) -> str:
    return f"{settings.public_base_url}{TWILIO_INBOUND}/{what}?n={notification_id}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, as receivers check it."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


# ---- Microsoft Teams ----------------------------------------------------------------------------

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


def teams_message(payload: dict[str, Any], *, base_url: str) -> dict[str, Any]:
    """The body a Teams Workflows webhook takes: a `message` with one Adaptive Card (1.4): what
    happened to which incident, its facts, and a button that opens it in the console, where
    people act on it (a card sent this way cannot act on the incident itself)."""
    incident = payload["incident"]
    event = payload["event"]
    headline = HEADLINES.get(event, event.replace("_", " ").capitalize())
    facts = [
        {"title": "Incident", "value": f"#{incident['id']}"},
        {"title": "Severity", "value": incident["severity"]},
        {"title": "Status", "value": incident["status"]},
        {"title": "Service", "value": incident.get("service_name") or "none"},
        {"title": "Event", "value": event},
    ]
    if payload.get("actor"):
        facts.append({"title": "By", "value": str(payload["actor"])})
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": f"{headline}: #{incident['id']} {incident['title']}",
         "weight": "Bolder", "size": "Medium", "wrap": True},
        {"type": "FactSet", "facts": facts},
    ]  # fmt: skip
    if payload.get("detail"):
        body.append({"type": "TextBlock", "text": str(payload["detail"]), "wrap": True})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open in the console",
             "url": f"{base_url}/ui/incidents/{incident['id']}"},
        ],
    }  # fmt: skip
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
    }


# ---- the adapters --------------------------------------------------------------------------------


class Channels:
    """Every adapter, sharing the settings and the HTTP clients: `http` for the providers the
    operator configured, `aimed` (guarded) for the URLs users chose, `twilio` for Twilio's SDK
    (without one, each Twilio request makes and closes its own)."""

    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, aimed: httpx.AsyncClient,
        twilio: AsyncTwilioHttpClient | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.http = http
        self.aimed = aimed
        self.twilio = twilio
        self._slack: AsyncWebClient | None = None  # made when first needed

    async def send(self, outgoing: Outgoing) -> str | None:
        """Deliver; answers the provider's message id (None when the provider gives none)."""
        sender = getattr(self, f"_send_{outgoing.channel}", None)
        if sender is None:
            raise DeliveryError(f"unknown channel {outgoing.channel}", permanent=True)
        result: str | None = await sender(outgoing)
        return result

    async def _send_log(self, outgoing: Outgoing) -> str | None:
        if outgoing.event == "password_recovery" and not self.settings.is_production:
            # Development without SMTP: the log is the only way to read the token.
            logger.info("password recovery mail for %s:\n%s", outgoing.address,
                        outgoing.message.text)  # fmt: skip
        else:
            logger.info(
                "notification %s to %s: %s", outgoing.id, outgoing.address,
                outgoing.message.subject or outgoing.message.text,
            )  # fmt: skip
        return f"log-{outgoing.id}"

    async def _send_email(self, outgoing: Outgoing) -> str | None:
        settings = self.settings
        if not settings.smtp_host:
            if settings.is_production:
                raise DeliveryError("email is not configured (SMTP_HOST)", permanent=True)
            return await self._send_log(outgoing)
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = outgoing.address
        message["Subject"] = outgoing.message.subject
        message_id = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or "localhost")
        message["Message-ID"] = message_id
        message["X-Notification-Id"] = str(outgoing.id)
        message.set_content(outgoing.message.text)
        if outgoing.message.html is not None:
            message.add_alternative(outgoing.message.html, subtype="html")
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_user or None,
                password=settings.smtp_password or None,
                use_tls=settings.smtp_security is SmtpSecurity.tls,
                start_tls=settings.smtp_security is SmtpSecurity.starttls,
                timeout=settings.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # 4xx (greylisting, a full mailbox) may pass; only 5xx is the server's final word.
            final = all(500 <= r.code < 600 for r in exc.recipients)
            raise DeliveryError(f"recipient refused: {exc}"[:500], permanent=final) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final word; 4xx asks to try again later.
            raise DeliveryError(
                f"SMTP {exc.code}: {exc.message}"[:500], permanent=500 <= exc.code < 600
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:500], permanent=False) from exc
        return message_id.strip("<>")

    async def _send_sms(self, outgoing: Outgoing) -> str | None:
        settings = self.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            if settings.is_production:
                raise DeliveryError("SMS is not configured (TWILIO_*)", permanent=True)
            return await self._send_log(outgoing)
        sender = (
            {"messaging_service_sid": settings.twilio_messaging_service_sid}
            if settings.twilio_messaging_service_sid
            else {"from_": settings.twilio_from_number or ""}
        )
        callback = twilio_callback(settings, "status", outgoing.id)
        message = await self._twilio(
            lambda client: client.api.v2010.account.messages.create_async(
                to=outgoing.address, body=outgoing.message.text, status_callback=callback,
                **sender,
            )
        )  # fmt: skip
        return str(message.sid) if getattr(message, "sid", None) else None

    async def _send_voice(self, outgoing: Outgoing) -> str | None:
        """A phone call that reads the page and takes a key (app/telephony/router.py)."""
        settings = self.settings
        if not (settings.twilio_account_sid and settings.twilio_auth_token):
            if settings.is_production:
                raise DeliveryError("phone calls are not configured (TWILIO_*)", permanent=True)
            return await self._send_log(outgoing)
        if not settings.twilio_from_number:
            raise DeliveryError("phone calls need TWILIO_FROM_NUMBER", permanent=True)
        call = await self._twilio(
            lambda client: client.api.v2010.account.calls.create_async(
                to=outgoing.address, from_=settings.twilio_from_number,
                url=twilio_callback(settings, "voice", outgoing.id), method="POST",
                status_callback=twilio_callback(settings, "status", outgoing.id),
                status_callback_event=CALL_EVENTS, status_callback_method="POST",
            )
        )  # fmt: skip
        return str(call.sid) if getattr(call, "sid", None) else None

    async def _twilio(self, request: Callable[[TwilioClient], Awaitable[Any]]) -> Any:
        """Run one request of Twilio's SDK against TWILIO_BASE_URL; failures as DeliveryError
        (4xx: permanent; 408, 429, 5xx, the network: worth another try)."""
        settings = self.settings
        http = self.twilio or twilio_http(settings)
        client = TwilioClient(
            settings.twilio_account_sid, settings.twilio_auth_token, http_client=http
        )
        client.api.base_url = settings.twilio_base_url  # the SDK's domain, for tests or a proxy
        try:
            return await request(client)
        except (TwilioRestException, TwilioServiceException) as exc:
            status = int(exc.status or 0)
            text = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
            message = f"HTTP {status}: Twilio error {exc.code}: {text}"[:500]
            raise DeliveryError(
                message, permanent=not (status in (408, 429) or status >= 500)
            ) from exc
        except TimeoutError as exc:
            raise DeliveryError("timed out: Twilio did not answer", permanent=False) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:500], permanent=False) from exc
        finally:
            if http is not self.twilio:
                await http.close()

    async def _send_slack(self, outgoing: Outgoing) -> str | None:
        check_destination(outgoing.address, allow_private=self.settings.allow_private_outbound)
        text = outgoing.message.text
        incident = outgoing.payload["incident"]
        blocks = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"*Severity:* {incident['severity']}"},
                    {"type": "mrkdwn", "text": f"*Status:* {incident['status']}"},
                    {"type": "mrkdwn",
                     "text": f"*Service:* {slack_escape(incident.get('service_name') or 'none')}"},
                ],
            },
        ]  # fmt: skip
        content = json.dumps({"text": text, "blocks": blocks}).encode()
        await post(
            self.aimed, outgoing.address, content=content,
            headers={"Content-Type": "application/json"}, quote_answer=not outgoing.personal,
        )  # fmt: skip
        return None

    async def _send_teams(self, outgoing: Outgoing) -> str | None:
        """A message with one Adaptive Card to a Microsoft Teams Workflows webhook ("When a Teams
        webhook request is received"), which posts it to its channel and answers 202."""
        check_destination(outgoing.address, allow_private=self.settings.allow_private_outbound)
        content = json.dumps(
            teams_message(outgoing.payload, base_url=self.settings.public_base_url)
        ).encode()
        await post(
            self.aimed, outgoing.address, content=content,
            headers={"Content-Type": "application/json"}, quote_answer=not outgoing.personal,
        )  # fmt: skip
        return None

    async def _send_webhook(self, outgoing: Outgoing) -> str | None:
        check_destination(outgoing.address, allow_private=self.settings.allow_private_outbound)
        content = json.dumps(outgoing.payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Event-Id": str(outgoing.payload.get("id", outgoing.id)),
        }
        if outgoing.secret:
            timestamp = str(int(outgoing.now.timestamp()))
            headers |= {
                "X-Timestamp": timestamp,
                "X-Signature": sign(outgoing.secret, timestamp, content),
            }
        await post(
            self.aimed, outgoing.address, content=content, headers=headers,
            quote_answer=not outgoing.personal,
        )  # fmt: skip
        return None

    # ---- the Slack app (chat.postMessage, chat.update) ---------------------------------------

    async def _send_slack_channel(self, outgoing: Outgoing) -> str | None:
        """Post to a channel: answers `<conversation>/<ts>`, kept to update the message."""
        return await self._slack_post(outgoing)

    async def _send_slack_dm(self, outgoing: Outgoing) -> str | None:
        """Post to a member id: Slack opens the direct message; its `D…` id is what it answers."""
        return await self._slack_post(outgoing)

    async def _send_slack_update(self, outgoing: Outgoing) -> str | None:
        ts = str(outgoing.payload["ts"])
        text, blocks = slack.message(outgoing.payload, base_url=self.settings.public_base_url)
        answer = await self._slack_call(
            "chat_update", channel=outgoing.address, ts=ts, text=text, blocks=blocks
        )
        if answer is None:
            return await self._send_log(outgoing)
        return slack.message_id(outgoing.address, str(answer.get("ts") or ts))

    async def _slack_post(self, outgoing: Outgoing) -> str | None:
        text, blocks = slack.message(outgoing.payload, base_url=self.settings.public_base_url)
        answer = await self._slack_call(
            "chat_postMessage", channel=outgoing.address, text=text, blocks=blocks
        )
        if answer is None:
            return await self._send_log(outgoing)
        return slack.message_id(str(answer["channel"]), str(answer["ts"]))

    async def _slack_call(self, method: str, **arguments: Any) -> dict[str, Any] | None:
        """Call a Web API method with the bot token; None when Slack is not configured in
        development (the message goes to the log). Slack's refusals are final; its outages, rate
        limits and a network failing are tried again."""
        settings = self.settings
        if not settings.slack_bot_token:
            if settings.is_production:
                raise DeliveryError("Slack is not configured (SLACK_BOT_TOKEN)", permanent=True)
            return None
        if self._slack is None:
            self._slack = slack.client(settings)
        try:
            response = await getattr(self._slack, method)(**arguments)
        except SlackApiError as exc:
            answer = exc.response
            error = str(answer.get("error") or f"HTTP {answer.status_code}")
            status = answer.status_code
            retry_after = _retry_after(answer.headers.get("Retry-After"))
            transient = error in SLACK_TRANSIENT or status == 429 or status >= 500
            raise DeliveryError(
                f"Slack {method.replace('_', '.', 1)}: {error}"[:500], permanent=not transient,
                retry_after=retry_after,
            ) from exc  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
            raise DeliveryError(f"Slack: {type(exc).__name__}: {exc}"[:500],
                                permanent=False) from exc  # fmt: skip
        data = response.data
        return data if isinstance(data, dict) else {}


# Slack's errors worth another attempt (the others are refusals: a channel not found, a bad token).
SLACK_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
