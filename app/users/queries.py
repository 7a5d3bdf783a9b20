"""Read-only lookups of users that other domains' rules need (who may be paged, assigned, put on
call). Other domains import these, never `app.users.service`."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.users.models import User


async def not_active(session: AsyncSession, user_ids: Iterable[int]) -> list[int]:
    """The ids among `user_ids` that name no active person (deleted or deactivated, or an API
    key's service account, which is never paged, assigned nor put on call), sorted."""
    wanted = set(user_ids)
    if not wanted:
        return []
    # Key-share locks: a user being deleted waits for this transaction (and is then refused, or
    # finds what it names), instead of leaving a reference to nobody behind.
    active = set(
        await session.scalars(
            select(User.id)
            .where(
                User.id.in_(wanted), User.is_active.is_(True), User.is_service_account.is_(False)
            )
            .with_for_update(key_share=True)
        )
    )
    return sorted(wanted - active)


async def active_by_id(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, User]:
    """The active users among `user_ids`, by id (one query for any number)."""
    wanted = set(user_ids)
    if not wanted:
        return {}
    found = await session.scalars(select(User).where(User.id.in_(wanted), User.is_active.is_(True)))
    return {user.id: user for user in found}
