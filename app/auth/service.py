"""Password recovery: single-use, expiring tokens stored as hashes."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import security
from app.auth.models import PasswordResetToken
from app.core.db import WAKE_WORKER
from app.core.errors import BadRequest
from app.notifications import service as notification_service
from app.notifications.models import Notification
from app.users import service as user_service
from app.users.models import User


async def start_recovery(
    session: AsyncSession,
    *,
    email: str,
    now: datetime,
    lifetime: timedelta,
    secret_key: str,
) -> User | None:
    """Store a recovery token and queue its email, for an active account (else None).

    The token is derived from the secret key and a random nonce: the database holds the token's
    hash and, until the mail is sent, the nonce; neither lets a reader of the database reset a
    password.
    """
    user = await user_service.get_by_email(session, email)
    if user is None or not user.is_active:
        return None
    nonce = secrets.token_urlsafe(24)
    token = notification_service.recovery_token(secret_key, nonce)
    session.add(
        PasswordResetToken(
            user_id=user.id,
            token_hash=security.hash_opaque_token(token),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    row = notification_service.recovery_row(
        user_id=user.id, email=user.email, nonce=nonce,
        minutes=int(lifetime.total_seconds() // 60), now=now,
    )  # fmt: skip
    session.add(Notification(**row))
    session.info[WAKE_WORKER] = True
    await session.flush()
    return user


async def reset_password(
    session: AsyncSession, *, token: str, new_password: str, now: datetime
) -> User:
    token_hash = security.hash_opaque_token(token)
    # The row lock makes two simultaneous uses of one token resolve to one success.
    row = await session.scalar(
        select(PasswordResetToken)
        .where(PasswordResetToken.token_hash == token_hash)
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise BadRequest("Invalid or expired password reset token")
    user = await user_service.get(session, row.user_id)
    if user is None or not user.is_active:
        raise BadRequest("Invalid or expired password reset token")
    # Every outstanding token of this user is spent, not only the one used.
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )
    return await user_service.update(
        session, user=user, changes={"password": new_password}, now=now
    )
