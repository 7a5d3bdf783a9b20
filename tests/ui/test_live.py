"""The live-update feed: changes read from the timeline, whichever process made them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import event, insert

from app.incidents.models import TimelineEntry
from app.main import create_app
from app.ui.live import LOOKBACK, ChangeFeed


async def add_entry(sessionmaker, incident_id: int, now, *, entry_id: int | None = None) -> None:
    values = {
        "incident_id": incident_id, "type": "commented", "actor_type": "system",
        "actor_id": None, "actor_name": "system", "data": {}, "created_at": now,
    }  # fmt: skip
    if entry_id is not None:
        values["id"] = entry_id
    async with sessionmaker() as session:
        await session.execute(insert(TimelineEntry).values(**values))
        await session.commit()


async def test_a_change_made_through_another_app_reaches_this_apps_listeners(
    harness, factory, settings, clock, admin
):
    incident = await factory.incident(title="Seen elsewhere")
    other = create_app(settings, clock=clock)  # a second API process on the same database
    async with other.router.lifespan_context(other):
        feed: ChangeFeed = harness.app.state.change_feed  # type: ignore[attr-defined]
        async with feed.listen() as listener:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other), base_url="http://other",
                headers={"Authorization": f"Bearer {factory.token(admin)}"},
            ) as api:  # fmt: skip
                answer = await api.post(f"/v1/incidents/{incident.id}/acknowledge")
                assert answer.status_code == 200
            # The feed's own task reads the timeline about twice a second.
            await asyncio.wait_for(listener.changed.wait(), timeout=10)
            assert listener.take() == [incident.id]
            assert not listener.changed.is_set()


async def test_old_entries_are_not_news_and_late_commits_are_not_lost(harness, factory, clock):
    sessionmaker = harness.app.state.sessionmaker  # type: ignore[attr-defined]
    first = await factory.incident(title="Before")
    second = await factory.incident(title="After")
    feed = ChangeFeed(sessionmaker, interval=3600)  # polled by hand below
    await feed.poll()  # starts at the newest entry: what came before is not announced
    async with feed.listen() as listener:
        await feed.poll()
        assert listener.take() == []
        # An entry with a higher id commits first…
        base = feed.cursor or 0
        await add_entry(sessionmaker, second.id, clock.now(), entry_id=base + 10)
        await feed.poll()
        assert listener.take() == [second.id]
        # …then one with a lower id (its transaction took its id earlier and committed later).
        await add_entry(sessionmaker, first.id, clock.now(), entry_id=base + 5)
        await feed.poll()
        assert listener.take() == [first.id]
        # Announced once only.
        await feed.poll()
        assert listener.take() == []
        assert feed.cursor == base + 10
        # Far enough behind the newest entry, an entry is taken as long since seen.
        await add_entry(sessionmaker, second.id, clock.now(), entry_id=base + 10 + LOOKBACK + 1)
        await feed.poll()
        assert listener.take() == [second.id]


async def test_closing_the_feed_ends_every_stream(harness):
    feed: ChangeFeed = harness.app.state.change_feed  # type: ignore[attr-defined]
    async with feed.listen() as listener:
        assert not listener.closed
        await feed.close()
        assert listener.closed and listener.changed.is_set()
    async with feed.listen() as late:  # a stream opened while stopping ends at once
        assert late.closed


async def test_the_reader_never_holds_sqlite_s_write_lock(harness, backend, factory, clock):
    """The reader reads twice a second per process. On SQLite every other transaction takes the
    write lock at BEGIN; the reader's must not, or each read queues every writer behind it (and
    a reader stopped mid-read could leave the lock held)."""
    if backend != "sqlite":
        pytest.skip("SQLite's write lock (PostgreSQL readers never block writers)")
    import sqlite3

    engine = harness.app.state.engine  # type: ignore[attr-defined]
    path = engine.url.database
    incident = await factory.incident(title="watched")
    feed = ChangeFeed(harness.app.state.sessionmaker, interval=3600)  # type: ignore[attr-defined]
    free: list[bool] = []

    def during_the_read(connection, cursor, statement, *args: object) -> None:
        if "timeline_entries" not in statement or not statement.lstrip().startswith("SELECT"):
            return
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # a writer, while the reader's read is open
            other.execute("ROLLBACK")
            free.append(True)
        except sqlite3.OperationalError:
            free.append(False)
        finally:
            other.close()

    event.listen(engine.sync_engine, "after_cursor_execute", during_the_read)
    try:
        await feed.poll()  # the first read: where to start
        await add_entry(harness.app.state.sessionmaker, incident.id, clock.now())
        await feed.poll()
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", during_the_read)
        await feed.close()
    assert free and all(free), free


async def test_close_stops_a_reader_finishing_after_the_last_page_left(harness):
    # The last page leaves (a stop signal ended every stream): the reader is not cancelled
    # mid-read but finishes by itself; shutdown's close() must still stop it, not leave it
    # reading past the engine's disposal.
    feed = ChangeFeed(harness.app.state.sessionmaker, interval=3600)  # type: ignore[attr-defined]
    async with feed.listen():
        await asyncio.sleep(0.05)  # the reader has read once and sleeps
    readers = set(feed._readers)
    assert len(readers) == 1
    await feed.close()
    assert all(reader.done() for reader in readers) and not feed._readers
