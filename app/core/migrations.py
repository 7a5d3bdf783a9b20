"""Run Alembic from code (the CLI, tests, readiness) against the settings' database or a given
connection. The data steps that follow a schema upgrade live in `app.migrations`."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# The checkout (or the image's /app): alembic.ini and alembic/ lie beside the `app` package.
ROOT = Path(__file__).resolve().parent.parent.parent


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["configure_logger"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_schema(revision: str = "head") -> None:
    """Upgrade the database named by the settings (alembic/env.py reads them); call outside a
    running event loop."""
    command.upgrade(alembic_config(), revision)


async def upgrade_connection(connection: AsyncConnection, revision: str = "head") -> None:
    await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade_connection(connection: AsyncConnection, revision: str = "base") -> None:
    await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


@cache
def head_revision() -> str | None:
    """The newest revision this code's migrations know (read once: it changes with the code)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: no schema yet)."""
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
