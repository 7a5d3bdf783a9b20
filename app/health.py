from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app import __version__
from app.db import ping
from app.errors import RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    version: str


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
