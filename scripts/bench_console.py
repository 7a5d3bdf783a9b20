"""Time the console's pages at the server (the app's Server-Timing), on the configured database.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/seed_incidents.py 100000
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/bench_console.py

Seed first with scripts/seed_incidents.py. Signs a user in (a console session made directly),
then asks each page `--requests` times after a warm-up, in process, and prints p50/p95/max of the
server time, which includes reading the database and rendering the template. A page that this
build does not have is listed as absent. Stored analytics reports are deleted first, so the
first view of each analytics range shows what computing it costs (`first`); later views read
the stored report, as they do while the worker keeps it fresh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import delete, func, select

from app.analytics.models import AnalyticsSnapshot
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.incidents.models import Incident
from app.main import create_app
from app.ui import auth
from app.users.models import User


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def server_ms(response: httpx.Response) -> float:
    timing = re.search(r"app;dur=([0-9.]+)", response.headers["server-timing"])
    assert timing is not None
    return float(timing.group(1))


async def prepare(settings: Settings) -> tuple[int, int, str]:
    """The number of incidents, the newest incident's id, and a session cookie for an admin."""
    engine = create_engine(settings)
    async with session_scope(create_sessionmaker(engine)) as session:
        total = await session.scalar(select(func.count()).select_from(Incident)) or 0
        newest = await session.scalar(select(func.max(Incident.id))) or 0
        user = await session.scalar(
            select(User).where(User.is_active.is_(True)).order_by(User.role, User.id).limit(1)
        )
        if user is None or not total:
            raise SystemExit("no users or incidents: run scripts/seed_incidents.py first")
        user.role = "admin"  # the admin pages are timed too
        token, _ = await auth.start(session, user=user, settings=settings, now=datetime.now(UTC))
        await session.execute(delete(AnalyticsSnapshot))
    await engine.dispose()
    return total, newest, token


async def bench(settings: Settings, requests: int) -> list[dict[str, object]]:
    total, newest, token = await prepare(settings)
    pages = {
        "incidents (open, newest first)": "/ui/incidents",
        "incidents, all statuses": "/ui/incidents?status=all",
        "incidents, critical, all statuses": "/ui/incidents?status=all&severity=critical",
        "incidents, text search": "/ui/incidents?status=all&q=disk",
        "incidents, assigned to me": "/ui/incidents?mine=1",
        "one incident": f"/ui/incidents/{newest}",
        "analytics, 30 days": "/ui/analytics",
        "analytics, 365 days": "/ui/analytics?days=365",
        "on call": "/ui/oncall",
        "services": "/ui/services",
        "admin: users": "/ui/admin/users",
        "admin: policies": "/ui/admin/policies",
    }
    app = create_app(settings.model_copy(update={"worker_in_process": False}))
    print(f"incidents: {total:,}, requests per page: {requests}")
    figures: list[dict[str, object]] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            cookies={auth.SESSION_COOKIE: token},
        ) as client,
    ):
        for name, path in pages.items():
            first = await client.get(path)
            if first.status_code == 404:
                print(f"{name}: absent")
                continue
            assert first.status_code == 200, (path, first.status_code, first.text[:300])
            cold = server_ms(first)
            for _ in range(5):  # warm-up: connections, caches, plans
                await client.get(path)
            server = []
            for _ in range(requests):
                response = await client.get(path)
                assert response.status_code == 200, path
                server.append(server_ms(response))
            p50, p95 = statistics.median(server), percentile(server, 95)
            print(
                f"{name:36} server ms: p50 {p50:7.1f}  p95 {p95:7.1f}  max {max(server):7.1f}"
                f"  first {cold:7.1f}   ({len(response.content) // 1024} KiB)"
            )
            figures.append(
                {"page": name, "path": path, "incidents": total, "server_p50_ms": p50,
                 "server_p95_ms": p95, "server_max_ms": max(server), "first_ms": cold}
            )  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(bench(Settings(), args.requests))
    if args.json:
        args.json.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
