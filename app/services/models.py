from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, UTCDateTime


class Service(Base):
    """What breaks, e.g. "checkout-api". Incidents may belong to one."""

    __tablename__ = "services"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Lower-cased name: makes names unique case-insensitively on both databases.
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The default policy for its incidents when no policy's conditions match.
    escalation_policy_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("escalation_policies.id", ondelete="RESTRICT"), index=True
    )
    # A Slack channel id (`C0123ABCD`): the Slack app posts its new incidents there.
    slack_channel: Mapped[str | None] = mapped_column(String(32))
    # The team that owns it (its managers change it); none: only admins change it.
    team_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("teams.id", ondelete="RESTRICT"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
