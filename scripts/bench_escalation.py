"""Escalation lateness: N incidents whose first step falls due at once (or spread over a window).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_esc \\
        python scripts/bench_escalation.py 10000 --workers 2 [--spread 10]

Migrates the database, loads N triggered incidents each with one step (paging one user) due a few
seconds ahead, all at the same instant or, with `--spread S`, evenly over S seconds; starts
`--workers` worker processes, waits until every step has fired, and prints the lateness
(executed_at - due_at) p50/p99/max and the steps fired per second. The database must be empty:
every executed step in it is counted. Stops the workers it started. An event's `executed_at` is the
time its batch was claimed; the batch commits a few tens of ms later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

# `python scripts/bench_escalation.py` (so `python -m bench` runs it) puts scripts/ first on
# sys.path, not the repository: the root is added so that tests.support (processes) imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrations
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.escalation.models import EscalationEvent
from app.incidents.models import Incident
from app.notifications.models import Notification
from app.users.models import User
from app.users.passwords import hash_password
from tests.support.processes import CLI, stop_all


async def seed(settings: Settings, count: int, lead: float, spread: float = 0.0) -> datetime:
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    due = now + timedelta(seconds=lead)
    async with session_scope(sessions) as session:
        user = User(
            email=f"bench-{time.time_ns()}@example.com", full_name="Bench", role="user",
            is_active=True, timezone="UTC", hashed_password=hash_password("bench-password"),
            token_version=0, created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(user)
        await session.flush()
        step = {
            "delay_minutes": 0,
            "targets": [{"type": "user", "id": user.id}],
            "actions": [{"type": "notify"}],
        }
        snapshot = {"policy_id": None, "name": "bench", "repeat_count": 0, "steps": [step]}
        for start in range(0, count, 5000):
            size = min(5000, count - start)
            ids = list(
                await session.scalars(
                    insert(Incident).returning(Incident.id),
                    [
                        {
                            "title": f"Bench {start + i}", "description": "", "status": "triggered",
                            "severity": "critical", "source": "api", "alert_count": 1,
                            "labels": {}, "custom_fields": {}, "escalation_level": 0,
                            "escalation_status": "active", "escalation_run": 1,
                            "escalation_snapshot": snapshot, "version": 1,
                            "created_at": now, "updated_at": now,
                        }
                        for i in range(size)
                    ],
                )
            )  # fmt: skip
            await session.execute(
                insert(EscalationEvent),
                [
                    {
                        "incident_id": incident_id, "policy_id": None, "run": 1, "cycle": 1,
                        "step": 1, "status": "scheduled", "delay_minutes": 0.0,
                        "due_at": due + timedelta(seconds=spread * (start + i) / count),
                        "targets": step["targets"], "actions": step["actions"],
                        "notified_user_ids": [], "detail": "", "created_at": now,
                    }
                    for i, incident_id in enumerate(ids)
                ],
            )  # fmt: skip
    await engine.dispose()
    return due


async def lateness(
    settings: Settings, due: datetime, count: int, wait: float
) -> tuple[list[float], float, float]:
    """Each step's lateness; when (after the last due time) the last was committed, and sent."""
    engine = create_engine(settings)
    sessions = create_sessionmaker(engine)
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            async with session_scope(sessions) as session:
                done = await session.scalar(
                    select(func.count()).where(EscalationEvent.status == "executed")
                )
            if (done or 0) >= count:
                break
            await asyncio.sleep(0.02)
        all_committed = (datetime.now(UTC) - due).total_seconds()
        while time.monotonic() < deadline:
            async with session_scope(sessions) as session:
                sent = await session.scalar(
                    select(func.count()).where(Notification.status == "sent")
                )
            if (sent or 0) >= count:
                break
            await asyncio.sleep(0.02)
        all_sent = (datetime.now(UTC) - due).total_seconds()
        async with session_scope(sessions) as session:
            rows = await session.execute(
                select(EscalationEvent.due_at, EscalationEvent.executed_at).where(
                    EscalationEvent.status == "executed"
                )
            )
            return (
                [(executed - due_at).total_seconds() for due_at, executed in rows if executed],
                all_committed,
                all_sent,
            )
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes to start")
    parser.add_argument("--lead", type=float, default=8.0, help="seconds until the steps fall due")
    parser.add_argument("--spread", type=float, default=0.0, help="seconds the due times span")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    settings = Settings()
    migrations.upgrade()
    first = asyncio.run(seed(settings, args.count, args.lead, args.spread))
    last = first + timedelta(seconds=args.spread)
    env = os.environ | {"LOG_LEVEL": "WARNING"}
    workers = [
        subprocess.Popen([CLI, "worker"], env=env, stdout=subprocess.DEVNULL)  # noqa: S603
        for _ in range(args.workers)
    ]
    try:
        late, committed, sent = asyncio.run(
            lateness(settings, last, args.count, args.timeout + args.lead + args.spread)
        )
    finally:
        stop_all(workers, timeout=60)
    if not late:
        raise SystemExit("no step fired")
    late.sort()
    print(
        f"{settings.async_database_url.split(':')[0]}: {len(late)} of {args.count} steps fired by "
        f"{args.workers} worker process(es), due "
        + (f"evenly over {args.spread:g} s" if args.spread else "at the same instant")
        + "\n"
        f"lateness s: p50 {statistics.median(late):.3f}  "
        f"p99 {late[min(len(late) - 1, round(0.99 * (len(late) - 1)))]:.3f}  max {late[-1]:.3f}\n"
        f"all committed {committed:.2f} s after the last due time (polled every 20 ms)"
        + (f": {len(late) / committed:,.0f} steps/s" if not args.spread else "")
        + f"\nevery page delivered (log channel) {sent:.2f} s after the last due time"
    )
    if args.json:
        p99 = late[min(len(late) - 1, round(0.99 * (len(late) - 1)))]
        args.json.write_text(json.dumps({
            "steps": len(late), "due": args.count, "workers": args.workers, "spread_s": args.spread,
            "lateness_p50_s": statistics.median(late), "lateness_p99_s": p99,
            "lateness_max_s": late[-1], "committed_after_s": committed,
            "steps_per_s": len(late) / committed if committed > 0 else None,
            "delivered_after_s": sent,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
