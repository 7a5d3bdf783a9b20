"""Production serving: real gunicorn with `-c python:app.gunicorn_conf` and uvicorn workers.

- Three workers, each with its in-process escalation worker, on one PostgreSQL database: every
  step of every incident fires exactly once, one page per person over real SMTP and one webhook
  per step over real HTTP, whichever of the three processes claims it.
- SIGTERM: a request in flight is answered and stored, and each worker's lifespan then stops its
  in-process worker; a client that stalls mid-request is cut off so that this still happens.
- `make run-prod` refuses to start anything without PostgreSQL or with the default SECRET_KEY.

Every process is started in a session of its own, ended by its PID, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.api import Admin
from tests.support.invariants import escalation_problems
from tests.support.ports import free_port
from tests.support.receivers import HTTPReceiver
from tests.support.settings import service_env
from tests.support.smtp import SMTPInbox
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
STEPS = 3
INCIDENTS = 30
USERS = 2
STEP_MINUTES = 0.02  # 1.2 s between steps: the three in-process workers wake for them together


class Gunicorn:
    """`gunicorn -c python:app.gunicorn_conf app.main:app` on a free loopback port."""

    def __init__(self, env: dict[str, str], cwd: Path, *, workers: int, name: str) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port
        self.log_path = cwd / f"{name}.log"
        env = env | {"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.main:app"],
                env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> set[int]:
        """The master's child processes, from /proc."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid …: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.popen.pid:
                found.add(int(entry.name))
        return found

    def pids_that_logged(self, message: str) -> set[int]:
        """Processes whose in-process worker logged `message` (the log lines carry the PID)."""
        pattern = re.compile(rf"\[(\d+)\] INFO app\.worker\.runner: {re.escape(message)}")
        return {int(pid) for pid in pattern.findall(self.log())}

    async def ready(self, workers: int) -> set[int]:
        """Wait until `workers` children each run the application with its in-process worker."""

        async def probe() -> set[int] | None:
            assert self.popen.poll() is None, f"gunicorn exited:\n{self.log()[-3000:]}"
            children = self.children()
            started = self.pids_that_logged("worker started")
            if len(children) == workers and started == children:
                return children
            return None

        pids = await wait_until(f"{workers} workers", probe, seconds=40)

        async def answers_ready() -> bool | None:
            async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as client:
                answer = await client.get("/health/ready")
            return answer.status_code == 200 or None  # "worker": "ok" once a pass is done

        await wait_until("/health/ready", answers_ready, seconds=20)
        return pids

    async def terminate(self, seconds: float = 45) -> int:
        """SIGTERM to the master, as an orchestrator stops it; its exit status."""
        os.kill(self.popen.pid, signal.SIGTERM)
        return await self.wait(seconds)

    async def wait(self, seconds: float) -> int:
        async def exited() -> int | None:
            return self.popen.poll()

        return await wait_until("gunicorn to exit", exited, seconds=seconds, every=0.1)

    def end(self) -> None:
        """Whatever happened: the master's session (it and its workers) ends."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@pytest.fixture
def start_gunicorn(tmp_path: Path):
    started: list[Gunicorn] = []

    def start(database_url: str, *, workers: int, **extra: str) -> Gunicorn:
        env = service_env(database_url, LOG_LEVEL="INFO", **extra)
        migrated = subprocess.run(
            [str(BIN / "incident-management"), "migrate"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        server = Gunicorn(env, tmp_path, workers=workers, name=f"gunicorn{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.end()
        print(f"==== gunicorn's log (last lines)\n{server.log()[-4000:]}")  # shown on failure


async def test_three_gunicorn_workers_fire_each_escalation_step_exactly_once(
    postgres_only: None,
    fresh_database_url: str,
    start_gunicorn,
    smtp_server: tuple[SMTPInbox, int],
    http_receiver: HTTPReceiver,
) -> None:
    inbox, smtp_port = smtp_server
    server = start_gunicorn(
        fresh_database_url, workers=3, SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp_port)
    )
    workers = await server.ready(3)

    admin = Admin(server.base_url)
    await admin.sign_up()
    users = [await admin.user(f"oncall{n}@example.com") for n in range(USERS)]
    step = {
        "targets": [{"type": "user", "id": user["id"]} for user in users],
        "actions": [{"type": "notify"}, {"type": "webhook", "url": f"{http_receiver.url}/page"}],
    }
    steps = [{**step, "delay_minutes": 0 if n == 0 else STEP_MINUTES} for n in range(STEPS)]
    await admin.policy(steps)
    titles = [f"gunicorn incident {n}" for n in range(INCIDENTS)]
    # Six clients at once: the requests (and the first steps they wake) spread over the workers.
    gate = asyncio.Semaphore(6)

    async def trigger(title: str) -> int:
        async with gate:
            created = await admin.call(
                "POST", "/v1/incidents/", 201, json={"title": title, "severity": "high"}
            )
            return int(created["id"])

    ids = await asyncio.gather(*(trigger(title) for title in titles))

    async def all_paged() -> bool | None:
        webhooks, mails = len(http_receiver.requests), len(inbox.messages)
        assert webhooks <= INCIDENTS * STEPS and mails <= INCIDENTS * STEPS * USERS
        return (webhooks, mails) == (INCIDENTS * STEPS, INCIDENTS * STEPS * USERS) or None

    await wait_until("every step's pages", all_paged, seconds=60)

    # The API's account of each incident: each step executed once, one `escalated` entry each.
    for incident_id in ids:
        events = (await admin.call("GET", f"/v1/incidents/{incident_id}/escalation-events"))[
            "items"
        ]
        assert sorted((e["step"], e["status"]) for e in events) == [
            (n, "executed") for n in range(1, STEPS + 1)
        ], events
        timeline = (await admin.call("GET", f"/v1/incidents/{incident_id}/timeline"))["items"]
        escalated = [e["data"]["step"] for e in timeline if e["type"] == "escalated"]
        assert sorted(escalated) == list(range(1, STEPS + 1)), timeline
    await admin.close()
    # And the tables' (asyncpg takes the plain scheme).
    plain_url = fresh_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    assert await escalation_problems(plain_url) == []

    # /metrics, whichever worker answers, counts what all three did (multiprocess mode).
    wanted = {
        ("ims_incidents_total", (("event", "opened"), ("severity", "high"))): INCIDENTS,
        ("ims_escalation_steps_total", (("status", "executed"),)): INCIDENTS * STEPS,
        ("ims_escalation_step_lateness_seconds_count", ()): INCIDENTS * STEPS,
        ("ims_notifications_total", (("channel", "email"), ("outcome", "sent"))): (
            INCIDENTS * STEPS * USERS
        ),
        ("ims_notifications_total", (("channel", "webhook"), ("outcome", "sent"))): (
            INCIDENTS * STEPS
        ),
        (
            "ims_http_requests_total",
            (("method", "POST"), ("route", "/v1/incidents/"), ("status", "201")),
        ): INCIDENTS,
    }

    async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        series = await scrape(server.base_url)
        seen = {key: series.get(key) for key in wanted}
        return seen if seen == wanted else None

    await wait_until("every worker's counts in /metrics", counted, seconds=20)
    for _ in range(6):  # answered by one worker or another: the same sums
        assert await counted() == wanted

    # Stopped, every in-process worker is done: nothing can be sent any more, so what the peers
    # got now is final.
    assert await server.terminate() == 0
    assert server.pids_that_logged("worker stopped") == workers

    webhooks = Counter(
        (body["incident"]["id"], body["data"]["step"])
        for body in (json.loads(request["body"]) for request in http_receiver.requests)
    )
    assert webhooks == Counter({(i, n): 1 for i in ids for n in range(1, STEPS + 1)})
    mails = Counter(
        (tuple(recipients), title)
        for recipients, mail in zip(inbox.recipients, inbox.messages, strict=True)
        for title in titles
        if str(mail["Subject"]).endswith(title)
    )
    assert mails == Counter({((u["email"],), t): STEPS for u in users for t in titles})
    firing = server.pids_that_logged("worker job fire_escalations handled")
    assert firing <= workers
    print(f"workers {sorted(workers)}; the ones that fired steps: {sorted(firing)}")


async def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(base_url=base_url, trust_env=False) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def open_request(port: int, token: str, body: bytes) -> socket.socket:
    """POST /v1/incidents/ with `Expect: 100-continue`, body not sent: once the `100 Continue`
    is read, the application is running the request and waits for its body."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(
        b"POST /v1/incidents/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n".encode()
        + b"Expect: 100-continue\r\n\r\n"
    )
    assert connection.recv(100).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue"
    return connection


def read_response(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


async def test_sigterm_lets_a_request_in_flight_finish_then_stops_the_in_process_worker(
    fresh_database_url: str, start_gunicorn
) -> None:
    server = start_gunicorn(fresh_database_url, workers=1)
    (worker,) = await server.ready(1)
    admin = Admin(server.base_url)
    await admin.sign_up()
    await admin.close()
    body = json.dumps({"title": "answered while stopping"}).encode()
    connection = open_request(server.port, admin.token, body)

    os.kill(server.popen.pid, signal.SIGTERM)

    async def draining() -> bool | None:
        return "Waiting for connections to close" in server.log() or None

    await wait_until("the worker to wait for the request in flight", draining, seconds=20)
    assert server.popen.poll() is None
    with pytest.raises(ConnectionRefusedError):  # no new connections while it drains
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    connection.sendall(body)
    answer = await asyncio.to_thread(read_response, connection)
    connection.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 "), answer[:500]
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["title"] == "answered while stopping"

    assert await server.wait(40) == 0
    assert server.pids_that_logged("worker stopped") == {worker}

    # It was stored: a new server finds it.
    again = start_gunicorn(fresh_database_url, workers=1)
    await again.ready(1)
    async with httpx.AsyncClient(base_url=again.base_url, trust_env=False) as client:
        login = await client.post(
            "/v1/auth/login/access-token",
            data={"username": "admin@example.com", "password": "a long enough passphrase"},
        )
        listed = await client.get(
            "/v1/incidents/", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
    assert [i["title"] for i in listed.json()["items"]] == ["answered while stopping"]
    assert await again.terminate() == 0


async def test_a_stalled_request_does_not_keep_the_in_process_worker_from_stopping(
    fresh_database_url: str, start_gunicorn
) -> None:
    """A client that never sends its body is cut off after half of GUNICORN_GRACEFUL_TIMEOUT,
    and the worker's lifespan still stops its in-process worker before gunicorn's SIGKILL."""
    server = start_gunicorn(fresh_database_url, workers=1, GUNICORN_GRACEFUL_TIMEOUT="6")
    (worker,) = await server.ready(1)
    admin = Admin(server.base_url)
    await admin.sign_up()
    await admin.close()
    connection = open_request(server.port, admin.token, b'{"title": "never sent"}')
    try:
        assert await server.terminate(40) == 0
        log = server.log()
        assert "timeout graceful shutdown exceeded" in log
        assert server.pids_that_logged("worker stopped") == {worker}
        assert "was sent SIGKILL" not in log and "WORKER TIMEOUT" not in log
    finally:
        connection.close()


def make_run_prod(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`make run-prod` with this test's environment, in an empty folder (no `.env`)."""
    venv = BIN.parent
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SECRET_KEY"}}
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), f"VENV={venv}",
         "-o", f"{venv}/.installed-run", "run-prod"],
        env=base | env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_make_run_prod_refuses_a_database_that_is_not_postgresql(tmp_path: Path) -> None:
    done = make_run_prod(
        tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'prod.db'}", SECRET_KEY="x" * 40
    )
    assert done.returncode != 0
    assert "run-prod: DATABASE_URL must be PostgreSQL" in done.stderr
    assert "incident-management migrate" not in done.stdout  # nothing after the check ran
    assert not (tmp_path / "prod.db").exists()


def test_make_run_prod_refuses_the_default_secret_key(tmp_path: Path) -> None:
    done = make_run_prod(tmp_path, DATABASE_URL="postgresql://ims@127.0.0.1:1/ims")
    assert done.returncode != 0
    assert "SECRET_KEY is the development default" in done.stderr
    assert "gunicorn -c" not in done.stdout  # migrate refused: gunicorn was never started
