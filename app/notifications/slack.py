"""Who a Slack member is here: the one place that decides it (the Slack app's buttons and slash
command act as the user it answers). First by email: the active user whose verified account email
is the member's Slack email. Otherwise by a linked account: the one active user with a Slack
contact method naming that member id (see app.notifications.contacts)."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.notifications import verification
from app.notifications.models import ContactMethod
from app.users.models import User


async def user_for(
    session: AsyncSession, slack_user_id: str, client: AsyncWebClient
) -> User | None:
    """The active user a Slack member is: the one whose account email is the member's Slack
    email (`users.info`, which needs the `users:read.email` scope) and is verified; failing
    that, the only active user with a Slack contact method naming the member. None when there is
    no such user (or two claim the member id)."""
    by_email = await _by_email(session, slack_user_id, client)
    return by_email if by_email is not None else await _linked(session, slack_user_id)


async def _linked(session: AsyncSession, slack_user_id: str) -> User | None:
    users = list(
        await session.scalars(
            select(User)
            .join(ContactMethod, ContactMethod.user_id == User.id)
            .where(
                ContactMethod.type == "slack",
                ContactMethod.address == slack_user_id,
                User.is_active.is_(True),
            )
            .limit(2)
        )
    )
    return users[0] if len(users) == 1 else None


async def _by_email(
    session: AsyncSession, slack_user_id: str, client: AsyncWebClient
) -> User | None:
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
