"""Two real worker processes on PostgreSQL deliver 1,000 pending notifications, none twice."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from app.core.config import DEFAULT_SECRET_KEY
from app.core.crypto import Sealer
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.notifications.models import Notification, WebhookSubscription
from tests.support.databases import migrate
from tests.support.processes import start_worker
from tests.support.settings import make_settings

COUNT = 1000


async def seed(url: str, receiver_url: str) -> None:
    await migrate(url)
    engine = create_engine(make_settings(url))
    now = datetime.now(UTC)
    async with session_scope(create_sessionmaker(engine)) as session:
        hook = WebhookSubscription(
            name="sink", description="", url=f"{receiver_url}/sink", events=["triggered"],
            enabled=True, secret_prefix="whsec_load", created_at=now, updated_at=now,
            # Sealed with the key the worker processes run with (start_worker drops SECRET_KEY).
            secret=Sealer(DEFAULT_SECRET_KEY).seal("whsec_load"),
        )  # fmt: skip
        session.add(hook)
        await session.flush()
        await session.execute(
            insert(Notification),
            [
                {
                    "key": f"load:{i}", "incident_id": None, "channel": "webhook",
                    "webhook_id": hook.id,
                    "address": f"{receiver_url}/sink", "event": "test", "subject": f"load {i}",
                    "body": "", "payload": {"id": f"load:{i}", "event": "ping", "n": i},
                    "status": "pending", "attempts": 0, "next_attempt_at": now,
                    "created_at": now, "updated_at": now,
                }
                for i in range(COUNT)
            ],
        )  # fmt: skip
    await engine.dispose()


async def statuses(url: str) -> dict[str, int]:
    engine = create_engine(make_settings(url))
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            rows = await session.execute(
                select(Notification.status, Notification.attempts, func.count()).group_by(
                    Notification.status, Notification.attempts
                )
            )
            return {f"{status}/{attempts}": n for status, attempts, n in rows}
    finally:
        await engine.dispose()


async def test_two_workers_deliver_1000_notifications_once_each(
    postgres_only, fresh_database_url, tmp_path, http_receiver
):
    await seed(fresh_database_url, http_receiver.url)
    workers = [start_worker(fresh_database_url, tmp_path) for _ in range(2)]
    try:
        deadline = asyncio.get_running_loop().time() + 120
        while (await statuses(fresh_database_url)).get("sent/1", 0) < COUNT:
            assert asyncio.get_running_loop().time() < deadline, (
                await statuses(fresh_database_url),
                [p.log.read_text()[-3000:] for p in workers],
            )
            await asyncio.sleep(0.1)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=30)
    logs = [process.log.read_text() for process in workers]
    assert [p.returncode for p in workers] == [0, 0], [log[-2000:] for log in logs]
    assert await statuses(fresh_database_url) == {"sent/1": COUNT}
    event_ids = Counter(
        {k.lower(): v for k, v in r["headers"].items()}["x-event-id"]
        for r in http_receiver.requests
    )
    assert len(http_receiver.requests) == COUNT
    assert set(event_ids) == {f"load:{i}" for i in range(COUNT)}
    assert max(event_ids.values()) == 1
    delivered_by = [
        sum(int(n) for n in re.findall(r"deliver_notifications handled (\d+) row", log))
        for log in logs
    ]
    assert sum(delivered_by) == COUNT
    assert all(delivered_by), f"one worker did everything: {delivered_by}"
