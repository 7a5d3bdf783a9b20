"""Escalation steps that come due: page whoever each step names, on time and once.

The worker fires due steps in batches (`fire_due`); a person fires the next step by hand
(`escalate_now`). Both read, for the whole batch, who is on call (schedules) and how each person
wants to be paged (notification preferences), then let the escalation engine decide and write
each step (`app.escalation.firing`) with its notifications (`app.notifications.compose`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.actors import SYSTEM, Actor
from app.core.errors import Conflict
from app.escalation import firing, runs
from app.escalation.enums import EscalationStatus, TargetType
from app.incidents.models import Incident, Status
from app.notifications import compose
from app.schedules import service as schedule_service


async def _audience(
    session: AsyncSession, claimed: firing.Claimed, *, now: datetime
) -> firing.Audience:
    targets = claimed.targets()
    on_call = await schedule_service.on_call_by_id(
        session, [t.id for t in targets if t.type is TargetType.schedule], now
    )
    user_ids = [t.id for t in targets if t.type is TargetType.user]
    user_ids += [uid for users in on_call.values() for uid in users or []]
    pages = await compose.step_pages(
        session, user_ids=user_ids,
        service_ids=[incident["service_id"] for incident in claimed.incidents.values()],
        incident_ids=[incident["id"] for incident in claimed.incidents.values()],
    )  # fmt: skip
    return firing.Audience(active=pages.people.keys(), on_call=on_call, page=pages)


async def _fire(
    session: AsyncSession, claimed: firing.Claimed, *, now: datetime, actor: Actor
) -> dict[int, firing.Plan]:
    audience = await _audience(session, claimed, now=now)
    assignees = await firing.assigned(session, claimed)
    return firing.plan_all(claimed, audience=audience, assignees=assignees, now=now, actor=actor)


async def fire_due(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Fire due steps (a worker job). Returns how many due rows it claimed."""
    claimed = await firing.claim_due(session, now=now, batch=batch)
    if not claimed.count:
        return 0
    plans = await _fire(session, claimed, now=now, actor=SYSTEM)
    await firing.write(session, claimed, plans, now=now)
    return claimed.count


async def escalate_now(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> None:
    """Fire the next step now; the steps after it are timed from now."""
    if incident.status != Status.triggered.value:
        raise Conflict(f"Cannot escalate incident {incident.id}: its status is {incident.status}")
    event = await runs.scheduled_step(session, incident=incident)
    if event is None:
        if incident.escalation_status == EscalationStatus.none:
            raise Conflict(f"Incident {incident.id} has no escalation policy")
        raise Conflict(
            f"Incident {incident.id} has no step left to fire: its escalation is "
            f"{incident.escalation_status}"
        )
    event.due_at = now
    await session.flush()
    claimed = await firing.claim_one(session, event_id=event.id)
    plans = await _fire(session, claimed, now=now, actor=actor)
    await firing.apply(session, list(plans.values()))
    firing.count(session, list(plans.values()), now=now)
    # The rows changed underneath the ORM objects of this session.
    session.expire_all()
