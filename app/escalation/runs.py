"""Escalation runs: start one when an incident becomes `triggered`, stop it when it leaves.

A run starts whenever an incident becomes `triggered` (created, reopened, unsnoozed,
unacknowledged). It copies the chosen policy into the incident (`escalation_snapshot`) so a later
edit of the policy does not change a run in flight, and schedules step 1 as an `escalation_events`
row. The worker fires due rows (`app.escalation.firing`); a run that stops has its scheduled rows
cancelled. Never a commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, false, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import WAKE_WORKER
from app.core.logging import current_request_id
from app.core.pagination import page_by_id
from app.escalation import engine
from app.escalation.enums import EscalationStatus, EventStatus
from app.escalation.models import EscalationEvent, EscalationPolicy
from app.escalation.policy import Conditions, IncidentLike, Snapshot
from app.incidents import timeline
from app.incidents.models import Incident
from app.services.models import Service

Row = dict[str, Any]
EventLike = Row  # an escalation_events row as the worker reads it (see firing.EVENT_COLUMNS)
RunLike = Row  # an incidents row as the worker reads it (see firing.INCIDENT_COLUMNS)

NO_POLICY = (
    "no active policy matches and the service has no active default policy: "
    "this incident will not escalate"
)


class Escalating(Protocol):
    """An incident with its id and escalation fields set (an ORM object, or a row's namespace)."""

    id: int
    escalation_run: int
    escalation_snapshot: dict[str, Any] | None


async def start(session: AsyncSession, *, incident: Incident, now: datetime) -> None:
    """Choose the policy for an incident that became `triggered`, and schedule its first step."""
    reason = await prepare(session, incident=incident)
    entry, step = begin_rows(incident=incident, reason=reason, now=now)
    timeline.record(session, entry)
    if step is not None:
        session.add(EscalationEvent(**step))
        # The in-process worker is woken after the commit, so a step due now fires at once.
        session.info[WAKE_WORKER] = True


async def prepare(session: AsyncSession, *, incident: Incident) -> str:
    """Choose the policy and set the incident's escalation fields (no id needed); say why."""
    [(chosen, reason)] = await choose_policies(session, [incident])
    fields = escalation_fields(chosen, run=(incident.escalation_run or 0) + 1)
    for name, value in fields.items():
        setattr(incident, name, value)
    return reason


async def choose_policies(
    session: AsyncSession, incidents: Sequence[IncidentLike]
) -> list[tuple[EscalationPolicy | None, str]]:
    """Each incident's policy and why: the first active one whose conditions match, else its
    service's default (if active). One statement for any number of incidents: the active
    policies (key-share locked, so that none is deleted under the run that starts on it), each
    with the incidents' services that have it as their default."""
    services = {i.service_id for i in incidents if i.service_id}
    # Service ids joined to each policy that is their default: one row per (policy, service),
    # one row with None for a policy that is nobody's default here.
    defaults_join = and_(
        Service.escalation_policy_id == EscalationPolicy.id, Service.id.in_(services)
    )
    rows = await session.execute(
        select(EscalationPolicy, Service.id)
        .outerjoin(Service, defaults_join if services else false())
        .where(EscalationPolicy.is_active.is_(True))
        .order_by(EscalationPolicy.priority, EscalationPolicy.id)
        .with_for_update(read=True, key_share=True, of=EscalationPolicy)
    )
    policies: list[EscalationPolicy] = []
    default_of: dict[int, EscalationPolicy] = {}  # by service id
    for policy, service_id in rows:
        if not policies or policies[-1] is not policy:
            policies.append(policy)
        if service_id is not None:
            default_of[service_id] = policy
    conditions = [(policy, Conditions.of(policy.conditions)) for policy in policies]
    chosen: list[tuple[EscalationPolicy | None, str]] = []
    for incident in incidents:
        matched = engine.choose(conditions, incident)
        if matched is not None:
            chosen.append((matched, "conditions matched"))
            continue
        default = default_of.get(incident.service_id or 0)
        chosen.append((default, "the service's default policy") if default else (None, NO_POLICY))
    return chosen


def escalation_fields(policy: EscalationPolicy | None, *, run: int) -> dict[str, Any]:
    """An incident's escalation columns at the start of run `run` under `policy`."""
    if policy is None:
        return {"escalation_run": run, "escalation_level": 0, "escalation_policy_id": None,
                "escalation_snapshot": None,
                "escalation_status": EscalationStatus.none.value}  # fmt: skip
    # The policy's own JSON, so that the run reads exactly what was saved (see Snapshot).
    snapshot = {
        "policy_id": policy.id,
        "name": policy.name,
        "repeat_count": policy.repeat_count,
        "repeat_delay_minutes": policy.repeat_delay_minutes,
        "steps": policy.steps,
    }
    return {"escalation_run": run, "escalation_level": 0, "escalation_policy_id": policy.id,
            "escalation_snapshot": snapshot,
            "escalation_status": EscalationStatus.active.value}  # fmt: skip


def begin_rows(*, incident: Escalating, reason: str, now: datetime) -> tuple[Row, Row | None]:
    """The `policy_applied` timeline row and the row scheduling step 1 (None: no policy) of an
    incident that has its id and escalation fields; for `start` and for writers of many."""
    stored = incident.escalation_snapshot
    snapshot = Snapshot.of(stored) if stored else None
    entry = timeline.policy_applied(
        incident.id, now=now, policy_id=snapshot.policy_id if snapshot else None,
        name=snapshot.name if snapshot else None, reason=reason, run=incident.escalation_run,
    )  # fmt: skip
    if snapshot is None:
        return entry, None
    step = event_row(
        incident_id=incident.id, run=incident.escalation_run, snapshot=snapshot,
        step=1, cycle=1, after=now, now=now,
    )  # fmt: skip
    return entry, step


def event_row(
    *,
    incident_id: int,
    run: int,
    snapshot: Snapshot,
    step: int,
    cycle: int,
    after: datetime,
    now: datetime,
    delay: timedelta | None = None,
) -> Row:
    """A scheduled step, with what it will do copied from the run's snapshot (its targets and
    actions as stored: the worker reads them back as `Target`s and `Action`s).

    Due `delay` after `after`: by default the step's own delay.
    """
    stored = snapshot.stored_step(step)
    delay = snapshot.delay_of(step) if delay is None else delay
    return {
        "incident_id": incident_id,
        "policy_id": snapshot.policy_id,
        "run": run,
        "cycle": cycle,
        "step": step,
        "status": EventStatus.scheduled.value,
        "due_at": after + delay,
        "executed_at": None,
        "delay_minutes": delay.total_seconds() / 60,
        "targets": stored["targets"],
        "actions": stored["actions"],
        "notified_user_ids": [],
        "detail": "",
        "request_id": current_request_id(),
        "created_at": now,
    }


def next_event_row(
    event: EventLike, incident: RunLike, *, after: datetime, now: datetime, at_once: bool = False
) -> Row | None:
    """The row scheduling the step after `event`: due its delay after `after` (`at_once`: the
    next step of the same cycle is due at `after`; a repeat still waits its delay)."""
    snapshot = Snapshot.of(incident["escalation_snapshot"])
    position = engine.next_position(
        event["step"], event["cycle"], steps=snapshot.step_count,
        repeat_count=snapshot.repeat_count,
    )  # fmt: skip
    if position is None:
        return None
    step, cycle = position
    # A repeat waits `repeat_delay_minutes` after the last step, so its people get time to answer.
    delay = snapshot.repeat_delay if cycle != event["cycle"] else None
    if at_once and cycle == event["cycle"]:
        delay = timedelta(0)
    return event_row(
        incident_id=incident["id"], run=incident["escalation_run"], snapshot=snapshot,
        step=step, cycle=cycle, after=after, now=now, delay=delay,
    )  # fmt: skip


async def stop(session: AsyncSession, *, incident: Incident, reason: str) -> None:
    """Cancel the scheduled steps of an incident leaving `triggered`."""
    await session.execute(
        update(EscalationEvent)
        .where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == EventStatus.scheduled.value,
        )
        .values(status=EventStatus.cancelled.value, detail=reason)
    )
    if incident.escalation_status == EscalationStatus.active:
        incident.escalation_status = EscalationStatus.stopped.value


async def scheduled_step(session: AsyncSession, *, incident: Incident) -> EscalationEvent | None:
    """The incident's next scheduled step (locked), if any."""
    event: EscalationEvent | None = await session.scalar(
        select(EscalationEvent)
        .where(
            EscalationEvent.incident_id == incident.id,
            EscalationEvent.status == EventStatus.scheduled.value,
        )
        .with_for_update()
    )
    return event


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
