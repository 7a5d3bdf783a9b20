"""The worker loop: started by the app's lifespan, survives a failing job, stops cleanly."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select

from app.core.db import session_scope
from app.incidents.models import Incident
from app.main import create_app
from app.worker.runner import Job, Worker
from tests.support.settings import make_settings


async def status_of(sessionmaker, incident_id):
    async with session_scope(sessionmaker) as session:
        return await session.scalar(select(Incident.status).where(Incident.id == incident_id))


async def test_in_process_worker_runs_with_the_app(harness, database_url, clock, factory):
    from datetime import timedelta

    incident = await factory.incident(
        status="snoozed", snoozed_until=clock.now() + timedelta(minutes=5)
    )
    settings = make_settings(
        database_url, worker_in_process=True, worker_poll_interval_seconds=0.05
    )
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        sessions = app.state.sessionmaker
        await asyncio.sleep(0.2)
        assert await status_of(sessions, incident.id) == "snoozed"
        clock.advance(minutes=5)
        for _ in range(100):  # bounded: at most 5 s
            woken = await status_of(sessions, incident.id) == "triggered"
            # The tick is stamped once every job of the pass has run.
            if woken and app.state.worker.last_tick_at == clock.now():
                break
            await asyncio.sleep(0.05)
        assert await status_of(sessions, incident.id) == "triggered"
        assert app.state.worker.last_tick_at == clock.now()
    # Leaving the lifespan stopped the loop.
    assert app.state.worker_task.done() and app.state.worker_task.exception() is None


async def test_a_failing_job_is_logged_and_the_others_still_run(harness, caplog):
    ran = []

    async def broken(ctx):
        raise RuntimeError("boom")

    async def healthy(ctx):
        ran.append(ctx.clock.now())
        return 0

    worker = Worker(
        harness.app.state.sessionmaker,
        harness.clock,
        jobs=[Job("broken", broken), Job("healthy", healthy)],
    )
    with caplog.at_level(logging.ERROR, logger="app.worker.runner"):
        result = await worker.run_once()
        result_again = await worker.run_once()
    await worker.close()
    assert result == result_again == {"broken": 0, "healthy": 0}
    assert len(ran) == 2
    assert caplog.text.count("worker job broken failed") == 2
    # A bug in one job is not the database being away: readiness still says the worker works
    # (every replica would otherwise be taken out for one bad row).
    assert worker.failing_since is None and worker.last_tick_at == harness.clock.now()


async def test_stop_ends_the_loop(harness):
    worker = Worker(harness.app.state.sessionmaker, harness.clock, poll_interval=30)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    worker.stop()
    # Stopping does not wait for the 30 s poll interval.
    await asyncio.wait_for(task, timeout=2)
