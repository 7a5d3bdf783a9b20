"""The benchmarks' load generator and meters: a bare HTTP/1.1 keep-alive client driven by N
concurrent senders, and the CPU time of the server, of PostgreSQL and of the whole machine, read
from /proc over a measured interval.

Shared by scripts/bench_ingest.py, scripts/bench_list.py and scripts/bench_calibrate.py, so that
the calibration's trivial requests and the measured ones go through the same client. Imports
nothing of `app`: `python -m bench ab` runs it against another commit's server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What one request is: path, JSON body (None: a GET) and headers.
Request = tuple[str, dict[str, Any] | None, dict[str, str]]


class Connection:
    """A bare HTTP/1.1 keep-alive connection: a load generator that costs far less CPU than a
    full client, so that on a 2-core machine most of the CPU goes to the server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> int:
        """POST `body` as JSON to `path`, or GET `path` when `body` is None; the status (the
        answer's body is read and dropped)."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if body is None:
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        else:
            payload = json.dumps(body).encode()
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

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
        return await self.send(path, body, headers)

    async def get(self, path: str, headers: dict[str, str]) -> int:
        return await self.send(path, None, headers)

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, make: Callable[[int], Request], count: int, concurrency: int, seconds: float
) -> tuple[list[float], int, float]:
    """`count` requests (`make(i)` for i = 0, 1, …) from `concurrency` senders, each on its own
    keep-alive connection, for at most `seconds`: the latencies of the 2xx answers (seconds,
    sorted), the number of failures (other statuses, broken connections) and the elapsed time."""
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
                    status = await connection.send(path, body, headers)
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
    latencies.sort()
    return latencies, failures, time.monotonic() - started


def latency_figures(late: list[float], failed: int, elapsed: float) -> dict[str, float | int]:
    """Count, rate and latency quantiles (ms) of one measured run; `late` sorted."""

    def ms(q: float) -> float:
        return late[min(len(late) - 1, int(q * len(late)))] * 1000 if late else float("nan")

    return {
        "ok": len(late), "failed": failed, "per_s": len(late) / elapsed,
        "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": ms(1.0),
    }  # fmt: skip


# ---- CPU time from /proc ------------------------------------------------------------------------


def cpu_ticks(match: Callable[[str, str], bool]) -> tuple[dict[int, int], dict[int, int]]:
    """CPU time used so far (clock ticks) by each process whose (parent pid, command line) match,
    by PID; and, for each of their parents, what its children that exited (and were reaped) used
    in all."""
    own: dict[int, int] = {}
    reaped: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if match(fields[1], command):  # fields[1]: the parent's pid
            own[int(proc.name)] = int(fields[11]) + int(fields[12])  # utime + stime
            reaped.setdefault(int(fields[1]), 0)
    for parent in reaped:
        try:
            fields = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        reaped[parent] = int(fields[13]) + int(fields[14])  # cutime + cstime
    return own, reaped


def cpu_spent(
    before: tuple[dict[int, int], dict[int, int]], after: tuple[dict[int, int], dict[int, int]]
) -> float:
    """Seconds of CPU between two `cpu_ticks()`: each process's growth (a new one's all of it),
    plus what children that exited in between used (their parents' reaped totals): never
    negative when a process exits or a worker is replaced."""
    alive = sum(max(0, ticks - before[0].get(pid, 0)) for pid, ticks in after[0].items())
    gone = sum(max(0, ticks - before[1].get(pid, ticks)) for pid, ticks in after[1].items())
    return (alive + gone) / os.sysconf("SC_CLK_TCK")


def backends_of(database: str | None) -> Callable[[str, str], bool]:
    """PostgreSQL's backends connected to `database` (their title: `postgres: <cluster>: <user>
    <database> <client>`), or all of PostgreSQL's processes if None: another database's
    load on the same server is then not counted."""
    if database is None:
        return lambda parent, command: command.startswith("postgres: ")
    word = f" {database} "
    return lambda parent, command: command.startswith("postgres: ") and word in command


def machine_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs so far, from /proc/stat (idle counts iowait too)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])  # user … steal; guest is inside user


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The whole machine's busy share between two `machine_ticks()`: 1 - idle / total."""
    idle, total = after[0] - before[0], after[1] - before[1]
    return 1 - idle / total if total > 0 else float("nan")


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


@dataclass
class Meter:
    """CPU spent over one measured interval by the server's workers (children of `server_pid`),
    by PostgreSQL's backends of `database` (with those that exited in between, and any other
    child the postmaster reaped meanwhile: an autovacuum worker, another database's backend), by
    this process (the load generator), and the machine's busy share; `start()` then
    `figures(requests)`."""

    server_pid: int | None
    database: str | None

    def _now(self) -> tuple[Any, Any, float, tuple[int, int]]:
        pid = str(self.server_pid)
        app = cpu_ticks(lambda parent, command: parent == pid and self.server_pid is not None)
        return app, cpu_ticks(backends_of(self.database)), time.process_time(), machine_ticks()

    def start(self) -> None:
        self.before = self._now()

    def figures(self, requests: int) -> dict[str, float]:
        """Per request: `app_cpu_ms`, `db_cpu_ms`, `client_cpu_ms`; `client_share` (the load
        generator's part of the CPU the three used) and `machine_busy` (of all CPUs)."""
        app, db, client, ticks = self._now()
        app, db = cpu_spent(self.before[0], app), cpu_spent(self.before[1], db)
        client -= self.before[2]
        count = max(requests, 1)
        return {
            "app_cpu_ms": app * 1000 / count, "db_cpu_ms": db * 1000 / count,
            "client_cpu_ms": client * 1000 / count,
            "client_share": client / max(client + app + db, 1e-9),
            "machine_busy": busy_share(self.before[3], ticks),
        }  # fmt: skip
