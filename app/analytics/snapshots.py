"""The console's analytics, served from snapshots the worker keeps fresh.

The report over a year of incidents takes the database a few hundred milliseconds at 100,000
incidents; the console's page must answer in well under 50 ms. The page offers fixed ranges (the
last 7, 30, 90 or 365 days, of every service or of one), so each range's report is computed once
and stored (`analytics_snapshots`), and:

- a page view reads the stored report when it is under STALE old, and computes and stores it
  otherwise (the first view of a range, or one after nobody looked for a while);
- the worker computes again, once it is REFRESH old, each report that someone viewed within
  WATCHED, so a page in use never waits; oldest first, within a budget per worker process
  (PER_TICK every TICK_SECONDS), so that glancing at many ranges and services costs the
  database a bounded amount; each is claimed with a lease, so several workers compute it once,
  and computed in a read that holds up no writer (on SQLite too);
- reports nobody viewed for FORGET are deleted.

Without a worker running, a view serves a stored report up to STALE old. The page says when its
figures were computed. `GET /v1/analytics/incidents` takes any range and
computes it on every call, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.analytics import service as analytics_service
from app.analytics.models import AnalyticsSnapshot
from app.analytics.schemas import IncidentAnalytics
from app.core.clock import Clock
from app.core.db import reading_scope, session_scope
from app.services.models import Service

logger = logging.getLogger(__name__)

RANGES = (7, 30, 90, 365)  # days
REFRESH = timedelta(minutes=1)
STALE = timedelta(minutes=10)
WATCHED = timedelta(minutes=10)
FORGET = timedelta(days=1)
LEASE = timedelta(minutes=5)
VIEW_MARK = timedelta(minutes=1)  # a view is written down at most this often per report
# The worker's budget: at most PER_TICK reports every TICK_SECONDS per worker process (8 a
# minute), however many ranges and services people glance at.
PER_TICK = 2
TICK_SECONDS = 15.0


def scope_of(days: int, service_id: int | None) -> str:
    if days not in RANGES:
        raise ValueError(f"no snapshot for a range of {days} days")
    return f"{days}d" if service_id is None else f"{days}d:service={service_id}"


def parse_scope(scope: str) -> tuple[int, int | None]:
    days, _, service = scope.partition(":service=")
    return int(days.removesuffix("d")), int(service) if service else None


async def compute(
    session: AsyncSession, *, days: int, service_id: int | None, now: datetime
) -> IncidentAnalytics:
    report = await analytics_service.report(
        session, start=now - timedelta(days=days), end=now, service_id=service_id
    )
    return IncidentAnalytics.model_validate(report)


async def read(
    session: AsyncSession, *, days: int, service_id: int | None, now: datetime
) -> tuple[IncidentAnalytics, datetime]:
    """The report for the last `days` days (of one service) and when it was computed: the
    stored one while it is fresh enough, else computed now (and stored, for a service that
    exists: a made-up service id must not add rows)."""
    scope = scope_of(days, service_id)
    stored = await session.get(AnalyticsSnapshot, scope)
    if stored is not None and now - STALE < stored.computed_at <= now:
        if now - stored.viewed_at >= VIEW_MARK:
            stored.viewed_at = now
        return IncidentAnalytics.model_validate_json(stored.report), stored.computed_at
    report = await compute(session, days=days, service_id=service_id, now=now)
    if service_id is None or await session.get(Service, service_id) is not None:
        await _store(session, scope, report, now)
    return report, now


async def _store(
    session: AsyncSession, scope: str, report: IncidentAnalytics, now: datetime
) -> None:
    values: dict[str, Any] = {
        "scope": scope,
        "report": report.model_dump_json(),
        "computed_at": now,
        "viewed_at": now,
        "lease_until": None,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(AnalyticsSnapshot).values(**values)
    # Two first views at once both compute; the later write wins, and both are correct.
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[AnalyticsSnapshot.scope],
            set_={k: insert.excluded[k] for k in values if k != "scope"},
        )
    )


async def refresh_due(
    sessions: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    limit: int = PER_TICK,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Compute again, oldest first, up to `limit` of the reports viewed within WATCHED and older
    than REFRESH; delete those nobody viewed for FORGET. Returns how many were computed.

    Each is claimed with a lease, computed in a read that holds up no writer, and written only
    if the lease is still ours (a view may have stored a fresher one meanwhile). A report that
    fails is logged and keeps its lease, so it is tried again once that runs out; the others go
    on. `stopping` is checked before
    each claim, so a worker told to stop finishes the report in hand only."""
    now = clock.now()
    async with session_scope(sessions) as session:
        await session.execute(
            delete(AnalyticsSnapshot).where(AnalyticsSnapshot.viewed_at < now - FORGET)
        )
        due = list(
            await session.scalars(
                select(AnalyticsSnapshot.scope)
                .where(
                    AnalyticsSnapshot.viewed_at >= now - WATCHED,
                    AnalyticsSnapshot.computed_at <= now - REFRESH,
                    _unleased(now),
                )
                .order_by(AnalyticsSnapshot.computed_at, AnalyticsSnapshot.scope)
                .limit(limit)
            )
        )
    done = 0
    for scope in due:
        if stopping():
            break
        now = clock.now()
        lease = await _claim(sessions, scope, now)
        if lease is None:
            continue  # another worker has it
        try:
            days, service_id = parse_scope(scope)
            async with reading_scope(sessions) as session:
                report = await compute(session, days=days, service_id=service_id, now=now)
            async with session_scope(sessions) as session:
                written = await session.execute(
                    update(AnalyticsSnapshot)
                    .where(AnalyticsSnapshot.scope == scope, AnalyticsSnapshot.lease_until == lease)
                    .values(report=report.model_dump_json(), computed_at=now, lease_until=None)
                )
        except Exception:
            # Its lease stays: tried again once it runs out (LEASE), so that a report that keeps
            # failing does not take the budget of every tick from the others.
            logger.exception("analytics report %s could not be computed; tried again later", scope)
            continue
        if written.rowcount:  # type: ignore[attr-defined]
            done += 1
        else:
            logger.debug("analytics report %s: a view stored a fresher one meanwhile", scope)
    return done


def _unleased(now: datetime) -> Any:
    return or_(AnalyticsSnapshot.lease_until.is_(None), AnalyticsSnapshot.lease_until <= now)


async def _claim(
    sessions: async_sessionmaker[AsyncSession], scope: str, now: datetime
) -> datetime | None:
    """Take the report for LEASE; returns the lease (its end), or None if it is not ours. The
    conditional update is the claim: on PostgreSQL a second worker's update waits for the first
    to commit, then finds the lease taken and changes nothing; SQLite has one writer at a time."""
    lease = now + LEASE
    async with session_scope(sessions) as session:
        claimed = await session.execute(
            update(AnalyticsSnapshot)
            .where(
                AnalyticsSnapshot.scope == scope,
                AnalyticsSnapshot.computed_at <= now - REFRESH,
                _unleased(now),
            )
            .values(lease_until=lease)
        )
        return lease if claimed.rowcount else None  # type: ignore[attr-defined]
