"""`incident-management migrate`: the schema upgrade (app.core.migrations), then the data steps
that need the application's settings, which Alembic's migrations do not have."""

from __future__ import annotations

import asyncio
import logging

from app.audit import recording  # noqa: F401  (the audit log records the resealed secrets)
from app.core.actors import CLI
from app.core.config import Settings
from app.core.crypto import Sealer
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.core.logging import acting_as
from app.core.migrations import current_revision, upgrade_schema
from app.notifications.webhooks import seal_stored_secrets as seal

logger = logging.getLogger(__name__)


def upgrade(revision: str = "head") -> None:
    """Upgrade the database named by the settings, then encrypt any secret stored before
    encryption at rest (that needs SECRET_KEY); call outside a running event loop."""
    upgrade_schema(revision)
    if revision == "head":
        asyncio.run(seal_stored_secrets(Settings()))


async def seal_stored_secrets(settings: Settings) -> int:
    engine = create_engine(settings)
    try:
        with acting_as(CLI):
            async with session_scope(create_sessionmaker(engine)) as session:
                sealed = await seal(session, Sealer.of(settings))
    finally:
        await engine.dispose()
    if sealed:
        logger.info("encrypted %d webhook secret(s) stored in plain text", sealed)
    return sealed


async def revision_of(settings: Settings) -> str | None:
    """The revision the settings' database is at (None: no schema yet)."""
    engine = create_engine(settings)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()
