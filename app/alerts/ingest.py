"""One ingest path for every alert source: an alert triggers, acknowledges or resolves by dedup key.

A source module turns its payload into `Alert`s; `ingest` applies each to the incident of the same
service and dedup key. At most one incident per (service, dedup key) is open at a time: a
transaction-scoped lock on the key serialises senders, and a partial unique index in the database
backs it up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import lock_named
from app.incidents import service as incident_service
from app.incidents.models import Incident, Severity, Status, TimelineEntry
from app.incidents.timeline import Actor, entry_row
from app.integrations.models import Integration

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
    await lock_named(session, f"incidents:dedup:{service_id}:{key}")
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
    session.add(
        TimelineEntry(
            **entry_row(
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
        )
    )
