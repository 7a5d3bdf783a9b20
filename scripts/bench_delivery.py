"""Delivery throughput: N pending webhook notifications sent to a local sink by worker processes.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_delivery \\
        python scripts/bench_delivery.py 5000 --workers 2

Migrates the database (which should hold no other pending notifications), starts a webhook sink
on 127.0.0.1 (uvicorn, a bare ASGI app that counts requests and answers 200), loads N pending
deliveries of one webhook subscription to it (signed, as real ones are), starts `--workers`
worker processes, waits until every row is `sent`, and prints notifications per second and how
many requests the sink received (more than N would mean a duplicate). Stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

# `python scripts/bench_delivery.py` (so `python -m bench` runs it) puts scripts/ first on
# sys.path, not the repository: the root is added so that tests.support (ports, processes) imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrations
from app.core.config import Settings
from app.core.crypto import Sealer
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.notifications.models import Notification, WebhookSubscription
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import CLI, stop, stop_all

SINK = """
count = 0
async def app(scope, receive, send):
    global count
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(count, flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    count += 1
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})
"""


async def seed(settings: Settings, count: int, url: str, tag: str) -> None:
    engine = create_engine(settings)
    now = datetime.now(UTC)
    async with session_scope(create_sessionmaker(engine)) as session:
        hook = WebhookSubscription(
            name=f"bench {tag}", description="", url=url, events=["triggered"], enabled=True,
            secret=Sealer.of(settings).seal(f"whsec_bench_{tag}"),
            secret_prefix=f"whsec_{tag}"[:10], created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(hook)
        await session.flush()
        for start in range(0, count, 5000):
            await session.execute(
                insert(Notification),
                [
                    {
                        "key": f"bench:{tag}:{i}", "incident_id": None, "channel": "webhook",
                        "webhook_id": hook.id,
                        "address": url, "event": "test", "subject": f"bench {i}", "body": "",
                        "payload": {"id": f"bench:{tag}:{i}", "event": "ping"},
                        "status": "pending", "attempts": 0, "next_attempt_at": now,
                        "created_at": now, "updated_at": now,
                    }
                    for i in range(start, min(count, start + 5000))
                ],
            )  # fmt: skip
    await engine.dispose()


async def wait_sent(settings: Settings, tag: str, count: int, seconds: float) -> int:
    engine = create_engine(settings)
    deadline = time.monotonic() + seconds
    try:
        while True:
            async with session_scope(create_sessionmaker(engine)) as session:
                sent = await session.scalar(
                    select(func.count()).where(
                        Notification.key.like(f"bench:{tag}:%"), Notification.status == "sent"
                    )
                )
            if (sent or 0) >= count or time.monotonic() > deadline:
                return int(sent or 0)
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    settings = Settings()
    migrations.upgrade()
    workdir = Path(tempfile.mkdtemp(prefix="ims-sink-"))
    (workdir / "sink.py").write_text(SINK)
    port = free_port()
    sink = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "uvicorn", "sink:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--backlog", "2048"],
        cwd=workdir, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    tag = str(time.time_ns())
    workers: list[subprocess.Popen[bytes]] = []
    try:
        wait_for_port(port, sink)
        asyncio.run(seed(settings, args.count, f"http://127.0.0.1:{port}/sink", tag))
        env = os.environ | {"LOG_LEVEL": "WARNING", "OUTBOUND_ALLOW_PRIVATE_NETWORKS": "true"}
        started = time.monotonic()
        workers = [
            subprocess.Popen([CLI, "worker"], env=env, stdout=subprocess.DEVNULL)  # noqa: S603
            for _ in range(args.workers)
        ]
        sent = asyncio.run(wait_sent(settings, tag, args.count, args.timeout))
        elapsed = time.monotonic() - started
    finally:
        stop_all(workers, timeout=60)
        output, _ = stop(sink, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    received = int(output.split()[-1]) if output.split() else 0
    print(
        f"{settings.async_database_url.split(':')[0]}: {sent} of {args.count} notifications sent "
        f"by {args.workers} worker process(es) in {elapsed:.2f} s (from the workers' start): "
        f"{sent / elapsed:,.0f}/s\nthe sink received {received:,} requests"
    )
    if args.json:
        args.json.write_text(json.dumps({
            "sent": sent, "count": args.count, "workers": args.workers, "seconds": elapsed,
            "per_s": sent / elapsed, "received": received,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
