"""Live updates for open pages: Server-Sent Events fed by the database's timeline.

Every change to an incident, whichever process made it (another API process, the worker, an
alert), appends to `timeline_entries`. One task per API process reads the entries after the
last one it saw, about twice a second and only while a page is listening, and tells each
listening page which incidents changed; the page then fetches its live part again (htmx). So a
change shows within about a second across any number of API processes, with no broker and one
small indexed query per process, not one per open page.

PostgreSQL hands out ids before commit, so an entry with a lower id can commit after one with a
higher id. The reader therefore looks back `LOOKBACK` ids behind the highest it has seen and
skips those it has already announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.incidents.models import TimelineEntry

logger = logging.getLogger(__name__)

LOOKBACK = 500
BATCH = 1000


@dataclass(eq=False)
class Listener:
    incident_ids: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def take(self) -> list[int]:
        ids = sorted(self.incident_ids)
        self.incident_ids.clear()
        self.changed.clear()
        return ids


class ChangeFeed:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, interval: float = 0.5
    ) -> None:
        self.sessionmaker = sessionmaker
        self.interval = interval
        self.listeners: set[Listener] = set()
        self.cursor: int | None = None
        self.announced: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        listener = Listener(closed=self._closed)
        self.listeners.add(listener)
        if self._task is None or self._task.done():
            if self.cursor is None:
                await self._start_cursor()
            self._task = asyncio.create_task(self._run(), name="ui-change-feed")
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    async def close(self) -> None:
        """At shutdown: every open stream ends (browsers reconnect to another process)."""
        self._closed = True
        for listener in self.listeners:
            listener.closed = True
            listener.changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _start_cursor(self) -> None:
        """Start from the newest entry; what came before is not news (nor are its neighbours)."""
        async with self.sessionmaker() as session:
            newest = (await session.scalar(select(func.max(TimelineEntry.id)))) or 0
            recent = await session.scalars(
                select(TimelineEntry.id).where(TimelineEntry.id > newest - LOOKBACK)
            )
            self.announced = set(recent)
        self.cursor = newest

    async def _run(self) -> None:
        while self.listeners and not self._closed:
            try:
                await self.poll()
            except Exception:
                logger.exception("Reading the timeline for live updates failed; trying again")
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Read entries past the cursor (and a little behind it) and tell every listener."""
        if self.cursor is None:
            await self._start_cursor()
        cursor = self.cursor or 0
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(TimelineEntry.id, TimelineEntry.incident_id)
                    .where(TimelineEntry.id > cursor - LOOKBACK)
                    .order_by(TimelineEntry.id)
                    .limit(BATCH + LOOKBACK)
                )
            ).all()
        fresh = [(entry_id, incident) for entry_id, incident in rows if entry_id > cursor]
        late = [
            (entry_id, incident)
            for entry_id, incident in rows
            if entry_id <= cursor and entry_id not in self.announced
        ]
        changed = fresh + late
        if not changed:
            return
        self.cursor = max(cursor, *(entry_id for entry_id, _ in changed))
        floor = self.cursor - LOOKBACK
        self.announced = {i for i in self.announced if i > floor}
        self.announced.update(entry_id for entry_id, _ in changed if entry_id > floor)
        incidents = {incident for _, incident in changed}
        for listener in self.listeners:
            listener.incident_ids.update(incidents)
            listener.changed.set()
