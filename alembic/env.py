"""Alembic environment: async engines, batch mode for SQLite, and connection sharing for callers.

A caller that already holds a connection (tests, the CLI inside an event loop) passes it as
`config.attributes["connection"]`; otherwise the URL comes from the settings (`DATABASE_URL`).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.db import create_engine
from app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=Settings().async_database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_engine(Settings())
    if engine.dialect.name == "sqlite":
        _foreign_keys_off_while_migrating(engine)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
        if engine.dialect.name == "sqlite":
            await connection.run_sync(_check_foreign_keys)
    await engine.dispose()


def _foreign_keys_off_while_migrating(engine: AsyncEngine) -> None:
    """SQLite alters a table by copying it and dropping the original; with foreign keys on,
    that drop runs the ON DELETE actions of every row pointing at it (rows deleted or unlinked).
    Off for the migration's connection (it cannot change inside a transaction), checked after."""

    @event.listens_for(engine.sync_engine, "connect")
    def _off(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows pointing at nothing: {broken[:10]}")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
