"""Firing escalation steps: claim the due rows, decide what each step does, write it all at once.

The worker fires due rows through the paging flow (`app.flows.paging`), which reads who can be
paged (`Audience`: active people, who is on call, how to write their notifications) for a whole
batch and hands it here. Deciding is pure (`plan`); writing is one statement per table for a
batch, and if that fails, each step in a savepoint of its own so that only the broken one fails.
Never a commit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Select, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import bulk, metrics
from app.core.actors import SYSTEM, Actor
from app.core.db import WAKE_WORKER, is_lock_conflict
from app.core.logging import acting_for, current_request_id
from app.escalation.enums import ActionType, EscalationStatus, EventStatus, TargetType
from app.escalation.models import EscalationEvent
from app.escalation.policy import Action, Target, actions_of, targets_of
from app.escalation.runs import EventLike, Row, RunLike, next_event_row
from app.incidents import timeline
from app.incidents.models import Assignment, Incident, Status, TimelineEntry
from app.notifications.models import Notification

logger = logging.getLogger(__name__)

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
    getattr(INCIDENTS.c, name)
    for name in ("id", "title", "status", "severity", "service_id", "labels", "escalation_level",
                 "escalation_run", "escalation_snapshot", "version")
]  # fmt: skip


class PageWriter(Protocol):
    """Writes the notifications of one step (pages to people, subscriptions, webhook actions)."""

    def __call__(
        self, *, event: EventLike, incident: RunLike, severity: str, user_ids: list[int],
        to_subscriptions: bool, now: datetime,
    ) -> tuple[list[Row], list[int]]:  # fmt: skip
        """The notification rows, and the users reached (those with at least one row)."""
        ...


@dataclass(frozen=True)
class Audience:
    """What firing a batch needs to know about people: read once per batch."""

    active: Set[int]  # the active users among the targets
    # Schedule id -> whoever is on call now (None: the schedule cannot be computed).
    on_call: Mapping[int, list[int] | None]
    page: PageWriter


@dataclass
class Plan:
    """Every write that firing (or failing) one step makes; applied for a whole batch at once."""

    incident_id: int
    event: Row
    incident: Row | None = None
    due_at: datetime | None = None
    request_id: str | None = None  # of the request that started the run (or fires it by hand)
    notifications: list[Row] = field(default_factory=list)
    timeline: list[Row] = field(default_factory=list)
    assignments: list[Row] = field(default_factory=list)
    next_event: Row | None = None


@dataclass(frozen=True, slots=True)
class StepWork:
    """What a claimed step does, read once from its row."""

    targets: tuple[Target, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Claimed:
    """Due steps claimed by this transaction, with their incidents (locked)."""

    events: list[EventLike]  # those whose incident could be locked too
    incidents: dict[int, RunLike]
    count: int  # every row claimed
    work: dict[int, StepWork] = field(default_factory=dict)  # by event id

    def __post_init__(self) -> None:
        for event in self.events:
            self.work[event["id"]] = StepWork(
                targets_of(event["targets"]), actions_of(event["actions"])
            )

    def targets(self) -> list[Target]:
        return [t for e in self.events for t in self.work[e["id"]].targets]


async def _rows(session: AsyncSession, query: Select[Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in (await session.execute(query)).mappings()]


async def claim_due(session: AsyncSession, *, now: datetime, batch: int) -> Claimed:
    """Claim up to `batch` due steps.

    Locks are only ever taken with SKIP LOCKED here, so the worker never waits on an API
    transaction (which locks the incident, then its events) and the two cannot deadlock: an
    incident being changed right now is simply left for the next pass.
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
        return Claimed([], {}, 0)
    incidents = {
        row["id"]: row
        for row in await _rows(
            session,
            select(*INCIDENT_COLUMNS)
            .where(INCIDENTS.c.id.in_({e["incident_id"] for e in events}))
            .with_for_update(skip_locked=True, key_share=True),
        )
    }
    ready = [e for e in events if e["incident_id"] in incidents]
    return Claimed(ready, incidents, len(events))


async def claim_one(session: AsyncSession, *, event_id: int) -> Claimed:
    """Claim one scheduled step to fire it now (escalate by hand): waits for its locks."""
    [event] = await _rows(
        session, select(*EVENT_COLUMNS).where(EVENTS.c.id == event_id).with_for_update()
    )
    [incident] = await _rows(
        session,
        select(*INCIDENT_COLUMNS).where(INCIDENTS.c.id == event["incident_id"]).with_for_update(),
    )
    return Claimed([event], {incident["id"]: incident}, 1)


async def assigned(session: AsyncSession, claimed: Claimed) -> dict[int, set[int]]:
    """The current assignees of the incidents whose step assigns."""
    assigning = {
        e["incident_id"]
        for e in claimed.events
        if any(a.type is ActionType.assign for a in claimed.work[e["id"]].actions)
    }
    found: dict[int, set[int]] = {incident_id: set() for incident_id in assigning}
    if assigning:
        rows = await session.execute(
            select(Assignment.incident_id, Assignment.user_id).where(
                Assignment.incident_id.in_(assigning)
            )
        )
        for incident_id, user_id in rows:
            found[incident_id].add(user_id)
    return found


def plan_all(
    claimed: Claimed,
    *,
    audience: Audience,
    assignees: Mapping[int, set[int]],
    now: datetime,
    actor: Actor,
) -> dict[int, Plan]:
    """What firing each claimed step writes, by event id; a step that raises is planned as a
    failure (logged), so one broken step does not stop the batch."""
    plans: dict[int, Plan] = {}
    for event in claimed.events:
        incident = claimed.incidents[event["incident_id"]]
        # What the step writes (and logs) carries the id of the request that started the run,
        # or of the request firing it by hand.
        request_id = current_request_id() or event["request_id"]
        with acting_for(request_id):
            try:
                plan = _plan(
                    event, claimed.work[event["id"]], incident, audience=audience,
                    assigned=assignees.get(incident["id"], set()), now=now, actor=actor,
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
    event: EventLike,
    work: StepWork,
    incident: RunLike,
    *,
    audience: Audience,
    assigned: set[int],
    now: datetime,
    actor: Actor,
) -> Plan:
    """What firing this step writes. Pure: no database access."""
    if incident["status"] != Status.triggered.value or event["run"] != incident["escalation_run"]:
        # A stop that raced this claim already decided; keep the record consistent.
        detail = f"incident is {incident['status']}"
        cancelled = _event_update(event, EventStatus.cancelled, now=None, detail=detail)
        return Plan(incident_id=incident["id"], event=cancelled)
    incident_id = incident["id"]
    plan = Plan(incident_id=incident_id, event={})
    late = (now - event["due_at"]).total_seconds()
    targets, actions = work.targets, work.actions
    # Each target in order: a user, or whoever its schedule names now.
    wanted = [uid for t in targets for uid in _target_users(t, audience)]
    nobody = [f"schedule {t.id}: nobody on call" for t in targets
              if t.type is TargetType.schedule and not audience.on_call.get(t.id)]  # fmt: skip
    # Every target a schedule with nobody on call: nobody to page or to wait for.
    skipped = bool(nobody) and len(nobody) == len(targets)
    user_ids = list(dict.fromkeys(uid for uid in wanted if uid in audience.active))
    kinds = [a.type for a in actions]
    notify, assign = ActionType.notify in kinds, ActionType.assign in kinds
    severity = incident["severity"]
    for action in actions:
        if action.type is ActionType.set_severity and action.severity != severity:
            plan.timeline.append(
                timeline.updated(
                    incident_id, actor=SYSTEM, now=now,
                    changes={"severity": {"before": severity, "after": action.severity}},
                )
            )  # fmt: skip
            severity = cast(str, action.severity)
    pages, notified = audience.page(
        event=event, incident=incident, severity=severity, user_ids=user_ids if notify else [],
        to_subscriptions=not skipped, now=now,
    )  # fmt: skip
    plan.notifications += pages
    newly_assigned = [uid for uid in user_ids if uid not in assigned] if assign else []
    if newly_assigned:
        plan.assignments = [
            {"incident_id": incident_id, "user_id": uid, "role": "responder",
             "assigned_at": now, "assigned_by": None}
            for uid in newly_assigned
        ]  # fmt: skip
        plan.timeline.append(
            timeline.assigned(
                incident_id, actor=SYSTEM, now=now,
                added=[(uid, "responder") for uid in newly_assigned],
            )
        )  # fmt: skip
    inactive = list(dict.fromkeys(uid for uid in wanted if uid not in audience.active))
    silent = [uid for uid in user_ids if uid not in notified] if notify else []
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
    if (notify or assign) and not (notified if notify else user_ids):
        # Nobody could be reached by this step: say so where the responders look.
        plan.timeline.append(
            timeline.escalation_failed(
                incident_id, now=now, step=event["step"], cycle=event["cycle"],
                error="nobody reachable: " + detail,
            )
        )  # fmt: skip
    plan.event = _event_update(event, EventStatus.executed, now=now, detail=detail)
    plan.event["notified_user_ids"] = notified
    plan.timeline.append(
        timeline.escalated(
            incident_id, actor=actor, now=now, policy_id=event["policy_id"], step=event["step"],
            cycle=event["cycle"], notified_user_ids=notified, actions=[k.value for k in kinds],
            late_seconds=round(late, 3),
        )
    )  # fmt: skip
    # After an outage the next step waits its full delay from now, not from the missed due time:
    # the ladder is not replayed all at once.
    plan.next_event = next_event_row(event, incident, after=max(event["due_at"], now), now=now)
    plan.incident = _incident_update(
        incident, now=now, escalation_level=event["step"], severity=severity,
        escalation_status=EscalationStatus.active if plan.next_event
        else EscalationStatus.completed,
    )  # fmt: skip
    return plan


def _target_users(target: Target, audience: Audience) -> list[int]:
    if target.type is TargetType.user:
        return [target.id]
    named = audience.on_call.get(target.id, [])
    if named is None:
        raise RuntimeError(f"schedule {target.id} cannot be computed (see the logs)")
    return named


def _skipped(
    plan: Plan, event: EventLike, incident: RunLike, *, severity: str, reason: str,
    late: float, now: datetime,
) -> Plan:  # fmt: skip
    """Finish the plan of a step whose every target is a schedule with nobody on call: its other
    actions (severity, webhooks) done, the step recorded `skipped`, said on the timeline, and the
    next step due at once (no one was paged to wait for)."""
    plan.event = _event_update(
        event, EventStatus.skipped, now=now, detail=f"{reason} ({late:.3f} s after due)"
    )
    plan.timeline.append(
        timeline.escalation_skipped(
            incident["id"], now=now, policy_id=event["policy_id"], step=event["step"],
            cycle=event["cycle"], reason=reason,
        )
    )  # fmt: skip
    plan.next_event = next_event_row(event, incident, after=now, now=now, at_once=True)
    plan.incident = _incident_update(
        incident, now=now, escalation_level=incident["escalation_level"], severity=severity,
        escalation_status=EscalationStatus.active if plan.next_event
        else EscalationStatus.completed,
    )  # fmt: skip
    return plan


def _failure_plan(event: EventLike, incident: RunLike, *, now: datetime, error: Exception) -> Plan:
    """Record a step that raised, and go on to the next one: a page is never silently dropped."""
    detail = f"{type(error).__name__}: {str(error)[:500]}"
    plan = Plan(
        incident_id=incident["id"],
        event=_event_update(event, EventStatus.failed, now=now, detail=detail),
    )
    plan.timeline.append(
        timeline.escalation_failed(
            incident["id"], now=now, step=event["step"], cycle=event["cycle"], error=detail
        )
    )
    if incident["status"] != Status.triggered.value or event["run"] != incident["escalation_run"]:
        return plan
    try:
        plan.next_event = next_event_row(event, incident, after=now, now=now)
    except Exception:
        logger.exception("escalation of incident %s cannot go on", incident["id"])
    status = EscalationStatus.active if plan.next_event else EscalationStatus.failed
    plan.incident = _incident_update(
        incident, now=now, escalation_level=incident["escalation_level"],
        severity=incident["severity"], escalation_status=status,
    )  # fmt: skip
    return plan


def _event_update(
    event: EventLike, status: EventStatus, *, now: datetime | None, detail: str
) -> Row:
    return {
        "id": event["id"],
        "status": status.value,
        "executed_at": now,
        "notified_user_ids": [],
        "detail": detail,
    }


def _incident_update(
    incident: RunLike,
    *,
    now: datetime,
    escalation_level: int,
    severity: str,
    escalation_status: EscalationStatus,
) -> Row:
    # Same keys for every incident, so a batch is one executemany.
    return {
        "id": incident["id"],
        "escalation_level": escalation_level,
        "severity": severity,
        "escalation_status": escalation_status.value,
        "updated_at": now,
        "version": incident["version"] + 1,
    }


async def write(
    session: AsyncSession, claimed: Claimed, plans: Mapping[int, Plan], *, now: datetime
) -> None:
    """Write a batch's plans with one statement per table; if that fails, each step in its own
    savepoint, a step that still fails recorded as failed (and left scheduled if even that
    fails, to be tried again next pass)."""
    try:
        async with session.begin_nested():
            await apply(session, list(plans.values()))
        count(session, list(plans.values()), now=now)
    except Exception as exc:
        if is_lock_conflict(exc):
            raise  # a request holds a row we need: give way, the whole batch retries next pass
        logger.warning("writing a batch of %d steps failed; writing them one by one", len(plans))
        for event in claimed.events:
            plan = plans[event["id"]]
            try:
                async with session.begin_nested():
                    await apply(session, [plan])
                count(session, [plan], now=now)
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
                        event, claimed.incidents[event["incident_id"]], now=now, error=exc
                    )
                failed.due_at, failed.request_id = plan.due_at, plan.request_id
                try:
                    async with session.begin_nested():
                        await apply(session, [failed])
                    count(session, [failed], now=now)
                except Exception:
                    # Left scheduled: it is tried again next pass, and the error logged again.
                    logger.exception("could not record the failure of event %s", event["id"])


def count(session: AsyncSession, plans: Sequence[Plan], *, now: datetime) -> None:
    """The steps these plans wrote, for the metrics (counted if the transaction commits)."""
    metrics.count_fired(
        session, [(p.event["status"], p.due_at) for p in plans if p.due_at is not None], now
    )


async def apply(session: AsyncSession, plans: Sequence[Plan]) -> None:
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
