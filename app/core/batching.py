"""Requests that arrive together are written together: one transaction for the requests in hand.

A process has one `Batcher` per kind of work (alerts in, incidents opened through the API). A
request hands it a job and waits for its answer. While a batch is being written, the jobs that
arrive meanwhile queue up and become the next batch (up to `IN_FLIGHT` batches are written at
once, so the process works while one waits on the database), so under load one transaction (a
few multi-row statements and one commit) serves many requests, and with a single sender a batch
is simply that sender's request. Every request is answered only after the commit that stored
its work.

A job's own problem (a bad key, a body that does not fit) is its answer alone: the work answers
it with an exception instead of a result. A batch whose transaction fails before its commit is
retried one job per transaction, so one job that the database refuses cannot fail the others,
and a connection lost since its last use (the database restarted) costs a retry, not an error:
the batcher's connections are not pinged before use, which would cost a round trip per batch. A
failed commit is not retried (it may have been applied): its requests get the error, and their
senders may send again. While the database cannot be reached at all, a batch's requests are all
answered 503 at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.db import WAKE_WORKER, is_unavailable
from app.core.logging import current_request_id

logger = logging.getLogger(__name__)

# Jobs per transaction: enough to amortise a commit, few enough that one batch stays short.
MAX_JOBS = 256
# Batches being written at once, per process: while one waits on the database another is built.
IN_FLIGHT = 2

R = TypeVar("R")


@dataclass(eq=False)
class Job(Generic[R]):
    """One request's work; subclasses add what the work needs."""

    answer: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), kw_only=True
    )
    # Made in the request's context: the id its rows and log lines carry.
    request_id: str | None = field(default_factory=current_request_id, kw_only=True)
    settled: bool = field(default=False, kw_only=True)

    def settle(self, outcome: R | BaseException) -> None:
        if not self.settled:
            self.settled = True
            self.on_settled(outcome)
        if self.answer.done():  # the request went away; its work is stored all the same
            return
        if isinstance(outcome, BaseException):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(outcome)

    def on_settled(self, outcome: R | BaseException) -> None:
        """Once per job, whatever the retries (e.g. to count it)."""


J = TypeVar("J", bound=Job[Any])
J_contra = TypeVar("J_contra", bound=Job[Any], contravariant=True)


class Work(Protocol[J_contra]):
    async def __call__(
        self, session: AsyncSession, jobs: Sequence[J_contra], now: datetime
    ) -> list[Any]:
        """Each job's result, or the exception that is its answer, in order; raising fails the
        whole transaction (it is then tried again one job at a time)."""
        ...

    def rolled_back(self, session: AsyncSession, jobs: Sequence[J_contra]) -> None:
        """Undo what the work noted on the jobs in a transaction that rolled back."""
        ...


class Batcher(Generic[J]):
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        work: Work[J],
        *,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.work = work
        self.wake = wake
        self._pending: list[J] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, job: J) -> Any:
        """Queue `job` for the next batch; its result once committed (or its exception)."""
        self._pending.append(job)
        if len(self._tasks) < IN_FLIGHT:
            # A context of its own: the batch serves many requests, not the one that started it.
            task = asyncio.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: a request cancelled while waiting does not cancel the batch it is part of.
        return await asyncio.shield(job.answer)

    async def close(self) -> None:
        """Let the batch in hand (and those queued behind it) finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drain(self) -> None:
        while self._pending:
            jobs, self._pending = self._pending[:MAX_JOBS], self._pending[MAX_JOBS:]
            try:
                await self._run(jobs)
            except BaseException as exc:  # cancelled at shutdown: nobody waits forever
                for job in jobs:
                    job.settle(exc)
                raise

    async def _run(self, jobs: Sequence[J], *, reconnected: bool = False) -> None:
        try:
            outcomes = await self._transaction(jobs)
        except CommitFailed as failed:
            for job in jobs:
                job.settle(failed.error)
            return
        except Exception as exc:
            if isinstance(exc, DBAPIError) and exc.connection_invalidated and not reconnected:
                # A connection lost since its last use; the pool has let go of the others too.
                await self._run(jobs, reconnected=True)
            elif is_unavailable(exc):
                # The database cannot be reached: one at a time would not fare better. Every
                # request is answered 503 at once, and its sender tries again.
                for job in jobs:
                    job.settle(exc)
            else:
                await self._one_by_one(jobs, exc)
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.settle(outcome)

    async def _one_by_one(self, jobs: Sequence[J], exc: Exception) -> None:
        if len(jobs) == 1:
            jobs[0].settle(exc)
            return
        logger.warning("a batch of %d failed (%r); retrying one by one", len(jobs), exc)
        for job in jobs:
            await self._run([job], reconnected=True)

    async def _transaction(self, jobs: Sequence[J]) -> list[Any]:
        now = self.clock.now()
        async with self.sessionmaker() as session:
            try:
                outcomes = await self.work(session, jobs, now)
            except BaseException:
                await session.rollback()
                self.work.rolled_back(session, jobs)
                raise
            try:
                await session.commit()
            except Exception as exc:
                await session.rollback()  # the connection goes back to the pool clean
                raise CommitFailed(exc) from exc
        if session.info.get(WAKE_WORKER):
            self.wake()
        return outcomes


class CommitFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
