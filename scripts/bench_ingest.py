"""Alert ingestion throughput, latency and server CPU per request, over loopback, against the app
under gunicorn.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_ingest \\
        python scripts/bench_ingest.py --requests 3000 --concurrency 32 --gunicorn-workers 2

Migrates the database (use an empty one) and makes an admin with the tree's CLI, starts gunicorn
with uvicorn workers on a free loopback port (bench/server.py: lean, the in-process escalation
worker off as for a scaled deployment; or, with `--production`, as `make run-prod` starts it),
creates a service with one integration per kind over the API, and then, from this process, sends
alerts with `--concurrency` concurrent senders, for each source in turn:

- `new`: every alert has a fresh dedup key, so every request opens an incident;
- `dedup`: alerts for 100 keys opened beforehand, so every request adds to an open incident.

`app ms` and `db ms` are the CPU time per request of the server's workers and of the PostgreSQL
backends of the benchmark's database during the measured run: steadier than the rates on a
shared, noisy machine. `busy` is the whole machine's busy share over the run (/proc/stat).

Each measured run follows `--warmup` unmeasured requests (new keys), so that it shows the steady
state rather than each connection's first statements. Prints requests per second and latency
p50/p99/max per source and mode, and checks the answers (every request must be 2xx). The load
generator is bench/loadgen.py's bare HTTP/1.1 keep-alive client (about 0.05 ms of CPU per request,
where httpx took 2.5 ms), so nearly all of the machine goes to the server and the database. Each
run is bounded by `--requests` and `--seconds`. Stops the server it started.

Imports nothing of `app`: `--tree` runs another checkout's server (`python -m bench ab`).
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

# `python scripts/bench_ingest.py` (so `python -m bench` runs it) puts scripts/ first on
# sys.path, not the repository: the root is added so that bench and tests.support import.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Meter, Request, drive, latency_figures, rss_mb
from bench.profile import recorded
from bench.server import (
    ServerUnderTest,
    add_server_arguments,
    database_name,
    integration_keys,
    prepare_database,
)

SOURCES = ("generic", "alertmanager", "grafana", "elastic", "pagerduty")
# `api`: incidents created through `POST /v1/incidents/` with a user's token (dedup: the same
# `dedup_key` again answers the open incident).
ALL_SOURCES = (*SOURCES, "api")
DEDUP_KEYS = 100


def request_for(source: str, keys: dict[str, Any], dedup: str) -> Request:
    """Path, JSON body and headers of one alert (or, for `api`, one incident)."""
    if source == "api":
        return "/v1/incidents/", {"title": f"bench {dedup}", "dedup_key": dedup,
                                  "severity": "high", "service_id": keys["service_id"]}, {
            "Authorization": f"Bearer {keys['token']}"}  # fmt: skip
    key = keys[source]
    auth = {"X-Integration-Key": key}
    if source == "generic":
        return "/v1/alerts/generic", {"summary": f"bench {dedup}", "dedup_key": dedup,
                                      "severity": "high"}, auth  # fmt: skip
    if source in ("alertmanager", "grafana"):
        alert = {"status": "firing", "fingerprint": dedup,
                 "labels": {"alertname": "Bench", "severity": "warning", "instance": dedup},
                 "annotations": {"summary": f"bench {dedup}"}}  # fmt: skip
        return f"/v1/alerts/{source}", {"version": "4", "status": "firing", "alerts": [alert]}, auth
    if source == "elastic":
        return "/v1/alerts/elastic", {
            "alert_name": f"bench {dedup}", "message": "m", "severity": "critical",
            "service": {"name": "bench"}, "alert_id": dedup, "state": {"state": "active"},
        }, auth  # fmt: skip
    return "/v2/enqueue", {
        "routing_key": key, "event_action": "trigger", "dedup_key": dedup,
        "payload": {"summary": f"bench {dedup}", "source": "bench", "severity": "error"},
    }, {}  # fmt: skip


def row(source: str, mode: str, found: dict[str, Any]) -> str:
    return (
        f"{source:<13} {mode:<6} {found['ok']:>6} {found['failed']:>6} {found['per_s']:>7.0f} "
        f"{found['p50_ms']:>7.1f} {found['p99_ms']:>7.1f} {found['max_ms']:>7.1f} "
        f"{found['app_cpu_ms']:>7.2f} {found['db_cpu_ms']:>7.2f} {found['machine_busy']:>5.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per source and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="cap per source and mode")
    parser.add_argument(
        "--warmup", type=int, default=1000, help="unmeasured requests before each source and mode"
    )
    parser.add_argument(
        "--sources", default=",".join(SOURCES), help=f"any of {', '.join(ALL_SOURCES)}"
    )
    parser.add_argument(
        "--production", action="store_true", help="the server as `make run-prod` starts it"
    )
    add_server_arguments(parser)
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    sources = args.sources.split(",")
    prepare_database(args.tree, url)
    with ServerUnderTest(
        args.tree, url, args.gunicorn_workers, args.log, production=args.production
    ) as server:
        keys = asyncio.run(integration_keys(server.base, tuple(s for s in sources if s != "api")))
        meter = Meter(server.pid, database_name(url))
        run = f"{time.time_ns():x}"
        results: dict[str, Any] = {"idle_rss_mb": rss_mb(str(server.pid)), "scenarios": []}
        print(f"gunicorn, {args.gunicorn_workers} uvicorn workers "
              f"({'production' if args.production else 'lean'}); {args.concurrency} concurrent "
              f"senders; {url.split(':')[0]}")  # fmt: skip
        print(f"{'source':<13} {'mode':<6} {'ok':>6} {'failed':>6} {'per s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'app ms':>7} {'db ms':>7} "
              f"{'busy':>5}")  # fmt: skip
        for source in sources:
            for mode in ("new", "dedup"):
                if mode == "new":

                    def make(i: int, s: str = source) -> Request:
                        return request_for(s, keys, f"{run}-{s}-new-{i}")
                else:

                    def opener(i: int, s: str = source) -> Request:
                        return request_for(s, keys, f"{run}-{s}-dup-{i}")

                    asyncio.run(
                        drive(server.port, opener, DEDUP_KEYS, args.concurrency, args.seconds)
                    )

                    def make(i: int, s: str = source) -> Request:
                        return request_for(s, keys, f"{run}-{s}-dup-{i % DEDUP_KEYS}")

                if args.warmup:

                    def warm(i: int, s: str = source, m: str = mode) -> Request:
                        return request_for(s, keys, f"{run}-{s}-{m}-warm-{i}")

                    asyncio.run(
                        drive(server.port, warm, args.warmup, args.concurrency, args.seconds)
                    )
                meter.start()
                name = f"{source}-{mode}-c{args.concurrency}" + ("-prod" if args.production else "")
                with recorded(server.pid, args.profile and args.profile / f"{name}.txt"):
                    late, failed, elapsed = asyncio.run(
                        drive(server.port, make, args.requests, args.concurrency, args.seconds)
                    )
                found = {"source": source, "mode": mode, **latency_figures(late, failed, elapsed),
                         **meter.figures(len(late) + failed)}  # fmt: skip
                print(row(source, mode, found), flush=True)
                results["scenarios"].append(found)
        results["peak_rss_mb"] = rss_mb(str(server.pid), "VmHWM")
        results["workers"] = args.gunicorn_workers
        results["concurrency"] = args.concurrency
        results["setup"] = "production" if args.production else "lean"
        if args.json:
            args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
