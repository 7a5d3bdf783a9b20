"""The background worker: a named list of jobs, run in a loop that sleeps until work is due.

It runs inside the API process by default (it starts and stops with the application) and alone
with `incident-management worker`. Every job is safe to run in several processes at once: rows
are claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL (SQLite has a single writer), and unique
keys make a second page for the same step impossible.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.http.async_http_client import AsyncTwilioHttpClient

from app.analytics import snapshots as analytics_snapshots
from app.audit import service as audit
from app.core import ratelimit
from app.core.actors import WORKER
from app.core.clock import Clock
from app.core.config import Settings
from app.core.db import is_unavailable, limit_lock_waits, session_scope
from app.core.logging import acting_as
from app.escalation import runs
from app.flows import incidents as incident_flow
from app.flows import paging, recovery
from app.incidents import service as incident_service
from app.notifications import outbox, verification
from app.notifications.channels import Channels, http_client, twilio_http

logger = logging.getLogger(__name__)

BATCH = 500
# Mails that are not about an incident, and how to render them (see app.notifications.outbox).
RENDERERS = {**recovery.RENDERERS, **verification.RENDERERS}


@dataclass(frozen=True)
class Context:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    channels: Channels
    batch: int = BATCH
    stopping: Callable[[], bool] = lambda: False
    audit_retention_days: int = 0


DueLookup = Callable[[AsyncSession], Awaitable[datetime | None]]


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Context], Awaitable[int]]


async def _wake_snoozed(ctx: Context) -> int:
    async with session_scope(ctx.sessions) as session:
        await limit_lock_waits(session)
        return await incident_flow.wake_snoozed(session, now=ctx.clock.now(), batch=ctx.batch)


async def _fire_escalations(ctx: Context) -> int:
    async with session_scope(ctx.sessions) as session:
        await limit_lock_waits(session)
        return await paging.fire_due(session, now=ctx.clock.now(), batch=ctx.batch)


async def _purge_rate_limits(ctx: Context) -> int:
    async with session_scope(ctx.sessions) as session:
        return await ratelimit.purge(session, now=ctx.clock.now(), batch=ctx.batch)


async def _prune_audit_log(ctx: Context) -> int:
    async with session_scope(ctx.sessions) as session:
        await limit_lock_waits(session)
        return await audit.prune(
            session, now=ctx.clock.now(), days=ctx.audit_retention_days, batch=ctx.batch
        )


async def _deliver_notifications(ctx: Context) -> int:
    return await outbox.deliver_due(
        ctx.sessions, clock=ctx.clock, batch=outbox.DELIVERY_BATCH, channels=ctx.channels,
        renderers=RENDERERS,
    )  # fmt: skip


async def _refresh_analytics(ctx: Context) -> int:
    return await analytics_snapshots.refresh_due(
        ctx.sessions, clock=ctx.clock, stopping=ctx.stopping
    )


# Firing never waits behind deliveries: the two run as separate loops (a slow webhook must not
# make the next page late). `run_once` runs both, in order, for tests and one-off passes.
FIRING_JOBS: tuple[Job, ...] = (
    Job("wake_snoozed", _wake_snoozed),
    Job("fire_escalations", _fire_escalations),
)
DELIVERY_JOBS: tuple[Job, ...] = (
    Job("deliver_notifications", _deliver_notifications),
    Job("purge_rate_limits", _purge_rate_limits),  # full buckets: an index probe when none
    Job("prune_audit_log", _prune_audit_log),  # entries past AUDIT_RETENTION_DAYS: a probe
)
# The console's analytics reports take up to a second each at scale: a loop of their own, so
# that neither pages nor deliveries wait behind them.
ANALYTICS_JOBS: tuple[Job, ...] = (Job("refresh_analytics", _refresh_analytics),)
JOBS = FIRING_JOBS + DELIVERY_JOBS + ANALYTICS_JOBS


def _in_firing_loop(job: Job) -> bool:
    """Every job but delivery's and analytics' runs in the loop that fires escalations."""
    return job not in DELIVERY_JOBS and job not in ANALYTICS_JOBS


IDLE_BACKOFF = 0.1


class Worker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        poll_interval: float = 1.0,
        jobs: Sequence[Job] = JOBS,
        http: httpx.AsyncClient | None = None,
        batch: int = BATCH,
        settings: Settings | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings or Settings()
        self.clock = clock
        self.poll_interval = poll_interval
        self.jobs = tuple(jobs)
        self.batch = batch
        self._http = http
        self._aimed: httpx.AsyncClient | None = None
        self._twilio: AsyncTwilioHttpClient | None = None
        self.last_tick_at: datetime | None = None  # the end of the last pass that worked
        self.failing_since: datetime | None = None  # passes have failed since (None: they work)
        self._stop = asyncio.Event()
        self._wakes: list[asyncio.Event] = []

    def _context(self) -> Context:
        if self._http is None:
            self._http = http_client(self.settings)
        if self._aimed is None:
            self._aimed = http_client(self.settings, aimed=True)
        if self._twilio is None and self.settings.twilio_account_sid:
            self._twilio = twilio_http(self.settings)
        return Context(
            self.sessionmaker,
            self.clock,
            Channels(self.settings, self._http, self._aimed, self._twilio),
            self.batch,
            stopping=self._stop.is_set,
            audit_retention_days=self.settings.audit_retention_days,
        )

    async def run_once(self, jobs: Sequence[Job] | None = None) -> dict[str, int]:
        """Run each job until it has nothing due; a failing job is logged and the rest go on."""
        ctx = self._context()
        done: dict[str, int] = {}
        failed = False
        for job in self.jobs if jobs is None else jobs:
            done[job.name] = 0
            while not self._stop.is_set():
                try:
                    with acting_as(WORKER):  # the audit log's actor of what the job changes
                        count = await job.run(ctx)
                except Exception as exc:
                    # Readiness reads this: the database out of reach stops every replica's worker
                    # alike; a bug in one job is logged, not a reason to take replicas out.
                    failed = failed or is_unavailable(exc)
                    if is_unavailable(exc):
                        # Expected while the database restarts: one line, not a traceback a tick.
                        logger.warning(
                            "worker job %s: the database is unavailable (%s); it runs again "
                            "next tick", job.name, _first_line(exc),
                        )  # fmt: skip
                    else:
                        logger.exception("worker job %s failed; it runs again next tick", job.name)
                    break
                done[job.name] += count
                if count:
                    logger.info(
                        "worker job %s handled %d row(s)", job.name, count,
                        extra={"job": job.name, "rows": count},
                    )  # fmt: skip
                if count < self.batch or job in ANALYTICS_JOBS:
                    break  # analytics: a budget per tick, whatever the batch size
        ran = self.jobs if jobs is None else jobs
        if any(_in_firing_loop(job) for job in ran):
            # Readiness reads these: the loop that fires escalations is the one that must live,
            # and a pass that failed (the database unreachable, say) fired nothing.
            if failed:
                self.failing_since = self.failing_since or self.clock.now()
            else:
                self.last_tick_at, self.failing_since = self.clock.now(), None
        return done

    async def seconds_until_due(self, lookups: Sequence[DueLookup]) -> float:
        """Until the earliest due row of these kinds, capped by the poll interval."""
        try:
            async with session_scope(self.sessionmaker) as session:
                moments = [await lookup(session) for lookup in lookups]
        except Exception as exc:
            if not is_unavailable(exc):
                logger.exception("worker could not look up the next due time")
            return self.poll_interval
        due = [m for m in moments if m is not None]
        if not due:
            return self.poll_interval
        wait = (min(due) - self.clock.now()).total_seconds()
        return max(0.0, min(self.poll_interval, wait))

    async def run(self) -> None:
        logger.info("worker started (poll interval %.2f s)", self.poll_interval)
        delivery = [j for j in self.jobs if j in DELIVERY_JOBS]
        analytics = [j for j in self.jobs if j in ANALYTICS_JOBS]
        firing = [j for j in self.jobs if _in_firing_loop(j)]
        loops = []
        if firing:
            loops.append(
                self._loop(
                    firing,
                    [runs.next_due, incident_service.next_snooze_end],
                    then_wake=bool(delivery),
                )
            )
        if delivery:
            loops.append(self._loop(delivery, [outbox.next_due]))
        if analytics:
            # On a tick of its own (a budget, see app/analytics/snapshots.py), not woken by
            # new steps or pages.
            loops.append(
                self._loop(analytics, [], every=analytics_snapshots.TICK_SECONDS, wakeable=False)
            )
        try:
            await asyncio.gather(*loops)
        finally:
            await self.close()
            logger.info("worker stopped")

    async def _loop(
        self,
        jobs: Sequence[Job],
        lookups: Sequence[DueLookup],
        *,
        then_wake: bool = False,
        every: float | None = None,
        wakeable: bool = True,
    ) -> None:
        wake = asyncio.Event()
        if wakeable:
            self._wakes.append(wake)
        while not self._stop.is_set():
            wake.clear()
            done = await self.run_once(jobs)
            if then_wake and any(done.values()):
                self.wake()  # what was fired has pages to deliver
                wake.clear()
            if self._stop.is_set():
                break
            timeout = every if every is not None else await self.seconds_until_due(lookups)
            if timeout == 0 and not any(done.values()):
                # Due rows exist but none could be taken (another worker has them, or their
                # incident is being changed): back off instead of spinning.
                timeout = min(self.poll_interval, IDLE_BACKOFF)
            woken = asyncio.ensure_future(wake.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait(
                    {woken, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                woken.cancel()
                stop.cancel()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._aimed is not None:
            await self._aimed.aclose()
            self._aimed = None
        if self._twilio is not None:
            await self._twilio.close()
            self._twilio = None

    def wake(self) -> None:
        """Run the jobs now rather than at the next poll (something became due)."""
        for event in self._wakes:
            event.set()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stop.set()


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
