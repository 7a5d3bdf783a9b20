from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, JsonType, UTCDateTime
from app.escalation.enums import EventStatus


class EscalationPolicy(Base):
    """Which incidents it applies to (conditions, priority) and whom to page, step by step."""

    __tablename__ = "escalation_policies"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # Lower wins among matching policies.
    priority: Mapped[int] = mapped_column(Integer, default=100, index=True)
    repeat_count: Mapped[int] = mapped_column(Integer, default=0)
    # How long after the last step a repeat starts again at step 1.
    repeat_delay_minutes: Mapped[float] = mapped_column(Float, default=5.0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    conditions: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    # The team that owns it (its managers change it); none: only admins change it.
    team_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EscalationEvent(Base):
    """One step of one cycle of one escalation run: the timer row and its history at once.

    The unique key makes a second row for the same step impossible, whoever schedules it.
    """

    __tablename__ = "escalation_events"
    __table_args__ = (
        CheckConstraint(
            "status IN ('scheduled', 'executed', 'cancelled', 'failed', 'skipped')", name="status"
        ),
        Index("uq_escalation_events_step", "incident_id", "run", "cycle", "step", unique=True),
        Index("ix_escalation_events_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    incident_id: Mapped[int] = mapped_column(IdType, ForeignKey("incidents.id", ondelete="CASCADE"))
    policy_id: Mapped[int | None] = mapped_column(IdType)
    # Which start of escalation this belongs to: every return to `triggered` starts a new run.
    run: Mapped[int] = mapped_column(Integer)
    cycle: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.scheduled.value)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the step will do, copied when it is scheduled: a later policy edit does not change it.
    delay_minutes: Mapped[float] = mapped_column(default=0.0)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    notified_user_ids: Mapped[list[int]] = mapped_column(JsonType, default=list)
    detail: Mapped[str] = mapped_column(Text, default="")
    # The request that started this run of escalation: its steps and pages carry it along.
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
