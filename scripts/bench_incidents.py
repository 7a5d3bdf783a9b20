"""Time the incident list at the server (the app's Server-Timing), on the configured database.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/bench_incidents.py

Runs the app in-process (its full middleware and lifespan, no network) and asks each query
`--requests` times after a warm-up. Prints p50/p95/p99/max of the server time and the number of
matching rows. Seed first with scripts/seed_incidents.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.auth.security import create_access_token
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.incidents.models import Incident
from app.main import create_app
from app.users.models import User

QUERIES = (
    "/v1/incidents/?status=triggered&severity=critical&limit=50",
    "/v1/incidents/?limit=50",
    "/v1/incidents/?status=triggered&status=acknowledged&limit=50",
    "/v1/incidents/?service_id=3&limit=50",
    "/v1/incidents/?label=team:payments&status=triggered&limit=50",
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench(settings: Settings, requests: int) -> list[dict[str, object]]:
    engine = create_engine(settings)
    async with session_scope(create_sessionmaker(engine)) as session:
        total = await session.scalar(select(func.count()).select_from(Incident))
        user = await session.scalar(select(User).where(User.is_active.is_(True)).limit(1))
    await engine.dispose()
    if user is None:
        raise SystemExit("no user in the database: run scripts/seed_incidents.py first")
    token = create_access_token(
        settings, user_id=user.id, token_version=user.token_version, now=datetime.now(UTC)
    ).token
    app = create_app(settings.model_copy(update={"worker_in_process": False}))
    print(f"database: {engine.dialect.name}, incidents: {total:,}, requests per query: {requests}")
    figures: list[dict[str, object]] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            for query in QUERIES:
                for _ in range(20):  # warm-up: connections, caches, plans
                    await client.get(query)
                server, wall = [], []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await client.get(query)
                    wall.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
                    timing = re.search(r"app;dur=([0-9.]+)", response.headers["server-timing"])
                    assert timing is not None
                    server.append(float(timing.group(1)))
                rows = len(response.json()["items"])
                print(
                    f"{query}\n    server ms: p50 {statistics.median(server):.2f}  "
                    f"p95 {percentile(server, 95):.2f}  p99 {percentile(server, 99):.2f}  "
                    f"max {max(server):.2f}   (client wall p50 {statistics.median(wall):.2f})"
                    f"   rows on page: {rows}"
                )
                figures.append({
                    "query": query, "incidents": total, "rows": rows,
                    "server_p50_ms": statistics.median(server),
                    "server_p95_ms": percentile(server, 95),
                    "server_p99_ms": percentile(server, 99), "server_max_ms": max(server),
                })  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(bench(Settings(), args.requests))
    if args.json:
        args.json.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
