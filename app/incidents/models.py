from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from app.core.db import Base, IdType, JsonType, UTCDateTime
from app.escalation.enums import EscalationStatus
from app.users.models import User


class Status(StrEnum):
    triggered = "triggered"
    acknowledged = "acknowledged"
    snoozed = "snoozed"
    resolved = "resolved"


class Severity(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    info = "info"


OPEN_DEDUP = "status != 'resolved' AND dedup_key IS NOT NULL AND service_id IS NOT NULL"


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(
            "status IN ('triggered', 'acknowledged', 'snoozed', 'resolved')", name="status"
        ),
        CheckConstraint(
            "severity IN ('critical', 'high', 'medium', 'low', 'info')", name="severity"
        ),
        # The list's filters and keyset order: status (+ severity), newest first.
        Index("ix_incidents_status_severity_created", "status", "severity", "created_at", "id"),
        Index("ix_incidents_status_created", "status", "created_at", "id"),
        Index("ix_incidents_created", "created_at", "id"),
        Index("ix_incidents_updated", "updated_at", "id"),
        Index("ix_incidents_service_created", "service_id", "created_at", "id"),
        Index("ix_incidents_dedup", "dedup_key", "service_id"),
        # At most one open incident per service and dedup key (alerts are deduplicated into it).
        Index(
            "uq_incidents_open_dedup",
            "service_id",
            "dedup_key",
            unique=True,
            postgresql_where=text(OPEN_DEDUP),
            sqlite_where=text(OPEN_DEDUP),
        ),
        Index("ix_incidents_snooze_due", "status", "snoozed_until"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=Status.triggered.value)
    severity: Mapped[str] = mapped_column(String(16), default=Severity.medium.value)
    service_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("services.id", ondelete="RESTRICT")
    )
    source: Mapped[str] = mapped_column(String(64), default="api")
    dedup_key: Mapped[str | None] = mapped_column(String(255))
    alert_count: Mapped[int] = mapped_column(Integer, default=1)
    last_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, default=dict)
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    escalation_policy_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("escalation_policies.id", ondelete="SET NULL"), index=True
    )
    # The step last fired (0 before the first); `escalation_status` says where escalation stands.
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    escalation_status: Mapped[str] = mapped_column(String(16), default=EscalationStatus.none.value)
    escalation_run: Mapped[int] = mapped_column(Integer, default=0)
    # The policy as it was when this run started: name, repeat_count and steps.
    escalation_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    snoozed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=1)

    assignments: Mapped[list[Assignment]] = relationship(
        lazy="raise", order_by="Assignment.assigned_at, Assignment.user_id"
    )

    @property
    def assignees(self) -> list[dict[str, Any]]:
        return [
            {
                "id": a.user.id,
                "full_name": a.user.full_name,
                "role": a.user.role,
                "is_active": a.user.is_active,
                "timezone": a.user.timezone,
                "response_role": a.role,
                "assigned_at": a.assigned_at,
            }
            for a in self.assignments
        ]


class Assignment(Base):
    __tablename__ = "incident_assignees"

    incident_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(32), default="responder")
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )

    user: Mapped[User] = relationship(lazy="raise", foreign_keys=[user_id])


class Comment(Base):
    __tablename__ = "incident_comments"
    __table_args__ = (Index("ix_incident_comments_incident", "incident_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(IdType, ForeignKey("incidents.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # Kept so the comment still says who wrote it after the account is deleted.
    author_name: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def author(self) -> dict[str, Any]:
        return {"id": self.author_id, "name": self.author_name}


class TimelineEntry(Base):
    """Append-only: written in the transaction of the change it records, never updated."""

    __tablename__ = "timeline_entries"
    __table_args__ = (
        CheckConstraint("actor_type IN ('user', 'integration', 'system')", name="actor_type"),
        Index("ix_timeline_entries_incident", "incident_id", "id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(IdType, ForeignKey("incidents.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(IdType)
    actor_name: Mapped[str] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    # The API request that made this entry, or whose work the worker was doing (app.core.logging).
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def actor(self) -> dict[str, Any]:
        return {"type": self.actor_type, "id": self.actor_id, "name": self.actor_name}


@event.listens_for(Session, "before_flush")
def _bump_versions(session: Session, *_: Any) -> None:
    """Every flush that changes an incident raises its version by one.

    Writers lock the row first (`SELECT … FOR UPDATE`) and compare versions themselves, so the
    version is a change counter for clients (`If-Match`), not a lock; a plain UPDATE lets the
    worker write a batch of incidents with one executemany instead of a round trip each.
    """
    for instance in session.dirty:
        if isinstance(instance, Incident) and session.is_modified(
            instance, include_collections=False
        ):
            instance.version = (instance.version or 0) + 1
