"""Database plumbing: declarative base, UTC timestamps, engine factory, the per-request session."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.core.clock import Clock
from app.core.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Set in `session.info` by a change that scheduled work: the in-process worker wakes after commit.
WAKE_WORKER = "wake_worker"

# PostgreSQL: the longest a new connection may take (asyncpg's own default is 60 s). A database
# host that drops packets must make requests fail soon (503), not hang for a minute.
CONNECT_TIMEOUT_SECONDS = 10

# 64-bit ids on PostgreSQL; SQLite only auto-increments an `INTEGER PRIMARY KEY`.
IdType = BigInteger().with_variant(Integer(), "sqlite")
# JSON columns: JSONB on PostgreSQL (indexable, `@>` for label filters), JSON text on SQLite.
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; always returns aware UTC datetimes (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(
    settings: Settings,
    *,
    pool_size: int | None = None,
    plan_each_time: bool = False,
    **overrides: Any,
) -> AsyncEngine:
    """The engine of `settings`; `pool_size` (PostgreSQL) defaults to DATABASE_POOL_SIZE, and as
    many again may be opened under load.

    `plan_each_time` (PostgreSQL): plan every execution of a prepared statement with the
    parameters given, never with a generic plan cached on the connection. A generic plan made
    while a table was small (a seq scan) stays in use however large the table grows, until
    statistics change, and autovacuum may be off or late; hot paths over growing tables use it.
    """
    url = settings.async_database_url
    # No round trip before each use (SQLAlchemy's pre-ping costs three statements on asyncpg:
    # begin, a query, rollback): a connection the server has closed is known without one (see
    # `_drop_closed_connections`).
    kwargs: dict[str, Any] = {"echo": settings.database_echo, "pool_pre_ping": False}
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_size"] = pool_size or settings.database_pool_size
        kwargs["max_overflow"] = kwargs["pool_size"]
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECONDS}
        if plan_each_time:
            kwargs["connect_args"]["server_settings"] = {"plan_cache_mode": "force_custom_plan"}
    kwargs.update(overrides)
    engine = create_async_engine(url, **kwargs)
    _name_connect_failures(engine)
    if not url.startswith("sqlite"):
        _drop_closed_connections(engine)
        _refuse_writes_when_reading(engine)
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    return engine


def _drop_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection that the server has closed (a restart, an administrator's
    `pg_terminate_backend`, an idle timeout) is replaced at checkout, without a round trip:
    asyncpg reads its socket all along and marks the connection closed as soon as the server's
    goodbye arrives. A connection cut without a word (a network partition) is found on its first
    statement instead: that request fails (503 if the database is then unreachable) and the pool
    lets go of its other connections (SQLAlchemy's handling of a disconnect)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise sa_exc.DisconnectionError("the server closed this pooled connection")


class DatabaseUnavailable(Exception):
    """The database could not be reached: a new connection was refused, reset, timed out or
    turned away (shutting down, starting up, too many clients). Answered with a 503."""


def _name_connect_failures(engine: AsyncEngine) -> None:
    """Any failure to open a connection becomes `DatabaseUnavailable`.

    Without this, a refused connection surfaces as the driver's bare `OSError` (SQLAlchemy wraps
    only the driver's own exception classes), which nothing can tell from a bug.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot connect to the database: {type(exc).__name__}: {exc}"[:300]
            ) from exc


# Class 08 (connection exception), 57P01-57P03 (administrator or crash shutdown, cannot connect
# now: starting up or shutting down), 53300 (too many connections).
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(error: BaseException) -> bool:
    """Did this fail because the database cannot be reached right now, not because of what was
    asked of it? (A refused or lost connection, a server restarting, no free pool slot.)"""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable | sa_exc.TimeoutError):
            return True
        if isinstance(current, sa_exc.DBAPIError):
            if current.connection_invalidated:
                return True
            state = getattr(current.orig, "sqlstate", None) or ""
            if state.startswith("08") or state in UNAVAILABLE_SQLSTATES:
                return True
        current = current.__cause__
    return False


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and `BEGIN IMMEDIATE` so that writers queue instead of failing.

    pysqlite's own transaction handling starts transactions lazily and cannot upgrade a read
    lock to a write lock under contention; we take the write lock when the transaction starts.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READER):
            connection.exec_driver_sql("BEGIN DEFERRED")  # see reading_scope
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


# Set in `session.info`: the clock that dates what the session records by itself (the audit log).
SESSION_CLOCK = "clock"


def create_sessionmaker(
    engine: AsyncEngine, clock: Clock | None = None
) -> async_sessionmaker[AsyncSession]:
    info = {SESSION_CLOCK: clock} if clock is not None else None
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


@asynccontextmanager
async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the body finishes, roll back when it raises."""
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


READER = "ims_reader"
# Execution option: the connection only reads, one statement at a time (see `read_only`).
READ_ONLY = "ims_read_only"


async def read_only(session: AsyncSession) -> None:
    """Make `session` (before its first statement) read without a transaction on PostgreSQL:
    no `BEGIN` and `COMMIT` round trips, each statement on its own. Under READ COMMITTED, what
    every request runs in, each statement of a transaction sees its own snapshot anyway, so a
    reader sees nothing different; a statement other than a `SELECT` is refused (a bug), so
    that a write can never be committed piecemeal. SQLite keeps its transaction (see
    `_configure_sqlite`)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(
            execution_options={"isolation_level": "AUTOCOMMIT", READ_ONLY: True}
        )


def _refuse_writes_when_reading(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _check(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        reading = connection.get_execution_options().get(READ_ONLY)
        if reading and not statement.lstrip()[:6].upper().startswith("SELECT"):
            raise ReadOnlyViolation(f"a read-only session was asked to run {statement[:80]!r}")


class ReadOnlyViolation(RuntimeError):
    """A read-only session (`read_only`) was asked to write: a bug in the caller."""


@asynccontextmanager
async def reading_scope(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A long read of one consistent snapshot that must not hold up writers: on SQLite a
    deferred transaction (WAL lets it read beside the one writer, where `BEGIN IMMEDIATE` would
    queue every writer behind it); on PostgreSQL a read-only REPEATABLE READ transaction (every
    statement sees the same snapshot). Rolled back at the end: it writes nothing."""
    async with sessionmaker() as session:
        options: dict[str, Any] = {READER: True}
        if session.get_bind().dialect.name == "postgresql":
            options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        await session.connection(execution_options=options)
        try:
            yield session
        finally:
            await session.rollback()


async def lock_named(session: AsyncSession, name: str) -> None:
    """Serialise a check-then-write across processes (PostgreSQL advisory lock for the transaction).

    SQLite needs nothing: `BEGIN IMMEDIATE` already makes every transaction a single writer.
    """
    await lock_names(session, [name])


async def lock_names(session: AsyncSession, names: Iterable[str]) -> None:
    """`lock_named` for many names in one statement, taken in a fixed order (no deadlock between
    two transactions locking overlapping sets)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({zlib.crc32(name.encode()) for name in names})
    if keys:
        # unnest yields the array in order, so the locks are taken in ascending key order.
        await session.execute(_LOCK_KEYS, {"keys": keys})


_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"
)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


# PostgreSQL: lock_not_available (lock_timeout ran out) and deadlock_detected.
LOCK_CONFLICT_SQLSTATES = frozenset({"55P03", "40P01"})


async def limit_lock_waits(session: AsyncSession, *, milliseconds: int = 250) -> None:
    """Background work gives way: a lock held by a request makes it fail fast and retry later.

    Without this a worker statement could wait on a request (a foreign key check on a row the
    request is deleting) while the request waits on the worker: PostgreSQL would then abort one
    of them after a second, possibly the request.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text(f"SET LOCAL lock_timeout = '{int(milliseconds)}ms'"))


def is_lock_conflict(error: BaseException) -> bool:
    return getattr(getattr(error, "orig", None), "sqlstate", None) in LOCK_CONFLICT_SQLSTATES
