"""Escalation policies: create, change, delete, and the checks that keep them pointing at things
that exist. Never a commit. (What a policy does when an incident escalates: `app.escalation.runs`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, Unprocessable
from app.core.outbound import check_url_syntax
from app.core.pagination import page_by_id
from app.escalation.enums import ActionType, TargetType
from app.escalation.models import EscalationPolicy
from app.escalation.policy import Conditions, Step, steps_of
from app.incidents.models import Incident, Status
from app.schedules.models import Schedule
from app.services.models import Service
from app.users.queries import not_active


async def get_policy(session: AsyncSession, policy_id: int) -> EscalationPolicy | None:
    return await session.get(EscalationPolicy, policy_id)


async def list_policies(
    session: AsyncSession,
    *,
    limit: int,
    cursor: str | None,
    is_active: bool | None = None,
    team_id: int | None = None,
    visible: ColumnElement[bool] | None = None,
) -> tuple[list[EscalationPolicy], str | None]:
    """A page of policies in id order; `visible`: the rows the caller may read."""
    query = select(EscalationPolicy)
    if visible is not None:
        query = query.where(visible)
    if team_id is not None:
        query = query.where(EscalationPolicy.team_id == team_id)
    if is_active is not None:
        query = query.where(EscalationPolicy.is_active == is_active)
    return await page_by_id(session, query, EscalationPolicy.id, limit=limit, cursor=cursor)


def check_webhook_urls(steps: Sequence[Step], *, allow_private: bool) -> None:
    """Webhook and Teams actions obey the outbound address rules when saved, not only when
    sent."""
    for number, step in enumerate(steps, start=1):
        for action in step.actions:
            if action.type in (ActionType.webhook, ActionType.teams):
                problem = check_url_syntax(action.url or "", allow_private=allow_private)
                if problem:
                    raise Unprocessable(f"step {number}: {action.type.value} url: {problem}")


async def check_policy(
    session: AsyncSession, *, conditions: Conditions, steps: Sequence[Step]
) -> None:
    """Targets and services must exist; users must be active. Raises 422 naming what is wrong."""
    problems = []
    targets = [target for step in steps for target in step.targets]
    user_ids = {t.id for t in targets if t.type is TargetType.user}
    for missing in await not_active(session, user_ids):
        problems.append(f"target user {missing} does not exist or is inactive")
    schedule_ids = {t.id for t in targets if t.type is TargetType.schedule}
    if schedule_ids:
        found = set(
            await session.scalars(
                select(Schedule.id)
                .where(Schedule.id.in_(schedule_ids))
                .with_for_update(key_share=True)  # a delete of the schedule waits, then sees us
            )
        )
        for missing in sorted(schedule_ids - found):
            problems.append(f"target schedule {missing} does not exist")
    if conditions.service_ids:
        found = set(
            await session.scalars(select(Service.id).where(Service.id.in_(conditions.service_ids)))
        )
        for missing in sorted(conditions.service_ids - found):
            problems.append(f"conditions.service_ids: service {missing} does not exist")
    for number, step in enumerate(steps, 1):
        kinds = {a.type for a in step.actions}
        if kinds & {ActionType.notify, ActionType.assign} and not step.targets:
            problems.append(f"step {number}: notify and assign need at least one target")
    if problems:
        raise Unprocessable("; ".join(problems))


async def create_policy(
    session: AsyncSession, *, data: dict[str, Any], now: datetime, allow_private: bool
) -> EscalationPolicy:
    """`data`: the API's JSON shape of a policy (`PolicyCreate`, dumped)."""
    steps = steps_of(data["steps"])
    check_webhook_urls(steps, allow_private=allow_private)
    await check_policy(session, conditions=Conditions.of(data["conditions"]), steps=steps)
    policy = EscalationPolicy(**data, created_at=now, updated_at=now)
    session.add(policy)
    await session.flush()
    return policy


async def update_policy(
    session: AsyncSession,
    *,
    policy: EscalationPolicy,
    changes: dict[str, Any],
    now: datetime,
    allow_private: bool,
) -> EscalationPolicy:
    # Only what the request changes is checked: renaming or pausing a policy must work even
    # after one of its target users was deactivated.
    steps = steps_of(changes.get("steps", []))
    check_webhook_urls(steps, allow_private=allow_private)
    conditions = Conditions.of(changes.get("conditions", {}))
    await check_policy(session, conditions=conditions, steps=steps)
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.updated_at = now
    await session.flush()
    return policy


async def delete_policy(session: AsyncSession, *, policy: EscalationPolicy) -> EscalationPolicy:
    """Refuse while open incidents escalate by it or services default to it (409 naming them)."""
    # Incidents choosing a policy hold a key-share lock on it (see `runs.choose_policies`): the
    # delete waits for them, then sees them.
    await session.execute(
        select(EscalationPolicy.id).where(EscalationPolicy.id == policy.id).with_for_update()
    )
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


async def policies_targeting(
    session: AsyncSession, *, schedule_id: int | None = None, user_id: int | None = None
) -> list[EscalationPolicy]:
    """Policies with a step targeting the schedule (or the user)."""
    wanted: int | None
    if schedule_id is not None:
        kind, wanted = TargetType.schedule, schedule_id
    else:
        kind, wanted = TargetType.user, user_id
    return [
        policy
        for policy in await session.scalars(select(EscalationPolicy).order_by(EscalationPolicy.id))
        if any(t.type is kind and t.id == wanted for s in steps_of(policy.steps) for t in s.targets)
    ]


async def remove_user_from_policies(
    session: AsyncSession, *, user_id: int, now: datetime
) -> list[int]:
    """Take a user out of every policy's targets (a step left without targets pages nobody and
    says so when it fires); answers the policies changed."""
    changed = await policies_targeting(session, user_id=user_id)
    for policy in changed:
        policy.steps = [
            {**step, "targets": [t for t in step["targets"]
                                 if not (t["type"] == TargetType.user and t["id"] == user_id)]}
            for step in policy.steps
        ]  # fmt: skip
        policy.updated_at = now
    await session.flush()
    return [p.id for p in changed]
