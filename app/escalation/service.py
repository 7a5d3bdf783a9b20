"""Escalation policies, and the engine's writes: start, stop, fire a step, escalate now.

A run starts whenever an incident becomes `triggered` (created, reopened, unsnoozed,
unacknowledged). It copies the chosen policy into the incident (`escalation_snapshot`) so a later
edit of the policy does not change a run in flight, and schedules step 1 as an `escalation_events`
row. The worker fires due rows; firing a step writes its notifications and timeline entry and
schedules the next step, all in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import bulk, metrics
from app.core.db import WAKE_WORKER, is_lock_conflict
from app.core.errors import Conflict, Unprocessable
from app.core.logging import acting_for, current_request_id
from app.core.pagination import page_by_id
from app.escalation import engine
from app.escalation.models import EscalationEvent, EscalationPolicy, EventStatus
from app.incidents.models import Assignment, Incident, Status, TimelineEntry
from app.incidents.timeline import SYSTEM, Actor, entry_row
from app.notifications import preferences
from app.notifications import service as notification_service
from app.notifications.models import Notification
from app.notifications.preferences import Person, Preference
from app.schedules import service as schedule_service
from app.schedules.models import Schedule
from app.services.models import Service
from app.users import service as user_service

logger = logging.getLogger(__name__)


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
    for missing in await user_service.not_active(session, user_ids):
        problems.append(f"target user {missing} does not exist or is inactive")
    schedule_ids = {t["id"] for s in steps for t in s["targets"] if t["type"] == "schedule"}
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
        raise Unprocessable("; ".join(problems))


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
    # Only what the request changes is checked: renaming or pausing a policy must work even
    # after one of its target users was deactivated.
    await check_policy(
        session, conditions=changes.get("conditions", {}), steps=changes.get("steps", [])
    )
    for name, value in changes.items():
        setattr(policy, name, value)
    policy.updated_at = now
    await session.flush()
    return policy


async def delete_policy(session: AsyncSession, *, policy: EscalationPolicy) -> EscalationPolicy:
    """Refuse while open incidents escalate by it or services default to it (409 naming them)."""
    # Incidents choosing a policy hold a key-share lock on it (see `prepare`): the delete waits
    # for them, then sees them.
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
    kind, wanted = ("schedule", schedule_id) if schedule_id is not None else ("user", user_id)
    return [
        policy
        for policy in await session.scalars(select(EscalationPolicy).order_by(EscalationPolicy.id))
        if any(t["type"] == kind and t["id"] == wanted for s in policy.steps for t in s["targets"])
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
                                 if not (t["type"] == "user" and t["id"] == user_id)]}
            for step in policy.steps
        ]  # fmt: skip
        policy.updated_at = now
    await session.flush()
    return [p.id for p in changed]


# ---- the engine ----------------------------------------------------------------------------------


async def start(session: AsyncSession, *, incident: Incident, now: datetime) -> None:
    """Choose the policy for an incident that became `triggered`, and schedule its first step."""
    reason = await prepare(session, incident=incident)
    begin(session, incident=incident, reason=reason, now=now)


async def prepare(session: AsyncSession, *, incident: Incident) -> str:
    """Choose the policy and set the incident's escalation fields (no id needed); say why."""
    [(chosen, reason)] = await choose_policies(session, [incident])
    fields = escalation_fields(chosen, run=(incident.escalation_run or 0) + 1)
    for name, value in fields.items():
        setattr(incident, name, value)
    return reason


NO_POLICY = (
    "no active policy matches and the service has no active default policy: "
    "this incident will not escalate"
)


async def choose_policies(
    session: AsyncSession, incidents: Sequence[engine.IncidentLike]
) -> list[tuple[EscalationPolicy | None, str]]:
    """Each incident's policy and why: the first active one whose conditions match, else its
    service's default (if active). Two queries for any number of incidents."""
    policies = list(
        await session.scalars(
            select(EscalationPolicy)
            .where(EscalationPolicy.is_active.is_(True))
            .order_by(EscalationPolicy.priority, EscalationPolicy.id)
            .with_for_update(read=True, key_share=True)
        )
    )
    matched = [engine.choose(policies, incident) for incident in incidents]
    unmatched = {
        i.service_id for i, p in zip(incidents, matched, strict=True) if p is None and i.service_id
    }
    defaults: dict[int, int | None] = {}
    if unmatched:
        rows = await session.execute(
            select(Service.id, Service.escalation_policy_id).where(Service.id.in_(unmatched))
        )
        defaults = {row.id: row.escalation_policy_id for row in rows}
    by_id = {policy.id: policy for policy in policies}
    chosen: list[tuple[EscalationPolicy | None, str]] = []
    for incident, policy in zip(incidents, matched, strict=True):
        if isinstance(policy, EscalationPolicy):
            chosen.append((policy, "conditions matched"))
            continue
        default = by_id.get(defaults.get(incident.service_id or 0) or 0)
        chosen.append((default, "the service's default policy") if default else (None, NO_POLICY))
    return chosen


def escalation_fields(policy: EscalationPolicy | None, *, run: int) -> dict[str, Any]:
    """An incident's escalation columns at the start of run `run` under `policy`."""
    if policy is None:
        return {"escalation_run": run, "escalation_level": 0, "escalation_policy_id": None,
                "escalation_snapshot": None, "escalation_status": "none"}  # fmt: skip
    snapshot = {
        "policy_id": policy.id,
        "name": policy.name,
        "repeat_count": policy.repeat_count,
        "repeat_delay_minutes": policy.repeat_delay_minutes,
        "steps": policy.steps,
    }
    return {"escalation_run": run, "escalation_level": 0, "escalation_policy_id": policy.id,
            "escalation_snapshot": snapshot, "escalation_status": "active"}  # fmt: skip


def begin(session: AsyncSession, *, incident: Incident, reason: str, now: datetime) -> None:
    """Record the choice and schedule step 1 (the incident must have its id)."""
    entry, step = begin_rows(incident=incident, reason=reason, now=now)
    session.add(TimelineEntry(**entry))
    if step is not None:
        session.add(EscalationEvent(**step))
        # The in-process worker is woken after the commit, so a step due now fires at once.
        session.info[WAKE_WORKER] = True


def begin_rows(
    *, incident: Any, reason: str, now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The `policy_applied` timeline row and the row scheduling step 1 (None: no policy) of an
    incident that has its id and escalation fields; for `begin` and for writers of many."""
    snapshot = incident.escalation_snapshot
    entry = entry_row(
        incident_id=incident.id, type="policy_applied", actor=SYSTEM, now=now,
        data={"policy_id": snapshot["policy_id"] if snapshot else None,
              "name": snapshot["name"] if snapshot else None,
              "reason": reason, "run": incident.escalation_run},
    )  # fmt: skip
    if snapshot is None:
        return entry, None
    step = _event_row(
        incident_id=incident.id, run=incident.escalation_run, snapshot=snapshot,
        step=1, cycle=1, after=now, now=now,
    )  # fmt: skip
    return entry, step


def _event_row(
    *,
    incident_id: int,
    run: int,
    snapshot: dict[str, Any],
    step: int,
    cycle: int,
    after: datetime,
    now: datetime,
    delay: timedelta | None = None,
) -> dict[str, Any]:
    """A scheduled step, with what it will do copied from the run's snapshot.

    Due `delay` after `after`: by default the step's own delay.
    """
    definition = snapshot["steps"][step - 1]
    delay = engine.step_delay(snapshot, step) if delay is None else delay
    return {
        "incident_id": incident_id,
        "policy_id": snapshot["policy_id"],
        "run": run,
        "cycle": cycle,
        "step": step,
        "status": EventStatus.scheduled.value,
        "due_at": after + delay,
        "executed_at": None,
        "delay_minutes": delay.total_seconds() / 60,
        "targets": definition["targets"],
        "actions": definition["actions"],
        "notified_user_ids": [],
        "detail": "",
        "request_id": current_request_id(),
        "created_at": now,
    }


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


@dataclass(frozen=True)
class Audience:
    """What firing a batch needs to know about people and places: read once per batch."""

    people: Mapping[int, tuple[Person, list[Preference]]]  # the active users among the targets
    hooks: Sequence[notification_service.Subscription]
    services: Mapping[int, str]
    # Schedule id -> whoever is on call now (None: the schedule cannot be computed).
    on_call: Mapping[int, list[int] | None] = field(default_factory=dict)


@dataclass
class Plan:
    """Every write that firing (or failing) one step makes; applied for a whole batch at once."""

    incident_id: int
    event: dict[str, Any]
    incident: dict[str, Any] | None = None
    due_at: datetime | None = None
    request_id: str | None = None  # of the request that started the run (or fires it by hand)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    next_event: dict[str, Any] | None = None


EVENTS = cast(Table, EscalationEvent.__table__)
INCIDENTS = cast(Table, Incident.__table__)
# What firing reads of a step (not what it wrote last time: less JSON to decode).
EVENT_COLUMNS = [
    getattr(EVENTS.c, name)
    for name in ("id", "incident_id", "policy_id", "run", "cycle", "step", "due_at", "targets",
                 "actions", "request_id")
]  # fmt: skip
# What firing reads of an incident (not its description or custom fields: less to decode).
INCIDENT_COLUMNS = [
    getattr(Incident.__table__.c, name)
    for name in ("id", "title", "status", "severity", "service_id", "labels", "escalation_level",
                 "escalation_run", "escalation_snapshot", "version")
]  # fmt: skip


async def fire_due(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Fire due steps (a worker job). Returns how many due rows it claimed.

    Locks are only ever taken with SKIP LOCKED here, so the worker never waits on an API
    transaction (which locks the incident, then its events) and the two cannot deadlock: an
    incident being changed right now is simply left for the next pass. A batch is planned in
    Python and written with one statement per table; if writing it fails, each step is written
    in its own savepoint so that only the broken one fails.
    """
    events = await _rows(
        session,
        select(*EVENT_COLUMNS)
        .where(EVENTS.c.status == EventStatus.scheduled.value, EVENTS.c.due_at <= now)
        .order_by(EVENTS.c.due_at, EVENTS.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True),
    )
    if not events:
        return 0
    incidents = {
        row["id"]: row
        for row in await _rows(
            session,
            select(*INCIDENT_COLUMNS)
            .where(Incident.__table__.c.id.in_({e["incident_id"] for e in events}))
            .with_for_update(skip_locked=True, key_share=True),
        )
    }
    ready = [e for e in events if e["incident_id"] in incidents]
    plans = await _plans(session, ready, incidents, now=now, actor=SYSTEM)
    try:
        async with session.begin_nested():
            await _apply(session, list(plans.values()))
        _count(session, list(plans.values()), now=now)
    except Exception as exc:
        if is_lock_conflict(exc):
            raise  # a request holds a row we need: give way, the whole batch retries next pass
        logger.warning("writing a batch of %d steps failed; writing them one by one", len(plans))
        for event in ready:
            plan = plans[event["id"]]
            try:
                async with session.begin_nested():
                    await _apply(session, [plan])
                _count(session, [plan], now=now)
            except Exception as exc:
                if is_lock_conflict(exc):
                    raise
                logger.exception(
                    "escalation step failed: incident %s step %s cycle %s",
                    event["incident_id"], event["step"], event["cycle"],
                    extra={"incident_id": event["incident_id"], "event_id": event["id"],
                           "request_id": plan.request_id},
                )  # fmt: skip
                with acting_for(plan.request_id):
                    failed = _failure_plan(
                        event, incidents[event["incident_id"]], now=now, error=exc
                    )
                failed.due_at, failed.request_id = plan.due_at, plan.request_id
                try:
                    async with session.begin_nested():
                        await _apply(session, [failed])
                    _count(session, [failed], now=now)
                except Exception:
                    # Left scheduled: it is tried again next pass, and the error logged again.
                    logger.exception("could not record the failure of event %s", event["id"])
    return len(events)


async def fire(
    session: AsyncSession, *, event_id: int, now: datetime, actor: Actor = SYSTEM
) -> None:
    """Fire one scheduled step now (escalate by hand); waits for the incident's lock if need be."""
    [event] = await _rows(
        session, select(*EVENT_COLUMNS).where(EVENTS.c.id == event_id).with_for_update()
    )
    [incident] = await _rows(
        session,
        select(*INCIDENT_COLUMNS)
        .where(Incident.__table__.c.id == event["incident_id"])
        .with_for_update(),
    )
    plans = await _plans(session, [event], {incident["id"]: incident}, now=now, actor=actor)
    await _apply(session, list(plans.values()))
    _count(session, list(plans.values()), now=now)


def _count(session: AsyncSession, plans: Sequence[Plan], *, now: datetime) -> None:
    """The steps these plans wrote, for the metrics (counted if the transaction commits)."""
    metrics.count_fired(
        session, [(p.event["status"], p.due_at) for p in plans if p.due_at is not None], now
    )


async def _rows(session: AsyncSession, query: Select[Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in (await session.execute(query)).mappings()]


async def _plans(
    session: AsyncSession,
    events: Sequence[Mapping[str, Any]],
    incidents: Mapping[int, Mapping[str, Any]],
    *,
    now: datetime,
    actor: Actor,
) -> dict[int, Plan]:
    on_call = await schedule_service.on_call_by_id(
        session, [t["id"] for e in events for t in e["targets"] if t["type"] == "schedule"], now
    )
    targets = [t["id"] for e in events for t in e["targets"] if t["type"] == "user"]
    targets += [uid for users in on_call.values() for uid in users or []]
    audience = Audience(
        on_call=on_call,
        people=await preferences.for_users(session, targets),
        hooks=await notification_service.subscriptions(session),
        services=await notification_service.service_names(
            session, [i["service_id"] for i in incidents.values()]
        ),
    )
    assigning = {
        e["incident_id"] for e in events if any(a["type"] == "assign" for a in e["actions"])
    }
    assigned: dict[int, set[int]] = {incident_id: set() for incident_id in assigning}
    if assigning:
        rows = await session.execute(
            select(Assignment.incident_id, Assignment.user_id).where(
                Assignment.incident_id.in_(assigning)
            )
        )
        for incident_id, user_id in rows:
            assigned[incident_id].add(user_id)
    plans: dict[int, Plan] = {}
    for event in events:
        incident = incidents[event["incident_id"]]
        # What the step writes (and logs) carries the id of the request that started the run,
        # or of the request firing it by hand.
        request_id = current_request_id() or event["request_id"]
        with acting_for(request_id):
            try:
                plan = _plan(
                    event, incident, audience=audience,
                    assigned=assigned.get(incident["id"], set()), now=now, actor=actor,
                )  # fmt: skip
            except Exception as exc:
                logger.exception(
                    "escalation step failed: incident %s step %s cycle %s",
                    event["incident_id"], event["step"], event["cycle"],
                    extra={"incident_id": event["incident_id"], "event_id": event["id"]},
                )  # fmt: skip
                plan = _failure_plan(event, incident, now=now, error=exc)
        plan.due_at, plan.request_id = event["due_at"], request_id
        plans[event["id"]] = plan
    return plans


def _plan(
    event: Mapping[str, Any],
    incident: Mapping[str, Any],
    *,
    audience: Audience,
    assigned: set[int],
    now: datetime,
    actor: Actor,
) -> Plan:
    """What firing this step writes. Pure: no database access."""
    active = audience.people
    if incident["status"] != Status.triggered.value or event["run"] != incident["escalation_run"]:
        # A stop that raced this claim already decided; keep the record consistent.
        detail = f"incident is {incident['status']}"
        cancelled = _event_update(event, EventStatus.cancelled, now=None, detail=detail)
        return Plan(incident_id=incident["id"], event=cancelled)
    incident_id = incident["id"]
    plan = Plan(incident_id=incident_id, event={})
    late = (now - event["due_at"]).total_seconds()
    # Each target in order: a user, or whoever its schedule names now.
    wanted = [uid for t in event["targets"] for uid in _target_users(t, audience)]
    nobody = [f"schedule {t['id']}: nobody on call" for t in event["targets"]
              if t["type"] == "schedule" and not audience.on_call.get(t["id"])]  # fmt: skip
    # Every target a schedule with nobody on call: nobody to page or to wait for.
    skipped = bool(nobody) and len(nobody) == len(event["targets"])
    user_ids = list(dict.fromkeys(uid for uid in wanted if uid in active))
    kinds = [a["type"] for a in event["actions"]]
    severity = incident["severity"]
    for action in event["actions"]:
        if action["type"] == "set_severity" and action["severity"] != severity:
            plan.timeline.append(
                entry_row(
                    incident_id=incident_id, type="updated", actor=SYSTEM, now=now,
                    data={"changes": {"severity": {"before": severity,
                                                   "after": action["severity"]}}},
                )
            )  # fmt: skip
            severity = action["severity"]
    summary = notification_service.incident_summary(
        {**incident, "severity": severity, "escalation_level": event["step"]},
        audience.services.get(incident["service_id"]),
    )
    position = {"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"]}
    pages, notified = notification_service.rows_for(
        cause=f"escalation:{event['id']}", event="escalated", incident=summary,
        people=audience.people, user_ids=user_ids if "notify" in kinds else [],
        subscriptions=[] if skipped else audience.hooks, actor=None, data=position, now=now,
        escalation_event_id=event["id"], extra={"step": event["step"], "cycle": event["cycle"]},
    )  # fmt: skip
    plan.notifications += pages
    plan.notifications += [
        notification_service.action_webhook_row(
            incident=summary, event=event, url=action["url"], index=index, now=now
        )
        for index, action in enumerate(event["actions"])
        if action["type"] == "webhook"
    ]
    newly_assigned = [uid for uid in user_ids if uid not in assigned] if "assign" in kinds else []
    if newly_assigned:
        plan.assignments = [
            {"incident_id": incident_id, "user_id": uid, "role": "responder",
             "assigned_at": now, "assigned_by": None}
            for uid in newly_assigned
        ]  # fmt: skip
        plan.timeline.append(
            entry_row(
                incident_id=incident_id, type="assigned", actor=SYSTEM, now=now,
                data={"added": [{"user_id": uid, "role": "responder"} for uid in newly_assigned],
                      "removed": [], "changed": []},
            )
        )  # fmt: skip
    inactive = list(dict.fromkeys(uid for uid in wanted if uid not in active))
    silent = [uid for uid in user_ids if uid not in notified] if "notify" in kinds else []
    detail = "; ".join(
        [f"fired {late:.3f} s after due"]
        + [f"skipped user {uid}: inactive or deleted" for uid in inactive]
        + [f"user {uid} has no channel enabled for {severity} escalations" for uid in silent]
        + nobody
    )
    if skipped:
        return _skipped(
            plan, event, incident, severity=severity, reason="; ".join(nobody), late=late, now=now
        )
    if {"notify", "assign"} & set(kinds) and not (notified if "notify" in kinds else user_ids):
        # Nobody could be reached by this step: say so where the responders look.
        plan.timeline.append(
            entry_row(
                incident_id=incident_id, type="escalation_failed", actor=SYSTEM, now=now,
                data={"step": event["step"], "cycle": event["cycle"],
                      "error": "nobody reachable: " + detail},
            )
        )  # fmt: skip
    plan.event = _event_update(event, EventStatus.executed, now=now, detail=detail)
    plan.event["notified_user_ids"] = notified
    plan.timeline.append(
        entry_row(
            incident_id=incident_id, type="escalated", actor=actor, now=now,
            data={"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"],
                  "notified_user_ids": notified, "actions": kinds, "late_seconds": round(late, 3)},
        )
    )  # fmt: skip
    # After an outage the next step waits its full delay from now, not from the missed due time:
    # the ladder is not replayed all at once.
    plan.next_event = _next_event(event, incident, after=max(event["due_at"], now), now=now)
    plan.incident = _incident_update(
        incident, now=now, escalation_level=event["step"], severity=severity,
        escalation_status="active" if plan.next_event else "completed",
    )  # fmt: skip
    return plan


def _target_users(target: Mapping[str, Any], audience: Audience) -> list[int]:
    if target["type"] == "user":
        return [target["id"]]
    named = audience.on_call.get(target["id"], [])
    if named is None:
        raise RuntimeError(f"schedule {target['id']} cannot be computed (see the logs)")
    return named


def _skipped(
    plan: Plan, event: Mapping[str, Any], incident: Mapping[str, Any], *, severity: str,
    reason: str, late: float, now: datetime,
) -> Plan:  # fmt: skip
    """Finish the plan of a step whose every target is a schedule with nobody on call: its other
    actions (severity, webhooks) done, the step recorded `skipped`, said on the timeline, and the
    next step due at once (no one was paged to wait for)."""
    plan.event = _event_update(
        event, EventStatus.skipped, now=now, detail=f"{reason} ({late:.3f} s after due)"
    )
    plan.timeline.append(
        entry_row(
            incident_id=incident["id"], type="escalation_skipped", actor=SYSTEM, now=now,
            data={"policy_id": event["policy_id"], "step": event["step"], "cycle": event["cycle"],
                  "reason": reason},
        )
    )  # fmt: skip
    plan.next_event = _next_event(event, incident, after=now, now=now, at_once=True)
    plan.incident = _incident_update(
        incident, now=now, escalation_level=incident["escalation_level"], severity=severity,
        escalation_status="active" if plan.next_event else "completed",
    )  # fmt: skip
    return plan


def _failure_plan(
    event: Mapping[str, Any], incident: Mapping[str, Any], *, now: datetime, error: Exception
) -> Plan:
    """Record a step that raised, and go on to the next one: a page is never silently dropped."""
    detail = f"{type(error).__name__}: {str(error)[:500]}"
    plan = Plan(
        incident_id=incident["id"],
        event=_event_update(event, EventStatus.failed, now=now, detail=detail),
    )
    plan.timeline.append(
        entry_row(
            incident_id=incident["id"], type="escalation_failed", actor=SYSTEM, now=now,
            data={"step": event["step"], "cycle": event["cycle"], "error": detail},
        )
    )  # fmt: skip
    if incident["status"] != Status.triggered.value or event["run"] != incident["escalation_run"]:
        return plan
    try:
        plan.next_event = _next_event(event, incident, after=now, now=now)
    except Exception:
        logger.exception("escalation of incident %s cannot go on", incident["id"])
    status = "active" if plan.next_event else "failed"
    plan.incident = _incident_update(
        incident, now=now, escalation_level=incident["escalation_level"],
        severity=incident["severity"], escalation_status=status,
    )  # fmt: skip
    return plan


def _event_update(
    event: Mapping[str, Any], status: EventStatus, *, now: datetime | None, detail: str
) -> dict[str, Any]:
    return {
        "id": event["id"],
        "status": status.value,
        "executed_at": now,
        "notified_user_ids": [],
        "detail": detail,
    }


def _incident_update(
    incident: Mapping[str, Any],
    *,
    now: datetime,
    escalation_level: int,
    severity: str,
    escalation_status: str,
) -> dict[str, Any]:
    # Same keys for every incident, so a batch is one executemany.
    return {
        "id": incident["id"],
        "escalation_level": escalation_level,
        "severity": severity,
        "escalation_status": escalation_status,
        "updated_at": now,
        "version": incident["version"] + 1,
    }


def _next_event(
    event: Mapping[str, Any], incident: Mapping[str, Any], *, after: datetime, now: datetime,
    at_once: bool = False,
) -> dict[str, Any] | None:  # fmt: skip
    """The row scheduling the step after `event`: due its delay after `after` (`at_once`: the
    next step of the same cycle is due at `after`; a repeat still waits its delay)."""
    snapshot = incident["escalation_snapshot"]
    position = engine.next_position(
        event["step"], event["cycle"], steps=len(snapshot["steps"]),
        repeat_count=snapshot["repeat_count"],
    )  # fmt: skip
    if position is None:
        return None
    step, cycle = position
    # A repeat waits `repeat_delay_minutes` after the last step, so its people get time to answer.
    delay = engine.repeat_delay(snapshot) if cycle != event["cycle"] else None
    if at_once and cycle == event["cycle"]:
        delay = timedelta(0)
    return _event_row(
        incident_id=incident["id"], run=incident["escalation_run"], snapshot=snapshot,
        step=step, cycle=cycle, after=after, now=now, delay=delay,
    )  # fmt: skip


async def _apply(session: AsyncSession, plans: Sequence[Plan]) -> None:
    """Write the plans: one Core executemany per table (no ORM unit of work: it is the hot path)."""
    await bulk.update_rows(session, EVENTS, [p.event for p in plans])
    await bulk.update_rows(session, INCIDENTS, [p.incident for p in plans if p.incident])
    for model, rows in (
        (Notification, [n for p in plans for n in p.notifications]),
        (Assignment, [a for p in plans for a in p.assignments]),
        (TimelineEntry, [t for p in plans for t in p.timeline]),
        (EscalationEvent, [p.next_event for p in plans if p.next_event]),
    ):
        await bulk.insert_rows(session, cast(Table, model.__table__), rows)
    if any(p.next_event for p in plans):
        session.info[WAKE_WORKER] = True
    if logger.isEnabledFor(logging.INFO):
        for plan in plans:
            logger.info(
                "escalation step %s: incident %s event %s paged %s (%s)",
                plan.event["status"], plan.incident_id,
                plan.event["id"], plan.event["notified_user_ids"], plan.event["detail"],
                extra={"incident_id": plan.incident_id, "event_id": plan.event["id"],
                       "step_status": plan.event["status"], "request_id": plan.request_id,
                       "notified_user_ids": plan.event["notified_user_ids"]},
            )  # fmt: skip


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
    # The rows changed underneath the ORM objects of this session.
    session.expire_all()


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
