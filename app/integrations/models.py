from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, UTCDateTime


class Integration(Base):
    """An alert source bound to one service, authenticated by a secret key.

    Only the key's SHA-256 is stored (the key is 192 random bits, so a plain hash is enough) and
    its first characters, to tell keys apart; the key itself is shown on create and on rotate.
    """

    __tablename__ = "integrations"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    service_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("services.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    # One of the registered alert sources (app.alerts.sources.KINDS), checked on create.
    kind: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
