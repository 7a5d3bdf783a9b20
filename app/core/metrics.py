"""Prometheus metrics: what they count, when, and the `/metrics` endpoint.

Counts of things written to the database (incidents, escalation steps, deliveries) are taken only
once their transaction has committed: a writer calls `after_commit(session, …)`, and the session's
commit applies them (a rollback drops them). Counts of answers (HTTP requests, alert outcomes) are
taken when the answer is known.

Under gunicorn each worker process counts for itself; with PROMETHEUS_MULTIPROC_DIR set (the
gunicorn configuration sets it) prometheus-client keeps each process's values in a file there and
a scrape of any worker adds them up. The queue depths are read from the database at each scrape:
they are the same whichever process answers.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

# The classic text format every Prometheus (and most other scrapers) reads.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from app.core.config import MetricsAccess, Settings
from app.core.db import is_unavailable, session_scope
from app.core.errors import NotFound, Unauthorized

logger = logging.getLogger(__name__)

# prometheus-client's multiprocess mode (set by app/gunicorn_conf.py) keeps values in files in this
# directory; a directory named but missing (a setting copied to a container, say) is made rather
# than failing every command at import.
# Decided once, as prometheus-client decided it when imported: the variable set later in this
# process (by importing app.gunicorn_conf, say) does not move values already kept in memory.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
if MULTIPROCESS:
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Seconds: fast answers are most of them; slow ones are what to look at.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How late a step fired after it was due, and how long a page took to go out once written.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

HTTP_REQUESTS = Counter(
    "ims_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "ims_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
INCIDENTS = Counter(
    "ims_incidents",
    "Incidents opened, acknowledged, resolved and reopened, by severity",
    ["event", "severity"],
)
ALERTS = Counter(
    "ims_alerts_received",
    "Alerts received, by integration kind and outcome "
    "(new, deduplicated, acknowledged, resolved, reopened, unchanged, rejected)",
    ["kind", "outcome"],
)
ESCALATION_STEPS = Counter(
    "ims_escalation_steps",
    "Escalation steps that came due, by what became of them "
    "(executed, skipped, failed; cancelled: the incident had just left triggered)",
    ["status"],
)
ESCALATION_LATENESS = Histogram(
    "ims_escalation_step_lateness_seconds",
    "How long after it was due each escalation step fired",
    buckets=LATENESS_BUCKETS,
)
NOTIFICATIONS = Counter(
    "ims_notifications",
    "Notification delivery attempts recorded, by channel and outcome (sent, retry, failed)",
    ["channel", "outcome"],
)
NOTIFICATION_LATENCY = Histogram(
    "ims_notification_delivery_seconds",
    "From a notification being written to its being sent, by channel",
    ["channel"],
    buckets=LATENESS_BUCKETS,
)
DB_POOL_IN_USE = Gauge(
    "ims_db_pool_connections_in_use",
    "Database connections checked out of the pool, by pool (api, ingest, worker)",
    ["pool"],
    multiprocess_mode="livesum",
)

# ---- counts that wait for a commit -------------------------------------------------------------

PENDING = "metrics_pending"


def after_commit(session: AsyncSession | Session, apply: Callable[[], None]) -> None:
    """Run `apply` (a metric update) once the session's transaction commits; never if it rolls back.

    Call it outside any savepoint that may still roll back (after the savepoint has ended)."""
    target = session.sync_session if isinstance(session, AsyncSession) else session
    target.info.setdefault(PENDING, []).append(apply)


@event.listens_for(Session, "after_commit")
def _apply_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released (SQLAlchemy calls that a commit too): not yet for real
    for apply in session.info.pop(PENDING, ()):
        try:
            apply()
        except Exception:  # the data is committed: a metric must not make that look failed
            logger.exception("a metric could not be updated")


@event.listens_for(Session, "after_soft_rollback")
def _drop_pending(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:  # the whole transaction, not a savepoint
        session.info.pop(PENDING, None)


def count_incidents(
    session: AsyncSession | Session, event_name: str, severities: list[str]
) -> None:
    if severities:

        def apply() -> None:
            for severity in severities:
                INCIDENTS.labels(event_name, severity).inc()

        after_commit(session, apply)


def count_fired(session: AsyncSession, fired: list[tuple[str, datetime]], now: datetime) -> None:
    """Escalation steps written (status, when each was due), counted once committed; a step
    cancelled when it came due (its incident had just left `triggered`) did not fire."""
    if fired:

        def apply() -> None:
            for status, due_at in fired:
                ESCALATION_STEPS.labels(status).inc()
                if status != "cancelled":
                    ESCALATION_LATENESS.observe(max(0.0, (now - due_at).total_seconds()))

        after_commit(session, apply)


def count_deliveries(session: AsyncSession, recorded: list[tuple[str, str, float | None]]) -> None:
    """Delivery outcomes written: (channel, outcome, seconds from written to sent or None)."""
    if recorded:

        def apply() -> None:
            for channel, outcome, seconds in recorded:
                NOTIFICATIONS.labels(channel, outcome).inc()
                if seconds is not None:
                    NOTIFICATION_LATENCY.labels(channel).observe(max(0.0, seconds))

        after_commit(session, apply)


# ---- the pool gauge ------------------------------------------------------------------------------


def instrument_pool(engine: AsyncEngine, name: str) -> None:
    """Keep `ims_db_pool_connections_in_use{pool=name}` up to date for this engine's pool."""
    gauge = DB_POOL_IN_USE.labels(name)

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _out(*_: Any) -> None:
        gauge.inc()

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _in(*_: Any) -> None:
        gauge.dec()


# ---- the scrape ----------------------------------------------------------------------------------


class _Snapshot(Collector):
    """Gauges read at scrape time (not kept between scrapes)."""

    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


def exposition(extra: list[GaugeMetricFamily]) -> bytes:
    """Every series in Prometheus's text format: this process's (or, in multiprocess mode, every
    process's) counters, and the gauges read for this scrape."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(registry)
        own = b""
    else:
        own = generate_latest(REGISTRY)
    registry.register(_Snapshot(extra))
    return own + generate_latest(registry)


# Gauges read from the database at each scrape (the worker's queue depths, say), registered by
# the application (`app.state.gauge_readers`): this module knows no domain table.
GaugeReader = Callable[[AsyncSession, datetime], Awaitable[list[GaugeMetricFamily]]]


def gauge_readers(request: Request) -> list[GaugeReader]:
    readers: list[GaugeReader] = getattr(request.app.state, "gauge_readers", [])
    return readers


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Every series in Prometheus's text format. Who may read it is METRICS_ACCESS: `open` (the
    default), `token` (send `Authorization: Bearer <METRICS_TOKEN>`) or `off` (404). While the
    database cannot be reached it still answers, with `ims_database_up 0` and no queue depths."""
    settings: Settings = request.app.state.settings
    if settings.metrics_access == MetricsAccess.off:
        raise NotFound("Not Found")
    if settings.metrics_access == MetricsAccess.token:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.metrics_token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("A valid metrics token is required")
    up = GaugeMetricFamily(
        "ims_database_up", "1 if this scrape could read the queues from the database, else 0"
    )
    try:
        async with session_scope(request.app.state.sessionmaker) as session:
            now = request.app.state.clock.now()
            gauges = [g for read in gauge_readers(request) for g in await read(session, now)]
        up.add_metric([], 1)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # The counters are this process's (or its siblings'): still worth having, above all now.
        gauges = []
        up.add_metric([], 0)
    return Response(exposition([up, *gauges]), media_type=CONTENT_TYPE)
