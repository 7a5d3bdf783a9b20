"""Messages from Jinja2 templates, one set per channel with per-event overrides.

A template is looked up as `<channel>/<event>.<part>` and falls back to `<channel>/default.<part>`
(parts: `subject.txt`, `text.txt`, `html.html`). Rendering happens when a notification is sent, from
the facts stored on its row, so that firing an escalation step stays cheap and a template fix
applies to messages still waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, select_autoescape

SMS_LIMIT = 160

HEADLINES = {
    "triggered": "New incident",
    "escalated": "Escalated",
    "acknowledged": "Acknowledged",
    "resolved": "Resolved",
    "assigned": "Assigned to you",
    "commented": "New comment",
    "reopened": "Reopened",
    "test": "Test notification",
}


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str | None = None
    # What the message carries that only its recipient may see (the one-click links of a page
    # email): kept out of the delivery log's copy of its text.
    secrets: tuple[str, ...] = ()

    def stored_text(self) -> str:
        """The text as the delivery log keeps it: each secret withheld."""
        text = self.text
        for secret in self.secrets:
            text = text.replace(secret, WITHHELD)
        return text


WITHHELD = "[link withheld]"


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("app.notifications", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=False,
    )
    environment.filters["slack"] = slack_escape
    return environment


def slack_escape(value: object) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _template(channel: str, event: str, part: str) -> Any:
    environment = _environment()
    try:
        return environment.get_template(f"{channel}/{event}.{part}")
    except TemplateNotFound:
        return environment.get_template(f"{channel}/default.{part}")


def context(
    payload: dict[str, Any], *, base_url: str, links: dict[str, str] | None = None
) -> dict[str, Any]:
    """What every template may use, from a notification's stored payload; `links`: a page
    email's one-click action URLs by action (acknowledge, resolve), made when it is sent."""
    incident = payload["incident"]
    event = payload["event"]
    # People open the console's page (its Acknowledge button); scripts use the API's path.
    incident_url = f"{base_url}/ui/incidents/{incident['id']}"
    api_url = f"{base_url}/v1/incidents/{incident['id']}"
    return {
        "event": event,
        "headline": HEADLINES.get(event, event.replace("_", " ").capitalize()),
        "incident": incident,
        "title": incident["title"],
        "actor": payload.get("actor"),
        "recipient": payload.get("recipient") or "you",
        "detail": payload.get("detail"),
        "step": payload.get("step"),
        "cycle": payload.get("cycle") or 1,
        "incident_url": incident_url,
        "acknowledge_url": f"{api_url}/acknowledge",
        # An SMS page's short code to answer with (app.notifications.replies), if it has one.
        "reply_code": payload.get("reply_code"),
        "links": links or {},
    }


def render(
    channel: str, payload: dict[str, Any], *, base_url: str, links: dict[str, str] | None = None
) -> Message:
    """The message for one notification on `channel` (email, sms or slack); `links`: the
    one-click action URLs of a page email (`app.notifications.actions.urls`)."""
    values = context(payload, base_url=base_url, links=links)
    event = values["event"]
    if channel == "email":
        return Message(
            subject=_line(_template("email", event, "subject.txt").render(values)),
            text=_template("email", event, "text.txt").render(values),
            html=_template("email", event, "html.html").render(values),
            secrets=tuple((links or {}).values()),
        )
    if channel == "sms":
        return Message(subject="", text=_sms(event, values))
    if channel == "slack":
        return Message(subject="", text=_template("slack", event, "text.txt").render(values))
    raise ValueError(f"no templates for channel {channel}")


def _line(value: str) -> str:
    """A header value: one line, at most 250 characters."""
    value = " ".join(value.split())
    return value if len(value) <= 250 else value[:249] + "…"


def _sms(event: str, values: dict[str, Any]) -> str:
    """Within 160 characters where the title can be shortened to make it fit."""
    template = _template("sms", event, "text.txt")
    text = " ".join(template.render(values).split())
    excess = len(text) - SMS_LIMIT
    title = values["title"]
    if excess > 0 and len(title) > 20:
        keep = max(20, len(title) - excess - 1)
        text = " ".join(template.render({**values, "title": title[:keep] + "…"}).split())
    return text


def render_recovery(*, token: str, minutes: int, project: str, base_url: str) -> Message:
    """The password recovery email."""
    values = {"token": token, "minutes": minutes, "project": project, "base_url": base_url}
    return Message(
        subject=_line(_template("email", "password_recovery", "subject.txt").render(values)),
        text=_template("email", "password_recovery", "text.txt").render(values),
        html=_template("email", "password_recovery", "html.html").render(values),
    )


def render_verification(
    channel: str, *, code: str, minutes: int, project: str, base_url: str
) -> Message:
    """The message that carries an address's verification code (nothing a user wrote is in it)."""
    values = {"code": code, "minutes": minutes, "project": project, "base_url": base_url}
    if channel == "sms":
        text = _template("sms", "address_verification", "text.txt").render(values)
        return Message(subject="", text=" ".join(text.split()))
    return Message(
        subject=_line(_template("email", "address_verification", "subject.txt").render(values)),
        text=_template("email", "address_verification", "text.txt").render(values),
        html=_template("email", "address_verification", "html.html").render(values),
    )
