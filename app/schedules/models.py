"""On-call schedules: layers of rotations in one time zone, overrides on top, and their history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, JsonType, UTCDateTime


class Schedule(Base):
    """Who is on call when. `layers` is an ordered list (later layers win where they have
    someone); each layer: name, user_ids, rotation_length, rotation_unit, start (local wall-clock
    time in `time_zone`), restrictions."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Lower-cased name: unique whatever the case, on both databases.
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    time_zone: Mapped[str] = mapped_column(String(64))
    layers: Mapped[list[dict[str, Any]]] = mapped_column(JsonType, default=list)
    # The calendar feed's secret (a calendar app cannot send a bearer token): its hash only.
    calendar_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The team that owns it (its managers change it); none: only admins change it.
    team_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduleOverride(Base):
    """Someone on call instead of whoever the layers name, from `start_at` to `end_at`."""

    __tablename__ = "schedule_overrides"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="positive_length"),
        Index("ix_schedule_overrides_schedule_end", "schedule_id", "end_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(IdType, ForeignKey("schedules.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ScheduleChange(Base):
    """The schedule's history: who changed what, append-only."""

    __tablename__ = "schedule_changes"
    __table_args__ = (Index("ix_schedule_changes_schedule", "schedule_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(IdType, ForeignKey("schedules.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(IdType)
    actor_name: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserCalendar(Base):
    """The secret of a user's own calendar feed (all their shifts): its hash only."""

    __tablename__ = "user_calendars"

    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The user's token_version when the secret was made: a password change or a deactivation
    # moves the user's, and the feed's secret ends with their sign-in tokens.
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
