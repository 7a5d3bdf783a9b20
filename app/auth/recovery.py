"""Password recovery tokens: single-use, expiring, stored only as hashes.

A token is derived from SECRET_KEY and a random nonce: the database holds the token's hash and,
until the mail is sent, the nonce; neither lets a reader of the database reset a password. The
whole step (find the account, store the token, mail it; spend it, set the password) is
`app.flows.recovery`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import PasswordResetToken
from app.core.errors import BadRequest
from app.core.tokens import hash_token

# The outbox event of a recovery mail (its messages carry the token: their text is never stored).
RECOVERY_EVENT = "password_recovery"
INVALID = "Invalid or expired password reset token"


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def recovery_token(secret_key: str, nonce: str) -> str:
    """The reset token mailed for `nonce`, derived from the secret key: never kept anywhere."""
    digest = hmac.new(secret_key.encode(), f"password-recovery:{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def store(
    session: AsyncSession,
    *,
    user_id: int,
    nonce: str,
    secret_key: str,
    now: datetime,
    lifetime: timedelta,
) -> None:
    """Keep the hash of the token that `nonce` makes, valid for `lifetime`."""
    token = recovery_token(secret_key, nonce)
    session.add(
        PasswordResetToken(
            user_id=user_id, token_hash=hash_token(token), created_at=now, expires_at=now + lifetime
        )
    )


async def spend(session: AsyncSession, *, token: str, now: datetime) -> int:
    """The user id a valid, unused, unexpired token is for; every outstanding token of that user
    is spent with it. Raises 400 otherwise."""
    # The row lock makes two simultaneous uses of one token resolve to one success.
    row = await session.scalar(
        select(PasswordResetToken)
        .where(PasswordResetToken.token_hash == hash_token(token))
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise BadRequest(INVALID)
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == row.user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )
    return row.user_id
