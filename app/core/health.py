from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import cache
from typing import Literal

from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import __version__
from app.core.db import ping
from app.core.errors import RETRY_AFTER_SECONDS
from app.core.migrations import alembic_config, head_revision

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    version: str


class Readiness(BaseModel):
    status: Literal["ok", "error"]
    database: Literal["ok", "error"]
    migrations: Literal["ok", "behind", "unknown"]
    worker: Literal["ok", "error", "stalled", "off"] = Field(
        description="`error`: its last pass failed (e.g. the database is unreachable); "
        "`stalled`: no pass finished in 30 s; `off`: it runs as `incident-management worker`"
    )
    version: str


# The in-process worker must have finished a pass this recently (or three poll intervals, if
# longer) for the process to be ready: a worker stuck for longer pages nobody.
WORKER_STALE_SECONDS = 30.0


class Root(BaseModel):
    name: str
    version: str
    docs: str
    redoc: str
    openapi: str
    health: str


@router.get("/", response_model=Root)
async def root(request: Request) -> Root:
    """Name, version and where the documentation is."""
    return Root(
        name=request.app.state.settings.project_name,
        version=__version__,
        docs="/docs",
        redoc="/redoc",
        openapi="/v1/openapi.json",
        health="/health",
    )


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database is unreachable"}},
)
async def health(request: Request) -> object:
    """Liveness and a database round trip."""
    try:
        await asyncio.wait_for(ping(request.app.state.engine), timeout=5)
    except Exception as exc:
        logger.warning("health check: database unreachable: %s", exc.__class__.__name__)
        body = Health(status="error", database="error", version=__version__)
        return JSONResponse(
            body.model_dump(),
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return Health(status="ok", database="ok", version=__version__)


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Not ready: see the fields that are not ok"}
    },
)
async def ready(request: Request) -> object:
    """Readiness, for orchestrators: the database answers, its schema is this code's newest
    migration (`behind`: run `incident-management migrate`; `unknown`: a revision this code does
    not know, e.g. after a rollback), and the in-process worker (when on) has finished a pass in
    the last 30 s and its last pass worked (`off`: it runs as `incident-management worker`, not
    checked here)."""
    state = request.app.state
    database, migrations = "ok", "unknown"
    try:
        version = await asyncio.wait_for(_schema_version(state.engine), timeout=5)
        head = head_revision()
        migrations = "ok" if version == head else "behind" if version in _known() else "unknown"
    except Exception as exc:
        logger.warning("readiness: database unreachable: %s", exc.__class__.__name__)
        database = "error"
    worker = "off"
    if state.settings.worker_in_process:
        stale = timedelta(
            seconds=max(WORKER_STALE_SECONDS, 3 * state.settings.worker_poll_interval_seconds)
        )
        last = state.worker.last_tick_at
        if state.worker.failing_since is not None:
            worker = "error"
        elif last is not None and state.clock.now() - last <= stale:
            worker = "ok"
        else:
            worker = "stalled"
    ok = (database, migrations, worker) in {("ok", "ok", "ok"), ("ok", "ok", "off")}
    body = Readiness(
        status="ok" if ok else "error", database=database, migrations=migrations, worker=worker,
        version=__version__,
    )  # fmt: skip
    if ok:
        return body
    return JSONResponse(
        body.model_dump(), status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


async def _schema_version(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        try:
            return await connection.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception:
            await connection.rollback()
            await ping(engine)  # the database answers; it has no schema yet
            return None


@cache
def _known() -> frozenset[str | None]:
    """Every revision of this code's history (and None: an empty database is behind too)."""
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset({None, *(rev.revision for rev in script.walk_revisions())})
