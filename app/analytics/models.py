from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class AnalyticsSnapshot(Base):
    """The console's analytics report for one of its fixed ranges ("the last 30 days", perhaps of
    one service), as computed at `computed_at`. The worker computes it again every minute while
    someone looks at it (`viewed_at`); `lease_until` keeps two workers from computing one at once.
    """

    __tablename__ = "analytics_snapshots"

    scope: Mapped[str] = mapped_column(String(40), primary_key=True)  # "30d", "30d:service=7"
    report: Mapped[str] = mapped_column(Text)  # the IncidentAnalytics JSON
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    viewed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
