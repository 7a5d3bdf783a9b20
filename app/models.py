"""Every model, imported in one place so that metadata (and Alembic) sees all tables."""

from app.auth.models import PasswordResetToken
from app.db import Base
from app.users.models import User

__all__ = ["Base", "PasswordResetToken", "User"]
