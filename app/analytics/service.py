"""The incident analytics report, computed in the database with a few aggregate queries.

Every figure covers the half-open range [start, end): incidents by `created_at`, escalation
steps by `executed_at`, pages by `sent_at`. With a `service_id`, each is limited to that
service's incidents.

The 90th percentile is the nearest-rank one: the smallest duration that at least 90 % of the
durations do not exceed, i.e. the ceil(0.9 × n)-th smallest (n = 1: that one; n = 10: the 9th;
n = 11: the 10th). It is always one of the measured durations. PostgreSQL's `percentile_disc(0.9)`
is exactly this definition (it takes row ceil(0.9 × n) of the ordered group), so it computes it
next to the data; SQLite has no percentile, so there the durations are fetched and
`nearest_rank` applies the same rule in Python (SQLite is the development database: this costs
it a row per incident of the range).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import Unprocessable
from app.escalation.enums import EventStatus
from app.escalation.models import EscalationEvent
from app.incidents.models import Incident, Severity
from app.notifications.models import PAGE_EVENTS, Notification, NotificationStatus
from app.services.models import Service
from app.users.models import User

DEFAULT_SPAN = timedelta(days=30)
MAX_SPAN = timedelta(days=366)
TOP = 10  # noisiest services and dedup keys
TOP_USERS = 100  # pages per user: everyone paged, up to this many
P90 = 0.9
SEVERITIES = [s.value for s in Severity]
FIRED_STEPS = (EventStatus.executed, EventStatus.failed, EventStatus.skipped)


def window(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The range asked for: by default the 30 days ending now; one bound given, 30 days from
    or to it (an end alone) or up to now (a start alone)."""
    if end is None:
        end = now if start is None or start < now else start + DEFAULT_SPAN
    if start is None:
        start = end - DEFAULT_SPAN
    if end <= start:
        raise Unprocessable("end must be after start")
    if end - start > MAX_SPAN:
        raise Unprocessable("the range can be at most 366 days")
    return start, end


def nearest_rank(values: Sequence[float], fraction: float = P90) -> float | None:
    """The nearest-rank percentile: the ceil(fraction × n)-th smallest value (1-based), computed
    as PostgreSQL's `percentile_disc` computes it, so that both databases agree."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _seconds(value: Any) -> float | None:
    """Durations are reported to the millisecond."""
    return None if value is None else round(float(value), 3)


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime
    service_id: int | None

    def incidents(self) -> list[ColumnElement[bool]]:
        where = [Incident.created_at >= self.start, Incident.created_at < self.end]
        if self.service_id is not None:
            where.append(Incident.service_id == self.service_id)
        return where

    def of_service(self, incident_id: InstrumentedAttribute[Any]) -> list[ColumnElement[bool]]:
        """Limit rows that belong to an incident to the service's incidents."""
        if self.service_id is None:
            return []
        mine = select(Incident.id).where(Incident.service_id == self.service_id)
        return [incident_id.in_(mine)]


async def report(
    session: AsyncSession, *, start: datetime, end: datetime, service_id: int | None
) -> dict[str, Any]:
    span = Range(start, end, service_id)
    postgres = session.get_bind().dialect.name == "postgresql"
    by_day = await _opened_by_day(session, span, postgres)
    totals = {s: sum(day[s] for day in by_day) for s in SEVERITIES}
    acknowledge, resolve = await _response_times(session, span, postgres)
    return {
        "start": start,
        "end": end,
        "service_id": service_id,
        "incidents": {"total": sum(totals.values()), "by_severity": totals},
        "opened_by_day": by_day,
        "time_to_acknowledge": acknowledge,
        "time_to_resolve": resolve,
        "escalation_steps": await _escalation_steps(session, span),
        "pages_by_user": await _pages_by_user(session, span),
        "noisiest_services": await _noisiest_services(session, span),
        "noisiest_dedup_keys": await _noisiest_dedup_keys(session, span),
    }


def _days(start: datetime, end: datetime) -> list[date]:
    """Every UTC date the range touches (the last is the date of the last instant before end)."""
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def _opened_by_day(
    session: AsyncSession, span: Range, postgres: bool
) -> list[dict[str, Any]]:
    # The UTC date: PostgreSQL's session time zone must not shift it; SQLite stores UTC text.
    day: ColumnElement[Any] = (
        func.date(func.timezone("UTC", Incident.created_at))
        if postgres
        else func.substr(Incident.created_at, 1, 10)
    )
    rows = await session.execute(
        select(day, Incident.severity, func.count())
        .where(*span.incidents())
        .group_by(day, Incident.severity)
    )
    days = {d: dict.fromkeys(SEVERITIES, 0) for d in _days(span.start, span.end)}
    for value, severity, count in rows:
        when = value if isinstance(value, date) else date.fromisoformat(value)
        days[when][severity] = count
    return [{"date": d, "total": sum(c.values()), **c} for d, c in days.items()]


async def _response_times(
    session: AsyncSession, span: Range, postgres: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    if postgres:
        # Nulls (never acknowledged, not resolved) are skipped by count, avg and percentile_disc.
        ack = func.extract("epoch", Incident.acknowledged_at - Incident.created_at)
        res = func.extract("epoch", Incident.resolved_at - Incident.created_at)
        figures = [
            (func.count(d), func.avg(d), func.percentile_disc(P90).within_group(d))
            for d in (ack, res)
        ]
        query = select(*figures[0], *figures[1]).where(*span.incidents())
        row = (await session.execute(query)).one()
        return (
            {"count": row[0], "mean_seconds": _seconds(row[1]), "p90_seconds": _seconds(row[2])},
            {"count": row[3], "mean_seconds": _seconds(row[4]), "p90_seconds": _seconds(row[5])},
        )
    rows = await session.execute(
        select(Incident.created_at, Incident.acknowledged_at, Incident.resolved_at).where(
            *span.incidents(),
            (Incident.acknowledged_at.is_not(None)) | (Incident.resolved_at.is_not(None)),
        )
    )
    acks: list[timedelta] = []
    resolves: list[timedelta] = []
    for created, acknowledged, resolved in rows:
        if acknowledged is not None:
            acks.append(acknowledged - created)
        if resolved is not None:
            resolves.append(resolved - created)
    return _summary(acks), _summary(resolves)


def _summary(durations: list[timedelta]) -> dict[str, Any]:
    if not durations:
        return {"count": 0, "mean_seconds": None, "p90_seconds": None}
    # Whole microseconds, as PostgreSQL's exact numeric average adds them.
    micros = [d // timedelta(microseconds=1) for d in durations]
    p90 = nearest_rank(micros)
    return {
        "count": len(micros),
        "mean_seconds": _seconds(sum(micros) / len(micros) / 1e6),
        "p90_seconds": _seconds(None if p90 is None else p90 / 1e6),
    }


async def _escalation_steps(session: AsyncSession, span: Range) -> dict[str, int]:
    query = (
        select(EscalationEvent.status, func.count())
        .where(
            EscalationEvent.executed_at >= span.start,
            EscalationEvent.executed_at < span.end,
            EscalationEvent.status.in_([s.value for s in FIRED_STEPS]),
            *span.of_service(EscalationEvent.incident_id),
        )
        .group_by(EscalationEvent.status)
    )
    counts = {s.value: 0 for s in FIRED_STEPS}
    counts.update({status: n for status, n in await session.execute(query)})
    return {"fired": sum(counts.values()), **counts}


async def _pages_by_user(session: AsyncSession, span: Range) -> list[dict[str, Any]]:
    # A page is an escalation step's message to a person (as app.notifications.service tells
    # them apart: a PAGE_EVENTS event not sent for a webhook subscription), counted once sent.
    pages = func.count().label("pages")
    query = select(
        Notification.user_id, pages, func.count(func.distinct(Notification.incident_id))
    ).where(
        Notification.status == NotificationStatus.sent.value,
        Notification.event.in_(PAGE_EVENTS),
        Notification.webhook_id.is_(None),
        Notification.user_id.is_not(None),
        Notification.sent_at >= span.start,
        Notification.sent_at < span.end,
        *span.of_service(Notification.incident_id),
    )
    counted = query.group_by(Notification.user_id).subquery()
    rows = await session.execute(
        select(counted.c.user_id, User.full_name, counted.c.pages, counted.c[2])
        .join(User, User.id == counted.c.user_id)
        .order_by(desc(counted.c.pages), counted.c.user_id)
        .limit(TOP_USERS)
    )
    return [
        {"user_id": user_id, "full_name": name, "pages": n, "incidents": incidents}
        for user_id, name, n, incidents in rows
    ]


async def _noisiest_services(session: AsyncSession, span: Range) -> list[dict[str, Any]]:
    incidents, alerts = func.count().label("incidents"), func.sum(Incident.alert_count)
    counted = (
        select(Incident.service_id, incidents, alerts.label("alerts"))
        .where(*span.incidents(), Incident.service_id.is_not(None))
        .group_by(Incident.service_id)
        .order_by(desc(incidents), desc(alerts), Incident.service_id)
        .limit(TOP)
        .subquery()
    )
    rows = await session.execute(
        select(counted.c.service_id, Service.name, counted.c.incidents, counted.c.alerts)
        .join(Service, Service.id == counted.c.service_id)
        .order_by(desc(counted.c.incidents), desc(counted.c.alerts), counted.c.service_id)
    )
    return [
        {"service_id": sid, "name": name, "incidents": n, "alerts": int(a)}
        for sid, name, n, a in rows
    ]


async def _noisiest_dedup_keys(session: AsyncSession, span: Range) -> list[dict[str, Any]]:
    # Ranked by incidents opened (each one pages), then by the alerts folded into them.
    incidents, alerts = func.count(), func.sum(Incident.alert_count)
    rows = await session.execute(
        select(Incident.service_id, Incident.dedup_key, incidents, alerts)
        .where(and_(*span.incidents()), Incident.dedup_key.is_not(None))
        .group_by(Incident.service_id, Incident.dedup_key)
        .order_by(desc(incidents), desc(alerts), Incident.dedup_key, Incident.service_id)
        .limit(TOP)
    )
    return [
        {"service_id": sid, "dedup_key": key, "incidents": n, "alerts": int(a)}
        for sid, key, n, a in rows
    ]
