"""A user leaving: whoever still names them (on-call schedules, escalation policies) is told, or,
when asked, changed to leave them out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import Actor
from app.core.errors import Conflict
from app.escalation import policies as policy_service
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
