"""The worker's queues as seen from outside: due rows no worker has claimed yet, for /metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.escalation.enums import EventStatus
from app.escalation.models import EscalationEvent
from app.incidents.models import Incident, Status
from app.notifications import outbox
from app.notifications.models import Notification


async def queue_gauges(session: AsyncSession, now: datetime) -> list[GaugeMetricFamily]:
    """Due work no worker has claimed yet, and how long the oldest of it has waited."""
    queues: dict[str, Any] = {
        "escalation": select(func.count(), func.min(EscalationEvent.due_at)).where(
            EscalationEvent.status == EventStatus.scheduled.value, EscalationEvent.due_at <= now
        ),
        "notification": select(func.count(), func.min(Notification.next_attempt_at)).where(
            outbox.due(now)
        ),
        "snooze": select(func.count(), func.min(Incident.snoozed_until)).where(
            Incident.status == Status.snoozed.value, Incident.snoozed_until <= now
        ),
    }
    depth = GaugeMetricFamily(
        "ims_worker_queue_depth", "Due rows no worker has claimed yet, by queue", labels=["queue"]
    )
    age = GaugeMetricFamily(
        "ims_worker_queue_oldest_age_seconds",
        "How long the oldest due, unclaimed row has been due, by queue (0 when none)",
        labels=["queue"],
    )
    for name, query in queues.items():
        count, oldest = (await session.execute(query)).one()
        depth.add_metric([name], count)
        age.add_metric([name], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
    return [depth, age]
