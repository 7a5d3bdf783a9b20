"""The analytics data set: services, people, incidents, escalation steps and pages in and
around [2026-01-01T00:00Z, 2026-01-04T00:00Z). A pytest plugin (tests/conftest.py registers it):
the `world` fixture serves the API's tests (tests/analytics) and the console's (tests/ui)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.factories import Factory

URL = "/v1/analytics/incidents"
T = datetime(2026, 1, 1, tzinfo=UTC)  # the range under test is [Jan 1, Jan 4)


def at(day: int, hour: int = 0, minute: int = 0, second: float = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC) + timedelta(seconds=second)


@pytest.fixture
async def world(factory: Factory) -> dict[str, Any]:
    """Services, people, incidents, escalation steps and notifications, inside and around the
    range [2026-01-01T00:00Z, 2026-01-04T00:00Z)."""
    f = factory
    checkout = await f.service(name="checkout")
    search = await f.service(name="search")
    ana = await f.user(full_name="Ana Oncall")
    ben = await f.user(full_name="Ben Oncall")
    cleo = await f.user(full_name="Cleo Oncall")

    async def incident(
        created: datetime, severity: str, service: Any, key: str | None, alerts: int,
        ack: float | None = None, res: float | None = None, **kw: Any,
    ) -> Any:  # fmt: skip
        return await f.incident(
            created_at=created, severity=severity, service_id=service and service.id,
            dedup_key=key, alert_count=alerts,
            acknowledged_at=ack and created + timedelta(seconds=ack),
            resolved_at=res and created + timedelta(seconds=res),
            status="resolved" if res else "acknowledged" if ack else "triggered", **kw,
        )  # fmt: skip

    # In the range. (ack, res): seconds from created_at to acknowledged_at, resolved_at.
    i1 = await incident(at(1), "critical", checkout, "db-down", 5, 60, 600)  # the start: inside
    i2 = await incident(at(1, 12), "high", checkout, "db-down", 3, 120.5, 1200)
    i3 = await incident(at(2, 8), "medium", search, "slow-query", 1, 300)
    i4 = await incident(at(2, 23, 59, 59), "critical", checkout, "disk", 10, None, 1800)
    await incident(at(3, 10), "low", search, "slow-query", 2, 30, 90)  # i5
    await incident(at(3, 11), "info", None, None, 1)  # i6: no service, no key
    # Outside: the end itself, and the last microsecond before the start.
    i7 = await incident(at(4), "critical", checkout, "db-down", 100, 1, 2)
    i8 = await incident(T - timedelta(microseconds=1), "high", search, None, 1)

    step = f.escalation_event
    e1 = await step(incident_id=i1.id, step=1, executed_at=at(1, 0, 1))
    await step(incident_id=i1.id, step=2, status="failed", executed_at=at(1, 0, 20))
    await step(incident_id=i4.id, status="skipped", executed_at=at(3))
    await step(incident_id=i3.id, executed_at=at(2, 8, 1))
    await step(incident_id=i3.id, step=2, status="scheduled", executed_at=None)  # not fired
    await step(incident_id=i2.id, status="cancelled", executed_at=None)  # not fired
    await step(incident_id=i7.id, executed_at=at(4, 0, 0, 1))  # fired after the end
    # Counted: the step fired in the range, though its incident was created before it.
    await step(incident_id=i8.id, executed_at=at(1, 0, 0, 30))

    def page(user: Any, incident: Any, sent_at: datetime | None, **kw: Any) -> Any:
        kw.setdefault("status", "sent")
        return f.notification(
            user_id=user and user.id, incident_id=incident.id, event=kw.pop("event", "escalated"),
            sent_at=sent_at, **kw,
        )  # fmt: skip

    await page(ana, i1, at(1, 0, 1, 5), escalation_event_id=e1.id)
    await page(ana, i1, at(1, 0, 1, 6), channel="sms", escalation_event_id=e1.id)  # 2nd channel
    await page(ana, i3, at(2, 8, 1, 5))
    await page(ben, i3, at(2, 8, 2))
    await page(ben, i1, None, status="failed")  # not sent
    await page(ben, i1, at(1, 1), event="assigned")  # not a page
    await page(None, i1, at(1, 0, 1, 7), channel="webhook")  # a policy's webhook action
    await page(ben, i7, at(4, 0, 0, 5))  # sent after the end
    await page(cleo, i2, None, status="pending")
    await page(cleo, i8, at(1, 0, 0, 40))  # sent in the range, for an older incident
    return {"checkout": checkout, "search": search, "ana": ana, "ben": ben, "cleo": cleo}
