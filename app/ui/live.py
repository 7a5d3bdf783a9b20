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
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import reading_scope
from app.incidents.models import TimelineEntry

logger = logging.getLogger(__name__)

LOOKBACK = 500
BATCH = 1000
# Every feed of this process, so that a stop signal can end their streams (see on_exit_signal).
_FEEDS: weakref.WeakSet[ChangeFeed] = weakref.WeakSet()


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
        # Every reader still running: the current one, and any that are finishing their last
        # read after the last page left (close() stops them all).
        self._readers: set[asyncio.Task[None]] = set()
        self._starting = asyncio.Lock()
        self._polling = asyncio.Lock()
        self._closed = False
        _FEEDS.add(self)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Listener]:
        listener = Listener(closed=self._closed)
        self.listeners.add(listener)
        try:
            # One reader per process, however many pages (re)connect at once.
            async with self._starting:
                if not self._closed and (self._task is None or self._task.done()):
                    # Nobody was listening: what was written meanwhile is not news (a page
                    # fetches its live part when its stream opens).
                    await self._start_cursor()
                    self._task = asyncio.create_task(self._run(), name="ui-change-feed")
                    self._readers.add(self._task)
                    self._task.add_done_callback(self._readers.discard)
            yield listener
        finally:
            self.listeners.discard(listener)
            if not self.listeners and self._task is not None:
                # The last page left: the reader stops by itself after its current read (it is
                # no longer this feed's task), never cancelled in the middle of one; a page
                # arriving meanwhile starts a fresh reader from the newest entry.
                self._task = None

    def end_streams(self) -> None:
        """End every open stream now, and any opened later (the process is stopping)."""
        self._closed = True
        for listener in self.listeners:
            listener.closed = True
            listener.changed.set()

    async def close(self) -> None:
        """At shutdown: every open stream ends (browsers reconnect to another process)."""
        self.end_streams()
        self._task = None
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        for reader in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _start_cursor(self) -> None:
        """Start from the newest entry; what came before is not news (nor are its neighbours)."""
        async with reading_scope(self.sessionmaker) as session:
            newest = (await session.scalar(select(func.max(TimelineEntry.id)))) or 0
            recent = await session.scalars(
                select(TimelineEntry.id).where(TimelineEntry.id > newest - LOOKBACK)
            )
            self.announced = set(recent)
        self.cursor = newest

    def _current(self) -> bool:
        return self._task is asyncio.current_task() and bool(self.listeners) and not self._closed

    async def _run(self) -> None:
        failing = False
        while self._current():
            try:
                await self.poll()
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not twice a second
                    logger.warning("reading the timeline for live updates failed: %s", exc)
                failing = True
            if self._current():
                await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Read entries past the cursor (and a little behind it) and tell every listener."""
        async with self._polling:  # one read at a time: each starts where the last ended
            await self._poll()

    # Reads only, in `reading_scope`: on SQLite a deferred transaction that never holds the
    # write lock (every other transaction there takes it at BEGIN), twice a second per process.

    async def _poll(self) -> None:
        if self.cursor is None:
            await self._start_cursor()
        cursor = self.cursor or 0
        async with reading_scope(self.sessionmaker) as session:
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


def end_all_streams() -> None:
    for feed in list(_FEEDS):
        feed.end_streams()


def on_exit_signal() -> None:
    """From the server's stop-signal handler: end the console's streams at once, so that the
    server's wait for open connections is not spent on pages that would never finish (uvicorn
    waits for connections before it runs the app's shutdown)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_soon_threadsafe(end_all_streams)
