"""Bulk-load N realistic incidents (with services, labels, assignees, timelines) for benchmarks.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench python scripts/seed_incidents.py 100000

Status mix of a live system: most incidents resolved, a few open; severities skewed to the
middle; created over the last 90 days. Migrates the database first. Prints what it loaded.

Written against the models' tables alone (and `app.migrations.upgrade`), with an engine of its own
from DATABASE_URL: so that `python -m bench ab` seeds any commit's schema through that commit's
own models (run with its tree first on PYTHONPATH), whatever its other modules are called.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

from pwdlib import PasswordHash
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app import migrations
from app.incidents.models import Assignment, Incident, TimelineEntry
from app.services.models import Service
from app.users.models import User

STATUSES = (("resolved", 80), ("triggered", 10), ("acknowledged", 6), ("snoozed", 4))
SEVERITIES = (("critical", 5), ("high", 15), ("medium", 40), ("low", 25), ("info", 15))
PROBLEMS = (
    "High latency on {svc}", "Error rate above 5% on {svc}", "{svc} pods crash-looping",
    "Disk almost full on {svc} database", "TLS certificate for {svc} expires soon",
    "{svc} queue backlog growing", "Health check failing for {svc}", "Memory pressure on {svc}",
)  # fmt: skip


def pick(weighted: tuple[tuple[str, int], ...], rng: random.Random) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def async_url(url: str) -> str:
    """DATABASE_URL with the async driver the service uses (asyncpg, aiosqlite)."""
    parsed = make_url(url)
    postgresql = parsed.get_backend_name() == "postgresql"
    driver = "postgresql+asyncpg" if postgresql else "sqlite+aiosqlite"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


async def seed(url: str, count: int, chunk: int, rng: random.Random) -> None:
    engine = create_async_engine(async_url(url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    now = datetime.now(UTC)
    async with sessions.begin() as session:
        services = list(await session.scalars(select(Service.id)))
        if not services:
            for i in range(20):
                name = f"service-{i:02d}"
                session.add(
                    Service(
                        name=name, name_key=name, description="", is_active=True,
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
            await session.flush()
            services = list(await session.scalars(select(Service.id)))
        users = list(await session.scalars(select(User.id)))
        if len(users) < 10:
            hashed = PasswordHash.recommended().hash("benchmark-password")
            for i in range(10):
                session.add(
                    User(
                        email=f"oncall{i}-{rng.randrange(10**9)}@bench.example.com",
                        full_name=f"On-call {i}", role="user", is_active=True, timezone="UTC",
                        hashed_password=hashed, token_version=0, created_at=now, updated_at=now,
                    )
                )  # fmt: skip
            await session.flush()
            users = list(await session.scalars(select(User.id)))
        first_id = (await session.scalar(select(func.max(Incident.id)))) or 0

    started = time.perf_counter()
    loaded = 0
    while loaded < count:
        size = min(chunk, count - loaded)
        rows, timelines, assignments = [], [], []
        for i in range(size):
            created = now - timedelta(seconds=rng.uniform(0, 90 * 86400))
            status = pick(STATUSES, rng)
            service = rng.choice(services)
            rows.append(
                {
                    "title": rng.choice(PROBLEMS).format(svc=f"service-{service}"),
                    "description": "Generated for benchmarks.",
                    "status": status,
                    "severity": pick(SEVERITIES, rng),
                    "service_id": service,
                    "source": rng.choice(("api", "alertmanager", "grafana", "elastic")),
                    "dedup_key": f"bench-{first_id + loaded + i}",
                    "alert_count": rng.randint(1, 20),
                    "labels": {"team": rng.choice(("payments", "search", "infra")), "env": "prod"},
                    "custom_fields": {},
                    "escalation_level": 0,
                    "version": 1,
                    "snoozed_until": now + timedelta(hours=1) if status == "snoozed" else None,
                    "acknowledged_at": created + timedelta(minutes=3)
                    if status in ("acknowledged", "resolved") else None,
                    "resolved_at": (created + timedelta(minutes=40)) if status == "resolved"
                    else None,
                    "created_at": created,
                    "updated_at": created,
                }
            )  # fmt: skip
        async with sessions.begin() as session:
            ids = list(await session.scalars(insert(Incident).returning(Incident.id), rows))
            for incident_id, row in zip(ids, rows, strict=True):
                timelines.append(
                    {
                        "incident_id": incident_id, "type": "created", "actor_type": "system",
                        "actor_id": None, "actor_name": "system", "data": {},
                        "created_at": row["created_at"],
                    }
                )  # fmt: skip
                if rng.random() < 0.3:
                    assignments.append(
                        {
                            "incident_id": incident_id, "user_id": rng.choice(users),
                            "role": "responder", "assigned_at": row["created_at"],
                        }
                    )  # fmt: skip
            await session.execute(insert(TimelineEntry), timelines)
            if assignments:
                await session.execute(insert(Assignment), assignments)
        loaded += size
        rate = loaded / (time.perf_counter() - started)
        print(f"  {loaded:>8} / {count} incidents ({rate:,.0f}/s)", flush=True)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:  # fresh planner statistics for the benchmark
            await connection.execute(text("ANALYZE"))
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, help="how many incidents to add")
    parser.add_argument("--chunk", type=int, default=5_000, help="rows per transaction")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same data each run)")
    args = parser.parse_args()
    migrations.upgrade()
    url = os.environ.get("DATABASE_URL", "sqlite:///./data/incidents.db")  # the service's default
    asyncio.run(seed(url, args.count, args.chunk, random.Random(args.seed)))


if __name__ == "__main__":
    main()
