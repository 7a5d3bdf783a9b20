"""What the fault tests start and stop: a private PostgreSQL cluster, the service's processes,
late loopback peers, and a small API client for setting things up.

Everything listens on 127.0.0.1 and is ended by the PID it was started with. Every wait has a
deadline; a deadline that passes fails the test with what it was waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from run_e2e_tests import stop_smtp
from tests.conftest import TEST_SECRET

BIN = Path(sys.executable).parent
CLI = str(BIN / "incident-management")
SIGNING_SECRET = "fault-test-signing-secret"
PASSWORD = "a long enough passphrase"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_until(
    what: str, probe: Callable[[], Awaitable[T | None]], *, seconds: float, every: float = 0.2
) -> T:
    """Poll `probe` until it returns something other than None; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(every)


# ---- PostgreSQL ----------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The directory of initdb and pg_ctl: FAULT_PG_BIN, pg_config's, or the newest Debian one."""
    given = os.environ.get("FAULT_PG_BIN")
    if given:
        return Path(given)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        if found and (Path(found) / "initdb").exists():
            return Path(found)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise AssertionError(
            "the fault tests need PostgreSQL's server binaries (initdb, pg_ctl) for a private "
            "cluster: install them or set FAULT_PG_BIN"
        )
    return versions[-1].parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of our own, on a free loopback port.

    The shared test server must never be restarted, so the restart scenario runs against this.
    initdb refuses to run as root: as root, the cluster belongs to the `postgres` OS user.
    """

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="ims-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, user="postgres")

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=on -c max_connections=100"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Stop the cluster if it runs (by its postmaster's PID as a last resort); remove it."""
        pid = self.postmaster_pid()
        if pid is not None:
            try:
                self.stop("immediate")
            except (AssertionError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


async def create_database(server_url: str, name: str) -> str:
    connection = await asyncpg.connect(server_url, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"', timeout=60)
    finally:
        await connection.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(server_url: str, name: str) -> None:
    connection = await asyncpg.connect(server_url, timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=60)
    finally:
        await connection.close()


async def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args, timeout=30)
        return rows
    finally:
        await connection.close()


# ---- the service's processes ---------------------------------------------------------------------


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "SMTP_", "WORKER_", "NOTIFY_", "TEST_"))
    }
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        ENVIRONMENT="test",
        LOG_LEVEL="WARNING",
        DATABASE_POOL_SIZE="3",  # several processes share the test server
        WORKER_POLL_INTERVAL_SECONDS="0.2",
        # Another change adds an ingestion rate limit; 0 turns it off (ignored until then).
        RATE_LIMIT_INGEST_PER_SECOND="0",
        OUTBOUND_ALLOW_PRIVATE_NETWORKS="true",
        WEBHOOK_SIGNING_SECRET=SIGNING_SECRET,
        PUBLIC_BASE_URL="http://127.0.0.1",
    )
    env.update(extra)
    return env


class Process:
    """One of the service's processes, its output in a log file; ended by its PID."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = logs / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} runs already"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n---- start {self.starts} ----\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no rollback by the process itself."""
        if self.running:
            assert self.popen is not None
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if not self.running:
            return
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


class Processes:
    """The processes a test started; all of them are ended at the end of the test."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Process] = []

    def api(self, name: str, env: dict[str, str], *, in_process_worker: bool = True) -> Api:
        port = free_port()
        args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
        env = env | {"WORKER_IN_PROCESS": "true" if in_process_worker else "false"}
        process = Api(name, [*args, "--port", str(port)], env, self.logs, port)
        self.started.append(process)
        return process

    def worker(self, name: str, env: dict[str, str]) -> Process:
        process = Process(name, [CLI, "worker"], env, self.logs)
        self.started.append(process)
        return process

    def migrate(self, env: dict[str, str]) -> None:
        done = subprocess.run(
            [CLI, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def end_all(self) -> None:
        for process in self.started:
            process.stop()


class Api(Process):
    def __init__(
        self, name: str, args: list[str], env: dict[str, str], logs: Path, port: int
    ) -> None:
        super().__init__(name, args, env, logs)
        self.base_url = f"http://127.0.0.1:{port}"

    async def healthy(self, seconds: float = 30) -> None:
        async def probe() -> bool | None:
            if not self.running:
                raise AssertionError(f"{self.name} exited: {self.tail()}")
            try:
                async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                    answer = await client.get(f"{self.base_url}/health")
            except httpx.TransportError:
                return None
            return True if answer.status_code == 200 else None

        await wait_until(f"{self.name}'s /health", probe, seconds=seconds)


# ---- late peers ----------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd on a port chosen in advance, so the service can be pointed at it before it runs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []  # envelope recipients, mail
        self._controller: Any = None

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        mail = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), mail))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        stop_smtp(controller)


class Receiver:
    """A webhook receiver on a port chosen in advance; answers 200 (after `delay`) and records
    every POST as it arrives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.delay = 0.0  # seconds each answer waits: a slow receiver keeps deliveries in flight
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        receiver, lock = self, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.requests.append((self.path, dict(self.headers), body))
                time.sleep(receiver.delay)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# ---- setting things up through the API -----------------------------------------------------------


class Admin:
    """An admin's client for one API process: signs up (the first user is admin) and sets up."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=20, trust_env=False)
        self.token = ""

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = await self.client.request(method, path, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    async def sign_up(self, email: str = "admin@example.com") -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "full_name": "Admin"}
        user: dict[str, Any] = await self.call("POST", "/v1/auth/signup", 201, json=body)
        token = await self.call(
            "POST", "/v1/auth/login/access-token", data={"username": email, "password": PASSWORD}
        )
        self.token = token["access_token"]
        self.client.headers["Authorization"] = f"Bearer {self.token}"
        return user

    async def user(self, email: str) -> dict[str, Any]:
        body = {"email": email, "password": PASSWORD, "full_name": email, "role": "user"}
        user: dict[str, Any] = await self.call("POST", "/v1/users/", 201, json=body)
        return user

    async def integration(self, service_id: int, kind: str = "generic") -> str:
        found = await self.call(
            "POST", f"/v1/services/{service_id}/integrations/", 201,
            json={"name": kind, "kind": kind},
        )  # fmt: skip
        key: str = found["key"]
        return key

    async def service(self, name: str, policy_id: int | None = None) -> dict[str, Any]:
        body = {"name": name, "escalation_policy_id": policy_id}
        service: dict[str, Any] = await self.call("POST", "/v1/services/", 201, json=body)
        return service

    async def policy(self, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        body = {"name": "fault", "priority": 1, "steps": steps} | fields
        policy: dict[str, Any] = await self.call("POST", "/v1/escalation/policies/", 201, json=body)
        return policy


# ---- load ---------------------------------------------------------------------------------------


class Answers:
    """Every answer the load got: (what was asked, status or the transport error's name)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int | str, httpx.Response | None]] = []
        self.slowest = 0.0  # seconds: the longest any request took to be answered (or fail)

    async def call(
        self, client: httpx.AsyncClient, what: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request, bounded by the client timeout; a transport error is recorded, not raised."""
        started = time.monotonic()
        try:
            answer = await client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            self.log.append((what, f"timeout ({type(exc).__name__})", None))
            return None
        except httpx.TransportError as exc:
            self.log.append((what, type(exc).__name__, None))
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        self.log.append((what, answer.status_code, answer))
        return answer

    def statuses(self) -> dict[int | str, int]:
        counts: dict[int | str, int] = {}
        for _, status, _ in self.log:
            counts[status] = counts.get(status, 0) + 1
        return counts

    def unexpected(self, allowed: set[int | str]) -> list[str]:
        return [
            f"{what}: {status} {answer.text[:200] if answer is not None else ''}"
            for what, status, answer in self.log
            if status not in allowed
        ]


def load_client(
    base_url: str, *, token: str | None = None, seconds: float = 15
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url, timeout=seconds, headers=headers, trust_env=False,
        limits=httpx.Limits(max_connections=20),
    )  # fmt: skip


# ---- what must hold afterwards -------------------------------------------------------------------


async def escalation_problems(url: str) -> list[str]:
    """Each due step executed exactly once, and each of its pages written once; [] when so.

    - nothing scheduled is overdue (every step that came due has fired or was cancelled);
    - one event row per incident, run, cycle and step;
    - an executed step has exactly one page per person it paged and channel, for exactly the
      people it says it paged; a step that did not execute paged nobody;
    - one `escalated` timeline entry per executed step.

    Read in one repeatable-read snapshot: the workers may still be firing while this looks.
    """
    connection = await asyncpg.connect(url, timeout=10)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            return await _escalation_problems(connection)
    finally:
        await connection.close()


async def _escalation_problems(connection: asyncpg.Connection) -> list[str]:
    async def fetch(query: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await connection.fetch(query, timeout=30)
        return rows

    problems: list[str] = []
    overdue = await fetch(
        "SELECT id, incident_id, step, cycle, due_at, now() - due_at AS late "
        "FROM escalation_events WHERE status = 'scheduled' AND due_at < now() - interval '2 s'",
    )
    problems += [f"step not fired: {dict(r)}" for r in overdue]
    twice = await fetch(
        "SELECT incident_id, run, cycle, step, count(*) AS n FROM escalation_events "
        "GROUP BY incident_id, run, cycle, step HAVING count(*) > 1",
    )
    problems += [f"step scheduled twice: {dict(r)}" for r in twice]
    query = (
        "SELECT id, incident_id, run, step, cycle, status, notified_user_ids, due_at, "
        "executed_at, detail FROM escalation_events"
    )
    events = {r["id"]: r for r in await fetch(query)}
    pages = await fetch(
        "SELECT escalation_event_id AS event_id, user_id, channel, count(*) AS n "
        "FROM notifications WHERE escalation_event_id IS NOT NULL AND user_id IS NOT NULL "
        "GROUP BY escalation_event_id, user_id, channel",
    )
    paged: dict[int, set[int]] = {}
    for page in pages:
        if page["n"] != 1:
            problems.append(f"paged {page['n']} times: {dict(page)}")
        event = events.get(page["event_id"])
        if event is None or event["status"] != "executed":
            problems.append(f"a page for a step that did not execute: {dict(page)}, {event}")
        paged.setdefault(page["event_id"], set()).add(page["user_id"])
    executed: Counter[tuple[int, int, int]] = Counter()
    for event in events.values():
        if event["status"] != "executed":
            continue
        executed[(event["incident_id"], event["step"], event["cycle"])] += 1
        said = set(json.loads(event["notified_user_ids"]))
        if said != paged.get(event["id"], set()):
            problems.append(
                f"step {event['id']} says it paged {said}, pages: {paged.get(event['id'])}"
            )
    entries = await fetch(
        "SELECT incident_id, (data->>'step')::int AS step, (data->>'cycle')::int AS cycle, "
        "count(*) AS n FROM timeline_entries WHERE type = 'escalated' "
        "GROUP BY incident_id, data->>'step', data->>'cycle'",
    )
    logged = Counter({(r["incident_id"], r["step"], r["cycle"]): r["n"] for r in entries})
    if logged != executed:
        odd = set(logged - executed) | set(executed - logged)
        problems.append(
            f"escalated entries {dict(logged - executed)} for no step; steps without one: "
            f"{dict(executed - logged)}; their events: "
            + "; ".join(
                str({k: v for k, v in dict(e).items() if k != "notified_user_ids"})
                for e in events.values()
                if (e["incident_id"], e["step"], e["cycle"]) in odd
            )
        )
    return problems


async def open_twice(url: str) -> list[asyncpg.Record]:
    """Dedup keys with more than one open incident on one service (there must be none)."""
    return await fetch(
        url,
        "SELECT service_id, dedup_key, count(*) AS n FROM incidents "
        "WHERE dedup_key IS NOT NULL AND status <> 'resolved' "
        "GROUP BY service_id, dedup_key HAVING count(*) > 1",
    )
