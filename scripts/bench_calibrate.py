"""The calibration of a benchmark run: what the machine gives today to the same HTTP stack doing
nothing, and to PostgreSQL doing the simplest write.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_calibration \\
        python scripts/bench_calibrate.py --requests 10000 --inserts 20000

- `http` (and `http_1`): the lean server of the other scenarios (bench/server.py: gunicorn,
  `--gunicorn-workers` uvicorn workers), driven by the same load generator (bench/loadgen.py) at
  `--concurrency` senders (and at one sender), answering `GET /`: the service's name and version,
  through every middleware, without the database (no statement: `db_cpu_ms` shows it). Requests
  per second, latency, and the server's CPU per request.
- `insert`: single-row INSERTs in autocommit into a scratch table of the same database, straight
  through asyncpg on `--connections` connections: inserts per second and the CPU of the
  database's backends per insert. PostgreSQL only.

`python -m bench` divides every figure of its run by the matching one of these (see
docs/performance.md), so that runs on days when the machine is faster or slower compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench and tests.support, from this checkout (see bench_ingest.py)

from bench.loadgen import Meter, Request, drive, latency_figures
from bench.server import ServerUnderTest, add_server_arguments, database_name, prepare_database

ROUTE = "/"  # app/core/health.py's root: name, version and links, no database


def trivial(i: int) -> Request:
    return ROUTE, None, {}


async def inserts(url: str, count: int, connections: int, seconds: float) -> dict[str, Any]:
    """`count` single-row INSERTs (autocommit) from `connections` connections, bounded by
    `seconds`; rate, latency and the database's CPU per insert."""
    pool = [await asyncpg.connect(url, timeout=10) for _ in range(connections)]
    try:
        await pool[0].execute(
            "CREATE TABLE bench_scratch (id bigserial PRIMARY KEY, key text NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        statement = "INSERT INTO bench_scratch (key) VALUES ($1)"
        for connection in pool:  # warm-up: the prepared statement, the backend's caches
            for i in range(20):
                await connection.execute(statement, f"warm-{i}")
        latencies: list[float] = []
        next_index = 0
        deadline = time.monotonic() + seconds

        async def writer(connection: asyncpg.Connection) -> None:
            nonlocal next_index
            while next_index < count and time.monotonic() < deadline:
                next_index += 1
                started = time.perf_counter()
                await connection.execute(statement, f"key-{next_index}")
                latencies.append(time.perf_counter() - started)

        meter = Meter(None, database_name(url))
        meter.start()
        started = time.monotonic()
        await asyncio.gather(*(writer(c) for c in pool))
        elapsed = time.monotonic() - started
        latencies.sort()
        spent = meter.figures(len(latencies))
        return {**latency_figures(latencies, 0, elapsed), "connections": connections,
                "db_cpu_ms": spent["db_cpu_ms"], "client_cpu_ms": spent["client_cpu_ms"],
                "machine_busy": spent["machine_busy"]}  # fmt: skip
    finally:
        for connection in pool:
            await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000, help="trivial requests")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--inserts", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="cap per measurement")
    add_server_arguments(parser, profile=False)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    prepare_database(args.tree, url)
    results: dict[str, Any] = {"route": f"GET {ROUTE}", "workers": args.gunicorn_workers}
    print(f"{'calibration':<22} {'ok':>6} {'per s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'app ms':>7} {'db ms':>7} {'busy':>5}")  # fmt: skip
    with ServerUnderTest(args.tree, url, args.gunicorn_workers, args.log) as server:
        meter = Meter(server.pid, database_name(url))
        for name, senders, count in (
            ("http", args.concurrency, args.requests),
            ("http_1", 1, max(args.requests // 5, 1)),
        ):
            asyncio.run(drive(server.port, trivial, args.warmup, senders, args.seconds))
            meter.start()
            late, failed, elapsed = asyncio.run(
                drive(server.port, trivial, count, senders, args.seconds)
            )
            if failed:
                raise SystemExit(f"GET {ROUTE}: {failed} requests failed")
            found = latency_figures(late, failed, elapsed) | meter.figures(len(late))
            results[name] = found | {"concurrency": senders}
            print(f"GET {ROUTE}, {senders:>2} sender(s)    {found['ok']:>6} "
                  f"{found['per_s']:>8.0f} {found['p50_ms']:>7.2f} {found['p99_ms']:>7.2f} "
                  f"{found['app_cpu_ms']:>7.3f} {found['db_cpu_ms']:>7.3f} "
                  f"{found['machine_busy']:>5.0%}", flush=True)  # fmt: skip
    if database_name(url) is not None:
        found = asyncio.run(inserts(url, args.inserts, args.connections, args.seconds))
        results["insert"] = found
        print(f"INSERT, {args.connections} connections {found['ok']:>6} {found['per_s']:>8.0f} "
              f"{found['p50_ms']:>7.2f} {found['p99_ms']:>7.2f} {'':>7} "
              f"{found['db_cpu_ms']:>7.3f} {found['machine_busy']:>5.0%}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
