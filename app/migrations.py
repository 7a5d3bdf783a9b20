"""Run Alembic from code (the CLI, tests) against the settings' database or a given connection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(revision: str = "head") -> None:
    """Upgrade the database named by the settings, then encrypt any secret stored before
    encryption at rest (that needs SECRET_KEY, which migrations do not have); call outside a
    running event loop."""
    command.upgrade(alembic_config(), revision)
    if revision == "head":
        asyncio.run(seal_stored_secrets(Settings()))


async def seal_stored_secrets(settings: Settings) -> int:
    from app.crypto import Sealer
    from app.db import create_engine, create_sessionmaker, session_scope
    from app.notifications.webhooks import seal_stored_secrets as seal

    engine = create_engine(settings)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            sealed = await seal(session, Sealer.of(settings))
    finally:
        await engine.dispose()
    if sealed:
        logger.info("encrypted %d webhook secret(s) stored in plain text", sealed)
    return sealed


async def upgrade_connection(connection: AsyncConnection, revision: str = "head") -> None:
    await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade_connection(connection: AsyncConnection, revision: str = "base") -> None:
    await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))
