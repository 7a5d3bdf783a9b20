"""Alert ingestion throughput and latency, over loopback, against the app under gunicorn.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ims_bench_ingest \\
        python scripts/bench_ingest.py --requests 3000 --concurrency 32 --gunicorn-workers 2

Migrates the database (use an empty one), creates a service with one integration per kind,
starts `gunicorn -k uvicorn.workers.UvicornWorker app.main:app` on a free loopback port (the
in-process escalation worker off, as for a scaled deployment), and then, from this process, sends
alerts with `--concurrency` concurrent senders, for each source in turn:

- `new`: every alert has a fresh dedup key, so every request opens an incident;
- `dedup`: alerts for 100 keys opened beforehand, so every request adds to an open incident.

`app ms` and `db ms` are the CPU time per request of the server's workers and of all PostgreSQL
backends during the measured run: steadier than the rates on a shared, noisy machine.

Each measured run follows `--warmup` unmeasured requests (new keys), so that it shows the steady
state rather than each connection's first statements. Prints requests per second and latency
p50/p99/max per source and mode, and checks the answers (every request must be 2xx). The load
generator is a bare HTTP/1.1 keep-alive client (about 0.05 ms of CPU per request, where httpx
took 2.5 ms), so nearly all of the machine goes to the server and the database. Each run is
bounded by `--requests` and `--seconds`. Stops the server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `python scripts/bench_ingest.py` (so `python -m bench` runs it) puts scripts/ first on
# sys.path, not the repository: the root is added so that tests.support (ports, processes) imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrations
from app.auth.security import create_access_token
from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, session_scope
from app.integrations import service as integration_service
from app.services import service as service_service
from app.users import service as user_service
from app.users.models import Role
from tests.support.ports import free_port
from tests.support.processes import BIN, stop, wait_for_health

SOURCES = ("generic", "alertmanager", "grafana", "elastic", "pagerduty")
# `api`: incidents created through `POST /v1/incidents/` with a user's token (dedup: the same
# `dedup_key` again answers the open incident).
ALL_SOURCES = (*SOURCES, "api")
DEDUP_KEYS = 100


async def setup(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings)
    now = datetime.now(UTC)
    keys = {}
    async with session_scope(create_sessionmaker(engine)) as session:
        service = await service_service.get_or_create(
            session, name=f"bench-{time.time_ns()}", now=now
        )
        for kind in SOURCES:
            _, key = await integration_service.create(
                session, service_id=service.id, name=kind, kind=kind, created_by=None, now=now
            )
            keys[kind] = key
        admin = await user_service.create(
            session, email=f"bench-{time.time_ns()}@example.com", password=secrets.token_urlsafe(),
            full_name="Bench", role=Role.admin, now=now,
        )  # fmt: skip
        token = create_access_token(
            settings, user_id=admin.id, token_version=admin.token_version, now=now
        )
        keys["api"] = f"{token.token}|{service.id}"
    await engine.dispose()
    return keys


def request_for(source: str, key: str, dedup: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Path, JSON body and headers of one alert (or, for `api`, one incident)."""
    if source == "api":
        token, service_id = key.split("|")
        return "/v1/incidents/", {"title": f"bench {dedup}", "dedup_key": dedup,
                                  "severity": "high", "service_id": int(service_id)}, {
            "Authorization": f"Bearer {token}"}  # fmt: skip
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


class Connection:
    """A bare HTTP/1.1 keep-alive connection: a load generator that costs far less CPU than a
    full client, so that on a 2-core machine most of the CPU goes to the server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
        payload = json.dumps(body).encode()
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{head}Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, make: Callable[[int], tuple[str, dict[str, Any], dict[str, str]]],
    count: int, concurrency: int, seconds: float,
) -> tuple[list[float], int, float]:  # fmt: skip
    """Latencies of the successful requests, the number of failures, and the elapsed time."""
    latencies: list[float] = []
    failures = 0
    next_index = 0
    deadline = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal next_index, failures
        connection = await Connection.open(port)
        try:
            while next_index < count and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                path, body, headers = make(index)
                started = time.perf_counter()
                try:
                    status = await connection.post(path, body, headers)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    failures += 1
                    connection.close()
                    connection = await Connection.open(port)
                    continue
                elapsed = time.perf_counter() - started
                if 200 <= status < 300:
                    latencies.append(elapsed)
                else:
                    failures += 1
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies, failures, time.monotonic() - started


def cpu_seconds(match: Callable[[str, str], bool]) -> float:
    """CPU time used so far by the processes whose (pid, command line) match: the server's
    workers, or PostgreSQL's backends (all of them, so run on an otherwise quiet server)."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if match(fields[1], command):  # fields[1]: the parent's pid
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def row(source: str, mode: str, late: list[float], failed: int, elapsed: float) -> str:
    def ms(q: float) -> float:
        return late[min(len(late) - 1, int(q * len(late)))] * 1000 if late else float("nan")

    return (
        f"{source:<13} {mode:<6} {len(late):>6} {failed:>6} {len(late) / elapsed:>7.0f} "
        f"{ms(0.5):>7.1f} {ms(0.99):>7.1f} {ms(1.0):>7.1f}"
    )


def rss_mb(parent: str, field: str = "VmRSS") -> float:
    """Resident memory of the server's worker processes together (VmHWM: each one's peak)."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" not in status:
            continue
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                total += int(line.split()[1])  # kB
    return total / 1024


def figures(late: list[float], failed: int, elapsed: float) -> dict[str, float | int]:
    def ms(q: float) -> float:
        return late[min(len(late) - 1, int(q * len(late)))] * 1000 if late else float("nan")

    return {
        "ok": len(late), "failed": failed, "per_s": len(late) / elapsed,
        "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": ms(1.0),
    }  # fmt: skip


def per_request(cpu: float, count: int) -> str:
    return f"{cpu * 1000 / max(count, 1):>7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per source and mode")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="cap per source and mode")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument(
        "--warmup", type=int, default=1000, help="unmeasured requests before each source and mode"
    )
    parser.add_argument(
        "--sources", default=",".join(SOURCES), help=f"any of {', '.join(ALL_SOURCES)}"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    settings = Settings()
    migrations.upgrade()
    keys = asyncio.run(setup(settings))
    port = free_port()
    # The per-key limit is on (its statement is part of what is measured) but far above the load.
    # The alert-storm budget is off: at this load (thousands of new keys a second from one
    # integration) it would, rightly, send all but the first hundred a minute to one incident.
    env = os.environ | {"WORKER_IN_PROCESS": "false", "LOG_LEVEL": "WARNING",
                        "RATE_LIMIT_INGEST_PER_SECOND": "1000000",
                        "RATE_LIMIT_INGEST_BURST": "1000000",
                        "INGEST_NEW_INCIDENTS_PER_MINUTE": "0"}  # fmt: skip
    server = subprocess.Popen(  # noqa: S603
        [str(BIN / "gunicorn"), "-k", "uvicorn.workers.UvicornWorker",
         "-w", str(args.gunicorn_workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning",
         "app.main:app"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    server_pid = str(server.pid)

    def app_cpu() -> float:
        return cpu_seconds(lambda parent, command: parent == server_pid)

    def db_cpu() -> float:
        return cpu_seconds(lambda parent, command: command.startswith("postgres: "))

    try:
        wait_for_health(base, server, seconds=30)
        run = f"{time.time_ns():x}"
        results: dict[str, Any] = {"idle_rss_mb": rss_mb(server_pid), "scenarios": []}
        print(f"gunicorn, {args.gunicorn_workers} uvicorn workers; {args.concurrency} concurrent "
              f"senders; {settings.async_database_url.split(':')[0]}")  # fmt: skip
        print(f"{'source':<13} {'mode':<6} {'ok':>6} {'failed':>6} {'per s':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'app ms':>7} {'db ms':>7}")  # fmt: skip
        for source in args.sources.split(","):
            key = keys[source]
            for mode in ("new", "dedup"):
                if mode == "new":

                    def make(i: int, s: str = source, k: str = key) -> Any:
                        return request_for(s, k, f"{run}-{s}-new-{i}")
                else:

                    def opener(i: int, s: str = source, k: str = key) -> Any:
                        return request_for(s, k, f"{run}-{s}-dup-{i}")

                    asyncio.run(drive(port, opener, DEDUP_KEYS, args.concurrency, args.seconds))

                    def make(i: int, s: str = source, k: str = key) -> Any:
                        return request_for(s, k, f"{run}-{s}-dup-{i % DEDUP_KEYS}")

                if args.warmup:

                    def warm(i: int, s: str = source, k: str = key, m: str = mode) -> Any:
                        return request_for(s, k, f"{run}-{s}-{m}-warm-{i}")

                    asyncio.run(drive(port, warm, args.warmup, args.concurrency, args.seconds))
                app_before, db_before = app_cpu(), db_cpu()
                client_before = time.process_time()
                late, failed, elapsed = asyncio.run(
                    drive(port, make, args.requests, args.concurrency, args.seconds)
                )
                spent_app, spent_db = app_cpu() - app_before, db_cpu() - db_before
                spent_client = time.process_time() - client_before
                late.sort()
                print(
                    row(source, mode, late, failed, elapsed),
                    per_request(spent_app, len(late) + failed),
                    per_request(spent_db, len(late) + failed),
                )
                results["scenarios"].append({
                    "source": source, "mode": mode, **figures(late, failed, elapsed),
                    "app_cpu_ms": spent_app * 1000 / max(len(late) + failed, 1),
                    "db_cpu_ms": spent_db * 1000 / max(len(late) + failed, 1),
                    "client_cpu_ms": spent_client * 1000 / max(len(late) + failed, 1),
                    # The load generator's part of the CPU the scenario used.
                    "client_share": spent_client / max(spent_client + spent_app + spent_db, 1e-9),
                })  # fmt: skip
        results["peak_rss_mb"] = rss_mb(server_pid, "VmHWM")
        results["workers"] = args.gunicorn_workers
        if args.json:
            args.json.write_text(json.dumps(results))
    finally:
        stop(server, timeout=60)


if __name__ == "__main__":
    main()
