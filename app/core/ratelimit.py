"""Abuse limits shared by every API process: buckets held in the database.

Each limited thing (a client address on the login form, an account's failed logins, an
integration key's alerts…) is a named bucket in `rate_limits`, kept by the generic cell rate
algorithm: a bucket is one number, its *theoretical arrival time* (TAT). A bucket of `capacity`
that refills one unit every `interval` admits a request at `now` while
`max(tat, now) + interval - now <= capacity * interval`, and each admitted unit pushes the TAT on
by `interval`. A bucket whose TAT has passed is full, so rows in the past are dropped by the worker
without changing anything.

One statement takes from many buckets at once (an upsert with RETURNING, the same text on SQLite
and PostgreSQL), and runs in a short transaction of its own (or alone in autocommit): the row lock
is held only for that statement, several processes agree because they share the row, and a
request that fails afterwards still counts (an attempt is an attempt). Times are integer
microseconds since the epoch, so the arithmetic (integer division rounds down for the
non-negative values it is given) is exact and identical on both databases.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    TextClause,
    bindparam,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.errors import DomainError

MICROSECONDS = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RateLimitState(Base):
    """One bucket: its name (`login:ip:…`, `ingest:42`…) and its theoretical arrival time."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    tat: Mapped[int] = mapped_column(BigInteger, index=True)  # µs since the epoch
    admitted: Mapped[int] = mapped_column(Integer)  # of the last request, how many units got in
    requested: Mapped[int] = mapped_column(Integer)  # of the last request, how many were asked


@dataclass(frozen=True)
class Limit:
    """`capacity` units at once, refilled one every `interval` seconds."""

    capacity: int
    interval: float

    @classmethod
    def per(cls, count: float, seconds: float, *, burst: int | None = None) -> Limit | None:
        """`count` per `seconds`, up to `burst` at once (default `count`); None when off (0)."""
        if count <= 0:
            return None
        capacity = burst if burst is not None else max(1, math.floor(count))
        return cls(capacity=max(1, capacity), interval=seconds / count)


@dataclass(frozen=True)
class Grant:
    requested: int
    admitted: int
    retry_after: int  # seconds until one more unit would be admitted (0 when all were)

    @property
    def refused(self) -> int:
        return self.requested - self.admitted


class TooManyRequests(DomainError):
    status_code = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(max(1, retry_after))}


def _micros(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROSECONDS + delta.microseconds


@functools.lru_cache(maxsize=64)
def _compiled(rows: int) -> TextClause:
    """The statement for `rows` buckets, built once (SQLAlchemy then caches its compiled form)."""
    return text(_statement(rows)).bindparams(
        *(bindparam(name, type_=BigInteger) for name in ("now", "interval", "tolerance")),
        *(bindparam(f"key{i}", type_=String) for i in range(rows)),
        *(bindparam(f"tat{i}", type_=BigInteger) for i in range(rows)),
        *(
            bindparam(f"{n}{i}", type_=Integer)
            for n in ("admitted", "requested")
            for i in range(rows)
        ),
    )


def _statement(rows: int) -> str:
    # In SET, every right-hand side sees the row as it was: the admitted count is spelt twice.
    base = "(CASE WHEN rate_limits.tat > :now THEN rate_limits.tat ELSE :now END)"
    room = f"((:now + :tolerance - {base}) / :interval)"
    admitted = (
        f"(CASE WHEN {room} < 0 THEN 0 WHEN {room} > excluded.requested "
        f"THEN excluded.requested ELSE {room} END)"
    )
    values = ", ".join(f"(:key{i}, :tat{i}, :admitted{i}, :requested{i})" for i in range(rows))
    # Only placeholders and this module's own text: nothing a client sent.
    return (
        f"INSERT INTO rate_limits (key, tat, admitted, requested) VALUES {values} "  # noqa: S608
        f"ON CONFLICT (key) DO UPDATE SET tat = {base} + {admitted} * :interval, "
        f"admitted = {admitted}, requested = excluded.requested "
        "RETURNING key, tat, admitted, requested"
    )


async def take_in(
    session: AsyncSession | AsyncConnection,
    wanted: Mapping[str, int],
    limit: Limit,
    *,
    now: datetime,
) -> dict[str, Grant]:
    """Take `wanted[key]` units from each bucket, as many as each has: the grants by key.

    Runs in the caller's transaction: commit soon, the buckets' rows are locked until then."""
    if not wanted:
        return {}
    at = _micros(now)
    interval = max(1, round(limit.interval * MICROSECONDS))
    tolerance = limit.capacity * interval
    params: dict[str, int | str] = {"now": at, "interval": interval, "tolerance": tolerance}
    keys = sorted(wanted)  # rows locked in one order by everyone: no deadlock between takers
    for i, key in enumerate(keys):
        first = min(wanted[key], limit.capacity)  # a bucket without a row is full
        params |= {
            f"key{i}": key,
            f"tat{i}": at + first * interval,
            f"admitted{i}": first,
            f"requested{i}": wanted[key],
        }
    statement = _compiled(len(keys))
    rows = (await session.execute(statement, params)).all()
    grants: dict[str, Grant] = {}
    for key, tat, admitted, requested in rows:
        retry = 0
        if admitted < requested:  # the next unit fits once `tat + interval - now <= tolerance`
            retry = math.ceil((tat + interval - tolerance - at) / MICROSECONDS)
        grants[key] = Grant(requested, admitted, max(retry, 1) if admitted < requested else 0)
    return grants


async def take(
    sessionmaker: async_sessionmaker[AsyncSession],
    wanted: Mapping[str, int],
    limit: Limit,
    *,
    now: datetime,
) -> dict[str, Grant]:
    """`take_in` in a transaction of its own, committed before this returns."""
    async with sessionmaker() as session, session.begin():
        return await take_in(session, wanted, limit, now=now)


@asynccontextmanager
async def _beside(session: AsyncSession) -> AsyncIterator[AsyncSession | AsyncConnection]:
    """Where a caller in the middle of a longer transaction (a batch of alerts) touches buckets.

    On PostgreSQL a connection of its own in autocommit mode: one round trip a statement, no
    BEGIN or COMMIT, and the rows are locked for that statement only (the table is unlogged, so
    its commit does not wait for the disk either). On SQLite `session` itself, joining its
    transaction (a second writer would wait for the first): a batch rolled back undoes it."""
    if session.get_bind().dialect.name != "postgresql":
        yield session
        return
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


async def take_soon(
    session: AsyncSession, wanted: Mapping[str, int], limit: Limit, *, now: datetime
) -> dict[str, Grant]:
    """`take_in` beside `session`'s transaction (see `_beside`)."""
    async with _beside(session) as where:
        return await take_in(where, wanted, limit, now=now)


async def give_back_soon(session: AsyncSession, returned: Mapping[str, int], limit: Limit) -> None:
    """Return units taken by `take_soon` that nothing used (a request refused whole after part of
    it was granted), the same way. A bucket never ends up fuller than full (its time floors at
    now)."""
    interval = max(1, round(limit.interval * MICROSECONDS))
    returned = {key: units for key, units in sorted(returned.items()) if units > 0}
    if not returned:
        return
    async with _beside(session) as where:
        for key, units in returned.items():
            await where.execute(
                update(RateLimitState)
                .where(RateLimitState.key == key)
                .values(tat=RateLimitState.tat - units * interval)
            )


async def check(
    sessionmaker: async_sessionmaker[AsyncSession],
    buckets: Mapping[str, Limit | None],
    *,
    now: datetime,
    detail: str,
) -> None:
    """Take one unit from each bucket (those whose limit is off are skipped); `TooManyRequests`
    naming the longest wait when any is empty. A unit is taken even from the others then."""
    retry = 0
    async with sessionmaker() as session, session.begin():
        for key, limit in buckets.items():
            if limit is not None:
                retry = max(
                    retry, (await take_in(session, {key: 1}, limit, now=now))[key].retry_after
                )
    if retry:
        raise TooManyRequests(f"{detail}; try again in {retry} s", retry_after=retry)


async def refill(session: AsyncSession, key: str, *, now: datetime) -> None:
    """Make a bucket full again (a successful login clears its account's failures), in the
    caller's transaction (on SQLite a second writer would wait for the caller's)."""
    await session.execute(
        update(RateLimitState).where(RateLimitState.key == key).values(tat=_micros(now))
    )


async def purge(session: AsyncSession, *, now: datetime, batch: int) -> int:
    """Drop up to `batch` full buckets (TAT passed): the same as having no row.

    The condition is checked again on each row deleted (a bucket taken from meanwhile is no
    longer full), and rows someone holds are skipped, so a purge never races a take."""
    at = _micros(now)
    stale = (
        select(RateLimitState.key)
        .where(RateLimitState.tat <= at)
        .order_by(RateLimitState.key)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(RateLimitState).where(RateLimitState.key.in_(stale), RateLimitState.tat <= at)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
