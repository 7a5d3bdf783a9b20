from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, IdType, UTCDateTime


class Role(StrEnum):
    admin = "admin"
    user = "user"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'user')", name="role"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    # Stored lower-cased, so the unique index makes addresses unique case-insensitively.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    full_name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.user.value, index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    hashed_password: Mapped[str] = mapped_column(String(255))
    # Raised on a password change or deactivation: tokens carrying an older value stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    # An organisation API key's own account (app.apikeys): never signs in, is never paged, put
    # on call or listed among the people.
    is_service_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin.value
