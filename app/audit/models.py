from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, JsonType, UTCDateTime


class ActorType(StrEnum):
    """Who made a change."""

    user = "user"
    system = "system"
    api_key = "api_key"  # a request sent with an API key: the key's id, its user's name


# What the log covers (`app.audit.recording.AUDITED` maps each class to its name here).
ObjectType = Literal[
    "user",
    "service",
    "integration",
    "escalation_policy",
    "schedule",
    "schedule_override",
    "webhook_subscription",
    "notification_preference",
    "contact_method",
    "notification_rule",
    "api_key",
    "team",
    "team_member",
]


class Action(StrEnum):
    create = "create"
    update = "update"
    delete = "delete"
    # Updates with a meaning of their own.
    deactivate = "deactivate"  # a user signed out for good, kept for the record
    reactivate = "reactivate"
    rotate = "rotate"  # a new secret: an integration key, a webhook secret, a calendar link
    reseal = "reseal"  # the same webhook secret, encrypted again under the current SECRET_KEY
    revoke = "revoke"  # an API key stopped for good


class AuditEntry(Base):
    """One change of one configuration row, written in the transaction of the change.

    Append-only: on PostgreSQL a trigger refuses UPDATE and DELETE, except the retention job's
    deletion of rows older than the retention it declares (see the migration and docs/audit.md).
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_object", "object_type", "object_id", "id"),
        Index("ix_audit_log_actor", "actor_id", "id"),
        Index("ix_audit_log_team", "team_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(IdType)  # no foreign key: users leave
    actor_name: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[int] = mapped_column(IdType)
    before: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    request_id: Mapped[str | None] = mapped_column(String(64))
    source_address: Mapped[str | None] = mapped_column(String(64))
    # The team that owns the object (no foreign key: teams are deleted, their log is kept), so
    # that a team's managers can read their team's log.
    team_id: Mapped[int | None] = mapped_column(IdType)
