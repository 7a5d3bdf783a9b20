"""Who a Slack member is here: the one place that decides it (the Slack app's buttons and slash
command act as the user it answers): the active user whose verified account email is the member's
Slack email. A Slack contact method (a member id a person gives for their DMs) proves nothing of
who presses a button, so it is never used here: anyone could name any member id."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.notifications import verification
from app.users.models import User


async def user_for(
    session: AsyncSession, slack_user_id: str, client: AsyncWebClient
) -> User | None:
    """The active user a Slack member is: the one whose account email is the member's Slack
    email (`users.info`, which needs the `users:read.email` scope) and is verified. None when
    there is no such user, or Slack does not say (the member has no email, or is unknown)."""
    answer = await client.users_info(user=slack_user_id)
    profile = (answer.get("user") or {}).get("profile") or {}
    email = str(profile.get("email") or "").strip().lower()
    if not email:
        return None
    user = await session.scalar(
        select(User).where(func.lower(User.email) == email, User.is_active.is_(True))
    )
    if user is None:
        return None
    known = (await verification.known_for(session, [user.id])).get(user.id)
    if not verification.is_verified(
        account_email=user.email.lower(), channel="email", address=email,
        known=known or verification.NOTHING_KNOWN,
    ):  # fmt: skip
        return None
    return user
