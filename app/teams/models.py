from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, UTCDateTime


class TeamRole(StrEnum):
    """A member's role in one team; each includes the rights of the ones below it."""

    manager = "manager"  # changes the team's configuration and members
    responder = "responder"  # acts on the team's incidents and takes its on-call overrides
    observer = "observer"  # reads


# Higher is more: a manager may do all a responder may.
RANK = {TeamRole.observer: 1, TeamRole.responder: 2, TeamRole.manager: 3}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Lower-cased name: unique whatever the case, on both databases.
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Private: only its members and admins see its incidents, services and schedules.
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TeamMember(Base):
    __tablename__ = "team_members"
    __table_args__ = (
        CheckConstraint("role IN ('manager', 'responder', 'observer')", name="role"),
        Index("uq_team_members_team_user", "team_id", "user_id", unique=True),
        Index("ix_team_members_user", "user_id", "team_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    team_id: Mapped[int] = mapped_column(IdType, ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
