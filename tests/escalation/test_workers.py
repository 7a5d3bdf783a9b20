"""Real worker processes on PostgreSQL: several fire each step once; a killed one loses nothing.

These are the only escalation tests that wait on the wall clock: they run subprocesses, bounded
in time, and stop every process they start.
"""

from __future__ import annotations

import asyncio
import re
import signal
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from app.core.db import create_engine, create_sessionmaker, session_scope
from app.escalation.models import EscalationEvent
from app.incidents.models import Incident, TimelineEntry
from app.notifications.models import Notification
from app.users.models import User
from app.users.passwords import hash_password
from tests.support.databases import migrate
from tests.support.processes import start_worker
from tests.support.settings import make_settings


@pytest.fixture
def postgres_only(backend):
    if backend != "postgresql":
        pytest.skip("several workers claim rows with SKIP LOCKED: a PostgreSQL feature")


async def seed_due_steps(url: str, count: int) -> None:
    """`count` triggered incidents, each with one due step paging one user (one-step policy)."""
    await migrate(url)
    engine = create_engine(make_settings(url))
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    due = now - timedelta(seconds=5)
    async with session_scope(sessions) as session:
        user = User(
            email="oncall@example.com", full_name="On call", role="user", is_active=True,
            timezone="UTC", hashed_password=hash_password("irrelevant-here"), token_version=0,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(user)
        await session.flush()
        step = {"delay_minutes": 0, "targets": [{"type": "user", "id": user.id}],
                "actions": [{"type": "notify"}]}  # fmt: skip
        snapshot = {"policy_id": None, "name": "load", "repeat_count": 0, "steps": [step]}
        ids = list(
            await session.scalars(
                insert(Incident).returning(Incident.id),
                [
                    {
                        "title": f"Load {i}",
                        "description": "",
                        "status": "triggered",
                        "severity": "high",
                        "source": "api",
                        "alert_count": 1,
                        "labels": {},
                        "custom_fields": {},
                        "escalation_level": 0,
                        "escalation_status": "active",
                        "escalation_run": 1,
                        "escalation_snapshot": snapshot,
                        "version": 1,
                        "created_at": due,
                        "updated_at": due,
                    }
                    for i in range(count)
                ],
            )
        )
        await session.execute(
            insert(EscalationEvent),
            [
                {
                    "incident_id": incident_id,
                    "policy_id": None,
                    "run": 1,
                    "cycle": 1,
                    "step": 1,
                    "status": "scheduled",
                    "due_at": due,
                    "delay_minutes": 0.0,
                    "targets": step["targets"],
                    "actions": step["actions"],
                    "notified_user_ids": [],
                    "detail": "",
                    "created_at": due,
                }
                for incident_id in ids
            ],
        )
    await engine.dispose()


async def counts(url: str) -> dict[str, int]:
    engine = create_engine(make_settings(url))
    try:
        async with session_scope(create_sessionmaker(engine)) as session:

            async def count(query):
                return await session.scalar(query)

            per_event = (
                select(func.count().label("n"))
                .select_from(Notification)
                .group_by(Notification.escalation_event_id)
                .subquery()
            )

            return {
                "executed": await count(
                    select(func.count()).where(EscalationEvent.status == "executed")
                ),
                "scheduled": await count(
                    select(func.count()).where(EscalationEvent.status == "scheduled")
                ),
                "events": await count(select(func.count()).select_from(EscalationEvent)),
                "pages": await count(select(func.count()).select_from(Notification)),
                "distinct_pages": await count(select(func.count(func.distinct(Notification.key)))),
                "escalated": await count(
                    select(func.count()).where(TimelineEntry.type == "escalated")
                ),
                "max_pages_per_event": await count(
                    select(func.coalesce(func.max(per_event.c.n), 0))
                ),
                "late_recorded": await count(
                    select(func.count()).where(EscalationEvent.detail.like("fired % s after due"))
                ),
            }
    finally:
        await engine.dispose()


async def wait_until(predicate, url: str, seconds: float) -> dict[str, int]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        now = await counts(url)
        if predicate(now) or asyncio.get_running_loop().time() > deadline:
            return now
        await asyncio.sleep(0.02)


async def test_four_workers_fire_each_of_500_steps_exactly_once(
    postgres_only, fresh_database_url, tmp_path
):
    # Small batches, and the workers running before the steps exist, so all four compete.
    await migrate(fresh_database_url)
    workers = [start_worker(fresh_database_url, tmp_path, batch=10) for _ in range(4)]
    try:
        await seed_due_steps(fresh_database_url, 500)
        await wait_until(lambda c: c["scheduled"] == 0, fresh_database_url, 90)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=30)
    errors = [process.log.read_text()[-2000:] for process in workers]
    assert [p.returncode for p in workers] == [0, 0, 0, 0], errors
    result = await counts(fresh_database_url)
    assert result["events"] == 500  # nothing scheduled twice (one-step policy: nothing next)
    assert result["executed"] == 500
    assert result["pages"] == result["distinct_pages"] == 500
    assert result["escalated"] == 500
    assert result["max_pages_per_event"] == 1
    fired_by = [
        sum(int(n) for n in re.findall(r"fire_escalations handled (\d+) row", p.log.read_text()))
        for p in workers
    ]
    assert sum(fired_by) == 500, fired_by
    assert sum(1 for n in fired_by if n) >= 2, f"only one worker fired: {fired_by}"


async def test_a_killed_worker_loses_nothing_and_fires_nothing_twice(
    postgres_only, fresh_database_url, tmp_path
):
    total = 6000  # enough that the kill lands while steps remain
    await seed_due_steps(fresh_database_url, total)
    first = start_worker(fresh_database_url, tmp_path)
    try:
        seen = await wait_until(lambda c: c["executed"] > 0, fresh_database_url, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    mid = await counts(fresh_database_url)
    assert 0 < seen["executed"] <= mid["executed"] < total, "the kill did not land mid-run"
    assert mid["executed"] + mid["scheduled"] == total  # the batch in hand was rolled back whole

    second = start_worker(fresh_database_url, tmp_path)
    try:
        await wait_until(lambda c: c["scheduled"] == 0, fresh_database_url, 90)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert second.returncode == 0, second.log.read_text()[-2000:]
    result = await counts(fresh_database_url)
    assert result["executed"] == result["events"] == total
    assert result["pages"] == result["distinct_pages"] == total
    assert result["escalated"] == total
    assert result["late_recorded"] == total  # each event says how late it fired


async def test_sigterm_finishes_the_batch_in_hand_and_exits_cleanly(
    postgres_only, fresh_database_url, tmp_path
):
    total = 6000  # several batches of 500: the signal lands while steps remain
    await seed_due_steps(fresh_database_url, total)
    worker = start_worker(fresh_database_url, tmp_path)
    try:
        await wait_until(lambda c: c["executed"] > 0, fresh_database_url, 60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    log = worker.log.read_text()
    assert worker.returncode == 0, log[-2000:]
    assert "worker stopped" in log
    stopped = await counts(fresh_database_url)
    # Whole batches only: every claimed step was fired and committed, with its page.
    assert stopped["executed"] % 500 == 0 or stopped["executed"] == total, stopped
    assert stopped["executed"] + stopped["scheduled"] == total
    assert stopped["pages"] == stopped["distinct_pages"] == stopped["executed"]
    fired = sum(int(n) for n in re.findall(r"fire_escalations handled (\d+) row", log))
    assert fired == stopped["executed"]
