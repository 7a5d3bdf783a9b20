from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, UTCDateTime

# Every key starts with this; access tokens (JWTs) never do, so one look at the bearer token
# says which check it needs.
KEY_MARK = "imsk_"
# The public part stored and shown: the mark and 8 random characters.
PREFIX_LENGTH = len(KEY_MARK) + 8


class KeyKind(StrEnum):
    personal = "personal"  # acts for its owner, with at most the owner's rights
    organisation = "organisation"  # acts as a service account of its own (admins make them)


class KeyRole(StrEnum):
    admin = "admin"
    user = "user"
    read_only = "read-only"


# Higher is more: a key may carry at most its owner's rank.
KEY_RANK = {KeyRole.read_only: 1, KeyRole.user: 2, KeyRole.admin: 3}


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('personal', 'organisation')", name="kind"),
        CheckConstraint("role IN ('admin', 'user', 'read-only')", name="role"),
        CheckConstraint(
            "team_role IS NULL OR team_role IN ('manager', 'responder', 'observer')",
            name="team_role",
        ),
        # A team scope needs a role in it, and a role needs a team.
        CheckConstraint("(team_id IS NULL) = (team_role IS NULL)", name="team_scope"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # The public part (`imsk_` and 8 characters): what the key is looked up by, and shown.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    # SHA-256 (hex) of the whole key: the secret is 256 random bits, a slow hash would add nothing.
    key_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    # Personal keys: the owner. Organisation keys: the key's own service account.
    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    # Organisation keys only: the one team it acts in, and its role there.
    team_id: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    team_role: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_from: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
