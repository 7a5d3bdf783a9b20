"""Escalation policies, and the engine's writes: start, stop, fire a step, escalate now.

A run starts whenever an incident becomes `triggered` (created, reopened, unsnoozed,
unacknowledged). It copies the chosen policy into the incident (`escalation_snapshot`) so a later
edit of the policy does not change a run in flight, and schedules step 1 as an `escalation_events`
row. The worker fires due rows; firing a step writes its notifications and timeline entry and
schedules the next step, all in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, DomainError
from app.escalation import engine
from app.escalation.models import EscalationEvent, EscalationPolicy, EventStatus
from app.incidents.models import Assignment, Incident, Status
from app.incidents.timeline import SYSTEM, Actor, record
from app.notifications import service as notification_service
from app.pagination import page_by_id
from app.services.models import Service
from app.users.models import User

logger = logging.getLogger(__name__)

WAKE_WORKER = "wake_worker"


class InvalidPolicy(DomainError):
    status_code = 422


# ---- policies ------------------------------------------------------------------------------------


async def get_policy(session: AsyncSession, policy_id: int) -> EscalationPolicy | None:
    return await session.get(EscalationPolicy, policy_id)


async def list_policies(
    session: AsyncSession, *, limit: int, cursor: str | None, is_active: bool | None = None
) -> tuple[list[EscalationPolicy], str | None]:
    query = select(EscalationPolicy)
    if is_active is not None:
        query = query.where(EscalationPolicy.is_active == is_active)
    return await page_by_id(session, query, EscalationPolicy.id, limit=limit, cursor=cursor)


async def check_policy(
    session: AsyncSession, *, conditions: dict[str, Any], steps: Sequence[dict[str, Any]]
) -> None:
    """Targets and services must exist; users must be active. Raises 422 naming what is wrong."""
    problems = []
    user_ids = {t["id"] for s in steps for t in s["targets"] if t["type"] == "user"}
    if user_ids:
        active = set(
            await session.scalars(
                select(User.id).where(User.id.in_(user_ids), User.is_active.is_(True))
            )
        )
        for missing in sorted(user_ids - active):
            problems.append(f"target user {missing} does not exist or is inactive")
    schedule_ids = sorted({t["id"] for s in steps for t in s["targets"] if t["type"] == "schedule"})
    for schedule_id in schedule_ids:
        problems.append(
            f"target schedule {schedule_id}: on-call schedules are not available in this release"
        )
    service_ids = set(conditions.get("service_ids") or [])
    if service_ids:
        found = set(await session.scalars(select(Service.id).where(Service.id.in_(service_ids))))
        for missing in sorted(service_ids - found):
            problems.append(f"conditions.service_ids: service {missing} does not exist")
    for number, step in enumerate(steps, 1):
        kinds = {a["type"] for a in step["actions"]}
        if kinds & {"notify", "assign"} and not step["targets"]:
            problems.append(f"step {number}: notify and assign need at least one target")
    if problems:
        raise InvalidPolicy("; ".join(problems))


async def create_policy(
    session: AsyncSession, *, data: dict[str, Any], now: datetime
) -> EscalationPolicy:
    await check_policy(session, conditions=data["conditions"], steps=data["steps"])
    policy = EscalationPolicy(**data, created_at=now, updated_at=now)
    session.add(policy)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession, *, policy: EscalationPolicy, changes: dict[str, Any], now: datetime
) -> EscalationPolicy:
    await check_policy(
        session,
        conditions=changes.get("conditions", policy.conditions),
        steps=changes.get("steps", policy.steps),
    )
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.updated_at = now
    await session.flush()
    return policy


async def delete_policy(session: AsyncSession, *, policy: EscalationPolicy) -> EscalationPolicy:
    """Refuse while open incidents escalate by it or services default to it (409 naming them)."""
    open_ids = list(
        await session.scalars(
            select(Incident.id)
            .where(
                Incident.escalation_policy_id == policy.id, Incident.status != Status.resolved.value
            )
            .order_by(Incident.id)
            .limit(21)
        )
    )
    service_ids = list(
        await session.scalars(
            select(Service.id).where(Service.escalation_policy_id == policy.id).order_by(Service.id)
        )
    )
    if open_ids or service_ids:
        parts = []
        if open_ids:
            shown = ", ".join(map(str, open_ids[:20])) + (" and more" if len(open_ids) > 20 else "")
            parts.append(f"open incidents {shown} use it")
        if service_ids:
            parts.append(f"services {', '.join(map(str, service_ids))} default to it")
        raise Conflict(f"Policy {policy.id} cannot be deleted: {'; '.join(parts)}")
    await session.delete(policy)
    await session.flush()
    return policy


# ---- the engine ----------------------------------------------------------------------------------


async def start(session: AsyncSession, *, incident: Incident, now: datetime) -> None:
    """Choose the policy for an incident that became `triggered`, and schedule its first step."""
    reason = await prepare(session, incident=incident)
    begin(session, incident=incident, reason=reason, now=now)


async def prepare(session: AsyncSession, *, incident: Incident) -> str:
    """Choose the policy and set the incident's escalation fields (no id needed); say why."""
    policies = list(
        await session.scalars(
            select(EscalationPolicy)
            .where(EscalationPolicy.is_active.is_(True))
            .order_by(EscalationPolicy.priority, EscalationPolicy.id)
        )
    )
    chosen = engine.choose(policies, incident)
    reason = "conditions matched"
    if chosen is None and incident.service_id is not None:
        default_id = await session.scalar(
            select(Service.escalation_policy_id).where(Service.id == incident.service_id)
        )
        chosen = next((p for p in policies if p.id == default_id), None)
        reason = "the service's default policy"
    incident.escalation_run = (incident.escalation_run or 0) + 1
    incident.escalation_level = 0
    if not isinstance(chosen, EscalationPolicy):
        incident.escalation_policy_id = None
        incident.escalation_snapshot = None
        incident.escalation_status = "none"
        return (
            "no active policy matches and the service has no active default policy: "
            "this incident will not escalate"
        )
    incident.escalation_policy_id = chosen.id
    incident.escalation_snapshot = {
        "policy_id": chosen.id,
        "name": chosen.name,
        "repeat_count": chosen.repeat_count,
        "steps": chosen.steps,
    }
    incident.escalation_status = "active"
    return reason


def begin(session: AsyncSession, *, incident: Incident, reason: str, now: datetime) -> None:
    """Record the choice and schedule step 1 (the incident must have its id)."""
    snapshot = incident.escalation_snapshot
    record(
        session, incident=incident, type="policy_applied", actor=SYSTEM, now=now,
        data={"policy_id": snapshot["policy_id"] if snapshot else None,
              "name": snapshot["name"] if snapshot else None,
              "reason": reason, "run": incident.escalation_run},
    )  # fmt: skip
    if snapshot is not None:
        _schedule(session, incident=incident, step=1, cycle=1, after=now, now=now)


def _schedule(
    session: AsyncSession,
    *,
    incident: Incident,
    step: int,
    cycle: int,
    after: datetime,
    now: datetime,
) -> EscalationEvent:
    snapshot = incident.escalation_snapshot
    assert snapshot is not None
    definition = snapshot["steps"][step - 1]
    event = EscalationEvent(
        incident_id=incident.id,
        policy_id=snapshot["policy_id"],
        run=incident.escalation_run,
        cycle=cycle,
        step=step,
        status=EventStatus.scheduled.value,
        due_at=after + engine.step_delay(snapshot, step),
        delay_minutes=float(definition["delay_minutes"]),
        targets=definition["targets"],
        actions=definition["actions"],
        notified_user_ids=[],
        detail="",
        created_at=now,
    )
    session.add(event)
    # The in-process worker is woken after the commit, so a step due now fires at once.
    session.info[WAKE_WORKER] = True
    return event


async def stop(session: AsyncSession, *, incident: Incident, now: datetime, reason: str) -> None:
    """Cancel the pending steps (and undelivered pages) of an incident leaving `triggered`."""
    await session.execute(
        update(EscalationEvent)
        .where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == EventStatus.scheduled.value,
        )
        .values(status=EventStatus.cancelled.value, detail=reason)
    )
    await notification_service.cancel_pending_pages(session, incident_id=incident.id, now=now)
    if incident.escalation_status == "active":
        incident.escalation_status = "stopped"


async def fire_due(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Fire due steps (a worker job). Returns how many due rows it claimed.

    Locks are only ever taken with SKIP LOCKED here, so the worker never waits on an API
    transaction (which locks the incident, then its events) and the two cannot deadlock: an
    incident being changed right now is simply left for the next pass. The whole batch runs in
    one savepoint; if any step raises, the batch is replayed one step per savepoint so that only
    the broken step fails.
    """
    events = list(
        await session.scalars(
            select(EscalationEvent)
            .where(
                EscalationEvent.status == EventStatus.scheduled.value,
                EscalationEvent.due_at <= now,
            )
            .order_by(EscalationEvent.due_at, EscalationEvent.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    if not events:
        return 0
    incidents = {
        incident.id: incident
        for incident in await session.scalars(
            select(Incident)
            .where(Incident.id.in_({e.incident_id for e in events}))
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    }
    ready = [e for e in events if e.incident_id in incidents]
    active = set(
        await _active_users(
            session, [t["id"] for e in ready for t in e.targets if t["type"] == "user"]
        )
    )
    keys = [(e.id, e.incident_id, e.step, e.cycle) for e in ready]
    try:
        async with session.begin_nested():
            for event in ready:
                await _execute(
                    session, event=event, incident=incidents[event.incident_id], active=active,
                    now=now, actor=SYSTEM,
                )  # fmt: skip
    except Exception:
        logger.warning("a step in a batch of %d failed; firing them one by one", len(keys))
        for event_id, incident_id, step, cycle in keys:
            try:
                async with session.begin_nested():
                    await fire(session, event_id=event_id, now=now)
            except Exception as exc:
                logger.exception(
                    "escalation step failed: incident %s step %s cycle %s", incident_id, step, cycle
                )
                async with session.begin_nested():
                    await _fail(session, event_id=event_id, now=now, error=exc)
    return len(events)


async def fire(
    session: AsyncSession, *, event_id: int, now: datetime, actor: Actor = SYSTEM
) -> None:
    """Load one scheduled step with its incident (locked) and execute it."""
    event = await session.get(EscalationEvent, event_id, populate_existing=True)
    assert event is not None
    incident = await session.scalar(
        select(Incident)
        .where(Incident.id == event.incident_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert incident is not None
    active = set(
        await _active_users(session, [t["id"] for t in event.targets if t["type"] == "user"])
    )
    await _execute(session, event=event, incident=incident, active=active, now=now, actor=actor)


async def _execute(
    session: AsyncSession,
    *,
    event: EscalationEvent,
    incident: Incident,
    active: set[int],
    now: datetime,
    actor: Actor,
) -> None:
    """Execute one scheduled step: page, act, record, and schedule what comes next."""
    if event.status != EventStatus.scheduled.value:
        return
    if incident.status != Status.triggered.value or event.run != incident.escalation_run:
        # A stop that raced this claim already decided; keep the record consistent.
        event.status = EventStatus.cancelled.value
        event.detail = f"incident is {incident.status}"
        return
    user_ids = [t["id"] for t in event.targets if t["type"] == "user" and t["id"] in active]
    user_ids = list(dict.fromkeys(user_ids))
    skipped = [t for t in event.targets if t["type"] != "user"]
    kinds = [a["type"] for a in event.actions]
    notified: list[int] = []
    if "notify" in kinds:
        notified = await notification_service.page_users(
            session, incident=incident, event=event, user_ids=user_ids, now=now
        )
    if "assign" in kinds and user_ids:
        await _assign(session, incident=incident, user_ids=user_ids, now=now)
    for index, action in enumerate(event.actions):
        if action["type"] == "webhook":
            notification_service.call_webhook(
                session, incident=incident, event=event, url=action["url"], index=index, now=now
            )
        elif action["type"] == "set_severity" and incident.severity != action["severity"]:
            record(
                session, incident=incident, type="updated", actor=SYSTEM, now=now,
                data={"changes": {"severity": {"before": incident.severity,
                                               "after": action["severity"]}}},
            )  # fmt: skip
            incident.severity = action["severity"]
    event.status = EventStatus.executed.value
    event.executed_at = now
    event.notified_user_ids = notified
    late = (now - event.due_at).total_seconds()
    event.detail = "; ".join(
        [f"fired {late:.3f} s after due"]
        + [f"skipped {t['type']} {t['id']}: not available in this release" for t in skipped]
    )
    incident.escalation_level = event.step
    incident.updated_at = now
    record(
        session, incident=incident, type="escalated", actor=actor, now=now,
        data={"policy_id": event.policy_id, "step": event.step, "cycle": event.cycle,
              "notified_user_ids": notified, "actions": kinds, "late_seconds": round(late, 3)},
    )  # fmt: skip
    _schedule_next(session, incident=incident, event=event, after=event.due_at, now=now)


def _schedule_next(
    session: AsyncSession,
    *,
    incident: Incident,
    event: EscalationEvent,
    after: datetime,
    now: datetime,
) -> None:
    snapshot = incident.escalation_snapshot
    assert snapshot is not None
    position = engine.next_position(
        event.step, event.cycle, steps=len(snapshot["steps"]), repeat_count=snapshot["repeat_count"]
    )
    if position is None:
        incident.escalation_status = "completed"
        return
    step, cycle = position
    _schedule(session, incident=incident, step=step, cycle=cycle, after=after, now=now)


async def _fail(session: AsyncSession, *, event_id: int, now: datetime, error: Exception) -> None:
    """Record a step that raised, and go on to the next one: a page is never silently dropped."""
    event = await session.get(EscalationEvent, event_id, populate_existing=True)
    incident = (
        await session.get(Incident, event.incident_id, populate_existing=True) if event else None
    )
    if event is None or incident is None or event.status != EventStatus.scheduled.value:
        return
    event.status = EventStatus.failed.value
    event.executed_at = now
    event.detail = f"{type(error).__name__}: {str(error)[:500]}"
    record(
        session, incident=incident, type="escalation_failed", actor=SYSTEM, now=now,
        data={"step": event.step, "cycle": event.cycle, "error": event.detail},
    )  # fmt: skip
    if incident.status != Status.triggered.value or not incident.escalation_snapshot:
        return
    try:
        async with session.begin_nested():
            _schedule_next(session, incident=incident, event=event, after=now, now=now)
    except Exception:
        logger.exception("escalation of incident %s cannot go on", incident.id)
        incident.escalation_status = "failed"


async def escalate_now(
    session: AsyncSession, *, incident: Incident, actor: Actor, now: datetime
) -> None:
    """Fire the next step now; the steps after it are timed from now."""
    if incident.status != Status.triggered.value:
        raise Conflict(f"Cannot escalate incident {incident.id}: its status is {incident.status}")
    event = await session.scalar(
        select(EscalationEvent)
        .where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == EventStatus.scheduled.value,
        )
        .with_for_update()
    )
    if event is None:
        if incident.escalation_status == "none":
            raise Conflict(f"Incident {incident.id} has no escalation policy")
        raise Conflict(
            f"Incident {incident.id} has no step left to fire: its escalation is "
            f"{incident.escalation_status}"
        )
    event.due_at = now
    await session.flush()
    await fire(session, event_id=event.id, now=now, actor=actor)


async def list_events(
    session: AsyncSession, *, incident: Incident, limit: int, cursor: str | None
) -> tuple[list[EscalationEvent], str | None]:
    query = select(EscalationEvent).where(EscalationEvent.incident_id == incident.id)
    return await page_by_id(session, query, EscalationEvent.id, limit=limit, cursor=cursor)


async def next_due(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(
        select(func.min(EscalationEvent.due_at)).where(
            EscalationEvent.status == EventStatus.scheduled.value
        )
    )
    return result


async def _active_users(session: AsyncSession, ids: list[int]) -> list[int]:
    """The active users among `ids`, in target order, once each (inactive ones are skipped)."""
    if not ids:
        return []
    found = set(
        await session.scalars(select(User.id).where(User.id.in_(ids), User.is_active.is_(True)))
    )
    return [i for i in dict.fromkeys(ids) if i in found]


async def _assign(
    session: AsyncSession, *, incident: Incident, user_ids: list[int], now: datetime
) -> None:
    current = set(
        await session.scalars(
            select(Assignment.user_id).where(Assignment.incident_id == incident.id)
        )
    )
    added = [uid for uid in user_ids if uid not in current]
    if not added:
        return
    for uid in added:
        session.add(
            Assignment(
                incident_id=incident.id, user_id=uid, role="responder", assigned_at=now,
                assigned_by=None,
            )
        )  # fmt: skip
    record(
        session, incident=incident, type="assigned", actor=SYSTEM, now=now,
        data={"added": [{"user_id": uid, "role": "responder"} for uid in added],
              "removed": [], "changed": []},
    )  # fmt: skip
