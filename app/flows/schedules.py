"""Schedules that escalation policies page: one cannot go while a policy names it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict
from app.escalation import policies as policy_service
from app.schedules import service as schedule_service
from app.schedules.models import Schedule


async def delete(session: AsyncSession, *, schedule: Schedule) -> Schedule:
    """Delete a schedule no escalation policy targets (409 naming those that do)."""
    # Locked first: a policy being saved with this target holds a key-share lock on it, so the
    # check below runs after that policy commits, and sees it.
    await session.refresh(schedule, with_for_update=True)
    using = await policy_service.policies_targeting(session, schedule_id=schedule.id)
    if using:
        names = ", ".join(f"{p.id} ({p.name})" for p in using)
        raise Conflict(f"Schedule {schedule.id} is a target of escalation policies {names}")
    return await schedule_service.delete(session, schedule=schedule)
