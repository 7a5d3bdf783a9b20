"""Dependencies every router uses: the request's session, settings and clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import Clock
from app.core.config import Settings
from app.core.db import WAKE_WORKER, read_only, session_scope

# Methods that only read: their sessions read without a transaction (see `read_only`), unless
# the endpoint says it writes (`writes_when_reading`).
READING_METHODS = frozenset({"GET", "HEAD"})
_WRITES = "_ims_writes_when_reading"
E = TypeVar("E", bound=Callable[..., Any])


def writes_when_reading(endpoint: E) -> E:
    """Mark a GET endpoint that writes (e.g. a cache it fills in the database): its session
    keeps a transaction, as every POST's does."""
    setattr(endpoint, _WRITES, True)
    return endpoint


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with session_scope(request.app.state.sessionmaker) as session:
        if request.method in READING_METHODS:
            endpoint = getattr(request.scope.get("route"), "endpoint", None)
            if not getattr(endpoint, _WRITES, False):
                await read_only(session)
        yield session
    # Something became due (e.g. an escalation step with no delay): the in-process worker runs it
    # now instead of at its next poll.
    if session.info.get(WAKE_WORKER):
        request.app.state.worker.wake()


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


# scope="function": commit before the response is sent, so a failed commit never looks like success.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
