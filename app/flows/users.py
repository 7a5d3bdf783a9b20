"""A user arriving (signup) or changing their own email, and a user leaving: whoever still names
them (on-call schedules, escalation policies) is told, or, when asked, changed to leave them out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import Actor
from app.core.errors import Conflict
from app.escalation import policies as policy_service
from app.notifications import verification
from app.schedules import service as schedule_service
from app.users import service as user_service
from app.users.models import User


async def delete(
    session: AsyncSession, *, user: User, force: bool, actor: Actor, now: datetime
) -> User:
    """Delete a user. Someone still on a schedule or a policy is refused (409, naming where)
    unless `force`: then they are taken out of every one (recorded in each schedule's history)."""
    await user_service.lock(session, user)
    schedules = await schedule_service.schedules_with(session, user.id, now)
    policies = await policy_service.policies_targeting(session, user_id=user.id)
    if (schedules or policies) and not force:
        where = [f"schedule {s.id} ({s.name})" for s in schedules]
        where += [f"escalation policy {p.id} ({p.name})" for p in policies]
        raise Conflict(
            f"User {user.id} is in {', '.join(where)}: take them out first, or delete with "
            "?force=true to remove them from all of these"
        )
    if force:
        await schedule_service.remove_user(session, user_id=user.id, actor=actor, now=now)
        await policy_service.remove_user_from_policies(session, user_id=user.id, now=now)
    return await user_service.delete(session, user=user)


async def signup(
    session: AsyncSession, *, email: str, password: str, full_name: str, timezone: str,
    now: datetime,
) -> User:  # fmt: skip
    """Self-service signup. The first account (the admin who installs the service) is trusted
    with its email; a later one's email is unproven until its owner enters a code sent there:
    anyone may sign up with a stranger's address."""
    user = await user_service.signup(
        session, email=email, password=password, full_name=full_name, timezone=timezone, now=now
    )
    if not user.is_admin:
        await verification.unproven(session, user_id=user.id, address=user.email, now=now)
    return user


async def update(
    session: AsyncSession, *, user: User, changes: dict[str, Any], now: datetime
) -> User:
    """An admin changes a user (trusted: an email they set needs no code); a profile number the
    user no longer has loses its proof, so it no longer pages them nor speaks for them in a
    text reply (unless a preference or contact method still uses it)."""
    phone = user.phone
    user = await user_service.update(session, user=user, changes=changes, now=now)
    if phone and user.phone != phone:
        await verification.forget_unused(session, user=user, channel="sms", address=phone)
    return user


async def update_own(
    session: AsyncSession, *, user: User, changes: dict[str, Any], now: datetime
) -> User:
    """A user changes their own account: as `update`, and an email they set is unproven until
    they enter a code sent there."""
    email = user.email
    user = await update(session, user=user, changes=changes, now=now)
    if user.email != email:
        await verification.unproven(session, user_id=user.id, address=user.email, now=now)
    return user
