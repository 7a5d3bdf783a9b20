"""The background worker: a named list of jobs, each run in its own transaction, in a loop.

It runs inside the API process by default (it starts and stops with the application) and alone
with `incident-management worker`. Every job is safe to run in several processes at once: rows
are claimed with `FOR UPDATE SKIP LOCKED` on PostgreSQL, and SQLite has a single writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db import session_scope
from app.incidents import service as incident_service

logger = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[AsyncSession, datetime], Awaitable[int]]


async def _wake_snoozed(session: AsyncSession, now: datetime) -> int:
    return await incident_service.wake_snoozed(session, now=now, batch=BATCH)


JOBS: tuple[Job, ...] = (Job("wake_snoozed", _wake_snoozed),)


class Worker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        poll_interval: float = 1.0,
        jobs: Sequence[Job] = JOBS,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.poll_interval = poll_interval
        self.jobs = tuple(jobs)
        self.last_tick_at: datetime | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    async def run_once(self) -> dict[str, int]:
        """Run every job until it has nothing due; a failing job is logged and the rest go on."""
        done: dict[str, int] = {}
        for job in self.jobs:
            done[job.name] = 0
            while not self._stop.is_set():
                try:
                    async with session_scope(self.sessionmaker) as session:
                        count = await job.run(session, self.clock.now())
                except Exception:
                    logger.exception("worker job %s failed; it runs again next tick", job.name)
                    break
                done[job.name] += count
                if count:
                    logger.info("worker job %s handled %d row(s)", job.name, count)
                if count < BATCH:
                    break
        self.last_tick_at = self.clock.now()
        return done

    async def run(self) -> None:
        logger.info("worker started (poll interval %.2f s)", self.poll_interval)
        while not self._stop.is_set():
            await self.run_once()
            self._wake.clear()
            wake = asyncio.ensure_future(self._wake.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait(
                    {wake, stop}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                wake.cancel()
                stop.cancel()
        logger.info("worker stopped")

    def wake(self) -> None:
        """Run the jobs now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stop.set()
