"""Password recovery: an account, a token (app.auth.recovery) and a mail (the outbox)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import recovery
from app.core.actors import Actor
from app.core.config import Settings
from app.core.db import WAKE_WORKER
from app.core.errors import BadRequest
from app.core.logging import name_actor
from app.notifications import render
from app.notifications.models import Notification, notification_row
from app.notifications.outbox import Renderer
from app.users import service as user_service
from app.users.models import User


async def start(
    session: AsyncSession,
    *,
    email: str,
    now: datetime,
    lifetime: timedelta,
    secret_key: str,
) -> User | None:
    """Store a recovery token and queue its email, for an active account (else None)."""
    user = await user_service.get_by_email(session, email)
    if user is None or not user.is_active:
        return None
    nonce = recovery.new_nonce()
    recovery.store(
        session, user_id=user.id, nonce=nonce, secret_key=secret_key, now=now, lifetime=lifetime
    )
    minutes = int(lifetime.total_seconds() // 60)
    session.add(
        Notification(
            **notification_row(
                key=f"recovery:{nonce}", incident_id=None, event=recovery.RECOVERY_EVENT,
                channel="email", address=user.email, subject="Password recovery",
                payload={"nonce": nonce, "minutes": minutes}, now=now, user_id=user.id,
            )
        )
    )  # fmt: skip
    session.info[WAKE_WORKER] = True
    await session.flush()
    return user


async def reset_password(
    session: AsyncSession, *, token: str, new_password: str, now: datetime
) -> User:
    """Spend a recovery token and set the password (every token issued before stops working)."""
    user_id = await recovery.spend(session, token=token, now=now)
    user = await user_service.get(session, user_id)
    if user is None or not user.is_active:
        raise BadRequest(recovery.INVALID)
    name_actor(Actor.of(user))  # the audit log: the token's owner set their password
    return await user_service.update(
        session, user=user, changes={"password": new_password}, now=now
    )


def _message(payload: dict[str, Any], settings: Settings) -> render.Message:
    token = recovery.recovery_token(settings.secret_key, payload["nonce"])
    return render.render_recovery(
        token=token, minutes=payload["minutes"], project=settings.project_name,
        base_url=settings.public_base_url,
    )  # fmt: skip


# How the outbox renders a recovery mail; the token is in its text, which is never stored.
RENDERERS = {recovery.RECOVERY_EVENT: Renderer(_message, keeps_body=False)}
