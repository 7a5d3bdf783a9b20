from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, JsonType, UTCDateTime
from app.core.logging import current_request_id


class NotificationStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    cancelled = "cancelled"


# The events whose notifications are pages (an escalation step's messages to people and its
# webhook actions): cancelled once the incident leaves `triggered`.
PAGE_EVENTS = ("escalated",)
# In the key of a policy step's webhook action (`escalation:<event id>:action:<index>`).
ACTION_KEY = ":action:"


class Notification(Base):
    """The outbox and the delivery log at once: one message to one address over one channel.

    `key` is unique: a retried step cannot write a second page for the same recipient.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')", name="status"
        ),
        Index("ix_notifications_due", "status", "next_attempt_at"),
        Index("ix_notifications_incident", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    incident_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE")
    )
    escalation_event_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("escalation_events.id", ondelete="SET NULL")
    )
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    webhook_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("webhook_subscriptions.id", ondelete="SET NULL"), index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the provider reported afterwards (Twilio's status callbacks): the last status (a
    # message's `delivered`, `undelivered`…, a call's `completed`, `no-answer`…), when, and the
    # provider's error code, if any (see app.notifications.receipts).
    receipt: Mapped[str | None] = mapped_column(String(32))
    receipt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider_error: Mapped[str | None] = mapped_column(String(64))
    # The request that caused this notification (see app.core.logging).
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationPreference(Base):
    """How one user wants to hear about incidents on one channel (at most one row per channel)."""

    __tablename__ = "notification_preferences"
    __table_args__ = (UniqueConstraint("user_id", "channel"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    address: Mapped[str | None] = mapped_column(String(2048))
    min_severity: Mapped[str] = mapped_column(String(16))
    events: Mapped[list[str]] = mapped_column(JsonType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VerifiedVia(StrEnum):
    """How an address came to be verified."""

    code = "code"  # its owner entered the code sent to it
    admin = "admin"  # an admin vouched for it (`verified_by` names them)
    migration = "migration"  # in use before verification existed (grandfathered)


class ContactVerification(Base):
    """Whether one of a user's email addresses or phone numbers is proven to be theirs.

    One row per (user, channel, normalised address): a code sent and not yet entered (its hash
    only, with its expiry and the wrong attempts so far), or the proof (`verified_at`, how, by
    whom). Nothing but the verification message itself is sent to an email address or number
    that is not verified (see `app.notifications.verification`).
    """

    __tablename__ = "contact_verifications"
    __table_args__ = (
        UniqueConstraint("user_id", "channel", "address"),
        CheckConstraint("channel IN ('email', 'sms')", name="channel"),
        CheckConstraint("verified_via IN ('code', 'admin', 'migration')", name="verified_via"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_via: Mapped[str | None] = mapped_column(String(16))
    verified_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ContactMethodType(StrEnum):
    """How a person can be reached: the outbox channel each one's pages take is `CHANNEL_OF`."""

    email = "email"
    sms = "sms"
    voice = "voice"
    slack = "slack"  # a Slack member id, messaged by the Slack app


# The outbox channel of each kind of contact method.
CHANNEL_OF = {"email": "email", "sms": "sms", "voice": "voice", "slack": "slack_dm"}
# The `contact_verifications` channel that proves a contact method's address: a number is proven
# by a code texted to it, for SMS and calls alike. Slack member ids need no proof (None).
PROOF_CHANNEL: dict[str, str | None] = {
    "email": "email",
    "sms": "sms",
    "voice": "sms",
    "slack": None,
}


class ContactMethod(Base):
    """One way to reach a user: an email address, a number for texts or calls, a Slack member.

    A method whose address must be proven (`PROOF_CHANNEL`) is paged only once it is verified
    (`contact_verifications`); until then its pages are written as failed, saying why.
    """

    __tablename__ = "contact_methods"
    __table_args__ = (
        UniqueConstraint("user_id", "type", "address"),
        CheckConstraint("type IN ('email', 'sms', 'voice', 'slack')", name="type"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class NotificationRule(Base):
    """ "When I am paged, notify me by this contact method after this many minutes."

    A page (an escalation step reaching the user) writes one outbox row per rule, due after its
    delay, under a key unique to the step, the user and the rule: never twice. Rows not yet sent
    are cancelled the moment anyone acknowledges, snoozes or resolves the incident.
    """

    __tablename__ = "notification_rules"
    __table_args__ = (
        UniqueConstraint("contact_method_id", "delay_minutes"),
        CheckConstraint("delay_minutes >= 0 AND delay_minutes <= 1440", name="delay_minutes"),
        Index("ix_notification_rules_user", "user_id", "delay_minutes"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    contact_method_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("contact_methods.id", ondelete="CASCADE")
    )
    delay_minutes: Mapped[int] = mapped_column(Integer)
    # The least severe incident this rule pages for ("info": every incident).
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SmsReplyCode(Base):
    """The short code a user answers an SMS page with ("Reply 4a to ack"): one per (user, code).

    A page's code is the incident's code for that user if it has one; otherwise the smallest
    number that none of the user's codes used within REPLY_CODE_DAYS holds (so codes stay short
    and are reused once old). See `app.notifications.replies`.
    """

    __tablename__ = "sms_reply_codes"
    __table_args__ = (UniqueConstraint("user_id", "code"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    code: Mapped[int] = mapped_column(Integer)
    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())  # when last given to a page


class SmsOptOut(Base):
    """A phone number that answered STOP (or another opt-out keyword): nothing is texted to it
    until it answers START (or UNSTOP, YES)."""

    __tablename__ = "sms_opt_outs"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    address: Mapped[str] = mapped_column(String(32), unique=True)
    keyword: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookSubscription(Base):
    """An outgoing webhook: incident events POSTed to a URL, signed with the subscription's secret.

    The secret is needed in full because every delivery is signed with it, so it is stored
    encrypted (see `app.core.crypto`); it is shown once, on create and on rotate, and only its first
    characters afterwards.
    """

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JsonType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(512))  # `fernet:…`, see app.core.crypto
    secret_prefix: Mapped[str] = mapped_column(String(16))
    # The team that owns it (its managers change it); none: only admins change it.
    team_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    created_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SlackMessage(Base):
    """A message the Slack app posted about an incident (to a channel, or to a person's DM), kept so
    that it can be updated (`chat.update`) when the incident changes. `channel` is the
    conversation Slack answered with (a DM's `D…` id, not the member id it was posted to)."""

    __tablename__ = "slack_messages"
    __table_args__ = (UniqueConstraint("channel", "ts"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))
    ts: Mapped[str] = mapped_column(String(32))
    # The notification that posted it.
    notification_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("notifications.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


def notification_row(
    *,
    key: str,
    incident_id: int | None,
    event: str,
    channel: str,
    address: str,
    subject: str,
    payload: dict[str, Any],
    now: datetime,
    user_id: int | None = None,
    webhook_id: int | None = None,
    escalation_event_id: int | None = None,
) -> dict[str, Any]:
    """A new notification as a row (pending, due now), for writers that insert many at once."""
    return {
        "key": key, "incident_id": incident_id, "escalation_event_id": escalation_event_id,
        "user_id": user_id, "webhook_id": webhook_id, "channel": channel, "address": address,
        "event": event, "subject": subject[:500], "body": "", "payload": payload,
        "status": NotificationStatus.pending.value, "attempts": 0, "next_attempt_at": now,
        "lease_until": None, "last_error": None, "provider_message_id": None, "sent_at": None,
        "receipt": None, "receipt_at": None, "provider_error": None,
        "request_id": current_request_id(), "created_at": now, "updated_at": now,
    }  # fmt: skip


class ActionTokenUse(Base):
    """A one-click action link of a page email that has been used (`app.notifications.actions`):
    its token's id is unique here, and written in the transaction of the action, so a token acts
    once."""

    __tablename__ = "action_token_uses"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(64), unique=True)
    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(String(16))
    used_at: Mapped[datetime] = mapped_column(UTCDateTime())
