"""Time the analytics report at the server (the app's Server-Timing), on the configured database.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/seed_incidents.py 100000
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/bench_analytics.py

Seed first with scripts/seed_incidents.py (incidents over the last 90 days). On PostgreSQL this
adds, once, what the report also reads: an executed escalation step for every acknowledged
incident (a minute after it was created) and a sent page for each (to one of the users, 65 s
after). Then it asks each range `--requests` times after a warm-up, as bench_incidents.py does,
and prints p50/p95/p99/max of the server time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

from app.auth.security import create_access_token
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.escalation.models import EscalationEvent
from app.incidents.models import Incident
from app.main import create_app
from app.users.models import User

SPANS = (("30 days", 30, None), ("365 days", 365, None), ("30 days, one service", 30, 3))

STEPS = """
INSERT INTO escalation_events (incident_id, policy_id, run, cycle, step, status, due_at,
    executed_at, delay_minutes, targets, actions, notified_user_ids, detail, created_at)
SELECT id, NULL, 1, 1, 1, 'executed', created_at + interval '1 minute',
    created_at + interval '1 minute', 0, '[]', '[{"type": "notify"}]', '[]', '', created_at
FROM incidents WHERE acknowledged_at IS NOT NULL
"""
PAGES = """
WITH people AS (SELECT array_agg(id ORDER BY id) AS ids FROM users)
INSERT INTO notifications (key, incident_id, escalation_event_id, user_id, channel, address,
    event, subject, body, payload, status, attempts, next_attempt_at, sent_at, created_at,
    updated_at)
SELECT 'bench-page:' || e.id, e.incident_id, e.id,
    people.ids[1 + e.incident_id % cardinality(people.ids)], 'email', 'oncall@bench.example.com',
    'escalated', 'PAGE', '', '{}', 'sent', 1, e.executed_at,
    e.executed_at + interval '5 seconds', e.executed_at, e.executed_at
FROM escalation_events e, people
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def prepare(settings: Settings) -> tuple[int, User]:
    engine = create_engine(settings)
    async with session_scope(create_sessionmaker(engine)) as session:
        total = await session.scalar(select(func.count()).select_from(Incident)) or 0
        user = await session.scalar(select(User).where(User.is_active.is_(True)).limit(1))
        steps = await session.scalar(select(func.count()).select_from(EscalationEvent))
        if engine.dialect.name == "postgresql" and not steps and total:
            started = time.perf_counter()
            await session.execute(text(STEPS))
            await session.execute(text(PAGES))
            print(f"added escalation steps and pages in {time.perf_counter() - started:.1f} s")
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    await engine.dispose()
    if user is None:
        raise SystemExit("no user in the database: run scripts/seed_incidents.py first")
    return total, user


async def bench(settings: Settings, requests: int) -> list[dict[str, object]]:
    total, user = await prepare(settings)
    now = datetime.now(UTC)
    token = create_access_token(
        settings, user_id=user.id, token_version=user.token_version, now=now
    ).token
    app = create_app(settings.model_copy(update={"worker_in_process": False}))
    print(f"incidents: {total:,}, requests per range: {requests}")
    figures: list[dict[str, object]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            for name, days, service_id in SPANS:
                params: dict[str, str | int] = {
                    "start": (now - timedelta(days=days)).isoformat(),
                    "end": now.isoformat(),
                }
                if service_id is not None:
                    params["service_id"] = service_id
                for _ in range(10):  # warm-up: connections, caches, plans
                    await client.get("/v1/analytics/incidents", params=params)
                server, wall = [], []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await client.get("/v1/analytics/incidents", params=params)
                    wall.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
                    timing = re.search(r"app;dur=([0-9.]+)", response.headers["server-timing"])
                    assert timing is not None
                    server.append(float(timing.group(1)))
                report = response.json()
                counted = report["incidents"]["total"]
                print(
                    f"{name}: {counted:,} incidents, "
                    f"{report['escalation_steps']['fired']:,} steps fired\n"
                    f"    server ms: p50 {statistics.median(server):.1f}  "
                    f"p95 {percentile(server, 95):.1f}  p99 {percentile(server, 99):.1f}  "
                    f"max {max(server):.1f}   (client wall p50 {statistics.median(wall):.1f})"
                )
                figures.append({
                    "range": name, "incidents": total, "in_range": counted,
                    "server_p50_ms": statistics.median(server),
                    "server_p95_ms": percentile(server, 95),
                    "server_p99_ms": percentile(server, 99), "server_max_ms": max(server),
                })  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(bench(Settings(), args.requests))
    if args.json:
        args.json.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
