"""What the ingestion rate limit costs a batch of alerts: one `take_soon` call, in-process.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_rl \\
        python scripts/bench_ratelimit.py [--calls 2000]

Migrates the database, then times `--calls` sequential calls of `app.core.ratelimit.take_soon` (what
the alert batcher makes once per batch: one bucket, twenty requests, from inside an open
transaction) against the same number of `SELECT 1` statements in that transaction, and prints the
CPU time and the wall time per call of each. The limit is set so high that nothing is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app import migrations
from app.core import ratelimit
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker


async def measure(calls: int) -> dict[str, dict[str, float]]:
    settings = Settings()
    # As the batcher's own engine is made (see app.main).
    engine = create_engine(settings, pool_size=2, plan_each_time=True, pool_pre_ping=False)
    limit = ratelimit.Limit(capacity=10**9, interval=1e-6)
    now = datetime.now(UTC)

    async def select_one(session: AsyncSession) -> None:
        await session.execute(text("SELECT 1"))

    async def take(session: AsyncSession) -> None:
        await ratelimit.take_soon(session, {"ingest:bench": 20}, limit, now=now)

    cases: dict[str, Callable[[AsyncSession], Awaitable[None]]] = {
        "select_1": select_one,
        "take_soon": take,
    }
    figures: dict[str, dict[str, float]] = {}
    try:
        async with create_sessionmaker(engine)() as session:
            for name, call in cases.items():
                for _ in range(100):  # warm-up: connections, statement caches
                    await call(session)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(calls):
                    await call(session)
                figures[name] = {
                    "cpu_ms": (time.process_time() - cpu) / calls * 1000,
                    "wall_ms": (time.perf_counter() - wall) / calls * 1000,
                }
                print(
                    f"{name:10} {figures[name]['cpu_ms']:.3f} ms CPU, "
                    f"{figures[name]['wall_ms']:.3f} ms wall per call",
                    flush=True,
                )
            await session.rollback()
    finally:
        await engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    migrations.upgrade()
    figures = asyncio.run(measure(args.calls))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
