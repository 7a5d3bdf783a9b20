from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from app.core.schemas import PartialUpdate, RequestModel, ResponseModel
from app.incidents.models import Severity
from app.teams.schemas import OptionalTeamId

HOOK_TEAM = (
    "The team that owns it: it hears only of the incidents of the team's services, and the "
    "team's managers change it; null: it hears of every incident, and admins change it"
)

ChannelName = Literal["email", "sms", "slack", "webhook", "teams"]
EventName = Literal[
    "triggered", "escalated", "acknowledged", "resolved", "assigned", "commented", "reopened"
]
DEFAULT_EVENTS: tuple[EventName, ...] = ("escalated", "assigned")
DeliveryStatus = Literal["pending", "sending", "sent", "failed", "cancelled"]
DeliveryChannel = Literal[
    "email",
    "sms",
    "voice",
    "slack",
    "slack_channel",
    "slack_dm",
    "slack_update",
    "webhook",
    "teams",
    "log",
]


def _default_events() -> list[EventName]:
    return list(DEFAULT_EVENTS)


class PreferenceRead(ResponseModel):
    channel: ChannelName
    enabled: bool
    address: str | None = Field(
        description="Where messages go, as set; null: the account's email (email) or the profile's "
        "phone (sms)."
    )
    effective_address: str | None = Field(
        description="Where messages actually go now (the address, or what null stands for)."
    )
    min_severity: Severity = Field(
        description="Only incidents at least this severe are sent (critical is the most severe)."
    )
    events: list[EventName] = Field(description="The incident events to be told about.")
    is_default: bool = Field(description="True while the user has never set this channel.")
    updated_at: datetime | None
    verified: bool = Field(
        description="email and sms: whether effective_address is verified (a code entered, an "
        "admin's word, or the account's own email); nothing but a verification code is sent to "
        "an address that is not. slack, webhook and teams: always true (their URLs are checked "
        "by the outbound address rules instead)."
    )


class PreferenceUpdate(RequestModel):
    channel: ChannelName | None = Field(
        default=None,
        description="Optional, as clients of the original API send it: must be the path's channel",
    )
    enabled: StrictBool
    address: str | None = Field(
        default=None,
        max_length=2048,
        description="email: an address; sms: an E.164 number (+15551234567); slack: an incoming-"
        "webhook URL; webhook: an https URL; teams: a Microsoft Teams Workflows webhook URL "
        "(docs/email-and-teams.md). Null: the account's email or profile phone.",
    )
    min_severity: Severity = Severity.info
    events: list[EventName] = Field(default_factory=_default_events, max_length=7)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"enabled": True, "address": "+15551234567", "min_severity": "high",
                 "events": ["escalated", "assigned"]}
            ]
        }
    }  # fmt: skip


VerifiableChannel = Literal["email", "sms"]


class VerificationSent(ResponseModel):
    channel: VerifiableChannel
    address: str = Field(description="Where the code went (the preference's effective address).")
    expires_at: datetime = Field(description="The code works until then (15 minutes).")
    attempts_allowed: int = Field(description="Wrong codes accepted before a new one is needed.")


class VerificationCode(RequestModel):
    code: str = Field(pattern=r"^[0-9]{6}$", description="The 6 digits sent to the address.")

    model_config = {"json_schema_extra": {"examples": [{"code": "123456"}]}}


class AddressVouch(RequestModel):
    address: str | None = Field(
        default=None,
        max_length=320,
        description="The email address or E.164 number to mark verified; null: the preference's "
        "effective address.",
    )


class AddressVerification(ResponseModel):
    user_id: int
    channel: VerifiableChannel
    address: str
    verified_at: datetime | None = Field(description="When it was verified (null: not yet).")
    verified_via: Literal["code", "admin", "migration"] | None = Field(
        description="code: its owner entered the code; admin: an admin vouched; migration: in use "
        "before verification existed."
    )
    verified_by: int | None = Field(description="Who verified it (the user, or the admin).")


class NotificationRead(ResponseModel):
    id: int
    incident_id: int | None
    user_id: int | None
    webhook_id: int | None
    escalation_event_id: int | None
    channel: DeliveryChannel
    address: str
    event: str
    subject: str
    body: str = Field(description="The text sent (empty until sent, and for webhooks).")
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    provider_message_id: str | None
    sent_at: datetime | None
    receipt: str | None = None
    receipt_at: datetime | None = None
    provider_error: str | None = None
    created_at: datetime
    updated_at: datetime


class WebhookCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    url: str = Field(min_length=1, max_length=2048)
    events: list[EventName] = Field(min_length=1, max_length=7)
    enabled: StrictBool = True
    team_id: OptionalTeamId = Field(default=None, description=HOOK_TEAM)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"name": "status page", "url": "https://hooks.example.com/incidents",
                 "events": ["triggered", "acknowledged", "resolved"]}
            ]
        }
    }  # fmt: skip


class WebhookUpdate(PartialUpdate):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventName] | None = Field(default=None, min_length=1, max_length=7)
    enabled: StrictBool | None = None
    team_id: OptionalTeamId = Field(default=None, description=HOOK_TEAM)

    nullable_fields = frozenset({"team_id"})


class WebhookRead(ResponseModel):
    id: int
    name: str
    description: str
    url: str
    events: list[EventName]
    enabled: bool
    secret_prefix: str = Field(description="The first characters of the signing secret.")
    team_id: int | None = Field(default=None, description=HOOK_TEAM)
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret, shown only now: X-Signature is sha256=HMAC-SHA256(secret, "
        "X-Timestamp + '.' + body) in hex."
    )


class WebhookIncident(BaseModel):
    id: int
    title: str
    status: str
    severity: Severity
    service_id: int | None
    service_name: str | None
    labels: dict[str, str]
    escalation_level: int


class WebhookActor(BaseModel):
    type: Literal["user", "integration", "system"]
    id: int | None
    name: str


class WebhookPayload(BaseModel):
    """The JSON body of every outgoing webhook delivery."""

    id: str
    event: str
    created_at: datetime
    incident: WebhookIncident | None
    actor: WebhookActor | None
    data: dict[str, Any]


# ---- contact methods and notification rules ------------------------------------------------------

ContactMethodType = Literal["email", "sms", "voice", "slack"]


class ContactMethodCreate(RequestModel):
    type: ContactMethodType = Field(
        description="email: an address; sms: a number for texts; voice: a number for phone calls; "
        "slack: a Slack member id, messaged by the Slack app."
    )
    address: str = Field(
        min_length=1,
        max_length=320,
        description="email: an address; sms and voice: a phone number in international form "
        "(+14155552671), checked against its country's numbering plan and stored as E.164; "
        "slack: a member id such as U012AB3CD.",
    )
    label: str = Field(default="", max_length=100, description="A name for it: 'Work phone'.")

    model_config = {
        "json_schema_extra": {
            "examples": [{"type": "sms", "address": "+14155552671", "label": "Mobile"}]
        }
    }


class ContactMethodUpdate(PartialUpdate):
    address: str | None = Field(
        default=None,
        min_length=1,
        max_length=320,
        description="A new address (it needs verifying again).",
    )
    label: str | None = Field(default=None, max_length=100, description="A new label.")


class ContactMethodRead(ResponseModel):
    id: int
    user_id: int = Field(description="Whose it is.")
    type: ContactMethodType = Field(description="email, sms, voice or slack.")
    address: str = Field(description="The email address, the E.164 number, or the Slack member id.")
    label: str = Field(description="Its owner's name for it ('' when none).")
    verified: bool = Field(
        description="Whether it may be paged: email and numbers need a code entered (or an "
        "admin's word; the account's own email is trusted); a number is proven by a text, for "
        "sms and voice alike. Slack member ids are always true."
    )
    created_at: datetime
    updated_at: datetime


class NotificationRuleCreate(RequestModel):
    contact_method_id: int = Field(
        ge=1, le=2**63 - 1, description="One of the same user's contact methods."
    )
    delay_minutes: int = Field(
        default=0, ge=0, le=1440, description="Minutes after being paged (0: at once)."
    )
    min_severity: Severity = Field(
        default=Severity.info,
        description="Only incidents at least this severe (critical is the most severe).",
    )

    model_config = {
        "json_schema_extra": {"examples": [{"contact_method_id": 3, "delay_minutes": 2}]}
    }


class NotificationRuleUpdate(PartialUpdate):
    contact_method_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, description="Another of the user's contact methods."
    )
    delay_minutes: int | None = Field(
        default=None, ge=0, le=1440, description="Minutes after being paged."
    )
    min_severity: Severity | None = Field(
        default=None, description="Only incidents at least this severe."
    )


class NotificationRuleRead(ResponseModel):
    id: int
    user_id: int = Field(description="Whose rule it is.")
    contact_method_id: int = Field(description="The contact method it notifies by.")
    delay_minutes: int = Field(description="Minutes after being paged (0: at once).")
    min_severity: Severity = Field(
        description="Only incidents at least this severe (critical is the most severe)."
    )
    created_at: datetime
    updated_at: datetime
