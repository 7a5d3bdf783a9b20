"""One ingest path for every alert source: an alert triggers, acknowledges or resolves by dedup key.

A source module turns its payload into `Alert`s; `ingest` applies each to the incident of the same
service and dedup key. At most one incident per (service, dedup key) is open at a time: a
transaction-scoped lock on the key serialises senders, and a partial unique index in the database
backs it up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import bulk, metrics
from app.core.db import WAKE_WORKER, lock_named, lock_names
from app.core.logging import acting_for
from app.escalation import service as escalation_service
from app.escalation.models import EscalationEvent
from app.incidents import service as incident_service
from app.incidents.models import Incident, Severity, Status, TimelineEntry
from app.incidents.timeline import Actor, entry_row
from app.integrations.models import Integration
from app.notifications import service as notification_service

logger = logging.getLogger(__name__)

Action = Literal["trigger", "acknowledge", "resolve"]
Outcome = Literal[
    "incident_created",
    "incident_updated",
    "incident_reopened",
    "incident_acknowledged",
    "incident_resolved",
    "no_changes",
]
MAX_TITLE = 500
MAX_LABELS = 64


@dataclass
class Alert:
    """What every source's payload comes down to."""

    action: Action
    dedup_key: str
    title: str = ""
    description: str = ""
    severity: Severity = Severity.medium
    labels: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # what the source sent for this alert, kept in the timeline
    request_id: str | None = None  # of the request that brought it (see app.core.logging)


@dataclass(frozen=True)
class Result:
    incident_id: int | None
    outcome: Outcome
    dedup_key: str


def actor_of(integration: Integration) -> Actor:
    return Actor("integration", integration.id, integration.name)


def clean_labels(labels: dict[str, Any]) -> dict[str, str]:
    """String labels, at most 64, keys up to 100 and values up to 500 characters."""
    cleaned: dict[str, str] = {}
    for key, value in list(labels.items())[:MAX_LABELS]:
        if value is None:
            continue
        cleaned[str(key)[:100]] = str(value)[:500]
    return cleaned


async def ingest(
    session: AsyncSession,
    *,
    integration: Integration,
    alert: Alert,
    now: datetime,
    reopen_window: timedelta,
) -> Result:
    actor = actor_of(integration)
    service_id = integration.service_id
    key = alert.dedup_key
    await lock_named(session, incident_service.dedup_lock(service_id, key))
    open_id = await session.scalar(
        select(Incident.id).where(
            Incident.service_id == service_id,
            Incident.dedup_key == key,
            Incident.status != Status.resolved.value,
        )
    )
    if alert.action == "trigger":
        if open_id is not None:
            return await _repeat(session, open_id, alert, integration, now)
        if reopen_window > timedelta(0):
            reopened = await _reopen_recent(session, alert, integration, now, reopen_window)
            if reopened is not None:
                return reopened
        # The key is locked and has no open incident: open one (its service exists, by the FK).
        incident = await incident_service.open_new(
            session,
            title=(alert.title or key)[:MAX_TITLE],
            description=alert.description,
            severity=alert.severity,
            service_id=service_id,
            labels=clean_labels(alert.labels),
            custom_fields=alert.details,
            dedup_key=key,
            source=integration.kind,
            actor=actor,
            now=now,
            last_alert_at=now,
        )
        _received(session, incident.id, alert, integration, now)
        return Result(incident.id, "incident_created", key)
    if open_id is None:
        return Result(None, "no_changes", key)  # as PagerDuty: accepted and ignored
    found = await incident_service.get(session, open_id, lock=True)
    assert found is not None
    _received(session, found.id, alert, integration, now)
    if alert.action == "acknowledge":
        if found.status != Status.triggered.value:
            return Result(found.id, "no_changes", key)
        await incident_service.acknowledge(session, incident=found, actor=actor, now=now)
        return Result(open_id, "incident_acknowledged", key)
    await incident_service.resolve(session, incident=found, actor=actor, now=now)
    return Result(open_id, "incident_resolved", key)


async def _repeat(
    session: AsyncSession,
    incident_id: int,
    alert: Alert,
    integration: Integration,
    now: datetime,
) -> Result:
    """Another alert for an open incident: counted, recorded; never re-pages by itself."""
    await session.execute(
        update(Incident)
        .where(Incident.id == incident_id)
        .values(
            alert_count=Incident.alert_count + 1,
            last_alert_at=now,
            updated_at=now,
            version=Incident.version + 1,
        )
    )
    _received(session, incident_id, alert, integration, now)
    return Result(incident_id, "incident_updated", alert.dedup_key)


async def _reopen_recent(
    session: AsyncSession, alert: Alert, integration: Integration, now: datetime, window: timedelta
) -> Result | None:
    recent = await session.scalar(
        select(Incident.id)
        .where(
            Incident.service_id == integration.service_id,
            Incident.dedup_key == alert.dedup_key,
            Incident.status == Status.resolved.value,
            Incident.resolved_at >= now - window,
        )
        .order_by(Incident.resolved_at.desc())
        .limit(1)
    )
    if recent is None:
        return None
    incident = await incident_service.get(session, recent, lock=True)
    if incident is None or incident.status != Status.resolved.value:
        return None
    # Counted in the same write as the reopen (one version step).
    incident.alert_count += 1
    incident.last_alert_at = now
    await incident_service.reopen(
        session, incident=incident, actor=actor_of(integration), now=now,
        note="a new alert within the window",
    )  # fmt: skip
    _received(session, recent, alert, integration, now)
    return Result(recent, "incident_reopened", alert.dedup_key)


def _received(
    session: AsyncSession, incident_id: int, alert: Alert, integration: Integration, now: datetime
) -> None:
    """The `alert_received` entry, with the alert as the source sent it."""
    session.add(TimelineEntry(**_received_row(incident_id, alert, integration, now)))


def _received_row(
    incident_id: int, alert: Alert, integration: Integration, now: datetime
) -> dict[str, Any]:
    return entry_row(
        incident_id=incident_id,
        type="alert_received",
        actor=actor_of(integration),
        now=now,
        data={
            "integration_id": integration.id,
            "kind": integration.kind,
            "action": alert.action,
            "title": alert.title[:MAX_TITLE],
            "severity": alert.severity.value,
            "raw": alert.raw,
        },
    )


# ---- many alerts at once -------------------------------------------------------------------------


INCIDENTS = cast(Table, Incident.__table__)
ENTRIES = cast(Table, TimelineEntry.__table__)


@dataclass(eq=False)
class _Target:
    """The incident some alerts of a batch go to: one already open, or one the batch opens."""

    id: int | None
    new: dict[str, Any] | None = None  # the row of an incident to open
    opener: Integration | None = None
    received: list[tuple[Alert, Integration]] = field(default_factory=list)


class _Plan:
    """Alerts that open or add to incidents, written together: a few statements for any number."""

    def __init__(self) -> None:
        self.targets: list[_Target] = []

    def open(self, integration: Integration, alert: Alert, now: datetime) -> _Target:
        row = {
            "title": (alert.title or alert.dedup_key)[:MAX_TITLE],
            "description": alert.description,
            "status": Status.triggered.value,
            "severity": alert.severity.value,
            "service_id": integration.service_id,
            "source": integration.kind,
            "dedup_key": alert.dedup_key,
            "alert_count": 1,
            "labels": clean_labels(alert.labels),
            "custom_fields": alert.details,
            "created_by": None,
            "last_alert_at": now,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        target = _Target(None, new=row, opener=integration, received=[(alert, integration)])
        self.targets.append(target)
        return target

    def add(self, target: _Target, integration: Integration, alert: Alert) -> None:
        if not target.received:
            self.targets.append(target)
        target.received.append((alert, integration))
        if target.new is not None and len(target.received) > 1:
            target.new["alert_count"] += 1
            target.new["version"] += 1

    async def write(self, session: AsyncSession, now: datetime) -> None:
        targets, self.targets = self.targets, []
        if not targets:
            return
        opened = [t for t in targets if t.new is not None and t.id is None]
        steps: list[dict[str, Any]] = []
        applied: dict[int, dict[str, Any]] = {}
        # What announces each opened incident: its `created` entry's data, and who opened it.
        told: dict[int, tuple[dict[str, Any], Actor]] = {}
        if opened:
            rows = [cast(dict[str, Any], t.new) for t in opened]
            choices = await escalation_service.choose_policies(
                session, [SimpleNamespace(**row) for row in rows]
            )
            for row, (policy, _) in zip(rows, choices, strict=True):
                row.update(escalation_service.escalation_fields(policy, run=1))
            inserted = await bulk.insert_rows(
                session, INCIDENTS, rows, returning=("id", "service_id", "dedup_key")
            )
            # One open incident per service and key: the pair names the row.
            ids = {(row.service_id, row.dedup_key): row.id for row in inserted}
            for target, (_, reason) in zip(opened, choices, strict=True):
                row = cast(dict[str, Any], target.new)
                target.id = incident_id = ids[row["service_id"], row["dedup_key"]]
                row["id"] = incident_id
                with acting_for(target.received[0][0].request_id):  # the opening alert's
                    entry, step = escalation_service.begin_rows(
                        incident=SimpleNamespace(**row), reason=reason, now=now
                    )
                applied[incident_id] = entry
                told[incident_id] = (
                    incident_service.created_data(row),
                    actor_of(cast(Integration, target.opener)),
                )
                if step is not None:
                    steps.append(step)
        entries: list[dict[str, Any]] = []
        for target in targets:
            incident_id = cast(int, target.id)
            if incident_id in applied:
                data, opener = told[incident_id]
                with acting_for(target.received[0][0].request_id):
                    entries.append(
                        entry_row(incident_id=incident_id, type="created", actor=opener, now=now,
                                  data=data)
                    )  # fmt: skip
                entries.append(applied[incident_id])
            for alert, integration in target.received:
                with acting_for(alert.request_id):
                    entries.append(_received_row(incident_id, alert, integration, now))
        inserted = await bulk.insert_rows(
            session, ENTRIES, entries, returning=("id", "incident_id", "type") if opened else ()
        )
        created = {row.incident_id: row.id for row in inserted if row.type == "created"}
        await bulk.insert_rows(session, cast(Table, EscalationEvent.__table__), steps)
        if steps:
            session.info[WAKE_WORKER] = True
        repeated = [t for t in targets if t.new is None]
        if repeated:
            await session.execute(
                update(INCIDENTS)
                .where(INCIDENTS.c.id == bindparam("target"))
                .values(
                    alert_count=INCIDENTS.c.alert_count + bindparam("count"),
                    version=INCIDENTS.c.version + bindparam("count"),
                    last_alert_at=bindparam("now"),
                    updated_at=bindparam("now"),
                ),
                [{"target": t.id, "count": len(t.received), "now": now} for t in repeated],
            )
        await notification_service.announce_opened(
            session,
            [
                notification_service.Told(
                    cast(dict[str, Any], t.new),
                    created[t.id],
                    *told[t.id],
                    request_id=t.received[0][0].request_id,
                )
                for t in opened
                if t.id is not None
            ],
            now=now,
        )
        metrics.count_incidents(
            session, "opened", [cast(dict[str, Any], t.new)["severity"] for t in opened]
        )
        for target in targets:
            target.received = []
            target.new = None  # opened now: further alerts add to it like to any open incident


async def _open(session: AsyncSession, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """The open incident of each (service, dedup key) that has one."""
    if session.get_bind().dialect.name == "postgresql":
        # One statement text for any number of pairs, joined on the partial unique index of open
        # incidents: a plan cached for it stays right however the table grows (with `IN` lists,
        # a cached generic plan could scan every incident of the service).
        services, keys = zip(*pairs, strict=True)
        rows = await session.execute(
            text(
                "SELECT i.id, i.service_id, i.dedup_key FROM incidents AS i "
                "JOIN unnest(CAST(:services AS bigint[]), CAST(:keys AS varchar[])) "
                "AS k(service_id, dedup_key) "
                "ON i.service_id = k.service_id AND i.dedup_key = k.dedup_key "
                "WHERE i.status != 'resolved' AND i.dedup_key IS NOT NULL "
                "AND i.service_id IS NOT NULL"  # the partial index's own condition
            ),
            {"services": list(services), "keys": list(keys)},
        )
    else:
        rows = await session.execute(
            select(Incident.id, Incident.service_id, Incident.dedup_key).where(
                Incident.dedup_key.in_({key for _, key in pairs}),
                Incident.service_id.in_({service for service, _ in pairs}),
                Incident.status != Status.resolved.value,
            )
        )
    return {
        (row.service_id, row.dedup_key): row.id
        for row in rows
        if (row.service_id, row.dedup_key) in pairs
    }


async def ingest_many(
    session: AsyncSession,
    items: Sequence[tuple[Integration, Alert]],
    *,
    now: datetime,
    reopen_window: timedelta,
) -> list[Result]:
    """`ingest` for many alerts in one transaction, with the same outcome as one at a time in
    order, in a handful of statements: one lock statement for every key, one read of the open
    incidents, then the new incidents, timeline entries, first escalation steps, counts and
    notifications each written for all alerts at once. The rarer alerts (acknowledge, resolve,
    a trigger that may reopen) go through `ingest`, after what comes before them is written."""
    pairs = {(integration.service_id, alert.dedup_key) for integration, alert in items}
    await lock_names(session, [incident_service.dedup_lock(s, k) for s, k in pairs])
    open_now: dict[tuple[int, str], _Target | None] = {
        pair: _Target(incident_id) for pair, incident_id in (await _open(session, pairs)).items()
    }
    plan = _Plan()
    answers: list[tuple[_Target | None, Outcome, str]] = []
    for integration, alert in items:
        pair = (integration.service_id, alert.dedup_key)
        target = open_now.get(pair)
        if alert.action == "trigger" and target is not None:
            plan.add(target, integration, alert)
            answers.append((target, "incident_updated", alert.dedup_key))
        elif alert.action == "trigger" and reopen_window <= timedelta(0):
            open_now[pair] = plan.open(integration, alert, now)
            answers.append((open_now[pair], "incident_created", alert.dedup_key))
        else:
            await plan.write(session, now)
            with acting_for(alert.request_id):
                result = await ingest(
                    session, integration=integration, alert=alert, now=now,
                    reopen_window=reopen_window,
                )  # fmt: skip
            await session.flush()  # its entries before those of the alerts after it
            if result.outcome == "incident_resolved":
                open_now[pair] = None
            elif result.incident_id is not None:
                open_now[pair] = _Target(result.incident_id)
            answers.append((_Target(result.incident_id), result.outcome, result.dedup_key))
    await plan.write(session, now)
    return [Result(target.id if target else None, outcome, key) for target, outcome, key in answers]
