"""Alerts arriving together are ingested together: one transaction for the requests in hand.

Each API process has one `Batcher`. A request hands it a job (the key it presented, the kind of
endpoint, and how to parse its body) and waits for its answer. While a batch is being written,
the jobs that arrive meanwhile queue up and become the next batch (up to `IN_FLIGHT` batches
are written at once, so the process works while one waits on the database), so under load one
transaction (one lock statement, one read, a few multi-row writes and one commit) serves many
requests, and with a single sender a batch is simply that sender's request. Every request is
answered only after the commit that stored its alerts.

A batch's keys are checked with one read and, when RATE_LIMIT_INGEST_PER_SECOND is set, each
integration's bucket (see `app.core.ratelimit`) is taken from for its requests by one statement that
commits at once on its own (on PostgreSQL), so a bucket's row is locked only for that statement:
requests beyond what the bucket holds get a 429 with `Retry-After`, in arrival order.

A job's own problem (an unknown key, the wrong kind, a body that does not parse) is its answer
alone. A batch whose transaction fails before its commit is retried one job per transaction, so
one alert that the database refuses cannot fail the others, and a connection lost since its last
use (the database restarted) costs a retry, not an error: the batcher's connections are not
pinged before use, which would cost a round trip per batch. A failed commit is not retried (it
may have been applied): its requests get the error, and their senders may send again. While the
database cannot be reached at all, a batch's requests are all answered 503 at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.ingest import Alert, Result, ingest_many
from app.core import metrics, ratelimit
from app.core.clock import Clock
from app.core.db import WAKE_WORKER, is_unavailable
from app.core.errors import DomainError, Forbidden, Unauthorized
from app.core.logging import current_request_id
from app.integrations import service as integration_service
from app.integrations.models import Integration

logger = logging.getLogger(__name__)

# Jobs per transaction: enough to amortise a commit, few enough that one batch stays short.
MAX_JOBS = 256
# Batches being written at once, per process: while one waits on the database another is built.
IN_FLIGHT = 2
# `session.info` key: the jobs whose buckets were taken from inside the session's transaction.
TAKEN_HERE = "alerts_taken_here"


@dataclass(eq=False)
class Job:
    key: str
    kind: str
    parse: Callable[[], list[Alert]]  # raises a DomainError for a body that does not fit
    taken: bool = False  # its integration's bucket has been taken from (see `_admit`)
    integration: Integration | None = None  # of the transaction at hand
    refusal: DomainError | None = None  # 401, 403 or 429: its answer, through retries
    answer: asyncio.Future[list[Result]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # Made in the request's context: the id its alerts' rows and log lines carry.
    request_id: str | None = field(default_factory=current_request_id)
    counted: bool = False

    def settle(self, outcome: list[Result] | BaseException) -> None:
        if not self.counted:
            self.counted = True
            _count(self.kind, outcome)
        if self.answer.done():  # the request went away; its alerts are stored all the same
            return
        if isinstance(outcome, BaseException):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(outcome)


class Batcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        reopen_window: timedelta,
        wake: Callable[[], None] = lambda: None,
        limit: ratelimit.Limit | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.reopen_window = reopen_window
        self.limit = limit
        self.wake = wake
        self._pending: list[Job] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: str, kind: str, parse: Callable[[], list[Alert]]) -> list[Result]:
        """Authenticate `key` for endpoints of `kind`, parse, and ingest: the alerts' results."""
        job = Job(key, kind, parse)
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

    async def _run(self, jobs: Sequence[Job], *, reconnected: bool = False) -> None:
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

    async def _one_by_one(self, jobs: Sequence[Job], exc: Exception) -> None:
        if len(jobs) == 1:
            jobs[0].settle(exc)
            return
        logger.warning("alert batch of %d failed (%r); retrying one by one", len(jobs), exc)
        for job in jobs:
            await self._run([job], reconnected=True)

    async def _transaction(self, jobs: Sequence[Job]) -> list[list[Result] | BaseException]:
        now = self.clock.now()
        async with self.sessionmaker() as session:
            try:
                outcomes = await self._ingest(session, jobs, now)
            except BaseException:
                await session.rollback()
                for job in session.info.get(TAKEN_HERE, ()):  # SQLite: the units are back
                    job.taken = False
                    if isinstance(job.refusal, ratelimit.TooManyRequests):
                        job.refusal = None
                raise
            try:
                await session.commit()
            except Exception as exc:
                await session.rollback()  # the connection goes back to the pool clean
                raise CommitFailed(exc) from exc
        if session.info.get(WAKE_WORKER):
            self.wake()
        return outcomes

    async def _admit(self, session: AsyncSession, jobs: Sequence[Job], now: datetime) -> None:
        """Check the jobs' keys (in this transaction: its integrations are the ones written
        with) and, once per job whatever the retries, take their integrations' buckets; each job
        gets its integration, or its refusal (401, 403, 429) which it keeps."""
        keys = {job.key for job in jobs if job.refusal is None}
        known = await integration_service.by_keys(session, keys)
        integrations: dict[int, Integration] = {}  # by the job's place in `jobs`
        refusals: dict[int, DomainError] = {}
        for n, job in enumerate(jobs):
            if job.refusal is not None:
                continue
            try:
                integrations[n] = _check(known, job)
            except DomainError as exc:
                refusals[n] = exc
        untaken = {n: i for n, i in integrations.items() if not jobs[n].taken}
        if self.limit is not None and untaken:
            wanted = Counter(_bucket(integration) for integration in untaken.values())
            grants = await ratelimit.take_soon(session, wanted, self.limit, now=now)
            seen: Counter[str] = Counter()
            for n, integration in untaken.items():  # a bucket's first ones, in arrival order
                bucket = _bucket(integration)
                seen[bucket] += 1
                if seen[bucket] > grants[bucket].admitted:
                    refusals[n] = self._too_many(grants[bucket].retry_after)
        if self.limit is not None and untaken and session.get_bind().dialect.name != "postgresql":
            # Taken in this transaction (see `ratelimit.take_soon`): a rollback gives them back.
            session.info.setdefault(TAKEN_HERE, []).extend(jobs[n] for n in untaken)
        # Only now, once the buckets are taken from: a failure above leaves the jobs untaken.
        for n, job in enumerate(jobs):
            job.taken = True
            job.refusal = job.refusal or refusals.get(n)
            job.integration = integrations.get(n) if job.refusal is None else None

    def _too_many(self, retry_after: int) -> ratelimit.TooManyRequests:
        assert self.limit is not None
        return ratelimit.TooManyRequests(
            f"Too many alerts for this integration key (over {self.limit.capacity} at once, "
            f"then one every {self.limit.interval:g} s); try again in {retry_after} s",
            retry_after=retry_after,
        )

    async def _ingest(
        self, session: AsyncSession, jobs: Sequence[Job], now: datetime
    ) -> list[list[Result] | BaseException]:
        await self._admit(session, jobs, now)
        outcomes: list[list[Result] | BaseException] = []
        items: list[tuple[Integration, Alert]] = []
        owners: list[list[Result]] = []
        for job in jobs:
            integration = job.integration
            if job.refusal is not None or integration is None:
                outcomes.append(job.refusal or Unauthorized("A valid integration key is required"))
                continue
            try:
                alerts = job.parse()
            except DomainError as exc:
                outcomes.append(exc)
                continue
            for alert in alerts:
                alert.request_id = job.request_id
            mine: list[Result] = []
            outcomes.append(mine)
            items += [(integration, alert) for alert in alerts]
            owners += [mine] * len(alerts)
        if items:
            results = await ingest_many(session, items, now=now, reopen_window=self.reopen_window)
            for owner, result in zip(owners, results, strict=True):
                owner.append(result)
        return outcomes


# What each ingestion outcome is called in the metrics.
OUTCOMES = {
    "incident_created": "new",
    "incident_updated": "deduplicated",
    "incident_acknowledged": "acknowledged",
    "incident_resolved": "resolved",
    "incident_reopened": "reopened",
    "no_changes": "unchanged",
}


def _count(kind: str, outcome: list[Result] | BaseException) -> None:
    """`ims_alerts_received`: each stored alert by its outcome; a request refused (bad key, body,
    or over the limit) as one `rejected`, one that could not be stored (database) as `failed`."""
    if isinstance(outcome, BaseException):
        name = "rejected" if isinstance(outcome, DomainError) else "failed"
        metrics.ALERTS.labels(kind, name).inc()
        return
    for name, count in Counter(OUTCOMES[r.outcome] for r in outcome).items():
        metrics.ALERTS.labels(kind, name).inc(count)


class CommitFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _bucket(integration: Integration) -> str:
    return f"ingest:{integration.id}"


def _check(known: dict[str, Integration], job: Job) -> Integration:
    integration = known.get(job.key)
    if integration is None:
        raise Unauthorized("A valid integration key is required")
    if integration.kind != job.kind:
        raise Forbidden(
            f"This key belongs to a {integration.kind} integration; "
            f"send its alerts to the {integration.kind} endpoint"
        )
    return integration
